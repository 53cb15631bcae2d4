"""The robot-task catalogue: imitation tasks scored by success rate, each with its evaluation env, success
criterion and demonstration source (a scripted expert). D4RL-style entries live in ``envs.catalogue``; tasks
need no reference scores.

This module knows nothing of ``diffusion_rl``; the data layer imports it to make demonstrations.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["TASKS", "TaskSpec", "get_task", "task_names"]


@dataclass(frozen=True)
class TaskSpec:
    """One imitation task of the catalogue."""

    name: str
    """Catalogue name used on the command line (``task=point-obstacle``)."""
    gym_id: str
    """Gymnasium id of the evaluation environment (registered by importing ``module``)."""
    module: str
    """Python module whose import registers ``gym_id`` and provides the expert."""
    expert: str
    """Attribute of ``module``: a class whose instances have ``reset(rng)`` and ``act(obs) -> action``."""
    max_episode_steps: int
    demo_episodes: int
    """Demonstrations made by default (``make_demos.py``, and on first use)."""
    success: str = "info['success'] at the episode's end"
    """How success is judged (documentation; the env reports ``info["success"]``)."""
    description: str = ""
    multimodal: bool = False
    """Whether the demonstrations are multimodal by construction."""
    demo_noise: float = 0.0
    """Standard deviation of Gaussian noise added to the action the environment executes while demonstrating; the
    demonstration records the expert's own action (noise injection as in DART, Laskey et al. 2017), so the data
    show how the expert recovers from states a little off its path, where an imitation policy will end up."""

    def make_expert(self, **options: Any) -> Any:
        """A new scripted expert for this task."""
        return getattr(importlib.import_module(self.module), self.expert)(**options)

    def register(self) -> None:
        """Import the env's module so its gymnasium id exists."""
        importlib.import_module(self.module)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="point-obstacle",
            gym_id="PointObstacle-v0",
            module="envs.obstacle",
            expert="ObstacleExpert",
            max_episode_steps=150,
            demo_episodes=200,
            success="the point mass within 0.1 of the goal (info['success'], the episode terminates)",
            description="point mass passes a round obstacle on the left or right to reach a goal",
            multimodal=True,
            demo_noise=0.3,
        ),
        TaskSpec(
            name="metaworld-reach",
            gym_id="MetaWorldReach-v3",
            module="envs.arm",
            expert="ReachExpert",
            max_episode_steps=150,
            demo_episodes=100,
            success="Meta-World's success: the hand within 5 cm of the goal (the episode terminates)",
            description="Sawyer arm (Meta-World reach-v3) moves its hand to a random goal: the easy arm task",
        ),
        TaskSpec(
            name="metaworld-pick-place",
            gym_id="MetaWorldPickPlace-v3",
            module="envs.arm",
            expert="PickPlaceExpert",
            max_episode_steps=200,
            demo_episodes=200,
            success="Meta-World's success: the puck within 7 cm of the goal (the episode terminates)",
            description="Sawyer arm (Meta-World pick-place-v3) grasps a puck at a random place and carries it to a "
                        "random goal in the air: the hard arm task",
        ),
    )
}


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """The task named ``name``; a ``KeyError`` listing the valid names otherwise."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; expected one of: {', '.join(task_names())}")
    return TASKS[name]
