"""Meta-World robot-arm tasks (a simulated Sawyer arm in MuJoCo) as gymnasium envs scored by success rate.

``MetaWorldTaskEnv(task)`` wraps one Meta-World v3 environment (``reach-v3``, ``pick-place-v3``...) with the goal
observable and the object and goal positions drawn anew at every reset, so demonstrations and evaluations cover
the task's whole distribution of initial conditions:

- ``reset(seed=s)`` draws the positions from ``s`` alone (Meta-World's own ``reset`` ignores its seed argument),
  so episode ``i`` of an evaluation is reproducible and demonstrations made with other seeds are other scenes;
- the episode terminates at the first step where Meta-World reports success (``info["success"]``), so success at
  the last step means success at any time, the usual criterion for Meta-World;
- observations are Meta-World's 39 numbers (hand position and gripper opening, two object poses, the previous
  frame's copy of the same, and the goal position), actions 4 numbers in [-1, 1] (hand displacement, gripper).

``MetaWorldExpert`` adapts Meta-World's scripted policies (``metaworld.policies``) to the task catalogue's
expert interface (``reset(rng)``, ``act(obs)``). Meta-World pins ``mujoco==3.3.0``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["MetaWorldExpert", "MetaWorldTaskEnv", "PickPlaceExpert", "ReachExpert"]

OBS_DIM = 39


def _metaworld_env_class(task: str) -> type:
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    except ImportError as exc:  # pragma: no cover - metaworld is a dependency; this names the fix if it is absent
        raise ImportError(
            f"the Meta-World task {task!r} needs the metaworld package: pip install metaworld==3.1.1"
        ) from exc
    if task not in ALL_V3_ENVIRONMENTS:
        raise ValueError(f"unknown Meta-World task {task!r}; expected one of {sorted(ALL_V3_ENVIRONMENTS)}")
    return ALL_V3_ENVIRONMENTS[task]


class MetaWorldTaskEnv(gym.Env):
    """One Meta-World v3 task with random, seed-determined scenes and termination on success (module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, task: str, render_mode: str | None = None, width: int = 480, height: int = 480,
                 camera_name: str = "corner") -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.task, self.render_mode = task, render_mode
        cls = _metaworld_env_class(task)
        self._env = cls(render_mode=render_mode, camera_name=camera_name, width=width, height=height)
        # what Meta-World's goal-observable variants do, except that positions are drawn at every reset from the
        # env's own seeded generator instead of being frozen after the first
        self._env._partially_observable = False
        if "sawyer_observation_space" in vars(self._env):  # cached while the goal was hidden: it clips it to 0
            del self._env.sawyer_observation_space
        self._env._set_task_called = True
        self._env._freeze_rand_vec = False
        self._env.seeded_rand_vec = True
        # videos play at the simulated rate (80 steps/s for the Sawyer tasks), not at a fixed guess
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self._env.dt))}
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, shape=self._env.action_space.shape, dtype=np.float32)
        self._seeded = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or not self._seeded:  # an unseeded first reset draws its seed from gymnasium's
            self._env.seed(int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1)))
            self._seeded = True
        obs, _ = self._env.reset()
        return np.asarray(obs, dtype=np.float64), {"success": False}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        obs, reward, _, truncated, info = self._env.step(action)
        success = bool(info.get("success", 0.0) > 0)
        out = {"success": success, "near_object": float(info.get("near_object", 0.0)),
               "grasp_success": float(info.get("grasp_success", 0.0))}
        # Meta-World's own limit (max_path_length, 500 steps) ends an episode too: it refuses a step after it
        return np.asarray(obs, dtype=np.float64), float(reward), success, bool(truncated), out

    def render(self) -> np.ndarray | None:
        frame = self._env.render()
        # Meta-World's MuJoCo renderer returns frames bottom row first (the arm hangs from a table drawn above it)
        return None if frame is None else np.ascontiguousarray(frame[::-1])

    def close(self) -> None:
        self._env.close()


class MetaWorldExpert:
    """A Meta-World scripted policy behind the catalogue's expert interface (deterministic: ``reset`` does nothing
    but exists so every expert is used the same way)."""

    policy: ClassVar[str] = ""
    """Class name in ``metaworld.policies``."""

    def __init__(self) -> None:
        import metaworld.policies

        self._policy = getattr(metaworld.policies, self.policy)()

    def reset(self, rng: np.random.Generator) -> None:
        del rng

    def act(self, obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # its controller gains exceed the action range by design; clipped below
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
            action = self._policy.get_action(np.asarray(obs, dtype=np.float64))
        return np.clip(np.asarray(action, np.float64), -1, 1)


class ReachExpert(MetaWorldExpert):
    policy = "SawyerReachV3Policy"


class PickPlaceExpert(MetaWorldExpert):
    policy = "SawyerPickPlaceV3Policy"
