#!/usr/bin/env python
"""Speed benchmarks: every figure a ratio of contenders measured in one process, interleaved, medians of rounds.

    python scripts/benchmark.py                                  # all benchmarks, table on stdout
    python scripts/benchmark.py benchmarks=[policy_act] rounds=9 out=bench.json
    python scripts/benchmark.py benchmarks=[planning,train_speed] out=bench.json
    python scripts/benchmark.py benchmarks=[cuda] out=bench_cuda.json     # on a GPU machine

Benchmarks (``BENCHMARKS``):

- ``policy_act``: ``Policy.act`` at batch 1 for Diffusion Policy (``task=point-obstacle``, cpu preset network,
  action queue Ta = 8, DDIM 10) and the Decision Diffuser (``env=hopper-medium``, cpu preset, its sampler with
  guidance: DPM-Solver++ 5), against their floor: the sampler's steps calls, back to back, of the same denoiser
  as the sampler makes them (for guidance, one batched forward of the conditional and unconditional halves).
  Reported: the median time of a call that only pops the queue, of a replanning call, and ``replan / floor``
  (``policy_act_overhead_ratio``); and the replanning call of the same policy with ``compile=True`` (the
  denoiser traced and frozen by TorchScript), as ``compiled_speedup`` = eager / compiled.
- ``planning``: decisions per second at batch 1 of the hopper Decision Diffuser. ``planning_speedup_cpu``: the
  paper's network with our fast settings (the cpu preset's sampler and steps, ``compile=True``) against the
  paper's setting (DDPM over all 200 steps with guidance), one call per round. ``planning_hz_cpu``: the cpu
  preset's network replanning as the preset does (``compile=True``; warm-started where the preset sets
  ``warm_start_t``); beside it the cold compiled and eager rates, the warm-started rate (``warm_start_t``, the
  preset's unless given) and the rate of a distilled student of the same network (one evaluation, no guidance
  pass).
- ``process`` (not in the default list): decisions per second of the cpu-preset hopper Decision Diffuser and
  Diffuser as diffusion models and on the flow-matching path (``algo.model.process=flow``), same sampler and
  steps (``flow_over_diffusion``).
- ``train_speed``: training samples per second of our Diffuser at Janner's hopper configuration (temporal U-Net
  dim 32, mults 1-2-4-8, H = 32, batch 32, 3,956,302 parameters) through ``Trainer``'s step, eager and with
  ``TrainerConfig.compile``, against diffusers' ``UNet1DModel`` built to the same architecture and trained with
  its ``DDPMScheduler`` noising, an MSE loss and the same optimizer and clipping as ours (the Trainer's fused
  AdamW; ``train_speed_ratio_vs_diffusers``); both compiled (``compiled_ratio_vs_diffusers_compiled``: ours with
  ``TrainerConfig.compile``, theirs with the network and loss ``torch.compile``d); beside them diffusers with
  torch's default AdamW, for reference; and ours with every convolution oneDNN's (``gemm_path_speedup``) and with
  every short wide one a matrix product (``gemm_rule_speedup``), which weigh ``ShortConv1d``'s choice on this
  CPU. Contenders alternate call by call (a training step is long enough that
  rounds of calls let a shared machine's slow spells favour one side).
- ``cuda`` (not in the default list; needs a CUDA device): ``planning_hz_cuda`` of the hopper Decision Diffuser
  (cpu preset and paper networks) at batch 1 and 64, eager, as a CUDA graph (``compile=True``) and as a CUDA graph
  in bfloat16; a Diffusion Policy replanning call eager and as a CUDA graph; ``train_samples_per_s_cuda`` of the
  paper Decision Diffuser (bf16 autocast against float32).

Networks are fresh ones of the preset's architecture (speed does not depend on the weights) unless
``policy_<algo>=PATH`` names an artifact. The machine (CPU model, cores, torch and thread count) is recorded with
every result, with the git commit measured (and whether the work tree differed from it) and the load average;
``out`` (JSON) is written atomically. Timing is never a test: results go to docs/benchmarks.md.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
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


def interleaved(contenders: dict[str, Timer], rounds: int, calls: int, warmup: int = 3,
                per_call: bool = False) -> dict[str, float]:
    """Median call time (seconds) of each contender over ``rounds`` x ``calls`` timed calls; contenders alternate
    round by round, so a slow spell of a shared machine hits all of them alike, and the median ignores the
    calls a preemption lands in.

    ``per_call``: contenders alternate call by call instead (A B C A B C ...), for calls long enough (a training
    step, ~0.1 s) that a round of ``calls`` of them outlasts the spells of a shared machine: two runs of one
    commit gave ratios 0.74 and 1.27 by rounds, because a spell covered one contender's round and not the
    other's."""
    for timer in contenders.values():
        for _ in range(warmup):
            timer()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        if per_call:
            gc.collect()
            for _ in range(calls):
                for name, timer in contenders.items():
                    samples[name].append(timer())
        else:
            for name, timer in contenders.items():
                gc.collect()  # the garbage of the contender before is not collected on this one's time
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
            else None, "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), **_revision()}


