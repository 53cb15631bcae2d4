"""Flow matching on the shared core: the linear path, the velocity target, the Euler and Heun samplers with every
hook, and the exact-Gaussian checks of the diffusion samplers repeated on the flow path.

Tolerances of the Gaussian checks (N = 20,000 samples; data N(mu, diag sigma^2), sigma in [0.5, 1.5]): the mean
within 0.04 sigma (5.6 standard errors), the std within 5%: what remains is the discretization error of the ODE
(Euler at 50 steps under-disperses about 3%, Heun at 10 steps about 1.5%; the last test checks it shrinks with the
steps and with the order).
"""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import (
    PROCESSES,
    ClassifierFreeGuidance,
    FlowPath,
    GradientGuidance,
    Inpaint,
    NoiseSchedule,
    diffusion_loss,
    make_process,
    make_sampler,
    process_from_config,
)
from tests.diffusion.helpers import FixedDenoiser, GaussianOracle
from tests.diffusion.test_gaussian_oracle import _data

PATH = FlowPath(100)
N = 20_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------ the path
def test_linear_path_coefficients_on_the_grid_and_in_continuous_time() -> None:
    like = torch.zeros(4, 3, 2)
    a, s = PATH.coefficients(torch.tensor([0, 49, 98, 99]), like)
    assert a.shape == (4, 1, 1)
    torch.testing.assert_close(s.flatten(), torch.tensor([0.01, 0.5, 0.99, 1.0]))
    torch.testing.assert_close((a + s).flatten(), torch.ones(4))
    a, s = PATH.coefficients(torch.tensor([0.0, 0.25, 1.0, 0.5]), like)  # continuous tau
    torch.testing.assert_close(s.flatten(), torch.tensor([0.0, 0.25, 1.0, 0.5]))
    x0, eps = torch.randn(4, 3, 2, generator=_gen()), torch.randn(4, 3, 2, generator=_gen(1))
    torch.testing.assert_close(PATH.q_sample(x0, torch.tensor([99, 99, 99, 99]), eps), eps)  # tau = 1: noise
    assert PATH.alpha_bar(-1) == 1.0 and PATH.sigma2(-1) == 0.0 and PATH.alpha_bar(99) == 0.0
    assert PATH.transition_variance(99, 49) == pytest.approx(1.0 - 0.0)  # from tau .5 to 1: all signal gone
    assert process_from_config(PATH.to_config()).to_config() == {"name": "flow_linear", "num_steps": 100}
    cosine = NoiseSchedule.cosine(20)
    assert process_from_config(cosine.to_config()).to_config() == cosine.to_config()
    assert set(PROCESSES) == {"diffusion", "flow"}
    assert isinstance(make_process("flow", "cosine", 50), FlowPath) and make_process("flow", "x", 50).num_steps == 50
    assert make_process("diffusion", "cosine", 20).to_config() == cosine.to_config()


def test_flow_refuses_what_it_does_not_define() -> None:
    with pytest.raises(ValueError, match=r"prediction 'epsilon' is not defined for process='flow'; expected one of "
                                         r"\['velocity', 'sample'\]"):
        make_sampler("euler", PATH).sample(FixedDenoiser(2, 100), (2, 2), prediction="epsilon")
    with pytest.raises(ValueError, match="prediction 'velocity' is not defined for process='diffusion'"):
        diffusion_loss(lambda x, t, c: x, torch.zeros(2, 3), NoiseSchedule.cosine(10), prediction="velocity")
    with pytest.raises(ValueError, match="sampler 'heun' integrates the velocity of the linear flow path"):
        make_sampler("heun", NoiseSchedule.cosine(10))
    with pytest.raises(ValueError, match=r"process: unknown 'ode'; expected one of \['diffusion', 'flow'\]"):
        make_process("ode", "cosine", 10)
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 100,000\], got 0"):
        FlowPath(0)
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 100,000\], got 1000001"):
        FlowPath(1_000_001)
    with pytest.raises(ValueError, match="t must be integer timesteps or float times"):
        PATH.coefficients(torch.tensor([True, False]), torch.zeros(2, 1))


def test_flow_matching_loss_regresses_the_velocity() -> None:
    x0, eps = torch.randn(8, 5, generator=_gen()), torch.randn(8, 5, generator=_gen(1))
    t = torch.randint(0, 100, (8,), generator=_gen(2))
    seen = {}

    def model(x, tt, cond=None):
        seen["x"], seen["t"] = x, tt
        return torch.zeros_like(x)

    loss = diffusion_loss(model, x0, PATH, prediction="velocity", t=t, noise=eps)
    tau = ((t + 1) / 100.0)[:, None]
    torch.testing.assert_close(seen["x"], (1 - tau) * x0 + tau * eps)
    assert torch.equal(seen["t"], t)  # the network sees the integer timestep, as with diffusion
    torch.testing.assert_close(loss, ((eps - x0) ** 2).mean())


