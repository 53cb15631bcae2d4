#!/usr/bin/env python
"""Speed benchmarks: every figure a ratio of contenders measured in one process, interleaved, medians of rounds.

    python scripts/benchmark.py                                  # all benchmarks, table on stdout
    python scripts/benchmark.py benchmarks=[policy_act] rounds=9 out=bench.json

Benchmarks (``BENCHMARKS``):

- ``policy_act``: ``Policy.act`` at batch 1 for Diffusion Policy (``task=point-obstacle``, cpu preset network,
  action queue Ta = 8, DDIM 10) and the Decision Diffuser (``env=hopper-medium``, cpu preset, DDIM 10 with
  guidance), against their floor: the sampler's steps calls, back to back, of the same denoiser as the sampler
  makes them (for guidance, one batched forward of the conditional and unconditional halves). Reported: the
  median time of a call that only pops the queue, of a replanning call, and ``replan / floor``
  (``policy_act_overhead_ratio``); and the replanning call of the same policy with ``compile=True`` (the
  denoiser traced and frozen by TorchScript), as ``compiled_speedup`` = eager / compiled.

Networks are fresh ones of the preset's architecture (speed does not depend on the weights) unless
``policy_<algo>=PATH`` names an artifact. The machine (CPU model, cores, torch and thread count) is recorded with
every result; ``out`` (JSON) is written atomically. Timing is never a test: results go to docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _cli import CONFIG_DIR, check_overrides, run_main  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

Timer = Callable[[], float]
"""A contender: runs one measured call and returns its duration in seconds (set-up excluded)."""

BENCHMARKS: dict[str, Callable[[DictConfig], dict[str, Any]]] = {}


def register(fn: Callable[[DictConfig], dict[str, Any]]) -> Callable[[DictConfig], dict[str, Any]]:
    BENCHMARKS[fn.__name__] = fn
    return fn


def interleaved(contenders: dict[str, Timer], rounds: int, calls: int, warmup: int = 3) -> dict[str, float]:
    """Median call time (seconds) of each contender over ``rounds`` x ``calls`` timed calls; contenders alternate
    round by round, so a slow spell of a shared machine hits all of them alike, and the median ignores the
    calls a preemption lands in."""
    for timer in contenders.values():
        for _ in range(warmup):
            timer()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, timer in contenders.items():
            samples[name].extend(timer() for _ in range(calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
            else None}


def _preset_policy(algo_name: str, target: str, name: str, path: str | None, obs_dim: int, act_dim: int) -> Any:
    """The artifact at ``path``, or a fresh policy of the cpu preset's architecture for the given dimensions, with
    the algorithm's config composed as train_planner.py / train_policy.py compose it (``target`` env or task)."""
    from train_planner import resolve_config

    from diffusion_rl import Policy
    from diffusion_rl.algos import make_algorithm
    from diffusion_rl.data import GaussianNormalizer

    if path:
        return Policy.load(path)
    cfg = OmegaConf.create({
        "preset": "cpu",
        "algo": OmegaConf.load(Path(CONFIG_DIR) / "algo" / f"{algo_name}.yaml"),
        target: OmegaConf.load(Path(CONFIG_DIR) / target / f"{name}.yaml"),
    })
    cfg, _ = resolve_config(cfg, set(), cuda=False, target=target)
    algo_cfg = OmegaConf.to_container(cfg.algo, resolve=True)
    torch.manual_seed(0)
    algo = make_algorithm(algo_name, obs_dim=obs_dim, act_dim=act_dim, **algo_cfg["model"])
    rng = np.random.default_rng(0)
    normalizers = {"observations": GaussianNormalizer().fit(rng.normal(size=(256, obs_dim))),
                   "actions": GaussianNormalizer().fit(rng.normal(size=(256, act_dim)))}
    return Policy(algo.eval(), normalizers, sampling=algo_cfg.get("sampling", {}),
                  execution=algo_cfg.get("execution", "first_action"),
                  execution_options=algo_cfg.get("execution_options", {}), seed=0)


def _denoiser_floor(policy: Any, obs: torch.Tensor, steps: int) -> Timer:
    """The floor of a replanning call: ``steps`` back-to-back calls of the policy's denoiser exactly as its sampler
    makes them at this batch (guidance included), and nothing else."""
    from diffusion_rl.diffusion.guidance import make_model_fn

    algo = policy.algo
    captured: dict[str, Any] = {}
    original = algo.sampler

    def spy(name: str, **options: Any) -> Any:
        sampler = original(name, **options)
        sample = sampler.sample

        def record(denoiser: Any, shape: tuple, **kwargs: Any) -> Any:
            captured.update(denoiser=denoiser, shape=shape, cond=kwargs.get("cond"),
                            guidance=kwargs.get("guidance"))
            return sample(denoiser, shape, **kwargs)

        sampler.sample = record
        return sampler

    algo.sampler = spy
    try:
        policy.reset()
        policy.act(obs)
    finally:
        algo.sampler = original
        policy.reset()
    shape = captured["shape"]
    model = make_model_fn(captured["denoiser"], captured["cond"], captured["guidance"], shape[0], torch.device("cpu"))
    x = torch.randn(shape)
    t = torch.full((shape[0],), 5, dtype=torch.long)

    def call() -> float:
        with torch.no_grad():
            start = time.perf_counter()
            for _ in range(steps):
                model(x, t)
            return time.perf_counter() - start

    return call


