"""DDIM sampler vs diffusers in float64.

diffusers' ``DDIMScheduler.step`` steps to ``t - num_train // steps``; our DDIM steps to the next entry of its own
timestep list. The two agree for "leading" spacing and for "trailing" when steps divides num_train, which is where
we compare with DDIMScheduler directly. For the other spacings each step is checked against two other diffusers
steps that implement the same update with consistent timesteps: eta = 1 equals DDPMScheduler with custom timesteps
(ancestral step between consecutive listed timesteps), and eta = 0 equals first-order DPM-Solver++ on the same
timesteps.
"""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import NoiseSchedule, make_sampler
from tests.diffusion.helpers import FixedDenoiser, float64_dpm_sigmas, float64_tables

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

F64 = torch.float64

# (schedule, num_steps, steps, eta, spacing, prediction, clip, set_alpha_to_one)
CASES = [
    ("linear", 100, 10, 0.0, "leading", "epsilon", None, True),
    ("linear", 100, 7, 0.5, "leading", "sample", 1.0, True),
    ("linear", 100, 25, 1.0, "trailing", "v_prediction", None, False),
    ("squaredcos_cap_v2", 100, 16, 0.0, "leading", "epsilon", 1.0, True),
    ("squaredcos_cap_v2", 100, 20, 0.3, "trailing", "epsilon", None, True),
    ("cosine", 60, 6, 1.0, "leading", "v_prediction", 1.5, False),
    ("cosine", 60, 12, 0.0, "trailing", "sample", None, True),
]


def _diffusers_ddim(schedule, steps, spacing, prediction, clip, set_alpha_to_one):
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=schedule.num_steps,
        prediction_type=prediction,
        clip_sample=clip is not None,
        clip_sample_range=clip if clip is not None else 1.0,
        set_alpha_to_one=set_alpha_to_one,
        timestep_spacing=spacing,
    )
    float64_tables(sched, schedule)
    sched.set_timesteps(steps)
    return sched


def _ours(schedule, steps, eta, spacing, set_alpha_to_one):
    return make_sampler(
        "ddim", schedule, steps=steps, eta=eta, timestep_spacing=spacing, set_alpha_to_one=set_alpha_to_one
    )


@pytest.mark.parametrize("name,num_steps,steps,eta,spacing,prediction,clip,one", CASES)
def test_ddim_step_parity(name, num_steps, steps, eta, spacing, prediction, clip, one) -> None:
    schedule = NoiseSchedule.from_name(name, num_steps)
    sched = _diffusers_ddim(schedule, steps, spacing, prediction, clip, one)
    sampler = _ours(schedule, steps, eta, spacing, one)
    assert sampler.timesteps == sched.timesteps.tolist()
    g = torch.Generator().manual_seed(2)
    worst = 0.0
    for t in sampler.timesteps:
        x = torch.randn(2, 8, 3, generator=g, dtype=F64)
        out = torch.randn(2, 8, 3, generator=g, dtype=F64)
        noise = torch.randn(2, 8, 3, generator=g, dtype=F64)
        ref = sched.step(out, t, x, eta=eta, variance_noise=noise if eta > 0 else None).prev_sample
        ours = sampler.step(out, t, x, prediction=prediction, noise=noise, clip_sample=clip)
        worst = max(worst, (ours - ref).abs().max().item())
    assert worst < 1e-5


@pytest.mark.parametrize("name,num_steps,steps,eta,spacing,prediction,clip,one", CASES)
def test_ddim_loop_parity(name, num_steps, steps, eta, spacing, prediction, clip, one) -> None:
    schedule = NoiseSchedule.from_name(name, num_steps)
    sched = _diffusers_ddim(schedule, steps, spacing, prediction, clip, one)
    den = FixedDenoiser(5, num_steps, seed=3)
    shape = (3, 2, 4, 5)  # image-like [N, C, H, W]
    g = torch.Generator().manual_seed(11)
    x = torch.randn(shape, generator=g, dtype=F64)
    for t in sched.timesteps:
        out = den(x, torch.full((shape[0],), int(t)))
        x = sched.step(out, t, x, eta=eta, generator=g).prev_sample
    ours = _ours(schedule, steps, eta, spacing, one).sample(
        den, shape, prediction=prediction, clip_sample=clip, generator=torch.Generator().manual_seed(11), dtype=F64
    )
    assert (ours - x).abs().max().item() < 1e-5


# spacings where diffusers' DDIMScheduler.step strides inconsistently with its own list
IRREGULAR = [
    ("linear", 100, 10, "linspace", "epsilon"),
    ("squaredcos_cap_v2", 100, 7, "trailing", "v_prediction"),
    ("cosine", 50, 29, "trailing", "sample"),  # diffusers' own list would end in timestep -1 here
    ("cosine", 80, 9, "linspace", "v_prediction"),
]


@pytest.mark.parametrize("name,num_steps,steps,spacing,prediction", IRREGULAR)
def test_ddim_irregular_spacing_parity(name, num_steps, steps, spacing, prediction) -> None:
    schedule = NoiseSchedule.from_name(name, num_steps)
    ref_list = diffusers.DDIMScheduler(num_train_timesteps=num_steps, timestep_spacing=spacing)
    ref_list.set_timesteps(steps)
    ddim1 = _ours(schedule, steps, 1.0, spacing, True)
    ddim0 = _ours(schedule, steps, 0.0, spacing, True)
    # the same list as diffusers (minus the spurious negative timestep diffusers appends in rare trailing cases)
    assert ddim1.timesteps == [t for t in ref_list.timesteps.tolist() if t >= 0]

    ddpm = diffusers.DDPMScheduler(num_train_timesteps=num_steps, prediction_type=prediction, clip_sample=False)
    float64_tables(ddpm, schedule)
    ddpm.set_timesteps(timesteps=ddim1.timesteps)
    dpm = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=num_steps, prediction_type=prediction, solver_order=1
    )
    float64_tables(dpm, schedule)
    dpm.set_timesteps(timesteps=ddim0.timesteps)
    float64_dpm_sigmas(dpm, schedule)

    g = torch.Generator().manual_seed(5)
    for t in ddim1.timesteps:
        x = torch.randn(4, 6, generator=g, dtype=F64)
        out = torch.randn(4, 6, generator=g, dtype=F64)
        noise = torch.randn(4, 6, generator=torch.Generator().manual_seed(t), dtype=F64)
        ref1 = ddpm.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        ours1 = ddim1.step(out, t, x, prediction=prediction, noise=noise)
        assert (ours1 - ref1).abs().max().item() < 1e-5
        ref0 = dpm.step(out, t, x).prev_sample
        ours0 = ddim0.step(out, t, x, prediction=prediction)
        assert (ours0 - ref0).abs().max().item() < 1e-5
