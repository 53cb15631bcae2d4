"""Learning-rate schedules: a registry of multipliers of the base lr, with linear warm-up in front."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["LR_SCHEDULES", "lr_multiplier", "make_lr_scheduler"]


def _constant(progress: float, min_ratio: float) -> float:
    return 1.0


def _cosine(progress: float, min_ratio: float) -> float:
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _linear(progress: float, min_ratio: float) -> float:
    return min_ratio + (1.0 - min_ratio) * (1.0 - progress)


LR_SCHEDULES: dict[str, Callable[[float, float], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "linear": _linear,
}
"""Decay shapes after warm-up: ``f(progress in [0, 1], min_ratio) -> multiplier``."""


def lr_multiplier(
    step: int, *, schedule: str, warmup_steps: int, max_steps: int, min_ratio: float = 0.0
) -> float:
    """Multiplier of the base lr for the optimizer step ``step`` (0-based)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {sorted(LR_SCHEDULES)}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return LR_SCHEDULES[schedule](progress, min_ratio)


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str,
    warmup_steps: int,
    max_steps: int,
    min_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepping once per optimizer step; its state (the step count) is checkpointable."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {sorted(LR_SCHEDULES)}")

    def fn(step: int) -> float:
        return lr_multiplier(
            step, schedule=schedule, warmup_steps=warmup_steps, max_steps=max_steps, min_ratio=min_ratio
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
