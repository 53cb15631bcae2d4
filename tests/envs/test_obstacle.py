"""The point-obstacle task: real MuJoCo physics, a scripted expert that succeeds on both sides, and the reason
the task exists: the average of the two ways around drives into the obstacle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs.obstacle  # noqa: F401  (registers PointObstacle-v0)
from envs import get_task
from envs.obstacle import GOAL, OBSTACLE_RADIUS, ObstacleExpert


def _run(expert, seed: int, rng: np.random.Generator) -> tuple[bool, np.ndarray]:
    env = gym.make("PointObstacle-v0")
    obs, info = env.reset(seed=seed)
    expert.reset(rng)
    path, done = [obs], False
    routes = [info["route"]]
    while not done:
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
        path.append(obs)
        routes.append(info["route"])
        done = terminated or truncated
        assert reward == float(info["success"])
    env.close()
    path = np.asarray(path)
    # info["route"] is "none" until the point first reaches x >= 0, then the side it passed on, for good
    crossed = int(np.argmax(path[:, 0] >= 0)) if (path[:, 0] >= 0).any() else len(path)
    assert all(r == "none" for r in routes[:crossed])
    side = "left" if crossed < len(path) and path[crossed, 1] > 0 else "right"
    assert all(r == side for r in routes[crossed:])
    return bool(info["success"]), path


def test_expert_succeeds_on_both_sides_and_never_enters_the_obstacle():
    rng = np.random.default_rng(0)
    sides = []
    for seed in range(12):
        expert = ObstacleExpert()
        success, path = _run(expert, seed, rng)
        assert success and len(path) <= 150
        assert np.linalg.norm(path[-1, :2] - GOAL) <= 0.1
        assert np.all(np.linalg.norm(path[:, :2], axis=1) > OBSTACLE_RADIUS)  # the sphere's centre stays outside
        assert np.sign(path[np.abs(path[:, 0]).argmin(), 1]) == expert.side  # passes on its side
        sides.append(expert.side)
    assert set(sides) == {-1, 1}


def test_the_average_of_the_two_modes_is_stopped_by_the_obstacle():
    class Straight(ObstacleExpert):  # what MSE cloning of left + right demonstrations amounts to
        def act(self, obs):
            return np.clip(2.4 * (GOAL - obs[:2]) - 0.2 * obs[2:4], -1.0, 1.0)

    success, path = _run(Straight(), 0, np.random.default_rng(0))
    assert not success and len(path) == 151  # truncated at the time limit
    assert path[-1, 0] < 0  # stuck in front of the obstacle


def test_catalogue_entry_and_bad_side():
    from pathlib import Path

    from envs import task_names

    configs = Path(__file__).resolve().parents[2] / "configs" / "task"
    assert sorted(p.stem for p in configs.glob("*.yaml")) == task_names()  # one config per catalogue task
    spec = get_task("point-obstacle")
    assert spec.gym_id == "PointObstacle-v0" and spec.multimodal and spec.max_episode_steps == 150
    assert isinstance(spec.make_expert(), ObstacleExpert)
    with pytest.raises(KeyError, match="expected one of: .*point-obstacle"):
        get_task("push-t")
    with pytest.raises(ValueError, match="side must be -1, \\+1 or None"):
        ObstacleExpert(side=0)


def test_importing_envs_registers_every_task_env():
    """A control loop makes the task's env by its gym id after `import envs` alone (it was not registered)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import gymnasium as gym, envs\n"
            "print([t.gym_id for t in envs.TASKS.values() if t.gym_id not in gym.registry])")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]
