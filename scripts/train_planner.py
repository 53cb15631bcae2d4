#!/usr/bin/env python
"""Train a diffusion planner on an offline dataset and score it in MuJoCo.

    python scripts/train_planner.py env=hopper-medium
    python scripts/train_planner.py env=hopper-medium algo=diffuser trainer.max_steps=200 eval.episodes=2
    python scripts/train_planner.py env=maze2d-umaze algo=diffuser preset=cpu
    python scripts/train_planner.py dataset=/path/to/hopper-medium-v2.hdf5

Composition (later wins): the algo's paper defaults < the preset (cpu: small network and budget) < the env's
per-algorithm overrides < the env's per-algorithm overrides for the chosen preset
(``algo_overrides.<algo>.presets.<preset>``, e.g. the cpu preset's sampling for one env) < anything set on
the command line. The dataset is made locally when missing.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from _cli import (  # noqa: E402
    CONFIG_DIR,
    check_overrides,
    run_main,
    sampling_overrides_as_additions,
    score_lines,
    to_plain,
    user_override_keys,
)
from omegaconf import DictConfig, OmegaConf  # noqa: E402

PRESETS = ("auto", "paper", "cpu")


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def resolve_config(cfg: DictConfig, user_keys: set[str], cuda: bool, target: str = "env") -> tuple[DictConfig, str]:
    """Apply the preset and the env's (or task's: ``target="task"``) per-algorithm overrides under the user's
    command-line values."""
    preset = cfg.preset
    if preset not in PRESETS:
        raise SystemExit(f"error: unknown preset {preset!r}; expected one of: {', '.join(PRESETS)}")
    if preset == "auto":
        preset = "paper" if cuda else "cpu"
    layers = []
    if preset != "paper":
        layers.append(("algo.", to_plain(cfg.algo.get("presets", {})).get(preset, {})))
    env_over = dict(to_plain(cfg[target].get("algo_overrides", {}) or {}).get(cfg.algo.name, {}) or {})
    env_presets = env_over.pop("presets", None) or {}
    unknown = sorted(set(env_presets) - {"paper", "cpu"})
    if unknown:
        raise SystemExit(f"error: {target} config {cfg[target].get('name')!r}: algo_overrides.{cfg.algo.name}.presets "
                         f"has unknown preset(s) {unknown}; expected paper or cpu")
    layers.append(("algo.", env_over))
    layers.append(("algo.", env_presets.get(preset, {}) or {}))
    for prefix, tree in layers:
        for path, value in _leaves(tree):
            full = prefix + path
            if not any(full == k or full.startswith(k + ".") for k in user_keys):
                OmegaConf.update(cfg, full, value, force_add=True)
    return cfg, preset


def trainer_settings(cfg: DictConfig, user_keys: set[str]) -> dict[str, Any]:
    """The trainer settings of a resolved config: the algorithm's (preset and env layers applied), then the
    top-level ``trainer`` section's, where null means "the preset's" -- except a null the user set on a setting
    for which None means something (``trainer.grad_clip=null``: no clipping)."""
    from diffusion_rl.training import TrainerConfig

    nullable = {f.name for f in dataclasses.fields(TrainerConfig) if f.default is None or "None" in str(f.type)}
    trainer = dict(to_plain(cfg.algo.trainer))
    trainer.update({k: v for k, v in to_plain(cfg.trainer).items()
                    if v is not None or (k in nullable and f"trainer.{k}" in user_keys)})
    return trainer


EVAL_SEED_BASE, EVAL_SEED_STRIDE = 1_000_000_000, 10_000
"""``eval.seed: null`` scores training seed k on episodes reset with ``EVAL_SEED_BASE + EVAL_SEED_STRIDE * k + i``:
disjoint across seeds (the spread over seeds then holds the evaluation noise too), fixed per seed (reruns score the
same episodes), and far from the reset seeds demonstrations are made with (``100000 + i``: a robot task is never
scored on the scenes it learned from). Below 2**32, as Meta-World's seeding needs, for k up to 300,000."""


def eval_seed(cfg: DictConfig) -> Any:
    """The first evaluation episode's reset seed: ``eval.seed``, or when null one of its own per training seed."""
    return cfg.eval.seed if cfg.eval.seed is not None else EVAL_SEED_BASE + EVAL_SEED_STRIDE * cfg.seed


