"""Steering hooks for samplers: classifier-free guidance on the model output and gradient guidance on x_t."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffusion_rl._numbers import is_integer, is_real

__all__ = ["ClassifierFreeGuidance", "ComposedGuidance", "GradientGuidance", "make_model_fn", "repeat_cond"]

ModelFn = Callable[[Tensor, Tensor], Tensor]


def repeat_cond(cond: Any, copies: int = 2) -> Any:
    """Concatenate ``copies`` copies of a condition along dim 0 (tensors, or dicts / lists / tuples of tensors)."""
    if isinstance(cond, Tensor):
        return torch.cat([cond] * copies, dim=0)
    if isinstance(cond, dict):
        return {k: repeat_cond(v, copies) for k, v in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(repeat_cond(v, copies) for v in cond)
    raise ValueError(
        f"classifier-free guidance needs cond as a tensor or a dict/list/tuple of tensors, got {type(cond).__name__}"
    )


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Classifier-free guidance (Ho & Salimans 2022): out = c + weight * (c - u), where c is the conditional and
    u the unconditional (condition dropped) model output. weight = 0 is the purely conditional model; Decision
    Diffuser's "w = 1.2" (out = u + 1.2 (c - u)) is weight = 0.2 here. Both outputs come from ONE forward pass on
    the doubled batch with ``drop_mask = [False] * B + [True] * B``."""

    weight: float

    def __post_init__(self) -> None:
        if not is_real(self.weight) or not math.isfinite(self.weight):  # a NaN weight would sample NaN without a word
            raise ValueError(f"ClassifierFreeGuidance weight must be a finite float, got {self.weight!r}")  # noqa: TRY004 (house rule: ValueError)

    def model_fn(self, denoiser: Callable[..., Tensor], cond: Any, batch: int, device: torch.device) -> ModelFn:
        """The guided model (x, t) -> output for a batch of ``batch`` rows."""
        if cond is None:
            raise ValueError("ClassifierFreeGuidance needs cond (the condition to guide towards), got None")
        if self.weight == 0:  # exactly the conditional model: skip the unconditional half
            return lambda x, t: denoiser(x, t, cond)
        cond2 = repeat_cond(cond)
        drop = torch.zeros(2 * batch, dtype=torch.bool, device=device)
        drop[batch:].fill_(True)
        w = float(self.weight)

        def guided(x: Tensor, t: Tensor) -> Tensor:
            out = denoiser(torch.cat([x, x], dim=0), torch.cat([t, t], dim=0), cond2, drop_mask=drop)
            c, u = out.chunk(2, dim=0)
            return c + w * (c - u)

        return guided


@dataclass(frozen=True)
class ComposedGuidance:
    """Composed conditions (Decision Diffuser, Ajay et al. 2023, sec. 3.3): for a condition made of K parts,
    out = u + sum_i w_i (c_i - u), where c_i is the model output with only part i kept and u the output with every
    part dropped. All K + 1 outputs come from ONE forward pass on a (K + 1)-fold batch with a per-part
    ``drop_mask [(K + 1) B, K]`` (True = dropped), so the denoiser must take a parted condition (e.g.
    ``TemporalUnet(cond_parts=...)``). Parts with weight 0 are left out of the batch. Note the scale: one part
    with w = 1 is its plain conditional model (``ClassifierFreeGuidance(weight=w - 1)``)."""

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        weights = tuple(self.weights) if isinstance(self.weights, (list, tuple)) else None
        if not weights or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w != w or abs(w) == float("inf")
                              for w in weights):
            raise ValueError(f"ComposedGuidance weights must be a non-empty sequence of finite floats, one per part "
                             f"of the condition, got {self.weights!r}")
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))

    def model_fn(self, denoiser: Callable[..., Tensor], cond: Any, batch: int, device: torch.device) -> ModelFn:
        """The composed model (x, t) -> output for a batch of ``batch`` rows."""
        if cond is None:
            raise ValueError("ComposedGuidance needs cond (the parted condition to compose), got None")
        parts = len(self.weights)
        used = [i for i, w in enumerate(self.weights) if w != 0]
        copies = len(used) + 1
        drop = torch.ones(copies, batch, parts, dtype=torch.bool, device=device)
        for row, i in enumerate(used):
            drop[row, :, i].fill_(False)  # block `row` keeps only part i; the last block keeps none
        drop = drop.reshape(copies * batch, parts)
        cond_n = repeat_cond(cond, copies)
        weights = [self.weights[i] for i in used]

        def composed(x: Tensor, t: Tensor) -> Tensor:
            out = denoiser(torch.cat([x] * copies, dim=0), torch.cat([t] * copies, dim=0), cond_n, drop_mask=drop)
            chunks = out.chunk(copies, dim=0)
            u = chunks[-1]
            result = u
            for w, c in zip(weights, chunks[:-1]):
                result = result + w * (c - u)
            return result

        return composed


