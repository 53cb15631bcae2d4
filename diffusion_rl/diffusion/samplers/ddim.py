"""DDIM sampling (Song et al. 2021) on a strided timestep subsequence, with stochasticity eta in [0, 1]."""

from __future__ import annotations

import math

from torch import Tensor

from diffusion_rl._numbers import is_real
from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.samplers.base import NoiseFn, SpacedSampler, Tables

__all__ = ["DDIMSampler"]


class DDIMSampler(SpacedSampler):
    """x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - std^2) eps + std z, std = eta * sqrt(posterior variance).

    Options and defaults follow diffusers' ``DDIMScheduler``: ``timestep_spacing`` "leading" | "trailing" |
    "linspace" (default "leading", on a flow path too: there 10 of 100 steps start at tau = 0.91 from pure noise,
    which shrinks samples toward zero; "trailing" starts at tau = 1), ``steps_offset=0``,
    ``set_alpha_to_one=True`` (the last step lands on the clean sample; False lands on alpha_bar_0). eps is not
    recomputed from a clipped x0 (diffusers' ``use_clipped_model_output=False``), and noise is drawn at every step
    when eta > 0.

    One deliberate difference: each step goes to the NEXT timestep of this sampler's own list. diffusers'
    ``DDIMScheduler.step`` instead goes to ``t - num_train_timesteps // steps``, which disagrees with its own list
    for "linspace" and for "trailing" when steps does not divide num_train_timesteps (diffusers issues #12633,
    #11347); for "leading" and for evenly divisible "trailing" both rules coincide.
    """

    def __init__(
        self,
        schedule: ForwardProcess,
        steps: int = 50,
        eta: float = 0.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
    ) -> None:
        super().__init__(schedule, steps, timestep_spacing, steps_offset)
        if not (is_real(eta) and 0.0 <= eta <= 1.0):
            raise ValueError(f"DDIM eta must be a float in [0, 1], got {eta!r}")
        self._eta = float(eta)
        self.set_alpha_to_one = bool(set_alpha_to_one)

    @property
    def eta(self) -> float:
        """The stochasticity, fixed at construction: the per-step tables are computed from it once and cached
        (assigning another value afterwards sampled with the old tables); build a new sampler instead."""
        return self._eta

    def _final_timestep(self) -> int:
        return -1 if self.set_alpha_to_one else 0

    def _host_tables(self) -> dict[str, list[float]]:
        sqrt_a_prev, c_eps, std = [], [], []
        proc = self.schedule
        for t, prev in zip(self._timesteps, self._prev_timesteps()):
            var = proc.posterior_variance(t, prev)
            sd = self.eta * math.sqrt(var)
            sqrt_a_prev.append(math.sqrt(proc.alpha_bar(prev)))
            c_eps.append(math.sqrt(max(proc.sigma2(prev) - sd * sd, 0.0)))
            std.append(sd)
        return {"sqrt_a_prev": sqrt_a_prev, "c_eps": c_eps, "std": std}

    def _update(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict, noise: NoiseFn) -> Tensor:
        out = tab["sqrt_a_prev"][i] * x0 + tab["c_eps"][i] * eps
        if self.eta > 0:
            out = out + tab["std"][i] * noise()
        return out