def _revision() -> dict[str, Any]:
    """The code measured: the git commit, and whether the work tree differed from it (a figure then belongs to no
    commit)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def _preset_policy(algo_name: str, target: str, name: str, path: str | None, obs_dim: int, act_dim: int,
                   preset: str = "cpu", model: dict[str, Any] | None = None) -> Any:
    """The artifact at ``path``, or a fresh policy of the ``preset``'s architecture for the given dimensions, with
    the algorithm's config composed as train_planner.py / train_policy.py compose it (``target`` env or task) and
    ``model`` settings changed (as ``algo.model.<key>=<value>`` on their command line)."""
    from train_planner import resolve_config

    from diffusion_rl import Policy
    from diffusion_rl.algos import make_algorithm
    from diffusion_rl.data import GaussianNormalizer

    if path:  # on the CPU: these figures are the CPU ones (the cuda benchmark moves its policies itself)
        return Policy.load(path, device="cpu")
    cfg = OmegaConf.create({
        "preset": preset,
        "algo": OmegaConf.load(Path(CONFIG_DIR) / "algo" / f"{algo_name}.yaml"),
        target: OmegaConf.load(Path(CONFIG_DIR) / target / f"{name}.yaml"),
    })
    cfg, _ = resolve_config(cfg, set(), cuda=False, target=target)
    algo_cfg = OmegaConf.to_container(cfg.algo, resolve=True)
    algo_cfg["model"].update(model or {})
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


def _first_observation(env_name: str) -> tuple[np.ndarray, int, int]:
    """``env_name``'s first observation ``[1, obs_dim]`` (reset seed 0) and its observation and action sizes."""
    import gymnasium as gym

    from diffusion_rl.evaluation.rollout import resolve_env

    gym_id, _ = resolve_env(env_name)
    env = gym.make(gym_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    obs = env.reset(seed=0)[0].astype(np.float32)[None]
    env.close()
    return obs, obs_dim, act_dim


def _with_sampling(policy: Any, compile: bool | str = False, precision: str = "float32", **sampling: Any) -> Any:
    """A Policy over the same network and normalizers with some sampler settings changed (``compile`` and
    ``precision`` as in ``Policy``: True traces the denoiser on CPU and captures a CUDA graph on CUDA)."""
    return type(policy)(policy.algo, policy.normalizers, sampling={**policy.sampling, **sampling},
                        execution=policy.execution, execution_options=policy.execution_options, compile=compile,
                        precision=precision)


def _evaluations_per_decision(policy: Any, obs: np.ndarray, warm: bool = False) -> int:
    """How many times one decision runs the network (a guided pair counts once: one batched forward), on the eager
    path; ``warm``: a replanning call after a first decision, as :func:`_warm_timer` times it."""
    eager = type(policy)(policy.algo, policy.normalizers, sampling=dict(policy.sampling),
                         execution=policy.execution, execution_options=policy.execution_options)
    calls = []
    handle = eager.algo.net.register_forward_hook(lambda *_: calls.append(1))
    try:
        eager.reset()
        if warm:
            eager.act(obs)
            calls.clear()
        eager.act(obs)
    finally:
        handle.remove()
    return len(calls)


def _warm_timer(policy: Any, obs: np.ndarray) -> Timer:
    """A replanning call that starts from the previous decision's plan (``warm_start_t`` set): the first call of
    an episode plans from noise and is not timed."""
    policy.reset()
    policy.act(obs)

    def call() -> float:
        start = time.perf_counter()
        policy.act(obs)
        return time.perf_counter() - start

    return call


@register
def policy_act(cfg: DictConfig) -> dict[str, Any]:
    results: dict[str, Any] = {}
    cases = {"diffusion_policy": ("task", "point-obstacle"), "decision_diffuser": ("env", "hopper-medium")}
    for algo_name, (target, env_name) in cases.items():
        obs, obs_dim, act_dim = _first_observation(env_name)
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


# a distilled student's sampling (scripts/distill.py): one network evaluation from noise, no guidance pass
ONE_STEP = {"sampler": "consistency", "steps": 1, "guidance_weight": 0.0, "warm_start_t": None}


@register
def planning(cfg: DictConfig) -> dict[str, Any]:
    """Decisions per second of the hopper Decision Diffuser at batch 1: our fast settings (the cpu preset's sampler
    and steps, denoiser compiled) against the paper's setting (DDPM over all 200 steps, guidance) on the paper's
    network (``planning_speedup_cpu``), and the cpu-preset network with the fast settings, cold and warm-started
    (``planning_hz_cpu``); on both networks also a distilled student's one network evaluation per decision
    (``one_step_speedup_cpu``, ``one_step_hz``).

    ``full_ddpm_speedup_cpu``: on the cpu-preset network (or the artifact ``policy_decision_diffuser``), the
    preset's replanning (warm-started, compiled) against DDPM over all of its T steps with guidance, eager: with
    an artifact trained with ``algo.model.num_steps=200`` this is the paper setting's ratio on a model whose scores
    with both settings can be measured on a CPU (docs/results.md)."""
    obs, obs_dim, act_dim = _first_observation("hopper-medium")
    cpu = _preset_policy("decision_diffuser", "env", "hopper-medium", cfg.get("policy_decision_diffuser"),
                         obs_dim, act_dim)
    fast = {"sampler": cpu.sampling["sampler"], "steps": int(cpu.sampling["steps"])}
    paper = _preset_policy("decision_diffuser", "env", "hopper-medium", cfg.get("policy_decision_diffuser_paper"),
                           obs_dim, act_dim, preset="paper")
    full = _with_sampling(paper, sampler="ddpm", steps=None)
    paper_fast = _with_sampling(paper, compile=True, **fast)
    # the slow contender takes ~20 s a call on one core: one call per round, one warm-up
    slow = interleaved({"paper_setting": _act_timers(full, obs)[0], "fast": _act_timers(paper_fast, obs)[0],
                        "one_step": _act_timers(_with_sampling(paper, compile=True, **ONE_STEP), obs)[0]},
                       int(cfg.rounds), 1, warmup=1)
    # the preset's own replanning (warm-started where it sets warm_start_t) is what a user's Policy runs
    preset_warm = cpu.sampling.get("warm_start_t")
    warm_t = int(cfg.warm_start_t if cfg.warm_start_t is not None else preset_warm if preset_warm is not None else 20)
    contenders = {
        "full_ddpm": _act_timers(_with_sampling(cpu, sampler="ddpm", steps=None), obs)[0],
        "fast": _act_timers(_with_sampling(cpu, compile=True, **fast), obs)[0],
        "fast_eager": _act_timers(_with_sampling(cpu, **fast), obs)[0],
        "fast_warm": _warm_timer(_with_sampling(cpu, compile=True, warm_start_t=warm_t, **fast), obs),
        # what Policy.load gives by default (compile=False): the preset's replanning, eager
        "fast_warm_eager": _warm_timer(_with_sampling(cpu, warm_start_t=warm_t, **fast), obs),
        "one_step": _act_timers(_with_sampling(cpu, compile=True, **ONE_STEP), obs)[0],
    }
    if preset_warm is not None and warm_t != int(preset_warm):  # planning_hz_cpu stays the preset's own rate
        contenders["preset_warm"] = _warm_timer(_with_sampling(cpu, compile=True, warm_start_t=int(preset_warm),
                                                               **fast), obs)
    t = interleaved(contenders, int(cfg.rounds), int(cfg.calls))
    planning_hz_key = "preset_warm" if "preset_warm" in t else "fast_warm" if preset_warm is not None else "fast"
    params = {name: sum(p.numel() for p in policy.algo.parameters()) for name, policy in (("paper", paper),
                                                                                           ("cpu", cpu))}
    return {
        "paper_network": {
            "setting": f"hopper-medium Decision Diffuser, paper network ({params['paper']:,} parameters, "
                       f"T = {paper.algo.schedule.num_steps}); paper setting: ddpm {paper.algo.schedule.num_steps} "
                       f"steps, guidance w = {paper.sampling['guidance_weight']}; fast: {fast['sampler']} "
                       f"{fast['steps']} steps, compile=True",
            "paper_setting_s": slow["paper_setting"],
            "evaluations_paper_setting": paper.algo.schedule.num_steps,
            "evaluations_fast": int(fast["steps"]),
            "fast_ms": 1e3 * slow["fast"],
            "planning_speedup_cpu": slow["paper_setting"] / slow["fast"],
            "one_step_ms": 1e3 * slow["one_step"],
            "one_step_speedup_cpu": slow["paper_setting"] / slow["one_step"],
        },
        "cpu_network": {
            "setting": f"hopper-medium Decision Diffuser, cpu preset network ({params['cpu']:,} parameters, "
                       f"T = {cpu.algo.schedule.num_steps}), {fast['sampler']} {fast['steps']} steps with guidance; "
                       f"warm: warm_start_t={warm_t}; full_ddpm: ddpm {cpu.algo.schedule.num_steps} steps with "
                       "guidance, eager",
            "preset_warm_start_t": preset_warm,
            "fast_ms": 1e3 * t["fast"],
            "planning_hz_cpu": 1.0 / t[planning_hz_key],
            "cold_hz": 1.0 / t["fast"],
            "eager_hz": 1.0 / t["fast_eager"],
            "warm_hz": 1.0 / t["fast_warm"],
            "warm_eager_hz": 1.0 / t["fast_warm_eager"],
            "one_step_hz": 1.0 / t["one_step"],
            "full_ddpm_steps": cpu.algo.schedule.num_steps,
            "full_ddpm_hz": 1.0 / t["full_ddpm"],
            "full_ddpm_speedup_cpu": t["full_ddpm"] / t[planning_hz_key],
            # network evaluations per decision (a guided pair is one batched forward): a warm replan runs only
            # the sampler's steps below warm_start_t
            "evaluations_cold": _evaluations_per_decision(_with_sampling(cpu, **fast), obs),
            "evaluations_warm": _evaluations_per_decision(_with_sampling(cpu, warm_start_t=warm_t, **fast), obs,
                                                          warm=True),
        },
    }


@register
def process(cfg: DictConfig) -> dict[str, Any]:
    """Decisions per second at batch 1 of the hopper Decision Diffuser and Diffuser (cpu preset networks, each
    preset's own sampling: guidance, value-guided plans, inpainting) built as diffusion models against the same
    networks on the flow-matching path (``algo.model.process=flow``), sampled with the same sampler and steps:
    ``flow_over_diffusion`` is the flow model's rate divided by the diffusion model's."""
    obs, obs_dim, act_dim = _first_observation("hopper-medium")
    results: dict[str, Any] = {}
    for algo_name in ("decision_diffuser", "diffuser"):
        policies = {kind: _preset_policy(algo_name, "env", "hopper-medium", None, obs_dim, act_dim,
                                         model={"process": kind}) for kind in ("diffusion", "flow")}
        t = interleaved({kind: _act_timers(policy, obs)[0] for kind, policy in policies.items()},
                        int(cfg.rounds), int(cfg.calls))
        sampling = policies["diffusion"].sampling
        results[algo_name] = {
            "setting": f"hopper-medium {algo_name}, cpu preset network, {sampling['sampler']} "
                       f"{sampling.get('steps') or 'all'} steps, eager",
            "diffusion_hz": 1.0 / t["diffusion"], "flow_hz": 1.0 / t["flow"],
            "flow_over_diffusion": t["diffusion"] / t["flow"],
        }
    return results


def _random_store(obs_dim: int, act_dim: int, episodes: int = 8, length: int = 250) -> Any:
    """An episode store of random transitions (training speed does not depend on the data's values)."""
    from diffusion_rl.data import EpisodeStore

    rng = np.random.default_rng(0)
    n = episodes * length
    data = {"observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32),
            "terminals": np.zeros(n, dtype=bool), "timeouts": np.zeros(n, dtype=bool)}
    return EpisodeStore(data, np.arange(1, episodes + 1) * length)


def _diffusers_step(config: dict[str, Any], transition_dim: int, batch: int,
                    optimizer_config: Any | None = None, compile: bool = False) -> tuple[Timer, int]:
    """One training step of diffusers' ``UNet1DModel`` built as Janner's temporal U-Net (the configuration of
    diffusers' value-guided hopper pipeline), with its ``DDPMScheduler`` noising and an MSE loss on x0.

    ``optimizer_config`` (a ``TrainerConfig``): the optimizer and gradient clipping our ``Trainer`` builds from it
    (fused AdamW, the same betas and weight decay), so that a ratio compares networks and data paths, not optimizer
    flags; None: torch's default AdamW without clipping, what a plain diffusers training loop gets. ``compile``:
    the network's forward and the loss ``torch.compile``d, as ``TrainerConfig.compile`` does ours."""
    from diffusers import DDPMScheduler, UNet1DModel

    from diffusion_rl.training.trainer import _build_optimizer

    depth = len(config["dim_mults"])
    net = UNet1DModel(
        in_channels=transition_dim, out_channels=transition_dim, extra_in_channels=0,
        block_out_channels=tuple(config["dim"] * m for m in config["dim_mults"]),
        down_block_types=("DownResnetBlock1D",) * depth, up_block_types=("UpResnetBlock1D",) * (depth - 1),
        mid_block_type="MidResTemporalBlock1D", out_block_type="OutConv1DBlock", act_fn="mish",
        time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=1, use_timestep_embedding=True,
        norm_num_groups=8, layers_per_block=1, downsample_each_block=False, sample_size=65536,
    )
    scheduler = DDPMScheduler(num_train_timesteps=config["num_steps"], beta_schedule="squaredcos_cap_v2",
                              prediction_type="sample")
    if optimizer_config is None:
        optimizer, clip = torch.optim.AdamW(net.parameters(), lr=2e-4), None
    else:
        optimizer, clip = _build_optimizer(net, optimizer_config, torch.device("cpu")), optimizer_config.grad_clip
    x0 = torch.randn(batch, transition_dim, config["horizon"])

    def loss(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(net(noisy, t).sample, x0)

    loss_fn = torch.compile(loss) if compile else loss

    def call() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        noise = torch.randn_like(x0)
        t = torch.randint(0, config["num_steps"], (batch,))
        loss_fn(scheduler.add_noise(x0, noise, t), t).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        return time.perf_counter() - start

    return call, sum(p.numel() for p in net.parameters())


@register
def train_speed(cfg: DictConfig) -> dict[str, Any]:
    """Training samples per second of our Diffuser (Janner's hopper configuration: temporal U-Net dim 32, mults
    1-2-4-8, H = 32, batch 32, no value net) through ``Trainer``'s step (windows sampled by index arithmetic,
    fused AdamW, clipping at 1.0), eager and with ``TrainerConfig.compile``, against diffusers' ``UNet1DModel`` of
    the same architecture with the same optimizer and clipping (``train_speed_ratio_vs_diffusers``)."""
    from diffusion_rl.algos import make_algorithm
    from diffusion_rl.data import SequenceDataset
    from diffusion_rl.training import Trainer, TrainerConfig

    model_cfg = dict(OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "algo" / "diffuser.yaml").model))
    model_cfg["value_guided"] = False
    obs_dim, act_dim, batch = 11, 3, 32
    data = SequenceDataset(_random_store(obs_dim, act_dim), model_cfg["horizon"], returns=False)

    # the step users train with: the Trainer's optimizer (fused AdamW) and the algo configs' gradient clipping
    trainer_cfg = {"batch_size": batch, "grad_clip": 1.0, "device": "cpu", "progress": False}

    def ours(compile: bool) -> tuple[Timer, int]:
        torch.manual_seed(0)
        algo = make_algorithm("diffuser", obs_dim=obs_dim, act_dim=act_dim, **model_cfg)
        trainer = Trainer(algo, data, TrainerConfig(**trainer_cfg, compile=compile))

        def call() -> float:
            start = time.perf_counter()
            trainer._train_step()
            return time.perf_counter() - start

        return call, sum(p.numel() for p in algo.parameters())

    from diffusion_rl.nets.layers import ShortConv1d

    (eager, n_ours), (compiled, _) = ours(False), ours(True)

    def with_gemm_rule(max_length: int, max_rows: int | None) -> Timer:
        step, _ = ours(False)

        def call() -> float:
            default = ShortConv1d.max_length, ShortConv1d.max_rows
            ShortConv1d.max_length, ShortConv1d.max_rows = max_length, max_rows
            try:
                return step()
            finally:
                ShortConv1d.max_length, ShortConv1d.max_rows = default

        return call

    # the same step with every convolution oneDNN's, and with every short wide one a matrix product
    plain, gemm_everywhere = with_gemm_rule(0, None), with_gemm_rule(ShortConv1d.max_length, None)
    theirs, n_theirs = _diffusers_step(model_cfg, obs_dim + act_dim, batch, TrainerConfig(**trainer_cfg))
    theirs_compiled, _ = _diffusers_step(model_cfg, obs_dim + act_dim, batch, TrainerConfig(**trainer_cfg),
                                         compile=True)
    theirs_default, _ = _diffusers_step(model_cfg, obs_dim + act_dim, batch)
    if n_ours != n_theirs:
        raise SystemExit(f"error: train_speed compares different networks ({n_ours:,} against {n_theirs:,} "
                         "parameters): the diffusers contender no longer matches configs/algo/diffuser.yaml")
    contenders = {"ours": eager, "ours_compiled": compiled, "ours_plain_conv": plain,
                  "ours_gemm_everywhere": gemm_everywhere, "diffusers": theirs,
                  "diffusers_compiled": theirs_compiled, "diffusers_default_adamw": theirs_default}
    t = interleaved(contenders, int(cfg.rounds), int(cfg.calls), warmup=3, per_call=True)
    return {"diffuser_hopper": {
        "setting": f"temporal U-Net dim {model_cfg['dim']}, mults {model_cfg['dim_mults']}, H = "
                   f"{model_cfg['horizon']}, batch {batch}, {n_ours:,} parameters on both sides; both: fused AdamW "
                   "and gradient clipping at 1.0 (the Trainer's); diffusers_default_adamw: torch's default AdamW, "
                   "no clipping",
        "ours_samples_per_s": batch / t["ours"],
        "ours_compiled_samples_per_s": batch / t["ours_compiled"],
        "ours_plain_conv_samples_per_s": batch / t["ours_plain_conv"],
        "ours_gemm_everywhere_samples_per_s": batch / t["ours_gemm_everywhere"],
        "diffusers_samples_per_s": batch / t["diffusers"],
        "diffusers_compiled_samples_per_s": batch / t["diffusers_compiled"],
        "diffusers_default_adamw_samples_per_s": batch / t["diffusers_default_adamw"],
        "train_speed_ratio_vs_diffusers": t["diffusers"] / t["ours"],
        "compiled_ratio_vs_diffusers_compiled": t["diffusers_compiled"] / t["ours_compiled"],
        "gemm_path_speedup": t["ours_plain_conv"] / t["ours"],
        "gemm_rule_speedup": t["ours_gemm_everywhere"] / t["ours"],
        "compile_speedup": t["ours"] / t["ours_compiled"],
    }}


