"""Behaviour policies for the dataset recipes, in plain numpy.

A :class:`LinearPolicy` is what Augmented Random Search (Mania et al. 2018, variant V2) trains: a linear map of the
observation normalized by running statistics, ``a = M (s - mu) / sigma``, clipped to the action bounds. It is tiny
(a few hundred floats), so trained weights are committed as ``.npz`` files and making a dataset needs no training
and no torch. For data collection the policy acts stochastically: Gaussian action noise, clipped to the bounds,
as D4RL's SAC behaviour policies sampled their actions.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LinearPolicy", "atomic_savez"]


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write a compressed ``.npz`` under a temporary name, then ``os.replace`` it (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@dataclass
class LinearPolicy:
    """``a = clip(M (s - obs_mean) / obs_std + noise, low, high)``; acts on one observation or a batch."""

    weights: np.ndarray
    """``[A, S]`` matrix ``M``."""
    obs_mean: np.ndarray
    """``[S]`` running mean of the observations seen in training."""
    obs_std: np.ndarray
    """``[S]`` running standard deviation (floored, never zero)."""
    action_low: np.ndarray
    action_high: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    """Provenance: env id, training iteration, evaluation return, noise used when evaluated..."""

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float64)
        if self.weights.ndim != 2:
            raise ValueError(f"weights must have shape [A, S], got shape {self.weights.shape}")
        a, s = self.weights.shape
        self.obs_mean = np.asarray(self.obs_mean, dtype=np.float64).reshape(-1)
        self.obs_std = np.asarray(self.obs_std, dtype=np.float64).reshape(-1)
        self.action_low = np.broadcast_to(np.asarray(self.action_low, dtype=np.float64), (a,)).copy()
        self.action_high = np.broadcast_to(np.asarray(self.action_high, dtype=np.float64), (a,)).copy()
        for name, arr in (("obs_mean", self.obs_mean), ("obs_std", self.obs_std)):
            if arr.shape != (s,):
                raise ValueError(f"{name} must have shape [{s}] to match weights [{a}, {s}], got {arr.shape}")
        if np.any(self.obs_std <= 0):
            raise ValueError("obs_std must be positive everywhere")

    @property
    def obs_dim(self) -> int:
        return self.weights.shape[1]

    @property
    def action_dim(self) -> int:
        return self.weights.shape[0]

    def mean_action(self, obs: np.ndarray) -> np.ndarray:
        """Unclipped deterministic action for ``obs`` of shape ``[S]`` or ``[N, S]``."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.shape[-1:] != (self.obs_dim,) or obs.ndim not in (1, 2):
            raise ValueError(f"observation must have shape [{self.obs_dim}] or [N, {self.obs_dim}], got {obs.shape}")
        return ((obs - self.obs_mean) / self.obs_std) @ self.weights.T

    def act(
        self, obs: np.ndarray, noise_std: float = 0.0, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Action(s) for ``obs``; with ``noise_std > 0`` adds Gaussian noise (needs ``rng``) before clipping."""
        action = self.mean_action(obs)
        if noise_std > 0:
            if rng is None:
                raise ValueError("a numpy Generator `rng` is required when noise_std > 0")
            action = action + noise_std * rng.standard_normal(action.shape)
        return np.clip(action, self.action_low, self.action_high)

    __call__ = act

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Arrays that :meth:`from_arrays` turns back into the same policy."""
        return {
            f"{prefix}weights": self.weights.astype(np.float32),
            f"{prefix}obs_mean": self.obs_mean.astype(np.float32),
            f"{prefix}obs_std": self.obs_std.astype(np.float32),
            f"{prefix}action_low": self.action_low.astype(np.float32),
            f"{prefix}action_high": self.action_high.astype(np.float32),
            f"{prefix}info": np.array(json.dumps(self.info, sort_keys=True)),
        }

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str = "") -> LinearPolicy:
        """Inverse of :meth:`to_arrays` (``arrays`` is a dict or an open ``np.load`` file)."""
        missing = [k for k in ("weights", "obs_mean", "obs_std", "action_low", "action_high")
                   if f"{prefix}{k}" not in arrays]
        if missing:
            raise ValueError(f"policy arrays lack {', '.join(prefix + m for m in missing)}")
        info_key = f"{prefix}info"
        info = json.loads(str(arrays[info_key])) if info_key in arrays else {}
        return cls(
            weights=arrays[f"{prefix}weights"],
            obs_mean=arrays[f"{prefix}obs_mean"],
            obs_std=arrays[f"{prefix}obs_std"],
            action_low=arrays[f"{prefix}action_low"],
            action_high=arrays[f"{prefix}action_high"],
            info=info,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Atomically write the policy to an ``.npz`` file."""
        return atomic_savez(path, **self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> LinearPolicy:
        """Read a policy written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no policy file at {path}")
        with np.load(path, allow_pickle=False) as f:
            return cls.from_arrays(f)
