"""Make a local dataset with the D4RL/Minari recipe: ``python scripts/make_dataset.py env=hopper-medium``.

Keys (configs/make_dataset.yaml): ``env`` (a catalogue entry; Hydra lists the valid ones when it is unknown),
``num_steps``, ``seed``, ``hdf5`` (extra D4RL-layout copy), ``overwrite``, ``minari_root``, ``num_workers``,
``progress``. The library call is ``diffusion_rl.data.make.make_local_dataset``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cli import CONFIG_DIR, check_overrides, check_values, run_main  # noqa: E402


@hydra.main(config_path=CONFIG_DIR, config_name="make_dataset", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from diffusion_rl.data.make import make_local_dataset

    check_values(cfg, ints={"seed": 0, "num_workers": 1}, optional_ints={"num_steps": 1},
                 flags=("overwrite", "progress"), out=None)
    try:
        path = make_local_dataset(
            cfg.env.name,
            num_steps=cfg.num_steps,
            seed=int(cfg.seed),
            hdf5_path=cfg.hdf5,
            minari_root=cfg.minari_root,
            progress=bool(cfg.progress),
            overwrite=bool(cfg.overwrite),
            num_workers=int(cfg.num_workers),
        )
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    if not cfg.progress:  # with progress the library has printed its summary, paths included
        print(f"wrote: {path}" + (f"; D4RL-layout copy: {cfg.hdf5}" if cfg.hdf5 else ""))


if __name__ == "__main__":
    check_overrides("make_dataset")
    run_main(main, "nothing half-written is left behind (datasets are written to a temporary name, then renamed)")
