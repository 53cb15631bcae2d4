"""Training: the ``Trainer`` (EMA, AdamW, lr schedules, bf16, checkpoints and resume, logs, eval, DDP)."""

from diffusion_rl.training.checkpoint import (
    CheckpointError,
    check_fresh_run,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    lock_run_dir,
)
from diffusion_rl.training.config import MIXED_PRECISION_MODES, TrainerConfig
from diffusion_rl.training.ema import EMA
from diffusion_rl.training.logger import read_jsonl
from diffusion_rl.training.schedules import LR_SCHEDULES, lr_multiplier, make_lr_scheduler
from diffusion_rl.training.toy import ToyRegressionData, ToyRegressor
from diffusion_rl.training.trainer import Trainer

__all__ = [
    "EMA",
    "LR_SCHEDULES",
    "MIXED_PRECISION_MODES",
    "CheckpointError",
    "ToyRegressionData",
    "ToyRegressor",
    "Trainer",
    "TrainerConfig",
    "check_fresh_run",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "lock_run_dir",
    "lr_multiplier",
    "make_lr_scheduler",
    "read_jsonl",
]
