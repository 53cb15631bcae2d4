#!/usr/bin/env python
"""Score a trained artifact in simulation: ``python scripts/evaluate.py policy=<path> [key=value ...]``.

    python scripts/evaluate.py policy=runs/hopper-medium/decision_diffuser/policy episodes=10 num_envs=5
    python scripts/evaluate.py policy=model.safetensors env=hopper-medium video=true sampling.steps=5

Keys (configs/evaluate.yaml): ``policy`` (required), ``episodes``, ``num_envs``, ``seed``, ``video``, ``env``
(a catalogue name; default: the artifact's env_name), ``max_episode_steps``, ``out`` (eval JSON; default
``<policy>/../eval_<env>.json``), ``device``, ``progress``, and ``sampling.<setting>=value`` overrides of the
artifact's sampler settings. The work is done by ``Policy.load`` and ``diffusion_rl.evaluation.evaluate``.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra
from _cli import CONFIG_DIR, check_overrides, to_plain
from omegaconf import DictConfig


def sampling_overrides_as_additions(argv: list[str]) -> list[str]:
    """``sampling.k=v`` -> ``++sampling.k=v``: ``sampling: {}`` declares no keys, so Hydra must add them."""
    return [f"++{a}" if a.startswith("sampling.") and "=" in a else a for a in argv]


def default_out(policy_path: str | Path, env_name: str) -> Path:
    """``<policy>/../eval_<env>.json``: beside the artifact folder or file (env ids made file-name safe)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", env_name)
    return Path(policy_path).resolve().parent / f"eval_{safe}.json"


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if not cfg.policy:
        sys.exit("error: policy=<path> is required: an artifact folder or .safetensors file "
                 "(Policy.save writes one)")
    from diffusion_rl.evaluation import evaluate
    from diffusion_rl.policy import Policy

    policy_path = str(cfg.policy)
    try:
        policy = Policy.load(policy_path, device=cfg.device)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: cannot load policy={policy_path}: {err}")
    overrides = to_plain(cfg.sampling) or {}
    unknown = sorted(set(overrides) - set(policy.sampling))
    if unknown:
        sys.exit(f"error: unknown sampling setting(s) {unknown}; this policy's settings are: "
                 f"{', '.join(sorted(policy.sampling))}")
    for key, value in overrides.items():
        setattr(policy, key, value)
    env_name = cfg.env.name if cfg.get("env") else policy.env_name
    if not env_name:
        sys.exit(f"error: the artifact {policy_path} names no environment; pass env=<catalogue name>")
    policy.reset(seed=int(cfg.seed))

    out = Path(cfg.out) if cfg.out else default_out(policy_path, env_name)
    video = str(out.with_suffix(".mp4")) if cfg.video else None
    print(f"policy: {policy_path} ({policy.algo.name}); env: {env_name}; sampling: {policy.sampling}")
    result = evaluate(policy, env_name, episodes=int(cfg.episodes), num_envs=int(cfg.num_envs),
                      seed=int(cfg.seed), video_path=video, max_episode_steps=cfg.max_episode_steps,
                      progress=bool(cfg.progress))
    result.extra.update(policy=str(Path(policy_path).resolve()), algorithm=policy.algo.name,
                        execution=policy.execution, sampling=dict(policy.sampling))
    path = result.save_json(out)
    print(f"eval:  {result}")
    if result.normalized_score_mean is not None:
        err = result.normalized_score_stderr
        pm = f" ± {err:.1f}" if err is not None and math.isfinite(err) else ""
        print(f"score: {result.normalized_score_mean:.1f}{pm} (D4RL-normalized, {result.episodes} episodes)")
    print(f"wrote: {path}" + (f" and {result.video_path}" if result.video_path else ""))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sampling_overrides_as_additions(sys.argv[1:])]
    check_overrides("evaluate")
    main()
