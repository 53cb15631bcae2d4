"""A small 2D U-Net for images [B, C, H, W]: shows that the diffusion core is shape-agnostic.

Residual blocks (GroupNorm, SiLU, 3x3 convs) receive a sinusoidal timestep embedding, plus an optional vector
condition embedding with a learned null embedding where ``drop_mask`` is True (classifier-free guidance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ImageUnet2D", "sinusoidal_embedding"]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sin/cos features of the (integer or float) timesteps ``t`` [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _groups(channels: int, max_groups: int) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


class _ResBlock(nn.Module):
    """Two 3x3 convs with a per-channel scale and shift from the embedding (FiLM) between them."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in, groups), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out, groups), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.emb(self.act(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.act(h))
        return h + self.skip(x)


class ImageUnet2D(nn.Module):
    """Denoiser ``net(x, t, cond=None, drop_mask=None) -> Tensor`` of x's shape for images [B, C, H, W].

    ``channel_mults`` sets the channels per resolution level (base_channels * mult); H and W must be divisible by
    2 ** (len(channel_mults) - 1). With ``cond_dim``, ``cond`` is a [B, cond_dim] tensor; rows where ``drop_mask``
    is True (or all rows, when cond is None) use a learned null embedding instead.
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        cond_dim: int | None = None,
        groups: int = 8,
    ) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or len(channel_mults) < 1 or num_res_blocks < 1:
            raise ValueError(
                "need in_channels >= 1, base_channels >= 1, num_res_blocks >= 1 and at least one channel mult, got "
                f"{in_channels}, {base_channels}, {num_res_blocks}, {tuple(channel_mults)}"
            )
        self.in_channels = in_channels
        self.cond_dim = cond_dim
        self.levels = len(channel_mults)
        self.config = {  # the constructor's arguments: build_network("image_unet2d", **net.config) rebuilds it
            "in_channels": in_channels, "base_channels": base_channels, "channel_mults": list(channel_mults),
            "num_res_blocks": num_res_blocks, "cond_dim": cond_dim, "groups": groups,
        }
        emb_dim = 4 * base_channels
        self.time_dim = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cond_dim is not None:
            self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.null_cond = nn.Parameter(torch.zeros(emb_dim))

        chans = [base_channels * m for m in channel_mults]
        self.stem = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = chans[0]
        for i, c_out in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(c, c_out, emb_dim, groups))
                c = c_out
            self.down.append(blocks)
            last = i == len(chans) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = _ResBlock(c, c, emb_dim, groups)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, c_out in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            for j in range(num_res_blocks):
                blocks.append(_ResBlock(c + c_out if j == 0 else c, c_out, emb_dim, groups))
                c = c_out
            self.up.append(blocks)
            self.upsample.append(
                nn.Identity() if i == 0 else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                          nn.Conv2d(c, chans[i - 1], 3, padding=1))
            )
            if i > 0:
                c = chans[i - 1]
        self.out = nn.Sequential(nn.GroupNorm(_groups(c, groups), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _embedding(self, t: Tensor, cond: Tensor | None, drop_mask: Tensor | None, batch: int) -> Tensor:
        if t.shape != (batch,):
            raise ValueError(f"t must be an integer tensor of shape [{batch}], got {tuple(t.shape)}")
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_dim).to(self.time_mlp[0].weight.dtype))
        if self.cond_dim is None:
            if cond is not None:
                raise ValueError("this ImageUnet2D was built without cond_dim, so cond must be None")
            return emb
        null = self.null_cond.to(emb.dtype).expand(batch, -1)
        if cond is None:
            return emb + null
        if cond.shape != (batch, self.cond_dim):
            raise ValueError(f"cond must have shape [{batch}, {self.cond_dim}], got {tuple(cond.shape)}")
        c = self.cond_mlp(cond.to(emb.dtype))
        if drop_mask is not None:
            if drop_mask.shape != (batch,):
                raise ValueError(f"drop_mask must be a bool tensor of shape [{batch}], got {tuple(drop_mask.shape)}")
            c = torch.where(drop_mask.to(torch.bool)[:, None], null, c)
        return emb + c

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None, drop_mask: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        factor = 2 ** (self.levels - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"H and W must be divisible by {factor} for {self.levels} levels, got {tuple(x.shape[2:])}")
        emb = self._embedding(t, cond, drop_mask, x.shape[0])
        h = self.stem(x)
        skips = []
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid(h, emb)
        for blocks, up in zip(self.up, self.upsample):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            h = up(h)
        return self.out(h).to(x.dtype)  # the input's dtype under autocast too, as the 1D networks
