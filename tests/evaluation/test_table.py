"""The score table's ledger: records merged by (env, algo, seed, preset), read back, and used only for seeds
whose run folder is missing."""

from __future__ import annotations

import json

import pytest

from diffusion_rl.evaluation.table import (
    ScoreCell,
    cell_dir,
    cell_record,
    collect_scores,
    read_ledger,
    update_ledger,
)


def _record(seed: int, score: float, preset: str = "cpu") -> dict:
    return {"env": "hopper-medium", "algo": "bc", "seed": seed, "preset": preset, "episodes": 10,
            "normalized_score_mean": score, "dataset_mean_normalized_return": 0.5, "wall_s": 60.0}


def test_update_replaces_the_same_cell_and_keeps_the_others(tmp_path):
    path = tmp_path / "docs" / "cells.json"
    assert read_ledger(path) == [] and read_ledger(None) == []
    update_ledger(path, [_record(1, 0.6), _record(0, 0.5)])
    update_ledger(path, [_record(1, 0.7), _record(1, 0.9, preset="paper")])
    cells = read_ledger(path)
    assert [(c["seed"], c["preset"], c["normalized_score_mean"]) for c in cells] == [
        (0, "cpu", 0.5), (1, "cpu", 0.7), (1, "paper", 0.9)]
    assert not list(path.parent.glob(".*tmp*"))  # written through a temporary name


def test_run_folders_win_and_the_ledger_fills_missing_seeds_of_the_same_preset(tmp_path):
    root = tmp_path / "runs"
    run = cell_dir(root, "hopper-medium", "bc", 0)
    run.mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps({"episodes": 10, "normalized_score_mean": 0.8,
                                               "normalized_scores": [0.8] * 10}))
    (run / "reproduce.json").write_text(json.dumps({"wall_s": 30.0, "command": "python x"}))
    record = cell_record(run, "hopper-medium", "bc", 0, "cpu")
    assert record["normalized_score_mean"] == 0.8 and record["wall_s"] == 30.0 and record["preset"] == "cpu"
    assert cell_record(tmp_path / "nowhere", "hopper-medium", "bc", 0, "cpu") is None
    ledger = [_record(0, 0.1), _record(1, 0.6), _record(2, 0.9, preset="paper")]
    cell = collect_scores(root, ["hopper-medium"], ["bc"], [0, 1, 2], ledger=ledger, preset="cpu")[
        ("hopper-medium", "bc")]
    assert cell.seeds == [0, 1] and cell.scores == [0.8, 0.6] and cell.from_ledger == [1]
    assert cell.wall_s == [30.0, 60.0] and cell.dataset_mean == 0.5
    assert collect_scores(root, ["hopper-medium"], ["bc"], [0, 1, 2])[("hopper-medium", "bc")].seeds == [0]
    # a run folder that records another preset is not this table's (its ledger record of this preset is)
    (run / "eval.json").write_text(json.dumps({"episodes": 10, "normalized_score_mean": 0.8, "preset": "paper"}))
    cell = collect_scores(root, ["hopper-medium"], ["bc"], [0], ledger=ledger, preset="cpu")[("hopper-medium", "bc")]
    assert cell.scores == [0.1] and cell.from_ledger == [0]


def test_a_malformed_ledger_is_a_clear_error(tmp_path):
    path = tmp_path / "cells.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_ledger(path)
    path.write_text(json.dumps({"cells": [{"env": "hopper-medium", "algo": "bc"}]}))
    with pytest.raises(ValueError, match="env, algo, seed, preset"):
        read_ledger(path)


def _cell(env: str, algo: str, scores: list[float], **kw) -> ScoreCell:
    return ScoreCell(env, algo, scores=list(scores), seeds=list(range(len(scores))),
                     episodes=[10] * len(scores), **kw)


