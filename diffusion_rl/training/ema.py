"""Exponential moving average of a model's weights: a fixed decay updated every few steps (Diffuser / Decision
Diffuser), or the warm-up "power" schedule of Diffusion Policy (``decay_k = 1 - (1 + k)^-power``, capped)."""

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

    With ``power`` set (Diffusion Policy: 0.75), the decay at ``step`` is ``min(decay, 1 - (1 + k)^-power)`` with
    ``k = step - start - 2`` (steps count from 1), and 0 (a copy) for ``k <= 0``, as Diffusion Policy's ``EMAModel``
    counts: early
    weights are forgotten fast, and ``decay`` (0.9999 there) is the cap.
    """

    def __init__(self, source: nn.Module, *, decay: float = 0.995, start: int = 0,
                 power: float | None = None) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay: expected a float in [0, 1], got {decay!r}")
        if power is not None and not power > 0:
            raise ValueError(f"EMA power: expected a float > 0 or None, got {power!r}")
        self.decay = float(decay)
        self.power = None if power is None else float(power)
        self.start = int(start)
        self.model = copy.deepcopy(source)
        self.model.requires_grad_(False)
        self.model.eval()

    def decay_at(self, step: int) -> float:
        """The decay applied by ``update(source, step)``."""
        if self.power is None:
            return self.decay
        # Diffusion Policy's EMAModel counts its calls from 0 and copies on the first two; steps here count from 1
        k = step - self.start - 2
        if k <= 0:
            return 0.0
        return min(self.decay, 1.0 - (1.0 + k) ** -self.power)

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
                torch._foreach_lerp_(list(e_list), list(s_list), 1.0 - self.decay_at(step))
        for e, s in zip(self.model.buffers(), source.buffers()):
            e.copy_(s)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
