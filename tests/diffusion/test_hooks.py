"""Sampler hooks: inpainting, classifier-free guidance, gradient guidance, temperature, warm start."""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import (
    ClassifierFreeGuidance,
    GradientGuidance,
    Inpaint,
    NoiseSchedule,
    make_sampler,
)
from tests.diffusion.helpers import FixedDenoiser, GaussianOracle

SCHEDULE = NoiseSchedule.squaredcos_cap_v2(100)
SAMPLERS = [("ddpm", {}), ("ddim", {"steps": 10, "eta": 0.5}), ("dpmsolver++", {"steps": 8})]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class CountingOracle(GaussianOracle):
    """Gaussian-data denoiser that also records the timesteps it was called with."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[torch.Tensor] = []

    def __call__(self, x, t, cond=None):
        self.seen.append(t.clone())
        return super().__call__(x, t, cond)


# ------------------------------------------------------------------------------------------------ inpainting
@pytest.mark.parametrize("name,options", SAMPLERS)
def test_inpainted_entries_equal_values_exactly(name: str, options: dict) -> None:
    B, H, D = 6, 8, 5
    mask = torch.zeros(1, H, D, dtype=torch.bool)
    mask[:, 0, :3] = True  # current state (first 3 dims) at the first step
    mask[:, -1, :2] = True  # a goal at the last step
    values = torch.randn(B, H, D, generator=_gen(1))
    den = FixedDenoiser(D, 100)
    x = make_sampler(name, SCHEDULE, **options).sample(
        den, (B, H, D), constraints=Inpaint(mask, values), generator=_gen(), clip_sample=3.0
    )
    m = mask.expand(B, H, D)
    assert torch.equal(x[m], values[m])
    free = make_sampler(name, SCHEDULE, **options).sample(den, (B, H, D), generator=_gen(), clip_sample=3.0)
    assert not torch.allclose(free[m], values[m])  # without the constraint they would not be there
    # the conditioning propagates: unmasked entries change too (the denoiser mixes dims)
    assert (x[~m] - free[~m]).abs().max().item() > 1e-3


def test_inpaint_values_broadcast_and_several_constraints() -> None:
    B, H, D = 3, 4, 2
    m1 = torch.zeros(H, D, dtype=torch.bool)
    m1[0] = True
    m2 = torch.zeros(B, 1, 1, dtype=torch.bool)
    m2[1] = True  # a whole sample fixed
    x = make_sampler("ddim", SCHEDULE, steps=5).sample(
        FixedDenoiser(D, 100), (B, H, D), constraints=[Inpaint(m1, 0.25), Inpaint(m2, torch.tensor(-2.0))],
        generator=_gen(),
    )
    assert (x[0, 0] == 0.25).all() and (x[2, 0] == 0.25).all()
    assert (x[1] == -2.0).all()  # the later constraint wins where both apply


# ------------------------------------------------------------------------------------------------ classifier-free guidance
class CondNet:
    """out = 0.5 tanh(x) + cond (broadcast), or + null (= -0.3) where drop_mask is True. Records call shapes."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor | None]] = []

    def __call__(self, x, t, cond=None, drop_mask=None):
        self.calls.append((x.shape[0], None if drop_mask is None else drop_mask.clone()))
        c = cond["goal"] if isinstance(cond, dict) else cond
        c = c.view(c.shape[0], *([1] * (x.ndim - 1)))
        if drop_mask is not None:
            c = torch.where(drop_mask.view_as(c), torch.full_like(c, -0.3), c)
        return 0.5 * torch.tanh(x) + c


@pytest.mark.parametrize("name,options", SAMPLERS)
def test_guidance_weight_zero_is_the_conditional_model(name: str, options: dict) -> None:
    cond = torch.tensor([0.2, -0.1, 0.4, 0.0])
    sampler = make_sampler(name, SCHEDULE, **options)
    plain = sampler.sample(CondNet(), (4, 3), cond=cond, generator=_gen(), clip_sample=2.0)
    guided = sampler.sample(CondNet(), (4, 3), cond=cond, guidance=ClassifierFreeGuidance(0.0), generator=_gen(),
                            clip_sample=2.0)
    assert torch.equal(plain, guided)


