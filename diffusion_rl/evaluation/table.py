"""The multi-seed score table: training runs' ``eval.json`` files -> mean ± standard error per (env, algorithm),
as a Markdown table and a bar chart with error bars (what ``scripts/reproduce.py`` writes into docs/results.md).

A cell's score is the mean over training seeds of each seed's mean D4RL-normalized score (each seed scored on
its own evaluation episodes); its error is the standard error over those seeds (undefined for one seed).
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

__all__ = ["ALGO_TITLES", "METRICS", "ScoreCell", "cell_dir", "collect_scores", "plot_score_chart", "replace_section",
           "score_table_markdown", "write_text_atomic"]

#: Column titles of the algorithms in tables and charts (unknown names are shown as they are).
ALGO_TITLES = {"decision_diffuser": "Decision Diffuser", "diffuser": "Diffuser", "bc": "BC",
               "diffusion_policy": "Diffusion Policy"}

#: What a cell's number is read from: D4RL-normalized scores for datasets, success rates (in %) for robot tasks,
#: each with the eval.json key of its reference column (the dataset's mean score, the demonstrator's success).
METRICS = {
    "score": ("normalized_score_mean", 1.0, "dataset_mean_normalized_return", 1.0, "D4RL-normalized score"),
    "success": ("success_rate_mean", 100.0, "demo_success_rate", 100.0, "success rate (%)"),
}


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


def collect_scores(root: str | os.PathLike, envs: Sequence[str], algos: Sequence[str],
                   seeds: Sequence[int], metric: str = "score") -> dict[tuple[str, str], ScoreCell]:
    """Read ``eval.json`` (and ``reproduce.json``, the wall time) of every finished cell under ``root``;
    ``metric``: ``"score"`` (D4RL-normalized) or ``"success"`` (success rate in %, robot tasks)."""
    key, scale, ref_key, ref_scale, _ = METRICS[metric]
    cells = {}
    for env in envs:
        for algo in algos:
            cell = ScoreCell(env, algo)
            for seed in seeds:
                run = cell_dir(root, env, algo, seed)
                result = _read_json(run / "eval.json")
                if result is None or result.get(key) is None:
                    continue
                cell.scores.append(scale * float(result[key]))
                cell.episodes.append(int(result.get("episodes", 0)))
                cell.seeds.append(int(seed))
                if result.get(ref_key) is not None:
                    cell.dataset_mean = ref_scale * float(result[ref_key])
                if result.get("route_fractions"):
                    cell.routes.append({str(k): float(v) for k, v in result["route_fractions"].items()})
                record = _read_json(run / "reproduce.json") or {}
                if "wall_s" in record:
                    cell.wall_s.append(float(record["wall_s"]))
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
