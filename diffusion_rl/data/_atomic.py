"""Atomic writes: build a file or folder under a temporary name beside its target, then ``os.replace`` it in.

An interrupted write (exception, Ctrl-C) removes the temporary; a killed process leaves only a hidden
``.<name>.tmp-*`` entry, removed by the next write of the same target (:func:`remove_stale`). Either way nothing at
the target path looks like a complete dataset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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


def remove_stale(folder: Path, pattern: str) -> list[Path]:
    """Delete what killed writes left in ``folder`` under the hidden temporary names ``pattern`` (a glob of our own
    naming for one target, e.g. ``.<name>.tmp-*``); called as the next write of that target starts. Returns them."""
    stale = sorted(folder.glob(pattern)) if folder.is_dir() else []
    for path in stale:
        remove_path(path)
    return stale


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
    for leftover in (f".{target.name}.tmp-*", f".{target.name}.old-*"):  # of killed writes of this target
        remove_stale(target.parent, leftover)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        replace_path(tmp, target, overwrite=overwrite)
    finally:
        remove_path(tmp)