def make_model_fn(
    denoiser: Callable[..., Tensor],
    cond: Any,
    guidance: ClassifierFreeGuidance | ComposedGuidance | None,
    batch: int,
    device: torch.device,
) -> ModelFn:
    """(x, t) -> model output, with classifier-free guidance when ``guidance`` is given."""
    if guidance is None:
        return lambda x, t: denoiser(x, t, cond)
    if not hasattr(guidance, "model_fn"):
        raise ValueError(f"guidance must be a ClassifierFreeGuidance or ComposedGuidance, got {type(guidance).__name__}")
    return guidance.model_fn(denoiser, cond, batch, device)


@dataclass
class GradientGuidance:
    """Gradient guidance on x_t (Diffuser's value guidance, ``n_step_guided_p_sample``).

    Before each denoising step at timestep t >= ``t_stopgrad``, x_t is moved ``n_steps`` times by
    ``scale * grad_x fn(x_t, t)`` (times the posterior variance of that step when ``scale_by_variance``), and the
    constraints are re-applied after each move. ``fn(x, t)`` returns a tensor [B] to be maximized. For t below
    ``t_stopgrad`` fn is only evaluated (no move), so ``sample(..., return_info=True)`` can still report it: the
    info's ``guide_values`` are fn's values from the last denoising step, as Diffuser uses them to rank plans.
    """

    fn: Callable[[Tensor, Tensor], Tensor]
    scale: float = 0.1
    n_steps: int = 2
    t_stopgrad: int = 2
    scale_by_variance: bool = True

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ValueError(f"GradientGuidance fn must be callable fn(x, t) -> Tensor [B], got {self.fn!r}")  # noqa: TRY004 (house rule: ValueError)
        for name in ("n_steps", "t_stopgrad"):
            value = getattr(self, name)
            if not is_integer(value) or value < 0:
                raise ValueError(f"GradientGuidance {name} must be an integer >= 0, got {value!r}")
        if not is_real(self.scale) or not math.isfinite(self.scale):
            raise ValueError(f"GradientGuidance scale must be a finite float (a NaN or inf would make every sample "
                             f"NaN), got {self.scale!r}")

    def _values(self, x: Tensor, t: Tensor) -> Tensor:
        y = self.fn(x, t)
        if y.shape != (x.shape[0],):
            raise ValueError(f"GradientGuidance fn must return shape [{x.shape[0]}], got {tuple(y.shape)}")
        return y

    def apply(
        self, x: Tensor, t: Tensor, step_t: int, variance: Tensor, constrain: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Move x_t along the guide's gradient; returns (new x, fn values at the last evaluated x)."""
        if step_t < self.t_stopgrad or self.n_steps == 0:
            with torch.no_grad():
                return x, self._values(x, t).detach()
        values = x.new_zeros(x.shape[0])
        for _ in range(self.n_steps):
            # inference_mode(False): under torch.inference_mode (a deployed control loop) x and t are inference
            # tensors, which autograd cannot record; clones made outside it are ordinary tensors
            with torch.inference_mode(False), torch.enable_grad():
                xg = x.detach().clone().requires_grad_(True)
                y = self._values(xg, t.clone())
                (grad,) = torch.autograd.grad(y.sum(), xg)
            step = self.scale * grad
            if self.scale_by_variance:
                step = step * variance
            x = constrain(x.detach() + step)
            values = y.detach()
        return x, values
