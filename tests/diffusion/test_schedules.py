"""Noise schedules and timestep spacings: values, registry, serialization, and parity with diffusers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion_rl.diffusion import SCHEDULES, NoiseSchedule, spaced_timesteps

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("name,num_steps", [("linear", 1000), ("linear", 20), ("squaredcos_cap_v2", 100), ("squaredcos_cap_v2", 7)])
def test_schedule_betas_parity_with_diffusers(name: str, num_steps: int) -> None:
    ours = NoiseSchedule.from_name(name, num_steps)
    ref = diffusers.DDPMScheduler(num_train_timesteps=num_steps, beta_schedule=name)
    assert ours.betas.dtype == torch.float64
    # diffusers stores float32 betas: agreement up to float32 rounding
    assert torch.allclose(ours.betas, ref.betas.double(), rtol=1e-6, atol=1e-9)


def test_cosine_matches_diffuser_reference_formula() -> None:
    """Diffuser / Decision Diffuser: alpha_bar on a linspace grid, normalized by its first value, betas clipped."""
    T, s = 20, 0.008
    steps = T + 1
    grid = np.linspace(0, steps, steps)
    ac = np.cos(((grid / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    ac = ac / ac[0]
    betas = np.clip(1 - ac[1:] / ac[:-1], 0, 0.999)
    ours = NoiseSchedule.cosine(T)
    assert np.allclose(ours.betas.numpy(), betas, rtol=1e-12, atol=1e-15)
    # the same curve as squaredcos_cap_v2 (the normalization cancels in the ratios)
    assert torch.allclose(ours.betas, NoiseSchedule.squaredcos_cap_v2(T).betas, rtol=1e-12)
    assert ours.betas[-1].item() == pytest.approx(0.999)  # the cap binds at the last step


def test_tables_and_q_sample_numbers() -> None:
    sch = NoiseSchedule.linear(4, beta_start=0.1, beta_end=0.4)
    assert sch.num_steps == 4
    assert torch.allclose(sch.betas, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    assert torch.allclose(sch.alphas_cumprod, torch.tensor([0.9, 0.72, 0.504, 0.3024], dtype=torch.float64))
    x0 = torch.full((2, 3), 2.0)
    noise = torch.full((2, 3), -1.0)
    t = torch.tensor([0, 3])
    xt = sch.q_sample(x0, t, noise)
    assert xt.dtype == torch.float32
    expected0 = 2 * math.sqrt(0.9) - math.sqrt(0.1)
    expected3 = 2 * math.sqrt(0.3024) - math.sqrt(1 - 0.3024)
    assert torch.allclose(xt[0], torch.full((3,), expected0))
    assert torch.allclose(xt[1], torch.full((3,), expected3))
    assert sch.posterior_variance(1, 0) == pytest.approx((1 - 0.9) / (1 - 0.72) * 0.2)
    assert sch.posterior_variance(0, -1) == 0.0


def test_schedule_registry_and_config_round_trip() -> None:
    assert sorted(SCHEDULES) == ["cosine", "linear", "squaredcos_cap_v2"]
    for sch in (
        NoiseSchedule.from_name("linear", 10, beta_start=1e-3),
        NoiseSchedule.cosine(13, s=0.01),
        NoiseSchedule.squaredcos_cap_v2(5),
        NoiseSchedule.from_betas([0.1, 0.2, 0.5]),
    ):
        back = NoiseSchedule.from_config(sch.to_config())
        assert torch.equal(back.betas, sch.betas)
        assert back.to_config() == sch.to_config()


def test_to_moves_in_place_and_returns_self() -> None:
    sch = NoiseSchedule.cosine(10)
    assert sch.to("cpu") is sch
    assert sch.device == torch.device("cpu")
    assert sch.alphas_cumprod.dtype == torch.float64


def test_tables_are_real_under_a_meta_default_device() -> None:
    # a run checks its model sizes by building the model under torch.device("meta"); the schedule must still hold
    # numbers there (and be the same ones), not shapeless meta tensors
    with torch.device("meta"):
        built = [NoiseSchedule.from_name(name, 12) for name in SCHEDULES] + [NoiseSchedule.from_betas([0.1, 0.4])]
    for sch in built:
        assert sch.device == torch.device("cpu")
        assert torch.equal(sch.alphas_cumprod, NoiseSchedule.from_config(sch.to_config()).alphas_cumprod)
    assert torch.allclose(built[1].betas, NoiseSchedule.cosine(12).betas)


def test_diffuser_betas_are_monotone_and_in_range() -> None:
    for name in SCHEDULES:
        ac = NoiseSchedule.from_name(name, 100).alphas_cumprod
        assert (ac[1:] < ac[:-1]).all() and ac[0] < 1 and ac[-1] > 0


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_timestep_spacing_parity_with_diffusers(spacing: str) -> None:
    """Our lists equal DDIMScheduler's and DPMSolverMultistepScheduler's, except that we drop the spurious
    negative timestep diffusers' "trailing" rule appends for some (num_train, steps) pairs."""
    for num_train in (10, 50, 100, 1000):
        for steps in sorted({1, 2, 3, 7, 10, 29, 31, num_train // 2, num_train}):
            if steps > num_train:
                continue
            ddim = diffusers.DDIMScheduler(num_train_timesteps=num_train, timestep_spacing=spacing)
            ddim.set_timesteps(steps)
            expected = [([t for t in ddim.timesteps.tolist() if t >= 0], False)]
            if steps < num_train:  # at steps == num_train the DPM rule repeats timesteps (we de-duplicate)
                dpm = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=num_train, timestep_spacing=spacing)
                dpm.set_timesteps(steps)
                ref = [t for t in dpm.timesteps.tolist() if t >= 0]
                if len(set(ref)) == len(ref):
                    expected.append((ref, True))
            for ref, dpm_rule in expected:
                if ref[0] < (num_train - 1) / 2:  # one step placed at t = 0: pure noise taken for a sample
                    with pytest.raises(ValueError, match=rf"starts the chain at t={ref[0]}, far from pure noise"):
                        spaced_timesteps(num_train, steps, spacing, final_to_zero=dpm_rule)
                    assert spacing != "trailing" and steps == 1
                else:
                    assert spaced_timesteps(num_train, steps, spacing, final_to_zero=dpm_rule) == ref, (num_train, steps)


def test_a_spacing_that_would_start_from_an_almost_clean_timestep_is_refused() -> None:
    """DPM-Solver++'s rule with "leading" and steps = num_steps places every point at t = 0: pure noise would be
    taken for an almost clean sample (diffusers samples from it silently)."""
    with pytest.raises(ValueError, match=r"steps=20 of num_steps=20 starts the chain at t=0, far from pure noise at "
                                         r"t=19: use timestep_spacing='trailing' \(it starts at t="):
        spaced_timesteps(20, 20, "leading", final_to_zero=True)
    assert spaced_timesteps(20, 20, "trailing", final_to_zero=True)[0] == 19
    assert spaced_timesteps(20, 13, "leading")[0] == 12  # diffusers' DDIM list: below 19, still kept


def test_epsilon_prediction_is_refused_on_a_schedule_without_signal_at_its_last_step() -> None:
    """max_beta = 1 ends the cosine chain at alpha_bar = 0: eps cannot give x0 there (samples would be NaN);
    v-prediction and x0-prediction can."""
    from diffusion_rl.diffusion import make_sampler

    zero_snr = NoiseSchedule.cosine(20, max_beta=1.0)
    assert zero_snr.alphas_cumprod[-1] == 0
    with pytest.raises(ValueError, match=r"prediction 'epsilon' needs signal at every timestep.*zero terminal SNR"):
        make_sampler("ddim", zero_snr, steps=4).sample(lambda x, t, c=None: torch.zeros_like(x), (2, 3))
    for prediction in ("v_prediction", "sample"):
        out = make_sampler("ddim", zero_snr, steps=4).sample(lambda x, t, c=None: torch.zeros_like(x), (2, 3),
                                                              prediction=prediction)
        assert torch.isfinite(out).all()
    NoiseSchedule.cosine(20).check_prediction("epsilon")  # the usual cap (0.999) keeps some signal
