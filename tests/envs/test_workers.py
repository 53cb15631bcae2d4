"""Rollout workers die with their parent: a killed run leaves no orphan processes behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PARENT = """
import multiprocessing as mp, os, sys, time
from envs.recipes._workers import die_with_parent
def busy(_):
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: two workers' print()s can interleave text and newline
    time.sleep(60)  # a long rollout: without the fix the worker outlives its killed parent until this ends
if __name__ == "__main__":
    pool = mp.get_context("fork").Pool(2, initializer=die_with_parent)
    pool.map_async(busy, range(2), chunksize=1)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited; only its entry waits to be reaped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_pool_workers_exit_when_the_parent_is_killed():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env)
    workers: list[int] = []
    while len(workers) < 2:  # both workers are inside a long task
        line = parent.stdout.readline()
        assert line, "the parent exited before both workers started"
        workers += [int(pid) for pid in line.split()]
    assert workers and all(_alive(p) for p in workers)
    parent.send_signal(signal.SIGKILL)  # no chance to clean up: only the kernel can tell the workers
    parent.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_one_worker_runs_in_the_caller_without_tying_its_life_to_the_callers_parent():
    """With num_workers=1 the episodes run in the calling process: it must not be set to die with its parent (a
    nohup'd script would be killed when its shell exits), and its env is closed afterwards."""
    import ctypes

    import envs.recipes.ars as ars
    from envs.recipes.recipes import load_behavior

    libc = ctypes.CDLL(None, use_errno=True)

    def pdeathsig() -> int:
        value = ctypes.c_int(0)
        libc.prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
        return value.value

    before = pdeathsig()
    returns, lengths = ars.evaluate_policy(load_behavior("hopper", "medium"), "Hopper-v5", episodes=1, horizon=5,
                                           num_workers=1)
    assert len(returns) == 1 and lengths[0] == 5
    assert pdeathsig() == before == 0 and ars._ENV is None
