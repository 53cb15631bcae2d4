"""Distillation of a trained planner or policy into a one- or two-step student of the same kind.

Two methods share the student: an algorithm of the teacher's class and configuration, predicting v (an epsilon
teacher's student; a velocity or sample teacher's keeps its own target), started from the teacher's weights
(other heads, e.g. inverse dynamics, copied unchanged and frozen), sampled with ``sampler="consistency"`` and,
having learnt the guided teacher, without guidance.

- :class:`ConsistencyDistillation`: :func:`~diffusion_rl.diffusion.consistency_loss` on the teacher algorithm's
  own denoising problem (:meth:`Algorithm.denoising_problem`: the same inpainted entries, conditions and loss
  weights), with the teacher frozen and guided as it plans (classifier-free guidance weight ``guidance_weight``
  for conditioned algorithms; its x0 estimates clipped to ``clip_sample`` as its sampler clips them: pass the
  artifact's resolved value), on training points whose noise is scaled by the teacher's sampling
  ``temperature`` (where the student will start), and a target network that follows the student by EMA
  (``target_decay``). Samples in 1-2 steps.
- :class:`DirectDistillation`: :func:`~diffusion_rl.diffusion.direct_distillation_loss` on
  :class:`TeacherSamples`, pairs (initial noise, the teacher's deterministic sample from it) drawn once with the
  teacher's own sampler, guidance, temperature and clipping on the conditions and inpainted entries of its
  training windows. Samples in one step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from diffusion_rl.algos._common import applicable_options
from diffusion_rl.algos.base import Algorithm, algorithm_from_config
from diffusion_rl.diffusion import (
    ClassifierFreeGuidance,
    Inpaint,
    consistency_grid,
    consistency_loss,
    direct_distillation_loss,
)
from diffusion_rl.diffusion.consistency import check_noise_temperature, check_student_steps
from diffusion_rl.progress import progress_bar

__all__ = ["DETERMINISTIC_SAMPLERS", "NEXT_STEP_WEIGHT", "ConsistencyDistillation", "DirectDistillation",
           "TeacherSamples", "check_share", "teacher_samples"]

NEXT_STEP_WEIGHT = 50.0
"""The direct student's default loss weight on the plan row that decides the executed action (the one place it is
written: ``DirectDistillation``, ``distill_policy`` and configs/distill.yaml's ``null`` all mean it)."""

# what a student may predict: targets that define x0 at the pure-noise end (an epsilon student cannot)
_STUDENT_PREDICTIONS = ("sample", "v_prediction", "velocity")
# samplers whose output is a function of the initial noise (DDIM with eta = 0): what direct distillation can learn
DETERMINISTIC_SAMPLERS = ("ddim", "dpmsolver++", "euler", "heun")


class _Distillation(nn.Module):
    """The frozen teacher and the student every method trains (see the module docstring)."""

    def __init__(self, teacher: Algorithm, temperature: float = 1.0, student_prediction: str | None = None) -> None:
        super().__init__()
        if not hasattr(teacher, "net") or not hasattr(teacher, "schedule"):
            raise ValueError(f"{teacher.name}: only diffusion or flow models can be distilled (no denoising network)")
        self.temperature = check_noise_temperature(temperature)
        # an epsilon teacher's student predicts v (x0 = a x - s v keeps a share of the input; on hopper-medium
        # it scored 48.8 against 31.3 for "sample" at 10k steps); a velocity or sample model keeps its own
        # target. The teacher's weights are still the best start the student has
        prediction = student_prediction
        if prediction is None:
            prediction = teacher.prediction if teacher.prediction in _STUDENT_PREDICTIONS else "v_prediction"
        if prediction not in _STUDENT_PREDICTIONS:
            raise ValueError(f"student_prediction: expected one of {list(_STUDENT_PREDICTIONS)} (a target that "
                             f"defines x0 at pure noise) or None, got {student_prediction!r}")
        teacher.schedule.check_prediction(prediction)
        self.student = algorithm_from_config(teacher.name, {**teacher.config(), "prediction": prediction})
        self.student.load_state_dict(teacher.state_dict())
        self.student.to(next(teacher.parameters()).device).train()
        self.teacher = copy.deepcopy(teacher).eval().requires_grad_(False)
        for name, module in self.student.named_children():  # only the denoising network learns
            if name != "net":
                module.requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def student_sampling(self, steps: int = 1) -> dict[str, Any]:
        """The student's sampler settings: consistency sampling in ``steps`` steps, no guidance (it learnt the
        guided teacher), everything else as the teacher plans."""
        settings: dict[str, Any] = {"sampler": "consistency", "steps": steps}
        if "guidance_weight" in type(self.student).plan_arguments():
            settings["guidance_weight"] = 0.0
        return settings


