"""Behaviour policies, ARS, collectors and recipes (envs.recipes)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs import get_spec
from envs.recipes import RECIPES, Collected, LinearPolicy, Segment, collect, recipe_for, split_steps
from envs.recipes import recipes as recipes_mod
from envs.recipes.ars import ARSConfig, evaluate_policy, train_ars
from envs.recipes.behavior import load_policy_sequence, save_policy_sequence, select_policies


def _policy(seed: int = 0, obs_dim: int = 11, act_dim: int = 3, scale: float = 0.3) -> LinearPolicy:
    rng = np.random.default_rng(seed)
    return LinearPolicy(rng.normal(size=(act_dim, obs_dim)) * scale, rng.normal(size=obs_dim),
                        rng.uniform(0.5, 2.0, size=obs_dim), -1.0, 1.0, info={"iteration": seed})


# --------------------------------------------------------------------------------------------- policies
def test_linear_policy_formula_clip_and_noise():
    p = _policy()
    obs = np.random.default_rng(1).normal(size=(5, 11))
    expected = np.clip(((obs - p.obs_mean) / p.obs_std) @ p.weights.T, -1, 1)
    np.testing.assert_allclose(p.act(obs), expected)
    np.testing.assert_allclose(p.act(obs[0]), expected[0])
    noisy = p.act(obs, noise_std=0.2, rng=np.random.default_rng(3))
    raw = ((obs - p.obs_mean) / p.obs_std) @ p.weights.T + 0.2 * np.random.default_rng(3).standard_normal((5, 3))
    np.testing.assert_allclose(noisy, np.clip(raw, -1, 1))
    assert np.all(np.abs(noisy) <= 1.0)


def test_linear_policy_bad_input():
    p = _policy()
    with pytest.raises(ValueError, match=r"\[11\]"):
        p.act(np.zeros(4))
    with pytest.raises(ValueError, match="rng"):
        p.act(np.zeros(11), noise_std=0.1)
    with pytest.raises(ValueError, match="obs_mean"):
        LinearPolicy(np.zeros((3, 11)), np.zeros(5), np.ones(11), -1, 1)
    with pytest.raises(ValueError, match="positive"):
        LinearPolicy(np.zeros((3, 11)), np.zeros(11), np.zeros(11), -1, 1)


def test_policy_save_load_roundtrip(tmp_path):
    p = _policy()
    q = LinearPolicy.load(p.save(tmp_path / "p.npz"))
    obs = np.random.default_rng(2).normal(size=(4, 11))
    np.testing.assert_allclose(q.act(obs), p.act(obs), atol=1e-5)
    assert q.info == {"iteration": 0}
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file
    with pytest.raises(FileNotFoundError):
        LinearPolicy.load(tmp_path / "missing.npz")


def test_policy_sequence_roundtrip_keeps_order(tmp_path):
    seq = [_policy(i) for i in range(4)]
    back = load_policy_sequence(save_policy_sequence(seq, tmp_path / "s.npz"))
    assert [p.info["iteration"] for p in back] == [0, 1, 2, 3]
    np.testing.assert_allclose(back[2].weights, seq[2].weights, atol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        save_policy_sequence([], tmp_path / "e.npz")


def test_select_policies_medium_expert_replay():
    scores = [0.0, 10.0, 30.0, 41.0, 52.0, 70.0, 95.0, 80.0]
    snaps = [_policy(i) for i in range(len(scores))]
    for p, s in zip(snaps, scores):
        p.info["score"] = s + 3.0  # training-time estimate, a bit off
    sel = select_policies(snaps, lambda p: scores[p.info["iteration"]])
    assert sel.medium is snaps[3]  # 41 is nearest 45 inside [35, 55]
    assert sel.expert is snaps[6]
    assert [p.info["iteration"] for p in sel.replay] == [0, 1, 2, 3]
    assert snaps[3].info["score"] == 41.0  # re-evaluated score recorded


def test_split_steps():
    assert split_steps(10, 3) == [4, 3, 3]
    assert split_steps(2, 5) == [1, 1]
    assert sum(split_steps(1_000_003, 7)) == 1_000_003
    with pytest.raises(ValueError):
        split_steps(0, 2)


# --------------------------------------------------------------------------------------------- ARS
def test_ars_learns_inverted_pendulum():
    cfg = ARSConfig(env_id="InvertedPendulum-v5", num_directions=4, top_directions=2, step_size=0.1,
                    delta_std=0.1, iterations=15, horizon=100, num_workers=1, eval_every=5, eval_episodes=3,
                    eval_noise_std=0.0, seed=1)
    result = train_ars(cfg, log=None)
    assert result.snapshots[0].eval_return < 40
    assert result.best().eval_return == pytest.approx(100.0)  # balances for the whole horizon
    _, lengths = evaluate_policy(result.best().policy, "InvertedPendulum-v5", episodes=2, noise_std=0.0,
                                       horizon=100)
    assert np.all(lengths == 100)


def test_ars_config_validation():
    with pytest.raises(ValueError, match="top_directions"):
        ARSConfig(env_id="Hopper-v5", num_directions=4, top_directions=8)


# --------------------------------------------------------------------------------------------- collectors
def _check_layout(data, n):
    a = data.arrays
    assert data.num_steps == n and all(len(v) == n for v in a.values())
    ends = data.episode_ends
    last = np.zeros(n, dtype=bool)
    last[ends - 1] = True
    done = a["terminals"] | a["timeouts"]
    np.testing.assert_array_equal(done, last)  # an episode ends exactly where it is terminal or timed out
    inner = ~last[:-1]
    np.testing.assert_allclose(a["next_observations"][:-1][inner], a["observations"][1:][inner])
    starts = np.concatenate([[0], ends[:-1]])
    np.testing.assert_allclose(data.episode_returns, np.add.reduceat(a["rewards"], starts))


def test_collect_policy_exact_steps_layout_and_determinism():
    policy = _policy(scale=0.1)
    seg = Segment("policy", "Hopper-v5", 1500, dict(policy=policy.to_arrays(), noise_std=0.1, num_envs=2))
    d1 = collect([seg], seed=7, num_workers=1, chunk_steps=700, progress=False)
    _check_layout(d1, 1500)
    assert d1.arrays["terminals"].sum() >= 1  # a random linear hopper falls
    assert np.all(np.abs(d1.arrays["actions"]) <= 1.0)
    d2 = collect([seg], seed=7, num_workers=2, chunk_steps=700, progress=False)
    np.testing.assert_array_equal(d1.arrays["actions"], d2.arrays["actions"])  # worker count does not matter
    d3 = collect([seg], seed=8, num_workers=1, chunk_steps=700, progress=False)
    assert not np.array_equal(d1.arrays["actions"], d3.arrays["actions"])
    # a segment below chunk_steps (a replay snapshot): split the same way for one worker or two
    short = Segment("policy", "Hopper-v5", 2500, seg.params)
    one, two = (collect([short], seed=7, num_workers=n, progress=False) for n in (1, 2))
    np.testing.assert_array_equal(one.arrays["actions"], two.arrays["actions"])


def test_collect_maze2d_recipe():
    recipe = recipe_for("maze2d-umaze", 1200)
    data = collect(recipe.segments, seed=0, num_workers=1, progress=False)
    _check_layout(data, 1200)
    np.testing.assert_array_equal(np.diff(np.concatenate([[0], data.episode_ends])), [300] * 4)
    a = data.arrays
    assert not a["terminals"].any()
    # D4RL's maze2d-*-v1 labels: sparse reward (radius 0.5) towards the evaluation goal, the layout's goal cell
    # that scoring uses, at each step's observation -- not towards the controller's passing goals
    eval_goal = gym.make("Maze2D-UMaze-v1").unwrapped.goal
    dist = np.linalg.norm(a["observations"][:, :2] - eval_goal, axis=1)
    np.testing.assert_array_equal(a["rewards"], (dist <= 0.5).astype(float))
    assert len(np.unique(a["infos/goal"], axis=0)) >= 2  # the controller reached a goal and got a new one
    passing = np.linalg.norm(a["next_observations"][:, :2] - a["infos/goal"], axis=1) <= 0.5
    assert a["rewards"].sum() > 0 and (passing != (a["rewards"] > 0)).sum() > 50  # the old labels differ
    assert recipe.revision == 2 and "towards the evaluation goal" in recipe.description
    # one continuous trajectory: the next episode starts where the previous one ended
    np.testing.assert_allclose(a["observations"][300], a["next_observations"][299])


def _killed(env_id, steps, seed, params):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does to a worker


def _failing(env_id, steps, seed, params):
    import os
    import time

    folder = Path(params["dir"])
    if params.get("slow"):  # a long task beside the failing one: says it started, and whether it ever finished
        (folder / "slow.pid").write_text(str(os.getpid()))
        time.sleep(60)
        (folder / "slow.finished").write_text("")
        return None
    for _ in range(600):  # fail once the slow task runs, so that stopping it is what is tested
        if (folder / "slow.pid").exists():
            break
        time.sleep(0.05)
    raise ValueError(f"bad segment params {params['x']}")


def test_a_killed_or_failing_worker_ends_the_collection_with_its_error(monkeypatch, tmp_path):
    """A worker killed from outside was replaced by multiprocessing.Pool and its task waited for for good; a task's
    own error reaches the caller as it is."""
    import sys

    collect_mod = sys.modules["envs.recipes.collect"]
    monkeypatch.setitem(collect_mod.COLLECTORS, "killed", _killed)
    monkeypatch.setitem(collect_mod.COLLECTORS, "failing", _failing)
    with pytest.raises(RuntimeError, match="a collection worker process died"):
        collect([Segment("killed", "Hopper-v5", 2000)], num_workers=2, progress=False)
    import os

    folder = str(tmp_path)
    with pytest.raises(ValueError, match="bad segment params 1"):  # at once: the slow task is stopped
        collect([Segment("failing", "Hopper-v5", 1000, {"slow": True, "dir": folder}),
                 Segment("failing", "Hopper-v5", 1000, {"x": 1, "dir": folder})], num_workers=2, progress=False)
    # the slow task had started, was stopped (its process is gone), and never finished its 60 s
    pid = int((tmp_path / "slow.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / "slow.finished").exists()


def test_collect_validation():
    with pytest.raises(ValueError, match="kind"):
        collect([Segment("nope", "Hopper-v5", 10)], progress=False)


# --------------------------------------------------------------------------------------------- recipes
def test_recipe_registry_and_shares(monkeypatch, tmp_path):
    assert set(RECIPES) == {"medium", "expert", "medium-replay", "medium-expert", "maze2d"}
    monkeypatch.setattr(recipes_mod, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="train_behavior.py env=walker2d"):
        recipe_for("walker2d-medium", 100)
    _policy(1, 17, 6).save(tmp_path / "walker2d-medium.npz")
    _policy(2, 17, 6).save(tmp_path / "walker2d-expert.npz")
    save_policy_sequence([_policy(i, 17, 6) for i in range(3)], tmp_path / "walker2d-medium-replay.npz")
    me = recipe_for("walker2d-medium-expert", 1001)
    assert [s.steps for s in me.segments] == [501, 500]
    assert "medium-expert" in me.description
    with pytest.raises(ValueError, match="num_steps must be >= 2 for walker2d-medium-expert, got 1: its data is half"):
        recipe_for("walker2d-medium-expert", 1)  # was "segment 'expert' must have steps >= 1, got 0"
    mr = recipe_for("walker2d-medium-replay", 10)
    assert [s.steps for s in mr.segments] == [4, 3, 3]
    assert [s.label for s in mr.segments] == ["snapshot 0", "snapshot 1", "snapshot 2"]
    assert recipe_for("walker2d-medium").segments[0].steps == get_spec("walker2d-medium").dataset_steps


def _made(name: str, steps: int, seed: int) -> Collected:
    """A short collection of catalogue entry ``name``'s recipe with the committed weights."""
    return collect(recipe_for(name, steps).segments, seed=seed, num_workers=2, progress=False)


