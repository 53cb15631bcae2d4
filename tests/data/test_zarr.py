"""Zarr replay buffers (Diffusion Policy's layout): write/read equality, v2 files, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from diffusion_rl.data import load_episodes, load_zarr, save_zarr
from diffusion_rl.data import zarr_store as zarr_module
from tests.data.conftest import make_store


def test_write_then_read_is_equal(tmp_path: Path) -> None:
    store = make_store([5, 3, 4])
    path = save_zarr(store, tmp_path / "buffer.zarr")
    root = zarr.open_group(str(path), mode="r")
    assert root.metadata.zarr_format == 3
    np.testing.assert_array_equal(root["meta/episode_ends"][:], [5, 8, 12])
    assert root["data/infos/goal"].shape == (12, 2)  # slashes become nested groups
    back = load_episodes(path)
    assert set(back.keys()) == set(store.keys())
    for key in store.keys():
        np.testing.assert_array_equal(back[key], store[key], err_msg=key)
        assert back[key].dtype == store[key].dtype
    np.testing.assert_array_equal(back.episode_ends, store.episode_ends)
    assert back.metadata["note"] == "made in a test" and back.metadata["format"] == "zarr"


def test_reads_diffusion_policy_v2_buffers_with_renamed_keys(tmp_path: Path) -> None:
    path = tmp_path / "pusht_replay.zarr"
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("data/state", data=np.arange(10.0).reshape(5, 2))
    root.create_array("data/action", data=np.ones((5, 2), dtype=np.float32))
    root.create_array("meta/episode_ends", data=np.array([2, 5]))
    store = load_zarr(path, rename={"state": "observations", "action": "actions"})
    np.testing.assert_array_equal(store["observations"], np.arange(10.0).reshape(5, 2))
    np.testing.assert_array_equal(store.episode_ends, [2, 5])
    with pytest.raises(ValueError, match="not in"):
        load_zarr(path, rename={"obs": "observations"})


def test_missing_layout_parts_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.zarr"
    zarr.open_group(str(path), mode="w").create_array("data/x", data=np.zeros(3))
    with pytest.raises(ValueError, match="meta/episode_ends"):
        load_episodes(path)


def test_interrupted_write_leaves_nothing_loadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = zarr_module._write_array

    def failing(root, name, array):
        calls.append(name)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        original(root, name, array)

    monkeypatch.setattr(zarr_module, "_write_array", failing)
    target = tmp_path / "buffer.zarr"
    with pytest.raises(RuntimeError, match="disk full"):
        save_zarr(make_store([4, 4]), target)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        load_episodes(target)
