"""Consistency distillation (Song et al. 2023; Consistency Policy, Prasad et al. 2024): a student that maps any
point of the teacher's sampling ODE straight to its end, so that it samples in one or two network evaluations.

The student has the teacher's architecture and starts from its weights; its consistency function is the clean
sample its output implies, f(x_t, t) = x0(student(x_t, t)), and f(x, clean) = x. One training step draws x_{t'} on
the forward process at a grid timestep t' (known entries inpainted), moves it one deterministic (DDIM, eta = 0)
step of the guided teacher to the next grid timestep t, and regresses f_student(x_{t'}, t') on the target
network's f_target(x_t, t) (an EMA of the student; the clean sample itself after the last step). A planner that
samples at a low temperature (x_T = tau * z, as the Decision Diffuser's 0.5) starts its ODE where the forward
process rarely goes; ``temperature=tau`` draws the training points x_{t'} = a x0 + s * tau * eps so the student
learns the trajectories it will be asked for. The student
predicts the clean sample (or a velocity): an epsilon-predicting student could not express x0 near pure noise,
where x0 = (x - s eps) / a divides by a ~ 0. It is sampled with the ``"consistency"`` sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffusion_rl.diffusion.guidance import ClassifierFreeGuidance
from diffusion_rl.diffusion.losses import check_weights
from diffusion_rl.diffusion.prediction import get_prediction
from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.timesteps import spaced_timesteps

__all__ = [
    "check_noise_temperature",
    "check_student_steps",
    "consistency_grid",
    "consistency_loss",
    "direct_distillation_loss",
]


def check_noise_temperature(temperature: Any, name: str = "temperature") -> float:
    """The scale of the training points' noise as a float in (0, 1], or a ValueError naming the range."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0.0 < temperature <= 1.0:
        raise ValueError(f"{name}: expected a number in (0, 1] (the sampling temperature the student is used at), "
                         f"got {temperature!r}")
    return float(temperature)


def check_student_steps(steps: Any, name: str = "steps") -> int:
    """A student's network evaluations per plan as an int >= 1, or a ValueError naming ``name``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {steps!r}")
    return steps


def _student_target(prediction: str, process: ForwardProcess, caller: str) -> Any:
    """The student's prediction target, refusing epsilon: x0 from a predicted epsilon divides by a(t) ~ 0 at the
    pure-noise end, where a one-step student starts."""
    if prediction == "epsilon":
        raise ValueError(f"{caller}: the student must predict the clean sample ('sample') or a velocity: "
                         "x0 from a predicted epsilon divides by a(t) ~ 0 at the pure-noise end")
    pred = get_prediction(prediction)
    process.check_prediction(prediction)
    return pred


def _weighted_mse(prediction: Tensor, target: Tensor, weights: Tensor | None) -> Tensor:
    sq = (prediction - target) ** 2
    if weights is not None:
        check_weights(weights, sq.shape)
        sq = sq * weights.to(sq.dtype)
    return sq.mean()


def consistency_grid(process: ForwardProcess, intervals: int) -> list[int]:
    """The descending grid of timesteps the distillation steps between: ``intervals`` evenly spaced timesteps
    from the pure-noise end ("trailing" spacing); the last interval ends at the clean sample."""
    return spaced_timesteps(process.num_steps, intervals, "trailing")


def consistency_loss(
    student: Callable[..., Tensor],
    target: Callable[..., Tensor],
    teacher: Callable[..., Tensor],
    x0: Tensor,
    process: ForwardProcess,
    grid: list[int],
    *,
    prediction: str,
    teacher_prediction: str | None = None,
    cond: Any = None,
    guidance: ClassifierFreeGuidance | None = None,
    known: Tensor | None = None,
    weights: Tensor | None = None,
    clip_sample: float | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One consistency-distillation loss on clean data ``x0``.

    student, target, teacher: denoisers ``(x_t, t, cond, drop_mask=None) -> output``; student and target (its EMA)
        predict ``prediction`` ("sample", "v_prediction" or "velocity"), the frozen teacher
        ``teacher_prediction`` (default: the same) and is guided by ``guidance``.
    grid: descending timesteps (:func:`consistency_grid`); known: a bool mask broadcastable to x0 of entries held
        at their values in ``x0`` (inpainting: a plan's current state, history or goal); weights: per-element loss
        weights broadcastable to x0 (padding, known entries); temperature: the scale of the noise in the training
        points (the sampler's temperature the student will be used at; 1 = the forward process).
    """
    temperature = check_noise_temperature(temperature, "consistency_loss: temperature")
    pred = _student_target(prediction, process, "consistency_loss")
    teacher_pred = get_prediction(teacher_prediction or prediction)
    process.check_prediction(teacher_pred.name)
    batch, device = x0.shape[0], x0.device
    gen_device = generator.device if generator is not None else device
    n = torch.randint(0, len(grid), (batch,), generator=generator, device=gen_device).to(device)
    grid_t = torch.tensor(grid + [-1], dtype=torch.long, device=device)
    t_hi, t_lo = grid_t[n], grid_t[n + 1]
    clean = t_lo < 0
    t_lo_safe = torch.where(clean, torch.zeros_like(t_lo), t_lo)
    eps = temperature * torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(device)

    def hold(x: Tensor) -> Tensor:
        return x if known is None else torch.where(known, x0, x)

    a_hi, s_hi = process.coefficients(t_hi, x0)
    a_lo, s_lo = process.coefficients(t_lo_safe, x0)
    view = (-1,) + (1,) * (x0.ndim - 1)
    a_lo = torch.where(clean.view(view), torch.ones_like(a_lo), a_lo)
    s_lo = torch.where(clean.view(view), torch.zeros_like(s_lo), s_lo)
    x_hi = hold(a_hi * x0 + s_hi * eps)
    with torch.no_grad():
        out = teacher(x_hi, t_hi, cond)
        if guidance is not None and guidance.weight != 0:  # two passes: the denoisers may hold batch-sized data
            uncond = teacher(x_hi, t_hi, cond, drop_mask=torch.ones(batch, dtype=torch.bool, device=device))
            out = out + guidance.weight * (out - uncond)
        t0, e0 = teacher_pred.to_x0_eps(out, x_hi, a_hi, s_hi)
        if clip_sample is not None:
            t0 = t0.clamp(-clip_sample, clip_sample)
        x_lo = hold(a_lo * t0 + s_lo * e0)  # one DDIM (eta = 0) step of the guided teacher
        f_target, _ = pred.to_x0_eps(target(x_lo, t_lo_safe, cond), x_lo, a_lo, s_lo.clamp(min=1e-12))
        if clip_sample is not None:
            f_target = f_target.clamp(-clip_sample, clip_sample)
        f_target = torch.where(clean.view(view), x_lo, f_target)  # f(x, clean) = x
    f_student, _ = pred.to_x0_eps(student(x_hi, t_hi, cond), x_hi, a_hi, s_hi)
    return _weighted_mse(f_student, f_target, weights)


