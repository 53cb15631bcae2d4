"""Plan diagnostics: spread of plans from one state, one-step consistency against the simulator, sweeps."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from diffusion_rl import Policy
from diffusion_rl.algos import BehaviorCloning, DecisionDiffuser, Diffuser
from diffusion_rl.data import GaussianNormalizer
from diffusion_rl.evaluation import diagnose, evaluate, plan_spread, resolve_env
from diffusion_rl.evaluation.diagnostics import _one_step_errors

torch.set_num_threads(1)


def _normalizers(rng: np.random.Generator) -> dict[str, GaussianNormalizer]:
    return {"observations": GaussianNormalizer().fit(rng.normal(size=(200, 11))),
            "actions": GaussianNormalizer().fit(0.3 * rng.normal(size=(200, 3)))}


@pytest.fixture(scope="module")
def policy() -> Policy:
    torch.manual_seed(0)
    algo = DecisionDiffuser(obs_dim=11, act_dim=3, horizon=8, num_steps=20, dim=16, dim_mults=(1, 2),
                            inv_hidden_dim=32)
    return Policy(algo, _normalizers(np.random.default_rng(0)), env_name="hopper-medium", sampling={"steps": 4})


def test_plan_spread_follows_the_temperature(policy):
    obs = np.random.default_rng(1).normal(size=11)
    wide = plan_spread(policy, obs, num_plans=32, temperature=1.0)
    narrow = plan_spread(policy, obs, num_plans=32, temperature=0.25)
    none = plan_spread(policy, obs, num_plans=32, temperature=0.0)
    assert wide["actions"].shape == (32, 3) and wide["next_observations"].shape == (32, 11)
    assert narrow["next_observations"].std(0).mean() < 0.5 * wide["next_observations"].std(0).mean()
    assert none["actions"].std(0).max() < 1e-5  # DDIM eta=0 from zero noise: every plan the same


def test_one_step_error_is_zero_for_the_true_next_state(policy):
    env = gym.make("Hopper-v5")
    env.reset(seed=3)
    actions = np.array([[0.5, -0.2, 0.1], [-1.0, 1.0, 0.0]])
    true_next = []
    for a in actions:
        env.reset(seed=3)
        true_next.append(env.step(a.astype(np.float32))[0])
    env.close()
    true_next = np.asarray(true_next)
    np.testing.assert_allclose(_one_step_errors(policy, "Hopper-v5", 3, actions, true_next), 0.0, atol=1e-6)
    # an offset of d raw standard deviations in every state dimension is an error of d (Gaussian normalizer)
    std = policy.normalizers["observations"].stats["std"]
    np.testing.assert_allclose(_one_step_errors(policy, "Hopper-v5", 3, actions, true_next + 0.5 * std), 0.5,
                               rtol=1e-6)


def test_diagnose_sweeps_one_setting_at_a_time_and_restores_the_policy(policy):
    before = dict(policy.sampling)
    rows, notes = diagnose(policy, "hopper-medium", seed=0, num_plans=8, rollout_steps=5, progress=False,
                           sweep={"temperature": [1.0, 0.0], "num_plans": [4]})
    assert [r.setting for r in rows] == ["default", "temperature=1.0", "temperature=0.0"]
    assert notes and "num_plans" in notes[0]  # a Decision Diffuser has no num_plans setting
    assert policy.sampling == before
    by = {r.setting: r for r in rows}
    assert by["temperature=0.0"].action_spread < 1e-5 < by["temperature=1.0"].action_spread
    for r in rows:
        assert r.rollout_length <= 5 and np.isfinite(r.one_step_error) and np.isfinite(r.rollout_error)
    with pytest.raises(ValueError, match="num_plans"):
        diagnose(policy, "hopper-medium", num_plans=1)


def test_policies_without_state_plans_are_refused():
    bc = Policy(BehaviorCloning(obs_dim=11, act_dim=3, hidden_dim=16), _normalizers(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="predicts states"):
        plan_spread(bc, np.zeros(11), num_plans=4)
    made = []  # diagnose refuses it before any environment is made (or a progress bar drawn)
    real_make = gym.make
    gym.make = lambda *a, **kw: made.append(a) or real_make(*a, **kw)
    try:
        with pytest.raises(ValueError, match="bc plans actions only"):
            diagnose(bc, "hopper-medium", num_plans=4, rollout_steps=2, progress=False)
    finally:
        gym.make = real_make
    assert not made


def test_goal_conditioned_planner_gets_the_env_goal_in_every_plan():
    """maze2d reports its goal at reset: a goal-conditioned Diffuser cannot plan without it, so diagnose passes it
    (one copy per plan) as evaluate does."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    algo = Diffuser(obs_dim=4, act_dim=2, horizon=8, num_steps=8, dim=8, dim_mults=(1, 2), value_guided=False,
                    goal_conditioned=True)
    normalizers = {"observations": GaussianNormalizer().fit(rng.normal(size=(200, 4))),
                   "actions": GaussianNormalizer().fit(0.3 * rng.normal(size=(200, 2)))}
    maze = Policy(algo, normalizers, env_name="maze2d-umaze",
                  sampling={"sampler": "ddim", "steps": 2, "num_plans": 2})
    env = gym.make(resolve_env("maze2d-umaze")[0])
    _, info = env.reset(seed=4)
    env.close()
    goals = []
    plan = maze.plan

    def recording_plan(obs, **kwargs):
        goals.append(kwargs.get("goal"))
        return plan(obs, **kwargs)

    maze.plan = recording_plan
    rows, _ = diagnose(maze, "maze2d-umaze", seed=4, num_plans=3, rollout_steps=3, progress=False,
                       sweep={"temperature": [0.0]})
    assert [r.setting for r in rows] == ["default", "temperature=0.0"]
    assert all(np.isfinite(r.one_step_error) and r.rollout_length == 3 for r in rows)
    assert len(goals) == 2
    for goal in goals:
        np.testing.assert_allclose(goal, np.repeat(np.asarray(info["goal"])[None], 3, axis=0))


