#!/usr/bin/env python
"""Reproduce the score table: ``python scripts/reproduce.py [envs=[...]] [algos=[...]] [seeds=3] [key=value ...]``.

    python scripts/reproduce.py                                       # 3 envs x 3 algorithms x 3 seeds
    python scripts/reproduce.py envs=[hopper-medium] algos=[decision_diffuser,bc] seeds=3 jobs=2
    python scripts/reproduce.py preset=paper                          # on a GPU
    python scripts/reproduce.py envs=[] tasks=[point-obstacle,metaworld-reach] jobs=2   # robot tasks

Robot tasks (``tasks``, trained by ``scripts/train_policy.py`` with ``task_algos``) get their own table of success
rates (with the demonstrator's own rate and, on multimodal tasks, the share of each route) in the section
``<!-- reproduce-tasks:begin -->`` ... ``<!-- reproduce-tasks:end -->`` and the chart ``task_chart``.

Every (env, algorithm, seed) cell is one ``scripts/train_planner.py`` run (the command a user would type), in
``<root>/<env>/<algo>/seed<k>`` with its log in ``train.log`` there; finished cells (with ``eval.json``) are
skipped, interrupted ones resume from their last checkpoint. The table (mean ± standard error over training
seeds, each seed's score the mean over its evaluation episodes; the dataset's mean normalized return beside it)
goes into ``results`` between ``<!-- reproduce:begin -->`` and ``<!-- reproduce:end -->`` with the command, the
hardware and the wall times, and a bar chart to ``chart``. Keys: configs/reproduce.yaml.

With ``ledger=docs/results_cells.json`` every finished cell is also recorded in that JSON file (scores, wall time,
command), and a cell the ledger already holds for the same preset counts as done: the table can be resumed on
another machine, or rebuilt after the run folders are gone, from the seeds already finished. A record made by
another command than this table's is refused, as a run folder is; one without a command is named as unchecked.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra
from _cli import CONFIG_DIR, check_overrides, run_main, sampling_overrides_as_additions, to_plain
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "scripts" / "train_planner.py"
TRAIN_POLICY = ROOT / "scripts" / "train_policy.py"


def _names(kind: str, values: list[str], valid: set[str], allow_empty: bool = False) -> list[str]:
    unknown = [v for v in values if v not in valid]
    if (not values and not allow_empty) or unknown:
        sys.exit(f"error: {kind}={values}: expected a non-empty list of {', '.join(sorted(valid))}"
                 + (f" (unknown: {unknown})" if unknown else ""))
    return list(values)


def seed_list(seeds: object) -> list[int]:
    """``seeds=3`` -> [0, 1, 2]; ``seeds=[1,2]`` -> those seeds (to split the cells between machines)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        return list(range(seeds))
    if isinstance(seeds, list) and seeds and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                 for x in seeds) and len(set(seeds)) == len(seeds):
        return list(seeds)
    sys.exit(f"error: seeds={seeds!r}: expected the number of training seeds (an integer >= 1) or a list of "
             "distinct seeds >= 0")


# train_planner.py / train_policy.py keys every cell's command sets itself -> the reproduce key that sets them
# (a user override of one would come last and win: every seed cell the same run, or a table header that is wrong)
OWNED_KEYS = {
    "env": "envs=[...]", "task": "tasks=[...]", "algo": "algos=[...] (or task_algos=[...])",
    "seed": "seeds=N or seeds=[...]", "preset": "preset=...", "device": "device=...", "run_dir": "root=...",
    "eval.episodes": "eval_episodes=N (task_eval_episodes=N for robot tasks)",
    "trainer.progress": "nothing (each cell writes its train.log without a progress bar)",
    "trainer.resume": "nothing (a cell with checkpoints resumes by itself)",
}