def direct_distillation_loss(
    student: Callable[..., Tensor],
    noise: Tensor,
    target: Tensor,
    process: ForwardProcess,
    *,
    prediction: str,
    x0: Tensor | None = None,
    cond: Any = None,
    known: Tensor | None = None,
    weights: Tensor | None = None,
    temperature: float = 1.0,
    steps: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Distillation of a deterministic sampler (Luhman & Luhman 2021): the clean sample the student implies at
    the pure-noise end from x_T = temperature * ``noise`` (known entries held at their values in ``x0``) is
    regressed on ``target``, the teacher sampler's output from the same noise.

    ``steps`` > 1 also trains the later timesteps of ``consistency_grid(process, steps)``, where the
    ``"consistency"`` sampler re-noises its estimate: there x_t = a ``target`` + s * temperature * eps (eps
    fresh, from ``generator``) is regressed on ``target``, so the student refines a plan in further evaluations,
    or replans warm in one (``warm_start_t`` at the second timestep). The loss is the mean over the timesteps.
    ``weights``: per-element loss weights broadcastable to the sample.
    """
    temperature = check_noise_temperature(temperature, "direct_distillation_loss: temperature")
    steps = check_student_steps(steps, "direct_distillation_loss: steps")
    if noise.shape != target.shape:
        raise ValueError(f"direct_distillation_loss: noise {tuple(noise.shape)} and target {tuple(target.shape)} "
                         "must have the same shape")
    if known is not None and x0 is None:
        raise ValueError("direct_distillation_loss: known entries need their values (x0)")
    pred = _student_target(prediction, process, "direct_distillation_loss")
    losses = []
    for k, step in enumerate(consistency_grid(process, steps)):
        t = torch.full((noise.shape[0],), step, dtype=torch.long, device=noise.device)
        a, s = process.coefficients(t, noise)
        if k == 0:  # the pure-noise end: the teacher's own starting noise
            x = temperature * noise
        else:
            eps = torch.randn(noise.shape, generator=generator, dtype=noise.dtype,  # drawn where the generator lives
                              device=generator.device if generator is not None else noise.device).to(noise.device)
            x = a * target + s * temperature * eps
        if known is not None:
            x = torch.where(known, x0, x)
        f_student, _ = pred.to_x0_eps(student(x, t, cond), x, a, s)
        losses.append(_weighted_mse(f_student, target, weights))
    return torch.stack(losses).mean()
