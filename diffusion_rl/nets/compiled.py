"""Faster denoiser calls for sampling at a fixed batch size (issue 14's compiled paths), and reduced precision.

Each wrapper behaves as ``net(x, t, cond=None, drop_mask=None)`` and prepares its fast path once per input
signature (shapes, dtypes, device, which optional inputs are given), in eval mode under ``torch.no_grad``:

- :class:`TracedDenoiser` (``"trace"``): ``torch.jit.trace`` + ``torch.jit.freeze`` (weights become constants);
  less Python and dispatch per call. Any device; what pays on CPU (docs/benchmarks.md).
- :class:`CUDAGraphDenoiser` (``"cuda_graph"``): the forward captured once as a CUDA graph on static input
  buffers and replayed: one launch instead of hundreds of kernel launches per call. CUDA only. Its
  :meth:`~CUDAGraphDenoiser.graphed_call` captures a whole sampling call instead (every step, the guidance, the
  constraints, the noise draws): what ``Policy`` uses, so a replan is one graph launch plus the copies in and out.
- :class:`InductorDenoiser` (``"inductor"``): the network compiled by ``torch.compile`` (TorchInductor fuses the
  element-wise work around each convolution -- GroupNorm, Mish, FiLM, residual adds -- into a few kernels), and on
  CUDA captured like ``"cuda_graph"``: fewer kernels per replay where a graph replay is kernel-bound (Diffusion
  Policy at batch 1). The first call per signature compiles (tens of seconds); not the default anywhere until
  measured to pay (docs/benchmarks.md).

``precision="bfloat16"`` runs the forward under ``torch.autocast`` in bfloat16 (for the fast paths, the trace or
the capture is made under it) and returns the output in the input's dtype. Only tensor conditions take the fast
path (a dict condition calls ``net`` eagerly, still at the asked precision). Weights changed after a signature was
prepared are not seen, not even in place (a frozen trace folds some of them into constants, GroupNorm's among
them, and a bfloat16 trace holds the casts made when it was traced): call :meth:`clear` (``Policy`` prepares anew
when its ``compile`` is set again).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "COMPILE_MODES",
    "PRECISIONS",
    "CUDAGraphDenoiser",
    "EagerDenoiser",
    "InductorDenoiser",
    "TracedDenoiser",
    "check_cpu_compiler",
    "make_denoiser",
]

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


_UNPREPARED = object()


class EagerDenoiser:
    """``net`` called as it is, at ``precision``: the base of the prepared paths, and the eager bfloat16 path."""

    mode = "eager"

    #: prepared signatures kept (least recently used dropped first): a vector env whose batch shrinks as its
    #: episodes end meets many batch sizes, and each trace or graph would otherwise stay in memory for good
    max_signatures = 16

    def __init__(self, net: nn.Module, precision: str = "float32") -> None:
        self.net = net
        self.precision = check_precision(precision)
        self._prepared: LRUCache = LRUCache(self.max_signatures)

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
        if not isinstance(t, Tensor):  # a Python number, as the networks take it
            t = torch.as_tensor(t, device=x.device)
        if cond is not None and not isinstance(cond, Tensor):
            return self._eager(x, t, cond, drop_mask)
        args = tuple(a for a in (x, t, cond, drop_mask) if a is not None)
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args) + (cond is not None, drop_mask is not None)
        run = self._prepared.get(key, _UNPREPARED)
        if run is _UNPREPARED:
            module = _Positional(self.net, cond is not None, drop_mask is not None).eval()
            run = self._prepare(module, args)
            self._prepared.put(key, run)
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


class LRUCache(collections.OrderedDict):
    """A dict of at most ``size`` entries: :meth:`put` drops the least recently used (read by :meth:`get` or put)
    when full."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)

    def get(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class CUDAGraphDenoiser(EagerDenoiser):
    """``net`` captured as one CUDA graph per input signature and replayed (see the module docstring).

    Capture follows PyTorch's recipe: a few warm-up calls on a side stream (cuDNN picks its kernels, the caching
    allocator settles), then ``torch.cuda.graph`` records one call on static input buffers; every later call copies
    its inputs into those buffers, replays, and returns a copy of the static output (the next replay overwrites
    it). All signatures share one memory pool. Inputs on another device are run eagerly.
    """

    mode = "cuda_graph"

    #: captured sampling calls kept (least recently used dropped first): each distinct option value (a
    #: ``target_return`` sweep, say) is a capture of its own, and would otherwise stay in memory for good
    max_calls = 16

    def __init__(self, net: nn.Module, precision: str = "float32", warmup: int = 3) -> None:
        super().__init__(net, precision)
        self.warmup = int(warmup)
        self._pool: Any = None
        self._calls: LRUCache = LRUCache(self.max_calls)

    def clear(self) -> None:
        super().clear()
        self._calls.clear()
        self._pool = None

    def graphed_call(self, fn: Callable[..., Any], tensors: dict[str, Tensor], options: dict[str, Any],
                     generator: torch.Generator | None) -> Any | None:
        """``fn(**tensors, **options, denoiser=<net at this precision>, generator=generator)`` -- a whole sampling
        call such as ``Algorithm.plan`` -- captured once per signature (tensor shapes and dtypes, the values of
        ``options``) as one CUDA graph on static copies of ``tensors``, and replayed: a replan becomes one launch.

        The noise is drawn inside the graph from ``generator`` (registered with the graph), so every replay draws
        fresh numbers from the same stream an eager call would use; the warm-up calls' draws are rolled back, so
        the first replay starts where the eager path would. Returns the output with its tensors copied (the next
        replay overwrites the graph's own), or None when this call cannot be graphed (not on CUDA, an option that
        is not a plain value, or a capture that failed: then a ``RuntimeWarning`` says why, once per signature),
        and the caller runs it eagerly with the per-forward graphs."""
        key = _call_key(fn, tensors, options, generator)
        if key is None:
            return None
        if key not in self._calls:
            self._calls.put(key, self._capture_call(fn, tensors, options, generator))
        entry = self._calls.get(key)
        if entry is None:
            return None
        static, out, graph = entry
        for name, value in tensors.items():
            static[name].copy_(value)
        graph.replay()
        return _copy_tensors(out)

    def _capture_call(self, fn: Callable[..., Any], tensors: dict[str, Tensor], options: dict[str, Any],
                      generator: torch.Generator | None) -> tuple[dict[str, Tensor], Any, Any] | None:
        device = next(iter(tensors.values())).device
        graph = torch.cuda.CUDAGraph()
        custom = generator is not None and generator is not torch.cuda.default_generators[device.index or 0]
        if custom and not hasattr(graph, "register_generator_state"):
            warnings.warn("cuda_graph: this PyTorch cannot capture draws from a Policy's own generator in a graph; "
                          "its network calls are graphed one by one instead", RuntimeWarning, stacklevel=3)
            return None
        static = {name: value.clone() for name, value in tensors.items()}
        saved = generator.get_state() if generator is not None else None

        def denoiser(x: Tensor, t: Tensor, cond: Any = None, drop_mask: Tensor | None = None) -> Tensor:
            return self._eager(x, t, cond, drop_mask)  # captured into the call's graph with everything else

        def call() -> Any:
            return fn(**static, **options, denoiser=denoiser, generator=generator)

        try:
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):  # cuDNN picks its kernels, the allocator settles, caches fill
                    call()
            torch.cuda.current_stream(device).wait_stream(side)
            if custom:
                graph.register_generator_state(generator)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            with torch.cuda.graph(graph, pool=self._pool):
                out = call()
        except Exception as err:  # noqa: BLE001 -- any capture failure falls back to the per-forward path
            with contextlib.suppress(RuntimeError):  # the failed capture's own error is the one to report
                torch.cuda.synchronize(device)
                if saved is not None:
                    generator.set_state(saved)
            warnings.warn(f"cuda_graph: this sampling call could not be captured as one graph "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); its network "
                          "calls are graphed one by one instead", RuntimeWarning, stacklevel=3)
            return None
        if saved is not None:
            generator.set_state(saved)  # the warm-up calls' draws rolled back
        return static, out, graph

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


