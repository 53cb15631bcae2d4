"""Atomic writes: build a file or folder under a temporary name beside its target, then ``os.replace`` it in.

An interrupted write (exception, Ctrl-C) removes the temporary; a killed process leaves only a hidden
``.<name>.tmp-*`` entry, removed by the next write of the same target (:func:`remove_stale`). Either way nothing at
the target path looks like a complete dataset.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "remove_path", "remove_stale", "replace_path"]


def remove_path(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


RANDOM_PART = {"mkstemp": "[a-z0-9_]{8}", "hex8": "[0-9a-f]{8}", "hex12": "[0-9a-f]{12}"}
"""The random middle of our temporary names: ``tempfile.mkstemp``'s 8 characters, or ``uuid`` hex digits."""

STALE_AFTER_S = 600.0
"""A temporary nothing has been written to for this long is a killed write's (a live writer keeps touching it)."""


def _last_written(path: Path) -> float:
    """The newest modification time of ``path`` and, for a folder, of everything in it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return newest


def remove_stale(folder: Path, prefix: str, suffix: str = "", random_part: str = "mkstemp", *,
                 holding: str | None = None, min_age: float = STALE_AFTER_S) -> list[Path]:
    """Delete what killed writes left in ``folder``: entries named exactly ``prefix`` + a random part of our own
    naming (:data:`RANDOM_PART`) + ``suffix`` (no other target's name can match), that nothing has written to
    for ``min_age`` seconds (another process's write of the same target in progress is left alone), and, with
    ``holding``, that hold that relative path. Called as the next write of the target starts; returns them."""
    if not folder.is_dir():
        return []
    name = re.compile(re.escape(prefix) + RANDOM_PART[random_part] + re.escape(suffix))
    now, stale = time.time(), []
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):  # gone meanwhile: another process cleaned it
            if (name.fullmatch(entry.name) and (holding is None or (entry / holding).exists())
                    and now - _last_written(entry) >= min_age):
                remove_path(entry)
                stale.append(entry)
    return sorted(stale)


def replace_path(tmp: Path, target: Path, *, overwrite: bool) -> None:
    """Move ``tmp`` onto ``target`` (same filesystem); an existing target only when ``overwrite``."""
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
        if target.is_dir() and not target.is_symlink():
            # os.replace cannot replace a non-empty folder: move the old one aside first, then delete it.
            trash = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, trash)
            os.replace(tmp, target)
            remove_path(trash)
            return
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it onto ``target``, on failure delete it."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (f".{target.name}.tmp-", f".{target.name}.old-"):  # of killed writes of this target
        remove_stale(target.parent, leftover, random_part="hex8")
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        replace_path(tmp, target, overwrite=overwrite)
    finally:
        remove_path(tmp)
