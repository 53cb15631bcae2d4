"""Exponential moving average of a model's weights, updated every few steps (Diffuser / Decision Diffuser)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Keeps ``self.model``, a frozen copy of ``source`` whose floating weights track an EMA.

    ``update(source, step)``: before ``start`` the copy takes the weights as they are (the reference code's
    ``reset_parameters``); afterwards ``ema = decay * ema + (1 - decay) * weights``. Non-float buffers
    (counters, masks) and float buffers (normalizer statistics) are copied, not averaged.
    """

    def __init__(self, source: nn.Module, *, decay: float = 0.995, start: int = 0) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay: expected a float in [0, 1], got {decay!r}")
        self.decay = float(decay)
        self.start = int(start)
        self.model = copy.deepcopy(source)
        self.model.requires_grad_(False)
        self.model.eval()

    @torch.no_grad()
    def update(self, source: nn.Module, step: int) -> None:
        """Average (or, before ``start``, copy) ``source``'s weights into the EMA copy."""
        ema_params = list(self.model.parameters())
        src_params = list(source.parameters())
        if len(ema_params) != len(src_params):
            raise ValueError(
                f"EMA.update: source has {len(src_params)} parameters, the EMA copy {len(ema_params)}"
            )
        if step < self.start:
            for e, s in zip(ema_params, src_params):
                e.copy_(s.detach())
        else:
            floats = [(e, s.detach()) for e, s in zip(ema_params, src_params) if e.is_floating_point()]
            if floats:
                e_list, s_list = zip(*floats)
                torch._foreach_lerp_(list(e_list), list(s_list), 1.0 - self.decay)
        for e, s in zip(self.model.buffers(), source.buffers()):
            e.copy_(s)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
