"""Training checkpoints: atomic writes, discovery of the latest one, pruning of old ones.

A checkpoint is a ``torch.save`` file of tensors and plain Python values only (loaded with
``weights_only=True``), named ``step_XXXXXXXX.pt`` inside ``<run_dir>/checkpoints``. It is written under a
temporary name and renamed with ``os.replace``, so a file with the final name is always complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "check_fresh_run",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "lock_run_dir",
    "prune_checkpoints",
    "remove_stale_temporaries",
    "save_checkpoint",
]

_NAME = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked: damaged or foreign, or a resume it refuses (other run settings,
    another seed, past max_steps), or a run folder that already holds another run's. A user error, told in one line
    by the scripts."""


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """``<directory>/step_<step>.pt`` with the step zero-padded so names sort by step."""
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``directory`` as ``(step, path)``, oldest first (temporary files are ignored)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


_LOCKS: dict[str, list[Any]] = {}  # resolved run_dir -> [open lock file, holders in this process]


def lock_run_dir(run_dir: str | os.PathLike) -> Callable[[], None]:
    """Hold ``run_dir/.lock`` (``flock``) for this process and return the function that lets it go; a folder that
    another live process holds is refused with :class:`CheckpointError`: two runs in one folder would write over
    and prune each other's checkpoints (a rerun while a detached earlier run still trains). Re-entrant within a
    process; the operating system drops the lock when the process ends, even when it is killed. Where ``flock`` is
    missing (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return lambda: None
    folder = Path(run_dir)
    key = str(folder.resolve())
    held = _LOCKS.get(key)
    if held is not None:
        held[1] += 1
    else:
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / ".lock", "a+")  # noqa: SIM115 - held open for as long as the run holds the folder
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "pid unknown"
            f.close()
            raise CheckpointError(f"run_dir {key!r} is in use by another process ({holder}): two runs in one folder "
                                  "would write over each other's checkpoints; wait for it to end (or stop it), or use "
                                  "another run_dir") from None
        except OSError as err:  # a file system without locks (NFS without lockd, Lustre, sshfs): run unprotected
            f.close()
            warnings.warn(f"run_dir {key!r}: its file system does not lock files ({err}), so a second run in the "
                          "same folder would not be refused", stacklevel=2)
            return lambda: None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        held = _LOCKS[key] = [f, 1]
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        held[1] -= 1
        if held[1] == 0:
            _LOCKS.pop(key, None)
            held[0].close()  # closing the file lets the lock go

    return release


def check_fresh_run(directory: str | os.PathLike, resume_option: str = "resume=True") -> None:
    """:class:`CheckpointError` if ``directory`` already holds checkpoints: a run that does not resume must not train over
    (and prune) another run's; ``resume_option`` is how the caller's user asks to continue instead."""
    existing = list_checkpoints(directory)
    if existing:
        raise CheckpointError(f"{str(directory)!r} already holds checkpoints (latest step {existing[-1][0]}); expected "
                         f"{resume_option} to continue that run, or a new run_dir")


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step, or ``None``."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # a failing cleanup (read-only folder) must not hide why the save failed
            os.unlink(tmp)
        if isinstance(err, (OSError, RuntimeError)):  # torch's writer reports a full disk as "unexpected pos"
            free = ""
            with contextlib.suppress(OSError):
                free = f" ({shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free on its disk)"
            raise OSError(f"could not write checkpoint {str(path)!r}: {err}{free}; earlier checkpoints are "
                          "kept") from err
        raise
    return path


def _publish(tmp: str, path: Path) -> None:
    """Give the finished temporary file (0600 from mkstemp) ordinary permissions, then rename it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint onto the CPU; a missing or damaged file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a diffusion_rl checkpoint: {exc}") from exc
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a diffusion_rl training checkpoint (no model/step)")
    return state


_TEMPORARY = re.compile(r"^\.step_\d+\.pt\..+\.tmp$")


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted :func:`save_checkpoint` left (``.step_*.pt.*.tmp``, our naming
    only); returns them. Called when a run starts, before anything is written."""
    d = Path(directory)
    if not d.is_dir():
        return []
    stale = [p for p in d.iterdir() if _TEMPORARY.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints; returns the deleted paths."""
    if keep < 1:
        raise ValueError(f"keep: expected an integer >= 1, got {keep!r}")
    found = list_checkpoints(directory)
    removed = [p for _, p in found[:-keep]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
