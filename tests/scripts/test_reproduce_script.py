"""scripts/reproduce.py end to end with tiny budgets: cells trained by train_planner.py, skipped when done,
the table and chart written into a results file between its markers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.scripts.cli import run_lines

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "reproduce.py"


def _run(tmp: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp / "store"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               DIFFUSION_RL_DEMOS=str(tmp / "demos"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_trains_every_cell_once_and_writes_table_and_chart(tmp_path, hopper_hdf5):
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nintro kept\n\n<!-- reproduce:begin -->\nold table\n<!-- reproduce:end -->\n"
                       "\ntail kept\n")
    (tmp_path / "h.hdf5").symlink_to(hopper_hdf5)
    args = [  # paths relative to the folder it runs in (the cells ran in the repository, which read them there)
        "envs=[hopper-medium]", "algos=[decision_diffuser,bc]", "seeds=2", "jobs=2", "preset=cpu",
        "root=runs", f"results={results}", f"chart={tmp_path / 'chart.png'}", "eval_episodes=2",
        'overrides=["dataset=h.hdf5","trainer.max_steps=4","eval.max_episode_steps=5","eval.plot=false",'
        '"eval.num_envs=2"]',
        'algo_overrides={decision_diffuser:["algo.model.dim=8","algo.model.horizon=8","algo.model.num_steps=10",'
        '"algo.sampling.steps=2","algo.sampling.warm_start_t=5","trainer.batch_size=8"]}',
    ]
    proc = _run(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 cells: 0 done, 4 to run" in proc.stdout
    scores = {}
    for algo in ("decision_diffuser", "bc"):
        for seed in (0, 1):
            run = tmp_path / "runs" / "hopper-medium" / algo / f"seed{seed}"
            result = json.loads((run / "eval.json").read_text())
            assert result["seed"] == seed and result["algo"] == algo and result["episodes"] == 2
            assert "$ " in (run / "train.log").read_text() and (run / "reproduce.json").is_file()
            scores.setdefault(algo, []).append(result["normalized_score_mean"])
    text = results.read_text()
    assert text.startswith("# Results\n\nintro kept") and text.rstrip().endswith("tail kept")
    assert "old table" not in text and text.count("<!-- reproduce:begin -->") == 1
    row = next(line for line in text.splitlines() if line.startswith("| hopper-medium"))
    dd = np.asarray(scores["decision_diffuser"])
    assert f"{dd.mean():.1f} ± {dd.std(ddof=1) / np.sqrt(2):.1f} (2 seeds)" in row
    assert "(2 seeds)" in row.split("|")[4]  # the BC column
    assert "Hardware:" in text and "Preset `cpu`" in text and "python scripts/reproduce.py 'envs=[hopper-medium]'" in text
    assert (tmp_path / "chart.png").stat().st_size > 1000 and "![score chart](chart.png)" in text
    assert not list(tmp_path.glob("*.log"))  # no Hydra log in the working directory

    again = _run(tmp_path, *args)  # every cell is done: nothing is trained again
    assert again.returncode == 0 and "4 cells: 4 done, 0 to run" in again.stdout, again.stderr[-2000:]
    assert results.read_text().count("| hopper-medium") == 1
    # a cell without eval.json runs again (resuming from its checkpoint) and its wall time adds up
    cell = tmp_path / "runs" / "hopper-medium" / "bc" / "seed1"
    first_wall = json.loads((cell / "reproduce.json").read_text())["wall_s"]
    (cell / "eval.json").unlink()
    third = _run(tmp_path, *args)
    assert third.returncode == 0 and "4 cells: 3 done, 1 to run" in third.stdout, third.stderr[-2000:]
    assert "trainer.resume=true" in (cell / "train.log").read_text()
    assert json.loads((cell / "reproduce.json").read_text())["wall_s"] > first_wall
    assert (cell / "eval.json").is_file()
    # report_only: the table of what is finished, nothing trained (seed 2 of each algorithm is missing)
    report = _run(tmp_path, *[a.replace("seeds=2", "seeds=3") for a in args], "report_only=true")
    assert report.returncode == 0 and "6 cells: 4 done, 2 to run" in report.stdout, report.stderr[-2000:]
    assert not (tmp_path / "runs" / "hopper-medium" / "bc" / "seed2").exists()
    assert "(2 seeds)" in results.read_text()
    # other settings than the finished cells were made with: refused (they were counted as done under this table)
    other = _run(tmp_path, *[a.replace("trainer.max_steps=4", "trainer.max_steps=50") for a in args])
    assert other.returncode != 0 and "was made by another command than this table's" in other.stderr, other.stderr
    assert "trainer.max_steps=4" in other.stderr and "trainer.max_steps=50" in other.stderr
    # preset=auto is preset=cpu on a machine without CUDA: the same cells, done
    import torch

    if not torch.cuda.is_available():
        auto = _run(tmp_path, *[a.replace("preset=cpu", "preset=auto") for a in args], "dry_run=true")
        assert auto.returncode == 0 and "4 cells: 4 done, 0 to run" in auto.stdout, auto.stderr[-2000:]


def test_ledger_keeps_finished_cells_when_run_folders_are_gone(tmp_path, hopper_hdf5):
    """With ledger=PATH each finished cell is recorded there; on a machine without the run folders the same
    command rebuilds the table from the ledger and trains nothing it holds."""
    results, ledger = tmp_path / "results.md", tmp_path / "cells.json"
    args = ["envs=[hopper-medium]", "algos=[bc]", "seeds=2", "preset=cpu", f"root={tmp_path / 'runs'}",
            f"results={results}", "chart=null", "eval_episodes=2", f"ledger={ledger}",
            f'overrides=["dataset={hopper_hdf5}","trainer.max_steps=4","eval.max_episode_steps=5",'
            '"eval.plot=false","eval.num_envs=2"]']
    proc = _run(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = json.loads(ledger.read_text())["cells"]
    assert [(c["env"], c["algo"], c["seed"], c["preset"]) for c in cells] == [
        ("hopper-medium", "bc", 0, "cpu"), ("hopper-medium", "bc", 1, "cpu")]
    for cell in cells:
        result = json.loads((tmp_path / "runs" / "hopper-medium" / "bc" / f"seed{cell['seed']}" / "eval.json")
                            .read_text())
        assert cell["normalized_scores"] == result["normalized_scores"] and len(cell["normalized_scores"]) == 2
        assert cell["normalized_score_mean"] == result["normalized_score_mean"] and cell["wall_s"] > 0
        assert "train_planner.py env=hopper-medium algo=bc seed=" in cell["command"]
    row = next(line for line in results.read_text().splitlines() if line.startswith("| hopper-medium"))
    assert result["preset"] == "cpu"  # recorded by the run: one root never mixes presets in a table
    mixed = _run(tmp_path, *args, "preset=paper", "dry_run=true")
    assert mixed.returncode != 0 and "holds a preset=cpu run and this table is preset=paper" in mixed.stderr
    assert "use another root= for each preset" in mixed.stderr and "Traceback" not in mixed.stderr

    import shutil

    shutil.rmtree(tmp_path / "runs")  # the run folders are lost (another machine); the ledger is kept
    again = _run(tmp_path, *args, "seeds=3", "dry_run=true")
    assert again.returncode == 0 and "3 cells: 2 done (2 in the ledger), 1 to run" in again.stdout, again.stderr
    assert "seed=2" in again.stdout and "seed=0" not in again.stdout
    rebuilt = _run(tmp_path, *args, "report_only=true")
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    text = results.read_text()
    assert next(line for line in text.splitlines() if line.startswith("| hopper-medium")) == row
    assert f"Read from the ledger `{ledger}`" in text and "hopper-medium/bc seeds 0, 1" in text
    # another preset's record is not this preset's result: the cell is to run again
    other = _run(tmp_path, *args, "preset=paper", "dry_run=true")
    assert other.returncode == 0 and "2 cells: 0 done, 2 to run" in other.stdout
    ledger.write_text('{"cells": [{"env": "hopper-medium"}]}')
    bad = _run(tmp_path, *args, "dry_run=true")
    assert bad.returncode != 0 and "expected" in bad.stderr and "preset" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_robot_tasks_get_a_success_rate_table_with_routes(tmp_path):
    results = tmp_path / "results.md"
    results.write_text("# Results\n")
    args = ["envs=[]", "tasks=[point-obstacle]", "task_algos=[bc]", "seeds=2", "preset=cpu", "task_eval_episodes=2",
            f"root={tmp_path / 'runs'}", f"results={results}", f"task_chart={tmp_path / 'tasks.png'}",
            'overrides=["trainer.max_steps=4","eval.max_episode_steps=5","eval.plot=false","eval.video=false",'
            '"eval.num_envs=2"]']
    proc = _run(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 cells: 0 done, 2 to run" in proc.stdout
    log = (tmp_path / "runs" / "point-obstacle" / "bc" / "seed0" / "train.log").read_text()
    assert "train_policy.py task=point-obstacle algo=bc seed=0" in log and "eval.episodes=2" in log
    text = results.read_text()
    assert "<!-- reproduce-tasks:begin -->" in text and "<!-- reproduce:begin -->" not in text
    assert "| task | demonstrator | BC |" in text
    row = next(line for line in text.splitlines() if line.startswith("| point-obstacle"))
    # 5 steps never reach the goal nor pass the obstacle; the demonstrator succeeds every time
    assert row == "| point-obstacle | 100.0 | 0.0 ± 0.0 (2 seeds); routes none 100% |"
    assert (tmp_path / "tasks.png").stat().st_size > 1000 and "![score chart](tasks.png)" in text


def test_bad_lists_are_clear_errors(tmp_path):
    env = dict(os.environ, MINARI_DATASETS_PATH=str(tmp_path / "store"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               DIFFUSION_RL_DEMOS=str(tmp_path / "demos"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    lines = [["tasks=[push-tee]"], ["envs=[hopper-mediocre]"], ["algos=[dd]"], ["seeds=0"], ["seeds=[1,1]"],
             ["envs=[hopper-medium]", "algos=[bc]", "seeds=[2,5]", f"root={tmp_path}"],
             ["envs=[hopper-medium]", "algos=[bc]", "seeds=2", f"root={tmp_path}"]]
    task, env_name, algo, zero, twice, some, dry = run_lines(SCRIPT, [[*line, "dry_run=true"] for line in lines],
                                                             tmp_path, env)
    assert task.returncode != 0 and "push-tee" in task.stderr and "point-obstacle" in task.stderr
    assert env_name.returncode != 0 and "hopper-mediocre" in env_name.stderr and "walker2d-medium" in env_name.stderr
    assert algo.returncode != 0 and "decision_diffuser" in algo.stderr
    assert zero.returncode != 0 and "integer >= 1" in zero.stderr and "Traceback" not in zero.stderr
    assert twice.returncode != 0 and "distinct seeds" in twice.stderr
    assert some.returncode == 0 and "seed=2" in some.stdout and "seed=5" in some.stdout and "seed=0" not in some.stdout
    assert dry.returncode == 0 and dry.stdout.count("train_planner.py") == 2 and "seed=1" in dry.stdout
    assert not (tmp_path / "hopper-medium").exists()


def test_overrides_of_keys_reproduce_sets_and_unknown_algorithms_are_refused(tmp_path):
    """A user override comes after the cell's own keys and would win (every seed cell the same run, a wrong
    table header), and algo_overrides for an algorithm not trained would be dropped: both are one clear line."""
    import pytest

    sys.path.insert(0, str(ROOT / "scripts"))
    from reproduce import check_cell_overrides

    cases = [(["++run_dir=x"], {}, "sets run_dir, which reproduce.py sets for every cell; use root="),
             (["eval.episodes=2"], {}, "use eval_episodes=N"),
             (["eval={episodes: 2}"], {}, "sets eval (and so eval.episodes)"),
             ([], {"bc": ["env=walker2d-medium"]}, "error: algo_overrides.bc: 'env=walker2d-medium' sets env"),
             ([], {"diffusr": ["algo.model.dim=8"]},
              "error: algo_overrides: diffusr is not an algorithm this run trains; expected keys among bc, diffuser"),
             ([], {"decision_diffuser": ["algo.model.dim=8"]}, "decision_diffuser is not an algorithm"),
             ("trainer.max_steps=3", {}, "error: overrides: expected a list of key=value strings")]
    for overrides, per_algo, message in cases:
        with pytest.raises(SystemExit) as err:
            check_cell_overrides(overrides, per_algo, ["diffuser", "bc"])
        assert message in str(err.value.code), (overrides, per_algo, err.value.code)
    check_cell_overrides(["trainer.max_steps=3"], {"diffuser": ["algo.sampling.num_plans=4"]}, ["diffuser", "bc"])
    # the script: one line, before any cell
    base = ["envs=[hopper-medium]", "algos=[diffuser,bc]", "seeds=2", "dry_run=true", f"root={tmp_path}"]
    proc = _run(tmp_path, *base, 'overrides=["seed=7"]')
    assert proc.returncode != 0 and ("error: overrides: 'seed=7' sets seed, which reproduce.py sets for every cell; "
                                     "use seeds=N or seeds=[...] instead") in proc.stderr, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "train_planner.py" not in proc.stdout
    ok = _run(tmp_path, *base, 'overrides=["trainer.max_steps=3","eval.num_envs=2"]',
              'algo_overrides={diffuser:["algo.sampling.num_plans=4"]}')
    assert ok.returncode == 0, ok.stderr[-1500:]
    assert ok.stdout.count("trainer.max_steps=3") == 4 and ok.stdout.count("algo.sampling.num_plans=4") == 2


def test_the_config_comment_examples_work_as_typed_in_a_shell(tmp_path):
    """The command-line forms configs/reproduce.yaml shows for `overrides` and `algo_overrides` (single-quoted
    shell words) parse, as a shell would split them, and reach the cells' commands."""
    import re
    import shlex

    comments = [line.split("#", 1)[1] for line in (ROOT / "configs" / "reproduce.yaml").read_text().splitlines()
                if "#" in line]
    examples = {}
    for comment in comments:
        for word in re.findall(r"'(?:algo_)?overrides=[^']*'", comment):
            (arg,) = shlex.split(word)
            examples[arg.split("=", 1)[0]] = arg
    assert sorted(examples) == ["algo_overrides", "overrides"], comments
    proc = _run(tmp_path, *examples.values(), "envs=[hopper-medium]", "algos=[diffuser]", "seeds=1", "dry_run=true",
                f"root={tmp_path}", "results=null", "chart=null")
    assert proc.returncode == 0, proc.stderr[-2000:]
    command = next(line for line in proc.stdout.splitlines() if "train_planner.py" in line)
    assert "trainer.max_steps=1000" in command and "algo.sampling.num_plans=4" in command, command


