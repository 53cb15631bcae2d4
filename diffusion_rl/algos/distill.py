"""Consistency distillation of a trained planner or policy into a one- or two-step student of the same kind.

``ConsistencyDistillation(teacher)`` is a model for the ordinary :class:`~diffusion_rl.training.Trainer`: its
loss is :func:`~diffusion_rl.diffusion.consistency_loss` on the teacher algorithm's own denoising problem
(:meth:`Algorithm.denoising_problem`: the same inpainted entries, conditions and loss weights), with the teacher
frozen and guided as it plans (classifier-free guidance weight ``guidance_weight`` for conditioned algorithms; its
x0 estimates clipped to ``clip_sample`` as its sampler clips them: pass the artifact's resolved value), on
training points whose noise is scaled by the teacher's sampling ``temperature`` (where the student will start), and
a target network that follows the student by EMA (``target_decay``). ``student`` is an algorithm of the teacher's
class and configuration, predicting v (an epsilon teacher's student; a velocity or sample teacher's keeps its
own target), started from the teacher's weights (other heads, e.g. inverse dynamics, copied unchanged), sampled
with ``sampler="consistency"`` in 1-2 steps and, having learnt the guided teacher, without guidance.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from diffusion_rl.algos.base import Algorithm, algorithm_from_config
from diffusion_rl.diffusion import ClassifierFreeGuidance, consistency_grid, consistency_loss
from diffusion_rl.diffusion.consistency import check_noise_temperature

__all__ = ["ConsistencyDistillation"]

# what a student may predict: targets that define x0 at the pure-noise end (an epsilon student cannot)
_STUDENT_PREDICTIONS = ("sample", "v_prediction", "velocity")


class ConsistencyDistillation(nn.Module):
    """Teacher (frozen), student (trained) and the student's EMA target network; ``loss(batch)`` for Trainer."""

    def __init__(self, teacher: Algorithm, intervals: int = 20, guidance_weight: float | None = None,
                 target_decay: float = 0.95, clip_sample: float | None = None, temperature: float = 1.0,
                 student_prediction: str | None = None) -> None:
        super().__init__()
        if not hasattr(teacher, "net") or not hasattr(teacher, "schedule"):
            raise ValueError(f"{teacher.name}: only diffusion or flow models can be distilled (no denoising network)")
        if isinstance(intervals, bool) or not isinstance(intervals, int) or not 1 <= intervals <= teacher.schedule.num_steps:
            raise ValueError(f"intervals: expected an integer in [1, {teacher.schedule.num_steps}] (the teacher's "
                             f"timesteps), got {intervals!r}")
        self.temperature = check_noise_temperature(temperature)
        if not 0.0 <= float(target_decay) < 1.0:
            raise ValueError(f"target_decay: expected a number in [0, 1), got {target_decay!r}")
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
        self.target_net = copy.deepcopy(teacher.net).eval().requires_grad_(False)
        for name, module in self.student.named_children():  # only the denoising network learns
            if name != "net":
                module.requires_grad_(False)
        self.grid = consistency_grid(teacher.schedule, intervals)
        self.guidance_weight = guidance_weight
        self.target_decay = float(target_decay)
        self.clip_sample = clip_sample

    @torch.no_grad()
    def _follow(self) -> None:
        """Move the target network towards the student (the EMA of consistency distillation)."""
        for target, online in zip(self.target_net.parameters(), self.student.net.parameters()):
            target.lerp_(online.detach(), 1.0 - self.target_decay)
        for target, online in zip(self.target_net.buffers(), self.student.net.buffers()):
            target.copy_(online)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.training:
            self._follow()
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

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss(batch)

    def student_sampling(self, steps: int = 1) -> dict[str, Any]:
        """The student's sampler settings: consistency sampling in ``steps`` steps, no guidance (it learnt the
        guided teacher), everything else as the teacher plans."""
        settings: dict[str, Any] = {"sampler": "consistency", "steps": steps}
        if "guidance_weight" in type(self.student).plan_arguments():
            settings["guidance_weight"] = 0.0
        return settings
