"""scripts/train_policy.py end to end with a tiny budget: demonstrations made on first use, Diffusion Policy
trained through the shared pipeline, success rate in eval.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffusion_rl import Policy
from envs import get_task, task_names

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_policy.py"


@pytest.mark.parametrize("task", task_names())
def test_train_policy_makes_demos_trains_and_reports_a_success_rate(tmp_path, task):
    if task.startswith("metaworld"):
        pytest.importorskip("metaworld")
    spec = get_task(task)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", DIFFUSION_RL_DEMOS=str(tmp_path / "demos"))
    run_dir = tmp_path / "run"
    args = [f"task={task}", f"run_dir={run_dir}", "trainer.max_steps=10", "eval.episodes=2", "eval.num_envs=2",
            "eval.max_episode_steps=8", "eval.video=false", "preset=cpu", "algo.model.down_dims=[16,32]",
            "algo.model.step_embed_dim=16", "algo.sampling.steps=2", "trainer.batch_size=8",
            "trainer.warmup_steps=2", "trainer.progress=false"]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"making {spec.demo_episodes} with its scripted expert" in proc.stdout and "success:" in proc.stdout
    assert (tmp_path / "demos" / f"{task}.zarr").is_dir()
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == 2 and result["success_rate_mean"] == 0.0  # 8 steps cannot reach the goal
    assert result["demo_success_rate"] == 1.0 and "dataset_mean_normalized_return" not in result
    assert result["normalized_score_mean"] is None
    assert ("route_fractions" in result) == (task == "point-obstacle")  # the route of a multimodal task
    policy = Policy.load(run_dir / "policy", device="cpu")
    assert policy.env_name == task and policy.execution == "action_queue"
    assert policy.action_bounds_list() == [[-1.0] * policy.act_dim, [1.0] * policy.act_dim]  # the env's, recorded
    obs = np.zeros((3, policy.obs_dim), np.float32)
    assert policy.act(obs[0]).shape == (policy.act_dim,) and policy.act(obs).shape == (3, policy.act_dim)
    if task != "point-obstacle":
        return
    bad = subprocess.run([sys.executable, str(SCRIPT), "task=push-tee"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0 and "point-obstacle" in bad.stderr


def test_ctrl_c_ends_training_with_one_line_and_keeps_the_checkpoints(tmp_path):
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", DIFFUSION_RL_DEMOS=str(tmp_path / "demos"),
               PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")  # a hang below dumps every thread's stack
    run_dir = tmp_path / "run"
    args = [f"run_dir={run_dir}", "trainer.max_steps=100000", "preset=cpu", "algo.model.down_dims=[16,32]",
            "algo.model.step_embed_dim=16", "trainer.batch_size=8", "trainer.checkpoint_every=5",
            "trainer.progress=false", "trainer.log_every=5"]
    # a terminal's Ctrl-C reaches a process whose SIGINT is not ignored; a test suite started in the background by
    # a non-interactive shell inherits SIGINT ignored, which the script would rightly keep: restore the default
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("step_*")) and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read()[-2000:]  # still training when interrupted
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=300)  # generous: a checkpoint write may be in progress on a loaded machine
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler prints where every thread is stuck
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"no exit 300 s after Ctrl-C; stacks:\n{err[-6000:]}") from None
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted (Ctrl-C); checkpoints written so far are kept" in err
    assert list((run_dir / "checkpoints").glob("step_*")) and not (run_dir / "eval.json").exists()
