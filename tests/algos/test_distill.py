"""Distillation (consistency and direct): a trained toy Decision Diffuser distilled into a student that plans in
one network evaluation, with the return condition (the teacher's guidance), the inpainted current state and the
teacher's other heads kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_rl.algos import DecisionDiffuser, DiffusionPolicy
from diffusion_rl.algos.distill import (
    ConsistencyDistillation,
    DirectDistillation,
    TeacherSamples,
    teacher_samples,
)
from diffusion_rl.diffusion import ClassifierFreeGuidance, Inpaint
from diffusion_rl.policy import Policy
from diffusion_rl.training import Trainer, TrainerConfig

from .toy import ACT_DIM, OBS_DIM, rollout_return, toy_dataset

SMALL = dict(horizon=8, num_steps=50, dim=16, dim_mults=(1, 2), inv_hidden_dim=64)


def _fit(model, data, steps: int) -> None:
    Trainer(model, data, TrainerConfig(max_steps=steps, batch_size=64, lr=2e-3, warmup_steps=50, ema_decay=0.99,
                                       ema_every=1, progress=False, log_every=steps)).fit()


@pytest.fixture(scope="module")
def trained_teacher():
    """A toy Decision Diffuser trained for 1,500 steps and its windows (shared by the learning tests)."""
    torch.manual_seed(0)
    data = toy_dataset(8, return_label="quantile")
    teacher = DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL)
    _fit(teacher, data, 1500)
    return teacher.eval(), data


def _closed_loop(student, data, steps: int = 1) -> tuple[float, float]:
    """Mean toy returns of the one-step student asked for a high and a low return."""
    policy = Policy(student, {k: data.normalizers[k] for k in ("observations", "actions")}, seed=0,
                    sampling={"sampler": "consistency", "steps": steps, "guidance_weight": 0.0})
    starts = np.stack([np.linspace(-0.4, 0.4, 16), np.zeros(16)], axis=-1)
    return tuple(rollout_return(policy, starts, target_return=q).mean() for q in (0.95, 0.05))


def test_a_distilled_decision_diffuser_plans_in_one_step_like_its_teacher(trained_teacher):
    """Learning test (< 90 s on 2 cores)."""
    teacher, data = trained_teacher
    distiller = ConsistencyDistillation(teacher, intervals=10, guidance_weight=0.5, clip_sample=1.0)
    _fit(distiller, data, 600)
    student = distiller.student.eval()
    assert student.prediction == "v_prediction" and teacher.prediction == "epsilon"
    assert all(torch.equal(a, b) for a, b in zip(student.inv.parameters(), teacher.inv.parameters()))

    # from the same initial noise: the student's one step lands near the end of the teacher's guided ODE,
    # much nearer than the teacher's own one-step estimate does (measured: 0.055 against 0.78 after 600 steps)
    obs = data.normalizers["observations"].normalize(torch.tensor([[0.0, 0.5]]).repeat(128, 1))
    common = dict(target_return=0.9, temperature=1.0)
    ode = teacher.plan(obs, generator=torch.Generator().manual_seed(1), sampler="ddim", steps=50,
                       guidance_weight=0.5, **common).observations
    one = lambda algo: algo.plan(obs, generator=torch.Generator().manual_seed(1), sampler="consistency", steps=1,
                                 guidance_weight=0.0, **common).observations
    student_err = ((one(student) - ode) ** 2).mean().item()
    teacher_err = ((one(teacher) - ode) ** 2).mean().item()
    assert student_err < 0.2 * teacher_err, (student_err, teacher_err)
    assert torch.equal(one(student)[:, 0], obs)  # the current state is still inpainted exactly

    # and in closed loop the return condition still steers, at one network evaluation per decision
    assert distiller.student_sampling(steps=1) == {"sampler": "consistency", "steps": 1, "guidance_weight": 0.0}
    high, low = _closed_loop(student, data)
    # measured after 600 steps: 8.7 and -3.1 (the "sample" student: 8.4 and -5.1; the teacher, DDIM 50: 12.0, 5.1)
    assert high > 4.0 and low < -1.5 and high > low + 8.0, (high, low)


def test_a_directly_distilled_decision_diffuser_reproduces_its_teachers_plans(trained_teacher):
    """Learning test (< 60 s on 2 cores): regressed on 4,096 plans of the guided teacher (DDIM 10, temperature
    0.5), the student's one step from the same noise lands on the teacher's plan, for noise it never saw."""
    teacher, data = trained_teacher
    settings = dict(sampler="ddim", steps=10, guidance_weight=0.5, temperature=0.5, clip_sample=1.0)
    pairs = teacher_samples(teacher, data, 4096, generator=torch.Generator().manual_seed(0), progress=False,
                            **settings)
    assert isinstance(pairs, TeacherSamples) and len(pairs) == 4096
    batch = pairs.sample_batch(8, torch.Generator().manual_seed(1))
    assert set(batch) >= {"observations", "returns", "noise", "teacher_sample"}
    # the pairs are the teacher's own plans: its sampler from the stored noise gives them back, state inpainted
    again = teacher.sampler("ddim", steps=10, eta=0.0).sample(
        lambda x, t, c, drop_mask=None: teacher.net(x, t, c, drop_mask=drop_mask), (8, 8, OBS_DIM),
        prediction=teacher.prediction, cond=batch["returns"], guidance=ClassifierFreeGuidance(0.5),
        constraints=[Inpaint(teacher._history_mask(torch.device("cpu")), batch["observations"])],
        temperature=0.5, initial_noise=batch["noise"], clip_sample=1.0)
    assert torch.allclose(again, batch["teacher_sample"], atol=1e-5)
    assert torch.equal(batch["teacher_sample"][:, 0], batch["observations"][:, 0])

    distiller = DirectDistillation(teacher, temperature=0.5)
    _fit(distiller, pairs, 600)
    student = distiller.student.eval()
    assert student.prediction == "v_prediction"
    assert all(torch.equal(a, b) for a, b in zip(student.inv.parameters(), teacher.inv.parameters()))
    obs = data.normalizers["observations"].normalize(torch.tensor([[0.0, 0.5]]).repeat(128, 1))
    common = dict(target_return=0.9, temperature=0.5)
    ode = teacher.plan(obs, generator=torch.Generator().manual_seed(7), guidance_weight=0.5, sampler="ddim",
                       steps=10, **common).observations
    one = lambda algo: algo.plan(obs, generator=torch.Generator().manual_seed(7), sampler="consistency", steps=1,
                                 guidance_weight=0.0, **common).observations
    student_err, teacher_err = ((one(student) - ode) ** 2).mean().item(), ((one(teacher) - ode) ** 2).mean().item()
    # measured: 0.0039 against 0.64 for the teacher's own one-step estimate
    assert student_err < 0.02 * teacher_err, (student_err, teacher_err)
    assert torch.equal(one(student)[:, 0], obs)
    high, low = _closed_loop(student, data)
    # and the return condition steers in closed loop; measured: 9.5 and -6.8
    assert high > 5.0 and low < -3.0 and high > low + 10.0, (high, low)

    # a student for the planner's one target (target_share=1 in distill_policy): every teacher plan drawn at
    # return label 0.9 instead of the window's own; at that target its plans are much nearer the teacher's
    at_target = teacher_samples(teacher, data, 4096, conditions={"returns": 0.9}, condition_share=1.0,
                                generator=torch.Generator().manual_seed(0), progress=False, **settings)
    focused = DirectDistillation(teacher, temperature=0.5)
    _fit(focused, at_target, 600)
    focused_err = ((one(focused.student.eval()) - ode) ** 2).mean().item()
    # measured: 0.00077 against 0.0038 (at 0.95 in a probe: 0.0024 against 0.0085)
    assert focused_err < 0.5 * student_err, (focused_err, student_err)


def test_a_two_step_direct_student_refines_and_replans_warm_in_one_evaluation(trained_teacher):
    """Learning test (< 60 s on 2 cores): ``steps=2`` also regresses the teacher's plans re-noised to the second
    timestep of the consistency grid, so the student refines its one-step plan there, and replans warm from a
    previous plan in one evaluation (``warm_start_t`` at that timestep) with the condition still steering."""
    from diffusion_rl.diffusion import consistency_grid

    teacher, data = trained_teacher
    settings = dict(sampler="ddim", steps=10, guidance_weight=0.5, temperature=0.5, clip_sample=1.0)
    pairs = teacher_samples(teacher, data, 4096, conditions={"returns": 0.9}, condition_share=1.0,
                            generator=torch.Generator().manual_seed(0), progress=False, **settings)
    distiller = DirectDistillation(teacher, temperature=0.5, steps=2)
    _fit(distiller, pairs, 600)
    student = distiller.student.eval()
    second = consistency_grid(student.schedule, 2)[1]
    assert second == 24  # of T = 50: the grid is [49, 24]
    obs = data.normalizers["observations"].normalize(torch.tensor([[0.0, 0.5]]).repeat(128, 1))
    common = dict(target_return=0.9, temperature=0.5, guidance_weight=0.0, sampler="consistency")
    ode = teacher.plan(obs, generator=torch.Generator().manual_seed(7), guidance_weight=0.5, sampler="ddim",
                       steps=10, target_return=0.9, temperature=0.5).observations
    err = lambda plan: ((plan - ode) ** 2).mean().item()  # noqa: E731
    cold = lambda steps: student.plan(obs, generator=torch.Generator().manual_seed(7), steps=steps,  # noqa: E731
                                      **common).observations
    one, two = err(cold(1)), err(cold(2))
    other = teacher.plan(obs, generator=torch.Generator().manual_seed(8), guidance_weight=0.5, sampler="ddim",
                         steps=10, target_return=0.9, temperature=0.5).observations
    spread = err(other)  # how far two of the teacher's own plans (other noise) are apart: 0.0073
    # measured: the one-step plan 0.0037 from the teacher's of the same noise (0.0034 with the earlier return
    # labels, which counted ties in full), half the spread; the two-step plan, re-noised afresh, is another of the
    # teacher's plans (0.0087, about the spread)
    assert one < 0.6 * spread and two < 2.0 * spread, (one, two, spread)
    # warm: the teacher's plan from another noise, re-noised to t = 24, stays among the teacher's plans in one
    # evaluation (0.0052); from a plan of the wrong condition (target 0.05, 0.89 away) it moves to the asked-for
    # one (0.14)
    low = teacher.plan(obs, generator=torch.Generator().manual_seed(8), guidance_weight=0.5, sampler="ddim",
                       steps=10, target_return=0.05, temperature=0.5).observations
    warm = lambda start: student.plan(obs, generator=torch.Generator().manual_seed(7), steps=2,  # noqa: E731
                                      warm_start=start, warm_start_t=second, **common).observations
    assert torch.equal(warm(other)[:, 0], obs)  # the current state inpainted exactly
    assert err(warm(other)) < 1.5 * spread, (err(warm(other)), spread)
    assert err(warm(low)) < 0.3 * err(low), (err(warm(low)), err(low))
    with pytest.raises(ValueError, match=r"steps: expected an integer >= 1"):
        DirectDistillation(teacher, steps=0)


def test_direct_distillation_weights_the_row_that_decides_the_action():
    """The executed action comes from one row of the plan (the Decision Diffuser's next state): an error there
    costs ``next_step_weight`` times what it costs elsewhere."""
    torch.manual_seed(0)  # seeded: the ratio of two loss differences carries float32 rounding of a random teacher
    teacher = DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL).eval()
    pairs = teacher_samples(teacher, toy_dataset(8, return_label="quantile"), 64, temperature=0.5,
                            generator=torch.Generator().manual_seed(0), progress=False)
    batch = pairs.sample_batch(64, torch.Generator().manual_seed(1))
    assert teacher.next_step_row == 1  # s_{t+1}, after the one state of history
    for row, ratio in ((1, 10.0), (4, 1.0)):
        moved = {**batch, "teacher_sample": batch["teacher_sample"].clone()}
        moved["teacher_sample"][:, row] += 0.3
        rises = []
        for weight in (1.0, 10.0):
            distiller = DirectDistillation(teacher, temperature=0.5, next_step_weight=weight)
            torch.manual_seed(0)
            rises.append(distiller.loss(moved)["loss"].item() - distiller.loss(batch)["loss"].item())
        assert rises[1] / rises[0] == pytest.approx(ratio, rel=1e-3), (row, rises)
    with pytest.raises(ValueError, match=r"next_step_weight: expected a finite number > 0"):
        DirectDistillation(teacher, next_step_weight=0.0)
    # one default, written once: the constructor's, and the script's config defers to it
    from omegaconf import OmegaConf

    from diffusion_rl.algos.distill import NEXT_STEP_WEIGHT

    assert DirectDistillation(teacher).next_step_weight == NEXT_STEP_WEIGHT == 50.0
    config = Path(__file__).resolve().parents[2] / "configs" / "distill.yaml"
    assert OmegaConf.load(config).next_step_weight is None
    with pytest.raises(ValueError, match=r"sampler: direct distillation needs a deterministic sampler, one of "
                                         r"\['ddim', 'dpmsolver\+\+', 'euler', 'heun'\], got 'ddpm'"):
        teacher_samples(teacher, toy_dataset(8), 8, sampler="ddpm")
    with pytest.raises(ValueError, match=r"samples: expected an integer >= 1"):
        teacher_samples(teacher, toy_dataset(8), 0)


def test_teacher_plans_can_be_drawn_at_the_planners_condition():
    """``conditions`` replaces the window's return label by the planner's target in a share of the windows, and
    the teacher plans those windows for that target (what a student for one target learns from)."""
    torch.manual_seed(0)
    teacher = DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL).eval()
    data = toy_dataset(8, return_label="quantile")
    assert teacher.plan_conditions == {"returns": "target_return"}
    common = dict(temperature=0.5, generator=torch.Generator().manual_seed(0), progress=False)
    every = teacher_samples(teacher, data, 64, conditions={"returns": 0.1}, condition_share=1.0, **common)
    returns = every.tensors["returns"]
    assert returns.shape == (64, 1) and torch.all(returns == 0.1)
    again = teacher.sampler("ddim", steps=10, eta=0.0).sample(
        lambda x, t, c, drop_mask=None: teacher.net(x, t, c, drop_mask=drop_mask), (64, 8, OBS_DIM),
        prediction=teacher.prediction, cond=torch.full((64, 1), 0.1),
        constraints=[Inpaint(teacher._history_mask(torch.device("cpu")), every.tensors["observations"])],
        temperature=0.5, initial_noise=every.tensors["noise"])
    assert torch.allclose(again, every.tensors["teacher_sample"], atol=1e-5)  # planned for the target
    half = teacher_samples(teacher, data, 512, conditions={"returns": 0.1}, condition_share=0.5, steps=2,
                           **{**common, "generator": torch.Generator().manual_seed(0)})
    share = (half.tensors["returns"] == 0.1).float().mean().item()
    assert 0.4 < share < 0.6, share  # the others keep their own labels, spread over [0, 1]
    assert half.tensors["returns"].std() > 0.2
    with pytest.raises(ValueError, match=r"conditions: decision_diffuser has no planning condition \['goal'\]; "
                                         r"its conditions are \['returns'\]"):
        teacher_samples(teacher, data, 8, conditions={"goal": 1.0}, condition_share=1.0)
    with pytest.raises(ValueError, match=r"condition_share: expected a number in \[0, 1\], got 1.5"):
        teacher_samples(teacher, data, 8, conditions={"returns": 0.1}, condition_share=1.5)


def test_distillation_settings_are_checked():
    teacher = DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=8, obs_steps=2, num_steps=20, down_dims=(16, 32),
                              step_embed_dim=16)
    with pytest.raises(ValueError, match=r"intervals: expected an integer in \[1, 20\]"):
        ConsistencyDistillation(teacher, intervals=0)
    with pytest.raises(ValueError, match=r"target_decay: expected a number in \[0, 1\)"):
        ConsistencyDistillation(teacher, target_decay=1.0)
    with pytest.raises(ValueError, match=r"student_prediction: expected one of \['sample', 'v_prediction'"):
        ConsistencyDistillation(teacher, student_prediction="epsilon")
    assert ConsistencyDistillation(teacher, student_prediction="v_prediction").student.prediction == "v_prediction"
    distiller = ConsistencyDistillation(teacher, intervals=5)
    assert distiller.student_sampling(2) == {"sampler": "consistency", "steps": 2}  # no guidance to switch off
    assert all(not p.requires_grad for p in distiller.teacher.parameters())
    # the student trains every weight its teacher trained (a Diffusion Policy never uses its null condition)
    assert [n for n, p in distiller.student.net.named_parameters() if not p.requires_grad] == ["null_cond"]


def test_training_points_carry_the_samplers_temperature():
    """A planner sampled at temperature tau starts its ODE at tau * z: the distillation's training points are drawn
    with noise tau * eps, so the student learns the trajectories it will be asked for (1 = the forward process)."""
    from diffusion_rl.diffusion import NoiseSchedule, consistency_grid, consistency_loss

    schedule = NoiseSchedule.from_name("cosine", 50)
    x0 = torch.zeros(512, 8, 2)
    grid = consistency_grid(schedule, 1)  # one interval: every training point sits at the pure-noise end
    for temperature in (1.0, 0.5):
        seen = []

        def student(x, t, cond, drop_mask=None):
            seen.append(x.clone())
            return torch.zeros_like(x)

        zeros = lambda x, t, cond, drop_mask=None: torch.zeros_like(x)  # noqa: E731
        consistency_loss(student, zeros, zeros, x0, schedule, grid, prediction="sample",
                         teacher_prediction="epsilon", temperature=temperature,
                         generator=torch.Generator().manual_seed(0))
        _, s = schedule.coefficients(torch.tensor([grid[0]]), x0[:1])
        assert abs(seen[0].std().item() / s.item() - temperature) < 0.03, temperature
    with pytest.raises(ValueError, match=r"consistency_loss: temperature: expected a number in \(0, 1\]"):
        consistency_loss(student, zeros, zeros, x0, schedule, grid, prediction="sample", temperature=0.0)
    with pytest.raises(ValueError, match=r"temperature: expected a number in \(0, 1\]"):
        ConsistencyDistillation(DecisionDiffuser(OBS_DIM, ACT_DIM, **SMALL), temperature=1.5)


@pytest.mark.parametrize("grad_accum", [1, 4])
def test_the_target_network_follows_once_per_optimizer_update(grad_accum):
    """With grad_accum = 4 the target once moved at every micro-batch (a decay of 0.5 acted as 0.5^4 per update);
    keyed on the weights' in-place version instead, it stopped following after the first step under fused AdamW."""
    torch.manual_seed(0)
    data = toy_dataset(8, return_label="quantile")
    teacher = DecisionDiffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=50, dim=16, dim_mults=(1, 2),
                               inv_hidden_dim=64).eval()
    distiller = ConsistencyDistillation(teacher, intervals=10, target_decay=0.5)
    follows = []
    real_follow = distiller._follow
    distiller._follow = lambda: follows.append(1) or real_follow()
    with torch.no_grad():  # as if an update had moved every weight of the student by +1
        for p in distiller.student.net.parameters():
            p.add_(1.0)
    student, target = next(distiller.student.net.parameters()), next(distiller.target_net.parameters())
    before = (student - target).abs().mean().item()
    trainer = Trainer(distiller, data, TrainerConfig(max_steps=3, batch_size=8, lr=1e-12, warmup_steps=0,
                                                     grad_accum=grad_accum, progress=False, device="cpu"))
    assert trainer.optimizer.param_groups[0].get("fused")  # the optimizer that does not bump _version
    trainer.fit()
    assert len(follows) == 3  # once per optimizer update
    after = (next(distiller.student.net.parameters()) - next(distiller.target_net.parameters())).abs().mean().item()
    assert after == pytest.approx(0.5**3 * before, rel=1e-3)