@pytest.mark.parametrize("name,options", SAMPLERS)
def test_guidance_is_one_batched_forward_and_combines_correctly(name: str, options: dict) -> None:
    B, w = 4, 0.7
    cond = {"goal": torch.tensor([0.2, -0.1, 0.4, 0.0])}
    sampler = make_sampler(name, SCHEDULE, **options)
    net = CondNet()
    guided = sampler.sample(net, (B, 3), cond=cond, guidance=ClassifierFreeGuidance(w), generator=_gen(),
                            clip_sample=2.0)
    assert len(net.calls) == len(sampler.timesteps)  # one forward per step
    for batch, drop in net.calls:
        assert batch == 2 * B
        assert torch.equal(drop, torch.tensor([False] * B + [True] * B))

    ref_net = CondNet()

    def manual(x, t, c):  # two separate passes combined by hand: c + w (c - u)
        cond_out = ref_net(x, t, c, drop_mask=torch.zeros(B, dtype=torch.bool))
        uncond_out = ref_net(x, t, c, drop_mask=torch.ones(B, dtype=torch.bool))
        return cond_out + w * (cond_out - uncond_out)

    expected = sampler.sample(manual, (B, 3), cond=cond, generator=_gen(), clip_sample=2.0)
    assert torch.allclose(guided, expected, atol=1e-6)
    unguided = sampler.sample(CondNet(), (B, 3), cond=cond, generator=_gen(), clip_sample=2.0)
    assert (guided - unguided).abs().max().item() > 1e-2


# ------------------------------------------------------------------------------------------------ gradient guidance
@pytest.mark.parametrize("name,options", SAMPLERS)
def test_gradient_guidance_moves_samples_towards_higher_values(name: str, options: dict) -> None:
    target = 1.5
    fn = lambda x, t: -((x - target) ** 2).sum(dim=tuple(range(1, x.ndim)))
    oracle = GaussianOracle(torch.zeros(2), torch.ones(2), SCHEDULE)
    sampler = make_sampler(name, SCHEDULE, **options)
    free = sampler.sample(oracle, (512, 2), generator=_gen())
    guided, info = sampler.sample(oracle, (512, 2), generator=_gen(), return_info=True,
                                  grad_guidance=GradientGuidance(fn, scale=0.1, n_steps=2, t_stopgrad=2))
    assert fn(guided, None).mean() > fn(free, None).mean() + 0.5
    assert guided.mean().item() > free.mean().item() + 0.2
    assert info["guide_values"].shape == (512,)
    assert info["timesteps"] == sampler.timesteps
    # values reported for ranking plans track the final samples' values
    final = fn(guided, None)
    assert torch.corrcoef(torch.stack([info["guide_values"], final]))[0, 1] > 0.5


def test_gradient_guidance_cutoff_and_constraints() -> None:
    fn = lambda x, t: x.sum(dim=(1, 2))
    den = FixedDenoiser(3, 100)
    sampler = make_sampler("ddpm", SCHEDULE)
    free = sampler.sample(den, (4, 5, 3), generator=_gen())
    # no guidance at or below t_stopgrad: a cutoff above every timestep changes nothing (fn is only evaluated)
    off = sampler.sample(den, (4, 5, 3), generator=_gen(), grad_guidance=GradientGuidance(fn, t_stopgrad=100))
    assert torch.equal(free, off)
    on = sampler.sample(den, (4, 5, 3), generator=_gen(), grad_guidance=GradientGuidance(fn, scale=1.0))
    assert on.sum() > free.sum()
    # constraints are re-applied after each guidance move and after each step
    mask = torch.zeros(1, 5, 3, dtype=torch.bool)
    mask[:, 0] = True
    inp = sampler.sample(den, (4, 5, 3), generator=_gen(), constraints=Inpaint(mask, -1.0),
                         grad_guidance=GradientGuidance(fn, scale=1.0))
    assert (inp[:, 0] == -1.0).all()


