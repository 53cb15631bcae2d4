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

from tests.scripts.cli import run_lines

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
    for (arg, message), proc in zip(cases, run_lines(SCRIPT, [[arg] for arg, _ in cases], tmp_path / "cwd"),
                                    strict=True):
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


def _module():
    import importlib.util

    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_diffusers_contender_trains_with_our_optimizer_and_clipping(monkeypatch):
    """train_speed_ratio_vs_diffusers compared our fused AdamW with torch's default (the per-parameter loop on a
    CPU): the ratio measured an optimizer flag. The diffusers step now gets the optimizer and clipping the
    Trainer builds from the same TrainerConfig."""
    from diffusion_rl.training import TrainerConfig

    bench = _module()
    built, clipped = [], []
    original_adamw = torch.optim.AdamW

    class Spy(original_adamw):
        def __init__(self, params, **kwargs):
            built.append(kwargs)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, norm: clipped.append(norm))
    config = {"dim": 8, "dim_mults": [1, 2], "horizon": 8, "num_steps": 10}
    same, n = bench._diffusers_step(config, 5, 2, TrainerConfig(batch_size=2, grad_clip=1.0, device="cpu"))
    default, _ = bench._diffusers_step(config, 5, 2)
    assert built[0]["fused"] is True and "fused" not in built[1]
    same()
    default()
    assert clipped == [1.0] and n > 0
    record = bench.machine()
    if (SCRIPT.parents[1] / ".git").exists():  # a git checkout: the commit measured is recorded
        assert len(record["git_commit"] or "") == 40 and isinstance(record["git_dirty"], bool)
    assert record["load_average"] is None or len(record["load_average"]) == 3


def test_a_warm_replan_of_the_decision_diffuser_preset_counts_its_network_evaluations():
    """planning_hz_cpu times the preset's warm replanning: DPM-Solver++ 5 over T = 100 has one grid step below
    t = 30, so a warm decision is one guided evaluation, five from noise; the benchmark now reports both."""
    bench = _module()
    obs, obs_dim, act_dim = bench._first_observation("hopper-medium")
    cpu = bench._preset_policy("decision_diffuser", "env", "hopper-medium", None, obs_dim, act_dim)
    assert (cpu.sampling["sampler"], cpu.sampling["steps"], cpu.sampling["warm_start_t"]) == ("dpmsolver++", 5, 30)
    assert bench._evaluations_per_decision(cpu, obs) == 5
    assert bench._evaluations_per_decision(cpu, obs, warm=True) == 1


def test_planning_reports_the_full_chain_against_the_presets_replanning_on_one_network(monkeypatch):
    """full_ddpm_speedup_cpu: the preset's warm replanning against DDPM over all of the same network's T steps
    (with an artifact trained at T = 200, the paper setting's ratio on a model scored on a CPU). Run here on
    small networks of both presets: every figure there, and the ratios are those of the rates reported."""
    from omegaconf import OmegaConf

    bench = _module()
    build = bench._preset_policy
    small = {"dim": 8, "dim_mults": [1, 2], "horizon": 8, "num_steps": 40}
    monkeypatch.setattr(bench, "_preset_policy", lambda *args, **kwargs: build(*args, **kwargs, model=small))
    cfg = OmegaConf.create({"rounds": 1, "calls": 1, "warm_start_t": None, "policy_decision_diffuser": None,
                            "policy_decision_diffuser_paper": None})
    result = bench.planning(cfg)
    cpu, paper = result["cpu_network"], result["paper_network"]
    assert cpu["full_ddpm_steps"] == 40 and paper["evaluations_paper_setting"] == 40
    assert cpu["full_ddpm_speedup_cpu"] == pytest.approx(cpu["planning_hz_cpu"] / cpu["full_ddpm_hz"])
    assert cpu["planning_hz_cpu"] == cpu["warm_hz"] and cpu["evaluations_cold"] == 5
    assert cpu["evaluations_warm"] == 3  # DPM-Solver++ 5 over T = 40 runs 39, 31, 23, 16, 8: three below t = 30
    assert paper["planning_speedup_cpu"] == pytest.approx(paper["paper_setting_s"] / (paper["fast_ms"] / 1e3))
    assert paper["one_step_speedup_cpu"] == pytest.approx(paper["paper_setting_s"] / (paper["one_step_ms"] / 1e3))
    assert "T = 40" in cpu["setting"] and "ddpm 40 steps" in cpu["setting"]


def test_per_call_interleaving_alternates_contenders_call_by_call():
    """Rounds of ``calls`` training steps (~0.1 s each) outlast a shared machine's slow spells: two runs of one
    commit gave train-speed ratios 0.74 and 1.27. ``per_call`` alternates A B A B, so a spell hits both alike."""
    bench = _module()
    order: list[str] = []

    def timer(name: str, seconds: float):
        def call() -> float:
            order.append(name)
            return seconds
        return call

    t = bench.interleaved({"a": timer("a", 2.0), "b": timer("b", 1.0)}, rounds=2, calls=3, warmup=1, per_call=True)
    assert order == ["a", "b"] + ["a", "b"] * 6 and t == {"a": 2.0, "b": 1.0}
    order.clear()
    bench.interleaved({"a": timer("a", 2.0), "b": timer("b", 1.0)}, rounds=1, calls=2, warmup=0)
    assert order == ["a", "a", "b", "b"]  # by rounds: each contender's calls back to back
