"""Building blocks of the 1D networks: time embeddings, conv blocks, resampling, linear attention, padding.

All convolutional blocks work channels-first (``[B, C, L]``); the networks transpose from the library's
channels-last ``[B, H, D]`` trajectories at their boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_rl.nets.checks import check_cond, check_positive


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal features of a (diffusion) timestep: ``[B] -> [B, dim]``.

    The first half holds ``sin(t * f_i)``, the second ``cos(t * f_i)``, with
    ``f_i = 10000^(-i / (dim/2 - 1))`` as in Janner's and Chi's networks. Computed in float32, even under
    autocast, and returned in the network's dtype (``net.double()``, ``net.to(torch.bfloat16)``: the layers after
    it take their own dtype).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalEmbedding dim must be an even integer >= 4, got {dim}")
        self.dim = dim
        # follows the module's .to(dtype) like every floating tensor of it; not saved (checkpoints unchanged)
        self.register_buffer("dtype_probe", torch.empty(0), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        # built on the fly (not a buffer) so that ``net.to(torch.bfloat16)`` cannot round the frequencies
        freqs = torch.exp(
            torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1))
        )
        angles = t.to(torch.float32)[:, None] * freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1).to(self.dtype_probe.dtype)


class _OneExpMish(torch.autograd.Function):
    """Mish as ``x * w / (w + 2)`` with ``w = n (n + 2)``, ``n = exp(x)`` (that is ``tanh(softplus(x))`` with one
    exponential), and a backward from the same saved ``n`` and ``tanh``: ``t + x (1 - t^2) n / (1 + n)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        # past x = 20, tanh(softplus(x)) is 1 to float64 precision; the clamp keeps n (n + 2) finite
        n = torch.exp(torch.clamp(x, max=20.0))
        w = n * (n + 2)
        t = w / (w + 2)
        ctx.save_for_backward(x, n, t)
        return x * t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, n, t = ctx.saved_tensors
        return grad * torch.addcmul(t, x * (n / (n + 1)), 1 - t * t)


_ONE_EXP_DTYPES = (torch.float32, torch.float64, torch.bfloat16)  # float16 would overflow n (n + 2) at x = 20


