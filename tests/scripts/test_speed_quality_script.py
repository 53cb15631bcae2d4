"""scripts/speed_quality.py on a tiny untrained artifact: every row and variant scored by evaluate.py, timed, and
written as a table section; finished rows are skipped on a rerun."""

from __future__ import annotations

import subprocess
import sys

from tests.scripts.test_evaluate_script import _env, hopper_artifact
from tests.scripts.test_train_planner import ROOT

SCRIPT = ROOT / "scripts" / "speed_quality.py"


def test_scores_and_times_every_row_and_writes_the_table(tmp_path):
    policy = hopper_artifact(tmp_path / "policy")
    results = tmp_path / "results.md"
    results.write_text("# Results\n")
    # relative paths, run from the folder they are relative to (evaluate.py ran in the repository and wrote there)
    args = [sys.executable, str(SCRIPT), "policies.dd=policy", "rows=[{sampler: ddpm, steps: null},"
            "{sampler: ddim, steps: 2}]", "episodes=1", "num_envs=1", "rounds=1", "root=sq", "results=results.md"]
    proc = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "sq" / "dd").iterdir())
    assert runs == ["ddim-2-compiled.json", "ddim-2-plain.json", "ddim-2-warm.json", "ddpm-all-compiled.json",
                    "ddpm-all-plain.json"]
    text = results.read_text()
    assert text.startswith("# Results") and "<!-- speed-quality:begin -->" in text
    assert "| dd | ddim | 2 | warm (t = 6) |" in text and "| dd | ddpm | all | plain |" in text
    assert "fastest row whose episodes score within one paired standard error of full DDPM's" in text
    # rerun with warm rows only: nothing is evaluated twice, and the full-DDPM row is still the reference
    again = subprocess.run([*args, "variants=[warm]"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "run    dd" not in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    assert "| dd | ddpm | all | plain |" in again.stdout and "| dd | ddim | 2 | plain |" not in again.stdout
    assert "fastest row whose episodes score within one paired standard error" in again.stdout
    # a finished row from another artifact at the same label (retrained in place) is not reused
    import json

    from omegaconf import OmegaConf

    sys.path.insert(0, str(SCRIPT.parent))
    from speed_quality import stale_because

    cfg = OmegaConf.create({"episodes": 1, "seed": 0, "num_envs": 1})
    finished = json.loads((tmp_path / "sq" / "dd" / "ddim-2-plain.json").read_text())
    row = {"sampler": "ddim", "steps": 2}
    assert stale_because(finished, cfg, str(policy), row, "plain", 6) is None
    assert "episodes 1 (now 3)" in stale_because(finished, OmegaConf.create({**cfg, "episodes": 3}), str(policy),
                                                 row, "plain", 6)
    hopper_artifact(tmp_path / "policy", seed=1)
    assert stale_because(finished, cfg, str(policy), row, "plain", 6).startswith("weights_sha256")
    bad = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert bad.returncode != 0 and "error: policies: give at least one artifact" in bad.stderr
