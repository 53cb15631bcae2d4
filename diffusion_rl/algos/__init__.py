"""Algorithms: each turns networks + the diffusion core into ``loss(batch)`` and ``plan(obs)``."""

from diffusion_rl.algos.base import (
    ALGORITHMS,
    Algorithm,
    PlanOutput,
    algorithm_from_config,
    make_algorithm,
    register_algorithm,
)
from diffusion_rl.algos.bc import BehaviorCloning
from diffusion_rl.algos.decision_diffuser import DecisionDiffuser
from diffusion_rl.algos.diffuser import Diffuser
from diffusion_rl.algos.diffusion_policy import DiffusionPolicy

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "BehaviorCloning",
    "DecisionDiffuser",
    "Diffuser",
    "DiffusionPolicy",
    "PlanOutput",
    "algorithm_from_config",
    "make_algorithm",
    "register_algorithm",
]
