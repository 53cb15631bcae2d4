"""Shared test helpers: a fixed deterministic denoiser and float64 diffusers schedulers."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffusion_rl.diffusion import NoiseSchedule


class FixedDenoiser:
    """A fixed, deterministic, shape-agnostic function (x_t, t) -> output of moderate size.

    It mixes the last dimension with a random matrix and depends on t, so every coefficient of a sampler step
    matters; tanh keeps outputs bounded so long loops stay finite.
    """

    def __init__(self, last_dim: int, num_steps: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(last_dim, last_dim, generator=g, dtype=torch.float64) / math.sqrt(last_dim)
        self.b = torch.randn(last_dim, generator=g, dtype=torch.float64)
        self.num_steps = num_steps

    def __call__(self, x: Tensor, t: Tensor, cond: object = None) -> Tensor:
        tt = (t.to(x.dtype) / self.num_steps).view(-1, *([1] * (x.ndim - 1)))
        w, b = self.w.to(x.dtype), self.b.to(x.dtype)
        return torch.tanh(x @ w + b * torch.cos(3.0 * tt)) + 0.3 * torch.sin(5.0 * tt)


def float64_tables(sched, schedule: NoiseSchedule) -> None:
    """Replace a diffusers scheduler's float32 schedule tables by our float64 ones (same betas), so that a parity
    test compares the step math, not float32 rounding of alpha_bar."""
    ac = schedule.alphas_cumprod.clone()
    sched.betas = schedule.betas.clone()
    sched.alphas = schedule.alphas.clone()
    sched.alphas_cumprod = ac
    if hasattr(sched, "final_alpha_cumprod"):  # DDIM
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if sched.config.set_alpha_to_one else ac[0]
    if hasattr(sched, "one"):  # DDPM
        sched.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(sched, "lambda_t"):  # DPM-Solver
        sched.alpha_t = ac.sqrt()
        sched.sigma_t = (1 - ac).sqrt()
        sched.lambda_t = torch.log(sched.alpha_t) - torch.log(sched.sigma_t)


def float64_dpm_sigmas(sched, schedule: NoiseSchedule) -> None:
    """After ``set_timesteps``: DPMSolverMultistepScheduler's sigmas in float64 (final sigma 0)."""
    ac = schedule.alphas_cumprod[sched.timesteps.long()]
    sched.sigmas = torch.cat([((1 - ac) / ac).sqrt(), torch.zeros(1, dtype=torch.float64)])


SCHEDULE_TO_DIFFUSERS = {"linear": "linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}


class GaussianOracle:
    """The exact denoiser of data x0 ~ N(mu, diag(sigma^2)) under ``schedule`` (any forward process: a noise
    schedule or a flow path), for any prediction type.

    With x_t = a x0 + s eps ((a, s) the process's coefficients), per element:
        E[x0 | x_t] = mu + a sigma^2 (x_t - a mu) / (a^2 sigma^2 + s^2),
        E[eps | x_t] = (x_t - a E[x0 | x_t]) / s,   v = a eps - s x0,   velocity = eps - x0.
    ``mu`` and ``sigma`` broadcast against one sample (no batch dim). ``perturb`` optionally adds a fixed function
    of (x, t) to the output (a realistic, imperfect model for loop comparisons).
    """

    def __init__(self, mu: Tensor, sigma: Tensor, schedule: NoiseSchedule, prediction: str = "epsilon",
                 perturb=None) -> None:
        self.mu, self.sigma, self.prediction, self.perturb = mu, sigma, prediction, perturb
        self.schedule = schedule
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor, cond: object = None) -> Tensor:
        self.calls += 1
        a, s = self.schedule.coefficients(t, x)
        mu, var = self.mu.to(x), self.sigma.to(x) ** 2
        x0 = mu + a * var * (x - a * mu) / (a * a * var + s * s)
        eps = (x - a * x0) / s
        out = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0, "velocity": eps - x0}[self.prediction]
        if self.perturb is not None:
            out = out + self.perturb(x, t)
        return out