def test_ledger_records_keep_the_evaluation_settings_and_old_records_still_load(tmp_path):
    from diffusion_rl.evaluation.table import LEDGER_KEYS

    assert {"eval_seed", "num_envs", "max_episode_steps", "train_steps"} <= set(LEDGER_KEYS)
    run = cell_dir(tmp_path, "hopper-medium", "bc", 1)
    run.mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps({"episodes": 10, "normalized_score_mean": 0.7, "eval_seed": 1000010000,
                                               "num_envs": 5, "max_episode_steps": 1000, "train_steps": 4000}))
    record = cell_record(run, "hopper-medium", "bc", 1, "cpu")
    assert (record["eval_seed"], record["num_envs"], record["max_episode_steps"], record["train_steps"]) == (
        1000010000, 5, 1000, 4000)
    path = tmp_path / "cells.json"
    update_ledger(path, [_record(0, 0.5), record])  # an old record without them beside a new one
    ledger = read_ledger(path)
    cell = collect_scores(tmp_path / "none", ["hopper-medium"], ["bc"], [0, 1], ledger=ledger, preset="cpu")[
        ("hopper-medium", "bc")]
    assert cell.scores == [0.5, 0.7] and cell.settings == [
        {"episodes": 10}, {"episodes": 10, "num_envs": 5, "max_episode_steps": 1000, "train_steps": 4000,
                           "eval_seed": 1000010000}]
    assert cell.setting_conflicts() == []  # unknown is not a disagreement


def test_seeds_that_disagree_on_settings_or_share_evaluation_seeds_are_warned_about():
    from diffusion_rl.evaluation.table import table_warnings

    cell = _cell("hopper-medium", "bc", [60.0, 62.0, 64.0],
                 settings=[{"episodes": 10, "num_envs": 5, "eval_seed": 0},
                           {"episodes": 10, "num_envs": 2, "eval_seed": 1},  # old scheme: k .. k+9 overlap
                           {"episodes": 10, "num_envs": 5, "eval_seed": 1000020000}])
    notes = cell.setting_conflicts()
    assert notes[0] == "hopper-medium/bc: its seeds differ in num_envs (seed 0: 5, seed 1: 2, seed 2: 5)"
    assert "seeds 0 and 1 were scored on overlapping evaluation seeds" in notes[1] and len(notes) == 2
    disjoint = _cell("hopper-medium", "bc", [1.0, 2.0], settings=[
        {"episodes": 10, "eval_seed": 10**9}, {"episodes": 10, "eval_seed": 10**9 + 10000}])
    assert disjoint.setting_conflicts() == []
    assert table_warnings({("hopper-medium", "bc"): cell}, ["hopper-medium"], ["bc"]) == notes


def test_the_dataset_mean_column_shows_a_range_when_cells_disagree_beyond_rounding():
    """The committed walker2d-medium row: the Decision Diffuser records 50.7, Diffuser and BC 50.39; the column
    used to show whichever algorithm came first."""
    from diffusion_rl.evaluation.table import (
        reference_range,
        reference_text,
        score_table_markdown,
        table_warnings,
    )

    cells = {("walker2d-medium", "decision_diffuser"): _cell("walker2d-medium", "decision_diffuser", [70.0],
                                                             dataset_means=[50.7]),
             ("walker2d-medium", "bc"): _cell("walker2d-medium", "bc", [60.0, 61.0], dataset_means=[50.39, 50.39]),
             ("hopper-medium", "decision_diffuser"): _cell("hopper-medium", "decision_diffuser", [70.0],
                                                           dataset_means=[52.19]),
             ("hopper-medium", "bc"): _cell("hopper-medium", "bc", [60.0], dataset_means=[52.21])}
    algos = ["decision_diffuser", "bc"]
    assert reference_range([cells[("walker2d-medium", a)] for a in algos]) == (50.39, 50.7)
    table = score_table_markdown(cells, ["walker2d-medium", "hopper-medium"], algos)
    assert "| walker2d-medium | 50.4–50.7 |" in table
    assert "| hopper-medium | 52.2 |" in table  # 0.02 apart: rounding, one value
    assert reference_text(None) == "—"
    notes = table_warnings(cells, ["walker2d-medium", "hopper-medium"], algos)
    assert notes == ["walker2d-medium: the cells record different reference values (Decision Diffuser 50.70; "
                     "BC 50.39): datasets made differently, or means taken by an earlier rule (before 2026-12-07 they "
                     "counted the episodes a recipe cut short), shown as a range."]


