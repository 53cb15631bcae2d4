"""Multistep consistency sampling (Song et al. 2023, Algorithm 1) for a consistency-distilled model."""

from __future__ import annotations

import math

from torch import Tensor

from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.samplers.base import NoiseFn, Sampler, Tables
from diffusion_rl.diffusion.timesteps import spaced_timesteps

__all__ = ["ConsistencySampler"]


class ConsistencySampler(Sampler):
    """Each step maps x_t to the clean sample the model implies (its consistency function) and, unless it is the
    last, re-noises that sample afresh to the next timestep: x_next = a_next x0 + s_next z. ``steps=1`` is one
    network evaluation from pure noise. Meant for students of :func:`~diffusion_rl.diffusion.consistency_loss`;
    on an ordinary denoiser it returns its one-step (blurry) estimate. Temperature scales z as every noise."""

    def __init__(self, schedule: ForwardProcess, steps: int = 1, timestep_spacing: str = "trailing",
                 steps_offset: int = 0) -> None:
        super().__init__(schedule)
        self._timesteps = spaced_timesteps(schedule.num_steps, steps, timestep_spacing, steps_offset)
        self.steps = len(self._timesteps)
        self.timestep_spacing = timestep_spacing

    @property
    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    def _host_tables(self) -> dict[str, list[float]]:
        prev = self._prev_timesteps()
        return {"a_next": [math.sqrt(self.schedule.alpha_bar(p)) for p in prev],
                "s_next": [math.sqrt(self.schedule.sigma2(p)) for p in prev]}

    def _update(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict, noise: NoiseFn) -> Tensor:
        if i == len(self._timesteps) - 1:
            return x0
        return tab["a_next"][i] * x0 + tab["s_next"][i] * noise()
