"""The multi-seed score table: training runs' ``eval.json`` files -> mean ± standard error per (env, algorithm),
as a Markdown table and a bar chart with error bars (what ``scripts/reproduce.py`` writes into docs/results.md).

A cell's score is the mean over training seeds of each seed's mean D4RL-normalized score (each seed scored on
its own evaluation episodes); its error is the standard error over those seeds (undefined for one seed).

A **ledger** (a JSON file kept with the results, e.g. ``docs/results_cells.json``) holds one record per finished
(env, algorithm, seed, preset) cell: its scores, wall time and command. Run folders are large and live on one
machine; the ledger lets a table be resumed on another machine, or rebuilt after the run folders are gone, from
the seeds already finished.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_rl.evaluation._files import write_atomic, write_text_atomic
from diffusion_rl.evaluation.result import mean_and_stderr

__all__ = ["ALGO_TITLES", "LEDGER_KEYS", "METRICS", "ScoreCell", "cell_dir", "cell_record", "collect_scores",
           "ledger_record_for", "plot_score_chart", "read_ledger", "replace_section", "run_preset",
           "score_table_markdown", "update_ledger", "write_text_atomic"]

#: Column titles of the algorithms in tables and charts (unknown names are shown as they are).
ALGO_TITLES = {"decision_diffuser": "Decision Diffuser", "diffuser": "Diffuser", "bc": "BC",
               "diffusion_policy": "Diffusion Policy"}

#: What a cell's number is read from: D4RL-normalized scores for datasets, success rates (in %) for robot tasks,
#: each with the eval.json key of its reference column (the dataset's mean score, the demonstrator's success).
METRICS = {
    "score": ("normalized_score_mean", 1.0, "dataset_mean_normalized_return", 1.0, "D4RL-normalized score"),
    "success": ("success_rate_mean", 100.0, "demo_success_rate", 100.0, "success rate (%)"),
}


#: What a ledger record copies from a cell's ``eval.json`` (those present), beside its identity
#: (env, algo, seed, preset) and ``reproduce.json``'s ``wall_s``, ``command`` and ``finished``.
LEDGER_KEYS = ("episodes", "normalized_score_mean", "normalized_score_stderr", "normalized_scores",
               "dataset_mean_normalized_return", "success_rate_mean", "demo_success_rate", "route_fractions",
               "plan_error_mean", "return_mean", "length_mean")
_IDENTITY = ("env", "algo", "seed", "preset")


def cell_dir(root: str | os.PathLike, env: str, algo: str, seed: int) -> Path:
    """Where the run of one (env, algorithm, seed) cell lives: ``<root>/<env>/<algo>/seed<k>``."""
    return Path(root) / env / algo / f"seed{int(seed)}"


@dataclass
class ScoreCell:
    """The finished seeds of one (env, algorithm) cell."""

    env: str
    algo: str
    scores: list[float] = field(default_factory=list)
    """Per training seed: the mean normalized score of its evaluation episodes."""
    episodes: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    dataset_mean: float | None = None
    """The reference: the dataset's mean normalized score, or (tasks) the demonstrator's success rate in %."""
    routes: list[dict[str, float]] = field(default_factory=list)
    """Per seed, the share of evaluation episodes per route (tasks whose env reports ``info["route"]``)."""
    from_ledger: list[int] = field(default_factory=list)
    """The seeds read from the ledger (no run folder of theirs under the root)."""

    def route_text(self) -> str:
        """Mean share per route over the seeds, e.g. ``left 48% / right 52%`` (empty without routes)."""
        if not self.routes:
            return ""
        names = sorted({k for r in self.routes for k in r if k != "none"} or {k for r in self.routes for k in r})
        return " / ".join(f"{k} {100 * np.mean([r.get(k, 0.0) for r in self.routes]):.0f}%" for k in names)

    @property
    def mean(self) -> float:
        return mean_and_stderr(np.asarray(self.scores))[0]

    @property
    def stderr(self) -> float:
        return mean_and_stderr(np.asarray(self.scores))[1]

    def text(self) -> str:
        if not self.scores:
            return "—"
        err = "" if not math.isfinite(self.stderr) else f" ± {self.stderr:.1f}"
        return f"{self.mean:.1f}{err} ({len(self.scores)} seed{'s' if len(self.scores) != 1 else ''})"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_preset(run_dir: str | os.PathLike) -> str | None:
    """The preset a finished run folder's ``eval.json`` records (None: unfinished, or from before presets were
    recorded)."""
    result = _read_json(Path(run_dir) / "eval.json")
    return result.get("preset") if isinstance(result, dict) else None


def cell_record(run_dir: str | os.PathLike, env: str, algo: str, seed: int, preset: str) -> dict[str, Any] | None:
    """The ledger record of a finished cell (``None`` while its ``eval.json`` is missing or unreadable)."""
    run = Path(run_dir)
    result = _read_json(run / "eval.json")
    if result is None:
        return None
    record: dict[str, Any] = {"env": env, "algo": algo, "seed": int(seed), "preset": preset}
    record.update({k: result[k] for k in LEDGER_KEYS if result.get(k) is not None})
    extra = _read_json(run / "reproduce.json") or {}
    record.update({k: extra[k] for k in ("wall_s", "command", "finished") if k in extra})
    return record


def read_ledger(path: str | os.PathLike | None) -> list[dict[str, Any]]:
    """The records of a ledger file (``[]`` when ``path`` is ``None`` or the file does not exist yet)."""
    if path is None or not Path(path).is_file():
        return []
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as e:
        raise ValueError(f"ledger {path}: not valid JSON ({e}); expected {{\"cells\": [records]}}") from None
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list) or not all(isinstance(r, dict) and all(k in r for k in _IDENTITY) for r in cells):
        raise ValueError(f"ledger {path}: expected {{\"cells\": [records]}}, each record with the keys "
                         f"{', '.join(_IDENTITY)}")
    return cells


def update_ledger(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Add ``records`` to the ledger at ``path``, each replacing the record of the same (env, algo, seed, preset);
    written atomically, sorted, so the file diffs cleanly."""
    merged = {tuple(r[k] for k in _IDENTITY): r for r in read_ledger(path)}
    merged.update({tuple(r[k] for k in _IDENTITY): r for r in records})
    cells = [merged[k] for k in sorted(merged, key=lambda k: tuple(map(str, k)))]
    return write_text_atomic(path, json.dumps({"cells": cells}, indent=1) + "\n")