def test_a_swept_setting_the_sampler_never_reads_is_a_note_not_rows_equal_to_the_default():
    torch.manual_seed(0)
    algo = DecisionDiffuser(obs_dim=11, act_dim=3, horizon=8, num_steps=20, dim=16, dim_mults=(1, 2),
                            inv_hidden_dim=32)
    ddpm = Policy(algo, _normalizers(np.random.default_rng(0)), env_name="hopper-medium",
                  sampling={"sampler": "ddpm"})
    rows, notes = diagnose(ddpm, "hopper-medium", num_plans=2, rollout_steps=2, sweep={"steps": [2, 5]},
                           progress=False)
    assert [r.setting for r in rows] == ["default"]
    assert notes == ["steps: not swept, sampler 'ddpm' does not read steps (samplers that do: ddim, dpmsolver++, "
                     "euler, heun, consistency)"]


def _row_by_hand(policy: Policy, env_name: str, seed: int, num_plans: int, rollout_steps: int,
                 overrides: dict) -> dict:
    """One row of ``diagnose`` recomputed from its sources: ``num_plans`` plans from the env's reset state (the
    policy's seed, one batch), each first action stepped from that reset state, and ``evaluate`` over one episode."""
    gym_id = resolve_env(env_name)[0]
    env = gym.make(gym_id)
    obs0, _ = env.reset(seed=seed)
    saved = dict(policy.sampling)
    try:
        policy.sampling.update(overrides)
        policy.reset()
        plan = policy.plan(np.repeat(np.asarray(obs0, np.float32)[None], num_plans, axis=0))
        actions = np.asarray(plan.actions, np.float64)
        planned_next = np.asarray(plan.next_observations, np.float64)
        result = evaluate(policy, env_name, episodes=1, num_envs=1, seed=seed, max_episode_steps=rollout_steps,
                          progress=False)
    finally:
        policy.sampling.clear()
        policy.sampling.update(saved)
    stats = policy.normalizers["observations"].stats
    errors = []
    for action, expected in zip(actions, planned_next):
        env.reset(seed=seed)
        clipped = np.clip(action, env.action_space.low, env.action_space.high).astype(np.float32)
        nxt = np.asarray(env.step(clipped)[0], np.float64)
        errors.append(np.sqrt(np.mean(((nxt - expected) / stats["std"]) ** 2)))  # normalized: the means cancel
    env.close()
    next_n = (planned_next - stats["mean"]) / stats["std"]
    assert num_plans == actions.shape[0] == len(errors)
    return {"action_spread": float(np.mean([np.std(actions[:, j]) for j in range(actions.shape[1])])),
            "next_state_spread": float(np.mean([np.std(next_n[:, j]) for j in range(next_n.shape[1])])),
            "one_step_error": float(np.mean(errors)),
            "one_step_errors": np.asarray(errors),
            "rollout_error": float(result.plan_error_mean),
            "rollout_return": float(result.returns[0]),
            "rollout_length": int(result.lengths[0])}


def test_diagnose_rows_match_their_sources(policy):
    """Every number of a row against an independent computation from its source, for the default row and a swept
    one: the spreads from the plan arrays (std over plans, mean over dims; actions raw, next states normalized), the
    one-step error as the mean of per-plan errors, the rollout error and return from ``evaluate`` with the same
    seed, one episode and ``max_episode_steps=rollout_steps``."""
    seed, num_plans, rollout_steps = 2, 6, 5
    before = dict(policy.sampling)
    rows, _ = diagnose(policy, "hopper-medium", seed=seed, num_plans=num_plans, rollout_steps=rollout_steps,
                       progress=False, sweep={"temperature": [1.0]})  # its default is 0.5
    assert policy.sampling == before
    assert [r.setting for r in rows] == ["default", "temperature=1.0"]
    for row, overrides in zip(rows, [{}, {"temperature": 1.0}]):
        want = _row_by_hand(policy, "hopper-medium", seed, num_plans, rollout_steps, overrides)
        # the checks below can tell a mean from a max, and a return from zero
        assert want["one_step_errors"].max() > 1.01 * want["one_step_error"]
        assert want["rollout_return"] != 0.0 and want["rollout_error"] > 0.0
        for field in ("action_spread", "next_state_spread", "one_step_error", "rollout_error", "rollout_return"):
            np.testing.assert_allclose(getattr(row, field), want[field], rtol=1e-5, atol=1e-9,
                                       err_msg=f"{row.setting}: {field}")
        assert row.rollout_length == want["rollout_length"] == rollout_steps
    default, warmer = rows
    assert warmer.action_spread > default.action_spread  # the swept row was measured with its own setting
