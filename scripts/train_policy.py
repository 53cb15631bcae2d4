#!/usr/bin/env python
"""Train a policy on a robot task's demonstrations and score its success rate in MuJoCo.

    python scripts/train_policy.py task=point-obstacle
    python scripts/train_policy.py task=point-obstacle algo=bc trainer.max_steps=2000 eval.episodes=20

The task's demonstrations (envs/tasks.py) are made by its scripted expert on first use
(``$DIFFUSION_RL_DEMOS/<task>.zarr``). Same trainer, artifact, TensorBoard logs and eval.json (with
``success_rate_mean`` and ``success_rate_stderr``) as ``train_planner.py``; keys: configs/train_policy.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from _cli import CONFIG_DIR, check_overrides, run_main, sampling_overrides_as_additions  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from train_planner import run  # noqa: E402


@hydra.main(config_path=CONFIG_DIR, config_name="train_policy", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg, "task")


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sampling_overrides_as_additions(sys.argv[1:])]  # sampling: {} is open-ended
    check_overrides("train_policy")
    run_main(main, "checkpoints written so far are kept: rerun with trainer.resume=true to continue")
