"""``PointObstacleEnv``: a point mass that must pass a round obstacle, on the left or on the right, to reach a goal.

Made for multimodal demonstrations (Diffusion Policy's motivating case): the scripted expert
(:class:`ObstacleExpert`) picks a side at random per episode, so from the same start half the demonstrations go
left of the obstacle and half go right, and the average of the two -- what MSE behaviour cloning learns -- drives
straight into the obstacle.

The task: a sphere of radius 0.1 on two slide joints (D4RL maze2d's point mass: density 1000, joint damping 1,
motors with gear 100, control in [-1, 1]) in a plane without gravity, 5 MuJoCo steps of 0.01 s per env step. It
starts at ``(-1.2, 0)`` plus U(-0.05, 0.05) noise, the goal is ``(1.2, 0)``, and a fixed cylinder of radius 0.35
stands at the origin between them. Observation ``[x, y, vx, vy]``; reward 1 and termination when the point is
within ``GOAL_RADIUS`` of the goal (``info["success"]``), else 0; the registered id truncates at 150 steps.
``info["route"]`` says which way the point passed the obstacle: ``"left"`` (y > 0 when it first crossed x = 0),
``"right"``, or ``"none"`` while it has not passed it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
from gymnasium import spaces, utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from envs.maze2d.model import POINT_MASS_PHYSICS

__all__ = ["GOAL", "GOAL_RADIUS", "OBSTACLE_RADIUS", "START", "ObstacleExpert", "PointObstacleEnv"]

START = np.array([-1.2, 0.0])
GOAL = np.array([1.2, 0.0])
GOAL_RADIUS = 0.1
OBSTACLE_RADIUS = 0.35

_XML = f"""<mujoco model="point_obstacle">
{POINT_MASS_PHYSICS}  <asset>
    <texture type="2d" name="grid" builtin="checker" rgb1="0.2 0.3 0.4" rgb2="0.1 0.2 0.3" width="100" height="100"/>
    <material name="grid" texture="grid" texrepeat="10 10"/>
  </asset>
  <worldbody>
    <light pos="0 0 4" dir="0 0 -1"/>
    <geom name="ground" size="3 2 0.1" pos="0 0 -0.1" type="plane" contype="1" conaffinity="0" material="grid"/>
    <geom name="obstacle" type="cylinder" pos="0 0 0" size="{OBSTACLE_RADIUS} 0.2" rgba=".7 .5 .3 1"/>
    <site name="goal" pos="{GOAL[0]} {GOAL[1]} 0" size="{GOAL_RADIUS}" rgba=".6 .3 .3 1"/>
    <body name="particle" pos="0 0 0">
      <geom name="particle_geom" type="sphere" size="0.1" rgba="0.1 0.3 0.9 1" contype="1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="ball_x" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
    <motor joint="ball_y" ctrlrange="-1.0 1.0" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>
"""


class PointObstacleEnv(MujocoEnv, utils.EzPickle):
    """Reach the goal past the obstacle (see the module docstring)."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 20}

    def __init__(self, render_mode: str | None = None, width: int = 480, height: int = 320, **kwargs: Any) -> None:
        utils.EzPickle.__init__(self, render_mode, width, height, **kwargs)
        self._route = "none"
        fd, xml_path = tempfile.mkstemp(suffix=".xml", prefix="point_obstacle_")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(_XML)
            MujocoEnv.__init__(
                self, xml_path, frame_skip=5,
                observation_space=spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float64),
                render_mode=render_mode, width=width, height=height,
                default_camera_config={"distance": 4.0, "lookat": np.zeros(3), "elevation": -90.0, "azimuth": 90.0},
                **kwargs,
            )
        finally:
            os.unlink(xml_path)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.set_state(self.data.qpos.copy(), np.clip(self.data.qvel, -5.0, 5.0))
        self.do_simulation(action, self.frame_skip)
        obs = self._get_obs()
        if self._route == "none" and obs[0] >= 0.0:  # crossing the obstacle's centre line decides the route
            self._route = "left" if obs[1] > 0.0 else "right"
        success = bool(np.linalg.norm(obs[:2] - GOAL) <= GOAL_RADIUS)
        if self.render_mode == "human":
            self.render()
        return obs, float(success), success, False, {"success": success, "route": self._route}

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def reset_model(self) -> np.ndarray:
        qpos = START + self.np_random.uniform(-0.05, 0.05, size=2)
        self.set_state(qpos, np.zeros(2))
        self._route = "none"
        return self._get_obs()

    def _get_reset_info(self) -> dict[str, Any]:
        return {"success": False, "route": self._route}


class ObstacleExpert:
    """Scripted demonstrator: a velocity-tracking controller through a waypoint beside the obstacle, on a side
    drawn per episode, that slows down to arrive at the goal.

    ``reset(rng)`` draws the side (``side`` = +1: left of the obstacle seen from the start, i.e. y > 0; -1:
    right); ``act(obs)`` steers at ``max_speed`` towards the waypoint ``(0, side * 0.7)`` and, once within 0.3 of
    it, towards the goal with the speed ``min(max_speed, gain * distance)``; the force is ``kv`` times the
    velocity error. Episodes take about 45 steps and end at the goal at about 0.2 m/s, so a policy that copies
    them arrives without overshooting. ``side`` may also be fixed at construction.
    """

    def __init__(self, side: int | None = None, max_speed: float = 1.5, gain: float = 2.0, kv: float = 0.5) -> None:
        if side not in (None, -1, 1):
            raise ValueError(f"side must be -1, +1 or None (drawn per episode), got {side!r}")
        self.fixed_side, self.max_speed, self.gain, self.kv = side, max_speed, gain, kv
        self.side, self.stage = 1, 0

    def reset(self, rng: np.random.Generator) -> None:
        self.side = self.fixed_side if self.fixed_side is not None else int(rng.choice([-1, 1]))
        self.stage = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        pos, vel = obs[:2], obs[2:4]
        waypoint = np.array([0.0, self.side * 0.7])
        if self.stage == 0 and np.linalg.norm(pos - waypoint) < 0.3:
            self.stage = 1
        target = waypoint if self.stage == 0 else GOAL
        offset = target - pos
        dist = max(float(np.linalg.norm(offset)), 1e-9)
        speed = self.max_speed if self.stage == 0 else min(self.max_speed, self.gain * dist)
        return np.clip(self.kv * (offset / dist * speed - vel), -1.0, 1.0)
