"""Behaviour cloning: an MLP ``a = pi(s)`` trained by MSE on the dataset's actions.

The baseline that every offline planner is compared against (D4RL's BC scores), trained through the same trainer,
scored by the same evaluation and saved as the same artifact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffusion_rl.algos._common import check_sizes, masked_mean
from diffusion_rl.algos.base import Algorithm, PlanOutput, register_algorithm

__all__ = ["BehaviorCloning"]


@register_algorithm
class BehaviorCloning(Algorithm):
    """Deterministic MLP policy regressing normalized actions on normalized observations."""

    name = "bc"
    batch_keys = ("observations", "actions", "mask")
    default_sampling: dict[str, Any] = {}
    default_data = {"normalizer": "gaussian"}

    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, depth: int = 2, horizon: int = 1) -> None:
        check_sizes(obs_dim=obs_dim, act_dim=act_dim, hidden_dim=hidden_dim, horizon=horizon)
        check_sizes(0, depth=depth)
        super().__init__(obs_dim=obs_dim, act_dim=act_dim, hidden_dim=hidden_dim, depth=depth, horizon=horizon)
        self.obs_dim, self.act_dim, self.horizon = obs_dim, act_dim, horizon
        layers: list[nn.Module] = []
        width = obs_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
            width = hidden_dim
        self.mlp = nn.Sequential(*layers, nn.Linear(width, act_dim))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = self.mlp(batch["observations"])
        loss = masked_mean(((pred - batch["actions"]) ** 2).mean(-1), batch["mask"])
        return {"loss": loss}

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, *, generator: torch.Generator | None = None) -> PlanOutput:
        """The MLP's action for each observation (deterministic: ``generator`` is accepted and unused)."""
        self.check_dtypes(obs=obs)
        actions = self.mlp(obs)
        return PlanOutput(actions=actions, trajectory=actions[:, None])