class ConsistencyDistillation(_Distillation):
    """Teacher (frozen), student (trained) and the student's EMA target network; ``loss(batch)`` for Trainer."""

    def __init__(self, teacher: Algorithm, intervals: int = 20, guidance_weight: float | None = None,
                 target_decay: float = 0.95, clip_sample: float | None = None, temperature: float = 1.0,
                 student_prediction: str | None = None) -> None:
        super().__init__(teacher, temperature, student_prediction)
        if isinstance(intervals, bool) or not isinstance(intervals, int) or not 1 <= intervals <= teacher.schedule.num_steps:
            raise ValueError(f"intervals: expected an integer in [1, {teacher.schedule.num_steps}] (the teacher's "
                             f"timesteps), got {intervals!r}")
        if not 0.0 <= float(target_decay) < 1.0:
            raise ValueError(f"target_decay: expected a number in [0, 1), got {target_decay!r}")
        self.target_net = copy.deepcopy(teacher.net).eval().requires_grad_(False)
        self.grid = consistency_grid(teacher.schedule, intervals)
        self.guidance_weight = guidance_weight
        self.target_decay = float(target_decay)
        self.clip_sample = clip_sample

    def after_optimizer_step(self) -> None:
        """Called by the Trainer after every optimizer update (once per step, whatever ``grad_accum``): the target
        network follows the student. A training loop of one's own calls it after each ``optimizer.step()``."""
        self._follow()

    @torch.no_grad()
    def _follow(self) -> None:
        """Move the target network towards the student (the EMA of consistency distillation)."""
        for target, online in zip(self.target_net.parameters(), self.student.net.parameters()):
            target.lerp_(online.detach(), 1.0 - self.target_decay)
        for target, online in zip(self.target_net.buffers(), self.student.net.buffers()):
            target.copy_(online)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        problem = self.student.denoising_problem(batch)
        guidance = (ClassifierFreeGuidance(float(self.guidance_weight))
                    if problem.guided and self.guidance_weight is not None else None)
        value = consistency_loss(
            problem.wrap(self.student.net), problem.wrap(self.target_net), problem.wrap(self.teacher.net),
            problem.x0, self.student.schedule, self.grid, prediction=self.student.prediction,
            teacher_prediction=self.teacher.prediction, cond=problem.cond,
            guidance=guidance, known=problem.known, weights=problem.weights, clip_sample=self.clip_sample,
            temperature=self.temperature,
        )
        return {"loss": value, "consistency_loss": value}


class TeacherSamples:
    """Training windows with the noise ``"noise"`` each plan started from and the teacher's deterministic sample
    ``"teacher_sample"`` from it, in memory; ``sample_batch`` draws from them as :class:`SequenceDataset` does
    (the Trainer's data interface). Built by :func:`teacher_samples`."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        sizes = {k: v.shape[0] for k, v in tensors.items()}
        if "noise" not in tensors or "teacher_sample" not in tensors or len(set(sizes.values())) != 1:
            raise ValueError(f"TeacherSamples: expected 'noise', 'teacher_sample' and window tensors of one length, "
                             f"got {sizes}")
        self.tensors = tensors
        self.device = tensors["noise"].device

    def __len__(self) -> int:
        return self.tensors["noise"].shape[0]

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``batch_size`` pairs drawn uniformly with replacement."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = generator.device if generator is not None else self.device
        index = torch.randint(len(self), (batch_size,), generator=generator, device=device).to(self.device)
        return {k: v[index] for k, v in self.tensors.items()}


def check_share(value: Any, name: str) -> float:
    """``value`` as a share in [0, 1]; a ValueError naming ``name`` and the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


