"""DDPM sampler vs diffusers' DDPMScheduler.step in float64: per step and over whole loops."""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import NoiseSchedule, make_sampler
from tests.diffusion.helpers import FixedDenoiser, float64_tables

diffusers = pytest.importorskip("diffusers")

CASES = [
    # (schedule, num_steps, prediction, clip)
    ("linear", 50, "epsilon", None),
    ("linear", 50, "sample", 1.0),
    ("squaredcos_cap_v2", 20, "epsilon", 1.0),
    ("squaredcos_cap_v2", 20, "v_prediction", None),
    ("cosine", 30, "sample", None),
    ("cosine", 30, "v_prediction", 2.0),
]


def _diffusers_ddpm(schedule: NoiseSchedule, prediction: str, clip: float | None):
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=schedule.num_steps,
        prediction_type=prediction,
        clip_sample=clip is not None,
        clip_sample_range=clip if clip is not None else 1.0,
        variance_type="fixed_small",
    )
    float64_tables(sched, schedule)
    return sched


@pytest.mark.parametrize("name,num_steps,prediction,clip", CASES)
def test_ddpm_step_parity(name: str, num_steps: int, prediction: str, clip: float | None) -> None:
    schedule = NoiseSchedule.from_name(name, num_steps)
    sampler = make_sampler("ddpm", schedule)
    sched = _diffusers_ddpm(schedule, prediction, clip)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for t in sampler.timesteps:
        x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
        out = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
        ref = sched.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        noise = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        ours = sampler.step(out, t, x, prediction=prediction, noise=noise, clip_sample=clip)
        assert ours.dtype == torch.float64
        worst = max(worst, (ours - ref).abs().max().item())
    assert worst < 1e-5
    assert worst < 1e-10  # in fact equal to float64 rounding


@pytest.mark.parametrize("name,num_steps,prediction,clip", CASES)
def test_ddpm_loop_parity(name: str, num_steps: int, prediction: str, clip: float | None) -> None:
    schedule = NoiseSchedule.from_name(name, num_steps)
    sched = _diffusers_ddpm(schedule, prediction, clip)
    den = FixedDenoiser(6, num_steps)
    shape = (4, 3, 6)

    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    for t in sched.timesteps:
        out = den(x, torch.full((shape[0],), int(t)))
        x = sched.step(out, t, x, generator=g).prev_sample

    ours = make_sampler("ddpm", schedule).sample(
        den, shape, prediction=prediction, clip_sample=clip, generator=torch.Generator().manual_seed(7),
        dtype=torch.float64,
    )
    assert torch.isfinite(ours).all()
    assert (ours - x).abs().max().item() < 1e-5
