"""A denoiser traced and frozen by TorchScript for each fixed input signature: fewer Python and dispatch costs per
network call when a planner samples at a fixed batch size (one of issue 14's compiled paths).

``TracedDenoiser(net)(x, t, cond=None, drop_mask=None)`` behaves as ``net(...)``; the first call with a new
signature (shapes, dtypes, device, which optional inputs are given) traces ``net`` in eval mode under
``torch.no_grad`` and freezes it (weights become constants), later calls with that signature run the frozen graph.
Only tensor conditions are supported (dicts fall back to ``net``). Weights changed after tracing are not seen:
call :meth:`clear` (``Policy`` builds one per loaded artifact, whose weights do not change).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TracedDenoiser"]


class _Positional(nn.Module):
    """``net`` called with positional tensors only (what ``torch.jit.trace`` records)."""

    def __init__(self, net: nn.Module, has_cond: bool, has_drop: bool) -> None:
        super().__init__()
        self.net, self.has_cond, self.has_drop = net, has_cond, has_drop

    def forward(self, x: Tensor, t: Tensor, *rest: Tensor) -> Tensor:
        cond = rest[0] if self.has_cond else None
        drop = rest[-1] if self.has_drop else None
        return self.net(x, t, cond, drop_mask=drop) if drop is not None else self.net(x, t, cond)


class TracedDenoiser:
    """``net`` traced and frozen per input signature (see the module docstring)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self._graphs: dict[tuple, Any] = {}

    def clear(self) -> None:
        """Forget every traced graph (after the weights changed)."""
        self._graphs.clear()

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None, drop_mask: Tensor | None = None) -> Tensor:
        if cond is not None and not isinstance(cond, Tensor):
            return self.net(x, t, cond, drop_mask=drop_mask) if drop_mask is not None else self.net(x, t, cond)
        args = tuple(a for a in (x, t, cond, drop_mask) if a is not None)
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args) + (cond is not None, drop_mask is not None)
        graph = self._graphs.get(key)
        if graph is None:
            module = _Positional(self.net, cond is not None, drop_mask is not None).eval()
            with torch.no_grad(), warnings.catch_warnings():
                # shapes are fixed per graph by design: the tracer's notes about Python values are expected
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # torch 2.13 marks TorchScript deprecated in favour of torch.compile, which measured slower here
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = torch.jit.trace(module, args, check_trace=False)
                graph = torch.jit.freeze(traced)
            self._graphs[key] = graph
        with torch.no_grad():
            return graph(*args)
