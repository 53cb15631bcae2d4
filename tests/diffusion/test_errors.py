"""Bad input gets a ValueError that names the allowed values or the expected shape."""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import (
    ClassifierFreeGuidance,
    GradientGuidance,
    Inpaint,
    NoiseSchedule,
    diffusion_loss,
    make_sampler,
)

SCH = NoiseSchedule.cosine(20)
zero = lambda x, t, c=None: torch.zeros_like(x)


def test_unknown_sampler_and_schedule_names() -> None:
    with pytest.raises(ValueError, match=r"unknown sampler 'ddim2'.*\['consistency', 'ddim', 'ddpm', 'dpmsolver\+\+', 'euler', 'heun'\]"):
        make_sampler("ddim2", SCH)
    with pytest.raises(ValueError, match=r"unknown noise schedule 'cosin'.*\['cosine', 'linear', 'squaredcos_cap_v2'\]"):
        NoiseSchedule.from_name("cosin", 10)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['step'\] for sampler 'ddim'.*'steps'"):
        make_sampler("ddim", SCH, step=5)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['steps'\] for sampler 'ddpm'"):
        make_sampler("ddpm", SCH, steps=5)


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++"])
def test_steps_out_of_range(name: str) -> None:
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, num_steps=20\], got 21"):
        make_sampler(name, SCH, steps=21)
    with pytest.raises(ValueError, match=r"got 0"):
        make_sampler(name, SCH, steps=0)


def test_unknown_prediction_type() -> None:
    msg = r"unknown prediction type 'eps'.*\['epsilon', 'sample', 'v_prediction', 'velocity'\]"
    with pytest.raises(ValueError, match=msg):
        make_sampler("ddim", SCH, steps=5).sample(zero, (2, 3), prediction="eps")
    with pytest.raises(ValueError, match=msg):
        diffusion_loss(zero, torch.zeros(2, 3), SCH, prediction="eps")
    with pytest.raises(ValueError, match=msg):
        make_sampler("ddpm", SCH).step(torch.zeros(2), 5, torch.zeros(2), prediction="eps")


def test_inpaint_mask_that_does_not_broadcast() -> None:
    sampler = make_sampler("ddim", SCH, steps=5)
    bad = Inpaint(torch.zeros(4, 3, dtype=torch.bool), 0.0)  # H=4 but the sample has H=8
    with pytest.raises(ValueError, match=r"mask of shape \(4, 3\) does not broadcast to the sample shape \(2, 8, 3\)"):
        sampler.sample(zero, (2, 8, 3), constraints=bad)
    bad_values = Inpaint(torch.zeros(1, 8, 3, dtype=torch.bool), torch.zeros(5, 8, 3))
    with pytest.raises(ValueError, match=r"values of shape \(5, 8, 3\) does not broadcast to the sample shape"):
        sampler.sample(zero, (2, 8, 3), constraints=bad_values)
    with pytest.raises(ValueError, match="bool"):
        Inpaint(torch.zeros(8, 3), 0.0)


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_ddim_eta_outside_unit_interval(eta: float) -> None:
    with pytest.raises(ValueError, match=r"eta must be a float in \[0, 1\]"):
        make_sampler("ddim", SCH, steps=5, eta=eta)


def test_ddim_eta_is_fixed_at_construction() -> None:
    """The per-step tables are computed from eta once and cached: an eta assigned after the first sample() was
    reported by the sampler but not used (built with 1.0, set to 0.0: samples 0.66 away from a fresh eta=0)."""
    sampler = make_sampler("ddim", SCH, steps=5, eta=1.0)
    with pytest.raises(AttributeError):
        sampler.eta = 0.0
    assert sampler.eta == 1.0


