"""Janner's temporal U-Net (Diffuser) with Decision Diffuser's condition embedding.

Layout (as in the reference networks, so parameter counts match them): a sinusoidal time embedding and MLP;
per resolution two residual blocks (Conv1d -> GroupNorm -> Mish, twice, with the embedding projected and added
after the first conv), optional linear attention, and a stride-2 conv down (not after the last level); two
middle blocks; the mirrored path up with skip connections and transposed convs; a final conv block and a 1x1
conv back to the transition dimension. With ``transition_dim=14`` and the defaults this has exactly the
3,956,302 parameters of Diffuser's hopper network.

A condition ``cond [B, cond_dim]`` (Decision Diffuser: the normalized return) is embedded by an MLP to ``dim``
features and concatenated to the time embedding. The null condition used for classifier-free guidance is the
**zero embedding** (Decision Diffuser's convention): rows flagged in ``drop_mask``, or every row when ``cond``
is None, get an all-zero condition embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffusion_rl.nets.checks import (
    check_dim_mults,
    check_drop_mask,
    check_group_divisible,
    check_positive,
    check_sequence,
    check_timesteps,
)
from diffusion_rl.nets.layers import (
    Conv1dBlock,
    Downsample1d,
    LinearAttention1d,
    Mish,
    PartsEmbedding,
    ShortConv1d,
    Upsample1d,
    condition_embedding,
    pad_length,
    time_mlp,
)


class ResidualTemporalBlock(nn.Module):
    """Two conv blocks with an additive embedding after the first, plus a (1x1 conv) residual path."""

    def __init__(
        self, in_channels: int, out_channels: int, embed_dim: int, kernel_size: int = 5, n_groups: int = 8
    ) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.block2 = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.embed = nn.Sequential(Mish(), nn.Linear(embed_dim, out_channels))
        self.residual = (
            ShortConv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.block1(x) + self.embed(emb)[:, :, None]
        return self.block2(out) + self.residual(x)


def _attention(channels: int, enabled: bool) -> nn.Module:
    return LinearAttention1d(channels) if enabled else nn.Identity()


class TemporalUnet(nn.Module):
    """Temporal U-Net denoiser: ``net(x [B, H, D], t [B], cond=None, drop_mask=None) -> [B, H, D]``.

    ``D`` is ``transition_dim``. Any horizon ``H >= 1`` works: the input is zero-padded at the end to a
    multiple of ``2 ** (len(dim_mults) - 1)`` and the output cropped back. ``cond_dim=None`` builds an
    unconditional network (passing ``cond`` is then an error; ``drop_mask`` is accepted and has no effect).
    ``cond_parts`` (sizes summing to ``cond_dim``) makes the condition a composition of parts, each embedded on
    its own and droppable on its own (``drop_mask [B, K]``), for composed guidance.
    """

    def __init__(
        self,
        transition_dim: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        kernel_size: int = 5,
        cond_dim: int | None = None,
        attention: bool = False,
        n_groups: int = 8,
        cond_parts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_positive("transition_dim", transition_dim)
        check_positive("dim", dim)
        if cond_dim is not None:
            check_positive("cond_dim", cond_dim)
        if cond_parts is not None:
            cond_parts = [int(p) for p in cond_parts]
            if cond_dim is None or not cond_parts or min(cond_parts) < 1 or sum(cond_parts) != cond_dim:
                raise ValueError(f"cond_parts must be positive sizes that sum to cond_dim={cond_dim}, "
                                 f"got {cond_parts}")
        dim_mults = check_dim_mults(dim_mults)
        channels = [dim * m for m in dim_mults]
        for c in channels:
            check_group_divisible("dim * mult", c, n_groups)
        self.config = {
            "transition_dim": transition_dim,
            "dim": dim,
            "dim_mults": list(dim_mults),
            "kernel_size": kernel_size,
            "cond_dim": cond_dim,
            "attention": attention,
            "n_groups": n_groups,
            **({"cond_parts": cond_parts} if cond_parts is not None else {}),
        }
        self.transition_dim = transition_dim
        self.cond_dim = cond_dim
        self.cond_parts = cond_parts
        self.horizon_multiple = 2 ** (len(dim_mults) - 1)

        self.time_mlp = time_mlp(dim)
        if cond_dim is None:
            self.cond_mlp = None
            embed_dim = dim
        else:
            def cond_mlp(size: int) -> nn.Module:
                return nn.Sequential(nn.Linear(size, dim), Mish(), nn.Linear(dim, dim * 4), Mish(),
                                     nn.Linear(dim * 4, dim))

            # a plain condition keeps its one MLP (and its weights' names); a parted one gets one per part
            self.cond_mlp = cond_mlp(cond_dim) if cond_parts is None else PartsEmbedding(cond_parts, cond_mlp)
            embed_dim = 2 * dim

        def block(c_in: int, c_out: int) -> ResidualTemporalBlock:
            return ResidualTemporalBlock(c_in, c_out, embed_dim, kernel_size, n_groups)

        levels = list(zip([transition_dim, *channels[:-1]], channels))
        self.downs = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(levels):
            last = i == len(levels) - 1
            self.downs.append(
                nn.ModuleList(
                    [
                        block(c_in, c_out),
                        block(c_out, c_out),
                        _attention(c_out, attention),
                        nn.Identity() if last else Downsample1d(c_out),
                    ]
                )
            )
        mid = channels[-1]
        self.mid1 = block(mid, mid)
        self.mid_attn = _attention(mid, attention)
        self.mid2 = block(mid, mid)
        self.ups = nn.ModuleList()
        for c_in, c_out in reversed(levels[1:]):
            self.ups.append(
                nn.ModuleList(
                    [
                        block(c_out * 2, c_in),
                        block(c_in, c_in),
                        _attention(c_in, attention),
                        Upsample1d(c_in),
                    ]
                )
            )
        self.final = nn.Sequential(
            Conv1dBlock(dim, dim, kernel_size, n_groups), nn.Conv1d(dim, transition_dim, 1)
        )

    def embed(
        self,
        t: torch.Tensor,
        cond: torch.Tensor | None,
        drop_mask: torch.Tensor | None,
        batch: int,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Time embedding, joined with the (possibly dropped) condition embedding when the net has one."""
        emb = self.time_mlp(t)
        cond_emb = condition_embedding("TemporalUnet", self.cond_mlp, self.cond_dim, cond, drop_mask, batch, dtype)
        if self.cond_mlp is None:
            return emb
        if cond_emb is None:  # no condition given: the null embedding for every sample
            cond_emb = emb.new_zeros(batch, emb.shape[-1])
        return torch.cat([emb, cond_emb.to(emb.dtype)], dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, horizon = check_sequence(x, self.transition_dim)
        t = check_timesteps(t, batch, x.device)
        if drop_mask is not None:
            check_drop_mask(drop_mask, batch, len(self.cond_parts) if self.cond_parts else None)
        emb = self.embed(t, cond, drop_mask, batch, x.dtype)

        h = pad_length(x.transpose(1, 2), self.horizon_multiple)
        skips = []
        for res1, res2, attn, down in self.downs:
            h = attn(res2(res1(h, emb), emb))
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for res1, res2, attn, up in self.ups:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(attn(res2(res1(h, emb), emb)))
        out = self.final(h)[:, :, :horizon]
        return out.transpose(1, 2).to(x.dtype)
