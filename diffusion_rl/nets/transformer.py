"""A DiT-style 1D transformer denoiser (Peebles & Xie 2023, adapted to trajectories).

Each horizon step is a token: a linear projection of ``x [B, H, D]`` plus a learned position embedding. The
conditioning vector ``c = time embedding (+ condition embedding)`` modulates every block through adaLN-zero:
``SiLU -> Linear`` predicts shift, scale and gate for the attention and MLP branches; the modulation layers
and the output projection start at zero, so the network starts as the zero function and each block as the
identity.

Classifier-free guidance: rows flagged in ``drop_mask``, or every row when ``cond`` is None, use the **zero
condition embedding** (as :class:`TemporalUnet`), so ``c`` is then the time embedding alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_rl.nets.checks import (
    check_drop_mask,
    check_positive,
    check_sequence,
    check_timesteps,
)
from diffusion_rl.nets.layers import condition_embedding, time_mlp


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class DiTBlock(nn.Module):
    """Pre-norm self-attention and MLP branches, each shifted, scaled and gated by the conditioning vector."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        hidden = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_model),
        )
        self.modulation = nn.Sequential(nn.SiLU(), _zero_linear(d_model, 6 * d_model))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (
            self.qkv(x).reshape(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        x = x + gate1[:, None, :] * self.attention(_modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None, :] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class TransformerDenoiser1D(nn.Module):
    """Transformer denoiser: ``net(x [B, H, transition_dim], t [B], cond=None, drop_mask=None) -> [B, H, D]``.

    Works for any ``1 <= H <= max_horizon`` (the size of the learned position table). ``cond_dim=None`` builds
    an unconditional network.
    """

    def __init__(
        self,
        transition_dim: int,
        cond_dim: int | None = None,
        d_model: int = 256,
        depth: int = 6,
        heads: int = 4,
        max_horizon: int = 512,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in [
            ("transition_dim", transition_dim),
            ("d_model", d_model),
            ("depth", depth),
            ("heads", heads),
            ("max_horizon", max_horizon),
        ]:
            check_positive(name, value)
        if cond_dim is not None:
            check_positive("cond_dim", cond_dim)
        if d_model % heads:
            raise ValueError(f"d_model must be divisible by heads, got d_model={d_model}, heads={heads}")
        self.config = {
            "transition_dim": transition_dim,
            "cond_dim": cond_dim,
            "d_model": d_model,
            "depth": depth,
            "heads": heads,
            "max_horizon": max_horizon,
            "mlp_ratio": mlp_ratio,
            "dropout": dropout,
        }
        self.transition_dim = transition_dim
        self.cond_dim = cond_dim
        self.max_horizon = max_horizon

        self.time_mlp = time_mlp(d_model, activation=nn.SiLU)
        self.cond_mlp = (
            None
            if cond_dim is None
            else nn.Sequential(nn.Linear(cond_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        )
        self.input_proj = nn.Linear(transition_dim, d_model)
        self.pos_emb = nn.Parameter(torch.randn(max_horizon, d_model) * 0.02)
        self.blocks = nn.ModuleList(DiTBlock(d_model, heads, mlp_ratio, dropout) for _ in range(depth))
        self.final_norm = nn.LayerNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), _zero_linear(d_model, 2 * d_model))
        self.output_proj = _zero_linear(d_model, transition_dim)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW should not decay (the trainer honours it): the learned positional embedding, as in
        the reference Diffusion Policy transformer's optimizer groups."""
        return {"pos_emb"}

    def condition(
        self,
        t: torch.Tensor,
        cond: torch.Tensor | None,
        drop_mask: torch.Tensor | None,
        batch: int,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """The adaLN conditioning vector: time embedding plus the (possibly dropped) condition embedding."""
        c = self.time_mlp(t)
        cond_emb = condition_embedding(
            "TransformerDenoiser1D", self.cond_mlp, self.cond_dim, cond, drop_mask, batch, dtype
        )
        return c if cond_emb is None else c + cond_emb.to(c.dtype)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        drop_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, horizon = check_sequence(x, self.transition_dim)
        if horizon > self.max_horizon:
            raise ValueError(
                f"x must have shape [B, H <= {self.max_horizon}, {self.transition_dim}] "
                f"(max_horizon), got {tuple(x.shape)}"
            )
        t = check_timesteps(t, batch, x.device)
        if drop_mask is not None:
            check_drop_mask(drop_mask, batch)
        c = self.condition(t, cond, drop_mask, batch, x.dtype)
        h = self.input_proj(x) + self.pos_emb[:horizon]
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        out = self.output_proj(_modulate(self.final_norm(h), shift, scale))
        return out.to(x.dtype)