def test_other_bad_options_and_inputs() -> None:
    with pytest.raises(ValueError, match=r"unknown timestep_spacing 'even'.*\['leading', 'linspace', 'trailing'\]"):
        make_sampler("ddim", SCH, steps=5, timestep_spacing="even")
    with pytest.raises(ValueError, match=r"order must be one of \[1, 2\]"):
        make_sampler("dpmsolver++", SCH, steps=5, order=3)
    with pytest.raises(ValueError, match="out of range"):
        make_sampler("ddim", SCH, steps=5, steps_offset=10)
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 100,000\], got 0"):
        NoiseSchedule.linear(0)
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 100,000\], got 1000000000"):
        NoiseSchedule.cosine(10**9)  # a typo, refused before a table of 1e9 float64 values is computed
    with pytest.raises(ValueError, match="betas must be"):
        NoiseSchedule.from_betas([0.1, 0.0])
    sampler = make_sampler("ddim", SCH, steps=5)
    with pytest.raises(ValueError, match=r"x_init must have the sample shape \(2, 3\), got \(2, 4\)"):
        sampler.sample(zero, (2, 3), x_init=torch.zeros(2, 4), t_start=5)
    with pytest.raises(ValueError, match="t_start is only meaningful with x_init"):
        sampler.sample(zero, (2, 3), t_start=5)
    with pytest.raises(ValueError, match=r"warm start needs t_start in \[0, 19\]"):
        sampler.sample(zero, (2, 3), x_init=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ClassifierFreeGuidance needs cond"):
        sampler.sample(zero, (2, 3), guidance=ClassifierFreeGuidance(1.0))
    for weight in (float("nan"), float("inf")):  # a NaN weight sampled NaN without a word
        with pytest.raises(ValueError, match="ClassifierFreeGuidance weight must be a finite float"):
            ClassifierFreeGuidance(weight)
    with pytest.raises(ValueError, match=r"denoiser output must have the sample shape \(2, 3\)"):
        sampler.sample(lambda x, t, c: x[:, :2], (2, 3))
    with pytest.raises(ValueError, match=r"GradientGuidance fn must return shape \[2\]"):
        sampler.sample(zero, (2, 3), grad_guidance=GradientGuidance(lambda x, t: x, t_stopgrad=0))
    with pytest.raises(ValueError, match="shape must be a sequence of positive ints"):
        sampler.sample(zero, (0, 3))
    with pytest.raises(ValueError, match="not one of this sampler's timesteps"):
        sampler.step(torch.zeros(2), 7, torch.zeros(2))
    with pytest.raises(ValueError, match=r"weights must broadcast to the data shape \(2, 3\)"):
        diffusion_loss(zero, torch.zeros(2, 3), SCH, weights=torch.ones(4))
    with pytest.raises(ValueError, match=r"t must have shape \[2\]"):
        diffusion_loss(zero, torch.zeros(2, 3), SCH, t=torch.zeros(3, dtype=torch.long))


def test_guidance_warm_start_and_offset_values_that_would_sample_garbage_are_refused() -> None:
    for scale in (float("nan"), float("inf"), True):  # a NaN scale made every sample NaN without a word
        with pytest.raises(ValueError, match="GradientGuidance scale must be a finite float"):
            GradientGuidance(lambda x, t: x.sum(-1), scale=scale)
    for key in ("n_steps", "t_stopgrad"):
        for bad in (True, 1.5, -1):
            with pytest.raises(ValueError, match=f"GradientGuidance {key} must be an integer >= 0"):
                GradientGuidance(lambda x, t: x.sum(-1), **{key: bad})
    sampler = make_sampler("ddim", SCH, steps=5)
    with pytest.raises(ValueError, match=r"warm start needs t_start in \[0, 19\].*got 7.9"):
        sampler.sample(zero, (2, 3), x_init=torch.zeros(2, 3), t_start=7.9)  # was run from 7 silently
    with pytest.raises(ValueError, match="steps_offset must be an integer >= 0, got -1"):
        make_sampler("ddim", SCH, steps=5, steps_offset=-1)  # was "out of range ... too large"
    with pytest.raises(ValueError, match="steps_offset must be an integer >= 0, got 0.5"):
        make_sampler("ddim", SCH, steps=5, steps_offset=0.5)
    with pytest.raises(ValueError, match="steps_offset=1 shifts 'leading' timesteps only"):
        make_sampler("ddim", SCH, steps=5, timestep_spacing="trailing", steps_offset=1)
    assert make_sampler("ddim", SCH, steps=5, steps_offset=1).timesteps == [17, 13, 9, 5, 1]
    import numpy as np  # numpy numbers are numbers

    assert make_sampler("ddim", SCH, steps=5, steps_offset=np.int64(1)).timesteps == [17, 13, 9, 5, 1]
    GradientGuidance(lambda x, t: x.sum(-1), scale=np.float32(0.1), n_steps=np.int64(2), t_stopgrad=np.int64(1))


def test_a_leading_chain_that_starts_far_below_pure_noise_warns() -> None:
    """'leading' rounds the stride down: 13 of 20 steps start at t = 12, where pure noise is not the sample's
    distribution; evenly dividing steps start one stride below the end, as diffusers' DDIM does, without a word."""
    with pytest.warns(UserWarning, match=r"steps=13 of num_steps=20 starts the chain at t=12"):
        make_sampler("ddim", SCH, steps=13)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_sampler("ddim", SCH, steps=5).timesteps[0] == 16
        make_sampler("ddim", SCH, steps=13, timestep_spacing="trailing")


def test_numbers_are_python_or_numpy_and_never_bools() -> None:
    """The core's rule (diffusion_rl._numbers): numpy numbers are numbers, bools are not, and a fractional size is
    refused rather than cut."""
    import numpy as np

    from diffusion_rl.diffusion import FlowPath

    ddim = make_sampler("ddim", NoiseSchedule.cosine(np.int64(20)), steps=np.int64(5), eta=np.float32(0.5))
    assert ddim.steps == 5 and ddim.eta == 0.5 and type(SCH.num_steps) is int
    assert type(FlowPath(np.int64(10)).num_steps) is int
    assert make_sampler("dpmsolver++", SCH, steps=5, order=np.int64(1)).order == 1
    assert ClassifierFreeGuidance(np.float32(1.0)).weight == 1.0
    out = ddim.sample(zero, (2, 3), temperature=np.float32(0.5), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3)
    for bad, match in ((lambda: make_sampler("ddim", SCH, eta=True), "eta must be a float in"),
                       (lambda: make_sampler("dpmsolver++", SCH, order=True), "order must be one of"),
                       (lambda: ddim.sample(zero, (2, 3), clip_sample=True), "clip_sample must be None or a float > 0"),
                       (lambda: ddim.sample(zero, (2.5, 3)), r"shape must be a sequence of positive ints"),
                       (lambda: ddim.sample(zero, (True, 3)), r"shape must be a sequence of positive ints")):
        with pytest.raises(ValueError, match=match):
            bad()


def test_a_single_step_refuses_a_clip_that_sample_refuses() -> None:
    ddim = make_sampler("ddim", SCH, steps=5)
    x = torch.randn(2, 3)
    for clip in (-1.0, 0.0, float("nan")):  # -1 clamped every x0 to -1, nan made it NaN
        with pytest.raises(ValueError, match="clip_sample must be None or a float > 0"):
            ddim.step(torch.zeros_like(x), ddim.timesteps[0], x, clip_sample=clip)


def test_make_sampler_names_a_schedule_that_is_not_one() -> None:
    for bad in (None, "linear", 100):  # an AttributeError before, when steps was left out
        with pytest.raises(ValueError, match="schedule must be a forward process"):
            make_sampler("ddim", bad)


def test_distillation_losses_refuse_weights_that_would_grow_the_data() -> None:
    from diffusion_rl.diffusion.consistency import _weighted_mse

    x = torch.randn(4, 3)
    assert _weighted_mse(x, torch.zeros_like(x), torch.ones(4, 1)) == pytest.approx(float((x**2).mean()))
    with pytest.raises(ValueError, match=r"weights must broadcast to the data shape \(4, 3\), got shape \(4, 1, 1\)"):
        _weighted_mse(x, torch.zeros_like(x), torch.ones(4, 1, 1))


def test_a_schedule_from_a_python_list_keeps_float64() -> None:
    betas = [0.1, 0.2, 0.3]
    assert NoiseSchedule(betas).betas.tolist() == betas