def refuse_unused_sampling(run_cfg: Any, user_keys: set[str]) -> None:
    """A sampler setting the user set that this model would never read (``sampling.num_plans`` for a Diffuser
    without a value net, or a goal-conditioned one) is refused before any work; the algo config's own defaults
    for such settings are left out of the policy quietly."""
    from diffusion_rl.algos import ALGORITHMS
    from diffusion_rl.algos._common import SAMPLER_OPTION_SETTINGS, idle_sampler_option

    algorithm = ALGORITHMS[run_cfg.algo]
    unused = dict(algorithm.unused_sampling(run_cfg.model))
    sampling = {**algorithm.default_sampling, **(run_cfg.sampling or {})}
    sampler = sampling.get("sampler")
    for key in SAMPLER_OPTION_SETTINGS:  # sampling.steps=5 with the paper preset's DDPM, which runs every step
        why = idle_sampler_option(sampler, key) if isinstance(sampler, str) else None
        if why and sampling.get(key) is not None:
            unused.setdefault(key, f"{why}; set sampling.sampler too")
    for key, why in unused.items():
        for spelled in (f"sampling.{key}", f"algo.sampling.{key}"):
            if spelled in user_keys:
                raise SystemExit(f"error: {spelled} has no effect: {why}")


def run(cfg: DictConfig, target: str = "env") -> None:
    """Resolve the config, train, score and print (shared by train_planner.py and train_policy.py)."""
    import torch

    from diffusion_rl.data import DatasetNotFoundError
    from diffusion_rl.pipeline import ConfigError, PlannerRunConfig, train_planner
    from diffusion_rl.policy import resolve_device
    from diffusion_rl.training import CheckpointError, lock_run_dir

    try:
        device = resolve_device(cfg.device)
    except (RuntimeError, ValueError) as err:
        raise SystemExit(f"error: device: {cfg.device!r} is not a device ({err})") from None
    user_keys = user_override_keys()
    cfg, preset = resolve_config(cfg, user_keys, device.type == "cuda", target)
    trainer = trainer_settings(cfg, user_keys)
    run_cfg = PlannerRunConfig(
        env=cfg[target].name,
        algo=cfg.algo.name,
        model=to_plain(cfg.algo.model),
        data=to_plain(cfg.algo.get("data", {})),
        sampling={**to_plain(cfg.algo.sampling), **to_plain(cfg.sampling)},
        execution=cfg.algo.get("execution", "first_action"),
        execution_options=to_plain(cfg.algo.get("execution_options", {})) or {},
        trainer=trainer,
        eval_episodes=cfg.eval.episodes,
        eval_num_envs=cfg.eval.num_envs,
        eval_every=cfg.eval.every,
        eval_seed=eval_seed(cfg),
        eval_max_episode_steps=cfg.eval.max_episode_steps,
        video=cfg.eval.video,
        plot=cfg.eval.plot,
        dataset=cfg.dataset,
        run_dir=cfg.run_dir,
        seed=cfg.seed,
        device=str(device),
        preset=preset,
    )
    try:
        run_cfg.validate()  # every value checked before the dataset is made or a step is trained
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    refuse_unused_sampling(run_cfg, user_keys)
    try:  # held until the process ends: a run_dir another live run uses is refused before anything is written
        lock_run_dir(run_cfg.run_dir)
    except CheckpointError as err:
        raise SystemExit(f"error: {err}") from None
    Path(run_cfg.run_dir).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"preset: {preset}; run_dir: {run_cfg.run_dir}")

    def record() -> None:  # once the run is accepted: a refused resume leaves the folder's record as it was
        from diffusion_rl.evaluation.table import write_text_atomic

        write_text_atomic(Path(run_cfg.run_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    try:
        result = train_planner(run_cfg, before_training=record)
    except (DatasetNotFoundError, CheckpointError, ConfigError) as err:  # user errors found with the data: one line
        raise SystemExit(f"error: {err}") from None
    ev = result.evaluation
    print(f"\nartifact: {result.policy_path}")
    print(f"eval:     {ev}")
    for line in score_lines(ev, label_width=9):
        print(line)


@hydra.main(config_path=CONFIG_DIR, config_name="train_planner", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg, "env")


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sampling_overrides_as_additions(sys.argv[1:])]  # sampling: {} is open-ended
    check_overrides("train_planner")
    run_main(main, "checkpoints written so far are kept: rerun with trainer.resume=true to continue")