def test_bold_is_the_highest_mean_and_the_dagger_needs_non_overlapping_95_percent_intervals():
    from diffusion_rl.evaluation.table import score_table_markdown

    close = {("e", "diffuser"): _cell("e", "diffuser", [60.0, 70.0, 80.0]),
             ("e", "bc"): _cell("e", "bc", [55.0, 65.0, 75.0])}
    row = score_table_markdown(close, ["e"], ["diffuser", "bc"]).splitlines()[-1]
    assert row == "| e | — | **70.0 ± 5.8 (3 seeds)** | 65.0 ± 5.8 (3 seeds) |"
    apart = {("e", "diffuser"): _cell("e", "diffuser", [80.0, 81.0, 82.0]),
             ("e", "bc"): _cell("e", "bc", [60.0, 61.0, 62.0])}
    # 95% t-intervals: 81 ± 4.303 · 0.577 = [78.5, 83.5] and [58.5, 63.5]
    assert apart[("e", "diffuser")].ci95 == pytest.approx((81 - 4.302653 / 3**0.5, 81 + 4.302653 / 3**0.5))
    row = score_table_markdown(apart, ["e"], ["diffuser", "bc"]).splitlines()[-1]
    assert row == "| e | — | **81.0 ± 0.6 (3 seeds)** † | 61.0 ± 0.6 (3 seeds) |"
    tie = {("e", "diffuser"): _cell("e", "diffuser", [80.0, 81.0, 82.0]), ("e", "bc"): _cell("e", "bc", [81.0] * 3)}
    assert score_table_markdown(tie, ["e"], ["diffuser", "bc"]).splitlines()[-1].count("**") == 4  # both bold
    # a tie as printed is a tie: 62.0133 and 62.0 both read 62.0 (only the first was bold), and the same seed
    # scores in another order sum to another float (0.2000...04 against 0.1999...98)
    for a, b in (([61.0, 62.04, 63.0], [62.0] * 3), ([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])):
        printed = {("e", "diffuser"): _cell("e", "diffuser", a), ("e", "bc"): _cell("e", "bc", b)}
        row = score_table_markdown(printed, ["e"], ["diffuser", "bc"]).splitlines()[-1]
        assert row.count("**") == 4 and "†" not in row, row
    one_seed = {("e", "diffuser"): _cell("e", "diffuser", [90.0]), ("e", "bc"): _cell("e", "bc", [60.0, 61.0])}
    assert "†" not in score_table_markdown(one_seed, ["e"], ["diffuser", "bc"])  # no interval for one seed