def test_gradient_guidance_scales_by_posterior_variance() -> None:
    """With scale_by_variance the move is scale * var * grad: a linear fn and a zero model make it checkable."""
    seen = []

    def fn(x, t):
        seen.append(x.detach().clone())
        return x.sum(dim=1)

    sch = NoiseSchedule.linear(3, beta_start=0.1, beta_end=0.3)
    sampler = make_sampler("ddpm", sch)
    x = sampler.sample(lambda x, t, c: torch.zeros_like(x), (1, 2), generator=_gen(), dtype=torch.float64,
                       grad_guidance=GradientGuidance(fn, scale=0.5, n_steps=2, t_stopgrad=2))
    # at t = 2 (the only step >= t_stopgrad) fn is called twice; the second x is the first moved by 0.5 * var
    var = sch.posterior_variance(2, 1)
    assert torch.allclose(seen[1] - seen[0], torch.full((1, 2), 0.5 * var, dtype=torch.float64))
    assert x.shape == (1, 2)


@pytest.mark.parametrize("name,options", [("consistency", {"steps": 1}), ("euler", {"steps": 1}),
                                          ("ddim", {"steps": 1, "timestep_spacing": "trailing"})])
def test_gradient_guidance_moves_a_one_step_plan(name: str, options: dict) -> None:
    """A one-step chain lands on x0 (posterior variance 0) and has no step before whose variance it could take:
    it takes one DDPM step's from where it starts, so guidance is not silently multiplied by zero."""
    seen = []

    def fn(x, t):
        seen.append(x.detach().clone())
        return x.sum(dim=1)

    sch = NoiseSchedule.linear(3, beta_start=0.1, beta_end=0.3)
    sampler = make_sampler(name, sch, **options)
    zero = lambda x, t, c: torch.zeros_like(x)
    free = sampler.sample(zero, (1, 2), generator=_gen(), dtype=torch.float64)
    guided = sampler.sample(zero, (1, 2), generator=_gen(), dtype=torch.float64,
                            grad_guidance=GradientGuidance(fn, scale=0.5, n_steps=2, t_stopgrad=0))
    var = sch.posterior_variance(2, 1)
    assert var > 0.05 and torch.allclose(seen[1] - seen[0], torch.full((1, 2), 0.5 * var, dtype=torch.float64))
    assert not torch.equal(guided, free)


# ------------------------------------------------------------------------------------------------ temperature, warm start
@pytest.mark.parametrize("name,options", [("ddpm", {}), ("ddim", {"steps": 10, "timestep_spacing": "trailing"}),
                                          ("ddim", {"steps": 10, "eta": 1.0, "timestep_spacing": "trailing"}),
                                          ("dpmsolver++", {"steps": 10})])
@pytest.mark.parametrize("temperature", [0.5, 0.25])
def test_temperature_shrinks_spread_by_its_factor(name: str, options: dict, temperature: float) -> None:
    """Exact Gaussian denoiser of N(mu, sigma^2): the sampler is affine in its noises, so scaling every noise it
    draws (initial, injected) by the temperature scales the samples' spread around their centre by exactly it."""
    mu, sigma = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.6])
    oracle = GaussianOracle(mu, sigma, SCHEDULE)
    sampler = make_sampler(name, SCHEDULE, **options)
    full = sampler.sample(oracle, (20000, 2), generator=_gen(), dtype=torch.float64)
    cold = sampler.sample(oracle, (20000, 2), generator=_gen(), dtype=torch.float64, temperature=temperature)
    assert torch.allclose(full.std(0), sigma.double(), rtol=0.25)  # coarse DDIM grids under-disperse a little
    assert torch.allclose(cold.std(0) / full.std(0), torch.full((2,), temperature, dtype=torch.float64), rtol=0.02)
    assert torch.allclose(cold.mean(0), mu.double(), atol=0.03)
    # zero temperature: one deterministic sample, the same for every row
    zero = sampler.sample(oracle, (8, 2), generator=_gen(), dtype=torch.float64, temperature=0.0)
    assert torch.allclose(zero, zero[:1].expand(8, 2)) and torch.allclose(zero[0], mu.double(), atol=0.05)


