"""DDPM ancestral sampling (Ho et al. 2020) over all training timesteps, fixed-small (posterior) variance."""

from __future__ import annotations

import math

from torch import Tensor

from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.samplers.base import NoiseFn, Sampler, Tables

__all__ = ["DDPMSampler"]


class DDPMSampler(Sampler):
    """x_{t-1} = mu(x0, x_t) + std_t z with the posterior mean and std of q(x_{t-1} | x_t, x0), for t = T-1..0.

    The variance is clamped at 1e-20 before its log/sqrt as in DDPM's clipped log variance, and no noise is
    added at t = 0; this equals diffusers' ``DDPMScheduler`` (variance_type="fixed_small") step for step, including
    when it draws noise from a generator (only for t > 0).
    """

    def __init__(self, schedule: ForwardProcess) -> None:
        super().__init__(schedule)
        self._timesteps = list(range(schedule.num_steps - 1, -1, -1))

    @property
    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    def _host_tables(self) -> dict[str, list[float]]:
        c_x0, c_xt, std = [], [], []
        proc = self.schedule
        for t, prev in zip(self._timesteps, self._prev_timesteps()):
            a_t, a_prev = proc.alpha_bar(t), proc.alpha_bar(prev)
            s2_t, s2_prev = proc.sigma2(t), proc.sigma2(prev)
            alpha = a_t / a_prev
            beta = proc.transition_variance(t, prev)  # 1 - alpha for a variance-preserving schedule
            c_x0.append(math.sqrt(a_prev) * beta / s2_t)
            c_xt.append(math.sqrt(alpha) * s2_prev / s2_t)
            var = max(s2_prev / s2_t * beta, 1e-20)
            std.append(math.sqrt(var) if t > 0 else 0.0)
        return {"c_x0": c_x0, "c_xt": c_xt, "std": std}

    def _update(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict, noise: NoiseFn) -> Tensor:
        mean = tab["c_x0"][i] * x0 + tab["c_xt"][i] * x
        if self._timesteps[i] > 0:
            return mean + tab["std"][i] * noise()
        return mean
