"""The training loss: targets per prediction type, weights, drop_mask, reproducibility, and a fit."""

from __future__ import annotations

import pytest
import torch

from diffusion_rl.diffusion import NoiseSchedule, diffusion_loss
from diffusion_rl.diffusion.losses import sample_timesteps


class Recorder:
    """Returns a fixed output and records what it was called with."""

    def __init__(self, out_fn) -> None:
        self.out_fn, self.calls = out_fn, []

    def __call__(self, x, t, cond=None, drop_mask=None):
        self.calls.append({"x": x, "t": t, "cond": cond, "drop_mask": drop_mask})
        return self.out_fn(x, t)


def test_targets_per_prediction_type() -> None:
    sch = NoiseSchedule.cosine(20)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, 4, generator=g)
    noise = torch.randn(6, 3, 4, generator=g)
    t = torch.tensor([0, 3, 7, 10, 15, 19])
    a = sch.alphas_cumprod[t].sqrt().float().view(-1, 1, 1)
    s = (1 - sch.alphas_cumprod[t]).sqrt().float().view(-1, 1, 1)
    zero = Recorder(lambda x, t: torch.zeros_like(x))
    for prediction, target in [("epsilon", noise), ("sample", x0), ("v_prediction", a * noise - s * x0)]:
        loss = diffusion_loss(zero, x0, sch, prediction=prediction, t=t, noise=noise)
        assert loss.item() == pytest.approx((target**2).mean().item(), rel=1e-5)
        perfect = Recorder(lambda x, tt, target=target: target.clone())
        assert diffusion_loss(perfect, x0, sch, prediction=prediction, t=t, noise=noise).item() == 0.0
    # the denoiser saw x_t = a x0 + s noise and the given timesteps
    assert torch.allclose(zero.calls[0]["x"], a * x0 + s * noise, atol=1e-6)
    assert torch.equal(zero.calls[0]["t"], t)


def test_given_timesteps_outside_the_chain_are_refused() -> None:
    """A negative timestep would wrap to the noisy end of the table, a flow time past 1 would extrapolate."""
    from diffusion_rl.diffusion import FlowPath

    zero, x0 = Recorder(lambda x, t: torch.zeros_like(x)), torch.randn(2, 3)
    for schedule, t, message in [
        (NoiseSchedule.cosine(20), torch.tensor([-1, 3]), r"t must lie in \[0, 19\], got values from -1 to 3"),
        (NoiseSchedule.cosine(20), torch.tensor([3, 20]), r"t must lie in \[0, 19\]"),
        (NoiseSchedule.cosine(20), torch.tensor([0.5, 0.2]), "integer timesteps for a diffusion process"),
        (FlowPath(10), torch.tensor([3, 15]), r"t must lie in \[0, 9\]"),
        (FlowPath(10), torch.tensor([0.5, 2.0]), r"t must lie in \[0.0, 1.0\]"),
    ]:
        prediction = "velocity" if isinstance(schedule, FlowPath) else "epsilon"
        with pytest.raises(ValueError, match=message):
            diffusion_loss(zero, x0, schedule, prediction=prediction, t=t)
    assert torch.isfinite(diffusion_loss(zero, x0, FlowPath(10), prediction="velocity", t=torch.tensor([0.0, 1.0])))


def test_weights_scale_elements_before_the_mean() -> None:
    sch = NoiseSchedule.linear(10)
    x0 = torch.zeros(2, 4, 3)
    noise = torch.ones(2, 4, 3)
    t = torch.tensor([1, 5])
    w = torch.ones(1, 4, 3)
    w[:, 0, :2] = 10.0  # Diffuser-style: first step's first two dims weighted x10
    loss = diffusion_loss(Recorder(lambda x, t: torch.zeros_like(x)), x0, sch, t=t, noise=noise, weights=w)
    assert loss.item() == pytest.approx((10 * 2 + 10) / 12)  # mean of w over the 12 elements of one sample
    # errors that differ per element: each weight scales its own element's error, not the mean error
    noise = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    loss = diffusion_loss(Recorder(lambda x, t: torch.zeros_like(x)), x0, sch, t=t, noise=noise, weights=w)
    assert loss.item() == pytest.approx(float((w * noise**2).mean()), rel=1e-6)
    assert abs(float((w * noise**2).mean()) - float(w.mean() * (noise**2).mean())) > 0.1  # the two differ here


