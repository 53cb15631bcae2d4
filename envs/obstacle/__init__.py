"""A point mass that passes an obstacle on the left or the right (multimodal demonstrations), registered with
gymnasium on import as ``PointObstacle-v0`` (150 steps)."""

from __future__ import annotations

import gymnasium as gym

from envs.obstacle.env import GOAL, GOAL_RADIUS, OBSTACLE_RADIUS, START, ObstacleExpert, PointObstacleEnv

__all__ = ["GOAL", "GOAL_RADIUS", "OBSTACLE_RADIUS", "START", "ObstacleExpert", "PointObstacleEnv",
           "register_obstacle"]


def register_obstacle() -> None:
    """Register ``PointObstacle-v0`` with gymnasium (idempotent)."""
    if "PointObstacle-v0" not in gym.registry:
        gym.register(id="PointObstacle-v0", entry_point="envs.obstacle.env:PointObstacleEnv", max_episode_steps=150)


register_obstacle()
