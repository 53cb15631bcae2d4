"""Discounted returns-to-go per step, computed within episodes (never across an episode end)."""

from __future__ import annotations

import numpy as np

__all__ = ["discounted_values", "returns_to_go"]


def _check(rewards: np.ndarray, episode_ends: np.ndarray, discount: float) -> tuple[np.ndarray, np.ndarray]:
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    ends = np.asarray(episode_ends, dtype=np.int64).reshape(-1)
    if ends.size and ends[-1] != rewards.size:
        raise ValueError(
            f"episode_ends[-1] must equal the number of rewards ({rewards.size}), got {ends[-1]}"
        )
    if not 0.0 <= discount <= 1.0:
        raise ValueError(f"discount must lie in [0, 1], got {discount}")
    return rewards, ends


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray, discount: float = 1.0) -> np.ndarray:
    """``G_t = sum_{k >= t, same episode} discount^(k - t) * r_k`` for every step (float64)."""
    rewards, ends = _check(rewards, episode_ends, discount)
    out = rewards.copy()
    starts = np.concatenate([[0], ends[:-1]])
    lengths = ends - starts
    # Backward recursion G_t = r_t + discount * G_{t+1}, run for all episodes at once, one step offset at a
    # time.
    for offset in range(1, int(lengths.max()) if lengths.size else 0):
        alive = lengths > offset
        pos = ends[alive] - 1 - offset
        out[pos] += discount * out[pos + 1]
    return out


def discounted_values(
    rewards: np.ndarray,
    episode_ends: np.ndarray,
    discount: float = 0.997,
    *,
    terminals: np.ndarray | None = None,
    terminal_penalty: float | None = None,
) -> np.ndarray:
    """Return labels of both planners (Diffuser's values, Decision Diffuser's returns): returns-to-go with
    ``terminal_penalty`` added to the last reward of every episode that ended in a terminal state (``terminals``
    set at its last step), as the papers' code does for locomotion falls (-100). None or 0 adds nothing."""
    rewards, ends = _check(rewards, episode_ends, discount)
    if terminal_penalty is not None and not np.isfinite(terminal_penalty):
        raise ValueError(f"terminal_penalty must be a finite number or None, got {terminal_penalty!r}")
    if terminal_penalty and ends.size:
        if terminals is None:
            raise ValueError(
                "terminal_penalty needs the terminals array (this dataset has none); set terminal_penalty=0"
            )
        terminals = np.asarray(terminals, dtype=bool).reshape(-1)
        if terminals.size != rewards.size:
            raise ValueError(f"terminals has {terminals.size} entries; expected {rewards.size}")
        last = ends - 1
        rewards = rewards.copy()
        rewards[last[terminals[last]]] += terminal_penalty
    return returns_to_go(rewards, ends, discount)
