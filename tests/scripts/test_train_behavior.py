"""scripts/train_behavior.py's selection step (``from_run=``): where the chosen behaviour policies are written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from envs import get_spec
from envs.recipes.behavior import save_policy_sequence
from envs.recipes.policies import LinearPolicy

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_behavior.py"


@pytest.fixture
def script(monkeypatch, tmp_path):
    """The script as a module, its repository root moved to ``tmp_path/repo`` (nothing of the real checkout can be
    written) and its re-evaluation replaced by each snapshot's recorded score (no rollouts)."""
    spec = importlib.util.spec_from_file_location("train_behavior_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path / "repo")
    ref = get_spec("hopper-medium")

    def evaluate_policy(policy, env_id, episodes, **_):  # the return whose normalized score is the recorded one
        ret = ref.ref_min_score + policy.info["score"] / 100 * (ref.ref_max_score - ref.ref_min_score)
        return np.full(episodes, ret), None

    monkeypatch.setattr(module, "evaluate_policy", evaluate_policy)
    return module


def _run_file(path: Path) -> Path:
    snapshots = [LinearPolicy(weights=np.full((3, 11), i), obs_mean=np.zeros(11), obs_std=np.ones(11),
                              action_low=-1.0, action_high=1.0, info={"iteration": i, "score": score})
                 for i, score in enumerate([5.0, 20.0, 44.0, 80.0, 100.0])]
    return save_policy_sequence(snapshots, path)


def test_chosen_policies_go_to_the_output_folder_not_the_committed_weights(script, tmp_path, capsys):
    run = _run_file(tmp_path / "hopper-seed0.npz")
    repo = tmp_path / "repo"
    script.main(["env=hopper", f"from_run={run}", "select_episodes=2"])
    written = repo / "outputs" / "behavior" / "weights"  # the default: <out_dir>/weights
    assert sorted(p.name for p in written.iterdir()) == [
        "hopper-expert.npz", "hopper-medium-replay.npz", "hopper-medium.npz"]
    assert not (repo / "envs").exists()  # the committed envs/recipes/weights untouched
    assert "weights_dir=envs/recipes/weights" in capsys.readouterr().out  # says how to make them the recipes'
    # out_dir moves the default with it; weights_dir=envs/recipes/weights writes there when asked for
    script.main(["env=hopper", f"from_run={run}", "select_episodes=2", f"out_dir={tmp_path / 'elsewhere'}",
                 "write=expert"])
    assert [p.name for p in (tmp_path / "elsewhere" / "weights").iterdir()] == ["hopper-expert.npz"]
    script.main(["env=hopper", f"from_run={run}", "select_episodes=2", "weights_dir=envs/recipes/weights",
                 "write=expert"])
    assert [p.name for p in (repo / "envs" / "recipes" / "weights").iterdir()] == ["hopper-expert.npz"]


def test_a_relative_from_run_is_taken_from_the_repository_root_and_a_missing_one_is_one_line(script, tmp_path,
                                                                                             monkeypatch, capsys):
    repo = tmp_path / "repo"
    _run_file(repo / "outputs" / "behavior" / "hopper-seed0.npz")
    monkeypatch.chdir(tmp_path)  # not the repository: the docstring's example path still finds the run
    script.main(["env=hopper", "from_run=outputs/behavior/hopper-seed0.npz", "select_episodes=2", "write=expert"])
    assert "loaded 5 snapshots" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"error: from_run: no snapshot file at .*missing\.npz"):
        script.main(["env=hopper", "from_run=outputs/behavior/missing.npz"])
