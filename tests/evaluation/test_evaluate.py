"""evaluate(): vector-env rollouts equal a plain gymnasium loop; scores, stderr, goals, videos, bad input."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest

from diffusion_rl.evaluation import EvalResult, evaluate
from envs import get_spec


class Feedback:
    """A hand-made deterministic policy: damp the joint velocities (obs[8:11]) with a bias; counts resets."""

    def __init__(self):
        self.resets = 0
        self.batch_shapes = []

    def reset(self):
        self.resets += 1

    def act(self, obs, **context):
        self.batch_shapes.append(obs.shape)
        return self.single(obs)

    @staticmethod
    def single(obs):
        return np.clip(-0.3 * obs[..., 8:11] + 0.2, -1.0, 1.0)


def _manual(seeds, max_steps=1000):
    """The reference: one env, one episode at a time, gymnasium's own API."""
    env = gym.make("Hopper-v5", max_episode_steps=max_steps)
    returns, lengths = [], []
    for s in seeds:
        obs, _ = env.reset(seed=s)
        total, n, done = 0.0, 0, False
        while not done:
            obs, r, term, trunc, _ = env.step(Feedback.single(obs).astype(np.float32))
            total += r
            n += 1
            done = term or trunc
        returns.append(total)
        lengths.append(n)
    env.close()
    return np.array(returns), np.array(lengths)


def test_returns_equal_a_manual_loop_and_scores_follow_the_formula():
    policy = Feedback()
    result = evaluate(policy, "hopper-medium", episodes=3, num_envs=2, seed=7, progress=False)
    ref_returns, ref_lengths = _manual([7, 8, 9])
    np.testing.assert_allclose(result.returns, ref_returns, rtol=1e-12)
    np.testing.assert_array_equal(result.lengths, ref_lengths)
    assert len(set(ref_lengths)) > 1  # episodes of different lengths: the frozen-env logic matters
    assert policy.resets == 2  # two waves: episodes (0, 1) and (2,)
    assert set(policy.batch_shapes) == {(2, 11)}
    # D4RL normalization with hopper's references
    expected = 100 * (ref_returns - (-20.272305)) / (3234.3 - (-20.272305))
    np.testing.assert_allclose(result.normalized_scores, expected, rtol=1e-12)
    assert result.normalized_score_mean == pytest.approx(expected.mean())
    assert result.normalized_score_stderr == pytest.approx(np.std(expected, ddof=1) / math.sqrt(3))
    assert result.return_mean == pytest.approx(ref_returns.mean())
    assert result.return_stderr == pytest.approx(np.std(ref_returns, ddof=1) / math.sqrt(3))
    assert result.episodes == 3 and result.gym_id == "Hopper-v5"
    d = json.loads(json.dumps(result.to_dict()))
    for key in ("normalized_score_mean", "normalized_score_stderr", "return_mean", "episodes"):
        assert key in d
    assert d["episodes"] == 3 and d["returns"] == pytest.approx(list(ref_returns))
    text = str(result)
    assert "hopper-medium" in text and f"{result.normalized_score_mean:.1f}" in text and "±" in text


class Predicting(Feedback):
    """Feedback that also "plans": it predicts the next state as the current one, so its plan error is the
    RMS one-step change of the state (a number the manual loop can compute too)."""

    def act(self, obs, **context):
        self.last = np.array(obs, copy=True)
        return super().act(obs, **context)

    def plan_error(self, next_obs):
        return np.sqrt(((next_obs - self.last) ** 2).mean(axis=-1))


