"""D4RL's maze2d point-mass task and its scripted expert, registered with gymnasium on import.

Registered ids (D4RL's ``maze2d-*-v1`` evaluation setups, sparse reward, fixed goal):
``Maze2D-UMaze-v1`` (300 steps), ``Maze2D-Medium-v1`` (600), ``Maze2D-Large-v1`` (800).
``gym.make("envs.maze2d:Maze2D-UMaze-v1")`` imports this package and makes the env in one call.
"""

from __future__ import annotations

import gymnasium as gym

from envs.maze2d.controller import WaypointController
from envs.maze2d.env import GOAL_RADIUS, REWARD_FUNCTIONS, Maze2DEnv
from envs.maze2d.layouts import LAYOUTS, parse_maze

__all__ = [
    "GOAL_RADIUS",
    "LAYOUTS",
    "MAZE2D_IDS",
    "REWARD_FUNCTIONS",
    "Maze2DEnv",
    "WaypointController",
    "parse_maze",
    "register_maze2d",
]

MAZE2D_IDS: dict[str, tuple[str, int]] = {
    # gymnasium id: (layout, max_episode_steps)
    "Maze2D-UMaze-v1": ("umaze", 300),
    "Maze2D-Medium-v1": ("medium", 600),
    "Maze2D-Large-v1": ("large", 800),
}


def register_maze2d() -> None:
    """Register the maze2d ids with gymnasium (idempotent)."""
    for env_id, (layout, steps) in MAZE2D_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="envs.maze2d.env:Maze2DEnv",
                max_episode_steps=steps,
                kwargs={"maze_spec": layout, "reward_type": "sparse", "reset_target": False},
            )


register_maze2d()