def ledger_record_for(ledger: Sequence[dict[str, Any]], env: str, algo: str, seed: int,
                      preset: str | None = None) -> dict[str, Any] | None:
    """The ledger's record of one cell (any preset when ``preset`` is ``None``), or ``None``."""
    return next((r for r in ledger if r["env"] == env and r["algo"] == algo and int(r["seed"]) == int(seed)
                 and (preset is None or r["preset"] == preset)), None)


def collect_scores(root: str | os.PathLike, envs: Sequence[str], algos: Sequence[str],
                   seeds: Sequence[int], metric: str = "score", ledger: Sequence[dict[str, Any]] = (),
                   preset: str | None = None) -> dict[tuple[str, str], ScoreCell]:
    """Read ``eval.json`` (and ``reproduce.json``, the wall time) of every finished cell under ``root``, and for a
    seed with no finished run folder there, its ``ledger`` record of the same ``preset``; ``metric``:
    ``"score"`` (D4RL-normalized) or ``"success"`` (success rate in %, robot tasks)."""
    key, scale, ref_key, ref_scale, _ = METRICS[metric]
    cells = {}
    for env in envs:
        for algo in algos:
            cell = ScoreCell(env, algo)
            for seed in seeds:
                run = cell_dir(root, env, algo, seed)
                result = _read_json(run / "eval.json")
                if result is not None and preset is not None and result.get("preset") not in (None, preset):
                    result = None  # another preset's run (one root for both): not this table's
                if result is not None:
                    result = {**result, **(_read_json(run / "reproduce.json") or {})}
                else:
                    result = ledger_record_for(ledger, env, algo, seed, preset)
                    if result is not None and result.get(key) is not None:
                        cell.from_ledger.append(int(seed))
                if result is None or result.get(key) is None:
                    continue
                cell.scores.append(scale * float(result[key]))
                cell.episodes.append(int(result.get("episodes", 0)))
                cell.seeds.append(int(seed))
                if result.get(ref_key) is not None:
                    cell.dataset_mean = ref_scale * float(result[ref_key])
                if result.get("route_fractions"):
                    cell.routes.append({str(k): float(v) for k, v in result["route_fractions"].items()})
                if "wall_s" in result:
                    cell.wall_s.append(float(result["wall_s"]))
            cells[(env, algo)] = cell
    return cells