def check_cpu_compiler(setting: str) -> None:
    """Refuse now, naming ``setting`` and the fix, a ``torch.compile`` on the CPU where TorchInductor finds no C++
    compiler: its CPU kernels are compiled C++, and without one the first compiled call fails deep inside torch
    (a training run after its data, model and run folder were set up). Looked up as TorchInductor looks it up
    (``torch._inductor.config.cpp.cxx``); a torch without that lookup is not checked."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError:  # pragma: no cover - another torch: its own error at the first compiled call
        return
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        raise RuntimeError(
            f"{setting} on a CPU needs a C++ compiler (TorchInductor compiles its CPU kernels): none of "
            f"{[c for c in torch._inductor.config.cpp.cxx if c]} runs here. Install one (e.g. g++), or point "
            f"torch._inductor.config.cpp.cxx at it, or leave {setting} off"
        ) from None


class _RecompileRoom(nn.Module):
    """A compiled network called with room for ``limit`` compiled shapes: torch's default of 8 per code object,
    with ``fullgraph=True``, made the 9th batch size a hard error (a vector env whose episodes end meets many)."""

    def __init__(self, compiled: nn.Module, limit: int) -> None:
        super().__init__()
        self.compiled, self.limit = compiled, limit

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        import torch._dynamo

        with torch._dynamo.config.patch(recompile_limit=max(self.limit, torch._dynamo.config.recompile_limit)):
            return self.compiled(*args, **kwargs)


class InductorDenoiser(CUDAGraphDenoiser):
    """``net`` compiled by ``torch.compile`` (TorchInductor, one graph per input signature, no dynamic shapes),
    and on CUDA captured as :class:`CUDAGraphDenoiser` does: the whole sampling call, or each forward, replayed
    from a CUDA graph of the compiled kernels. On other devices the compiled network is called directly."""

    mode = "inductor"

    def __init__(self, net: nn.Module, precision: str = "float32", warmup: int = 3) -> None:
        super().__init__(net, precision, warmup)
        # compiled by its first call per shape and dtype (a warm-up call on CUDA); the weights stay inputs of the
        # compiled graph, so this wrapper has nothing of its own to forget on clear()
        self.net = _RecompileRoom(torch.compile(net, dynamic=False, fullgraph=True), 4 * self.max_signatures)


def _call_key(fn: Callable[..., Any], tensors: dict[str, Tensor], options: dict[str, Any],
              generator: torch.Generator | None) -> tuple | None:
    """What one captured sampling call is specific to; None when it cannot be graphed (not every tensor on one
    CUDA device, or an option that is not a plain hashable value)."""
    devices = {value.device for value in tensors.values()}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        return None
    try:
        frozen = tuple(sorted((name, value) for name, value in options.items()))
        hash(frozen)
    except TypeError:
        return None
    shapes = tuple(sorted((name, tuple(v.shape), v.dtype) for name, v in tensors.items()))
    return id(getattr(fn, "__func__", fn)), shapes, frozen, id(generator)


def _copy_tensors(value: Any) -> Any:
    """``value`` with every tensor in it (dataclass fields, dicts, lists, tuples) cloned."""
    if isinstance(value, Tensor):
        return value.clone()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _copy_tensors(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, dict):
        return {k: _copy_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_tensors(v) for v in value)
    return value


COMPILE_MODES: dict[str, type[EagerDenoiser]] = {
    "trace": TracedDenoiser,
    "cuda_graph": CUDAGraphDenoiser,
    "inductor": InductorDenoiser,
}
"""The prepared paths by name (``Policy(compile=...)``); ``True`` picks ``cuda_graph`` on CUDA, ``trace`` elsewhere."""


def resolve_compile(compile: Any, device: torch.device) -> str | None:
    """The compiled path ``compile`` asks for on ``device``: None (eager) or a name in :data:`COMPILE_MODES`.

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
    if mode == "inductor" and device.type == "cpu":
        check_cpu_compiler('compile="inductor"')
    if mode is None:
        return EagerDenoiser(net, precision) if precision != "float32" else None
    return COMPILE_MODES[mode](net, precision)
