"""Turning a behaviour-training run (ARS or SAC) into the committed behaviour policies of each quality.

* ``<env>-medium.npz``: the snapshot whose noisy return is nearest the middle of the medium band (D4RL's medium
  policies were SAC runs stopped at about a third of expert performance);
* ``<env>-expert.npz``: the best snapshot;
* ``<env>-medium-replay.npz``: the sequence of snapshots from the start of training up to the medium one, replayed
  in order to stand in for D4RL's "replay buffer of the training up to the medium level".

Snapshots are re-evaluated with more episodes than training used before choosing, since single ARS evaluations
are noisy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.recipes.policies import BehaviorPolicy, atomic_savez, policy_from_arrays

__all__ = ["Selection", "Snapshot", "TrainingRun", "load_policy_sequence", "save_policy_sequence", "select_policies"]

@dataclass
class Snapshot:
    """A behaviour-training run's policy at one point (ARS iteration or SAC env step), with its noisy evaluation."""

    iteration: int
    env_steps: int
    policy: BehaviorPolicy
    eval_return: float
    eval_returns: list[float]
    eval_lengths: list[int]


@dataclass
class TrainingRun:
    """What a behaviour-training function returns: its config and the time-ordered snapshots."""

    config: Any
    snapshots: list[Snapshot] = field(default_factory=list)
    env_steps: int = 0
    seconds: float = 0.0

    def best(self) -> Snapshot:
        return max(self.snapshots, key=lambda s: s.eval_return)


MEDIUM_TARGET = 45.0
"""Normalized return aimed at for medium policies (middle of the 30-60 band)."""
MEDIUM_BAND = (35.0, 55.0)
"""Candidates for medium must be inside this band (narrower than 30-60 to leave room for sampling noise)."""


def save_policy_sequence(policies: Sequence[BehaviorPolicy], path: str | os.PathLike) -> Path:
    """Write an ordered list of policies (e.g. training snapshots) into one ``.npz``."""
    if not policies:
        raise ValueError("expected at least one policy, got an empty sequence")
    arrays: dict[str, np.ndarray] = {"count": np.array(len(policies))}
    for i, policy in enumerate(policies):
        arrays.update(policy.to_arrays(prefix=f"p{i:04d}_"))
    return atomic_savez(path, **arrays)


def load_policy_sequence(path: str | os.PathLike) -> list[BehaviorPolicy]:
    """Read the policies written by :func:`save_policy_sequence`, in order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy-sequence file at {path}")
    with np.load(path, allow_pickle=False) as f:
        if "count" not in f:
            raise ValueError(f"{path} is not a policy sequence (no 'count' entry)")
        return [policy_from_arrays(f, prefix=f"p{i:04d}_") for i in range(int(f["count"]))]


@dataclass
class Selection:
    medium: BehaviorPolicy | None
    expert: BehaviorPolicy
    replay: list[BehaviorPolicy]
    scores: dict[int, float]
    """Re-evaluated normalized score per snapshot index."""


def select_policies(
    snapshots: Sequence[BehaviorPolicy],
    evaluate: Callable[[BehaviorPolicy], float],
    *,
    target: float = MEDIUM_TARGET,
    band: tuple[float, float] = MEDIUM_BAND,
    max_candidates: int = 6,
) -> Selection:
    """Choose medium, expert and the replay sequence from time-ordered snapshots.

    ``evaluate(policy) -> normalized score`` is called on a handful of candidates: those whose training-time
    score (``policy.info['score']``) is nearest ``target`` inside ``band`` and the best few.
    """
    if not snapshots:
        raise ValueError("expected at least one snapshot, got none")
    train_scores = np.array([float(p.info.get("score", -np.inf)) for p in snapshots])
    scores: dict[int, float] = {}

    def score(i: int) -> float:
        if i not in scores:
            scores[i] = float(evaluate(snapshots[i]))
            snapshots[i].info["score"] = scores[i]
        return scores[i]

    inside = [i for i in np.argsort(np.abs(train_scores - target)) if band[0] <= train_scores[i] <= band[1]]
    medium_idx = None
    for i in inside[:max_candidates]:
        s = score(int(i))
        if band[0] <= s <= band[1] and (medium_idx is None or abs(s - target) < abs(scores[medium_idx] - target)):
            medium_idx = int(i)
    best = [int(i) for i in np.argsort(-train_scores)[:max_candidates // 2 or 1]]
    expert_idx = max(best, key=score)
    medium = snapshots[medium_idx] if medium_idx is not None else None
    replay = list(snapshots[: medium_idx + 1]) if medium_idx is not None else []
    return Selection(medium=medium, expert=snapshots[expert_idx], replay=replay, scores=scores)
