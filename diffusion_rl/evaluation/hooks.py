"""Glue between the trainer and rollouts: an ``eval_fn(ema_model, step)`` that scores the EMA model in an env."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from diffusion_rl.evaluation.rollout import ActingPolicy, evaluate

__all__ = ["rollout_eval_fn"]


def rollout_eval_fn(
    make_policy: Callable[[Any], ActingPolicy],
    env_name: str,
    *,
    episodes: int = 10,
    num_envs: int = 5,
    seed: int = 0,
    max_episode_steps: int | None = None,
    video_dir: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
) -> Callable[[Any, int], dict[str, float]]:
    """Build the trainer's ``eval_fn``: wrap the EMA model with ``make_policy`` and run :func:`evaluate`.

    Returns ``{"normalized_score", "normalized_score_stderr", "return", "return_stderr", "length"}`` (the
    normalized entries only for catalogue envs). With ``video_dir`` each evaluation records
    ``step_<step>.mp4``; with ``results_dir`` it writes ``step_<step>.json`` (``EvalResult.to_dict``). The last
    evaluation stays readable as ``eval_fn.last`` (``(step, EvalResult)``, None before the first): a run whose
    final step was just evaluated need not run the same episodes again.
    """

    def eval_fn(model: Any, step: int) -> dict[str, float]:
        video = None if video_dir is None else os.path.join(video_dir, f"step_{step:08d}.mp4")
        result = evaluate(make_policy(model), env_name, episodes=episodes, num_envs=num_envs, seed=seed,
                          video_path=video, max_episode_steps=max_episode_steps, progress=False)
        result.extra["step"] = int(step)
        if results_dir is not None:
            result.save_json(os.path.join(results_dir, f"step_{step:08d}.json"))
        eval_fn.last = (int(step), result)
        return result.scalars()

    eval_fn.last = None
    return eval_fn
