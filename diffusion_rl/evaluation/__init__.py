"""Evaluation: vector-env rollouts with D4RL-normalized scores, mp4 videos, plan-vs-executed plots and plan
diagnostics."""

from diffusion_rl.evaluation.diagnostics import DiagnosticRow, diagnose, plan_spread
from diffusion_rl.evaluation.hooks import rollout_eval_fn
from diffusion_rl.evaluation.plots import plot_plan
from diffusion_rl.evaluation.result import EvalResult, mean_and_stderr
from diffusion_rl.evaluation.rollout import VIDEO_SIZE, action_bounds, env_dims, evaluate, resolve_env
from diffusion_rl.evaluation.video import AtomicVideoWriter

__all__ = [
    "VIDEO_SIZE",
    "AtomicVideoWriter",
    "DiagnosticRow",
    "EvalResult",
    "action_bounds",
    "diagnose",
    "env_dims",
    "evaluate",
    "mean_and_stderr",
    "plan_spread",
    "plot_plan",
    "resolve_env",
    "rollout_eval_fn",
]
