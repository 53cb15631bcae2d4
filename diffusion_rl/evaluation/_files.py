"""Atomic publication of a finished temporary file under its final name, with ordinary permissions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from diffusion_rl.data._atomic import remove_stale


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """``chmod`` the temporary file (mkstemp makes it 0600) to what ``open`` would give, then ``os.replace``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then publish it as ``path`` (removed on failure),
    so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.stem}.", f".tmp{path.suffix}")  # of killed writes of this file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) under a temporary name in the same folder, then rename it into place."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))