def test_continuous_times_reach_the_network_on_the_samplers_scale() -> None:
    """Training on float times tau must feed the network what the samplers feed it at the same tau (integer
    timestep k is tau = (k + 1) / N): a model trained on tau in [0, 1] was sampled at times about N times larger."""
    x0, eps = torch.randn(4, 5, generator=_gen()), torch.randn(4, 5, generator=_gen(1))
    k = torch.tensor([0, 24, 49, 99])
    seen = []

    def model(x, tt, cond=None):
        seen.append((x, tt.to(torch.float64)))
        return x * 0.3

    grid = diffusion_loss(model, x0, PATH, prediction="velocity", t=k, noise=eps)
    continuous = diffusion_loss(model, x0, PATH, prediction="velocity", t=(k + 1) / 100.0, noise=eps)
    torch.testing.assert_close(seen[1][1], seen[0][1])  # the network sees 0, 24, 49, 99 both times
    torch.testing.assert_close(seen[1][0], seen[0][0])
    torch.testing.assert_close(continuous, grid)
    sampler = make_sampler("euler", PATH, steps=4)
    sampler.sample(model, (4, 5), prediction="velocity", generator=_gen())
    assert [int(t[0]) for _, t in seen[2:]] == sampler.timesteps == [99, 74, 49, 24]


# ------------------------------------------------------------------------------------------------ exact Gaussian
FLOW_CONFIGS = [
    ("euler", {"steps": 50}, "velocity"),
    ("heun", {"steps": 10}, "velocity"),
    ("heun", {"steps": 10}, "sample"),
    ("ddim", {"steps": 50, "timestep_spacing": "trailing"}, "velocity"),
    ("ddpm", {}, "velocity"),
    ("dpmsolver++", {"steps": 20}, "velocity"),
]


@pytest.mark.parametrize("kind", ["flat", "image"])
@pytest.mark.parametrize("name,options,prediction", FLOW_CONFIGS)
def test_flow_samplers_reproduce_gaussian_moments(kind: str, name: str, options: dict, prediction: str) -> None:
    shape, mu, sigma = _data(kind)
    oracle = GaussianOracle(mu, sigma, PATH, prediction)
    x = make_sampler(name, PATH, **options).sample(oracle, shape, prediction=prediction, generator=_gen(1))
    assert x.shape == shape and x.dtype == torch.float32
    x = x.double()
    mean_err = ((x.mean(0) - mu) / sigma).abs().max().item()
    std_err = (x.std(0) / sigma - 1).abs().max().item()
    assert mean_err < 0.04, f"mean off by {mean_err:.3f} sigma"
    assert std_err < 0.05, f"std off by {100 * std_err:.1f}%"


def test_ddims_default_leading_spacing_starts_inside_the_flow_path_and_trailing_at_pure_noise() -> None:
    """DDIM keeps diffusers' "leading" default on a flow path too: 10 of 100 steps start at tau = 0.91, taking pure
    noise for a sample that still holds 9% of the data, so samples shrink toward zero (on hopper that made plans
    score higher, docs/results.md); "trailing" starts at tau = 1 and reproduces the data."""
    mu, sigma = torch.tensor([2.0, -2.0, 1.0]), torch.tensor([0.5, 1.0, 1.5])
    oracle = GaussianOracle(mu, sigma, PATH, "velocity")

    def mean_error(**options) -> float:
        sampler = make_sampler("ddim", PATH, steps=10, **options)
        x = sampler.sample(oracle, (N, 3), prediction="velocity", generator=_gen(3)).double()
        return ((x.mean(0) - mu) / sigma).abs().max().item()

    assert make_sampler("ddim", PATH, steps=10).timesteps[0] == 90
    assert make_sampler("ddim", PATH, steps=10, timestep_spacing="trailing").timesteps[0] == PATH.num_steps - 1
    assert mean_error(timestep_spacing="trailing") < 0.04
    assert mean_error() > 0.15