def score_table_markdown(cells: dict[tuple[str, str], ScoreCell], envs: Sequence[str],
                         algos: Sequence[str], metric: str = "score") -> str:
    """One row per env: the dataset's mean normalized return (tasks: the demonstrator's success rate), then each
    algorithm's mean ± stderr (seeds) and, for tasks with routes, the share of each route; the best algorithm of a
    row in bold."""
    first, reference = ("dataset", "dataset mean") if metric == "score" else ("task", "demonstrator")
    head = [first, reference, *(ALGO_TITLES.get(a, a) for a in algos)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for env in envs:
        row = [cells[(env, a)] for a in algos]
        done = [c.mean for c in row if c.scores]
        best = max(done) if done else None
        dataset_mean = next((c.dataset_mean for c in row if c.dataset_mean is not None), None)
        texts = [f"**{c.text()}**" if c.scores and c.mean == best and len(done) > 1 else c.text() for c in row]
        texts = [t + (f"; routes {c.route_text()}" if c.routes else "") for t, c in zip(texts, row)]
        mean_text = "—" if dataset_mean is None else f"{dataset_mean:.1f}"
        lines.append("| " + " | ".join([env, mean_text, *texts]) + " |")
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the part between ``<!-- name:begin -->`` and ``<!-- name:end -->`` replaced by ``body``
    (the marked section is appended when the markers are absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        return text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    return text.rstrip() + "\n\n" + block + "\n"


def plot_score_chart(cells: dict[tuple[str, str], ScoreCell], envs: Sequence[str], algos: Sequence[str],
                     path: str | os.PathLike, title: str | None = None, metric: str = "score") -> Path:
    """Grouped bars (one group per env, one bar per algorithm) with standard-error bars, and each env's dataset
    mean as a dashed line; a PNG written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 2.2 * len(envs) + 1.5), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(algos))
    for i, algo in enumerate(algos):
        xs, means, errs = [], [], []
        for j, env in enumerate(envs):
            cell = cells[(env, algo)]
            if cell.scores:
                xs.append(j + (i - (len(algos) - 1) / 2) * width)
                means.append(cell.mean)
                errs.append(0.0 if not math.isfinite(cell.stderr) else cell.stderr)
        ax.bar(xs, means, width * 0.95, yerr=errs, capsize=3, label=ALGO_TITLES.get(algo, algo))
    for j, env in enumerate(envs):
        mean = next((cells[(env, a)].dataset_mean for a in algos if cells[(env, a)].dataset_mean is not None), None)
        if mean is not None:
            ax.hlines(mean, j - 0.45, j + 0.45, colors="black", linestyles="dashed",
                      label=("dataset mean" if metric == "score" else "demonstrator") if j == 0 else None)
    ax.set_xticks(range(len(envs)), list(envs))
    ax.set_ylabel(METRICS[metric][4])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return write_atomic(Path(path), lambda f: fig.savefig(f, format="png"))