@torch.no_grad()
def teacher_samples(teacher: Algorithm, windows: Any, count: int, *, sampler: str = "ddim", steps: int | None = 10,
                    guidance_weight: float | None = None, temperature: float = 1.0, clip_sample: float | None = None,
                    conditions: dict[str, float] | None = None, condition_share: float = 0.0,
                    chunk: int = 1024, generator: torch.Generator | None = None,
                    progress: bool = True) -> TeacherSamples:
    """``count`` training windows (drawn from ``windows``, anything with ``sample_batch``), each with a standard
    normal draw and the sample the frozen ``teacher`` makes from it with the deterministic ``sampler`` in
    ``steps`` steps: the window's conditions, its inpainted entries held, classifier-free guidance
    ``guidance_weight`` where the algorithm is guided, noise scaled by ``temperature``, x0 clipped to
    ``clip_sample``: how the teacher plans.

    ``conditions`` (batch key -> value, e.g. ``{"returns": 0.1}``, the condition the planner is asked for) replaces
    the window's own value in a share ``condition_share`` of the windows (drawn at random; 1 = all): the student
    then learns most where it will be used instead of spreading over every label of the data."""
    check_share(condition_share, "condition_share")
    conditions = dict(conditions or {})
    unknown = sorted(set(conditions) - set(teacher.plan_conditions))
    if unknown:
        raise ValueError(f"conditions: {teacher.name} has no planning condition {unknown}; its conditions are "
                         f"{sorted(teacher.plan_conditions) or 'none'}")
    if sampler not in DETERMINISTIC_SAMPLERS:
        raise ValueError(f"sampler: direct distillation needs a deterministic sampler, one of "
                         f"{list(DETERMINISTIC_SAMPLERS)}, got {sampler!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"samples: expected an integer >= 1 (teacher samples to regress on), got {count!r}")
    temperature = check_noise_temperature(temperature)
    teacher = teacher.eval()
    solver = teacher.sampler(sampler, **applicable_options(sampler, steps=steps, eta=0.0))
    parts: list[dict[str, torch.Tensor]] = []
    bar = progress_bar(total=count, desc="teacher samples", unit="sample", disable=not progress)
    for start in range(0, count, chunk):
        batch = windows.sample_batch(min(chunk, count - start), generator)
        if conditions and condition_share > 0.0:
            rows = torch.rand(batch[next(iter(conditions))].shape[0], generator=generator,
                              device=generator.device if generator is not None else None) < condition_share
            for key, value in conditions.items():
                batch[key] = torch.where(rows.to(batch[key].device).view(-1, *([1] * (batch[key].ndim - 1))),
                                         torch.full_like(batch[key], float(value)), batch[key])
        problem = teacher.denoising_problem(batch)
        noise = torch.randn(problem.x0.shape, generator=generator,
                            device=generator.device if generator is not None else problem.x0.device)
        noise = noise.to(problem.x0.device, problem.x0.dtype)
        guidance = (ClassifierFreeGuidance(float(guidance_weight))
                    if problem.guided and guidance_weight is not None else None)
        constraints = [] if problem.known is None else [Inpaint(problem.known, problem.x0)]
        # the bare network, as the algorithms plan: the constraint holds the known entries before every call
        sample = solver.sample(teacher.net, tuple(problem.x0.shape), prediction=teacher.prediction,
                               cond=problem.cond, guidance=guidance, constraints=constraints,
                               temperature=temperature, initial_noise=noise, clip_sample=clip_sample,
                               device=problem.x0.device, dtype=problem.x0.dtype)
        parts.append({**batch, "noise": noise, "teacher_sample": sample})
        bar.update(noise.shape[0])
    bar.close()
    return TeacherSamples({k: torch.cat([p[k] for p in parts]) for k in parts[0]})


class DirectDistillation(_Distillation):
    """Teacher (frozen) and a student regressed on the teacher's samples in one step from noise (and, with
    ``steps`` > 1, from those samples re-noised to the later timesteps of the consistency sampler's grid:
    :func:`~diffusion_rl.diffusion.consistency.direct_distillation_loss`); ``loss(batch)`` for Trainer on
    :class:`TeacherSamples` drawn with the same ``temperature``.

    The loss weights are the algorithm's own (:meth:`Algorithm.denoising_problem`) with the row that decides the
    executed action (:attr:`Algorithm.next_step_row`) multiplied by ``next_step_weight``: on hopper-medium an
    unweighted student planned that row three times less precisely (mean squared error against the teacher's
    plans 0.00093 against 0.00032 at weight 10) and scored 54.9 against 72.3 at weight 10 (teacher 69.0); weight
    50 raised two other teachers' students by 12.8 and 6.0 points over weight 10 (30 episodes each, docs/results.md)."""

    def __init__(self, teacher: Algorithm, temperature: float = 1.0, student_prediction: str | None = None,
                 next_step_weight: float = NEXT_STEP_WEIGHT, steps: int = 1) -> None:
        steps = check_student_steps(steps)
        if isinstance(next_step_weight, bool) or not isinstance(next_step_weight, (int, float)) or not (
                0.0 < next_step_weight < float("inf")):
            raise ValueError(f"next_step_weight: expected a finite number > 0 (1 = no emphasis), "
                             f"got {next_step_weight!r}")
        super().__init__(teacher, temperature, student_prediction)
        self.next_step_weight = float(next_step_weight)
        self.steps = steps

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        problem = self.student.denoising_problem(batch)
        weights = problem.weights
        row = self.student.next_step_row
        if row is not None and self.next_step_weight != 1.0:
            x0 = problem.x0
            emphasis = torch.ones(1, x0.shape[1], *([1] * (x0.ndim - 2)), device=x0.device, dtype=x0.dtype)
            emphasis[:, row] = self.next_step_weight
            weights = emphasis if weights is None else weights * emphasis
        value = direct_distillation_loss(
            problem.wrap(self.student.net), batch["noise"], batch["teacher_sample"], self.student.schedule,
            prediction=self.student.prediction, x0=problem.x0, cond=problem.cond, known=problem.known,
            weights=weights, temperature=self.temperature, steps=self.steps,
        )
        return {"loss": value, "distillation_loss": value}
