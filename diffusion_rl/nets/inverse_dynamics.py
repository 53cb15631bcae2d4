"""Decision Diffuser's inverse dynamics model: an MLP ``(s_t, s_{t+1}) -> a_t``.

The planner diffuses states only; actions come from consecutive planned states through this model, trained
jointly with the diffusion loss. ``tanh_output=True`` bounds actions to ``[-1, 1]`` (for normalized bounded
action spaces); the reference model has a linear output.
"""

from __future__ import annotations

import torch
from torch import nn

from diffusion_rl.nets.checks import check_positive


class InverseDynamics(nn.Module):
    """``net(s_t [..., obs_dim], s_next [..., obs_dim]) -> a_t [..., act_dim]``; any leading batch shape."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, tanh_output: bool = False) -> None:
        super().__init__()
        check_positive("obs_dim", obs_dim)
        check_positive("act_dim", act_dim)
        check_positive("hidden_dim", hidden_dim)
        self.config = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "hidden_dim": hidden_dim,
            "tanh_output": tanh_output,
        }
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        layers: list[nn.Module] = [
            nn.Linear(2 * obs_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, act_dim),
        ]
        if tanh_output:
            layers.append(nn.Tanh())
        self.mlp = nn.Sequential(*layers)

    def forward(self, s_t: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        for name, s in (("s_t", s_t), ("s_next", s_next)):
            if not isinstance(s, torch.Tensor) or s.ndim < 1 or s.shape[-1] != self.obs_dim:
                got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
                raise ValueError(f"{name} must have shape [..., {self.obs_dim}], got {got}")
        if s_t.shape != s_next.shape:
            raise ValueError(
                f"s_t and s_next must have the same shape, got {tuple(s_t.shape)} and {tuple(s_next.shape)}"
            )
        out = self.mlp(torch.cat([s_t, s_next], dim=-1))
        return out.to(s_t.dtype)
