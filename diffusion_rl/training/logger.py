"""Run logs: TensorBoard scalars under ``<run_dir>/tb`` and one JSON line per record in ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

__all__ = ["RunLogger", "read_jsonl"]


def _json_value(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


class RunLogger:
    """Writes scalars to TensorBoard and ``metrics.jsonl``; ``resume_step`` drops records from after it.

    When a run resumes from a checkpoint at step ``s``, records the interrupted run wrote after ``s`` would be
    written again; they are removed from the jsonl (atomic rewrite) and TensorBoard is told to purge them.
    """

    def __init__(self, run_dir: str | os.PathLike, *, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy import, only where logs are written

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        if resume_step is not None:
            self._truncate_jsonl(resume_step)
        # TensorBoard drops events at steps >= purge_step: those after the checkpoint, not the checkpoint's own
        purge = None if resume_step is None else resume_step + 1
        self.tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge)
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

    def _truncate_jsonl(self, step: int) -> None:
        if not self.jsonl_path.exists():
            return
        kept = [r for r in read_jsonl(self.jsonl_path) if r.get("step", 0) <= step]
        fd, tmp = tempfile.mkstemp(prefix=".metrics.", suffix=".tmp", dir=self.run_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        os.chmod(tmp, self.jsonl_path.stat().st_mode & 0o777)
        os.replace(tmp, self.jsonl_path)

    def log(self, kind: str, step: int, values: Mapping[str, float]) -> None:
        """Record ``values`` as ``<kind>/<key>`` scalars at ``step`` (kind is e.g. ``train`` or ``eval``)."""
        for key, value in values.items():
            self.tb.add_scalar(f"{kind}/{key}", float(value), global_step=step)
        record = {"kind": kind, "step": int(step)}
        record.update({k: _json_value(v) for k, v in values.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        self.tb.flush()
        self._jsonl.flush()

    def close(self) -> None:
        self.tb.close()
        self._jsonl.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
