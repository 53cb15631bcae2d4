"""Faster denoiser calls for sampling at a fixed batch size (issue 14's compiled paths), and reduced precision.

Each wrapper behaves as ``net(x, t, cond=None, drop_mask=None)`` and prepares its fast path once per input
signature (shapes, dtypes, device, which optional inputs are given), in eval mode under ``torch.no_grad``:

- :class:`TracedDenoiser` (``"trace"``): ``torch.jit.trace`` + ``torch.jit.freeze`` (weights become constants);
  less Python and dispatch per call. Any device; what pays on CPU (docs/benchmarks.md).
- :class:`CUDAGraphDenoiser` (``"cuda_graph"``): the forward captured once as a CUDA graph on static input
  buffers and replayed: one launch instead of hundreds of kernel launches per call. CUDA only.

``precision="bfloat16"`` runs the forward under ``torch.autocast`` in bfloat16 (for the fast paths, the trace or
the capture is made under it) and returns the output in the input's dtype. Only tensor conditions take the fast
path (a dict condition calls ``net`` eagerly, still at the asked precision). Weights changed after a signature was
prepared are not seen: call :meth:`clear` (``Policy`` builds one wrapper per loaded artifact, whose weights do not
change).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["COMPILE_MODES", "PRECISIONS", "CUDAGraphDenoiser", "EagerDenoiser", "TracedDenoiser", "make_denoiser"]

PRECISIONS = ("float32", "bfloat16")
"""Forward precisions a sampling denoiser can run at (``Policy(precision=...)``)."""


def check_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
    return precision


class _Positional(nn.Module):
    """``net`` called with positional tensors only (what ``torch.jit.trace`` records)."""

    def __init__(self, net: nn.Module, has_cond: bool, has_drop: bool) -> None:
        super().__init__()
        self.net, self.has_cond, self.has_drop = net, has_cond, has_drop

    def forward(self, x: Tensor, t: Tensor, *rest: Tensor) -> Tensor:
        cond = rest[0] if self.has_cond else None
        drop = rest[-1] if self.has_drop else None
        return self.net(x, t, cond, drop_mask=drop) if drop is not None else self.net(x, t, cond)


class EagerDenoiser:
    """``net`` called as it is, at ``precision``: the base of the prepared paths, and the eager bfloat16 path."""

    mode = "eager"

    def __init__(self, net: nn.Module, precision: str = "float32") -> None:
        self.net = net
        self.precision = check_precision(precision)
        self._prepared: dict[tuple, Callable[..., Tensor]] = {}

    def clear(self) -> None:
        """Forget every prepared signature (after the weights changed or the network moved)."""
        self._prepared.clear()

    @contextlib.contextmanager
    def _autocast(self, device: torch.device) -> Iterator[None]:
        if self.precision == "float32":
            yield
            return
        # no weight-cast cache: it does not survive a trace or a graph capture, and inference has no reuse for it
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield

    def _eager(self, x: Tensor, t: Tensor, cond: Any, drop_mask: Tensor | None) -> Tensor:
        with torch.no_grad(), self._autocast(x.device):
            out = self.net(x, t, cond, drop_mask=drop_mask) if drop_mask is not None else self.net(x, t, cond)
        return out.to(x.dtype)

    def _prepare(self, module: nn.Module, args: tuple[Tensor, ...]) -> Callable[..., Tensor] | None:
        """The fast path for one signature (called with the positional tensors), or None to stay eager."""
        return None

    def __call__(self, x: Tensor, t: Tensor, cond: Any = None, drop_mask: Tensor | None = None) -> Tensor:
        if cond is not None and not isinstance(cond, Tensor):
            return self._eager(x, t, cond, drop_mask)
        args = tuple(a for a in (x, t, cond, drop_mask) if a is not None)
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args) + (cond is not None, drop_mask is not None)
        if key not in self._prepared:
            module = _Positional(self.net, cond is not None, drop_mask is not None).eval()
            self._prepared[key] = self._prepare(module, args)
        run = self._prepared[key]
        if run is None:
            return self._eager(x, t, cond, drop_mask)
        with torch.no_grad():
            return run(*args).to(x.dtype)


class TracedDenoiser(EagerDenoiser):
    """``net`` traced and frozen by TorchScript per input signature (see the module docstring)."""

    mode = "trace"

    def _prepare(self, module: nn.Module, args: tuple[Tensor, ...]) -> Callable[..., Tensor]:
        with torch.no_grad(), warnings.catch_warnings(), self._autocast(args[0].device):
            # shapes are fixed per graph by design: the tracer's notes about Python values are expected
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # torch 2.13 marks TorchScript deprecated in favour of torch.compile, which measured slower here
            warnings.simplefilter("ignore", DeprecationWarning)
            graph = torch.jit.freeze(torch.jit.trace(module, args, check_trace=False))

        def run(*inputs: Tensor) -> Tensor:
            with self._autocast(inputs[0].device):
                return graph(*inputs)

        return run


class CUDAGraphDenoiser(EagerDenoiser):
    """``net`` captured as one CUDA graph per input signature and replayed (see the module docstring).

    Capture follows PyTorch's recipe: a few warm-up calls on a side stream (cuDNN picks its kernels, the caching
    allocator settles), then ``torch.cuda.graph`` records one call on static input buffers; every later call copies
    its inputs into those buffers, replays, and returns a copy of the static output (the next replay overwrites
    it). All signatures share one memory pool. Inputs on another device are run eagerly.
    """

    mode = "cuda_graph"

    def __init__(self, net: nn.Module, precision: str = "float32", warmup: int = 3) -> None:
        super().__init__(net, precision)
        self.warmup = int(warmup)
        self._pool: Any = None

    def clear(self) -> None:
        super().clear()
        self._pool = None

    def _prepare(self, module: nn.Module, args: tuple[Tensor, ...]) -> Callable[..., Tensor] | None:
        device = args[0].device
        if device.type != "cuda":
            return None
        static = tuple(a.clone() for a in args)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad(), self._autocast(device):
            for _ in range(self.warmup):
                module(*static)
        torch.cuda.current_stream(device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), self._autocast(device), torch.cuda.graph(graph, pool=self._pool):
            out = module(*static)

        def run(*inputs: Tensor) -> Tensor:
            for buffer, value in zip(static, inputs):
                buffer.copy_(value)
            graph.replay()
            return out.clone()

        return run


COMPILE_MODES: dict[str, type[EagerDenoiser]] = {
    "trace": TracedDenoiser,
    "cuda_graph": CUDAGraphDenoiser,
}
"""The prepared paths by name (``Policy(compile=...)``); ``True`` picks ``cuda_graph`` on CUDA, ``trace`` elsewhere."""


def resolve_compile(compile: Any, device: torch.device) -> str | None:
    """The compiled path ``compile`` asks for on ``device``: None (eager), ``"trace"`` or ``"cuda_graph"``.

    ``False`` is eager; ``True`` the device's default; a name must be one of :data:`COMPILE_MODES`, and
    ``"cuda_graph"`` needs a CUDA device. Anything else is a ``ValueError`` naming the allowed values."""
    if compile is False:
        return None
    if compile is True:
        return "cuda_graph" if device.type == "cuda" else "trace"
    if not isinstance(compile, str) or compile not in COMPILE_MODES:
        raise ValueError(f"compile: expected True, False or one of {list(COMPILE_MODES)}, got {compile!r}")
    if compile == "cuda_graph" and device.type != "cuda":
        raise ValueError(f"compile='cuda_graph' needs a CUDA device; this model is on {device} "
                         "(use compile=True or 'trace')")
    return compile


def make_denoiser(net: nn.Module, compile: Any, precision: str, device: torch.device) -> EagerDenoiser | None:
    """The wrapper that ``compile`` and ``precision`` ask for on ``device``; None when the plain ``net`` is it
    (eager float32). Validates both settings (``ValueError`` naming the allowed values)."""
    mode = resolve_compile(compile, device)
    check_precision(precision)
    if mode is None:
        return EagerDenoiser(net, precision) if precision != "float32" else None
    return COMPILE_MODES[mode](net, precision)