def test_algo_overrides_a_cells_model_never_reads_are_left_out_of_that_cell_with_a_note(tmp_path):
    """algo_overrides give one list for every env: maze2d's goal-conditioned Diffuser refuses num_plans (it has no
    value net), so a table of hopper and maze Diffusers with the documented example failed its maze cells."""
    proc = _run(tmp_path, "envs=[hopper-medium,maze2d-umaze]", "algos=[diffuser]", "seeds=1", f"root={tmp_path / 'r'}",
                "dry_run=true", 'algo_overrides={diffuser:["algo.sampling.num_plans=4","algo.sampling.steps=5"]}')
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    hopper = next(line for line in lines if "env=hopper-medium" in line)
    maze = next(line for line in lines if "env=maze2d-umaze" in line and "train_planner.py" in line)
    assert hopper.endswith("algo.sampling.num_plans=4 algo.sampling.steps=5")
    assert "num_plans" not in maze and maze.endswith("algo.sampling.steps=5")
    assert ("note: maze2d-umaze / diffuser: algo.sampling.num_plans=4 left out (this Diffuser has no value net "
            "(value_guided=False)") in proc.stdout


def _report_cfg(tmp_path: Path, **kw):
    from omegaconf import OmegaConf

    cfg = dict(root=str(tmp_path / "none"), preset="cpu", eval_episodes=50, task_eval_episodes=50, chart=None,
               task_chart=None, results=None, ledger="cells.json")
    return OmegaConf.create({**cfg, **kw})


