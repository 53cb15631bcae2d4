"""scripts/diagnose.py end to end (subprocess) on a tiny untrained artifact, in the real Hopper-v5."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.scripts.cli import run_lines
from tests.scripts.test_evaluate_script import ROOT, _env, hopper_artifact

SCRIPT = ROOT / "scripts" / "diagnose.py"


def _run(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(SCRIPT), *overrides], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)


def test_prints_and_writes_the_diagnostics_of_each_setting(tmp_path):
    policy = hopper_artifact(tmp_path / "run" / "policy")
    proc = _run(tmp_path / "cwd", f"policy={policy}", "num_plans=8", "rollout_steps=5", "progress=false",
                "sampling.steps=2", "only=[temperature,num_plans]", "sweep.temperature=[1.0,0.0]",
                "sweep.num_plans=[3]")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = tmp_path / "run" / "diagnose_hopper-medium.json"
    result = json.loads(out.read_text())
    assert [r["setting"] for r in result["rows"]] == ["default", "temperature=1.0", "temperature=0.0"]
    assert result["sampling"]["steps"] == 2 and result["num_plans"] == 8
    rows = {r["setting"]: r for r in result["rows"]}
    assert rows["temperature=0.0"]["action_spread"] < 1e-5 < rows["temperature=1.0"]["action_spread"]
    for title in ("action std", "1-step error", "rollout error", "temperature=0.0"):
        assert title in proc.stdout
    assert "note: num_plans: not a setting of this policy" in proc.stdout
    assert list((tmp_path / "cwd").iterdir()) == []


def test_bad_input_is_one_clear_message(tmp_path):
    policy = hopper_artifact(tmp_path / "policy")
    cases = [([f"policy={policy}", "num_plans=1", "rollout_steps=2"], "num_plans: expected an integer >= 2"),
             ([f"policy={policy}", "only=[temprature]"], "temprature"),
             ([f"policy={policy}", "seed=-2"], "error: seed: expected an integer >= 0, got -2"),
             ([f"policy={policy}", "rollout_steps=0"], "error: rollout_steps: expected an integer >= 1, got 0"),
             ([f"policy={policy}", "seed=4294967295"], "error: seed: expected an integer in [0, 4294967295) "
                                                       "(episode i resets with seed + i, below 2**32 for 1 episode), "
                                                       "got 4294967295"),
             ([f"policy={policy}", "progress=3"], "error: progress: expected true or false, got 3"),
             ([f"policy={policy}", "out=/proc/d.json"], "error: out=/proc/d.json: cannot write there"),
             (["rollout_steps=2"], "policy=<path> is required")]
    for (line, message), proc in zip(cases, run_lines(SCRIPT, [line for line, _ in cases], tmp_path), strict=True):
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, (line, proc.stderr)
        assert "only=" not in line[-1] or "temperature" in proc.stderr, proc.stderr  # names the valid choices


def test_sampler_or_env_that_does_not_fit_the_policy_is_one_line(tmp_path):
    policy = hopper_artifact(tmp_path / "policy")
    cases = (("sampling.sampler=heun", "error: sampling.sampler: sampler 'heun' integrates the velocity of the "
                                       "linear flow path: it needs process='flow'"),
             ("env=maze2d-umaze", "error: env: expected an environment with observations of size 11, as the policy "
                                  "was trained on (hopper-medium); got maze2d-umaze"))
    lines = [[f"policy={policy}", arg, "num_plans=2", "rollout_steps=2", "progress=false"] for arg, _ in cases]
    for (arg, message), proc in zip(cases, run_lines(SCRIPT, lines, tmp_path / "cwd"), strict=True):
        assert proc.returncode != 0 and message in proc.stderr, (arg, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.rglob("diagnose_*.json"))
