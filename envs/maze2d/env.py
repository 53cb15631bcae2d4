"""``Maze2DEnv``: D4RL's maze2d point-mass navigation task on gymnasium + MuJoCo.

Faithful to D4RL's ``MazeEnv`` (d4rl/pointmaze/maze_model.py) as used by the ``maze2d-*-v1`` datasets and
evaluation: observation ``[x, y, vx, vy]`` (float64, joint positions and velocities), action
``Box(-1, 1, (2,))`` (clipped), velocities clipped to [-5, 5] before every step, one MuJoCo step of 0.01 s
per env step, sparse reward 1 within 0.5 of the goal (``dense``: ``exp(-distance)``), no termination (the
time limit of the registered ids truncates). ``reset`` puts the point mass in a uniformly chosen empty or goal
cell plus U(-0.1, 0.1) position noise and N(0, 0.1) velocity noise; the goal stays fixed at the layout's
``G`` cell unless ``reset_target``.

The goal is in ``info["goal"]`` at reset and every step and in ``env.unwrapped.goal``. ``reset`` accepts
``options={"start": (x, y)}`` (start near that cell) and ``options={"goal": (x, y)}`` (move the goal).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from envs.maze2d.layouts import EMPTY, GOAL, parse_maze, resolve_layout
from envs.maze2d.model import BODY_OFFSET, maze_xml

__all__ = ["GOAL_RADIUS", "REWARD_FUNCTIONS", "Maze2DEnv"]

GOAL_RADIUS = 0.5
"""Distance to the goal within which the sparse reward is 1 (D4RL)."""


def _sparse(distance: float) -> float:
    return 1.0 if distance <= GOAL_RADIUS else 0.0


def _dense(distance: float) -> float:
    return float(np.exp(-distance))


REWARD_FUNCTIONS: dict[str, Callable[[float], float]] = {"sparse": _sparse, "dense": _dense}


class Maze2DEnv(MujocoEnv, utils.EzPickle):
    """Point mass in a maze; reach the goal cell (see the module docstring for the exact task)."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 100}

    def __init__(
        self,
        maze_spec: str = "umaze",
        reward_type: str = "sparse",
        reset_target: bool = False,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        **kwargs: Any,
    ) -> None:
        if reward_type not in REWARD_FUNCTIONS:
            raise ValueError(f"reward_type must be one of {sorted(REWARD_FUNCTIONS)}, got {reward_type!r}")
        utils.EzPickle.__init__(
            self, maze_spec, reward_type, reset_target, render_mode, width, height, **kwargs
        )
        self.maze_spec = resolve_layout(maze_spec)
        self.maze_arr = parse_maze(self.maze_spec)
        self.reward_type = reward_type
        self.reset_target = reset_target
        empty = sorted(zip(*np.nonzero(self.maze_arr == EMPTY)))
        goals = list(zip(*np.nonzero(self.maze_arr == GOAL)))
        # D4RL resets into empty cells and the goal cell alike.
        self.reset_locations = np.array(empty + goals, dtype=np.float64)
        self._goal = np.array(goals[0] if goals else empty[0], dtype=np.float64)
        self._kept_goal = self._goal.copy()  # the goal of an episode reset without a goal option

        rows, cols = self.maze_arr.shape
        camera = {
            "distance": 1.1 * max(rows, cols) + 2.0,
            "lookat": np.array([(rows + 1) / 2.0, (cols + 1) / 2.0, 0.0]),
            "elevation": -90.0,
            "azimuth": 180.0,
        }
        # gymnasium's MujocoEnv loads models from a file: write the generated XML to a temporary one.
        fd, xml_path = tempfile.mkstemp(suffix=".xml", prefix="maze2d_")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(maze_xml(self.maze_arr))
            observation_space = spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64)
            MujocoEnv.__init__(
                self,
                xml_path,
                frame_skip=1,
                observation_space=observation_space,
                render_mode=render_mode,
                width=width,
                height=height,
                default_camera_config=camera,
                **kwargs,
            )
        finally:
            os.unlink(xml_path)
        self._target_site = self.model.site("target_site").id
        self._set_marker()

    # --- goal -------------------------------------------------------------------------------------------
    @property
    def goal(self) -> np.ndarray:
        """The goal position ``[x, y]`` (a copy)."""
        return self._goal.copy()

    def set_target(self, target: np.ndarray | tuple[float, float] | None = None) -> None:
        """Set the goal, for this and later episodes (D4RL's API); ``None`` draws one as D4RL does (random
        empty/goal cell + U(-0.1, 0.1) noise). A ``reset(options={"goal": ...})`` goal lasts one episode."""
        self._place_goal(target)
        self._kept_goal = self._goal.copy()

    def _place_goal(self, target: np.ndarray | tuple[float, float] | None) -> None:
        if target is None:
            cell = self.reset_locations[self.np_random.integers(len(self.reset_locations))]
            target = cell + self.np_random.uniform(-0.1, 0.1, size=2)
        self._goal = self._position("goal", target)
        self._set_marker()

    @staticmethod
    def _position(name: str, value: Any) -> np.ndarray:
        """``value`` as a finite ``[x, y]`` float64 array, or a ValueError naming ``name``."""
        position = np.array(value, dtype=np.float64)
        if position.shape != (2,):
            raise ValueError(f"{name} must have shape (2,) = [x, y], got shape {position.shape}")
        if not np.isfinite(position).all():
            raise ValueError(f"{name} must be finite, got {position.tolist()}")
        return position

    def _set_marker(self) -> None:
        # As D4RL: MuJoCo does not recompute world-body sites, so the marker is written into the data after
        # every step and reset. Drawn where the reward is measured: the point mass's world position at the
        # goal.
        self.data.site_xpos[self._target_site, :2] = self._goal + BODY_OFFSET

    # --- dynamics -----------------------------------------------------------------------------------------
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Clip the action and velocity, advance one MuJoCo step, reward by distance to the goal."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.set_state(self.data.qpos.copy(), np.clip(self.data.qvel, -5.0, 5.0))
        self.do_simulation(action, self.frame_skip)
        self._set_marker()
        obs = self._get_obs()
        reward = REWARD_FUNCTIONS[self.reward_type](float(np.linalg.norm(obs[:2] - self._goal)))
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, False, {"goal": self.goal}

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset (D4RL's distribution); ``options`` may fix ``start`` and/or ``goal`` cells ``(x, y)``."""
        options = dict(options or {})
        unknown = set(options) - {"start", "goal"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; expected 'start' and/or 'goal'")
        # checked before anything is reset, so that a refused option leaves the env as it was
        for key in ("start", "goal"):
            if key in options:
                options[key] = self._position(key, options[key])
        if "start" in options:
            cell = np.rint(options["start"]).astype(int)
            rows, cols = self.maze_arr.shape
            inside = 0 <= cell[0] < rows and 0 <= cell[1] < cols
            if not inside or self.maze_arr[cell[0], cell[1]] not in (EMPTY, GOAL):
                raise ValueError(
                    f"reset option 'start' {options['start'].tolist()} is not in an open cell of the maze "
                    f"(cell {cell.tolist()} is {'a wall' if inside else 'outside the maze'}); open cells: "
                    f"{self.reset_locations.astype(int).tolist()}"
                )
        self._reset_options = options
        return super().reset(seed=seed, options=options)

    def reset_model(self) -> np.ndarray:
        options = getattr(self, "_reset_options", {})
        if "start" in options:
            start = options["start"]
        else:
            start = self.reset_locations[self.np_random.integers(len(self.reset_locations))]
        qpos = start + self.np_random.uniform(-0.1, 0.1, size=self.model.nq)
        qvel = self.init_qvel + self.np_random.standard_normal(self.model.nv) * 0.1
        self.set_state(qpos, qvel)
        if "goal" in options:  # this episode's goal only: a later plain reset goes back to the kept one
            self._place_goal(options["goal"])
        elif self.reset_target:
            self.set_target()
        else:
            self._goal = self._kept_goal.copy()
        self._set_marker()
        return self._get_obs()

    def _get_reset_info(self) -> dict[str, Any]:
        return {"goal": self.goal}
