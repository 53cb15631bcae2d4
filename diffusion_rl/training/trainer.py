"""The trainer: AdamW + lr schedule, EMA, bf16 autocast, clipping, checkpoints/resume, logs, eval, DDP.

Protocols it trains against (see ``Trainer``):

- ``model.loss(batch) -> dict[str, Tensor]``: key ``"loss"`` (a scalar) is optimized, other scalars are logged.
  The loss may draw timesteps/noise/condition-drop masks from torch's global RNG; the trainer seeds it and
  saves it in checkpoints so a resumed run continues the same random stream.
- ``data.sample_batch(batch_size, generator) -> dict[str, Tensor]``: ``generator`` is a CPU ``torch.Generator``
  owned (seeded, checkpointed) by the trainer; tensors are moved to the training device with ``.to``.
- ``eval_fn(ema_model, step) -> dict[str, float]`` runs on rank 0 inside a forked RNG, so evaluating never
  changes the training random stream.
- ``callbacks``: ``callback(trainer, step)`` after each step's bookkeeping (EMA, logs, eval, checkpoint).
- ``model.after_optimizer_step()``, when the model defines it: called after every optimizer update (once per step,
  whatever ``grad_accum``), e.g. to move a target network.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from diffusion_rl.nets.compiled import check_cpu_compiler
from diffusion_rl.progress import progress_bar
from diffusion_rl.training.checkpoint import (
    CheckpointError,
    check_fresh_run,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    lock_run_dir,
    prune_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
)
from diffusion_rl.training.config import TrainerConfig
from diffusion_rl.training.distributed import DistInfo, LossModule, init_distributed, resolve_device
from diffusion_rl.training.ema import EMA
from diffusion_rl.training.logger import RunLogger
from diffusion_rl.training.schedules import make_lr_scheduler

__all__ = ["CHECKPOINT_FORMAT", "BatchSource", "Callback", "EvalFn", "Trainer"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "diffusion_rl.trainer_checkpoint"
_CHECKPOINT_VERSION = 1
# Config keys that may change between an interrupted run and its resumption without a warning.
_RESUME_FREE_KEYS = {"max_steps", "run_dir", "resume", "progress", "log_every", "checkpoint_every", "eval_every",
                     "keep_checkpoints", "device", "ddp_timeout_s"}


def _plain(value: Any) -> Any:
    """``value`` as plain Python containers and numbers (mappings -> dicts, sequences -> lists, numpy/torch values
    -> lists or numbers), so settings compare equal whatever container a config or a caller gave them in."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return _plain(value.tolist())
    return value


class BatchSource(Protocol):
    def sample_batch(self, batch_size: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]: ...


EvalFn = Callable[[nn.Module, int], Mapping[str, float]]
Callback = Callable[["Trainer", int], None]


def _autocast_enabled(mode: str, device: torch.device) -> bool:
    return {"auto": device.type == "cuda", "bf16": True, "no": False}[mode]


def _rng_snapshot(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }


