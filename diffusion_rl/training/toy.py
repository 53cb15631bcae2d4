"""A tiny real regression problem for smoke tests of the trainer (single process, resume, DDP).

``ToyRegressionData`` holds a fixed dataset y = f(x) with a nonlinear f; ``ToyRegressor`` is an MLP whose
``loss`` adds input noise drawn from torch's global RNG (like a diffusion loss drawing t and noise), so that
exact resumption also checks that the trainer restores that RNG.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ToyRegressionData", "ToyRegressor"]


class ToyRegressionData:
    """``n`` samples of ``x ~ N(0, I_in)``, ``y = sin(x @ W1) @ W2`` from a seeded generator."""

    def __init__(self, n: int = 512, in_dim: int = 4, out_dim: int = 2, *, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, in_dim, generator=g)
        w1 = torch.randn(in_dim, 8, generator=g) / in_dim**0.5
        w2 = torch.randn(8, out_dim, generator=g) / 8**0.5
        self.y = torch.sin(self.x @ w1) @ w2

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Uniform sample with replacement, indices drawn from ``generator``."""
        idx = torch.randint(0, self.x.shape[0], (batch_size,), generator=generator)
        return {"x": self.x[idx], "y": self.y[idx]}

    def mse(self, model: nn.Module) -> float:
        """Mean squared error of ``model`` on the whole dataset."""
        with torch.no_grad():
            device = next(model.parameters()).device
            pred = model(self.x.to(device))
            return float(((pred - self.y.to(device)) ** 2).mean())


class ToyRegressor(nn.Module):
    """An MLP ``in_dim -> hidden -> hidden -> out_dim`` with GELU; ``loss`` = MSE on noise-augmented inputs."""

    def __init__(self, in_dim: int = 4, out_dim: int = 2, hidden: int = 64, input_noise: float = 0.01) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
        )
        self.input_noise = input_noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["x"] + self.input_noise * torch.randn_like(batch["x"])
        err = self(x) - batch["y"]
        return {"loss": (err**2).mean(), "mae": err.abs().mean().detach()}
