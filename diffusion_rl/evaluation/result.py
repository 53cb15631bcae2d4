"""``EvalResult``: per-episode returns of an evaluation and their summary (mean, standard error, 95% interval)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_rl.evaluation._files import write_text_atomic
from diffusion_rl.evaluation.intervals import t_interval, wilson_interval

__all__ = ["EvalResult", "mean_and_stderr"]


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error ``std(ddof=1) / sqrt(n)``; the error is NaN for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    mean = float(v.mean())
    stderr = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return mean, stderr


def _json_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _json_interval(interval: tuple[float, float] | None) -> list[float] | None:
    """``[low, high]``, or None when there is no interval or it is undefined (NaN: fewer than two episodes)."""
    if interval is None or not all(math.isfinite(x) for x in interval):
        return None
    return [float(interval[0]), float(interval[1])]


@dataclass
class EvalResult:
    """Returns and lengths of ``episodes`` episodes, and D4RL-normalized scores for catalogue envs."""

    env_name: str
    """What the caller asked for: a catalogue name (``hopper-medium``) or a gymnasium id."""
    gym_id: str
    returns: np.ndarray
    lengths: np.ndarray
    normalized_scores: np.ndarray | None = None
    """``None`` when ``env_name`` is a raw gymnasium id with no reference scores."""
    seed: int = 0
    """Episode ``i`` was reset with seed ``seed + i``."""
    num_envs: int = 1
    video_path: str | None = None
    max_episode_steps: int | None = None
    """The time limit the episodes ran under (an override, else the env's own); None when unknown or unlimited.
    Scores under another limit than the catalogue's (1000 steps for locomotion) are not D4RL's."""
    plan_errors: np.ndarray | None = None
    """Per episode, the mean over its steps of the planner's dynamic-consistency error (RMS over state
    dimensions of the simulator's next state minus the planned one, normalized units); None for non-planners."""
    plan_error_per_dim: np.ndarray | None = None
    """Per state dimension, the RMS over every step of every episode of the simulator's next state minus the
    planned one (normalized units): which dimensions the planner gets wrong. None when the policy does not report
    per-dimension errors."""
    successes: np.ndarray | None = None
    """Per episode, whether the env reported ``info["success"]`` at its last step; None for envs without it."""
    routes: list[str] | None = None
    """Per episode, the env's ``info["route"]`` at its last step (which way a multimodal task was done, e.g.
    ``"left"``/``"right"`` of an obstacle); None for envs without it."""
    policy_stats: dict[str, int] | None = None
    """What the policy counted over these episodes (``diffusion_rl.Policy``: ``actions``, ``clipped_actions``
    into the action space, ``far_observations`` outside the training data); None for policies without ``stats``."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata the caller wants kept with the result (sampler settings, checkpoint step...)."""
    sampler_seed: int | None = None
    """A seeded policy's (``diffusion_rl.Policy``) sampling seed: the wave of episodes starting at episode ``i`` was
    sampled with seed ``sampler_seed + i`` (``policy.seed + seed``); None for a policy without one."""
    reference_max_episode_steps: int | None = None
    """The catalogue's time limit, the one the reference returns (D4RL's) assume; None for envs outside it."""

    def __post_init__(self) -> None:
        self.returns = np.asarray(self.returns, dtype=np.float64)
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        if self.normalized_scores is not None:
            self.normalized_scores = np.asarray(self.normalized_scores, dtype=np.float64)
            if self.normalized_scores.shape != self.returns.shape:
                raise ValueError(
                    f"EvalResult: normalized_scores must hold one value per episode ({self.returns.shape}), "
                    f"got shape {self.normalized_scores.shape}"
                )
        if self.successes is not None:
            self.successes = np.asarray(self.successes, dtype=bool)
            if self.successes.shape != self.returns.shape:
                raise ValueError(
                    f"EvalResult: successes must hold one value per episode ({self.returns.shape}), "
                    f"got shape {self.successes.shape}"
                )
        if self.routes is not None:
            self.routes = [str(r) for r in self.routes]
            if len(self.routes) != self.returns.size:
                raise ValueError(
                    f"EvalResult: routes must hold one name per episode ({self.returns.size}), got {len(self.routes)}"
                )
        if self.plan_errors is not None:
            self.plan_errors = np.asarray(self.plan_errors, dtype=np.float64)
            if self.plan_errors.shape != self.returns.shape:
                raise ValueError(
                    f"EvalResult: plan_errors must hold one value per episode ({self.returns.shape}), "
                    f"got shape {self.plan_errors.shape}"
                )
        if self.plan_error_per_dim is not None:
            self.plan_error_per_dim = np.asarray(self.plan_error_per_dim, dtype=np.float64)
            if self.plan_error_per_dim.ndim != 1 or self.plan_errors is None:
                raise ValueError(
                    "EvalResult: plan_error_per_dim must be 1-D (one value per state dimension) and come with "
                    f"plan_errors; got shape {self.plan_error_per_dim.shape}"
                )
        if self.returns.shape != self.lengths.shape or self.returns.ndim != 1:
            raise ValueError(
                f"EvalResult: returns and lengths must be 1-D of equal length, got shapes "
                f"{self.returns.shape} and {self.lengths.shape}"
            )

    @property
    def episodes(self) -> int:
        return int(self.returns.size)

    @property
    def return_mean(self) -> float:
        return mean_and_stderr(self.returns)[0]

    @property
    def return_stderr(self) -> float:
        return mean_and_stderr(self.returns)[1]

    @property
    def normalized_score_mean(self) -> float | None:
        return None if self.normalized_scores is None else mean_and_stderr(self.normalized_scores)[0]

    @property
    def normalized_score_stderr(self) -> float | None:
        return None if self.normalized_scores is None else mean_and_stderr(self.normalized_scores)[1]

    @property
    def success_rate_mean(self) -> float | None:
        return None if self.successes is None else mean_and_stderr(self.successes.astype(np.float64))[0]

    @property
    def success_rate_stderr(self) -> float | None:
        return None if self.successes is None else mean_and_stderr(self.successes.astype(np.float64))[1]

    @property
    def normalized_score_ci95(self) -> tuple[float, float] | None:
        """The t-based 95% confidence interval of the mean normalized score over the episodes (NaN for one
        episode); None without normalized scores."""
        return None if self.normalized_scores is None else t_interval(self.normalized_scores)

    @property
    def success_rate_ci95(self) -> tuple[float, float] | None:
        """The Wilson 95% confidence interval of the success rate (a fraction, as ``success_rate_mean``); None for
        envs without successes. Unlike ± s.e. it is not zero-width when every episode succeeded."""
        if self.successes is None:
            return None
        return wilson_interval(int(self.successes.sum()), int(self.successes.size))

    @property
    def time_limit_differs(self) -> bool:
        """True when the episodes ran under another time limit than the catalogue's: their normalized scores are
        then not D4RL's (a score for a shorter episode is lower)."""
        return (self.reference_max_episode_steps is not None
                and self.max_episode_steps != self.reference_max_episode_steps)

    @property
    def time_limit_note(self) -> str:
        """What to say beside a score under another time limit than the catalogue's ("" when it is the same)."""
        return (f"time limit {self.max_episode_steps}, not the catalogue's {self.reference_max_episode_steps}: "
                "not comparable with D4RL" if self.time_limit_differs else "")

    @property
    def route_fractions(self) -> dict[str, float] | None:
        """Fraction of episodes per route name (sorted by name), or None for envs without routes."""
        if self.routes is None or not self.routes:
            return None
        names, counts = np.unique(np.asarray(self.routes, dtype=str), return_counts=True)
        return {str(k): float(c) / len(self.routes) for k, c in zip(names, counts)}

    @property
    def plan_error_mean(self) -> float | None:
        return None if self.plan_errors is None else mean_and_stderr(self.plan_errors)[0]

    @property
    def length_mean(self) -> float:
        return mean_and_stderr(self.lengths)[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary and per-episode values (undefined numbers such as a 1-episode stderr are null)."""
        return {
            "env_name": self.env_name,
            "gym_id": self.gym_id,
            "episodes": self.episodes,
            "normalized_score_mean": _json_float(self.normalized_score_mean),
            "normalized_score_stderr": _json_float(self.normalized_score_stderr),
            "normalized_score_ci95": _json_interval(self.normalized_score_ci95),
            "return_mean": _json_float(self.return_mean),
            "return_stderr": _json_float(self.return_stderr),
            "length_mean": _json_float(self.length_mean),
            "seed": int(self.seed),
            "num_envs": int(self.num_envs),
            "max_episode_steps": None if self.max_episode_steps is None else int(self.max_episode_steps),
            "reference_max_episode_steps": None if self.reference_max_episode_steps is None
            else int(self.reference_max_episode_steps),
            "time_limit_differs": self.time_limit_differs,
            "sampler_seed": None if self.sampler_seed is None else int(self.sampler_seed),
            # a diverged episode's NaN becomes null, as the summary numbers do (save_json refuses NaN)
            "returns": [_json_float(float(r)) for r in self.returns],
            "lengths": [int(n) for n in self.lengths],
            "normalized_scores": None
            if self.normalized_scores is None
            else [_json_float(float(s)) for s in self.normalized_scores],
            "video_path": self.video_path,
            **(
                {}
                if self.successes is None
                else {
                    "success_rate_mean": _json_float(self.success_rate_mean),
                    "success_rate_stderr": _json_float(self.success_rate_stderr),
                    "success_rate_ci95": _json_interval(self.success_rate_ci95),
                    "successes": [bool(x) for x in self.successes],
                }
            ),
            **({} if self.routes is None else {"route_fractions": self.route_fractions, "routes": list(self.routes)}),
            **(
                {}
                if self.plan_errors is None
                else {
                    "plan_error_mean": _json_float(self.plan_error_mean),
                    "plan_errors": [_json_float(float(e)) for e in self.plan_errors],
                }
            ),
            **(
                {}
                if self.plan_error_per_dim is None
                else {"plan_error_per_dim": [_json_float(e) for e in self.plan_error_per_dim]}
            ),
            **({} if self.policy_stats is None else {"policy_stats": dict(self.policy_stats)}),
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as indented JSON, atomically (temporary file, then ``os.replace``)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def scalars(self) -> dict[str, float]:
        """Finite summary numbers for logs (TensorBoard, the trainer's ``eval_fn``); undefined ones are left out."""
        values = {
            "normalized_score": self.normalized_score_mean,
            "normalized_score_stderr": self.normalized_score_stderr,
            "return": self.return_mean,
            "return_stderr": self.return_stderr,
            "length": self.length_mean,
            "plan_error": self.plan_error_mean,
            "success_rate": self.success_rate_mean,
            "success_rate_stderr": self.success_rate_stderr,
        }
        values.update({f"route_{k}": v for k, v in (self.route_fractions or {}).items()})
        return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}

    def __str__(self) -> str:
        def pm(mean: float, err: float, fmt: str) -> str:
            return f"{mean:{fmt}}" + ("" if not math.isfinite(err) else f" ± {err:{fmt}}")

        parts = [f"{self.env_name} ({self.gym_id}), {self.episodes} episode{'s' if self.episodes != 1 else ''}:"]
        if self.normalized_scores is not None:
            note = f" ({self.time_limit_note})" if self.time_limit_differs else ""
            parts.append(f"normalized score {pm(self.normalized_score_mean, self.normalized_score_stderr, '.1f')}"
                         f"{note},")
        if self.successes is not None:
            rate = pm(100 * self.success_rate_mean, 100 * self.success_rate_stderr, ".1f")
            parts.append(f"success rate {rate}%,")
        if self.route_fractions is not None:
            shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.route_fractions.items())
            parts.append(f"routes ({shares}),")
        parts.append(f"return {pm(self.return_mean, self.return_stderr, '.1f')},")
        parts.append(f"length {self.length_mean:.0f}" + (" (mean ± standard error)" if self.episodes > 1 else ""))
        if self.plan_errors is not None:
            parts[-1] += f"; plan error {self.plan_error_mean:.4f} (RMS, normalized units)"
        if self.plan_error_per_dim is not None and self.plan_error_per_dim.size > 1:
            worst = np.argsort(self.plan_error_per_dim)[::-1][:3]
            parts[-1] += ", worst state dims " + ", ".join(f"{i}: {self.plan_error_per_dim[i]:.3f}" for i in worst)
        stats = self.policy_stats or {}
        if stats.get("clipped_actions") and stats.get("actions"):
            parts[-1] += (f"; {100 * stats['clipped_actions'] / stats['actions']:.1f}% of actions clipped into the "
                          "action space")
        if stats.get("far_observations"):
            parts[-1] += f"; {stats['far_observations']} observations far outside the training data"
        return " ".join(parts)
