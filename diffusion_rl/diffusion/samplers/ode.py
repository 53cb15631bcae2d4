"""ODE samplers for flow matching: Euler (first order) and Heun (second order) on a timestep grid.

Both integrate from pure noise to the clean sample on the sampler's descending integer timesteps ("trailing"
spacing by default, which starts at the pure-noise end: for a flow path with T = 100 and 10 steps the times are
tau = 1.0, 0.9, ..., 0.1, then 0). They take every hook of :class:`Sampler` (guidance, inpainting, temperature on
the initial noise, warm start). Written with the predicted (x0, eps), an Euler step lands on
x_next = a_next x0 + s_next eps; on the linear flow path that is exactly x + (tau_next - tau) v with the velocity
v = eps - x0, and on a diffusion schedule it is DDIM with eta = 0 (the probability-flow ODE).
"""

from __future__ import annotations

import math

from torch import Tensor

from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.samplers.base import NoiseFn, PredictFn, SpacedSampler, Tables

__all__ = ["EulerSampler", "HeunSampler"]


class EulerSampler(SpacedSampler):
    """First-order ODE steps: one network evaluation per step."""

    def __init__(self, schedule: ForwardProcess, steps: int = 10, timestep_spacing: str = "trailing",
                 steps_offset: int = 0) -> None:
        super().__init__(schedule, steps, timestep_spacing, steps_offset)

    def _host_tables(self) -> dict[str, list[float]]:
        prev = self._prev_timesteps()
        return {"a_next": [math.sqrt(self.schedule.alpha_bar(p)) for p in prev],
                "s_next": [math.sqrt(self.schedule.sigma2(p)) for p in prev]}

    def _update(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict, noise: NoiseFn) -> Tensor:
        return tab["a_next"][i] * x0 + tab["s_next"][i] * eps


class HeunSampler(EulerSampler):
    """Heun's method on the linear flow path: an Euler predictor, the velocity evaluated again where it lands, and
    the step taken with the mean of the two velocities (the last step, onto the clean sample, stays Euler, as in
    Karras et al. 2022). 2 x steps - 1 network evaluations. Needs ``process="flow"``: the velocity form assumes
    a + s = 1."""

    def __init__(self, schedule: ForwardProcess, steps: int = 10, timestep_spacing: str = "trailing",
                 steps_offset: int = 0) -> None:
        if getattr(schedule, "kind", None) != "flow":
            raise ValueError("sampler 'heun' integrates the velocity of the linear flow path: it needs "
                             "process='flow' (for diffusion use 'dpmsolver++', the second-order solver of its ODE)")
        super().__init__(schedule, steps, timestep_spacing, steps_offset)

    def _update_with_model(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict,
                           noise: NoiseFn, predict: PredictFn) -> Tensor:
        if i == len(self._timesteps) - 1:
            return self._update(i, x, x0, eps, tab, state, noise)
        tau, tau_next = tab["s"][i], tab["s_next"][i]  # both > 0 before the last step
        # velocities from the points and their (clipped) x0: (x - x0) / tau, which is eps - x0 on the path a + s = 1
        # without clipping; with it, eps - x0 would carry the unclipped part of the model's x0 back into x
        v = (x - x0) / tau
        euler = x + (tau_next - tau) * v
        x0_next, _ = predict(euler, i + 1)
        return x + (tau_next - tau) * 0.5 * (v + (euler - x0_next) / tau_next)