def test_drop_mask_and_cond_are_passed_through() -> None:
    sch = NoiseSchedule.linear(10)
    rec = Recorder(lambda x, t: torch.zeros_like(x))
    cond = torch.randn(3, 2)
    drop = torch.tensor([True, False, True])
    diffusion_loss(rec, torch.randn(3, 5), sch, cond=cond, drop_mask=drop)
    assert rec.calls[0]["cond"] is cond and torch.equal(rec.calls[0]["drop_mask"], drop)
    diffusion_loss(rec, torch.randn(3, 5), sch, cond=cond)
    assert rec.calls[1]["drop_mask"] is None


def test_generator_makes_the_loss_reproducible() -> None:
    sch = NoiseSchedule.cosine(50)
    net = torch.nn.Linear(4, 4)
    x0 = torch.randn(8, 4)
    den = lambda x, t, c=None: net(x)
    l1 = diffusion_loss(den, x0, sch, generator=torch.Generator().manual_seed(3))
    l2 = diffusion_loss(den, x0, sch, generator=torch.Generator().manual_seed(3))
    l3 = diffusion_loss(den, x0, sch, generator=torch.Generator().manual_seed(4))
    assert l1.item() == l2.item() != l3.item()
    t = sample_timesteps(10_000, sch, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.min().item() == 0 and t.max().item() == 49 and t.dtype == torch.long


def test_loss_trains_a_denoiser() -> None:
    """Minimizing the loss on 2-D data with two clusters drives an MLP's epsilon error well below the trivial 1."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    sch = NoiseSchedule.cosine(20)
    centers = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(),
                              torch.nn.Linear(64, 2))
    den = lambda x, t, c=None: net(torch.cat([x, t[:, None].float() / 20], dim=1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        x0 = centers[torch.randint(0, 2, (128,), generator=g)] + 0.05 * torch.randn(128, 2, generator=g)
        loss = diffusion_loss(den, x0, sch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[:10]) / 10 > 0.6
    assert sum(losses[-50:]) / 50 < 0.35


def test_direct_distillation_loss_trains_each_timestep_of_the_students_grid():
    """One step: the student sees temperature * noise at the pure-noise end. Two steps: also the target re-noised
    to the grid's second timestep with fresh noise (a x0 + s tau eps), known entries held in both; the loss is
    the mean of the two regressions onto the target."""
    from diffusion_rl.diffusion import consistency_grid, direct_distillation_loss

    schedule = NoiseSchedule.from_name("cosine", 50)
    gen = torch.Generator().manual_seed(0)
    noise, target = torch.randn(4096, 8, 2, generator=gen), torch.randn(4096, 8, 2, generator=gen)
    known = torch.zeros(1, 8, 2, dtype=torch.bool)
    known[:, 0] = True
    seen = []

    def student(x, t, cond):
        seen.append((x.clone(), t.clone()))
        return torch.zeros_like(x)  # "sample" prediction: x0 = 0, so each term is mean(target ** 2)

    kw = dict(prediction="sample", x0=target, known=known, temperature=0.5)
    one = direct_distillation_loss(student, noise, target, schedule, **kw)
    assert len(seen) == 1 and torch.equal(seen[0][1], torch.full((4096,), 49))
    assert torch.equal(seen[0][0][:, 1:], 0.5 * noise[:, 1:]) and torch.equal(seen[0][0][:, 0], target[:, 0])
    seen.clear()
    two = direct_distillation_loss(student, noise, target, schedule, steps=2, generator=gen, **kw)
    grid = consistency_grid(schedule, 2)
    assert [int(t[0]) for _, t in seen] == grid == [49, 24]
    a, s = schedule.coefficients(torch.tensor([24]), target[:1])
    eps = (seen[1][0][:, 1:] - a * target[:, 1:]) / (s * 0.5)
    assert abs(eps.std().item() - 1.0) < 0.02 and abs(torch.corrcoef(torch.stack(
        [eps.flatten(), noise[:, 1:].flatten()]))[0, 1].item()) < 0.02  # fresh noise, not the teacher's
    assert torch.equal(seen[1][0][:, 0], target[:, 0])
    assert two.item() == pytest.approx(one.item()) == pytest.approx((target ** 2).mean().item())
    with pytest.raises(ValueError, match=r"steps: expected an integer >= 1, got 0"):
        direct_distillation_loss(student, noise, target, schedule, steps=0, **kw)
