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


def _buffer(path: Path, ends, *, rows: int = 20, fmt: int = 3, extra: dict | None = None, chunks=None) -> Path:
    root = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    obs = np.arange(1, 2 * rows + 1, dtype=np.float32).reshape(rows, 2)
    root.create_array("data/state", data=obs, chunks=chunks or obs.shape)
    root.create_array("data/action", data=np.arange(1, rows + 1, dtype=np.float32).reshape(rows, 1))
    for key, value in (extra or {}).items():
        root.create_array(key, data=value)
    root.create_array("meta/episode_ends", data=np.asarray(ends))
    return path


@pytest.mark.parametrize("fmt, chunk_file", [(3, "c/2/0"), (2, "2.0")])
def test_a_chunk_missing_from_another_writers_file_is_told_not_refused(tmp_path: Path, fmt: int, chunk_file: str,
                                                                       caplog) -> None:
    # zarr-python 3 (and save_zarr before it set every chunk) skips chunks equal to the fill value: the file may be
    # whole, so a missing chunk is a warning naming it, and reads as the fill value
    path = _buffer(tmp_path / "chunks.zarr", [10, 20], fmt=fmt, chunks=(5, 2))
    (path / "data" / "state" / chunk_file).unlink()
    with caplog.at_level("WARNING", logger="diffusion_rl.data.zarr_store"):
        store = load_zarr(path)
    assert "chunks.zarr: 1 of the 4 chunks of 'data/state' were never written, so they read as the fill value 0.0" \
        in caplog.text
    np.testing.assert_array_equal(store["state"][10:15], 0.0)
    np.testing.assert_array_equal(store["state"][15], [31.0, 32.0])


def test_a_chunk_missing_from_a_file_save_zarr_wrote_is_refused(tmp_path: Path) -> None:
    path = save_zarr(make_store([6, 5]), tmp_path / "ours.zarr")
    assert "diffusion_rl_all_chunks_written" not in load_zarr(path).metadata  # a file fact, not store metadata
    chunk = next(p for p in (path / "data" / "observations").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()  # an interrupted copy
    with pytest.raises(ValueError, match=r"ours.zarr: 1 of the 1 chunks of 'data/observations' were never written.*"
                                         r"so it is incomplete \(an interrupted copy\)"):
        load_zarr(path)
    store = load_zarr(path, allow_missing_chunks=True)  # read as it is
    np.testing.assert_array_equal(store["observations"], 0.0)


def test_flags_and_rewards_whose_all_fill_chunks_were_skipped_load(tmp_path: Path) -> None:
    # zarr-python 3 skips chunks equal to the fill value by default: all-False timeouts, sparse zero rewards
    path = _buffer(tmp_path / "sparse.zarr", [10, 20], extra={"data/timeouts": np.zeros(20, bool)})
    root = zarr.open_group(str(path), mode="a")
    root.create_array("data/reward", shape=(20,), chunks=(5,), dtype="f4", fill_value=0.0)[15:] = 1.0
    assert root["data/reward"].nchunks_initialized == 1
    store = load_zarr(path, rename={"reward": "rewards"})
    np.testing.assert_array_equal(store["rewards"], [0.0] * 15 + [1.0] * 5)
    assert not store["timeouts"].any()


def test_save_zarr_writes_chunks_equal_to_the_fill_value(tmp_path: Path) -> None:
    # zarr-python 3 skips all-zero chunks by default; load_zarr would take them for an incomplete file
    store = make_store([5, 3], infos=False)
    store = type(store)({**dict(store.items()), "actions": np.zeros((8, 2), np.float32)}, store.episode_ends)
    path = save_zarr(store, tmp_path / "zeros.zarr")
    assert zarr.open_group(str(path), mode="r")["data/actions"].nchunks_initialized == 1
    np.testing.assert_array_equal(load_zarr(path)["actions"], 0.0)


def test_rows_past_the_last_episode_end_are_recorded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _buffer(tmp_path / "short.zarr", [5, 12])
    with caplog.at_level("WARNING", logger="diffusion_rl.data.zarr_store"):
        store = load_zarr(path)
    assert store.num_steps == 12 and store.metadata["dropped_partial_steps"] == 8
    assert "dropped 8 rows" in caplog.text
    assert "dropped_partial_steps" not in load_zarr(_buffer(tmp_path / "full.zarr", [5, 20])).metadata


def test_arrays_of_different_lengths_are_refused(tmp_path: Path) -> None:
    path = _buffer(tmp_path / "mism.zarr", [10, 20], extra={"data/img": np.zeros((25, 2))})
    with pytest.raises(ValueError,
                       match=r"mism.zarr: .*same number of rows, got \{'action': 20, 'img': 25, 'state': 20\}"):
        load_zarr(path)
    with pytest.raises(ValueError, match=r"ends at step 25 but the data/ arrays hold only 20 rows"):
        load_zarr(_buffer(tmp_path / "long.zarr", [10, 25]))


def test_episode_ends_must_be_whole_numbers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"whole numbers.*\[5\.9, 12\.7\]"):
        load_zarr(_buffer(tmp_path / "float.zarr", np.array([5.9, 12.7, 20.0])))
    store = load_zarr(_buffer(tmp_path / "whole.zarr", np.array([5.0, 20.0])))
    np.testing.assert_array_equal(store.episode_ends, [5, 20])
    with pytest.raises(ValueError, match=r"meta/episode_ends.*strictly increasing"):
        load_zarr(_buffer(tmp_path / "down.zarr", [10, 5, 20]))


def test_rename_onto_an_existing_key_is_refused(tmp_path: Path) -> None:
    path = _buffer(tmp_path / "collide.zarr", [10, 20], extra={"data/observations": np.ones((20, 5))})
    with pytest.raises(ValueError, match=r"'observations' <- \['observations', 'state'\]"):
        load_zarr(path, rename={"state": "observations"})
    store = load_zarr(path, rename={"state": "observations", "observations": "extra"})  # moved out of the way
    assert store["observations"].shape == (20, 2) and store["extra"].shape == (20, 5)


def test_non_finite_values_are_refused_by_key_and_file(tmp_path: Path) -> None:
    path = _buffer(tmp_path / "nan.zarr", [10, 20])
    zarr.open_array(str(path / "data" / "state"), mode="r+")[13, 0] = np.nan
    with pytest.raises(ValueError, match=r"'observations' holds a non-finite value \(nan\) at row 13 "
                                         r"\(episode 1, step 3\) in .*nan\.zarr"):
        load_zarr(path, rename={"state": "observations"})


def test_an_empty_episode_ends_is_refused_not_read_as_an_empty_store(tmp_path: Path) -> None:
    """Every row was dropped as "an unfinished last episode"; training then failed on an empty store that named
    no file."""
    with pytest.raises(ValueError, match=r"empty.zarr: meta/episode_ends is empty; expected the end index"):
        load_zarr(_buffer(tmp_path / "empty.zarr", np.zeros(0, dtype=np.int64)))
