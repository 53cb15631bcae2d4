"""scripts/benchmark.py: what it refuses, and (on a GPU) that the CUDA benchmark runs end to end.

Timings are never asserted (they go to docs/benchmarks.md); these tests check the script's contract: bad input is
one clear line, and every figure the JSON promises is there and positive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


def run(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def test_bad_input_is_one_line(tmp_path):
    cases = [("benchmarks=[speed]", "error: unknown benchmark(s) ['speed']; expected some of: policy_act"),
             ("rounds=0", "error: rounds must be an integer >= 1, got 0")]
    if not torch.cuda.is_available():
        cases.append(("benchmarks=[cuda]", "error: benchmark cuda needs a CUDA device; this machine has none"))
    for arg, message in cases:
        proc = run(tmp_path / "cwd", arg)
        assert proc.returncode != 0 and message in proc.stderr, (arg, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr, proc.stderr
    assert list((tmp_path / "cwd").iterdir()) == []  # no Hydra output folder


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_benchmark_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    proc = run(tmp_path / "cwd", "benchmarks=[cuda]", "rounds=1", "calls=1", f"out={out}", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    cuda = report["results"]["cuda"]
    assert report["machine"]["cuda"]
    for preset in ("cpu", "paper"):
        for batch in (1, 64):
            for suffix in ("", "_eager", "_bf16"):
                assert cuda[f"decision_diffuser_{preset}"][f"planning_hz_cuda_b{batch}{suffix}"] > 0
    for key in ("replan_ms_cuda_graph", "replan_ms_cuda_inductor_graph", "replan_ms_cuda_graph_2_steps"):
        assert cuda["diffusion_policy"][key] > 0
    assert cuda["train_decision_diffuser_paper"]["train_samples_per_s_cuda"] > 0


def test_process_benchmark_times_diffusion_and_flow_planners(tmp_path):
    out = tmp_path / "bench.json"
    proc = run(tmp_path / "cwd", "benchmarks=[process]", "rounds=1", "calls=1", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]["process"]
    assert report["reportable"] is False and "not figures to report" in proc.stdout  # one round: a quick look
    assert set(results) == {"decision_diffuser", "diffuser"}
    for row in results.values():
        assert row["diffusion_hz"] > 0 and row["flow_hz"] > 0
        assert row["flow_over_diffusion"] == pytest.approx(row["flow_hz"] / row["diffusion_hz"])
    assert "dpmsolver++ 5 steps" in results["decision_diffuser"]["setting"]