def test_plan_errors_are_averaged_per_episode_over_its_steps():
    result = evaluate(Predicting(), "hopper-medium", episodes=3, num_envs=2, seed=7, progress=False)
    env = gym.make("Hopper-v5")
    expected = []
    for s in (7, 8, 9):
        obs, _ = env.reset(seed=s)
        errors, done = [], False
        while not done:
            nxt, _, term, trunc, _ = env.step(Feedback.single(obs).astype(np.float32))
            errors.append(np.sqrt(((nxt - obs) ** 2).mean()))
            obs, done = nxt, term or trunc
        expected.append(np.mean(errors))
    env.close()
    np.testing.assert_allclose(result.plan_errors, expected, rtol=1e-9)
    d = result.to_dict()
    assert d["plan_error_mean"] == pytest.approx(np.mean(expected)) and len(d["plan_errors"]) == 3
    assert result.scalars()["plan_error"] == pytest.approx(np.mean(expected))
    assert "plan error" in str(result)
    plain = evaluate(Feedback(), "hopper-medium", episodes=1, num_envs=1, seed=7, progress=False)
    assert plain.plan_errors is None and "plan_error_mean" not in plain.to_dict()
    with pytest.raises(ValueError, match="one value per episode"):
        EvalResult(env_name="x", gym_id="x", returns=[1.0, 2.0], lengths=[1, 2], plan_errors=[0.1])


class PredictingPerDim(Predicting):
    """Predicting with the per-dimension protocol of diffusion_rl.Policy.plan_error."""

    def plan_error(self, next_obs, per_dim=False):
        err = np.abs(next_obs - self.last)
        return err if per_dim else np.sqrt((err**2).mean(axis=-1))


def test_plan_error_per_dimension_is_the_rms_of_every_step():
    result = evaluate(PredictingPerDim(), "hopper-medium", episodes=3, num_envs=2, seed=7, progress=False)
    env = gym.make("Hopper-v5")
    changes, per_episode = [], []
    for s in (7, 8, 9):
        obs, _ = env.reset(seed=s)
        done, steps = False, []
        while not done:
            nxt, _, term, trunc, _ = env.step(Feedback.single(obs).astype(np.float32))
            steps.append(nxt - obs)
            obs, done = nxt, term or trunc
        changes.extend(steps)
        per_episode.append(np.mean(np.sqrt((np.asarray(steps) ** 2).mean(axis=1))))
    env.close()
    expected = np.sqrt((np.asarray(changes) ** 2).mean(axis=0))
    np.testing.assert_allclose(result.plan_error_per_dim, expected, rtol=1e-9)
    np.testing.assert_allclose(result.plan_errors, per_episode, rtol=1e-9)  # the episode figure is unchanged
    assert result.to_dict()["plan_error_per_dim"] == pytest.approx(list(expected))
    worst = int(np.argmax(expected))
    assert f"worst state dims {worst}: {expected[worst]:.3f}" in str(result)
    assert evaluate(Predicting(), "hopper-medium", episodes=1, num_envs=1, seed=7,
                    progress=False).plan_error_per_dim is None  # the plain protocol: no per-dimension figure
    with pytest.raises(ValueError, match="plan_error_per_dim must be 1-D"):
        EvalResult(env_name="x", gym_id="x", returns=[1.0], lengths=[1], plan_errors=[0.1],
                   plan_error_per_dim=[[0.1]])


def test_results_do_not_depend_on_num_envs():
    a = evaluate(Feedback(), "hopper-medium", episodes=3, num_envs=1, seed=3, progress=False)
    b = evaluate(Feedback(), "hopper-medium", episodes=3, num_envs=3, seed=3, progress=False)
    np.testing.assert_array_equal(a.returns, b.returns)
    c = evaluate(Feedback(), "hopper-medium", episodes=3, num_envs=3, seed=4, progress=False)
    assert not np.array_equal(a.returns, c.returns)


def test_raw_gym_id_has_no_normalized_score_and_time_limit_applies():
    result = evaluate(Feedback(), "Hopper-v5", episodes=2, num_envs=2, max_episode_steps=15, progress=False)
    assert result.normalized_scores is None and result.normalized_score_mean is None
    assert list(result.lengths) == [15, 15]
    ref_returns, _ = _manual([0, 1], max_steps=15)
    np.testing.assert_allclose(result.returns, ref_returns, rtol=1e-12)
    d = result.to_dict()
    assert d["normalized_score_mean"] is None and d["normalized_scores"] is None
    assert "normalized score" not in str(result)


