"""Samplers driven by the exact denoiser of Gaussian data reproduce the data's mean and standard deviation.

Data: N(mu, diag(sigma^2)) with sigma in [0.5, 1.5] (the scale of normalized trajectories and images), in a flat
[N, D] and an image [N, C, H, W] layout; schedule squaredcos_cap_v2 with 100 steps (Diffusion Policy's).

Tolerances, over N = 20,000 samples:
- mean: |mean - mu| < 0.04 sigma per dimension. The standard error of a sample mean is sigma / sqrt(N) = 0.007
  sigma, so this is ~5.6 standard errors (the max over up to 32 dimensions stays well inside); all samplers here
  have no mean bias (DDIM uses "trailing" spacing, which starts at the last, pure-noise timestep; "leading"
  starts at t = 95 of 100 whose signal level 0.06 would bias the mean).
- std: |std / sigma - 1| < 0.05 per dimension. The standard error is ~0.5%; the rest is the known
  under-dispersion of discretized samplers: DDPM's fixed-small variance leaves out Var[x0 | x_t] (the exact
  linear-Gaussian chain gives -3.5% for sigma = 0.5 at 100 steps), DDIM and DPM-Solver++ take finite steps of
  the probability-flow ODE (about -2.5% at 50 DDIM steps, -1% at 20 DPM-Solver++ steps). The last test checks that
  this bias shrinks as the number of steps grows, as a discretization error must.
"""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import NoiseSchedule, make_sampler
from tests.diffusion.helpers import GaussianOracle

N = 20_000


def _data(kind: str) -> tuple[tuple[int, ...], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if kind == "flat":
        mu, sigma = torch.tensor([0.5, -1.0, 0.0, 0.8, 0.2]), torch.tensor([0.5, 1.0, 1.5, 0.7, 1.2])
        return (N, 5), mu, sigma
    mu = torch.rand(2, 4, 4, generator=g) * 2 - 1
    sigma = 0.5 + torch.rand(2, 4, 4, generator=g)
    return (N, 2, 4, 4), mu, sigma


CONFIGS = [
    ("ddpm", {}, "epsilon"),
    ("ddim", {"steps": 50, "timestep_spacing": "trailing"}, "v_prediction"),
    ("ddim", {"steps": 100, "eta": 1.0, "timestep_spacing": "trailing"}, "sample"),
    ("dpmsolver++", {"steps": 20}, "epsilon"),
]


@pytest.mark.parametrize("kind", ["flat", "image"])
@pytest.mark.parametrize("name,options,prediction", CONFIGS)
def test_sampler_reproduces_gaussian_moments(kind: str, name: str, options: dict, prediction: str) -> None:
    shape, mu, sigma = _data(kind)
    schedule = NoiseSchedule.squaredcos_cap_v2(100)
    oracle = GaussianOracle(mu, sigma, schedule, prediction)
    x = make_sampler(name, schedule, **options).sample(
        oracle, shape, prediction=prediction, generator=torch.Generator().manual_seed(1)
    )
    assert x.shape == shape and x.dtype == torch.float32
    x = x.double()
    mean_err = ((x.mean(0) - mu) / sigma).abs().max().item()
    std_err = (x.std(0) / sigma - 1).abs().max().item()
    assert mean_err < 0.04, f"mean off by {mean_err:.3f} sigma"
    assert std_err < 0.05, f"std off by {std_err:.1%}"


def _mean_std_bias(name: str, steps: int) -> float:
    shape, mu, sigma = _data("flat")
    schedule = NoiseSchedule.squaredcos_cap_v2(100)
    options = {"steps": steps} if name == "dpmsolver++" else {"steps": steps, "timestep_spacing": "trailing"}
    x = make_sampler(name, schedule, **options).sample(
        GaussianOracle(mu, sigma, schedule), shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    return (x.std(0) / sigma - 1).mean().item()


@pytest.mark.parametrize("name,few,many", [("ddim", 10, 50), ("dpmsolver++", 5, 20)])
def test_few_step_bias_shrinks_with_steps(name: str, few: int, many: int) -> None:
    b_few, b_many = _mean_std_bias(name, few), _mean_std_bias(name, many)
    assert b_few < 0 and abs(b_many) < abs(b_few) / 2, (b_few, b_many)
