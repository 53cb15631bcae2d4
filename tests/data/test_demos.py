"""Demonstrations of catalogue tasks: scripted-expert rollouts written as a zarr replay buffer, atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from diffusion_rl.data import load_episodes
from diffusion_rl.data.demos import collect_demos, default_demo_path, make_demos

ROOT = Path(__file__).resolve().parents[2]


def test_make_demos_writes_diffusion_policy_layout_and_reports_the_expert(tmp_path):
    path = tmp_path / "po.zarr"
    summary = make_demos("point-obstacle", 10, path, seed=3, progress=False)
    assert summary.episodes == 10 and summary.success_rate == 1.0 and summary.path == path
    root = zarr.open_group(str(path), mode="r")
    assert set(root["data"].keys()) >= {"observations", "actions", "rewards", "terminals", "timeouts", "success"}
    ends = np.asarray(root["meta"]["episode_ends"])
    assert ends.shape == (10,) and ends[-1] == summary.steps == root["data"]["actions"].shape[0]
    store = load_episodes(str(path))
    assert store["observations"].shape == (summary.steps, 4) and store["actions"].shape == (summary.steps, 2)
    np.testing.assert_array_equal(store["success"][store.episode_ends - 1], True)
    assert store.metadata["task"] == "point-obstacle" and store.metadata["locally_made"]
    # the same seed gives the same demonstrations; the first observation is the env's reset state
    again = collect_demos("point-obstacle", 2, seed=3, progress=False)
    np.testing.assert_array_equal(again["actions"], store["actions"][: again.num_steps])
    # both ways around the obstacle appear
    mid = [store["observations"][s:e][np.abs(store["observations"][s:e, 0]).argmin(), 1]
           for s, e in zip(store.episode_starts, store.episode_ends)]
    assert min(mid) < -0.3 and max(mid) > 0.3
    left = sum(m > 0 for m in mid) / len(mid)  # the summary counts the env's info["route"] per demonstration
    assert summary.route_fractions == pytest.approx({"left": left, "right": 1 - left})
    assert "routes left" in str(summary)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["po.zarr"]  # no temporary left behind
    with pytest.raises(FileExistsError, match="overwrite"):
        make_demos("point-obstacle", 2, path, progress=False)
    with pytest.raises(ValueError, match="episodes: expected an integer >= 1"):
        make_demos("point-obstacle", 0, tmp_path / "x.zarr", progress=False)
    with pytest.raises(KeyError, match="unknown task"):
        make_demos("push-tee", 2, tmp_path / "y.zarr", progress=False)


def test_default_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFUSION_RL_DEMOS", str(tmp_path))
    assert default_demo_path("point-obstacle") == tmp_path / "point-obstacle.zarr"


def test_make_demos_script(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), DIFFUSION_RL_DEMOS=str(tmp_path / "demos"))
    script = ROOT / "scripts" / "make_demos.py"
    proc = subprocess.run([sys.executable, str(script), "task=point-obstacle", "episodes=4", "progress=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "point-obstacle: 4 demonstrations" in proc.stdout and "expert success rate 100.0%" in proc.stdout
    assert (tmp_path / "demos" / "point-obstacle.zarr" / "zarr.json").is_file()
    assert not list(tmp_path.glob("*.log"))  # no Hydra log in the working directory
    bad = subprocess.run([sys.executable, str(script), "task=push-tee"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert bad.returncode != 0 and "push-tee" in bad.stderr and "point-obstacle" in bad.stderr
    assert "Traceback" not in bad.stderr
    again = subprocess.run([sys.executable, str(script), "task=point-obstacle", "episodes=4"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode != 0 and "overwrite" in again.stderr
    assert json.loads((tmp_path / "demos" / "point-obstacle.zarr" / "zarr.json").read_text())["node_type"] == "group"


def test_noisy_demonstrations_record_the_expert_s_own_action():
    from envs import get_task
    from envs.obstacle import ObstacleExpert

    assert get_task("point-obstacle").demo_noise > 0
    store = collect_demos("point-obstacle", 4, seed=7, progress=False)
    assert store.metadata["demo_noise"] == get_task("point-obstacle").demo_noise
    import gymnasium as gym

    env = gym.make("PointObstacle-v0")
    for i, (s, e) in enumerate(zip(store.episode_starts, store.episode_ends)):
        obs, actions = store["observations"][s:e], store["actions"][s:e]
        crossed = obs[np.argmax(obs[:, 0] >= 0), 1]
        expert = ObstacleExpert(side=1 if crossed > 0 else -1)
        expert.reset(np.random.default_rng(0))
        replay = np.array([expert.act(o.astype(np.float64)) for o in obs])
        np.testing.assert_allclose(actions, replay, atol=1e-5)  # the clean action, replayed on the same states
        # the states are those of the perturbed actions: executing the recorded ones leads elsewhere
        first, _ = env.reset(seed=7 + i)
        np.testing.assert_allclose(first, obs[0], atol=1e-6)
        clean = [env.step(a)[0] for a in actions[:10]]
        assert np.abs(np.array(clean)[:, :2] - obs[1:11, :2]).max() > 1e-3
    assert store.metadata["routes"]  # and the routes are counted as before
