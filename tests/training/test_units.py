"""Unit tests of the trainer's parts: lr schedules, EMA arithmetic, config validation, checkpoint files."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from diffusion_rl.training import (
    EMA,
    LR_SCHEDULES,
    TrainerConfig,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    lr_multiplier,
    make_lr_scheduler,
)
from diffusion_rl.training.checkpoint import checkpoint_path, prune_checkpoints, save_checkpoint

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- lr schedules
def test_warmup_is_linear_then_constant():
    mults = [lr_multiplier(s, schedule="constant", warmup_steps=4, max_steps=10) for s in range(8)]
    assert mults == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_cosine_and_linear_decay_values():
    kw = {"warmup_steps": 0, "max_steps": 100}
    assert lr_multiplier(0, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_multiplier(50, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_multiplier(25, schedule="cosine", **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_multiplier(100, schedule="cosine", **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(30, schedule="linear", **kw) == pytest.approx(0.7)
    # the floor: min_ratio + (1 - min_ratio) * shape
    assert lr_multiplier(50, schedule="cosine", min_ratio=0.2, **kw) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_multiplier(100, schedule="linear", min_ratio=0.1, **kw) == pytest.approx(0.1)
    # decay starts after warm-up: progress = (step - warmup) / (max - warmup)
    assert lr_multiplier(60, schedule="linear", warmup_steps=20, max_steps=100) == pytest.approx(0.5)


def test_scheduler_drives_optimizer_lr():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = make_lr_scheduler(opt, schedule="linear", warmup_steps=2, max_steps=6)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.05, 0.1, 0.1, 0.075, 0.05, 0.025])


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match="cosine"):
        lr_multiplier(0, schedule="step", warmup_steps=0, max_steps=1)
    assert set(LR_SCHEDULES) == {"constant", "cosine", "linear"}


# ----------------------------------------------------------------------------- EMA
class _WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))


def test_ema_copies_before_start_then_averages():
    src = _WithBuffer()
    ema = EMA(src, decay=0.9, start=5)
    with torch.no_grad():
        src.w.fill_(2.0)
        src.count.fill_(7)
    ema.update(src, step=3)  # before start: copy
    assert torch.equal(ema.model.w, torch.full((3,), 2.0))
    assert int(ema.model.count) == 7
    with torch.no_grad():
        src.w.fill_(12.0)
    ema.update(src, step=5)  # 0.9 * 2 + 0.1 * 12
    assert torch.allclose(ema.model.w, torch.full((3,), 3.0))
    ema.update(src, step=6)  # 0.9 * 3 + 0.1 * 12
    assert torch.allclose(ema.model.w, torch.full((3,), 3.9))
    assert not ema.model.w.requires_grad
    assert src.w.requires_grad


def test_ema_power_schedule_warms_up_and_is_capped():
    ema = EMA(nn.Linear(2, 2), decay=0.9999, power=0.75)
    # Diffusion Policy's EMAModel: its calls 0 and 1 (steps 1 and 2 here) copy, call 2 decays by 1 - 2^-0.75
    assert ema.decay_at(1) == ema.decay_at(2) == 0.0
    assert [ema.decay_at(s) for s in (3, 4, 5)] == pytest.approx([1 - 2**-0.75, 1 - 3**-0.75, 1 - 4**-0.75])
    assert ema.decay_at(102) == pytest.approx(1 - 101**-0.75)
    assert ema.decay_at(10**9) == 0.9999  # capped
    src = nn.Linear(2, 2)
    with torch.no_grad():
        src.weight.fill_(3.0)
    ema.update(src, step=0)
    assert torch.allclose(ema.model.weight, torch.full((2, 2), 3.0))
    with pytest.raises(ValueError, match="power"):
        EMA(nn.Linear(2, 2), power=0.0)
    with pytest.raises(ValueError, match="ema_power"):
        TrainerConfig(ema_power=-1.0)


def test_ema_rejects_bad_decay():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EMA(nn.Linear(2, 2), decay=1.5)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lr_schedule": "exp"}, "constant"),
        ({"mixed_precision": "fp16"}, "bf16"),
        ({"device": "tpu"}, "cuda:N"),
        ({"batch_size": 0}, "batch_size"),
        ({"grad_accum": 0}, "grad_accum"),
        ({"ema_decay": 2.0}, "ema_decay"),
        ({"resume": True}, "run_dir"),
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
        ({"lr": "1e-3"}, r"lr: expected a number, got '1e-3' \(str\)"),
        ({"grad_clip": "1"}, "grad_clip: expected a number"),
        ({"ema_power": True}, "ema_power: expected a number"),
        ({"betas": "ab"}, "betas: expected two floats"),
        ({"betas": [0.9, "0.99"]}, "betas: expected a number"),
        # the seed failed at Trainer construction with torch's or Python's own error
        ({"seed": "3"}, r"TrainerConfig.seed: expected an integer >= 0, got '3'"),
        ({"seed": 1.5}, r"TrainerConfig.seed: expected an integer >= 0, got 1.5"),
        ({"seed": None}, r"TrainerConfig.seed: expected an integer >= 0, got None"),
        ({"seed": -1}, r"TrainerConfig.seed: expected an integer >= 0, got -1"),
        ({"seed": 2**70}, r"TrainerConfig.seed: expected an integer in \[0, 2\*\*62\)"),
        # NaN clipping or lr made every update NaN, a NaN weight decay meant none, a negative clip meant no clipping,
        # ema_decay=1 exported the initial weights, and a string flag "no" was truthy
        ({"grad_clip": float("nan")}, "grad_clip: expected a finite number, got nan"),
        ({"lr": float("inf")}, "lr: expected a finite number, got inf"),
        ({"weight_decay": float("nan")}, "weight_decay: expected a finite number"),
        ({"ema_power": float("inf")}, "ema_power: expected a finite number"),
        ({"ddp_timeout_s": float("nan")}, "ddp_timeout_s: expected a finite number"),
        ({"grad_clip": -1.0}, r"grad_clip: expected a norm > 0, or 0 or None for no clipping, got -1.0"),
        ({"ema_decay": 1.0}, r"ema_decay: expected a float in \[0, 1\), got 1.0"),
        ({"ddp_find_unused_parameters": "no"}, "ddp_find_unused_parameters: expected true or false, got 'no'"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainerConfig(**kwargs)


def test_clipping_off_is_none_or_zero():
    assert TrainerConfig(grad_clip=0).grad_clip is None and TrainerConfig(grad_clip=None).grad_clip is None


def test_rank_seeds_of_neighbouring_runs_do_not_collide():
    """Rank 0 is seeded as given (a one-process run unchanged); the other ranks' seeds are drawn from (seed, rank),
    where seed + rank gave rank 1 of seed 0 the stream of rank 0 of seed 1."""
    from diffusion_rl.training.trainer import rank_seed

    assert [rank_seed(s, 0) for s in range(3)] == [0, 1, 2]
    seeds = {rank_seed(s, r) for s in range(50) for r in range(8)}
    assert len(seeds) == 400 and all(0 <= x < 2**63 for x in seeds)
    assert rank_seed(0, 1) == rank_seed(0, 1) != rank_seed(1, 0)


def test_betas_from_a_config_list_or_an_array_are_taken():
    from omegaconf import OmegaConf

    assert TrainerConfig(**OmegaConf.create({"betas": [0.9, 0.95]})).betas == (0.9, 0.95)
    assert TrainerConfig(betas=np.array([0.8, 0.9])).betas == (0.8, 0.9)


def test_numpy_scalar_settings_are_kept_as_plain_floats():
    cfg = TrainerConfig(lr=np.float32(1e-3), ema_decay=np.float64(0.9), grad_clip=np.float32(2.0))
    assert type(cfg.lr) is float and type(cfg.ema_decay) is float and type(cfg.grad_clip) is float
    assert cfg.lr == pytest.approx(1e-3) and json.loads(json.dumps(cfg.to_dict()))["grad_clip"] == 2.0


def test_config_round_trip_and_unknown_keys():
    cfg = TrainerConfig(max_steps=7, betas=[0.5, 0.6], grad_clip=0, run_dir=None)
    assert cfg.betas == (0.5, 0.6) and cfg.grad_clip is None
    again = TrainerConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ValueError, match="max_stepz"):
        TrainerConfig.from_dict({"max_stepz": 3})


# ----------------------------------------------------------------------------- checkpoint files
def test_checkpoint_save_list_prune_and_load(tmp_path):
    for step in (5, 10, 15):
        save_checkpoint({"model": {"w": torch.full((2,), float(step))}, "step": step}, checkpoint_path(tmp_path, step))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 10, 15]
    assert latest_checkpoint(tmp_path).name == "step_00000015.pt"
    prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 15]
    state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state["step"] == 15 and torch.equal(state["model"]["w"], torch.full((2,), 15.0))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_interrupted_write_leaves_no_checkpoint(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {}, "step": 1}, checkpoint_path(tmp_path, 1))
    assert list(tmp_path.iterdir()) == []
    assert latest_checkpoint(tmp_path) is None


def test_a_failed_write_names_the_checkpoint_and_the_free_space(tmp_path, monkeypatch):
    """torch's writer reports a full disk as "[enforce fail at inline_container.cc] unexpected pos ..."; the error
    now names the checkpoint and the free space, and a cleanup that fails too does not hide it."""
    kept = save_checkpoint({"model": {}, "step": 1}, checkpoint_path(tmp_path, 1))

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 242624 vs 242512")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"could not write checkpoint '.*step_00000002\.pt': \[enforce fail.*unexpected "
                                      r"pos 242624 vs 242512 \(\d+ MiB free on its disk\); earlier checkpoints are kept"):
        save_checkpoint({"model": {}, "step": 2}, checkpoint_path(tmp_path, 2))
    assert latest_checkpoint(tmp_path) == kept and [p.name for p in tmp_path.iterdir()] == [kept.name]
    real_unlink = os.unlink

    def read_only(path, *args, **kwargs):
        raise PermissionError(f"[Errno 30] Read-only file system: {path!r}")

    monkeypatch.setattr(os, "unlink", read_only)
    with pytest.raises(OSError, match=r"could not write checkpoint .*unexpected pos"):
        save_checkpoint({"model": {}, "step": 3}, checkpoint_path(tmp_path, 3))
    monkeypatch.setattr(os, "unlink", real_unlink)


def test_damaged_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    good = save_checkpoint({"model": {"w": torch.ones(100)}, "step": 1}, checkpoint_path(tmp_path, 1))
    data = good.read_bytes()
    damaged = tmp_path / "step_00000002.pt"
    damaged.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(damaged)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(1)}, foreign)
    with pytest.raises(ValueError, match="not a diffusion_rl training checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    assert os.path.exists(good)
