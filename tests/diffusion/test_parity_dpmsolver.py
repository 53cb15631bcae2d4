"""DPM-Solver++ vs diffusers' DPMSolverMultistepScheduler(algorithm_type="dpmsolver++") in float64.

diffusers casts the sample to float32 inside ``step`` (only the x_t term of the update), so agreement is at
float32 rounding of x_t (~1e-7), well inside the 1e-5 budget.
"""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import NoiseSchedule, make_sampler
from tests.diffusion.helpers import FixedDenoiser, GaussianOracle, float64_dpm_sigmas, float64_tables

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

F64 = torch.float64

# (schedule, num_steps, steps, spacing, prediction, order)
CASES = [
    ("linear", 1000, 20, "linspace", "epsilon", 2),
    ("linear", 100, 10, "leading", "sample", 2),
    ("squaredcos_cap_v2", 100, 8, "trailing", "v_prediction", 2),
    ("squaredcos_cap_v2", 100, 16, "linspace", "epsilon", 2),
    ("cosine", 50, 5, "linspace", "v_prediction", 2),
    ("cosine", 50, 7, "trailing", "sample", 1),
    ("linear", 30, 2, "leading", "epsilon", 2),
]


def _diffusers_dpm(schedule, steps, spacing, prediction, order):
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.num_steps,
        algorithm_type="dpmsolver++",
        solver_order=order,
        prediction_type=prediction,
        timestep_spacing=spacing,
    )
    float64_tables(sched, schedule)
    sched.set_timesteps(steps)
    float64_dpm_sigmas(sched, schedule)
    return sched


@pytest.mark.parametrize("name,num_steps,steps,spacing,prediction,order", CASES)
def test_dpmsolver_step_parity(name, num_steps, steps, spacing, prediction, order) -> None:
    schedule = NoiseSchedule.from_name(name, num_steps)
    sched = _diffusers_dpm(schedule, steps, spacing, prediction, order)
    sampler = make_sampler("dpmsolver++", schedule, steps=steps, timestep_spacing=spacing, order=order)
    assert sampler.timesteps == sched.timesteps.tolist()
    g = torch.Generator().manual_seed(3)
    state: dict = {}
    for t in sampler.timesteps:
        x = torch.randn(3, 7, generator=g, dtype=F64)
        out = torch.randn(3, 7, generator=g, dtype=F64)
        ref = sched.step(out, t, x).prev_sample
        ours = sampler.step(out, t, x, prediction=prediction, state=state)
        assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("name,num_steps,steps,spacing,prediction,order", CASES)
def test_dpmsolver_loop_parity(name, num_steps, steps, spacing, prediction, order) -> None:
    schedule = NoiseSchedule.from_name(name, num_steps)
    sched = _diffusers_dpm(schedule, steps, spacing, prediction, order)
    # an imperfect model of Gaussian data: the exact denoiser plus a fixed nonlinear error. (A purely arbitrary
    # function would predict x0 ~ 1e3 at the noisiest step and make the float32 cast inside diffusers' step, not
    # the algorithm, dominate the difference.)
    fixed = FixedDenoiser(4, num_steps, seed=5)
    mu, sigma = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=F64), torch.tensor([0.3, 1.0, 2.0, 0.7], dtype=F64)
    den = GaussianOracle(mu, sigma, schedule, prediction, perturb=lambda x, t: 0.02 * fixed(x, t))
    shape = (5, 3, 4)
    g = torch.Generator().manual_seed(13)
    x = torch.randn(shape, generator=g, dtype=F64)
    for t in sched.timesteps:
        x = sched.step(den(x, torch.full((shape[0],), int(t))), t, x).prev_sample
    ours = make_sampler("dpmsolver++", schedule, steps=steps, timestep_spacing=spacing, order=order).sample(
        den, shape, prediction=prediction, generator=torch.Generator().manual_seed(13), dtype=F64
    )
    assert (ours - x).abs().max().item() < 1e-5


def test_second_order_differs_from_first_order() -> None:
    """The multistep correction is active: order 2 and order 1 give different samples (same noise)."""
    schedule = NoiseSchedule.squaredcos_cap_v2(100)
    den = FixedDenoiser(4, 100, seed=5)
    outs = [
        make_sampler("dpmsolver++", schedule, steps=10, order=k).sample(
            den, (5, 4), generator=torch.Generator().manual_seed(0), dtype=F64
        )
        for k in (1, 2)
    ]
    assert (outs[0] - outs[1]).abs().max().item() > 1e-3
