"""Robot-arm manipulation tasks from Meta-World (a Sawyer arm in MuJoCo), registered with gymnasium on import:
``MetaWorldReach-v3`` (move the hand to a goal: easy) and ``MetaWorldPickPlace-v3`` (grasp a puck and carry it to
a goal in the air: hard); each with its scripted expert."""

from __future__ import annotations

import gymnasium as gym

from envs.arm.env import MetaWorldExpert, MetaWorldTaskEnv, PickPlaceExpert, ReachExpert

__all__ = ["ARM_IDS", "MetaWorldExpert", "MetaWorldTaskEnv", "PickPlaceExpert", "ReachExpert",
           "register_arm"]

#: gymnasium id -> (Meta-World task, time limit in steps); the scripted experts finish in about 45-75 steps
ARM_IDS: dict[str, tuple[str, int]] = {
    "MetaWorldReach-v3": ("reach-v3", 150),
    "MetaWorldPickPlace-v3": ("pick-place-v3", 200),
}


def register_arm() -> None:
    """Register the Meta-World task ids with gymnasium (idempotent)."""
    for gym_id, (task, steps) in ARM_IDS.items():
        if gym_id not in gym.registry:
            gym.register(id=gym_id, entry_point="envs.arm.env:MetaWorldTaskEnv", kwargs={"task": task},
                         max_episode_steps=steps)


register_arm()
