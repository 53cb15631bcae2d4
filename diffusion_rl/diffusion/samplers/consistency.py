"""Multistep consistency sampling (Song et al. 2023, Algorithm 1) for a consistency-distilled model."""

from __future__ import annotations

from torch import Tensor

from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.samplers.base import NoiseFn, Tables
from diffusion_rl.diffusion.samplers.ode import EulerSampler

__all__ = ["ConsistencySampler"]


class ConsistencySampler(EulerSampler):
    """Each step maps x_t to the clean sample the model implies (its consistency function) and, unless it is the
    last, re-noises that sample afresh to the next timestep: x_next = a_next x0 + s_next z. ``steps=1`` is one
    network evaluation from pure noise. Meant for students of :func:`~diffusion_rl.diffusion.consistency_loss`;
    on an ordinary denoiser it returns its one-step (blurry) estimate. Temperature scales z as every noise."""

    def __init__(self, schedule: ForwardProcess, steps: int = 1, timestep_spacing: str = "trailing",
                 steps_offset: int = 0) -> None:
        super().__init__(schedule, steps, timestep_spacing, steps_offset)

    def _update(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict, noise: NoiseFn) -> Tensor:
        if i == len(self._timesteps) - 1:
            return x0
        return tab["a_next"][i] * x0 + tab["s_next"][i] * noise()
