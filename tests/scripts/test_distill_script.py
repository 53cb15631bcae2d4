"""scripts/distill.py end to end with tiny budgets: a teacher trained by train_planner.py on a small D4RL HDF5
file, distilled into a one-step student that Policy.load serves."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from diffusion_rl import Policy
from diffusion_rl.data import load_episodes
from tests.scripts.test_train_planner import ROOT, TINY_DD, _env, _run

SCRIPT = ROOT / "scripts" / "distill.py"


def _distill(args: list[str], store) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=_env(store), cwd=ROOT, capture_output=True,
                          text=True, timeout=400)


def test_distils_a_trained_planner_into_a_one_step_student(tmp_path, hopper_hdf5):
    teacher_dir = tmp_path / "teacher"
    proc = _run(["env=hopper-medium", f"dataset={hopper_hdf5}", f"run_dir={teacher_dir}", "trainer.max_steps=10",
                 "eval.episodes=1", "eval.num_envs=1", "eval.max_episode_steps=5", "eval.max_episode_steps=5", "eval.plot=false", *TINY_DD],
                tmp_path / "empty")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _distill([f"policy={teacher_dir / 'policy'}", "trainer.max_steps=6", "trainer.batch_size=8",
                     "trainer.checkpoint_every=3", "method=consistency", "intervals=5", "eval.episodes=1", "eval.num_envs=1", "eval.max_episode_steps=5",
                     "trainer.progress=false"], tmp_path / "empty")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = teacher_dir / "distilled"
    result = json.loads((out / "eval.json").read_text())
    assert result["train_steps"] == 6 and result["student_steps"] == 1 and result["decisions_per_s_batch1"] > 0
    assert result["episodes"] == 1 and np.isfinite(result["normalized_score_mean"])
    config = json.loads((out / "policy" / "config.json").read_text())
    assert config["sampling"]["sampler"] == "consistency" and config["sampling"]["steps"] == 1
    assert config["sampling"]["guidance_weight"] == 0.0 and config["algo_config"]["prediction"] == "v_prediction"
    assert config["metadata"]["distillation"]["intervals"] == 5 and "data" in config["metadata"]
    assert config["metadata"]["dataset"] == str(hopper_hdf5)  # what the student learned from
    assert any((out / "checkpoints").iterdir())
    student = Policy.load(out / "policy", device="cpu")
    obs = load_episodes(str(hopper_hdf5))["observations"][:3]
    assert np.all(np.isfinite(student.act(obs)))
    # the default, direct method: regressed on the teacher's own plans, drawn with its sampler (two steps: the
    # second refines the plan re-noised to T/2)
    proc = _distill([f"policy={teacher_dir / 'policy'}", "samples=16", "trainer.max_steps=4", "student_steps=2",
                     "trainer.batch_size=8", f"run_dir={tmp_path / 'direct'}", "eval.episodes=1", "eval.num_envs=1", "eval.max_episode_steps=5",
                     "trainer.progress=false"], tmp_path / "empty")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "drawing 16 plans of the teacher" in proc.stdout
    result = json.loads((tmp_path / "direct" / "eval.json").read_text())
    assert result["method"] == "direct" and result["train_steps"] == 4 and result["student_steps"] == 2
    config = json.loads((tmp_path / "direct" / "policy" / "config.json").read_text())
    assert config["sampling"]["sampler"] == "consistency" and config["sampling"]["steps"] == 2
    assert config["metadata"]["distillation"]["method"] == "direct"
    assert config["metadata"]["distillation"]["samples"] == 16
    assert np.all(np.isfinite(Policy.load(tmp_path / "direct" / "policy", device="cpu").act(obs)))
    # bad input: one line, nothing trained
    bad = _distill([f"policy={tmp_path / 'nowhere'}"], tmp_path / "empty")
    assert bad.returncode != 0 and "error: cannot load policy=" in bad.stderr and "Traceback" not in bad.stderr
    bad = _distill([f"policy={teacher_dir / 'policy'}", "student_steps=0"], tmp_path / "empty")
    assert bad.returncode != 0 and "student_steps: expected an integer >= 1, got 0" in bad.stderr
    bad = _distill([f"policy={teacher_dir / 'policy'}", "method=progressive"], tmp_path / "empty")
    assert bad.returncode != 0 and "method: expected one of ['consistency', 'direct'], got 'progressive'" in bad.stderr
    bad = _distill([f"policy={teacher_dir / 'policy'}", "method=direct", "student_steps=5"], tmp_path / "empty")
    assert bad.returncode != 0 and "student_steps: expected 1 to 4 network evaluations per plan, got 5" in bad.stderr
    bad = _distill([f"policy={teacher_dir / 'policy'}", "method=direct", "samples=0"], tmp_path / "empty")
    assert bad.returncode != 0 and "samples: expected an integer >= 1, got 0" in bad.stderr
    bad = _distill([f"policy={teacher_dir / 'policy'}", "eval.seed=4294967295"], tmp_path / "empty")
    assert bad.returncode != 0 and "seed: expected an integer in [0, 4294967286)" in bad.stderr


def test_a_run_dir_holding_checkpoints_is_refused_before_any_work(tmp_path):
    """Named with the command line's key (trainer.resume=true), before the dataset is loaded or plans drawn."""
    from tests.test_policy import make_policy

    teacher = make_policy("diffuser").save(tmp_path / "teacher")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_00000010.pt").write_bytes(b"")
    proc = _distill([f"policy={teacher}", f"run_dir={tmp_path / 'run'}", "dataset=/nonexistent/data.hdf5"],
                    tmp_path / "store")
    assert proc.returncode != 0
    assert "already holds checkpoints (latest step 10); expected trainer.resume=true" in proc.stderr, proc.stderr
