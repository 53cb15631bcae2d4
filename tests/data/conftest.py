"""Shared fixtures: small hand-made episode stores and an isolated Minari store per test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_rl.data import EpisodeStore

torch.set_num_threads(1)


def make_store(
    lengths: list[int], *, seed: int = 0, terminal_last: tuple[int, ...] = (0,), infos: bool = True
) -> EpisodeStore:
    """Episodes of the given lengths; observations encode (episode, step) in their first two columns so
    tests can check where every window row came from. Episodes in ``terminal_last`` end in a terminal,
    the others in a timeout."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    step = np.concatenate([np.arange(length) for length in lengths])
    obs = np.concatenate([episode[:, None], step[:, None], rng.normal(size=(n, 2))], axis=1).astype(
        np.float32
    )
    ends = np.cumsum(lengths)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    for i, end in enumerate(ends):
        (terminals if i in terminal_last else timeouts)[end - 1] = True
    data = {
        "observations": obs,
        "actions": rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        "rewards": rng.normal(1.0, 0.5, size=n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
        "next_observations": np.roll(obs, -1, axis=0),
    }
    if infos:
        data["infos/goal"] = rng.normal(size=(n, 2))
    return EpisodeStore(data, ends, {"spec_name": "hopper-medium", "note": "made in a test"})


@pytest.fixture
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty Minari store for the test (never the user's real one)."""
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root
