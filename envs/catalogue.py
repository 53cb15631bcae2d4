"""The environment catalogue: named setups such as ``hopper-medium``.

Each entry ties together what a user names on the command line and what the library needs to find data and
score a policy: the gymnasium id used for evaluation, the official Minari and D4RL names of the dataset, the id
of the locally made copy (always under the ``local/`` namespace so it is never mistaken for the official one),
D4RL's reference returns for normalized scores, and the episode length.

This module knows nothing of ``diffusion_rl``; the data and evaluation layers import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = [
    "CATALOGUE",
    "EnvSpec",
    "catalogue_names",
    "get_spec",
    "normalized_score",
]


@dataclass(frozen=True)
class EnvSpec:
    """One named setup of the catalogue (e.g. ``hopper-medium``)."""

    name: str
    """Catalogue name, ``<env>-<quality>``."""
    env: str
    """Environment family: ``hopper``, ``walker2d``, ``halfcheetah`` or ``maze2d``."""
    quality: str
    """Dataset quality or maze layout: ``medium``, ``medium-replay``, ``medium-expert``, ``expert``, ``umaze``..."""
    gym_id: str
    """Gymnasium id of the evaluation environment."""
    minari_id: str | None
    """Official Minari dataset id (download where the machine has a network); None where Minari publishes none
    (its mujoco namespace holds simple, medium and expert datasets: no medium-replay or medium-expert)."""
    d4rl_name: str
    """D4RL dataset name (for users who bring D4RL's HDF5 files)."""
    local_id: str
    """Minari id of the locally made dataset (``local/<env>/<quality>-v0``)."""
    ref_min_score: float
    """D4RL's random-policy reference return."""
    ref_max_score: float
    """D4RL's expert reference return."""
    max_episode_steps: int
    """Episode length (time limit) of the evaluation environment."""
    dataset_steps: int
    """Number of transitions the local recipe collects: D4RL's sizes, except medium-replay, whose D4RL sets hold the
    replay buffer up to the medium policy (about 402k hopper, 302k walker2d, 202k halfcheetah steps) and whose
    local recipe replays its training snapshots over 1M steps."""
    official_matches_env: bool = True
    """Whether the official Minari dataset was recorded in ``gym_id`` itself, so a planner trained on it can be
    scored there. True for the MuJoCo locomotion entries (Minari's ``mujoco/*`` data come from the v5 envs we
    evaluate in). False for maze2d: Minari's ``D4RL/pointmaze/*`` data come from gymnasium-robotics' PointMaze,
    whose maze is centred at the origin with other coordinates, observations and step limits than D4RL's Maze2D
    (our ``Maze2D-*-v1``), so the catalogue entry loads only the local (or a D4RL ``.hdf5``) dataset; load the
    PointMaze data by their Minari id when you mean them."""

    def normalized_score(self, returns: float | Iterable[float] | np.ndarray) -> np.ndarray | float:
        """D4RL-normalized score: ``100 * (R - R_random) / (R_expert - R_random)``."""
        r = np.asarray(returns, dtype=np.float64)
        score = 100.0 * (r - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)
        return float(score) if score.ndim == 0 else score


# D4RL's reference returns (d4rl/infos.py) and episode lengths.
_LOCOMOTION = {
    # env: (gym id, D4RL name prefix, ref min, ref max)
    "hopper": ("Hopper-v5", "hopper", -20.272305, 3234.3),
    "walker2d": ("Walker2d-v5", "walker2d", 1.629008, 4592.3),
    "halfcheetah": ("HalfCheetah-v5", "halfcheetah", -280.178953, 12135.0),
}
_LOCOMOTION_STEPS = {"medium": 1_000_000, "medium-replay": 1_000_000, "medium-expert": 2_000_000, "expert": 1_000_000}
_MAZES = {
    # layout: (gym id, ref min, ref max, episode length, dataset steps)
    "umaze": ("Maze2D-UMaze-v1", 23.85, 161.86, 300, 1_000_000),
    "medium": ("Maze2D-Medium-v1", 13.13, 277.39, 600, 2_000_000),
    "large": ("Maze2D-Large-v1", 6.7, 273.99, 800, 4_000_000),
}


_MINARI_QUALITIES = ("medium", "expert")
"""The qualities of this catalogue that Minari's mujoco namespace publishes (``mujoco/<env>/<quality>-v0``)."""


def _build() -> dict[str, EnvSpec]:
    specs: dict[str, EnvSpec] = {}
    for env, (gym_id, d4rl, lo, hi) in _LOCOMOTION.items():
        for quality, steps in _LOCOMOTION_STEPS.items():
            name = f"{env}-{quality}"
            specs[name] = EnvSpec(
                name=name,
                env=env,
                quality=quality,
                gym_id=gym_id,
                minari_id=f"mujoco/{env}/{quality}-v0" if quality in _MINARI_QUALITIES else None,
                d4rl_name=f"{d4rl}-{quality}-v2",
                local_id=f"local/{env}/{quality}-v0",
                ref_min_score=lo,
                ref_max_score=hi,
                max_episode_steps=1000,
                dataset_steps=steps,
            )
    for layout, (gym_id, lo, hi, length, steps) in _MAZES.items():
        name = f"maze2d-{layout}"
        specs[name] = EnvSpec(
            name=name,
            env="maze2d",
            quality=layout,
            gym_id=gym_id,
            minari_id=f"D4RL/pointmaze/{layout}-v2",
            d4rl_name=f"maze2d-{layout}-v1",
            local_id=f"local/maze2d/{layout}-v0",
            ref_min_score=lo,
            ref_max_score=hi,
            max_episode_steps=length,
            dataset_steps=steps,
            official_matches_env=False,
        )
    return specs


CATALOGUE: dict[str, EnvSpec] = _build()


def catalogue_names() -> list[str]:
    """All catalogue names, sorted."""
    return sorted(CATALOGUE)


def get_spec(name: str) -> EnvSpec:
    """Look a catalogue entry up by name; accepts the D4RL name too (``hopper-medium-v2``).

    Raises ``KeyError`` listing the valid names when there is no such entry.
    """
    if name in CATALOGUE:
        return CATALOGUE[name]
    for spec in CATALOGUE.values():
        # an official Minari id names the entry only where its data come from the entry's env (a PointMaze id
        # is not Maze2D's: scored there, it would run in the wrong maze against the wrong reference returns)
        ids = (spec.d4rl_name, spec.local_id) + ((spec.minari_id,) if spec.official_matches_env and spec.minari_id
                                                 else ())
        if name in ids:
            return spec
    raise KeyError(f"unknown environment {name!r}; valid catalogue names: {', '.join(catalogue_names())}")


def normalized_score(name: str, returns: float | Iterable[float] | np.ndarray) -> np.ndarray | float:
    """D4RL-normalized score of raw episode return(s) for the catalogue entry ``name``."""
    return get_spec(name).normalized_score(returns)