def test_ode_error_shrinks_with_steps_and_order() -> None:
    mu, sigma = torch.tensor([0.5, -1.0, 0.0]), torch.tensor([0.5, 1.0, 1.5])
    oracle = GaussianOracle(mu, sigma, PATH, "velocity")

    def std_error(name: str, steps: int) -> tuple[float, int]:
        oracle.calls = 0
        x = make_sampler(name, PATH, steps=steps).sample(oracle, (N, 3), prediction="velocity", generator=_gen(3),
                                                           dtype=torch.float64)
        return (x.std(0) / sigma - 1).abs().max().item(), oracle.calls

    e10, calls = std_error("euler", 10)
    e50, _ = std_error("euler", 50)
    h10, heun_calls = std_error("heun", 10)
    assert calls == 10 and heun_calls == 19  # Heun: two evaluations per step, one on the final step
    assert e50 < 0.4 * e10 and e10 > 0.08  # first order: 5x the steps, about a fifth of the error
    assert h10 < e50  # second order (19 evaluations) beats first order with 50


# ------------------------------------------------------------------------------------------------ hooks
ODE_SAMPLERS = [("euler", {"steps": 10}), ("heun", {"steps": 6})]


@pytest.mark.parametrize("name,options", ODE_SAMPLERS)
def test_inpainting_holds_exactly_on_the_flow_path(name: str, options: dict) -> None:
    B, H, D = 6, 8, 5
    mask = torch.zeros(1, H, D, dtype=torch.bool)
    mask[:, 0, :3] = True
    mask[:, -1, :2] = True
    values = torch.randn(B, H, D, generator=_gen(1))
    den = FixedDenoiser(D, 100)
    sampler = make_sampler(name, PATH, **options)
    x = sampler.sample(den, (B, H, D), prediction="velocity", constraints=Inpaint(mask, values), generator=_gen(),
                       clip_sample=3.0)
    m = mask.expand(B, H, D)
    assert torch.equal(x[m], values[m])
    free = sampler.sample(den, (B, H, D), prediction="velocity", generator=_gen(), clip_sample=3.0)
    assert (x[~m] - free[~m]).abs().max().item() > 1e-3


@pytest.mark.parametrize("name,options", ODE_SAMPLERS)
def test_classifier_free_guidance_is_one_batched_forward_per_evaluation(name: str, options: dict) -> None:
    calls = []

    def den(x, t, cond, drop_mask=None):
        calls.append(x.shape[0])
        shift = torch.where(drop_mask, 0.0, 1.0)[:, None] if drop_mask is not None else 1.0
        return 0.1 * x + cond * shift

    sampler = make_sampler(name, PATH, **options)
    cond = torch.ones(4, 1)
    cond_only = sampler.sample(den, (4, 2), prediction="velocity", cond=cond, generator=_gen(),
                               guidance=ClassifierFreeGuidance(0.0))
    guided = sampler.sample(den, (4, 2), prediction="velocity", cond=cond, generator=_gen(),
                            guidance=ClassifierFreeGuidance(1.0))
    evaluations = 2 * options["steps"] - 1 if name == "heun" else options["steps"]
    assert calls == [4] * evaluations + [8] * evaluations  # w = 0: conditional only; else one doubled batch
    # the guided velocity is c + 1.0 (c - u): the condition's push doubles, so samples move further against it
    assert (guided - cond_only).mean().item() < -0.3


@pytest.mark.parametrize("name,options", ODE_SAMPLERS)
def test_gradient_guidance_moves_flow_samples(name: str, options: dict) -> None:
    fn = lambda x, t: -((x - 1.5) ** 2).sum(dim=1)
    oracle = GaussianOracle(torch.zeros(2), torch.ones(2), PATH, "velocity")
    sampler = make_sampler(name, PATH, **options)
    free = sampler.sample(oracle, (512, 2), prediction="velocity", generator=_gen())
    guided = sampler.sample(oracle, (512, 2), prediction="velocity", generator=_gen(),
                            grad_guidance=GradientGuidance(fn, scale=1.0, n_steps=2, t_stopgrad=2))
    assert guided.mean().item() > free.mean().item() + 0.2


@pytest.mark.parametrize("name,options", ODE_SAMPLERS)
@pytest.mark.parametrize("temperature", [0.5, 0.25])
def test_temperature_scales_the_spread_of_flow_samples(name: str, options: dict, temperature: float) -> None:
    """The exact velocity field of Gaussian data moves every point affinely: the initial noise scaled by the
    temperature scales the samples' spread around the mean by exactly it."""
    mu, sigma = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.6])
    oracle = GaussianOracle(mu, sigma, PATH, "velocity")
    sampler = make_sampler(name, PATH, **options)
    full = sampler.sample(oracle, (N, 2), prediction="velocity", generator=_gen(), dtype=torch.float64)
    cold = sampler.sample(oracle, (N, 2), prediction="velocity", generator=_gen(), dtype=torch.float64,
                          temperature=temperature)
    torch.testing.assert_close(cold.std(0) / full.std(0), torch.full((2,), temperature, dtype=torch.float64),
                               rtol=0.02, atol=0)
    torch.testing.assert_close(cold.mean(0), mu.double(), atol=0.03, rtol=0)