@pytest.mark.parametrize("name,options", [("ddpm", {}), ("ddim", {"steps": 10, "eta": 0.5}),
                                          ("dpmsolver++", {"steps": 10})])
def test_temperature_one_is_the_plain_loop(name: str, options: dict) -> None:
    """temperature=1.0 draws exactly what a hand-written loop over ``step`` draws from the same generator."""
    oracle = GaussianOracle(torch.zeros(3), torch.ones(3), SCHEDULE, perturb=lambda x, t: 0.1 * torch.sin(x))
    sampler = make_sampler(name, SCHEDULE, **options)
    out = sampler.sample(oracle, (16, 3), generator=_gen(), temperature=1.0)
    g = _gen()
    x = torch.randn(16, 3, generator=g)
    state: dict = {}
    for t in sampler.timesteps:
        x = sampler.step(oracle(x, torch.full((16,), t)), t, x, noise=torch.randn(16, 3, generator=g), state=state)
    assert torch.equal(out, x)


def test_temperature_scales_warm_start_renoising() -> None:
    oracle = GaussianOracle(torch.zeros(2), torch.ones(2), SCHEDULE)
    sampler = make_sampler("ddim", SCHEDULE, steps=20)
    clean = torch.zeros(4000, 2)
    warm = [sampler.sample(oracle, (4000, 2), x_init=clean, t_start=60, generator=_gen(), temperature=tau,
                           dtype=torch.float64) for tau in (1.0, 0.5)]
    assert torch.allclose(warm[1].std(0) / warm[0].std(0), torch.full((2,), 0.5, dtype=torch.float64), rtol=0.02)


@pytest.mark.parametrize("name,options", [("ddim", {"steps": 10}), ("dpmsolver++", {"steps": 8})])
def test_initial_noise_is_the_first_draw(name: str, options: dict) -> None:
    """A given initial draw replaces the generator's first one (scaled by the temperature like it): a
    deterministic sampler is a function of it, what a directly distilled student learns in one step."""
    oracle = GaussianOracle(torch.zeros(3), torch.ones(3), SCHEDULE, perturb=lambda x, t: 0.1 * torch.sin(x))
    sampler = make_sampler(name, SCHEDULE, **options)
    z = torch.randn(16, 3, generator=_gen(5))
    for tau in (1.0, 0.5):
        drawn = sampler.sample(oracle, (16, 3), generator=_gen(5), temperature=tau)
        given = sampler.sample(oracle, (16, 3), generator=_gen(9), temperature=tau, initial_noise=z)
        assert torch.equal(drawn, given), tau
    other = sampler.sample(oracle, (16, 3), initial_noise=z.flip(0), temperature=0.5)
    assert not torch.allclose(other, given)
    with pytest.raises(ValueError, match=r"initial_noise must have the sample shape \(16, 3\), got \(16, 2\)"):
        sampler.sample(oracle, (16, 3), initial_noise=torch.zeros(16, 2))
    with pytest.raises(ValueError, match="cannot be combined with a warm start"):
        sampler.sample(oracle, (16, 3), initial_noise=z, x_init=torch.zeros(16, 3), t_start=20)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.5", True])
def test_temperature_refuses_bad_values(bad) -> None:
    with pytest.raises(ValueError, match="temperature must be a finite float >= 0"):
        make_sampler("ddim", SCHEDULE, steps=5).sample(GaussianOracle(torch.zeros(1), torch.ones(1), SCHEDULE),
                                                       (2, 1), temperature=bad)


