#!/usr/bin/env python
"""Score a trained artifact in simulation: ``python scripts/evaluate.py policy=<path> [key=value ...]``.

    python scripts/evaluate.py policy=runs/hopper-medium/decision_diffuser/policy episodes=10 num_envs=5
    python scripts/evaluate.py policy=policy.safetensors env=hopper-medium video=true sampling.steps=5

(the second: a single-file artifact, written by ``policy.save("policy.safetensors")``; an artifact folder is passed
as the folder).

Keys (configs/evaluate.yaml): ``policy`` (required), ``episodes``, ``num_envs``, ``seed`` (episode ``i`` resets the
env with ``seed + i``; the sampler of the wave starting at episode ``i`` uses the artifact's seed + ``seed + i``,
as the Python API does), ``video``, ``env``
(a catalogue name) or ``task`` (a robot task; default for both: the artifact's env_name), ``max_episode_steps``,
``out`` (eval JSON; default ``<policy>/../eval_<env>.json``, and ``eval_<file stem>_<env>.json`` for a
``.safetensors`` file), ``device``, ``compile`` (false | true | trace |
cuda_graph | inductor: the denoiser traced, captured as a CUDA graph, or compiled by torch.compile; same actions,
faster), ``precision``
(float32 | bfloat16), ``progress``, ``sampling.<setting>=value`` overrides of the artifact's sampler settings, and
``execution_options.<option>=value`` overrides of its execution (``execution_options.action_steps=4``: Ta = 4).
The work is done by ``Policy.load`` and ``diffusion_rl.evaluation.evaluate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra
from _cli import (  # noqa: F401  (default_out, sampling_overrides_as_additions: part of this script's API)
    CONFIG_DIR,
    check_overrides,
    check_values,
    default_out,
    load_policy_for_cli,
    run_main,
    sampling_overrides_as_additions,
    score_lines,
)
from omegaconf import DictConfig


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffusion_rl.evaluation import evaluate

    check_values(cfg, ints={"episodes": 1, "num_envs": 1, "seed": 0}, optional_ints={"max_episode_steps": 1},
                 flags=("video", "progress"), seed_span="episodes")
    policy, policy_path, env_name = load_policy_for_cli(cfg)
    # no policy.reset(seed=cfg.seed) here: evaluate() seeds each wave with policy.seed + seed + i itself, so this
    # command scores the episodes `evaluate(Policy.load(policy), env, seed=seed)` does (result.sampler_seed)

    out = Path(cfg.out) if cfg.out else default_out(policy_path, env_name, "eval")
    video = str(out.with_suffix(".mp4")) if cfg.video else None
    print(f"policy: {policy_path} ({policy.algo.name}); env: {env_name}; sampling: {policy.sampling}")
    result = evaluate(policy, env_name, episodes=int(cfg.episodes), num_envs=int(cfg.num_envs),
                      seed=int(cfg.seed), video_path=video, max_episode_steps=cfg.max_episode_steps,
                      progress=bool(cfg.progress))
    from diffusion_rl.artifact import recorded_weights_digest

    result.extra.update(policy=str(Path(policy_path).resolve()), weights_sha256=recorded_weights_digest(policy_path),
                        algorithm=policy.algo.name, execution=policy.execution,
                        execution_options=policy.execution_options, sampling=dict(policy.sampling),
                        compile=policy.compile, precision=policy.precision)
    path = result.save_json(out)
    print(f"eval:  {result}")
    for line in score_lines(result):
        print(line)
    print(f"wrote: {path}" + (f" and {result.video_path}" if result.video_path else ""))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sampling_overrides_as_additions(sys.argv[1:], ("sampling.", "execution_options."))]
    check_overrides("evaluate")
    run_main(main)
