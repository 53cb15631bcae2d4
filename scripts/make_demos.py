#!/usr/bin/env python
"""Make demonstrations of a robot task: ``python scripts/make_demos.py task=point-obstacle episodes=200``.

Keys (configs/make_demos.yaml): ``task`` (a task of configs/task and envs/tasks.py), ``episodes``, ``out``, ``seed``,
``overwrite``, ``progress``. The library call is ``diffusion_rl.data.demos.make_demos``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import CONFIG_DIR, check_overrides, run_main  # noqa: E402


@hydra.main(config_path=CONFIG_DIR, config_name="make_demos", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffusion_rl.data.demos import make_demos

    try:
        summary = make_demos(str(cfg.task.name), cfg.episodes, cfg.out, seed=int(cfg.seed),
                             overwrite=bool(cfg.overwrite), progress=bool(cfg.progress))
    except KeyError as err:
        sys.exit(f"error: {err.args[0]}")
    except (FileExistsError, ValueError) as err:
        sys.exit(f"error: {err}")
    print(summary)


if __name__ == "__main__":
    check_overrides("make_demos")
    run_main(main, "nothing half-written is left behind (demonstrations are written to a temporary name, then renamed)")