def _act_timers(policy: Any, obs: np.ndarray) -> tuple[Timer, Timer | None]:
    """(a replanning act call, an act call that only pops the queue or None without a queue)."""
    queue = policy.execution == "action_queue"

    def replan() -> float:
        policy.reset()
        start = time.perf_counter()
        policy.act(obs)
        return time.perf_counter() - start

    steps = int(policy.execution_options.get("action_steps", 1))
    popped = [steps]

    def pop() -> float:
        """One timed call that pops the queue; the replanning call that refills it (every action_steps calls, as
        in a control loop) is not timed."""
        if popped[0] >= steps - 1:
            policy.reset()
            policy.act(obs)
            popped[0] = 0
        start = time.perf_counter()
        policy.act(obs)
        popped[0] += 1
        return time.perf_counter() - start

    return replan, (pop if queue else None)


@register
def policy_act(cfg: DictConfig) -> dict[str, Any]:
    import gymnasium as gym

    from diffusion_rl.evaluation.rollout import resolve_env

    results: dict[str, Any] = {}
    cases = {"diffusion_policy": ("task", "point-obstacle"), "decision_diffuser": ("env", "hopper-medium")}
    for algo_name, (target, env_name) in cases.items():
        gym_id, _ = resolve_env(env_name)
        env = gym.make(gym_id)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        obs = env.reset(seed=0)[0].astype(np.float32)[None]
        env.close()
        policy = _preset_policy(algo_name, target, env_name, cfg.get(f"policy_{algo_name}"), obs_dim, act_dim)
        steps = int(policy.sampling["steps"])
        replan, pop = _act_timers(policy, obs)
        compiled = type(policy)(policy.algo, policy.normalizers, sampling=policy.sampling,
                                execution=policy.execution, execution_options=policy.execution_options, compile=True)
        replan_compiled, _ = _act_timers(compiled, obs)
        contenders = {"floor": _denoiser_floor(policy, torch.from_numpy(obs), steps), "replan": replan,
                      "replan_compiled": replan_compiled}
        if pop is not None:
            contenders["pop"] = pop
        t = interleaved(contenders, int(cfg.rounds), int(cfg.calls))
        floor = t["floor"]
        results[algo_name] = {
            "setting": f"{env_name}, cpu preset network ({sum(p.numel() for p in policy.algo.parameters()):,} "
                       f"parameters), {policy.sampling['sampler']} {steps} steps, execution {policy.execution}",
            "forward_ms": 1e3 * floor / steps,
            "replan_ms": 1e3 * t["replan"],
            "floor_ms": 1e3 * floor,
            "policy_act_overhead_ratio": t["replan"] / floor,
            "replan_compiled_ms": 1e3 * t["replan_compiled"],
            "compiled_speedup": t["replan"] / t["replan_compiled"],
            **({"pop_ms": 1e3 * t["pop"]} if "pop" in t else {}),
        }
    return results


def _print_table(results: dict[str, Any]) -> None:
    print("| benchmark | case | metric | value |\n|---|---|---|---|")
    for bench, cases in results.items():
        for case, metrics in cases.items():
            for key, value in metrics.items():
                shown = f"{value:.4g}" if isinstance(value, float) else str(value)
                print(f"| {bench} | {case} | {key} | {shown} |")


@hydra.main(config_path=CONFIG_DIR, config_name="benchmark", version_base="1.3")
def main(cfg: DictConfig) -> None:
    unknown = [b for b in cfg.benchmarks if b not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"error: unknown benchmark(s) {unknown}; expected some of: {', '.join(BENCHMARKS)}")
    for key in ("rounds", "calls", "threads"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise SystemExit(f"error: {key} must be an integer >= 1, got {cfg[key]!r}")
    torch.set_num_threads(int(cfg.threads))
    results = {name: BENCHMARKS[name](cfg) for name in cfg.benchmarks}
    report = {"command": "python scripts/benchmark.py " + " ".join(sys.argv[1:]), "machine": machine(),
              "rounds": int(cfg.rounds), "calls": int(cfg.calls), "results": results}
    print(json.dumps(report["machine"]))
    _print_table(results)
    if cfg.out:
        from diffusion_rl.evaluation._files import write_text_atomic

        write_text_atomic(Path(cfg.out), json.dumps(report, indent=2) + "\n")
        print(f"written: {cfg.out}")


if __name__ == "__main__":
    check_overrides("benchmark")
    run_main(main)