class _StopAtStepBoundary:
    """While training: the first Ctrl-C (SIGINT) only asks the loop to stop after the step under way, where it
    writes a checkpoint of that step; a second one stops at once. Installed only in the main thread and only over
    Python's default handler (a process that ignores SIGINT, or has its own handler, keeps it); not under DDP,
    where the ranks would reach the request at different steps and wait for each other in the checkpoint."""

    def __init__(self, enabled: bool) -> None:
        self.requested = False
        self._previous: Any = None
        if (enabled and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this step, with a checkpoint of it (Ctrl-C again stops at once)")

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _rng_restore(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


@contextlib.contextmanager
def _isolated_rng(device: torch.device) -> Iterator[None]:
    """Run a block (evaluation) without disturbing torch/numpy/python RNG streams of training."""
    snapshot = _rng_snapshot(device)
    try:
        yield
    finally:
        _rng_restore(snapshot, device)


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Parameters a module excludes from weight decay by name (its ``no_weight_decay()``, the timm convention:
    positional embeddings, learned null conditions) and embedding tables, as the reference trainers do."""
    ids: set[int] = set()
    for module in model.modules():
        names = module.no_weight_decay() if callable(getattr(module, "no_weight_decay", None)) else ()
        ids.update(id(module.get_parameter(name)) for name in names)
        if isinstance(module, nn.Embedding):
            ids.add(id(module.weight))
    return ids


def _param_groups(params: list[nn.Parameter], weight_decay: float,
                  no_decay: set[int] | None = None) -> list[dict[str, Any]]:
    """AdamW's groups: with weight decay, matrices and kernels decayed, biases, norm scales and the parameters in
    ``no_decay`` (ids) not."""
    no_decay = no_decay or set()
    if weight_decay > 0:
        decayed = [p for p in params if p.ndim >= 2 and id(p) not in no_decay]
        kept = {id(p) for p in decayed}
        groups = [
            {"params": decayed, "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in kept], "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]
    return [{"params": params, "weight_decay": 0.0}]


def _build_optimizer(model: nn.Module, cfg: TrainerConfig, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("Trainer: the model has no parameters that require gradients")
    groups = _param_groups(params, cfg.weight_decay, _no_decay_ids(model))
    # torch's fused AdamW kernel (CUDA and CPU): on CPU it takes the hopper Diffuser's optimizer step from 20 ms
    # to 3 ms (the unfused step was 22% of a training step; docs/benchmarks.md, train_speed)
    fused = True if device.type in ("cuda", "cpu") else None
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one process of a run: ``seed`` on rank 0 (a one-process run is seeded as given), and for the
    other ranks a 63-bit seed drawn from ``(seed, rank)``. ``seed + rank`` gave rank 1 of seed 0 the data batches
    and noise of rank 0 of seed 1, so runs of neighbouring seeds were not independent."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class Trainer:
    """Trains ``model`` on batches from ``data`` as ``config`` says; see the module docstring for protocols.

    Under ``torchrun`` (WORLD_SIZE > 1) the trainer joins the process group (gloo on CPU, NCCL on CUDA), wraps
    ``model.loss`` in DistributedDataParallel so gradients are averaged, seeds each rank's data generator and
    loss RNG differently, and keeps EMA evaluation, logs and checkpoints on rank 0. The trainer (re)seeds
    torch's global RNG with :func:`rank_seed` (``config.seed`` itself on rank 0).
    """

    def __init__(
        self,
        model: nn.Module,
        data: BatchSource,
        config: TrainerConfig,
        *,
        eval_fn: EvalFn | None = None,
        callbacks: Sequence[Callback] = (),
        run_settings: Mapping[str, Any] | None = None,
    ) -> None:
        """``run_settings``: what else the weights depend on (a run's model and data settings, its dataset), as
        JSON-like values; saved in checkpoints, and a resume with other values is refused (the weights would be
        trained further on another problem)."""
        # as plain values (a tuple, a config's list and a numpy array of the same numbers are the same setting)
        self.run_settings = _plain(dict(run_settings or {}))
        if not isinstance(model, nn.Module) or not callable(getattr(model, "loss", None)):
            raise ValueError(f"Trainer: model must be an nn.Module with a .loss(batch) method, got {type(model)!r}")
        if not callable(getattr(data, "sample_batch", None)):
            raise ValueError(
                f"Trainer: data must have .sample_batch(batch_size, generator), got {type(data)!r}"
            )
        if not isinstance(config, TrainerConfig):
            raise ValueError(f"Trainer: config must be a TrainerConfig, got {type(config)!r}")
        self.config = config
        self.dist: DistInfo = init_distributed(config.device, config.ddp_timeout_s)
        self.device = resolve_device(config.device, self.dist.local_rank)
        self.model = model.to(self.device)
        self.model.train()
        self.data = data
        self.eval_fn = eval_fn
        self.callbacks = tuple(callbacks)
        self.step = 0
        self.last_losses: dict[str, float] = {}
        self._lr_used = float(config.lr)
        self.last_eval: dict[str, float] = {}
        self.last_eval_step: int | None = None
        self._amp = _autocast_enabled(config.mixed_precision, self.device)

        if 0 < config.max_steps < config.warmup_steps:
            log.warning("warmup_steps=%s is longer than the run (max_steps=%s): the warm-up never ends, and the lr "
                        "peaks at %.2f x lr", config.warmup_steps, config.max_steps,
                        config.max_steps / config.warmup_steps)
        seed = rank_seed(config.seed, self.dist.rank)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        torch.manual_seed(seed)

        module = LossModule(self.model)
        if config.compile:
            if self.device.type == "cpu":
                check_cpu_compiler("TrainerConfig.compile")  # before a run folder is locked or a step is taken
            module = torch.compile(module)  # type: ignore[assignment]  # parameters stay the model's own
        if self.dist.enabled:
            self._forward: nn.Module = DistributedDataParallel(
                module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.ddp_find_unused_parameters,
            )
        else:
            self._forward = module
        self.optimizer = _build_optimizer(self.model, config, self.device)
        self.lr_scheduler = make_lr_scheduler(
            self.optimizer,
            schedule=config.lr_schedule,
            warmup_steps=config.warmup_steps,
            max_steps=config.max_steps,
            min_ratio=config.min_lr_ratio,
        )
        self.ema = EMA(self.model, decay=config.ema_decay, start=config.ema_start, power=config.ema_power)

        self.run_dir = Path(config.run_dir) if config.run_dir is not None else None
        self.checkpoint_dir = self.run_dir / "checkpoints" if self.run_dir is not None else None
        release = lambda: None  # noqa: E731
        if self.run_dir is not None and self.dist.is_main:
            # the folder is this run's while the trainer lives: first, before another process's writes are touched
            release = lock_run_dir(self.run_dir)
        try:
            if self.checkpoint_dir is not None and self.dist.is_main:
                for stale in remove_stale_temporaries(self.checkpoint_dir):  # left by a run killed while writing
                    log.info("removed the unfinished checkpoint write %s", stale)
            resume_step = self._maybe_resume()
        except BaseException:  # a refused resume: the half-made trainer (kept by the traceback) holds nothing
            release()
            raise
        self._release_run_dir = weakref.finalize(self, release)
        self.logger: RunLogger | None = None
        if self.run_dir is not None and self.dist.is_main:
            # a run that starts at step 0 drops the logs of an earlier start in this folder (one interrupted before
            # its first checkpoint), or its steps would appear twice
            self.logger = RunLogger(self.run_dir, resume_step=resume_step or 0)

    # ------------------------------------------------------------------ public API
    def close(self) -> None:
        """Let go of the run folder now (it is held while the trainer lives, and let go when it is garbage
        collected or the process ends): another process may then train there, e.g. a script after a notebook's
        run. Call it when done with this trainer's folder."""
        self._release_run_dir()

    @property
    def ema_model(self) -> nn.Module:
        """The EMA copy of the model (eval mode, no gradients)."""
        return self.ema.model

    def fit(self) -> dict[str, Any]:
        """Train until ``config.max_steps``; returns ``{"step", "losses", "eval"}`` (last logged values).

        Ends the process group it created under torchrun.
        """
        cfg = self.config
        pbar = progress_bar(total=cfg.max_steps, initial=self.step, desc="train",
                    disable=not (cfg.progress and self.dist.is_main))
        sums: dict[str, torch.Tensor] = {}
        count, t_last = 0, time.perf_counter()
        self.model.train()
        interrupt = _StopAtStepBoundary(self.checkpoint_dir is not None and not self.dist.enabled)
        try:
            while self.step < cfg.max_steps:
                for key, value in self._train_step().items():
                    sums[key] = sums[key] + value if key in sums else value
                count += 1
                self.step += 1
                if self.step % cfg.ema_every == 0 or self.step == cfg.max_steps:  # the last steps count too
                    self.ema.update(self.model, self.step)
                pbar.update(1)
                saved = self.checkpoint_dir is not None and (
                    (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or self.step == cfg.max_steps
                )
                # a checkpoint step closes a log window too: a resume from it then logs the same windows (and
                # averages) as the run that was not interrupted
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps or saved:
                    now = time.perf_counter()
                    self._log_train(sums, count, count / max(now - t_last, 1e-9), pbar)
                    sums, count, t_last = {}, 0, now
                paused = time.perf_counter()
                if (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.max_steps:
                    self._evaluate(pbar)  # the last step's before its checkpoint, so a rerun does not repeat it
                if saved:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback(self, self.step)
                # steps_per_sec counts training: evaluation, checkpoints and callbacks move the window's start
                t_last += time.perf_counter() - paused
                if interrupt.requested:  # Ctrl-C: keep the step reached, not only the last periodic checkpoint
                    if count:  # the steps since the last log line, written before the checkpoint a resume starts at
                        self._log_train(sums, count, count / max(time.perf_counter() - t_last, 1e-9), pbar)
                    if not saved and self.checkpoint_dir is not None:
                        self.save_checkpoint()
                    raise KeyboardInterrupt
            interrupt.restore()  # past the last step a Ctrl-C stops at once again
            if self.eval_fn is not None and self.last_eval_step != self.step:
                self._evaluate(pbar)
            if self.dist.owns_group and dist.is_initialized():
                # the ranks end together: rank 1 tearing down its gloo group while rank 0 still evaluated and wrote
                # aborted it now and then ("terminate called without an active exception"); rank 0's logs are
                # flushed first, so that nothing but the teardown itself is left after the barrier
                if self.logger is not None:
                    self.logger.flush()
                dist.barrier()
        finally:
            interrupt.restore()
            pbar.close()
            if self.logger is not None:
                self.logger.flush()
            if self.dist.owns_group and dist.is_initialized():
                dist.destroy_process_group()
        return {"step": self.step, "losses": dict(self.last_losses), "eval": dict(self.last_eval)}

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step_<step>.pt`` (rank 0; every rank contributes its RNG states); prune old ones."""
        if self.checkpoint_dir is None:
            raise ValueError("Trainer.save_checkpoint: config.run_dir is None, there is nowhere to write")
        # the loss is checked at log and checkpoint steps, but a weight it does not depend on can go non-finite
        # unseen: it must not become the newest checkpoint (pruning would then delete the last good one); every
        # rank holds the same weights
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise FloatingPointError(f"model weights became non-finite by step {self.step}; not saved as a "
                                     "checkpoint (the earlier checkpoints are kept)")
        rng = _rng_snapshot(self.device)
        rng["data"] = self.generator.get_state()
        if self.dist.enabled:
            per_rank: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(per_rank, rng)
        else:
            per_rank = [rng]
        if not self.dist.is_main:
            return None
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "rng": per_rank,
            "world_size": self.dist.world_size,
            "config": self.config.to_dict(),
            "last_eval": dict(self.last_eval),
            "last_eval_step": self.last_eval_step,
            "run_settings": self.run_settings,
        }
        path = save_checkpoint(state, checkpoint_path(self.checkpoint_dir, self.step))
        prune_checkpoints(self.checkpoint_dir, self.config.keep_checkpoints)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore model, EMA, optimizer, lr schedule, step, RNG states and last eval from ``path``."""
        self._apply_checkpoint(self._read_checkpoint(path), path)

    @staticmethod
    def _read_checkpoint(path: str | Path) -> dict[str, Any]:
        """Read and check a checkpoint file without touching the trainer (CheckpointError when damaged or foreign)."""
        state = load_checkpoint(path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint {str(path)!r}: expected format {CHECKPOINT_FORMAT!r}, "
                             f"got {state.get('format')!r}")
        return state

    def _apply_checkpoint(self, state: dict[str, Any], path: str | Path) -> None:
        saved_settings = state.get("run_settings")
        # none saved (None, or {} from runs that recorded none, e.g. distillations before 2026-12-07): unchecked;
        # a setting the checkpoint did not record yet (dataset_digest, before 2026-12-07) is not checked either
        now = self.run_settings or {}
        changed = {k: (v, now.get(k)) for k, v in sorted((saved_settings or {}).items()) if v != now.get(k)}
        if saved_settings and self.run_settings and changed:
            raise CheckpointError(f"checkpoint {str(path)!r} was trained with other run settings (saved -> now): "
                             f"{changed}; resume with the saved ones, or train a fresh run in another run_dir")
        saved_seed = state.get("config", {}).get("seed")
        if saved_seed is not None and saved_seed != self.config.seed:  # the weights are that seed's run: a resume
            # under another seed would train on and record them as this seed's
            raise CheckpointError(f"checkpoint {str(path)!r} belongs to a run with seed={saved_seed}, not seed="
                             f"{self.config.seed}; resume with seed={saved_seed}, or train seed {self.config.seed} "
                             "in another run_dir")
        if int(state["step"]) > self.config.max_steps:
            raise CheckpointError(f"checkpoint {str(path)!r} is at step {int(state['step'])}, beyond max_steps="
                             f"{self.config.max_steps}; resume with max_steps >= {int(state['step'])}")
        self._warn_config_changes(state.get("config", {}), path)
        saved_max = state.get("config", {}).get("max_steps")
        if saved_max is not None and saved_max != self.config.max_steps and self.config.lr_schedule != "constant":
            log.warning("resuming %s with max_steps %s (was %s): the %s lr schedule is stretched to the new length, so "
                        "the rate jumps from where it was", path, self.config.max_steps, saved_max,
                        self.config.lr_schedule)
        if (saved_max is not None and saved_max < self.config.max_steps and int(state["step"]) == saved_max
                and saved_max % self.config.ema_every):
            log.warning("resuming %s past its end (step %s): its EMA took the end-of-run update at step %s, off its "
                        "every-%s-steps cadence, so the EMA (the exported model) will differ slightly from one run of "
                        "%s steps", path, saved_max, saved_max, self.config.ema_every, self.config.max_steps)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        saved_wd = state.get("config", {}).get("weight_decay")
        optimizer_state = self._fit_optimizer_state(state["optimizer"], saved_wd)
        try:
            self.optimizer.load_state_dict(optimizer_state)
        except ValueError as err:
            same_groups = len(optimizer_state["param_groups"]) == len(self.optimizer.param_groups)
            why = ("the model's trainable parameters differ from those it was trained with" if same_groups else
                   f"it was trained with weight_decay={saved_wd!r}, and switching weight decay between 0 and > 0 "
                   f"changes the optimizer's parameter groups: resume with weight_decay {'> 0' if saved_wd else '0'}")
            raise CheckpointError(f"checkpoint {str(path)!r}: its optimizer does not fit this run's ({err}); {why}") from None
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self._apply_optimizer_settings()
        self.step = int(state["step"])
        self.last_eval = dict(state.get("last_eval", {}))
        self.last_eval_step = state.get("last_eval_step")
        per_rank = state["rng"]
        if len(per_rank) == self.dist.world_size:
            mine = per_rank[self.dist.rank]
            _rng_restore(mine, self.device)
            self.generator.set_state(mine["data"])
        else:
            log.warning("checkpoint %s was written by %d processes, now %d: reseeding RNGs per rank",
                        path, len(per_rank), self.dist.world_size)
            reseed = self.config.seed + self.dist.rank + 7919 * self.step
            torch.manual_seed(reseed)
            self.generator.manual_seed(reseed)

    # ------------------------------------------------------------------ internals
    def _maybe_resume(self) -> int | None:
        if self.checkpoint_dir is None:
            return None
        if not self.config.resume:
            check_fresh_run(self.checkpoint_dir)
            return None
        found = list_checkpoints(self.checkpoint_dir)
        if not found:
            log.info("resume=True but %s holds no checkpoint: starting from step 0", self.checkpoint_dir)
            return None
        for _, path in reversed(found):  # the newest readable one; a damaged newer one is skipped, and said so
            try:
                state = self._read_checkpoint(path)
            except ValueError as err:
                # moved aside, not left in place: pruning keeps the newest step numbers, so a damaged newer file
                # would take a slot and every good checkpoint written after this resume would be deleted
                aside = path.with_name(path.name + ".damaged")
                if self.dist.is_main:
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(path, aside)
                log.warning("skipping damaged checkpoint %s (moved aside to %s): %s", path, aside.name, err)
                continue
            self._apply_checkpoint(state, path)
            log.info("resumed from %s at step %d", path, self.step)
            return self.step
        log.warning("resume=True but no checkpoint in %s is readable: starting from step 0", self.checkpoint_dir)
        return None

    def _fit_optimizer_state(self, saved: dict[str, Any], saved_wd: Any) -> dict[str, Any]:
        """The saved optimizer state for this run's trainable parameters. A checkpoint written while parameters that
        are now frozen were still trained (a Diffusion Policy's unused null condition, frozen since) holds entries
        for them: those are dropped, matching the saved groups to every parameter of the model in order, the split
        the optimizer was built with then. Returned unchanged when the groups already fit or cannot be matched."""
        now = [len(g["params"]) for g in self.optimizer.param_groups]
        if [len(g["params"]) for g in saved["param_groups"]] == now or not isinstance(saved_wd, (int, float)):
            return saved
        sizes = [len(g["params"]) for g in saved["param_groups"]]
        # the split the optimizer was built with then: by name exclusions (now) or by shape alone (checkpoints
        # written before modules named their no-decay parameters)
        splits = (_param_groups(list(self.model.parameters()), float(saved_wd), ids)
                  for ids in (_no_decay_ids(self.model), set()))
        then = next((g for g in splits if [len(x["params"]) for x in g] == sizes), None)
        if then is None:
            return saved
        ids = {id(p): i for i, p in enumerate(p for g in self.optimizer.param_groups for p in g["params"])}
        state: dict[int, Any] = {}
        source: dict[int, dict[str, Any]] = {}  # each parameter's saved group (its hyperparameters)
        for saved_group, old in zip(saved["param_groups"], then):
            for i, p in zip(saved_group["params"], old["params"]):
                if id(p) in ids:
                    new = ids[id(p)]
                    source[new] = saved_group
                    if i in saved["state"]:
                        state[new] = saved["state"][i]
        # the groups as this run's optimizer holds them (a parameter that changed group keeps its moments), each
        # with the hyperparameters of the saved group its parameters came from (lr, betas and weight decay are
        # set from this run's config after loading anyway)
        groups = []
        for group in self.optimizer.state_dict()["param_groups"]:
            origin = next((source[i] for i in group["params"] if i in source), saved["param_groups"][0])
            groups.append({**origin, "params": list(group["params"])})
        return {"state": state, "param_groups": groups}

    def _apply_optimizer_settings(self) -> None:
        """This run's lr, betas and weight decay on the loaded optimizer (loading its state brings back the saved
        ones, so a resume with a new lr would otherwise go on with the old one); the schedule's position stays."""
        cfg = self.config
        no_decay = _no_decay_ids(self.model)
        self.lr_scheduler.base_lrs = [cfg.lr] * len(self.optimizer.param_groups)
        for group, multiplier in zip(self.optimizer.param_groups, self.lr_scheduler.lr_lambdas):
            group["initial_lr"] = cfg.lr
            group["lr"] = cfg.lr * multiplier(self.lr_scheduler.last_epoch)
            group["betas"] = tuple(cfg.betas)
            decayed = all(p.ndim >= 2 and id(p) not in no_decay for p in group["params"])  # _param_groups' split
            group["weight_decay"] = cfg.weight_decay if decayed else 0.0
        self.lr_scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # get_last_lr()

    def _warn_config_changes(self, saved: Mapping[str, Any], path: str | Path) -> None:
        now = self.config.to_dict()
        changed = {k: (saved[k], now[k]) for k in now if k in saved and k not in _RESUME_FREE_KEYS
                   and saved[k] != now[k]}
        if changed:
            log.warning("resuming %s with changed settings (saved -> now): %s", path, changed)

    def _move(self, batch: Any) -> dict[str, Any]:
        if not isinstance(batch, Mapping):
            raise ValueError(f"data.sample_batch must return a dict of tensors, got {type(batch)!r}")
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    @staticmethod
    def _check_output(out: Any) -> torch.Tensor:
        if not isinstance(out, Mapping) or "loss" not in out:
            raise ValueError(f"model.loss(batch) must return a dict with key 'loss', got {type(out)!r}"
                             + (f" with keys {sorted(out)}" if isinstance(out, Mapping) else ""))
        loss = out["loss"]
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"model.loss(batch)['loss'] must be a scalar tensor (shape ()), got {shape}")
        return loss

    def _train_step(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}
        for micro in range(cfg.grad_accum):
            batch = self._move(self.data.sample_batch(cfg.batch_size, self.generator))
            last = micro == cfg.grad_accum - 1
            sync = (self._forward.no_sync() if self.dist.enabled and not last  # type: ignore[operator]
                    else contextlib.nullcontext())
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._amp):
                    out = self._forward(batch)
                loss = self._check_output(out)
                (loss.float() / cfg.grad_accum).backward()
            for key, value in out.items():
                if isinstance(value, torch.Tensor) and value.ndim == 0:
                    v = value.detach().float() / cfg.grad_accum
                    logs[key] = logs[key] + v if key in logs else v
        if cfg.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip).detach().float()
        self.optimizer.step()
        self._lr_used = float(self.optimizer.param_groups[0]["lr"])  # this step's, before the schedule moves on
        self.lr_scheduler.step()
        after = getattr(self.model, "after_optimizer_step", None)
        if callable(after):  # e.g. consistency distillation's target network, once per update
            after()
        return logs

    def _log_train(self, sums: dict[str, torch.Tensor], count: int, steps_per_sec: float, pbar: tqdm) -> None:
        keys = sorted(sums)
        stacked = torch.stack([sums[k] for k in keys]) / count
        if self.dist.enabled:
            dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
            stacked = stacked / self.dist.world_size
        values = dict(zip(keys, stacked.tolist()))  # the one host sync per log interval
        self.last_losses = values
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"training loss became {values['loss']} at step {self.step}")
        if not self.dist.is_main:
            return
        record = dict(values)
        record["lr"] = self._lr_used  # the rate the logged step trained with
        record["steps_per_sec"] = float(steps_per_sec)
        if self.logger is not None:
            self.logger.log("train", self.step, record)
        pbar.set_postfix(loss=f"{values['loss']:.4g}", steps_s=f"{steps_per_sec:.1f}", refresh=False)

    def _evaluate(self, pbar: tqdm) -> None:
        if self.eval_fn is None or not self.dist.is_main:
            return
        was_training = self.ema.model.training
        self.ema.model.eval()
        with _isolated_rng(self.device):
            results = self.eval_fn(self.ema.model, self.step)
        self.ema.model.train(was_training)
        if not isinstance(results, Mapping):
            raise ValueError(f"eval_fn must return a dict of floats, got {type(results)!r}")
        self.last_eval = {k: float(v) for k, v in results.items()}
        self.last_eval_step = self.step
        if self.logger is not None:
            self.logger.log("eval", self.step, self.last_eval)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in self.last_eval.items())
        pbar.write(f"[step {self.step}] eval: {summary}")