class Mish(nn.Module):
    """``nn.Mish`` for the library's networks (no parameters: state dicts are those of ``nn.Mish``).

    Eager, torch's kernel. Under ``torch.compile`` (``TrainerConfig.compile``, ``Policy(compile="inductor")``)
    the one-exponential form of :class:`_OneExpMish` with its own backward, which TorchInductor fuses into fewer
    transcendental operations than its lowering of ``F.mish``: the compiled training step of Janner's hopper
    network measured 1.09x faster with it on an Intel Xeon (eager it is slower than torch's kernel, so eager keeps
    that). The two agree to float rounding (4e-6 in float32 over [-100, 100] against float64)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and x.dtype in _ONE_EXP_DTYPES:
            return _OneExpMish.apply(x)
        return F.mish(x)


def time_mlp(dim: int, out_dim: int | None = None, activation: type[nn.Module] = Mish) -> nn.Sequential:
    """Sinusoidal embedding followed by the usual two-layer MLP (``dim -> 4 dim -> out_dim``)."""
    return nn.Sequential(
        SinusoidalEmbedding(dim),
        nn.Linear(dim, dim * 4),
        activation(),
        nn.Linear(dim * 4, out_dim or dim),
    )


class ShortConv1d(nn.Conv1d):
    """A same-length ``nn.Conv1d`` (stride 1) that computes short wide inputs as one matrix product on the CPU.

    At the deep levels of a temporal U-Net the sequence is 4-8 steps long and 128-2048 channels wide; there
    oneDNN's direct convolution can be slower than unfolding the input into ``[B * L, C * k]`` windows and calling
    one GEMM. Where it is depends on the CPU (one torch thread, forward and backward,
    ``scripts/benchmark.py benchmarks=[train_speed]`` and docs/benchmarks.md):

    - without AVX-512 (AVX2), the matrix product won at every batch measured (a whole training step of Janner's
      hopper network 1.2x faster on an AMD EPYC);
    - with AVX-512, it wins for planning-sized batches (at most ``max_rows`` rows ``B * L``: 1.1-2.5x per layer)
      and for very large weights (``in * out * k >= large_weight``: 1024 channels in and out, about 2x at any
      batch), and loses to oneDNN on training batches of narrower layers (0.55-0.9x): with those on oneDNN,
      Janner's hopper training step ran 1.18x faster and the main job (``cpu``-preset Decision Diffuser) 1.15x
      on an AMD EPYC.

    The U-Nets use it for their conv blocks and 1x1 residual projections. Every other case (GPU, long or narrow
    inputs) is the ordinary convolution. Parameters and their names are those of ``nn.Conv1d``, so checkpoints
    are unchanged; results agree with it to float rounding.
    """

    #: The matrix product is used on the CPU when ``length <= max_length``, ``in_channels >= min_channels``, and
    #: either the batch has at most ``max_rows`` rows ``B * length`` (None: any number) or the weight has at
    #: least ``large_weight`` elements.
    max_length = 8
    min_channels = 128
    max_rows: int | None = 32 if torch.backends.cpu.get_cpu_capability() == "AVX512" else None
    large_weight = 2**22

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        if (x.device.type != "cpu" or x.dim() != 3 or length > self.max_length
                or self.in_channels < self.min_channels or self.padding_mode != "zeros"
                or isinstance(self.padding, str) or self.stride != (1,) or self.dilation != (1,)
                or self.groups != 1):
            return super().forward(x)
        (k,), (pad,) = self.kernel_size, self.padding
        if 2 * pad != k - 1:  # the windows below keep the length: other paddings are the ordinary convolution
            return super().forward(x)
        rows = x.shape[0] * length
        if self.max_rows is not None and rows > self.max_rows and self.weight.numel() < self.large_weight:
            return super().forward(x)
        if k == 1 and pad == 0:  # a 1x1 convolution is one matrix product as it stands
            cols = x.transpose(1, 2).reshape(rows, self.in_channels)
        else:
            windows = F.pad(x, (pad, pad)).unfold(2, k, 1)  # [B, C, L, k]
            cols = windows.permute(0, 2, 1, 3).reshape(rows, self.in_channels * k)
        weight = self.weight.reshape(self.out_channels, -1).t()
        out = cols @ weight if self.bias is None else torch.addmm(self.bias, cols, weight)
        return out.view(x.shape[0], length, self.out_channels).transpose(1, 2).contiguous()


class Conv1dBlock(nn.Module):
    """Conv1d (same length) -> GroupNorm -> Mish, the basic unit of the temporal U-Nets."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be a positive odd integer (keeps the length), got {kernel_size}"
            )
        self.conv = ShortConv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(n_groups, out_channels)
        self.act = Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Downsample1d(nn.Module):
    """Halve the length with a stride-2 convolution (kernel 3, padding 1): ``L -> ceil(L / 2)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Double the length with a transposed convolution (kernel 4, stride 2, padding 1): ``L -> 2 L``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def downsampled_length(length: int, times: int) -> int:
    """Length after ``times`` applications of :class:`Downsample1d`."""
    for _ in range(times):
        length = (length + 1) // 2
    return length


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, L]`` with a per-channel gain and bias."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gain + self.bias


class LinearAttention1d(nn.Module):
    """Residual, pre-normalized linear attention over the length axis (Diffuser's optional attention layer).

    Keys are softmax-normalized over positions and queries are scaled by ``dim_head ** -0.5``, so the cost is
    linear in the horizon.
    """

    def __init__(self, channels: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        check_positive("heads", heads)
        check_positive("dim_head", dim_head)
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv1d(channels, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv1d(hidden, channels, 1)
        self.norm = ChannelLayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        q, k, v = self.to_qkv(self.norm(x)).chunk(3, dim=1)
        q = q.reshape(batch, self.heads, -1, length) * self.scale
        k = k.reshape(batch, self.heads, -1, length).softmax(dim=-1)
        v = v.reshape(batch, self.heads, -1, length)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(batch, -1, length)
        return x + self.to_out(out)


def pad_length(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last axis of ``[B, C, L]`` up to a multiple of ``multiple`` (no-op if it already is)."""
    extra = (-x.shape[-1]) % multiple
    if extra == 0:
        return x
    return F.pad(x, (0, extra))


def null_where_dropped(
    embedding: torch.Tensor, null: torch.Tensor, drop_mask: torch.Tensor | None
) -> torch.Tensor:
    """Replace the rows of ``embedding`` flagged in ``drop_mask`` by ``null`` (broadcast); no branching."""
    if drop_mask is None:
        return embedding
    return torch.where(drop_mask[:, None], null.to(embedding.dtype), embedding)


class PartsEmbedding(nn.Module):
    """A condition made of parts (e.g. a return and a goal, or several skills), each embedded by its own MLP and
    summed; a dropped part contributes nothing, so dropping every part gives the zero (null) embedding of a
    plain condition. ``drop_mask`` is ``[B]`` (all parts) or ``[B, K]`` (part by part), which is what composing
    conditions needs (:class:`~diffusion_rl.diffusion.ComposedGuidance`)."""

    def __init__(self, parts: Sequence[int], make_mlp: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.parts = [int(p) for p in parts]
        self.mlps = nn.ModuleList(make_mlp(p) for p in self.parts)

    def forward(self, cond: torch.Tensor, drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = None
        for k, (chunk, mlp) in enumerate(zip(cond.split(self.parts, dim=-1), self.mlps)):
            emb = mlp(chunk)
            if drop_mask is not None:
                keep = ~(drop_mask if drop_mask.ndim == 1 else drop_mask[:, k])
                emb = emb * keep[:, None].to(emb.dtype)
            out = emb if out is None else out + emb
        return out


def condition_embedding(
    owner: str,
    cond_mlp: nn.Module | None,
    cond_dim: int | None,
    cond: torch.Tensor | None,
    drop_mask: torch.Tensor | None,
    batch: int,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """The embedded condition with dropped rows set to the null (zero) embedding; None when no cond is given.

    Shared by the denoisers that join a condition to their time embedding (concatenated by the temporal U-Net,
    added by the transformer). A net built without a condition (``cond_mlp is None``) refuses one.
    """
    if cond_mlp is None:
        if cond is not None:
            raise ValueError(
                f"this {owner} was built with cond_dim=None and takes no cond; got cond of shape {tuple(cond.shape)}"
            )
        return None
    if cond is None:
        return None
    check_cond(cond, batch, cond_dim)
    if isinstance(cond_mlp, PartsEmbedding):
        return cond_mlp(cond.to(dtype), drop_mask)
    embedding = cond_mlp(cond.to(dtype))
    return null_where_dropped(embedding, embedding.new_zeros(()), drop_mask)