def check_cell_overrides(overrides: object, algo_overrides: object, run_algos: list[str]) -> None:
    """Exit with one line when ``overrides`` or ``algo_overrides`` are not lists of ``key=value`` strings, set a
    key the cells' commands set themselves (:data:`OWNED_KEYS`), or name an algorithm this run does not train."""
    if not isinstance(algo_overrides, dict):
        sys.exit(f"error: algo_overrides: expected a mapping algorithm -> list of key=value overrides, "
                 f"got {algo_overrides!r}")
    unknown = sorted(set(algo_overrides) - set(run_algos))
    if unknown:
        sys.exit(f"error: algo_overrides: {', '.join(map(str, unknown))} is not an algorithm this run trains; "
                 f"expected keys among {', '.join(sorted(set(run_algos)))} (the algos / task_algos with cells)")
    for where, items in (("overrides", overrides),
                         *((f"algo_overrides.{a}", v) for a, v in algo_overrides.items())):
        if not isinstance(items, list) or not all(isinstance(x, str) and "=" in x for x in items):
            sys.exit(f"error: {where}: expected a list of key=value strings, e.g. [\"trainer.max_steps=1000\"], "
                     f"got {items!r}")
        for item in items:
            key = item.split("=", 1)[0].lstrip("+~")
            owned = next((k for k in OWNED_KEYS if k == key or k.startswith(key + ".")), None)
            if owned is not None:
                what = owned if owned == key else f"{key} (and so {owned})"
                sys.exit(f"error: {where}: {item!r} sets {what}, which reproduce.py sets for every cell; use "
                         f"{OWNED_KEYS[owned]} instead")


def resolved_preset(preset: str) -> str:
    """``auto`` resolves as train_planner.py does: paper on CUDA, cpu otherwise."""
    if preset != "auto":
        return preset
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def cell_command(env: str, algo: str, seed: int, run_dir: Path, cfg: DictConfig, task: bool = False) -> list[str]:
    """The ``train_planner.py`` command of one cell (``train_policy.py`` for a robot task), resuming when the run
    folder holds checkpoints."""
    episodes = int(cfg.task_eval_episodes if task else cfg.eval_episodes)
    args = [f"{'task' if task else 'env'}={env}", f"algo={algo}", f"seed={seed}", f"preset={cfg.preset}",
            f"device={cfg.device}", f"run_dir={run_dir}", f"eval.episodes={episodes}", "trainer.progress=false"]
    if any((run_dir / "checkpoints").glob("step_*")):
        args.append("trainer.resume=true")
    args += list(to_plain(cfg.overrides) or [])
    args += list((to_plain(cfg.algo_overrides) or {}).get(algo, []))
    if not task:
        args = _without_unused_sampling(env, algo, args)
    return [sys.executable, str(TRAIN_POLICY if task else TRAIN), *args]


_NOTED: set[tuple[str, str, str]] = set()


def _without_unused_sampling(env: str, algo: str, args: list[str]) -> list[str]:
    """The cell's arguments without sampler settings its model never reads (``algo_overrides`` give one list for
    every env: a Diffuser's ``num_plans`` has no effect on maze2d's goal-conditioned Diffuser, whose run refuses it
    when typed), each left out with a note."""
    import yaml
    from omegaconf import OmegaConf

    from diffusion_rl.algos import ALGORITHMS

    def setting(arg: str, section: str) -> tuple[str, str] | None:
        key, _, value = arg.lstrip("+").partition("=")
        return (key[len(section):], value) if key.startswith(section) else None

    model = dict(to_plain(OmegaConf.load(Path(CONFIG_DIR) / "algo" / f"{algo}.yaml").get("model", {})) or {})
    env_cfg = to_plain(OmegaConf.load(Path(CONFIG_DIR) / "env" / f"{env}.yaml"))
    model.update(((env_cfg.get("algo_overrides") or {}).get(algo) or {}).get("model") or {})
    for arg in args:
        if (given := setting(arg, "algo.model.")) is not None:
            model[given[0]] = yaml.safe_load(given[1])
    unused = ALGORITHMS[algo].unused_sampling(model)
    kept = []
    for arg in args:
        key = next((k for section in ("algo.sampling.", "sampling.") if (k := setting(arg, section))), None)
        if key is not None and key[0] in unused:
            if (env, algo, arg) not in _NOTED:
                _NOTED.add((env, algo, arg))
                print(f"note: {env} / {algo}: {arg} left out ({unused[key[0]]})", flush=True)
            continue
        kept.append(arg)
    return kept


def cell_made_by(run_dir: Path) -> list[str] | None:
    """The command ``reproduce.json`` records for a finished cell, or None (a cell made by hand)."""
    record = run_dir / "reproduce.json"
    try:
        return shlex.split(json.loads(record.read_text())["command"]) if record.is_file() else None
    except (ValueError, KeyError, TypeError):
        return None


