"""Evaluation: vector-env rollouts with D4RL-normalized scores, mp4 videos, and plan-vs-executed plots."""

from diffusion_rl.evaluation.hooks import rollout_eval_fn
from diffusion_rl.evaluation.plots import plot_plan
from diffusion_rl.evaluation.result import EvalResult, mean_and_stderr
from diffusion_rl.evaluation.rollout import VIDEO_SIZE, evaluate, resolve_env
from diffusion_rl.evaluation.video import AtomicVideoWriter

__all__ = [
    "VIDEO_SIZE",
    "AtomicVideoWriter",
    "EvalResult",
    "evaluate",
    "mean_and_stderr",
    "plot_plan",
    "resolve_env",
    "rollout_eval_fn",
]