def _ledger_record(seed: int, score: float, episodes: int = 10, command: bool = True) -> dict:
    record = {"env": "hopper-medium", "algo": "bc", "seed": seed, "preset": "cpu", "episodes": episodes,
              "normalized_score_mean": score, "dataset_mean_normalized_return": 52.2}
    if command:
        record["command"] = (f"python scripts/train_planner.py env=hopper-medium algo=bc seed={seed} preset=cpu "
                             f"device=auto run_dir=/x/seed{seed} eval.episodes={episodes} trainer.progress=false")
    return record


def test_the_report_header_states_the_episodes_the_cells_were_scored_on(tmp_path):
    """The header took N from eval_episodes (50) above a table of 10-episode cells; it reads the cells now, and
    flags mixed counts and counts other than eval_episodes."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from reproduce import report

    ledger = [_ledger_record(0, 60.0), _ledger_record(1, 62.0)]
    text = report(_report_cfg(tmp_path), ["hopper-medium"], ["bc"], [0, 1], [], ledger=ledger)
    assert "each seed scored on 10 evaluation episodes" in text and "50 evaluation episodes" not in text
    assert ("Warning: Scored on another number of episodes than eval_episodes=50: hopper-medium/bc seed 0, "
            "hopper-medium/bc seed 1 (10).") in text
    assert "one standard error over training seeds" in text and "bold: the highest mean of a row" in text
    mixed = report(_report_cfg(tmp_path), ["hopper-medium"], ["bc"], [0, 1], [],
                   ledger=[_ledger_record(0, 60.0, episodes=50), _ledger_record(1, 62.0)])
    assert "each seed scored on 10-50 evaluation episodes (mixed)" in mixed
    assert ("Warning: Mixed numbers of evaluation episodes: 10: hopper-medium/bc seed 1; 50: hopper-medium/bc "
            "seed 0.") in mixed


def test_ledger_records_are_checked_against_the_tables_settings(tmp_path):
    """A ledger record made by another command (here: 10 evaluation episodes, the table asks for 20) is refused as
    a run folder is; a record without a command is named as unchecked in the report."""
    ledger = tmp_path / "cells.json"
    ledger.write_text(json.dumps({"cells": [_ledger_record(0, 60.0)]}))
    args = ["envs=[hopper-medium]", "algos=[bc]", "seeds=1", "preset=cpu", f"root={tmp_path / 'runs'}",
            f"ledger={ledger}", "dry_run=true"]
    refused = _run(tmp_path, *args, "eval_episodes=20")
    assert refused.returncode != 0 and "hopper-medium/bc/seed0 made by another command" in refused.stderr
    assert "eval.episodes=10" in refused.stderr and "eval.episodes=20" in refused.stderr
    assert "Traceback" not in refused.stderr
    same = _run(tmp_path, *args, "eval_episodes=10")
    assert same.returncode == 0 and "1 cells: 1 done (1 in the ledger)" in same.stdout, same.stderr[-2000:]

    sys.path.insert(0, str(ROOT / "scripts"))
    from reproduce import report

    records = [_ledger_record(0, 60.0), _ledger_record(1, 62.0, command=False)]
    text = report(_report_cfg(tmp_path, eval_episodes=10), ["hopper-medium"], ["bc"], [0, 1], [], ledger=records)
    line = next(x for x in text.splitlines() if x.startswith("Read from the ledger"))
    assert line.endswith("hopper-medium/bc seeds 0, 1. Unchecked against this table's settings (no command "
                         "recorded): hopper-medium/bc seed 1."), line


def test_results_page_says_what_the_plus_minus_is_over_and_notes_the_inv_noise_choice():
    text = " ".join((ROOT / "docs" / "results.md").read_text().split())  # line breaks as spaces
    intro = text.split("## ", 1)[0]
    assert "over training seeds" in intro and "over evaluation episodes" in intro
    assert "chosen after looking at the reporting episodes" in text


def test_run_folders_finished_by_hand_are_named_as_unchecked(tmp_path):
    """A run folder with eval.json but no reproduce.json (made by another command, by hand) was counted as done
    and never named, while a ledger record without a command was."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from reproduce import report

    from diffusion_rl.evaluation.table import cell_dir

    for seed, score in ((0, 60.0), (1, 62.0)):
        run = cell_dir(tmp_path / "runs", "hopper-medium", "bc", seed)
        run.mkdir(parents=True)
        (run / "eval.json").write_text(json.dumps({"normalized_score_mean": score, "episodes": 10, "seed": seed}))
    (cell_dir(tmp_path / "runs", "hopper-medium", "bc", 0) / "reproduce.json").write_text(
        json.dumps({"command": "python scripts/train_planner.py env=hopper-medium algo=bc seed=0", "wall_s": 1.0}))
    text = report(_report_cfg(tmp_path, eval_episodes=10, root=str(tmp_path / "runs")), ["hopper-medium"], ["bc"],
                  [0, 1], [])
    assert ("Run folders without reproduce's record of their command (made by hand), unchecked against this "
            "table's settings: hopper-medium/bc seed 1.") in text