def _mean_score(name: str, data: Collected) -> float:
    """Mean D4RL-normalized return of the episodes that ended in the environment."""
    assert data.episode_complete.any()
    return float(get_spec(name).normalized_score(data.episode_returns[data.episode_complete]).mean())


@pytest.mark.skipif(not (recipes_mod.WEIGHTS_DIR / "hopper-medium.npz").exists(), reason="no hopper weights")
def test_hopper_medium_quality_in_band():
    assert 30.0 <= _mean_score("hopper-medium", _made("hopper-medium", 8000, seed=3)) <= 60.0


@pytest.mark.skipif(not (recipes_mod.WEIGHTS_DIR / "hopper-expert.npz").exists(), reason="no hopper weights")
def test_hopper_expert_and_replay_quality():
    assert _mean_score("hopper-expert", _made("hopper-expert", 6000, seed=0)) >= 90.0
    # mostly early, falling policies: below medium
    assert _mean_score("hopper-medium-replay", _made("hopper-medium-replay", 6000, seed=0)) < 30.0


@pytest.mark.parametrize("env", ["walker2d", "halfcheetah"])
def test_committed_policies_quality(env: str):
    """The committed walker2d / halfcheetah policies: medium inside the band and expert well above it
    (normalized returns of whole episodes); medium-replay data earn less reward per step than medium data (its
    many snapshots get a few hundred steps each here, too few for whole 1000-step halfcheetah episodes)."""
    medium = _made(f"{env}-medium", 12000, seed=1)
    medium_score = _mean_score(f"{env}-medium", medium)
    assert 30.0 <= medium_score <= 60.0
    assert _mean_score(f"{env}-expert", _made(f"{env}-expert", 8000, seed=1)) > medium_score + 5.0
    replay = _made(f"{env}-medium-replay", 8000, seed=1)
    assert replay.arrays["rewards"].mean() < medium.arrays["rewards"].mean()


def test_a_missing_behaviour_policy_names_the_method_that_trained_the_committed_ones(monkeypatch, tmp_path):
    from envs.recipes.recipes import BEHAVIOR_METHODS, load_behavior

    kinds = {"ars": "linear", "sac": "mlp"}
    for env, method in BEHAVIOR_METHODS.items():
        assert load_behavior(env, "medium").to_arrays().get("kind", "linear") == kinds[method], env
    monkeypatch.setattr(recipes_mod, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="train_behavior.py env=walker2d method=sac weights_dir="):
        load_behavior("walker2d", "medium")