def ledger_made_by(entry: dict) -> list[str] | None:
    """The command a ledger record says made its cell, or None (a record reconstructed without one)."""
    command = entry.get("command")
    try:
        return shlex.split(command) if isinstance(command, str) and command.strip() else None
    except ValueError:
        return None


def _settings(command: list[str]) -> list[str]:
    """A cell command's settings: its arguments without the interpreter and script, the run folder (the cell
    itself, wherever the root now lies), what does not change the result (resuming, the progress bar) and the
    preset and device as spelt (preset=auto and preset=cpu are one run on a CPU; the resolved preset is checked
    on its own)."""
    skip = ("run_dir=", "trainer.resume=", "trainer.progress=", "preset=", "device=")
    return [a for a in command[2:] if not a.startswith(skip)]


def run_cell(command: list[str], run_dir: Path, threads: int | None) -> tuple[int, float]:
    """Run one cell's training; its output goes to ``<run_dir>/train.log``. Returns (exit code, wall seconds of
    this run); ``reproduce.json`` records the cell's total wall time over all its runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(run_dir / "train.log", "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        # in the caller's folder: relative paths in the overrides (dataset=data/h.hdf5) mean what they mean here
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - start
    if code == 0:
        # a resumed cell adds to the wall time its earlier runs recorded (training + evaluation in all)
        earlier = run_dir / "reproduce.json"
        previous = json.loads(earlier.read_text()).get("wall_s", 0.0) if earlier.is_file() else 0.0
        record = {"command": shlex.join(command), "wall_s": previous + wall,
                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        from diffusion_rl.evaluation.table import write_text_atomic

        write_text_atomic(run_dir / "reproduce.json", json.dumps(record, indent=2) + "\n")
    return code, wall


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores{gpu}; Python {platform.python_version()}, " \
           f"torch {torch.__version__}"


def episodes_text(cells: dict, expected: int) -> tuple[str, list[str]]:
    """The header's "each seed scored on N evaluation episodes", N read from the cells themselves (not from the
    config), and the warnings: seeds scored on mixed numbers of episodes, or on another number than
    ``expected`` (``eval_episodes``), or whose records do not say."""
    from diffusion_rl.evaluation.table import episode_counts

    counts = episode_counts(cells)
    known = sorted(n for n in counts if n > 0)
    warnings = []
    if not known:
        text = "no finished seed records its number of evaluation episodes" if counts else \
            f"each seed to be scored on {expected} evaluation episodes"
    elif len(known) == 1:
        text = f"each seed scored on {known[0]} evaluation episodes"
    else:
        text = f"each seed scored on {known[0]}-{known[-1]} evaluation episodes (mixed)"
        warnings.append("Mixed numbers of evaluation episodes: " + "; ".join(
            f"{n}: {', '.join(counts[n])}" for n in known) + ".")
    other = [f"{', '.join(counts[n])} ({n})" for n in known if n != expected]
    if other:
        warnings.append(f"Scored on another number of episodes than eval_episodes={expected}: "
                        + "; ".join(other) + ".")
    if counts.get(0):
        warnings.append("Records without their number of episodes: " + ", ".join(counts[0]) + ".")
    return text, warnings


def report(cfg: DictConfig, envs: list[str], algos: list[str], seeds: list[int], argv: list[str],
           metric: str = "score", ledger: list[dict] | None = None) -> str:
    """The table (``metric``: ``score`` for datasets, ``success`` for robot tasks), command, hardware, wall times
    and the chart link; seeds without a run folder under ``root`` are read from the ``ledger`` records. The
    header states the episodes the cells were scored on (from the cells) and what ± and bold mean; what the table
    cannot show (mixed settings, shared evaluation seeds, different dataset means) follows it as warnings."""
    from diffusion_rl.evaluation.table import (
        cell_dir,
        collect_scores,
        ledger_record_for,
        plot_score_chart,
        score_table_markdown,
        table_warnings,
    )

    preset = resolved_preset(cfg.preset)
    cells = collect_scores(cfg.root, envs, algos, seeds, metric=metric, ledger=ledger or [], preset=preset)
    table = score_table_markdown(cells, envs, algos, metric=metric)
    expected = int(cfg.eval_episodes if metric == "score" else cfg.task_eval_episodes)
    episodes, warnings = episodes_text(cells, expected)
    warnings += table_warnings(cells, envs, algos)
    chart = cfg.chart if metric == "score" else cfg.task_chart
    walls = [f"{e}/{a}: {sum(c.wall_s) / len(c.wall_s) / 60:.0f} min per seed"
             for (e, a), c in cells.items() if c.wall_s]
    lines = [
        f"Command: `{shlex.join(['python', 'scripts/reproduce.py', *(a.removeprefix('++') for a in argv)])}`",
        "",
        f"Hardware: {hardware()}. Preset `{preset}`; {episodes}; a cell is the mean ± one standard error over "
        "training seeds (over 3 seeds ± 1 s.e. is about a 58% interval, not 95%); bold: the highest mean of a "
        "row, not a tested difference († where its 95% t-interval over seeds overlaps no other cell's).",
        "",
        table,
    ]
    if warnings:
        lines += ["", *(f"Warning: {w}" for w in warnings)]
    if walls:
        lines += ["", "Wall time (train + evaluation, one cell): " + "; ".join(walls) + "."]
    borrowed, unchecked = [], []
    for (e, a), c in cells.items():
        if c.from_ledger:
            borrowed.append(f"{e}/{a} seed{'s' if len(c.from_ledger) > 1 else ''} {', '.join(map(str, c.from_ledger))}")
            unchecked += [f"{e}/{a} seed {s}" for s in c.from_ledger
                          if ledger_made_by(ledger_record_for(ledger or [], e, a, s, preset) or {}) is None]
    # run folders finished without reproduce's record of their command (made by hand): counted, and named
    by_hand = [f"{e}/{a} seed {s}" for (e, a), c in cells.items() for s in c.seeds
               if s not in c.from_ledger and cell_made_by(cell_dir(cfg.root, e, a, s)) is None]
    if by_hand:
        lines += ["", "Run folders without reproduce's record of their command (made by hand), unchecked against "
                  f"this table's settings: {', '.join(by_hand)}."]
    if borrowed:
        lines += ["", f"Read from the ledger `{cfg.ledger}` (finished earlier, run folders not under the root): "
                  + "; ".join(borrowed) + "."
                  + (f" Unchecked against this table's settings (no command recorded): {', '.join(unchecked)}."
                     if unchecked else "")]
    text = "\n".join(lines)
    if chart:
        plot_score_chart(cells, envs, algos, chart, metric=metric,
                         title=f"preset {resolved_preset(cfg.preset)}: mean ± s.e. over training seeds")
        where = Path(cfg.results).resolve().parent if cfg.results else Path.cwd()
        text += f"\n\n![score chart]({os.path.relpath(Path(chart).resolve(), where)})"
    return text


@hydra.main(config_path=CONFIG_DIR, config_name="reproduce", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffusion_rl.algos import ALGORITHMS
    from diffusion_rl.evaluation.table import (
        METRICS,
        cell_dir,
        cell_record,
        ledger_record_for,
        read_ledger,
        replace_section,
        run_preset,
        update_ledger,
        write_text_atomic,
    )
    from envs import task_names
    from envs.catalogue import CATALOGUE

    tasks = _names("tasks", list(cfg.tasks), set(task_names()), allow_empty=True)
    envs = _names("envs", list(cfg.envs), set(CATALOGUE), allow_empty=bool(tasks))
    algos = _names("algos", list(cfg.algos), set(ALGORITHMS))
    task_algos = _names("task_algos", list(cfg.task_algos), set(ALGORITHMS))
    seeds = seed_list(to_plain(cfg.seeds))
    check_cell_overrides(to_plain(cfg.overrides) or [], to_plain(cfg.algo_overrides) or {},
                         (algos if envs else []) + (task_algos if tasks else []))
    if isinstance(cfg.jobs, bool) or not isinstance(cfg.jobs, int) or cfg.jobs < 1:
        sys.exit(f"error: jobs={cfg.jobs!r}: expected an integer >= 1")
    for key in ("eval_episodes", "task_eval_episodes"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            sys.exit(f"error: {key}={cfg[key]!r}: expected an integer >= 1")
    try:
        ledger = read_ledger(cfg.ledger)
    except ValueError as e:
        sys.exit(f"error: {e}")
    preset = resolved_preset(cfg.preset)
    todo, done, borrowed, finished = [], 0, 0, []
    for names, algo_names, is_task in ((envs, algos, False), (tasks, task_algos, True)):
        key = METRICS["success" if is_task else "score"][0]
        for env in names:
            for algo in algo_names:
                for seed in seeds:
                    run_dir = cell_dir(cfg.root, env, algo, seed).resolve()
                    entry = ledger_record_for(ledger, env, algo, seed, preset)
                    other = run_preset(run_dir)
                    if other not in (None, preset):
                        sys.exit(f"error: {run_dir} holds a preset={other} run and this table is preset={preset}: "
                                 "use another root= for each preset")
                    if (run_dir / "eval.json").is_file():
                        made = cell_made_by(run_dir)
                        now = cell_command(env, algo, seed, run_dir, cfg, task=is_task)
                        if made is not None and _settings(made) != _settings(now):
                            sys.exit(f"error: {run_dir} was made by another command than this table's (made: "
                                     f"{shlex.join(_settings(made))}; now: {shlex.join(_settings(now))}): use "
                                     "another root= for other settings, or remove the cell's folder to rerun it")
                        done += 1
                        finished.append((env, algo, seed, run_dir))
                    elif entry is not None and entry.get(key) is not None:
                        made = ledger_made_by(entry)  # checked as a run folder's is; a record without: named
                        now = cell_command(env, algo, seed, run_dir, cfg, task=is_task)
                        if made is not None and _settings(made) != _settings(now):
                            sys.exit(f"error: the ledger {cfg.ledger} holds {env}/{algo}/seed{seed} made by another "
                                     f"command than this table's (made: {shlex.join(_settings(made))}; now: "
                                     f"{shlex.join(_settings(now))}): use another ledger= for other settings, or "
                                     "remove the record to rerun the cell")
                        done, borrowed = done + 1, borrowed + 1
                    else:
                        todo.append((env, algo, seed, run_dir,
                                     cell_command(env, algo, seed, run_dir, cfg, task=is_task)))
    print(f"{len(todo) + done} cells: {done} done{f' ({borrowed} in the ledger)' if borrowed else ''}, "
          f"{len(todo)} to run ({cfg.jobs} at a time)")
    if cfg.dry_run:
        for *_, command in todo:
            print(shlex.join(command))
        return
    if cfg.report_only:
        todo = []  # the table of the finished cells; unfinished ones show as missing seeds
    threads = 1 if cfg.jobs > 1 else None
    failed = []
    ledger_lock = threading.Lock()

    def record(cells: list[tuple[str, str, int, Path]]) -> None:
        """Write the finished cells' records into the ledger (one writer at a time)."""
        records = [r for e, a, s, d in cells if (r := cell_record(d, e, a, s, preset)) is not None]
        if records:
            with ledger_lock:
                update_ledger(cfg.ledger, records)

    def work(item):
        env, algo, seed, run_dir, command = item
        print(f"start  {env} / {algo} / seed {seed}: log {run_dir / 'train.log'}", flush=True)
        code, wall = run_cell(command, run_dir, threads)
        status = "done" if code == 0 else f"FAILED (exit {code})"
        print(f"{status:6s} {env} / {algo} / seed {seed} in {wall / 60:.1f} min", flush=True)
        if code != 0:
            failed.append((env, algo, seed, run_dir))
        elif cfg.ledger:
            record([(env, algo, seed, run_dir)])

    with ThreadPoolExecutor(max_workers=int(cfg.jobs)) as pool:
        list(pool.map(work, todo))
    if cfg.ledger:
        record(finished)  # cells finished before this run (or by another one) join the ledger too
        ledger = read_ledger(cfg.ledger)
    sections = []
    if envs:
        sections.append(("reproduce", report(cfg, envs, algos, seeds, sys.argv[1:], ledger=ledger), cfg.chart))
    if tasks:
        sections.append(("reproduce-tasks", report(cfg, tasks, task_algos, seeds, sys.argv[1:], metric="success",
                                                   ledger=ledger), cfg.task_chart))
    for name, text, chart in sections:
        print("\n" + text)
        if cfg.results:
            path = Path(cfg.results)
            old = path.read_text() if path.is_file() else "# Results\n"
            write_text_atomic(path, replace_section(old, name, text))
            print(f"\nwrote: {path}" + (f" and {chart}" if chart else ""))
    if failed:
        sys.exit("error: cells failed (see their train.log): "
                 + "; ".join(f"{e}/{a}/seed{s}: {d / 'train.log'}" for e, a, s, d in failed))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sampling_overrides_as_additions(sys.argv[1:], ("algo_overrides",))]
    check_overrides("reproduce")
    run_main(main, "finished cells are kept; rerun the same command to continue")
