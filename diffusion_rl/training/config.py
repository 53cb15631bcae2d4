"""Plain configuration of the trainer (no Hydra: scripts turn their configs into this dataclass)."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MIXED_PRECISION_MODES", "TrainerConfig"]

MIXED_PRECISION_MODES: tuple[str, ...] = ("auto", "bf16", "no")
"""``auto`` = bf16 autocast on CUDA and off on CPU; ``bf16`` = bf16 autocast on any device; ``no`` = float32."""


def _check_real(name: str, value: Any) -> None:
    """Refuse what is not a finite real number (a string such as "1e-3" from a hand-edited file, a bool, NaN or
    inf: a NaN clip or lr made every update NaN, a NaN weight decay meant none) by field name."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"TrainerConfig.{name}: expected a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"TrainerConfig.{name}: expected a finite number, got {value!r}")


@dataclass
class TrainerConfig:
    """Everything the :class:`~diffusion_rl.training.Trainer` needs besides the model and the data.

    Steps count optimizer updates; each update sums ``grad_accum`` micro-batches of ``batch_size`` samples
    (per process under DDP). Intervals (``log_every``, ``checkpoint_every``, ``eval_every``) are in steps;
    0 switches the periodic action off (a final checkpoint and a final evaluation still happen).
    """

    max_steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.0
    """AdamW decoupled weight decay; applied to matrices/kernels only (not to biases and norm scales)."""
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    """Linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first steps."""
    lr_schedule: str = "constant"
    """One of :data:`diffusion_rl.training.LR_SCHEDULES` (``constant``, ``cosine``, ``linear``)."""
    min_lr_ratio: float = 0.0
    """Floor of the decaying schedules, as a fraction of ``lr``."""
    grad_clip: float | None = 1.0
    """Max global gradient norm; ``None`` (or 0) turns clipping off (a negative norm is refused)."""
    grad_accum: int = 1
    ema_decay: float = 0.995
    ema_every: int = 10
    """Update the EMA every this many steps (Diffuser / Decision Diffuser style), and at the last step."""
    ema_start: int = 0
    """Before this step the EMA copies the weights instead of averaging them."""
    ema_power: float | None = None
    """Diffusion Policy's EMA warm-up: decay ``1 - (1 + k)^-ema_power`` capped at ``ema_decay``, k counted as its
    ``EMAModel`` does (see ``diffusion_rl.training.ema.EMA``); None = fixed."""
    mixed_precision: str = "auto"
    compile: bool = False
    """``torch.compile`` the loss (forward and backward of ``model.loss``) for the training step. The first steps
    pay the compilation (about a minute on CPU, where TorchInductor needs a C++ compiler); Janner's hopper network
    then trains about 1.26-1.30x faster than eager on an Intel Xeon core, 1.39-1.47x diffusers' ``UNet1DModel``
    compiled the same way (``scripts/benchmark.py benchmarks=[train_speed]``, docs/benchmarks.md)."""
    log_every: int = 100
    checkpoint_every: int = 1000
    eval_every: int = 0
    run_dir: str | None = None
    """Where checkpoints, TensorBoard logs (``tb/``) and ``metrics.jsonl`` go; ``None`` = train in memory only."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun each rank uses its LOCAL_RANK GPU."""
    resume: bool = False
    """Continue from the latest checkpoint in ``run_dir/checkpoints`` (start fresh when there is none)."""
    progress: bool = True
    keep_checkpoints: int = 2
    ddp_find_unused_parameters: bool = False
    """Passed to DistributedDataParallel for models whose loss leaves some parameters unused."""
    ddp_timeout_s: float = 7200.0
    """Under torchrun: how long a rank waits for the others in a collective. Rank 0 alone evaluates (``eval_every``)
    while the others wait in the next step's all-reduce, so it must exceed an evaluation (torch's NCCL default of 10
    minutes is shorter than a Decision Diffuser's rollouts)."""

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "min_lr_ratio", "ema_decay", "grad_clip", "ema_power"):
            value = getattr(self, name)
            if value is not None or name not in ("grad_clip", "ema_power"):
                _check_real(name, value)
                setattr(self, name, float(value))  # a numpy scalar would not survive json
        if isinstance(self.betas, (str, bytes)) or not hasattr(self.betas, "__iter__"):  # a config's list is fine
            raise ValueError(f"TrainerConfig.betas: expected two floats in [0, 1), got {self.betas!r}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        for beta in self.betas:
            _check_real("betas", beta)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"TrainerConfig.grad_clip: expected a norm > 0, or 0 or None for no clipping, got "
                             f"{self.grad_clip!r}")
        if self.grad_clip == 0:
            self.grad_clip = None
        _check_real("ddp_timeout_s", self.ddp_timeout_s)
        if self.ddp_timeout_s <= 0:
            raise ValueError(f"TrainerConfig.ddp_timeout_s: expected seconds > 0, got {self.ddp_timeout_s!r}")
        self.ddp_timeout_s = float(self.ddp_timeout_s)
        if self.run_dir is not None:
            self.run_dir = str(self.run_dir)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field, what was expected and what was given."""
        from diffusion_rl.training.schedules import LR_SCHEDULES  # local: avoids an import cycle

        def positive_int(name: str, minimum: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"TrainerConfig.{name}: expected an integer >= {minimum}, got {value!r}")

        positive_int("max_steps", 0)
        positive_int("seed", 0)
        if self.seed >= 2**62:  # torch seeds must stay below 2**63 (rank 0 is seeded with it; see rank_seed)
            raise ValueError(f"TrainerConfig.seed: expected an integer in [0, 2**62), got {self.seed!r}")
        positive_int("batch_size", 1)
        positive_int("grad_accum", 1)
        positive_int("warmup_steps", 0)
        positive_int("ema_every", 1)
        positive_int("ema_start", 0)
        positive_int("log_every", 1)
        positive_int("checkpoint_every", 0)
        positive_int("eval_every", 0)
        positive_int("keep_checkpoints", 1)
        if not self.lr > 0:
            raise ValueError(f"TrainerConfig.lr: expected a positive float, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainerConfig.weight_decay: expected >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainerConfig.betas: expected two floats in [0, 1), got {self.betas!r}")
        if not 0.0 <= self.ema_decay < 1.0:  # 1 would keep the initial weights forever, and export them
            raise ValueError(f"TrainerConfig.ema_decay: expected a float in [0, 1), got {self.ema_decay!r}")
        if self.ema_power is not None and not (isinstance(self.ema_power, (int, float)) and self.ema_power > 0):
            raise ValueError(f"TrainerConfig.ema_power: expected a float > 0 or None, got {self.ema_power!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainerConfig.min_lr_ratio: expected a float in [0, 1], got {self.min_lr_ratio!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainerConfig.lr_schedule: expected one of {sorted(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.mixed_precision not in MIXED_PRECISION_MODES:
            raise ValueError(
                f"TrainerConfig.mixed_precision: expected one of {list(MIXED_PRECISION_MODES)}, "
                f"got {self.mixed_precision!r}"
            )
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise ValueError(
                f"TrainerConfig.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        for flag in ("compile", "resume", "progress", "ddp_find_unused_parameters"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"TrainerConfig.{flag}: expected true or false, got {getattr(self, flag)!r}")
        if self.resume and self.run_dir is None:
            raise ValueError("TrainerConfig.resume=True needs a run_dir holding checkpoints, got run_dir=None")

    def to_dict(self) -> dict[str, Any]:
        """A JSON/checkpoint-safe dict (tuples become lists)."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainerConfig:
        """Build from a plain dict (e.g. a Hydra node turned into a container); unknown keys are an error."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"TrainerConfig: unknown keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)

