"""Atomic publication of a finished temporary file under its final name, with ordinary permissions."""

from __future__ import annotations

import os


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """``chmod`` the temporary file (mkstemp makes it 0600) to what ``open`` would give, then ``os.replace``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