def test_maze2d_policies_get_the_goal():
    seen = []

    class GoalPolicy:
        def act(self, obs, goal=None):
            seen.append(goal)
            return np.zeros((obs.shape[0], 2))

    result = evaluate(GoalPolicy(), "maze2d-umaze", episodes=2, num_envs=2, max_episode_steps=5, progress=False)
    env = gym.make("Maze2D-UMaze-v1")
    _, info = env.reset(seed=0)
    assert len(seen) == 5 and all(g.shape == (2, 2) for g in seen)
    np.testing.assert_allclose(seen[0], np.stack([info["goal"]] * 2))
    np.testing.assert_allclose(seen[0][0], env.unwrapped.goal)
    assert result.normalized_scores is not None
    spec = get_spec("maze2d-umaze")
    np.testing.assert_allclose(result.normalized_scores, spec.normalized_score(result.returns))


def test_a_goal_free_planner_is_scored_in_a_maze_without_the_goal():
    """A Decision Diffuser takes no goal (act(goal=...) is refused): evaluation leaves the maze's goal out."""
    import torch

    from diffusion_rl import Policy
    from diffusion_rl.algos import DecisionDiffuser
    from diffusion_rl.data import GaussianNormalizer

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = Policy(DecisionDiffuser(obs_dim=4, act_dim=2, horizon=8, num_steps=10, dim=8, dim_mults=(1, 2),
                                     inv_hidden_dim=16),
                    {"observations": GaussianNormalizer().fit(rng.normal(size=(64, 4))),
                     "actions": GaussianNormalizer().fit(rng.normal(size=(64, 2)))}, sampling={"steps": 2})
    assert not policy.accepts_goal
    with pytest.raises(ValueError, match="plans take no goal"):
        policy.act(np.zeros(4, dtype=np.float32), goal=np.zeros(2))
    result = evaluate(policy, "maze2d-umaze", episodes=2, num_envs=2, max_episode_steps=3, progress=False)
    assert result.episodes == 2 and (result.lengths == 3).all()


def test_video_of_env0_is_written(tmp_path):
    import imageio.v2 as imageio

    path = tmp_path / "videos" / "hopper.mp4"
    result = evaluate(Feedback(), "hopper-medium", episodes=3, num_envs=2, max_episode_steps=8, video_path=str(path),
                      progress=False)
    assert result.video_path == str(path) and path.stat().st_size > 1000
    frames = [f for f in imageio.get_reader(str(path))]
    # env 0 plays episodes 0 and 2: a reset frame plus one frame per step each
    assert len(frames) == 2 * (8 + 1)
    assert frames[0].ndim == 3 and frames[0].shape[2] == 3 and frames[0].std() > 5  # not a blank image
    assert [p.name for p in path.parent.iterdir()] == ["hopper.mp4"]  # no temporary left behind