def test_chart_one_seed_bars_have_no_error_bar_and_the_reference_label_is_on_the_first_line_drawn(
        tmp_path, monkeypatch):
    import matplotlib.figure

    from diffusion_rl.evaluation.table import plot_score_chart

    seen = {}
    save = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):
        ax = self.axes[0]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        seen["bars"] = [(p.get_height(), p.get_hatch()) for c in ax.containers if hasattr(c, "patches")
                        for p in c.patches]
        seen["errors"] = [[seg.tolist() for seg in c.lines[2][0].get_segments()] for c in ax.containers
                          if hasattr(c, "lines") and c.lines]
        seen["bands"] = [type(c).__name__ for c in ax.collections if type(c).__name__ != "LineCollection"]
        return save(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    cells = {("a", "bc"): _cell("a", "bc", [50.0]),  # one seed, no dataset mean
             ("b", "bc"): _cell("b", "bc", [40.0, 60.0], dataset_means=[45.0]),
             ("c", "bc"): _cell("c", "bc", [30.0, 32.0], dataset_means=[20.0, 21.0])}  # a range: band
    path = plot_score_chart(cells, ["a", "b", "c"], ["bc"], tmp_path / "chart.png")
    assert path.stat().st_size > 1000
    assert seen["legend"].count("dataset mean") == 1 and "BC" in seen["legend"]
    assert "1 seed (no error bar)" in seen["legend"]
    assert seen["bars"] == [(50.0, "//"), (50.0, None), (31.0, None)]
    assert seen["errors"] == [[[], [[1.0, 40.0], [1.0, 60.0]], [[2.0, 30.0], [2.0, 32.0]]]]  # none drawn at x=0
    assert len(seen["bands"]) == 1  # env c's dataset means 20 and 21: a band between two dashed lines


def test_chart_legend_names_only_algorithms_with_bars_each_in_its_own_colour_unhatched(tmp_path, monkeypatch):
    """An algorithm with no finished seed got a legend entry in the first colour (another algorithm's bars), and
    an algorithm whose first bar was a one-seed bar had a hatched legend entry."""
    import matplotlib.colors
    import matplotlib.figure

    from diffusion_rl.evaluation.table import plot_score_chart

    seen = {}
    save = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):
        ax = self.axes[0]
        legend = ax.get_legend()
        seen["legend"] = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
        seen["bars"] = [matplotlib.colors.to_hex(c.patches[0].get_facecolor()) for c in ax.containers
                        if hasattr(c, "patches")]
        return save(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    cells = {("a", "bc"): _cell("a", "bc", []),  # nothing finished
             ("a", "decision_diffuser"): _cell("a", "decision_diffuser", [70.0]),  # one seed: hatched bar
             ("a", "diffuser"): _cell("a", "diffuser", [60.0, 64.0])}
    plot_score_chart(cells, ["a"], ["bc", "decision_diffuser", "diffuser"], tmp_path / "chart.png")
    assert "BC" not in seen["legend"] and {"Decision Diffuser", "Diffuser"} <= set(seen["legend"])
    dd, diffuser = seen["legend"]["Decision Diffuser"], seen["legend"]["Diffuser"]
    assert not dd.get_hatch() and not diffuser.get_hatch()
    legend_colours = [matplotlib.colors.to_hex(h.get_facecolor()) for h in (dd, diffuser)]
    assert legend_colours == seen["bars"] and len(set(legend_colours)) == 2


def test_cells_scored_under_other_time_limits_are_warned_about():
    """A Diffuser scored on 300-step episodes beside a Decision Diffuser on 1000 reached the table with no word:
    eval.json records both limits, the table read neither."""
    from diffusion_rl.evaluation.table import table_warnings

    def cell(algo, limit):
        c = _cell("hopper-medium", algo, [60.0, 62.0])
        c.settings = [{"max_episode_steps": limit, "reference_max_episode_steps": 1000}] * 2
        return c

    cells = {("hopper-medium", "decision_diffuser"): cell("decision_diffuser", 1000),
             ("hopper-medium", "diffuser"): cell("diffuser", 300)}
    notes = table_warnings(cells, ["hopper-medium"], ["decision_diffuser", "diffuser"])
    assert ("hopper-medium: its cells were scored under different time limits (Decision Diffuser 1000; Diffuser "
            "300): their scores are not comparable.") in notes
    assert ("hopper-medium: scored with episodes of 300 steps, not the benchmark's 1000: not comparable with "
            "D4RL-normalized scores elsewhere.") in notes
    cells[("hopper-medium", "diffuser")] = cell("diffuser", 1000)
    assert table_warnings(cells, ["hopper-medium"], ["decision_diffuser", "diffuser"]) == []


def test_route_shares_are_averaged_over_the_seeds():
    """Each seed's share per route, averaged: the routes of a task read across training seeds (a max or a last
    seed's share would read 100% / 50%)."""
    cell = ScoreCell(env="point-obstacle", algo="diffusion_policy", scores=[80.0, 60.0],
                     routes=[{"left": 1.0}, {"left": 0.5, "right": 0.5}])
    assert cell.route_text() == "left 75% / right 25%"
    assert ScoreCell(env="x", algo="y", routes=[{"none": 1.0}]).route_text() == "none 100%"
    assert ScoreCell(env="x", algo="y").route_text() == ""
