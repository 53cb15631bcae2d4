"""DPM-Solver++ (Lu et al. 2022): a multistep solver of the probability-flow ODE in the data (x0) prediction."""

from __future__ import annotations

import math

from torch import Tensor

from diffusion_rl._numbers import is_integer
from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.samplers.base import NoiseFn, SpacedSampler, Tables

__all__ = ["DPMSolverPlusPlusSampler"]


def _lambda(alpha_bar: float, sigma2: float) -> float:
    """Half log-SNR, log(alpha) - log(sigma); +inf for the clean sample, -inf for pure noise."""
    if sigma2 <= 0.0:
        return math.inf
    if alpha_bar <= 0.0:
        return -math.inf
    return 0.5 * math.log(alpha_bar) - 0.5 * math.log(sigma2)


class DPMSolverPlusPlusSampler(SpacedSampler):
    """Deterministic DPM-Solver++ with ``order`` 2 (multistep, midpoint form) or 1 (equivalent to DDIM, eta=0).

    Matches diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)`` with its
    defaults: ``timestep_spacing="linspace"`` (steps + 1 points with timestep 0 dropped), ``steps_offset=0``,
    ``final_sigmas_type="zero"`` (the last step lands on the clean sample), and the first and last steps taken at
    first order (``lower_order_final``). With x0 = D(x_s) predicted at the current step s and t the next one,
    h = lambda_t - lambda_s:
        first order:  x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) D_0
        second order: the same plus 0.5 alpha_t (1 - e^-h) (D_0 - D_-1) h / h_-1, h_-1 the previous step's h.
    The history restarts at every ``sample`` call (and at a warm start's first step).
    """

    def __init__(
        self,
        schedule: ForwardProcess,
        steps: int = 20,
        order: int = 2,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ) -> None:
        super().__init__(schedule, steps, timestep_spacing, steps_offset, final_to_zero=True)
        if not is_integer(order) or order not in (1, 2):
            raise ValueError(f"DPM-Solver++ order must be one of [1, 2], got {order!r}")
        self.order = int(order)

    def _host_tables(self) -> dict[str, list[float]]:
        proc = self.schedule
        c_x, c_d0, c_d1 = [], [], []
        h_before = math.nan
        for i, (s, t) in enumerate(zip(self._timesteps, self._prev_timesteps())):
            a_s, a_t, s2_s, s2_t = proc.alpha_bar(s), proc.alpha_bar(t), proc.sigma2(s), proc.sigma2(t)
            sigma_s, sigma_t, alpha_t = math.sqrt(s2_s), math.sqrt(s2_t), math.sqrt(a_t)
            h = _lambda(a_t, s2_t) - _lambda(a_s, s2_s)
            c0 = alpha_t * (1.0 - math.exp(-h))
            c_x.append(sigma_t / sigma_s)
            c_d0.append(c0)
            # the second-order term needs a previous step and a finite h (the final step is first order anyway)
            c_d1.append(0.5 * c0 * h / h_before if i > 0 and math.isfinite(h) else 0.0)
            h_before = h
        return {"c_x": c_x, "c_d0": c_d0, "c_d1": c_d1}

    def _update(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict, noise: NoiseFn) -> Tensor:
        prev_x0 = state.get("x0")
        last = i == len(self._timesteps) - 1
        out = tab["c_x"][i] * x + tab["c_d0"][i] * x0
        if self.order == 2 and prev_x0 is not None and state.get("i") == i - 1 and not last:
            out = out + tab["c_d1"][i] * (x0 - prev_x0)
        state["x0"], state["i"] = x0, i
        return out