@pytest.mark.parametrize("name,options", ODE_SAMPLERS)
def test_warm_start_on_the_flow_path_runs_the_remaining_steps(name: str, options: dict) -> None:
    mu, sigma = torch.tensor([0.5, -0.5, 1.0]), torch.tensor([1.0, 0.5, 0.8])
    clean = mu + sigma * torch.randn(256, 3, generator=_gen(5))
    other = mu + sigma * torch.randn(256, 3, generator=_gen(6))
    oracle = GaussianOracle(mu, sigma, PATH, "velocity")
    sampler = make_sampler(name, PATH, **options)
    x, info = sampler.sample(oracle, (256, 3), prediction="velocity", x_init=clean, t_start=19, generator=_gen(),
                             return_info=True)
    assert info["timesteps"] == [t for t in sampler.timesteps if t <= 19]  # re-noised to tau <= 0.2
    dist = (x - clean).abs().mean().item()
    assert dist < 0.3 * (other - clean).abs().mean().item()


def test_euler_on_the_flow_path_is_the_velocity_integral() -> None:
    """One Euler step is x + (tau_next - tau) v, written by hand from the model's velocity."""
    den = FixedDenoiser(3, 100)
    sampler = make_sampler("euler", PATH, steps=4)  # tau = 1, .75, .5, .25 -> 0
    x = torch.randn(5, 3, generator=_gen())
    ref = x.clone()
    taus = [(t + 1) / 100 for t in sampler.timesteps] + [0.0]
    for i, t in enumerate(sampler.timesteps):
        v = den(ref, torch.full((5,), t))
        ref = ref + (taus[i + 1] - taus[i]) * v
    state: dict = {}
    y = x.clone()
    for t in sampler.timesteps:
        y = sampler.step(den(y, torch.full((5,), t)), t, y, prediction="velocity", state=state)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    heun = make_sampler("heun", PATH, steps=4)  # its step evaluates the model twice: one output cannot make it
    with pytest.raises(ValueError, match=r"HeunSampler evaluates the model again within a step.*use sample\(\)"):
        heun.step(den(x, torch.full((5,), heun.timesteps[0])), heun.timesteps[0], x, prediction="velocity")


def test_heun_with_clipping_integrates_the_ode_of_the_clipped_prediction() -> None:
    """A model that always predicts x0 = 5, clipped to 1: the ODE of the clipped prediction from x = 0 at tau = 1 is
    x = 1 - tau, a straight line Heun follows exactly. Its velocities once came from the unclipped eps, so the
    points it evaluated climbed to 4.35."""
    seen: list[tuple[int, float]] = []

    def constant(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        seen.append((int(t[0]), float(x[0, 0])))
        return torch.full_like(x, 5.0)

    out = make_sampler("heun", PATH, steps=5).sample(constant, (1, 1), prediction="sample", clip_sample=1.0,
                                                     initial_noise=torch.zeros(1, 1), dtype=torch.float64)
    assert len(seen) == 9 and float(out) == pytest.approx(1.0)
    for t, x in seen:
        assert x == pytest.approx(1.0 - (t + 1) / 100, abs=1e-12), seen


# ------------------------------------------------------------------------------------------------ an image model
def test_image_model_learns_bars_with_flow_matching() -> None:
    """The image U-Net trained with the flow-matching loss through the same core, sampled by Heun: the samples
    reproduce the data's pixel statistics (as the diffusion-trained one does in test_image_unet.py)."""
    from diffusion_rl.nets import ImageUnet2D
    from tests.diffusion.test_image_unet import bars, pixel_stats

    torch.manual_seed(0)
    g = _gen()
    data = bars(2048, g)
    ref = pixel_stats(data)
    path = FlowPath(100)
    net = ImageUnet2D(1, base_channels=16, channel_mults=(1, 2))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(400):
        batch = data[torch.randint(0, len(data), (32,), generator=g)]
        loss = diffusion_loss(net, batch, path, prediction="velocity", generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # zero-initialized output: the first loss is E[(eps - x0)^2] = 1 + E[x0^2] (about 1.8 for these images)
    assert losses[0] > 1.4 and sum(losses[-50:]) / 50 < 0.5 * losses[0], (losses[0], losses[-50:])
    net.eval()
    x = make_sampler("heun", path, steps=10).sample(net, (128, 1, 16, 16), prediction="velocity", generator=_gen(1),
                                                   clip_sample=1.0)
    got = pixel_stats(x)
    assert abs(got["on"] - ref["on"]) < 0.03, got
    assert abs(got["mean"] - ref["mean"]) < 0.12, got
    assert got["bar"] > 0.85, got