@register
def cuda(cfg: DictConfig) -> dict[str, Any]:
    """GPU figures (needs a CUDA device): ``planning_hz_cuda`` of the hopper Decision Diffuser (cpu preset and
    paper networks, the preset's fast sampler with guidance) at batch 1 and 64, eager, CUDA graph
    (``compile=True``: the whole plan captured as one graph), CUDA graph in bfloat16, and CUDA graph replanning
    warm where the preset sets ``warm_start_t`` (``_warm``; the others plan from noise); a Diffusion Policy
    replanning call (point-obstacle, cpu preset network) eager, as a CUDA graph, as a CUDA graph of TorchInductor's
    kernels (``compile="inductor"``) and as a CUDA graph of two steps (a two-step student's cost); and
    ``train_samples_per_s_cuda`` of the paper Decision Diffuser's training step (bf16 autocast, fused AdamW)
    against the same step in float32."""
    if not torch.cuda.is_available():
        raise SystemExit("error: benchmark cuda needs a CUDA device; this machine has none")
    from diffusion_rl.algos import make_algorithm
    from diffusion_rl.data import SequenceDataset
    from diffusion_rl.training import Trainer, TrainerConfig

    results: dict[str, Any] = {}
    obs, obs_dim, act_dim = _first_observation("hopper-medium")
    fast: dict[str, Any] = {}
    for preset in ("cpu", "paper"):  # both networks at the cpu preset's fast sampler and steps
        base = _preset_policy("decision_diffuser", "env", "hopper-medium",
                              cfg.get("policy_decision_diffuser" if preset == "cpu" else
                                      "policy_decision_diffuser_paper"), obs_dim, act_dim, preset=preset).to("cuda")
        fast = fast or {"sampler": base.sampling["sampler"], "steps": int(base.sampling["steps"])}
        row: dict[str, Any] = {"setting": f"hopper-medium Decision Diffuser, {preset} network "
                               f"({sum(p.numel() for p in base.algo.parameters()):,} parameters), "
                               f"{fast['sampler']} {fast['steps']} steps with guidance"}
        for batch in (1, 64):
            obs_b = np.repeat(obs, batch, axis=0)
            contenders = {
                "eager": _act_timers(_with_sampling(base, **fast), obs_b)[0],
                "graph": _act_timers(_with_sampling(base, compile=True, **fast), obs_b)[0],
                "graph_bf16": _act_timers(_with_sampling(base, compile=True, precision="bfloat16", **fast), obs_b)[0],
            }
            if base.sampling.get("warm_start_t") is not None:  # the preset replans warm: time that too
                contenders["graph_warm"] = _warm_timer(_with_sampling(base, compile=True, **fast), obs_b)
            t = interleaved(contenders, int(cfg.rounds), int(cfg.calls))
            row.update({f"planning_hz_cuda_b{batch}_eager": 1.0 / t["eager"],
                        f"planning_hz_cuda_b{batch}": 1.0 / t["graph"],
                        f"planning_hz_cuda_b{batch}_bf16": 1.0 / t["graph_bf16"]})
            if "graph_warm" in t:
                row[f"planning_hz_cuda_b{batch}_warm"] = 1.0 / t["graph_warm"]
        results[f"decision_diffuser_{preset}"] = row
    obs, obs_dim, act_dim = _first_observation("point-obstacle")
    dp = _preset_policy("diffusion_policy", "task", "point-obstacle", cfg.get("policy_diffusion_policy"),
                        obs_dim, act_dim).to("cuda")
    t = interleaved({"eager": _act_timers(dp, obs)[0], "graph": _act_timers(_with_sampling(dp, compile=True), obs)[0],
                     # TorchInductor's fused kernels under the same whole-call graph (compiles on its first call)
                     "inductor": _act_timers(_with_sampling(dp, compile="inductor"), obs)[0],
                     # two evaluations per replan: what a two-step distilled student (scripts/distill.py) costs
                     "graph_2": _act_timers(_with_sampling(dp, compile=True, steps=2), obs)[0]},
                    int(cfg.rounds), int(cfg.calls))
    results["diffusion_policy"] = {"setting": f"point-obstacle, cpu preset network, {dp.sampling['sampler']} "
                                              f"{dp.sampling['steps']} steps, batch 1",
                                   "replan_ms_cuda_eager": 1e3 * t["eager"], "replan_ms_cuda_graph": 1e3 * t["graph"],
                                   "replan_ms_cuda_inductor_graph": 1e3 * t["inductor"],
                                   "replan_ms_cuda_graph_2_steps": 1e3 * t["graph_2"]}
    model_cfg = dict(OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "algo" / "decision_diffuser.yaml").model))
    data = SequenceDataset(_random_store(11, 3, episodes=16, length=400), int(model_cfg["horizon"]), returns=True)

    def step(mixed_precision: str) -> Timer:
        torch.manual_seed(0)
        algo = make_algorithm("decision_diffuser", obs_dim=11, act_dim=3, **model_cfg)
        trainer = Trainer(algo, data, TrainerConfig(batch_size=64, device="cuda", progress=False,
                                                   mixed_precision=mixed_precision))

        def call() -> float:
            torch.cuda.synchronize()
            start = time.perf_counter()
            trainer._train_step()
            torch.cuda.synchronize()
            return time.perf_counter() - start

        return call

    t = interleaved({"bf16": step("bf16"), "fp32": step("no")}, int(cfg.rounds), int(cfg.calls))
    results["train_decision_diffuser_paper"] = {"setting": "paper Decision Diffuser network, H = "
                                                           f"{model_cfg['horizon']}, batch 64, fused AdamW",
                                                "train_samples_per_s_cuda": 64 / t["bf16"],
                                                "train_samples_per_s_cuda_fp32": 64 / t["fp32"]}
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
              "rounds": int(cfg.rounds), "calls": int(cfg.calls), "results": results,
              "reportable": int(cfg.rounds) >= 5}  # figures for docs/benchmarks.md take medians of >= 5 rounds
    print(json.dumps(report["machine"]))
    _print_table(results)
    if not report["reportable"]:
        print(f"note: rounds={cfg.rounds} < 5: a quick look, not figures to report (out records reportable: false)")
    if cfg.out:
        from diffusion_rl.evaluation._files import write_text_atomic

        write_text_atomic(Path(cfg.out), json.dumps(report, indent=2) + "\n")
        print(f"written: {cfg.out}")


if __name__ == "__main__":
    check_overrides("benchmark")
    run_main(main)
