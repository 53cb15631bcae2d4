"""What killed writes leave (hidden temporaries of our own naming) is removed by the next write of the same target,
for every writer; other hidden files and other targets' temporaries are left alone."""

from __future__ import annotations

import os
import time

import numpy as np

from diffusion_rl.data import load_episodes, save_d4rl_hdf5, save_minari, save_zarr
from diffusion_rl.evaluation._files import write_text_atomic
from diffusion_rl.evaluation.video import AtomicVideoWriter
from tests.data.conftest import make_store


def _leave(folder, *names, age: float = 3600.0):
    """Hidden leftovers as a killed writer leaves them (files, and a folder with a half-written file in it), last
    written ``age`` seconds ago."""
    paths = []
    then = time.time() - age
    for name in names:
        path = folder / name
        if name.endswith("/"):
            path.mkdir(parents=True)
            (path / "part").write_bytes(b"half")
            os.utime(path / "part", (then, then))
        else:
            path.write_bytes(b"half")
        os.utime(path, (then, then))
        paths.append(path)
    return paths


def test_file_and_folder_writers_remove_their_targets_leftovers(tmp_path):
    store = make_store([20, 20])
    kept = _leave(tmp_path, ".other.zarr.tmp-1234abcd/", ".notes", ".d.zarr.tmpfile",
                  ".eval.seed1.k2j3h4_x.tmp.json", ".clip.seed1.x8y9z0ab.tmp.mp4",  # other targets' (dotted names)
                  ".d1.zarr.tmp-1234abcd/")  # not d[1].zarr's: the name is matched as it is, not as a glob
    kept += _leave(tmp_path, ".d.zarr.tmp-99990000/", ".eval.live0001.tmp.json", age=5)  # writes in progress
    stale = _leave(tmp_path, ".d.zarr.tmp-1234abcd/", ".d.zarr.old-5678ef01/", ".d.hdf5.tmp-00aa11bb",
                   ".eval.k2j3h4_x.tmp.json", ".clip.x8y9z0ab.tmp.mp4", ".d[1].zarr.tmp-1234abcd/")
    save_zarr(store, tmp_path / "d.zarr")
    save_zarr(store, tmp_path / "d[1].zarr")
    save_d4rl_hdf5(store, tmp_path / "d.hdf5")
    write_text_atomic(tmp_path / "eval.json", "{}\n")
    writer = AtomicVideoWriter(tmp_path / "clip.mp4")
    writer.append(np.zeros((16, 16, 3), dtype=np.uint8))
    writer.close()
    assert not any(p.exists() for p in stale), [p.name for p in stale if p.exists()]
    assert all(p.exists() for p in kept), [p.name for p in kept if not p.exists()]
    assert load_episodes(str(tmp_path / "d.zarr")).num_steps == 40
    assert load_episodes(str(tmp_path / "d.hdf5")).num_steps == 40


def test_a_killed_minari_write_is_removed_by_the_next_write_of_that_dataset(tmp_path):
    store = make_store([20, 20])
    root = tmp_path / "store"
    root.mkdir()
    mine = _leave(root, ".tmp-test--small-v0-0123456789ab/")  # the temporary store of test/small-v0
    other = _leave(root, ".tmp-test--other-v0-0123456789ab/")
    before = _leave(root, ".tmp-00112233aabb/", ".tmp-44556677ccdd/")  # named as before: one holds test/small-v0
    (before[0] / "test" / "small-v0").mkdir(parents=True)
    os.utime(before[0], (1e9, 1e9))
    os.utime(before[0] / "test" / "small-v0", (1e9, 1e9))
    os.utime(before[0] / "test", (1e9, 1e9))
    save_minari(store, "test/small-v0", minari_root=root)
    assert not mine[0].exists() and other[0].exists()
    assert not before[0].exists() and before[1].exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-test--small")]  # its own temporary went too
    assert load_episodes("test/small-v0", minari_root=root, progress=False).num_steps == 40
