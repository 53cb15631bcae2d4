"""Fixtures shared by the script tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from diffusion_rl.data.make import make_local_dataset


@pytest.fixture(autouse=True)
def _sys_path_restored():
    """The script tests (and the scripts they import) put scripts/ on sys.path: each test's change is undone after
    it, so no test leaves another one a changed import path."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@pytest.fixture(scope="session")
def hopper_hdf5(tmp_path_factory) -> Path:
    """A small D4RL-layout file of real Hopper-v5 data (the hopper-medium recipe, 3000 steps)."""
    tmp = tmp_path_factory.mktemp("hopper")
    path = tmp / "hopper-small.hdf5"
    make_local_dataset("hopper-medium", num_steps=3000, hdf5_path=path, minari_root=tmp / "store", progress=False,
                       num_workers=1)
    return path
