"""Diffuser's value function: a temporal U-Net encoder on noisy trajectories, then an MLP to one scalar.

Used for value guidance: ``J(x_t, t)`` is trained on noisy trajectories and its gradient steers sampling.
Layout as in Janner's ``ValueFunction``: per level two residual blocks and a stride-2 conv down, then two
blocks that halve the channels twice, each followed by a stride-2 conv, then ``[flattened features, time
embedding] -> fc/2 -> 1``. For hopper (``transition_dim=14``, H = 32) it has the reference's 2,294,817
parameters. The flattened size is computed from the length the convolutions really produce (the reference's
bookkeeping breaks for horizons above 32), so every horizon ``H >= 1`` builds and runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from diffusion_rl.nets.checks import (
    check_dim_mults,
    check_group_divisible,
    check_positive,
    check_sequence,
    check_timesteps,
)
from diffusion_rl.nets.layers import Downsample1d, Mish, downsampled_length, time_mlp
from diffusion_rl.nets.temporal_unet import ResidualTemporalBlock


class ValueNet(nn.Module):
    """Value of a noisy trajectory: ``net(x [B, horizon, transition_dim], t [B]) -> [B]``."""

    def __init__(
        self,
        transition_dim: int,
        horizon: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        kernel_size: int = 5,
        n_groups: int = 8,
    ) -> None:
        super().__init__()
        check_positive("transition_dim", transition_dim)
        check_positive("horizon", horizon)
        check_positive("dim", dim)
        dim_mults = check_dim_mults(dim_mults)
        channels = [dim * m for m in dim_mults]
        mid = channels[-1]
        for name, c in [("dim * mult", c) for c in channels] + [
            ("last channels / 2", mid // 2),
            ("last channels / 4", mid // 4),
        ]:
            if c < 1:
                raise ValueError(f"{name} must be >= 1 for ValueNet, got {c} (increase dim or dim_mults)")
            check_group_divisible(name, c, n_groups)
        self.config = {
            "transition_dim": transition_dim,
            "horizon": horizon,
            "dim": dim,
            "dim_mults": list(dim_mults),
            "kernel_size": kernel_size,
            "n_groups": n_groups,
        }
        self.transition_dim = transition_dim
        self.horizon = horizon

        self.time_mlp = time_mlp(dim)

        def block(c_in: int, c_out: int) -> ResidualTemporalBlock:
            return ResidualTemporalBlock(c_in, c_out, dim, kernel_size, n_groups)

        self.blocks = nn.ModuleList()
        for c_in, c_out in zip([transition_dim, *channels[:-1]], channels):
            self.blocks.append(nn.ModuleList([block(c_in, c_out), block(c_out, c_out), Downsample1d(c_out)]))
        self.mid1 = block(mid, mid // 2)
        self.mid_down1 = Downsample1d(mid // 2)
        self.mid2 = block(mid // 2, mid // 4)
        self.mid_down2 = Downsample1d(mid // 4)
        # a GroupNorm whose groups hold one number (one channel each, at length 1: small widths and horizons)
        # outputs its bias whatever that number, and torch's batch-size check refuses it at batch 1 (one plan, or
        # a goal): forward() runs such a net on the row twice (GroupNorm is per sample: the same numbers)
        norms = [(c, downsampled_length(horizon, i)) for i, c in enumerate(channels)]
        norms += [(mid // 2, downsampled_length(horizon, len(channels))),
                  (mid // 4, downsampled_length(horizon, len(channels) + 1))]
        self.single_value_norms = any(c // n_groups == 1 and length == 1 for c, length in norms)
        fc_dim = (mid // 4) * downsampled_length(horizon, len(channels) + 2)
        self.head = nn.Sequential(nn.Linear(fc_dim + dim, fc_dim // 2), Mish(), nn.Linear(fc_dim // 2, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, horizon = check_sequence(x, self.transition_dim)
        if horizon != self.horizon:
            raise ValueError(
                f"x must have shape [B, {self.horizon}, {self.transition_dim}] (the horizon this "
                f"ValueNet was built for), got {tuple(x.shape)}"
            )
        t = check_timesteps(t, batch, x.device)
        if batch == 1 and self.single_value_norms:
            return self.forward(x.expand(2, -1, -1), t.expand(2))[:1]
        emb = self.time_mlp(t)
        h = x.transpose(1, 2)
        for res1, res2, down in self.blocks:
            h = down(res2(res1(h, emb), emb))
        h = self.mid_down1(self.mid1(h, emb))
        h = self.mid_down2(self.mid2(h, emb))
        out = self.head(torch.cat([h.flatten(1), emb.to(h.dtype)], dim=-1))
        return out[:, 0].to(x.dtype)
