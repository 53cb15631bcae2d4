"""Recipes that make local datasets in real MuJoCo: behaviour policies, their training (ARS), rollout collectors.

Plain numpy + gymnasium; never imports ``diffusion_rl`` or torch. ``diffusion_rl.data.make`` writes the result.
"""

from envs.recipes.collect import COLLECTORS, Collected, Segment, collect, split_steps
from envs.recipes.policies import LinearPolicy, MLPPolicy, load_policy
from envs.recipes.recipes import (
    RECIPE_REVISIONS,
    RECIPES,
    WEIGHTS_DIR,
    Recipe,
    load_behavior,
    load_behavior_sequence,
    recipe_for,
    recipe_revision,
    run_recipe,
)

__all__ = [
    "COLLECTORS",
    "RECIPES",
    "RECIPE_REVISIONS",
    "WEIGHTS_DIR",
    "Collected",
    "LinearPolicy",
    "MLPPolicy",
    "Recipe",
    "Segment",
    "collect",
    "load_behavior",
    "load_behavior_sequence",
    "load_policy",
    "recipe_for",
    "recipe_revision",
    "run_recipe",
    "split_steps",
]
