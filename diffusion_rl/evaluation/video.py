"""An mp4 writer that appears under its final name only once complete (imageio + ffmpeg)."""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from diffusion_rl._numbers import is_real
from diffusion_rl.data._atomic import remove_stale
from diffusion_rl.evaluation._files import publish

__all__ = ["AtomicVideoWriter", "prepare_offscreen_rendering"]


def prepare_offscreen_rendering() -> None:
    """Select MuJoCo's headless EGL backend on Linux unless the user chose one (MUJOCO_GL=osmesa also works).

    Called only on the rendering path, before a rendering env is made.
    """
    if sys.platform.startswith("linux"):
        os.environ.setdefault("MUJOCO_GL", "egl")


class AtomicVideoWriter:
    """Streams RGB frames ``[H, W, 3] uint8`` into a temporary mp4 and renames it to ``path`` on ``close``."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0) -> None:
        import imageio.v2 as imageio

        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"video_path: expected a file name ending in .mp4, got {str(self.path)!r}")
        if not is_real(fps) or not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"video fps: expected a positive number of frames per second, got {fps!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(self.path.parent, f".{self.path.stem}.", ".tmp.mp4")  # of killed writes of this video
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.mp4", dir=self.path.parent)
        os.close(fd)
        try:
            self._writer = imageio.get_writer(self._tmp, format="FFMPEG", fps=float(fps), macro_block_size=16)
        except BaseException:  # no writer (ffmpeg missing...): no temporary file left behind either
            os.unlink(self._tmp)
            raise
        self.frames = 0

    def append(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
            raise ValueError(f"video frame: expected shape [H, W, 3], got {frame.shape}")
        self._writer.append_data(np.ascontiguousarray(frame[..., :3], dtype=np.uint8))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and move it into place; with no frames nothing is written and ``None`` returned."""
        self._writer.close()
        if self.frames == 0:
            os.unlink(self._tmp)
            return None
        publish(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (after an error)."""
        try:
            self._writer.close()
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