def test_single_episode_stderr_is_undefined():
    r = EvalResult(env_name="x", gym_id="X-v0", returns=[5.0], lengths=[3], normalized_scores=[50.0])
    assert math.isnan(r.normalized_score_stderr) and r.normalized_score_mean == 50.0
    d = r.to_dict()
    assert d["normalized_score_stderr"] is None and d["return_stderr"] is None
    json.dumps(d, allow_nan=False)
    assert "±" not in str(r)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"env_name": "hopper-meduim"}, "hopper-medium"),
        ({"episodes": 0}, "episodes"),
        ({"num_envs": 0}, "num_envs"),
        ({"video_path": "out.gif"}, ".mp4"),
        ({"seed": -1}, r"seed: expected an integer in \[0, 2\*\*32 - episodes\)"),
        ({"seed": "0"}, "seed: expected an integer"),
        ({"seed": 1.5}, "seed: expected an integer"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = {"env_name": "hopper-medium", "episodes": 1, "num_envs": 1, "progress": False, "max_episode_steps": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        evaluate(Feedback(), **args)


def test_a_bad_video_path_closes_the_envs_it_had_made(monkeypatch):
    import gymnasium as gym

    closed = []
    real_close = gym.vector.SyncVectorEnv.close
    monkeypatch.setattr(gym.vector.SyncVectorEnv, "close", lambda self, **kw: (closed.append(1), real_close(self, **kw)))
    with pytest.raises(ValueError, match=r"video_path: expected a file name ending in \.mp4"):
        evaluate(Feedback(), "hopper-medium", episodes=1, num_envs=1, progress=False, video_path="out.gif")
    assert closed == [1]


@pytest.mark.parametrize(
    "actions, match",
    [
        (np.zeros((2, 2)), r"expected \(2, 3\)"),
        (np.zeros(3), r"expected \(2, 3\)"),
        (np.full((2, 3), np.nan), "NaN"),
        ([["a", "b", "c"]] * 2, "numeric"),
    ],
)
def test_bad_policy_output_is_a_clear_error(actions, match):
    class Bad:
        def act(self, obs, **context):
            return actions

    with pytest.raises(ValueError, match=match):
        evaluate(Bad(), "hopper-medium", episodes=2, num_envs=2, max_episode_steps=3, progress=False)


def test_torch_actions_are_accepted():
    torch = pytest.importorskip("torch")

    class TorchPolicy:
        def act(self, obs, **context):
            return torch.as_tensor(Feedback.single(obs), dtype=torch.float32)

    result = evaluate(TorchPolicy(), "Hopper-v5", episodes=1, num_envs=1, max_episode_steps=10, progress=False)
    ref, _ = _manual([0], max_steps=10)
    np.testing.assert_allclose(result.returns, ref, rtol=1e-5)


def test_save_json_and_scalars(tmp_path):
    r = EvalResult(env_name="hopper-medium", gym_id="Hopper-v5", returns=[10.0, 20.0], lengths=[5, 7],
                   normalized_scores=[1.0, 3.0])
    path = r.save_json(tmp_path / "out" / "eval.json")
    loaded = json.loads(path.read_text())
    assert loaded["normalized_score_mean"] == 2.0 and loaded["episodes"] == 2
    assert loaded["normalized_score_stderr"] == pytest.approx(1.0)  # std(ddof=1)=sqrt(2), / sqrt(2)
    assert r.scalars() == pytest.approx({"normalized_score": 2.0, "normalized_score_stderr": 1.0, "return": 15.0,
                                         "return_stderr": 5.0, "length": 6.0})
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]


def test_rollout_eval_fn_feeds_the_trainer(tmp_path):
    from diffusion_rl.evaluation import rollout_eval_fn

    wrapped = []

    def make_policy(model):
        wrapped.append(model)
        return Feedback()

    eval_fn = rollout_eval_fn(make_policy, "hopper-medium", episodes=2, num_envs=2, max_episode_steps=20,
                              results_dir=tmp_path)
    scores = eval_fn("the-ema-model", 30)
    assert wrapped == ["the-ema-model"]
    ref, _ = _manual([0, 1], max_steps=20)
    assert scores["return"] == pytest.approx(ref.mean())
    assert scores["normalized_score"] == pytest.approx(float(np.mean(get_spec("hopper-medium").normalized_score(ref))))
    saved = json.loads((tmp_path / "step_00000030.json").read_text())
    assert saved["extra"] == {"step": 30} and saved["return_mean"] == pytest.approx(ref.mean())


def test_task_success_and_routes_are_recorded_per_episode(tmp_path):
    from envs.obstacle import ObstacleExpert

    class TwoExperts:  # env 0 passes left of the obstacle, env 1 right
        def reset(self):
            self.experts = [ObstacleExpert(side=1), ObstacleExpert(side=-1)]
            for e in self.experts:
                e.reset(np.random.default_rng(0))

        def act(self, obs, **context):
            return np.stack([e.act(o) for e, o in zip(self.experts, obs)])

    r = evaluate(TwoExperts(), "point-obstacle", episodes=4, num_envs=2, progress=False)
    assert r.successes.tolist() == [True] * 4
    assert r.routes == ["left", "right", "left", "right"]
    assert r.route_fractions == {"left": 0.5, "right": 0.5}
    assert "routes (left 50%, right 50%)" in str(r)
    assert r.scalars()["route_left"] == 0.5
    saved = json.loads(r.save_json(tmp_path / "eval.json").read_text())
    assert saved["route_fractions"] == {"left": 0.5, "right": 0.5} and saved["routes"] == r.routes
    with pytest.raises(ValueError, match="one name per episode"):
        EvalResult(env_name="x", gym_id="x", returns=[1.0], lengths=[1], routes=["left", "right"])
    with pytest.raises(ValueError, match=r"normalized_scores must hold one value per episode \(\(3,\)\)"):
        EvalResult(env_name="x", gym_id="x", returns=[1.0, 2.0, 3.0], lengths=[1, 1, 1], normalized_scores=[50.0])


def test_seeded_policies_get_fresh_sampling_noise_per_wave_and_their_seed_back():
    class Seeded(Feedback):
        seed = 7

        def reset(self, seed=None):
            self.resets += 1
            if seed is not None:
                self.seed = seed
                self.seen.append(seed)

    policy = Seeded()
    policy.seen = []
    evaluate(policy, "hopper-medium", episodes=5, num_envs=2, seed=100, max_episode_steps=5, progress=False)
    assert policy.seen == [7 + 100 + 0, 7 + 100 + 2, 7 + 100 + 4, 7]  # one per wave, then the original back
    assert policy.seed == 7


def test_a_seeded_policy_without_reset_is_evaluated():
    class SeededNoReset:  # reset() is optional in the policy protocol, a seed attribute or not
        seed = 3

        def act(self, obs, **context):
            return Feedback.single(obs)

    result = evaluate(SeededNoReset(), "hopper-medium", episodes=2, num_envs=2, seed=0, max_episode_steps=5,
                      progress=False)
    assert result.episodes == 2 and (result.lengths == 5).all()


def test_a_policy_whose_reset_takes_no_seed_is_reset_plainly():
    class OwnSeed(Feedback):  # its own `seed` attribute, and the protocol's plain reset()
        seed = 5

        def reset(self):
            self.resets += 1

    policy = OwnSeed()
    result = evaluate(policy, "hopper-medium", episodes=3, num_envs=2, seed=0, max_episode_steps=4, progress=False)
    assert result.episodes == 3 and policy.resets == 2  # once per wave, no seed= passed


def test_the_time_limit_the_episodes_ran_under_is_recorded(tmp_path):
    """eval.json says which time limit scored the episodes: a shortened one is not a D4RL score."""
    short = evaluate(Feedback(), "hopper-medium", episodes=1, num_envs=1, max_episode_steps=4, progress=False)
    assert short.max_episode_steps == 4 and json.loads(short.save_json(tmp_path / "e.json").read_text())[
        "max_episode_steps"] == 4
    assert evaluate(Feedback(), "hopper-medium", episodes=1, num_envs=1, progress=False).max_episode_steps == 1000
    class Zero:
        def act(self, obs):
            return np.zeros((len(obs), 1))

    pendulum = evaluate(Zero(), "Pendulum-v1", episodes=1, num_envs=1, progress=False)
    assert pendulum.max_episode_steps == 200 and (pendulum.lengths == 200).all()  # the env's registered limit


def test_what_the_policy_counted_is_reported_and_its_warnings_are_recorded_when_recording():
    """A policy's own counts over the evaluation (diffusion_rl.Policy: clipped actions, far observations) go into
    the result; a warning raised during the rollouts reaches a recorder (pytest.warns, catch_warnings(record=True))
    with the progress bar on, and the display in force is back afterwards."""
    import warnings

    class Counting(Feedback):
        def __init__(self):
            super().__init__()
            self.stats = {"actions": 100, "clipped_actions": 7, "far_observations": 0, "note": None}

        def act(self, obs, **context):
            self.stats["actions"] += len(obs)
            self.stats["clipped_actions"] += 1
            self.stats["note"] = 3  # not a count before: left out, not a TypeError after the episodes
            if self.stats["clipped_actions"] == 8:
                warnings.warn("an action was clipped", RuntimeWarning, stacklevel=2)
            return super().act(obs, **context)

    with pytest.warns(RuntimeWarning, match="an action was clipped"):
        result = evaluate(Counting(), "hopper-medium", episodes=2, num_envs=2, max_episode_steps=5, progress=True)
    assert result.policy_stats == {"actions": 10, "clipped_actions": 5, "far_observations": 0}  # this run only
    assert result.to_dict()["policy_stats"]["clipped_actions"] == 5
    assert "50.0% of actions clipped into the action space" in str(result)


def test_a_policy_counting_by_row_is_counted_only_for_environments_in_their_episode():
    """A policy that says which rows of its last act() it counted (diffusion_rl.Policy.row_stats): the rows of a
    partial last wave's padding environments (and of environments whose episode has ended) are left out. Counted
    from the difference of its totals, 3 episodes on 2 environments of 5 steps gave 20 actions, not 15."""

    class ByRow(Feedback):
        def __init__(self):
            super().__init__()
            self.stats = {"actions": 0, "clipped_actions": 0, "far_observations": 0}
            self.row_stats = {}

        def act(self, obs, **context):
            self.stats["actions"] += len(obs)
            clipped = np.arange(len(obs)) == 1  # the second environment's every action "clipped"
            self.stats["clipped_actions"] += int(clipped.sum())
            self.row_stats = {"clipped_actions": clipped, "far_observations": np.ones(len(obs), dtype=bool)}
            return super().act(obs, **context)

    policy = ByRow()
    result = evaluate(policy, "hopper-medium", episodes=3, num_envs=2, max_episode_steps=5, progress=False)
    assert (result.lengths == 5).all() and policy.stats["actions"] == 20  # what it was asked for
    # wave 1: both environments, 5 steps each; wave 2: the first environment only (the second pads the wave)
    assert result.policy_stats == {"actions": 15, "clipped_actions": 5, "far_observations": 15}


def test_a_warning_during_the_rollouts_prints_above_the_progress_bar():
    """In a plain process (no recorder) the bar's line is cleared before the warning is written, not continued by
    it, and redrawn after."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        "import warnings\n"
        "from tests.evaluation.test_evaluate import Feedback\n"
        "from diffusion_rl.evaluation import evaluate\n"
        "class Warns(Feedback):\n"
        "    k = 0\n"
        "    def act(self, obs, **context):\n"
        "        self.k += 1\n"
        "        if self.k == 3:\n"
        "            warnings.warn('an action was clipped', RuntimeWarning)\n"
        "        return super().act(obs, **context)\n"
        "shown = warnings.showwarning\n"
        "evaluate(Warns(), 'hopper-medium', episodes=2, num_envs=2, max_episode_steps=5, progress=True)\n"
        "print('display restored:', warnings.showwarning is shown)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(x for x in proc.stderr.split("\n") if "RuntimeWarning: an action was clipped" in x)
    assert "it/s]" not in line.split("\r")[-1]  # the bar's line was cleared first, not continued by the warning
    assert "display restored: True" in proc.stdout


def test_a_policy_without_stats_reports_none():
    assert evaluate(Feedback(), "hopper-medium", episodes=1, num_envs=1, max_episode_steps=2,
                    progress=False).policy_stats is None


def test_results_carry_95_percent_intervals_null_for_one_episode(tmp_path):
    """eval.json has the t-based 95% interval of the mean score (t_{0.975, n-1} · s.e.) and the Wilson interval of
    the success rate; the t-interval is null for one episode (no spread to estimate)."""
    r = EvalResult(env_name="hopper-medium", gym_id="Hopper-v5", returns=[10.0, 20.0, 30.0], lengths=[5, 7, 9],
                   normalized_scores=[40.0, 50.0, 60.0], successes=[True, True, True])
    lo, hi = r.normalized_score_ci95
    assert (lo, hi) == pytest.approx((50.0 - 4.302653 * 10 / math.sqrt(3), 50.0 + 4.302653 * 10 / math.sqrt(3)))
    saved = json.loads(r.save_json(tmp_path / "eval.json").read_text())
    assert saved["normalized_score_ci95"] == pytest.approx([lo, hi])
    # three successes out of three: ± s.e. is 0, the Wilson interval is not
    assert r.success_rate_stderr == 0.0 and saved["success_rate_ci95"] == pytest.approx([0.4385, 1.0], abs=1e-4)
    one = EvalResult(env_name="x", gym_id="X-v0", returns=[5.0], lengths=[3], normalized_scores=[50.0])
    assert one.to_dict()["normalized_score_ci95"] is None
    assert EvalResult(env_name="x", gym_id="X-v0", returns=[5.0], lengths=[3]).to_dict()["normalized_score_ci95"] is None


def test_a_score_under_another_time_limit_than_the_catalogues_says_so():
    short = evaluate(Feedback(), "hopper-medium", episodes=1, num_envs=1, max_episode_steps=4, progress=False)
    assert short.reference_max_episode_steps == 1000 and short.time_limit_differs
    d = short.to_dict()
    assert d["time_limit_differs"] is True and d["reference_max_episode_steps"] == 1000
    assert "time limit 4, not the catalogue's 1000: not comparable with D4RL" in str(short)
    full = EvalResult(env_name="hopper-medium", gym_id="Hopper-v5", returns=[1.0], lengths=[1000],
                      normalized_scores=[1.0], max_episode_steps=1000, reference_max_episode_steps=1000)
    assert not full.time_limit_differs and full.to_dict()["time_limit_differs"] is False
    assert "time limit" not in str(full)
    raw = evaluate(Feedback(), "Hopper-v5", episodes=1, num_envs=1, max_episode_steps=4, progress=False)
    assert raw.reference_max_episode_steps is None and not raw.time_limit_differs  # no catalogue, no claim


def test_padding_envs_of_a_partial_last_wave_reset_with_valid_seeds():
    """episodes=6, num_envs=4, seed=2**32-7: the last wave counts episodes 4 and 5 (seeds 2**32-3, 2**32-2);
    its two padding envs used to reset with 2**32-1 and 2**32, which Meta-World refuses."""
    seen = []

    class SeedCheckingEnv(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            if seed is not None:
                if not 0 <= seed < 2**32 - 1:  # as Meta-World: np.random.seed-style bounds, and one to spare
                    raise ValueError(f"seed must be in [0, 2**32 - 1), got {seed}")
                seen.append(seed)
            super().reset(seed=seed)
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 1.0, True, False, {}

    gym.register("SeedChecking-v0", entry_point=SeedCheckingEnv, max_episode_steps=5)
    try:
        class Zero:
            def act(self, obs):
                return np.zeros((len(obs), 1))

        base = 2**32 - 7
        result = evaluate(Zero(), "SeedChecking-v0", episodes=6, num_envs=4, seed=base, progress=False)
    finally:
        gym.registry.pop("SeedChecking-v0")
    assert result.episodes == 6 and (result.returns == 1.0).all()
    assert max(seen) == base + 5 and seen[:4] == [base, base + 1, base + 2, base + 3]
    assert sorted(set(seen[4:8])) == [base + 4, base + 5]  # the padding envs reuse the wave's first seed


def test_the_sampler_seed_is_recorded():
    class Seeded(Feedback):
        seed = 7

        def reset(self, seed=None):
            self.resets += 1

    r = evaluate(Seeded(), "hopper-medium", episodes=2, num_envs=1, seed=100, max_episode_steps=3, progress=False)
    assert r.sampler_seed == 107 and r.to_dict()["sampler_seed"] == 107  # wave from episode i: 107 + i
    plain = evaluate(Feedback(), "hopper-medium", episodes=1, num_envs=1, max_episode_steps=3, progress=False)
    assert plain.sampler_seed is None and plain.to_dict()["sampler_seed"] is None


def test_the_declared_gymnasium_floor_has_autoreset_mode():
    """evaluate() needs gym.vector.AutoresetMode, new in gymnasium 1.1: pyproject.toml must not allow 1.0."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    floor = re.search(r'"gymnasium\[mujoco\]>=(\d+)\.(\d+)', text)
    assert floor is not None and (int(floor[1]), int(floor[2])) >= (1, 1), floor
    assert hasattr(gym.vector, "AutoresetMode")


def test_a_diverged_episode_is_written_as_null_not_as_nan(tmp_path):
    """One NaN return (a diverged episode) made save_json raise: the per-episode lists kept NaN while the
    summary numbers became null. A periodic evaluation during training wrote its result so, and stopped training."""
    result = EvalResult("hopper-medium", "Hopper-v5", returns=[1500.0, float("nan"), 1700.0], lengths=[10, 10, 10],
                        normalized_scores=[46.9, float("nan"), 53.1], plan_errors=[0.02, float("inf"), 0.03])
    saved = json.loads(result.save_json(tmp_path / "eval.json").read_text())
    assert saved["returns"] == [1500.0, None, 1700.0] and saved["normalized_scores"] == [46.9, None, 53.1]
    assert saved["plan_errors"] == [0.02, None, 0.03] and saved["normalized_score_mean"] is None


def test_a_policy_seed_near_the_top_is_refused_before_any_episode_runs(monkeypatch):
    """The waves reset a seeded Policy with policy.seed + seed + i; past 2**63 that used to fail after the first
    wave, in Policy.reset, with a message that named neither policy.seed nor evaluate's seed."""
    import torch

    from diffusion_rl import Policy
    from diffusion_rl.algos import make_algorithm
    from diffusion_rl.data import GaussianNormalizer

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    policy = Policy(make_algorithm("bc", obs_dim=11, act_dim=3, hidden_dim=8),
                    {"observations": GaussianNormalizer().fit(rng.normal(size=(64, 11))),
                     "actions": GaussianNormalizer().fit(rng.normal(size=(64, 3)))}, seed=2**63 - 3)
    monkeypatch.setattr(gym.vector, "SyncVectorEnv", None)  # no env may be made
    with pytest.raises(ValueError, match=r"policy's seed 9223372036854775805 plus seed 1 plus 2 \(the last wave's"):
        evaluate(policy, "hopper-medium", episodes=3, num_envs=1, seed=1, progress=False)
    monkeypatch.undo()
    # the waves' seeds (policy.seed + 0, 1 and 2) are all below 2**63; one wave of 4 is reset with policy.seed
    result = evaluate(policy, "hopper-medium", episodes=3, num_envs=1, max_episode_steps=2, progress=False)
    assert result.sampler_seed == 2**63 - 3 and policy.seed == 2**63 - 3
    result = evaluate(policy, "hopper-medium", episodes=4, num_envs=4, max_episode_steps=2, progress=False)
    assert result.sampler_seed == 2**63 - 3 and policy.seed == 2**63 - 3


def test_the_length_is_the_mean_of_unequal_episodes():
    r = EvalResult(env_name="x", gym_id="X-v0", returns=[1.0, 2.0, 3.0], lengths=[3, 3, 9],
                   normalized_scores=[10.0, 20.0, 30.0])
    assert r.length_mean == 5.0 and r.to_dict()["length_mean"] == 5.0 and r.scalars()["length"] == 5.0
    assert "length 5" in str(r)
