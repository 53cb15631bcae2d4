"""The multi-seed score table: training runs' ``eval.json`` files -> mean ± standard error per (env, algorithm),
as a Markdown table and a bar chart with error bars (what ``scripts/reproduce.py`` writes into docs/results.md).

A cell's score is the mean over training seeds of each seed's mean D4RL-normalized score (each seed scored on
its own evaluation episodes); its ± is one standard error over those seeds (undefined for one seed), which over 3
seeds is only about a 58% interval: the 95% t-interval over seeds (:attr:`ScoreCell.ci95`) decides the † marker.

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
from diffusion_rl.evaluation.intervals import t_interval
from diffusion_rl.evaluation.result import mean_and_stderr

__all__ = ["ALGO_TITLES", "CELL_SETTINGS", "LEDGER_KEYS", "METRICS", "REFERENCE_TOLERANCE", "ScoreCell",
           "cell_dir", "cell_record", "collect_scores", "episode_counts", "ledger_record_for",
           "plot_score_chart", "read_ledger", "reference_range", "reference_text", "replace_section",
           "run_preset", "score_table_markdown", "table_warnings", "update_ledger", "write_text_atomic"]

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
#: (env, algo, seed, preset) and ``reproduce.json``'s ``wall_s``, ``command`` and ``finished``. Records
#: written before ``eval_seed``, ``num_envs``, ``max_episode_steps`` and ``train_steps`` were kept lack them
#: and still load.
LEDGER_KEYS = ("episodes", "normalized_score_mean", "normalized_score_stderr", "normalized_scores",
               "dataset_mean_normalized_return", "success_rate_mean", "demo_success_rate", "route_fractions",
               "plan_error_mean", "return_mean", "length_mean", "eval_seed", "num_envs", "max_episode_steps",
               "train_steps", "reference_max_episode_steps")
_IDENTITY = ("env", "algo", "seed", "preset")

#: What every seed of a cell should share (else its seeds are not repeats of one experiment): the number
#: of evaluation episodes, the vector-env width (a stochastic policy's episodes depend on it), the time limit
#: and the training steps. ``eval_seed`` is per seed; its ranges are checked for overlap instead.
CELL_SETTINGS = ("episodes", "num_envs", "max_episode_steps", "train_steps")

#: Reference values (the dataset mean) of one row that differ by more than this are shown as a range: the
#: column's 0.1 rounds away anything less.
REFERENCE_TOLERANCE = 0.05


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
    """The reference: the dataset's mean normalized score, or (tasks) the demonstrator's success rate in %
    (the last seed's; every seed's is in ``dataset_means``)."""
    dataset_means: list[float] = field(default_factory=list)
    """Per seed that records one, its reference value (they differ when seeds used differently made
    datasets)."""
    settings: list[dict[str, Any]] = field(default_factory=list)
    """Per seed, what it was scored with (:data:`CELL_SETTINGS`, ``eval_seed`` and the benchmark's time limit
    ``reference_max_episode_steps``, those its record has)."""
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

    @property
    def ci95(self) -> tuple[float, float]:
        """The 95% t-interval of the mean over seeds (t with n - 1 degrees of freedom); NaN for one seed."""
        return t_interval(np.asarray(self.scores))

    def setting_conflicts(self) -> list[str]:
        """What this cell's seeds disagree on, one sentence each: a :data:`CELL_SETTINGS` value that differs
        between seeds (records without it are not counted), and evaluation-seed ranges that overlap (seeds
        scored on shared start states: the spread over seeds misses that noise, so the ± understates it)."""
        where = f"{self.env}/{self.algo}"
        notes = []
        for key in CELL_SETTINGS:
            known = {s: st[key] for s, st in zip(self.seeds, self.settings) if st.get(key) is not None}
            if len(set(known.values())) > 1:
                values = ", ".join(f"seed {s}: {v}" for s, v in known.items())
                notes.append(f"{where}: its seeds differ in {key} ({values})")
        ranges = [(s, int(st["eval_seed"]), int(st["eval_seed"]) + max(int(st.get("episodes") or 1), 1))
                  for s, st in zip(self.seeds, self.settings) if st.get("eval_seed") is not None]
        shared = sorted({(a[0], b[0]) for i, a in enumerate(ranges) for b in ranges[i + 1:]
                         if a[1] < b[2] and b[1] < a[2]})
        if shared:
            pairs = ", ".join(f"{a} and {b}" for a, b in shared)
            notes.append(f"{where}: seeds {pairs} were scored on overlapping evaluation seeds (shared start "
                         "states: the ± understates the uncertainty)")
        return notes

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
                cell.settings.append({k: result[k] for k in (*CELL_SETTINGS, "eval_seed", "reference_max_episode_steps")
                                      if result.get(k) is not None})
                if result.get(ref_key) is not None:
                    cell.dataset_mean = ref_scale * float(result[ref_key])
                    cell.dataset_means.append(cell.dataset_mean)
                if result.get("route_fractions"):
                    cell.routes.append({str(k): float(v) for k, v in result["route_fractions"].items()})
                if "wall_s" in result:
                    cell.wall_s.append(float(result["wall_s"]))
            cells[(env, algo)] = cell
    return cells


def reference_range(row: Sequence[ScoreCell]) -> tuple[float, float] | None:
    """The lowest and highest reference value (dataset mean, demonstrator's rate) the cells of one row
    record, or None when none does: the table and the chart show one value or a range from it by one rule."""
    values = [v for c in row
              for v in (c.dataset_means or ([] if c.dataset_mean is None else [c.dataset_mean]))]
    return (min(values), max(values)) if values else None


def reference_text(span: tuple[float, float] | None) -> str:
    """``"52.2"``; ``"50.4–50.7"`` when the cells' values differ by more than :data:`REFERENCE_TOLERANCE`
    (datasets made differently on different machines); ``"—"`` for none."""
    if span is None:
        return "—"
    lo, hi = span
    return f"{(lo + hi) / 2:.1f}" if hi - lo <= REFERENCE_TOLERANCE else f"{lo:.1f}–{hi:.1f}"


def _apart(best: ScoreCell, other: ScoreCell) -> bool:
    """Whether two cells' 95% t-intervals over seeds are defined and do not overlap."""
    (a_lo, a_hi), (b_lo, b_hi) = best.ci95, other.ci95
    if not all(math.isfinite(x) for x in (a_lo, a_hi, b_lo, b_hi)):
        return False
    return a_lo > b_hi or b_lo > a_hi


def score_table_markdown(cells: dict[tuple[str, str], ScoreCell], envs: Sequence[str],
                         algos: Sequence[str], metric: str = "score") -> str:
    """One row per env: the dataset's mean normalized return (tasks: the demonstrator's success rate; a range
    when the cells record different ones), then each algorithm's mean ± one standard error over seeds and, for
    tasks with routes, the share of each route. The highest mean of a row is in bold (not a test of a
    difference); † marks it when its 95% t-interval over seeds overlaps no other cell's of the row."""
    first, reference = ("dataset", "dataset mean") if metric == "score" else ("task", "demonstrator")
    head = [first, reference, *(ALGO_TITLES.get(a, a) for a in algos)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for env in envs:
        row = [cells[(env, a)] for a in algos]
        done = [c for c in row if c.scores]
        top = max((round(c.mean, 1) for c in done), default=None)
        # ties as printed (one decimal) are all bold: 62.0133 and 62.0 both read 62.0
        best = [c for c in done if round(c.mean, 1) == top] if len(done) > 1 else []
        texts = []
        for c in row:
            text = c.text()
            if any(c is b for b in best):
                apart = len(best) == 1 and all(_apart(c, o) for o in done if o is not c)
                text = f"**{text}**" + (" †" if apart else "")
            texts.append(text + (f"; routes {c.route_text()}" if c.routes else ""))
        lines.append("| " + " | ".join([env, reference_text(reference_range(row)), *texts]) + " |")
    return "\n".join(lines)


def episode_counts(cells: dict[tuple[str, str], ScoreCell]) -> dict[int, list[str]]:
    """Per number of evaluation episodes the seeds were scored on, the seeds (``"env/algo seed k"``); 0
    collects the records that do not say."""
    counts: dict[int, list[str]] = {}
    for (env, algo), cell in cells.items():
        for seed, n in zip(cell.seeds, cell.episodes):
            counts.setdefault(int(n), []).append(f"{env}/{algo} seed {seed}")
    return dict(sorted(counts.items()))


def table_warnings(cells: dict[tuple[str, str], ScoreCell], envs: Sequence[str],
                   algos: Sequence[str]) -> list[str]:
    """What a reader of the table must know that it cannot show: cells whose seeds disagree on their settings
    or share evaluation seeds, and rows whose cells record different reference values (shown as a range)."""
    notes = [note for env in envs for algo in algos for note in cells[(env, algo)].setting_conflicts()]
    for env in envs:
        # time limits: a row's cells scored under different ones, or under another than the benchmark's
        scored = [(a, st) for a in algos for st in cells[(env, a)].settings if "max_episode_steps" in st]
        if len({st["max_episode_steps"] for _, st in scored}) > 1:
            limits = {a: sorted({st["max_episode_steps"] for b, st in scored if b == a}) for a in algos}
            values = "; ".join(f"{ALGO_TITLES.get(a, a)} {', '.join(map(str, vs))}" for a, vs in limits.items() if vs)
            notes.append(f"{env}: its cells were scored under different time limits ({values}): their scores are "
                         "not comparable.")
        other = sorted({(st["max_episode_steps"], st["reference_max_episode_steps"]) for _, st in scored
                        if st.get("reference_max_episode_steps") not in (None, st["max_episode_steps"])})
        if other:
            notes.append(f"{env}: scored with episodes of {', '.join(str(m) for m, _ in other)} steps, not the "
                         f"benchmark's {other[0][1]}: not comparable with D4RL-normalized scores elsewhere.")
        span = reference_range([cells[(env, a)] for a in algos])
        if span is not None and span[1] - span[0] > REFERENCE_TOLERANCE:
            values = "; ".join(
                f"{ALGO_TITLES.get(a, a)} " + ", ".join(f"{v:.2f}" for v in sorted(set(cells[(env, a)].dataset_means)))
                for a in algos if cells[(env, a)].dataset_means)
            notes.append(f"{env}: the cells record different reference values ({values}): datasets made "
                         "differently, or means taken by an earlier rule (before 2026-12-07 they counted the "
                         "episodes a recipe cut short), shown as a range.")
    return notes


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
    """Grouped bars (one group per env, one bar per algorithm) with standard-error bars, and each env's
    dataset mean as a dashed line (two, with the band between, where the cells record different values: the
    table's :func:`reference_range` rule); a one-seed bar has no error bar and is hatched. A PNG written
    atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 2.2 * len(envs) + 1.5), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    from matplotlib.patches import Patch

    width = 0.8 / max(1, len(algos))
    one_seed = False
    handles: list = []
    labels: list[str] = []
    for i, algo in enumerate(algos):
        xs, means, errs, single = [], [], [], []
        for j, env in enumerate(envs):
            cell = cells[(env, algo)]
            if cell.scores:
                xs.append(j + (i - (len(algos) - 1) / 2) * width)
                means.append(cell.mean)
                errs.append(cell.stderr)  # NaN for one seed: no error bar (0 would read as "no spread")
                single.append(len(cell.scores) == 1)
        if not xs:  # no finished seed: no bar, and no legend entry in a colour another algorithm's bars wear
            continue
        color = f"C{i}"  # each algorithm its own colour, whichever algorithms have bars
        bars = ax.bar(xs, means, width * 0.95, yerr=errs, capsize=3, color=color)
        handles.append(Patch(facecolor=color))  # plain: the first bar's hatch (one seed) is not the algorithm's
        labels.append(ALGO_TITLES.get(algo, algo))
        for patch, alone in zip(bars.patches, single):
            if alone:
                patch.set_hatch("//")
                one_seed = True
    label = "dataset mean" if metric == "score" else "demonstrator"
    for j, env in enumerate(envs):
        span = reference_range([cells[(env, a)] for a in algos])
        if span is None:
            continue
        lo, hi = span
        if hi - lo <= REFERENCE_TOLERANCE:
            ax.hlines((lo + hi) / 2, j - 0.45, j + 0.45, colors="black", linestyles="dashed", label=label)
        else:
            ax.hlines([lo, hi], j - 0.45, j + 0.45, colors="black", linestyles="dashed", label=label)
            ax.fill_between([j - 0.45, j + 0.45], lo, hi, color="black", alpha=0.1, linewidth=0)
        label = None  # the legend entry on the first line drawn, whichever env has one
    lines, line_labels = ax.get_legend_handles_labels()  # the reference line's entry
    handles += lines
    labels += line_labels
    if one_seed:  # a legend entry for the hatch (a proxy: no artist on the axes)
        handles.append(Patch(facecolor="none", edgecolor="gray", hatch="//"))
        labels.append("1 seed (no error bar)")
    ax.set_xticks(range(len(envs)), list(envs))
    ax.set_ylabel(METRICS[metric][4])
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles, labels, loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return write_atomic(Path(path), lambda f: fig.savefig(f, format="png"))
