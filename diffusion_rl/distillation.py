"""Distil a trained planner or policy artifact into a student that plans in 1-2 network evaluations.

``distill_policy(teacher, store, method=...)`` trains the student of one of :data:`DISTILLATION_METHODS` on the
teacher's own data (windows built with the teacher's normalizers and data settings, so return labels mean what
they meant in training) with the ordinary Trainer (checkpoints, resume, TensorBoard in ``run_dir``) and returns
it as a ``Policy`` with the teacher's settings, execution and action bounds, sampling with
``sampler="consistency"``:

- ``"consistency"``: consistency distillation (:class:`~diffusion_rl.algos.distill.ConsistencyDistillation`),
  1-4 steps;
- ``"direct"``: regressed on ``samples`` plans the teacher draws once with its own sampling settings
  (:class:`~diffusion_rl.algos.distill.DirectDistillation`), 1-4 steps (the later ones refine the plan
  re-noised; a student of 2 steps can also replan warm in one, ``warm_start_t`` at its second timestep).

``scripts/distill.py`` is its command line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch

from diffusion_rl.algos._common import auto_clip
from diffusion_rl.algos.distill import (
    NEXT_STEP_WEIGHT,
    ConsistencyDistillation,
    DirectDistillation,
    check_share,
    teacher_samples,
)
from diffusion_rl.data import EpisodeStore
from diffusion_rl.diffusion import consistency_grid, make_sampler
from diffusion_rl.pipeline import _sequence_dataset
from diffusion_rl.policy import Policy
from diffusion_rl.training import Trainer, TrainerConfig

__all__ = ["DISTILLATION_METHODS", "check_method", "check_on_grid", "distill_policy"]


def _consistency(teacher: Policy, windows: Any, *, intervals: int, guidance_weight: float | None,
                 target_decay: float, clip: float | None, temperature: float, student_prediction: str | None,
                 **_: Any) -> tuple[Any, Any, str, dict[str, Any]]:
    distiller = ConsistencyDistillation(teacher.algo, intervals=intervals, guidance_weight=guidance_weight,
                                        target_decay=target_decay, clip_sample=clip, temperature=temperature,
                                        student_prediction=student_prediction)
    return distiller, windows, f"{len(distiller.grid)} intervals", {"intervals": intervals,
                                                                    "target_decay": target_decay}


def _direct(teacher: Policy, windows: Any, *, guidance_weight: float | None, clip: float | None,
            temperature: float, student_prediction: str | None, samples: int, next_step_weight: float, seed: int,
            target_share: float, student_steps: int, progress: bool, log: Callable[[str], None],
            **_: Any) -> tuple[Any, Any, str, dict[str, Any]]:
    algo = teacher.algo
    distiller = DirectDistillation(algo, temperature=temperature, student_prediction=student_prediction,
                                   next_step_weight=next_step_weight, steps=student_steps)
    sampler, steps = teacher.sampling.get("sampler"), teacher.sampling.get("steps")
    if sampler == "ddpm":  # ancestral steps are not a function of the initial noise: their deterministic twin
        sampler, steps = "ddim", algo.schedule.num_steps
        log(f"the teacher samples with ddpm: its plans for the student are drawn by ddim over all {steps} steps")
    log(f"drawing {samples:,} plans of the teacher ({sampler}, {steps} steps) to regress on")
    device = next(algo.parameters()).device
    # the planner's own conditions (a Decision Diffuser's target_return) for a share of the plans
    conditions = {key: float(teacher.sampling[name]) for key, name in algo.plan_conditions.items()}
    if conditions and target_share > 0:
        rest = "" if target_share == 1 else ", the rest at the data's"
        log(f"{target_share:.0%} of the plans at the planner's condition {conditions}{rest}")
    pairs = teacher_samples(algo, windows, samples, sampler=sampler, steps=steps, guidance_weight=guidance_weight,
                            temperature=distiller.temperature, clip_sample=clip, conditions=conditions,
                            condition_share=target_share,
                            generator=torch.Generator(device).manual_seed(seed), progress=progress)
    return distiller, pairs, f"{samples:,} teacher plans ({sampler}, {steps} steps)", {
        "samples": samples, "next_step_weight": next_step_weight, "teacher_sampler": sampler, "teacher_steps": steps,
        "target_share": target_share, **({"conditions": conditions} if conditions and target_share > 0 else {})}


# how each method builds its distiller and training data: (distiller, data, description, metadata)
_METHODS: dict[str, Callable[..., tuple[Any, Any, str, dict[str, Any]]]] = {"consistency": _consistency,
                                                                           "direct": _direct}
DISTILLATION_METHODS = tuple(_METHODS)


def check_method(method: str, student_steps: int) -> None:
    """A ValueError naming the allowed values unless ``method`` is known and can sample in ``student_steps``."""
    if method not in DISTILLATION_METHODS:
        raise ValueError(f"method: expected one of {list(DISTILLATION_METHODS)}, got {method!r}")
    if student_steps not in (1, 2, 3, 4):
        raise ValueError(f"student_steps: expected 1 to 4 network evaluations per plan, got {student_steps!r}")


def check_on_grid(process: Any, intervals: int, student_steps: int) -> None:
    """A ValueError unless the consistency sampler's ``student_steps`` timesteps on ``process`` lie on the grid of
    ``intervals`` the student is trained at (trailing spacing rounds, so divisibility alone does not say); it
    names the interval counts that would do."""
    if isinstance(intervals, bool) or not isinstance(intervals, int) or not 1 <= intervals <= process.num_steps:
        raise ValueError(f"intervals: expected an integer in [1, {process.num_steps}] (the teacher's steps), got "
                         f"{intervals!r}")
    grid = set(consistency_grid(process, intervals))
    wanted = make_sampler("consistency", process, steps=student_steps).timesteps
    if set(wanted) <= grid:
        return
    fits = [m for m in range(student_steps, process.num_steps + 1)
            if set(wanted) <= set(consistency_grid(process, m))]
    near = sorted(fits, key=lambda m: (abs(m - intervals), m))[:3]
    raise ValueError(f"student_steps={student_steps}: a consistency student samples at timesteps {wanted}, but "
                     f"intervals={intervals} trains it only at {sorted(grid, reverse=True)[:8]}...; use intervals in "
                     f"{sorted(near)} (or another student_steps)")


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short hash of a module's parameters and buffers (names, shapes, dtypes and values): which teacher a
    checkpoint was distilled from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def distill_policy(
    teacher: Policy,
    store: EpisodeStore,
    *,
    data: dict[str, Any] | None = None,
    method: str = "direct",
    intervals: int = 20,
    student_steps: int = 1,
    guidance_weight: float | None = None,
    target_decay: float = 0.95,
    temperature: float | None = None,
    student_prediction: str | None = None,
    samples: int = 32768,
    next_step_weight: float | None = None,
    target_share: float | None = None,
    trainer: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Policy, dict[str, Any]]:
    """(the student policy, the training summary). ``data``: the teacher's data settings (default: what its
    artifact recorded); ``guidance_weight``: the teacher's guidance while distilling (default: its sampling
    setting); ``temperature``: the noise scale of the training points (default: the teacher's sampling
    temperature, which the student keeps); ``student_prediction``: what the student predicts (default:
    v_prediction for an epsilon teacher, the teacher's own target otherwise); ``trainer``: TrainerConfig fields
    (max_steps, lr, run_dir, device, seed...). Consistency only: ``intervals``, ``target_decay``; direct only:
    ``samples`` (the teacher's plans, drawn with its sampler and steps, DDIM's eta set to 0; a DDPM teacher's
    by DDIM over all its steps) and
    ``next_step_weight`` (the loss weight of the row that decides the executed action; None =
    :data:`~diffusion_rl.algos.distill.NEXT_STEP_WEIGHT`), ``target_share`` (the
    share of those plans drawn at the planner's own condition, e.g. the Decision Diffuser's ``target_return``,
    instead of the window's label: 1 = a student for that condition only; None = 1 for a direct student of a
    conditioned teacher, 0 otherwise)."""
    check_method(method, student_steps)
    if next_step_weight is None:
        next_step_weight = NEXT_STEP_WEIGHT
    algo = teacher.algo
    if target_share is None:  # measured on hopper-medium: 73.7 against 59.9 for the same teacher (docs/results.md)
        target_share = 1.0 if method == "direct" and algo.plan_conditions else 0.0
    target_share = check_share(target_share, "target_share")
    if target_share > 0 and method != "direct":
        raise ValueError(f"target_share: only the direct method draws the teacher's plans (method={method!r})")
    if target_share > 0 and not algo.plan_conditions:
        raise ValueError(f"target_share: {algo.name} plans without a condition to target (it has none)")
    if method == "consistency":  # before any work: the student must sample where it is trained
        check_on_grid(algo.schedule, intervals, student_steps)
    settings = dict(data if data is not None else teacher.metadata.get("data", {}))
    if guidance_weight is None:
        guidance_weight = teacher.sampling.get("guidance_weight")
    if temperature is None:
        temperature = teacher.sampling.get("temperature", 1.0)
    clip = teacher.sampling.get("clip_sample", algo.plan_arguments().get("clip_sample"))
    if clip == "auto":
        clip = auto_clip(type(algo), teacher.normalizers)
    device = next(algo.parameters()).device  # where the teacher was loaded
    # the exported student is the trainer's EMA: with a fixed decay it would keep 0.995^(steps/10) of the
    # teacher's weights (37% after 2,000 steps), read in the student's new parametrization; the warm-up EMA of
    # Diffusion Policy forgets the start within a few hundred steps. Step count, batch and learning rate are
    # direct distillation's measured ones (configs/distill.yaml)
    cfg = TrainerConfig(**{"max_steps": 4000, "batch_size": 128, "lr": 3e-4, "lr_schedule": "cosine",
                           "device": str(device), "ema_every": 1, "ema_power": 0.75, "ema_decay": 0.999,
                           **(trainer or {})})
    windows = _sequence_dataset(algo, store, int(algo.config()["horizon"]), settings, device,
                                normalizers=dict(teacher.normalizers))
    distiller, train_data, details, method_meta = _METHODS[method](
        teacher, windows, intervals=intervals, guidance_weight=guidance_weight, target_decay=target_decay,
        clip=clip, temperature=temperature, student_prediction=student_prediction, samples=samples,
        next_step_weight=next_step_weight, target_share=target_share, student_steps=student_steps, seed=cfg.seed,
        progress=cfg.progress, log=log)
    log(f"distilling {algo.name} ({sum(p.numel() for p in distiller.student.net.parameters()):,} trained "
        f"parameters) on {len(windows):,} windows by {method}: {details}, teacher guidance {guidance_weight}, "
        f"x0 clip {clip}, noise temperature {distiller.temperature}, student samples in {student_steps} step(s)")
    # a resume must continue this distillation: the same teacher (its weights), data, method and settings
    dataset = {"steps": store.num_steps, "episodes": store.num_episodes, "sha256": store.digest()}
    run_settings = {"teacher": weights_fingerprint(algo), "dataset": dataset, "method": method,
                    "student_steps": student_steps, "intervals": intervals, "samples": samples,
                    "target_share": target_share, "data": settings,
                    "guidance_weight": guidance_weight, "temperature": temperature,
                    "student_prediction": student_prediction, "next_step_weight": next_step_weight,
                    "target_decay": target_decay}
    runner = Trainer(distiller, train_data, cfg, run_settings=run_settings)
    summary = runner.fit()
    student = runner.ema_model.student.eval()  # the EMA of the student, as every trained artifact
    # the student plans from noise at the temperature it was trained at, whatever the teacher's was
    sampling = {**teacher.sampling, **distiller.student_sampling(student_steps), "temperature": distiller.temperature}
    if "warm_start_t" in sampling:
        sampling["warm_start_t"] = None  # a one-step student plans from noise
    policy = Policy(student, teacher.normalizers, env_name=teacher.env_name, sampling=sampling,
                    execution=teacher.execution, execution_options=teacher.execution_options,
                    action_bounds=teacher.action_bounds_list(), seed=teacher.seed,
                    metadata={**teacher.metadata, "data": settings, "distillation": {
                        "method": method, **method_meta, "guidance_weight": guidance_weight,
                        "temperature": distiller.temperature, "student_prediction": distiller.student.prediction,
                        "student_steps": student_steps, "train_steps": summary["step"]}})
    return policy, summary
