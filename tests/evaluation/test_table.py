"""The score table's ledger: records merged by (env, algo, seed, preset), read back, and used only for seeds
whose run folder is missing."""

from __future__ import annotations

import json

import pytest

from diffusion_rl.evaluation.table import cell_dir, cell_record, collect_scores, read_ledger, update_ledger


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
