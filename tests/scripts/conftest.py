"""Fixtures shared by the script tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusion_rl.data.make import make_local_dataset


@pytest.fixture(scope="session")
def hopper_hdf5(tmp_path_factory) -> Path:
    """A small D4RL-layout file of real Hopper-v5 data (the hopper-medium recipe, 3000 steps)."""
    tmp = tmp_path_factory.mktemp("hopper")
    path = tmp / "hopper-small.hdf5"
    make_local_dataset("hopper-medium", num_steps=3000, hdf5_path=path, minari_root=tmp / "store", progress=False,
                       num_workers=1)
    return path