@pytest.mark.parametrize("name,options,t_start", [("ddpm", {}, 5), ("ddim", {"steps": 20}, 12),
                                                    ("dpmsolver++", {"steps": 20}, 10)])
def test_warm_start_from_clean_sample_stays_close(name: str, options: dict, t_start: int) -> None:
    mu, sigma = torch.tensor([0.5, -0.5, 1.0]), torch.tensor([1.0, 0.5, 0.8])
    clean = mu + sigma * torch.randn(256, 3, generator=_gen(5))
    other = mu + sigma * torch.randn(256, 3, generator=_gen(6))
    oracle = CountingOracle(mu, sigma, SCHEDULE)
    sampler = make_sampler(name, SCHEDULE, **options)
    x, info = sampler.sample(oracle, (256, 3), x_init=clean, t_start=t_start, generator=_gen(), return_info=True)
    run = [t for t in sampler.timesteps if t <= t_start]
    assert info["timesteps"] == run and len(oracle.seen) == len(run)
    assert all(int(t[0]) <= t_start and t.dtype == torch.long for t in oracle.seen)
    dist = (x - clean).abs().mean().item()
    assert dist < 0.15 and dist < 0.25 * (other - clean).abs().mean().item()


def test_warm_start_details() -> None:
    sampler = make_sampler("ddim", SCHEDULE, steps=10, timestep_spacing="trailing")  # 99, 89, ..., 9
    clean = torch.randn(4, 2, generator=_gen())
    oracle = CountingOracle(torch.zeros(2), torch.ones(2), SCHEDULE)
    _, info = sampler.sample(oracle, (4, 2), x_init=clean, t_start=35, return_info=True, generator=_gen())
    assert info["timesteps"] == [29, 19, 9]  # re-noised to the largest listed timestep <= t_start
    # no listed timestep <= t_start: x_init comes back (constrained)
    mask = torch.tensor([True, False])
    out = sampler.sample(oracle, (4, 2), x_init=clean, t_start=3, constraints=Inpaint(mask, 7.0))
    assert torch.equal(out[:, 1], clean[:, 1]) and (out[:, 0] == 7.0).all()


# ------------------------------------------------------------------------------------------------ misc behaviour
def test_ddim_eta_one_over_all_steps_is_ddpm() -> None:
    den = FixedDenoiser(3, 100)
    a = make_sampler("ddpm", SCHEDULE).sample(den, (8, 3), generator=_gen(), dtype=torch.float64)
    b = make_sampler("ddim", SCHEDULE, steps=100, eta=1.0, timestep_spacing="trailing").sample(
        den, (8, 3), generator=_gen(), dtype=torch.float64
    )
    # the same ancestral update; the only generator difference is DDIM's unused noise draw at the final step
    assert torch.allclose(a, b, atol=1e-9)


def test_dtype_device_and_timestep_tensor() -> None:
    net = torch.nn.Linear(3, 3).double()
    seen = []

    def den(x, t, cond):
        seen.append((t.dtype, tuple(t.shape), x.dtype))
        return net(x)

    x = make_sampler("ddim", SCHEDULE, steps=3).sample(den, (2, 3), dtype=torch.float64)
    assert x.dtype == torch.float64 and x.device.type == "cpu"
    assert seen == [(torch.long, (2,), torch.float64)] * 3
    y = make_sampler("ddim", SCHEDULE, steps=3).sample(lambda x, t, c: torch.zeros_like(x), (2, 3))
    assert y.dtype == torch.float32


def test_generator_reproducibility() -> None:
    den = FixedDenoiser(4, 100)
    s = make_sampler("ddim", SCHEDULE, steps=10, eta=1.0)
    assert torch.equal(s.sample(den, (3, 4), generator=_gen(3)), s.sample(den, (3, 4), generator=_gen(3)))
    assert not torch.equal(s.sample(den, (3, 4), generator=_gen(3)), s.sample(den, (3, 4), generator=_gen(4)))
