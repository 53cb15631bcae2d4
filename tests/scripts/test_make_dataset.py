"""scripts/make_dataset.py end to end (subprocess, tiny num_steps) and a real Ctrl-C in the middle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import minari
import pytest

from tests.scripts.cli import run_lines

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_dataset.py"


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, MINARI_DATASETS_PATH=str(root), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _args(tmp_path: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *overrides, f"hydra.run.dir={tmp_path / 'hydra'}"]


def test_script_makes_maze2d_dataset_in_minari_store(tmp_path):
    root = tmp_path / "store"  # from $MINARI_DATASETS_PATH: no minari_root given
    proc = subprocess.run(_args(tmp_path, "env=maze2d-umaze", "num_steps=600", "seed=3",
                                f"hdf5={tmp_path / 'copy.hdf5'}"),
                          env=_env(root), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "600 steps, 2 episodes" in proc.stdout and "normalized return" in proc.stdout
    assert "making local/maze2d/umaze-v0" in proc.stderr  # the progress bar
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        ds = minari.load_dataset("local/maze2d/umaze-v0")
        assert ds.total_steps == 600
        assert ds.storage.metadata["seed"] == 3
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH")
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
    assert (tmp_path / "copy.hdf5").is_file()
    # a second run refuses to replace it without overwrite=true
    again = subprocess.run(_args(tmp_path, "env=maze2d-umaze", "num_steps=300"), env=_env(root), cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "overwrite" in again.stderr


def test_script_unknown_env_lists_valid_names(tmp_path):
    proc = subprocess.run(_args(tmp_path, "env=hopper-mediocre"), env=_env(tmp_path), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "hopper-medium" in text and "maze2d-umaze" in text and "walker2d-expert" in text


def test_ctrl_c_leaves_no_dataset(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.Popen(_args(tmp_path, "env=maze2d-umaze", "num_steps=2000000"), env=_env(root), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            # as from a terminal: a background job of a non-interactive shell (`cmd &`, e.g. a CI
                            # runner) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while "making local" not in "".join(err) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert "making local" in "".join(err), "".join(err)[-2000:]
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("make_dataset.py did not stop on Ctrl-C")
    assert proc.returncode != 0
    assert not (root / "local" / "maze2d" / "umaze-v0").exists()
    leftovers = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    assert not [p for p in leftovers if p.suffix in (".hdf5", ".json") and "umaze" in str(p)]


def test_quiet_run_still_says_where_the_dataset_went(tmp_path):
    root = tmp_path / "store"
    copy = tmp_path / "copy.hdf5"
    proc = subprocess.run(_args(tmp_path, "env=maze2d-umaze", "num_steps=300", "num_workers=1", "progress=false",
                                f"hdf5={copy}"),
                          env=_env(root), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dataset = root / "local" / "maze2d" / "umaze-v0"
    assert dataset.is_dir() and copy.is_file()
    assert f"wrote: {dataset}; D4RL-layout copy: {copy}" in proc.stdout.splitlines(), proc.stdout
    assert "making local" not in proc.stderr  # no progress bar


def test_bad_values_name_the_key_before_any_work(tmp_path):
    cases = [("num_steps=abc", "error: num_steps: expected null or an integer >= 1, got 'abc'"),
             ("num_steps=0", "error: num_steps: expected null or an integer >= 1, got 0"),
             ("seed=-1", "error: seed: expected an integer >= 0, got -1"),
             ("num_workers=two", "error: num_workers: expected an integer >= 1, got 'two'"),
             ("overwrite=maybe", "error: overwrite: expected true or false, got 'maybe'"),
             ("progress=2", "error: progress: expected true or false, got 2")]
    lines = [_args(tmp_path, "env=maze2d-umaze", arg)[2:] for arg, _ in cases]
    for (arg, message), proc in zip(cases, run_lines(SCRIPT, lines, ROOT, _env(tmp_path / "store")), strict=True):
        assert proc.returncode != 0 and message in proc.stderr, (arg, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "store").exists()
