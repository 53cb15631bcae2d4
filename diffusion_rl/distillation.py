"""Distil a trained planner or policy artifact into a consistency student that plans in 1-2 network evaluations.

``distill_policy(teacher, store, ...)`` trains :class:`~diffusion_rl.algos.distill.ConsistencyDistillation` on
the teacher's own data (windows built with the teacher's normalizers and data settings, so return labels mean
what they meant in training) with the ordinary Trainer (checkpoints, resume, TensorBoard in ``run_dir``) and
returns the student as a ``Policy`` with the teacher's settings, execution and action bounds, sampling with
``sampler="consistency"``. ``scripts/distill.py`` is its command line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffusion_rl.algos.distill import ConsistencyDistillation
from diffusion_rl.data import EpisodeStore
from diffusion_rl.pipeline import _sequence_dataset
from diffusion_rl.policy import Policy
from diffusion_rl.training import Trainer, TrainerConfig

__all__ = ["distill_policy"]


def distill_policy(
    teacher: Policy,
    store: EpisodeStore,
    *,
    data: dict[str, Any] | None = None,
    intervals: int = 20,
    student_steps: int = 1,
    guidance_weight: float | None = None,
    target_decay: float = 0.95,
    temperature: float | None = None,
    student_prediction: str | None = None,
    trainer: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Policy, dict[str, Any]]:
    """(the student policy, the training summary). ``data``: the teacher's data settings (default: what its
    artifact recorded); ``guidance_weight``: the teacher's guidance while distilling (default: its sampling
    setting); ``temperature``: the noise scale of the training points (default: the teacher's sampling
    temperature, which the student keeps); ``student_prediction``: what the student predicts (default:
    v_prediction for an epsilon teacher, the teacher's own target otherwise); ``trainer``: TrainerConfig fields
    (max_steps, lr, run_dir, device...)."""
    if student_steps not in (1, 2, 3, 4):
        raise ValueError(f"student_steps: expected 1 to 4 network evaluations per plan, got {student_steps!r}")
    algo = teacher.algo
    settings = dict(data if data is not None else teacher.metadata.get("data", {}))
    if guidance_weight is None:
        guidance_weight = teacher.sampling.get("guidance_weight")
    if temperature is None:
        temperature = teacher.sampling.get("temperature", 1.0)
    clip = teacher.sampling.get("clip_sample", algo.plan_arguments().get("clip_sample"))
    if clip == "auto":
        clip = teacher.normalizers["observations"].clip_range
    device = next(algo.parameters()).device  # where the teacher was loaded
    # the exported student is the trainer's EMA: with a fixed decay it would keep 0.995^(steps/10) of the
    # teacher's weights (37% after 2,000 steps), read in the student's new parametrization; the warm-up EMA of
    # Diffusion Policy forgets the start within a few hundred steps
    cfg = TrainerConfig(**{"max_steps": 2000, "lr": 1e-4, "device": str(device), "ema_every": 1, "ema_power": 0.75,
                           "ema_decay": 0.999, **(trainer or {})})
    windows = _sequence_dataset(algo, store, int(algo.config()["horizon"]), settings, device,
                                normalizers=dict(teacher.normalizers))
    distiller = ConsistencyDistillation(algo, intervals=intervals, guidance_weight=guidance_weight,
                                        target_decay=target_decay, clip_sample=clip, temperature=temperature,
                                        student_prediction=student_prediction)
    log(f"distilling {algo.name} ({sum(p.numel() for p in distiller.student.net.parameters()):,} trained "
        f"parameters) on {len(windows):,} windows: {len(distiller.grid)} intervals, teacher guidance "
        f"{guidance_weight}, x0 clip {clip}, noise temperature {distiller.temperature}, student samples in {student_steps} step(s)")
    runner = Trainer(distiller, windows, cfg)
    summary = runner.fit()
    student = runner.ema_model.student.eval()  # the EMA of the student, as every trained artifact
    sampling = {**teacher.sampling, **distiller.student_sampling(student_steps)}
    if "warm_start_t" in sampling:
        sampling["warm_start_t"] = None  # a one-step student plans from noise
    policy = Policy(student, teacher.normalizers, env_name=teacher.env_name, sampling=sampling,
                    execution=teacher.execution, execution_options=teacher.execution_options,
                    action_bounds=teacher.action_bounds_list(), seed=0,
                    metadata={**teacher.metadata, "distillation": {
                        "intervals": intervals, "guidance_weight": guidance_weight, "target_decay": target_decay,
                        "temperature": distiller.temperature, "student_prediction": distiller.student.prediction,
                        "steps": summary["step"]}})
    return policy, summary
