"""Discounted returns-to-go per step, computed within episodes (never across an episode end)."""

from __future__ import annotations

import numpy as np

from diffusion_rl.data.store import check_episode_ends

__all__ = ["discounted_values", "returns_to_go"]


def _check(rewards: np.ndarray, episode_ends: np.ndarray, discount: float) -> tuple[np.ndarray, np.ndarray]:
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim > 1 and rewards.size != rewards.shape[0]:
        raise ValueError(f"rewards must hold one value per step, shape [N] or [N, 1], got {rewards.shape}")
    rewards = rewards.reshape(-1)
    # the same rules as EpisodeStore: a decreasing or fractional end would mix or cut episodes silently
    ends = check_episode_ends(episode_ends, num_steps=rewards.size)
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
    successes: np.ndarray | None = None,
) -> np.ndarray:
    """Return labels of both planners (Diffuser's values, Decision Diffuser's returns): returns-to-go with
    ``terminal_penalty`` added to the last reward of every episode that ended in a terminal state (``terminals``
    set at its last step), as the papers' code does for locomotion falls (-100). None or 0 adds nothing.

    ``successes`` (per step, as demonstrations record it): an episode whose last step succeeded ended in its goal,
    not a fall, and gets no penalty (a robot task terminates on success; penalized, its labels would rank the
    windows that reach the goal soonest lowest)."""
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
        fell = terminals[last]
        if successes is not None:
            successes = np.asarray(successes).reshape(-1)
            if successes.size != rewards.size:
                raise ValueError(f"successes has {successes.size} entries; expected {rewards.size}")
            fell = fell & ~successes[last].astype(bool)
        rewards = rewards.copy()
        rewards[last[fell]] += terminal_penalty
    return returns_to_go(rewards, ends, discount)
