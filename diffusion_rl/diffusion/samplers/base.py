"""The shared sampling loop: initial noise or warm start, guidance hooks, constraints, and per-step tables.

A concrete sampler supplies its descending timestep list, its per-step coefficient tables (float64 on the host,
cast once to the sampling dtype and device and cached), and ``_update``: how x moves from one timestep to the next
given the predicted x0 and eps. Everything else (the hooks) lives here, so every sampler gets all of them. The
tables are written in terms of the forward process's signal and noise powers (``alpha_bar``, ``sigma2``), so every
sampler runs on any :class:`~diffusion_rl.diffusion.process.ForwardProcess` (a noise schedule or a flow path).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from diffusion_rl._numbers import is_integer, is_real
from diffusion_rl.diffusion.constraints import Constraint, bind_constraints
from diffusion_rl.diffusion.guidance import ClassifierFreeGuidance, GradientGuidance, make_model_fn
from diffusion_rl.diffusion.prediction import get_prediction
from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.timesteps import spaced_timesteps

__all__ = ["Sampler", "SpacedSampler", "randn"]

Tables = dict[str, Tensor]
NoiseFn = Callable[[], Tensor]
PredictFn = Callable[[Tensor, int], tuple[Tensor, Tensor]]
"""(x, step index j) -> (x0, eps) predicted by the (guided) model at the sampler's j-th timestep (clipped)."""


def randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Standard normal noise drawn on the generator's device (then moved), so a CPU generator gives the same numbers
    whatever the sampling device, as diffusers' ``randn_tensor`` does."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _check_clip(clip_sample: Any) -> None:
    """``ValueError`` unless ``clip_sample`` is None or a finite number > 0 (-1 clamped every x0 to -1, True to 1)."""
    if clip_sample is not None and not (is_real(clip_sample) and 0 < clip_sample < math.inf):
        raise ValueError(f"clip_sample must be None or a float > 0, got {clip_sample!r}")


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        given = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of positive ints like (B, H, D), got {shape!r}") from None
    if not all(is_integer(d) for d in given):  # (2.5, 3) was cut to (2, 3) and (True, 3) read as (1, 3)
        raise ValueError(f"shape must be a sequence of positive ints like (B, H, D), got {shape!r}")
    out = tuple(int(d) for d in given)
    if len(out) < 1 or any(d < 1 for d in out):
        raise ValueError(f"shape must be a sequence of positive ints like (B, H, D), got {shape!r}")
    return out


def _resolve_device(device: Any, x_init: Tensor | None, denoiser: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    if x_init is not None:
        return x_init.device
    if isinstance(denoiser, nn.Module):
        for p in denoiser.parameters():
            return p.device
    return torch.device("cpu")


class Sampler(ABC):
    """Base class of all samplers; build them with ``make_sampler(name, schedule, **options)``."""

    def __init__(self, schedule: ForwardProcess) -> None:
        if not isinstance(schedule, ForwardProcess):
            raise ValueError(f"schedule must be a forward process (NoiseSchedule or FlowPath), "  # noqa: TRY004 (house rule: ValueError)
                             f"got {type(schedule).__name__}")
        self.schedule = schedule
        self._table_cache: dict[tuple[torch.device, torch.dtype], Tables] = {}

    # ------------------------------------------------------------------------------------------ to implement
    @property
    @abstractmethod
    def timesteps(self) -> list[int]:
        """The descending training timesteps this sampler visits."""

    @abstractmethod
    def _host_tables(self) -> dict[str, list[float]]:
        """Per-step coefficients (one float per entry of ``timesteps``), computed in float64 on the host."""

    @abstractmethod
    def _update(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict, noise: NoiseFn) -> Tensor:
        """x at the next timestep from x at step index ``i`` and the (clipped) predictions x0 and eps."""

    def _final_timestep(self) -> int:
        """The timestep after the last step (-1 = the clean sample)."""
        return -1

    def _update_with_model(self, i: int, x: Tensor, x0: Tensor, eps: Tensor, tab: Tables, state: dict,
                           noise: NoiseFn, predict: PredictFn) -> Tensor:
        """The step from index ``i``; samplers that evaluate the model again within a step (Heun) override this
        and call ``predict``; the others only need ``_update``."""
        return self._update(i, x, x0, eps, tab, state, noise)

    # ------------------------------------------------------------------------------------------ shared
    def _prev_timesteps(self) -> list[int]:
        """The timestep each step lands on: the next one of the list, then ``_final_timestep()``."""
        return self.timesteps[1:] + [self._final_timestep()]

    def _prev_alpha_bars(self) -> list[float]:
        return [self.schedule.alpha_bar(p) for p in self._prev_timesteps()]

    def _common_host_tables(self) -> dict[str, list[float]]:
        """a = sqrt(alpha_bar_t), s = sqrt(sigma2_t), and the posterior variance of each step for gradient guidance
        (a final zero variance is replaced by the step before's, like DDPM's clipped log variance; a chain of one
        step, which has no step before, takes the variance of one DDPM step from where it starts, so that
        gradient guidance still moves a one-step plan)."""
        proc = self.schedule
        ts = self.timesteps
        var = [proc.posterior_variance(t, p) for t, p in zip(ts, self._prev_timesteps())]
        if len(var) > 1 and var[-1] <= 0.0:
            var[-1] = var[-2]
        elif len(var) == 1 and var[0] <= 0.0 and ts[0] >= 1:
            var[0] = proc.posterior_variance(ts[0], ts[0] - 1)
        return {"a": [math.sqrt(proc.alpha_bar(t)) for t in ts], "s": [math.sqrt(proc.sigma2(t)) for t in ts],
                "guide_var": var}

    def tables(self, device: torch.device | str, dtype: torch.dtype) -> Tables:
        """All per-step coefficient tables as 1-D tensors on ``device`` in ``dtype`` (computed in float64 once and
        cached per device and dtype, so a sampling loop never converts or syncs)."""
        key = (torch.device(device), dtype)
        if key not in self._table_cache:
            host = {**self._common_host_tables(), **self._host_tables()}
            self._table_cache[key] = {
                k: torch.tensor(v, dtype=torch.float64).to(dtype=dtype).to(device) for k, v in host.items()
            }
            self._table_cache[key]["t"] = torch.tensor(self.timesteps, dtype=torch.long, device=device)
        return self._table_cache[key]

    def _index(self, t: int) -> int:
        try:
            return self.timesteps.index(int(t))
        except ValueError:
            raise ValueError(f"timestep {t} is not one of this sampler's timesteps {self.timesteps}") from None

    def step(
        self,
        model_output: Tensor,
        t: int,
        x: Tensor,
        *,
        prediction: str = "epsilon",
        noise: Tensor | None = None,
        clip_sample: float | None = None,
        state: dict | None = None,
    ) -> Tensor:
        """One step from timestep ``t`` (one of ``self.timesteps``) to the next, for custom loops and tests.

        ``noise`` is used by stochastic steps (drawn with ``torch.randn_like`` if None). Multistep samplers keep
        their history in ``state``: pass the same dict to every step of one trajectory. Samplers that evaluate the
        model again within a step (Heun) cannot step from one output: ``ValueError``, use :meth:`sample`.
        """
        if type(self)._update_with_model is not Sampler._update_with_model:
            raise ValueError(f"{type(self).__name__} evaluates the model again within a step, so step() cannot take "
                             "one model output; use sample() (or the first-order 'euler' for a custom loop)")
        pred = get_prediction(prediction)
        self.schedule.check_prediction(prediction)
        i = self._index(t)
        tab = self.tables(x.device, x.dtype)
        x0, eps = pred.to_x0_eps(model_output, x, tab["a"][i], tab["s"][i])
        _check_clip(clip_sample)
        if clip_sample is not None:
            x0 = x0.clamp(-clip_sample, clip_sample)
        draw = (lambda: noise) if noise is not None else (lambda: torch.randn_like(x))
        return self._update(i, x, x0, eps, tab, state if state is not None else {}, draw)

    @torch.no_grad()
    def sample(
        self,
        denoiser: Callable[..., Tensor],
        shape: Sequence[int],
        *,
        prediction: str = "epsilon",
        generator: torch.Generator | None = None,
        cond: Any = None,
        guidance: ClassifierFreeGuidance | None = None,
        grad_guidance: GradientGuidance | None = None,
        constraints: Constraint | Sequence[Constraint] | None = None,
        temperature: float = 1.0,
        x_init: Tensor | None = None,
        t_start: int | None = None,
        initial_noise: Tensor | None = None,
        clip_sample: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        return_info: bool = False,
    ) -> Tensor | tuple[Tensor, dict[str, Any]]:
        """Draw samples of ``shape`` (batch first) from ``denoiser(x_t, t, cond) -> output``, t an integer tensor [B].

        prediction: what the denoiser outputs ("epsilon", "sample", "v_prediction").
        guidance: ``ClassifierFreeGuidance(w)``; the denoiser is then called once per step on the doubled batch as
            ``denoiser(x2, t2, cond2, drop_mask=[False]*B + [True]*B)``.
        grad_guidance: ``GradientGuidance(fn, ...)`` moving x_t towards higher fn(x_t, t) before each step.
        constraints: e.g. ``Inpaint(mask, values)``; applied to the initial x, after every guidance move and after
            every step, so the output satisfies them exactly.
        temperature: factor on every noise the sampler draws: the initial noise, a warm start's re-noising and
            the noise injected by stochastic steps (DDPM, DDIM with eta > 0). Below 1 the samples concentrate
            near the modes (the Decision Diffuser's low-temperature sampling, 0.5); 1.0 is plain sampling, 0
            is the deterministic path from x_T = 0.
        x_init, t_start: warm start. x_init (clean, ``shape``) is re-noised with q_sample to the largest sampler
            timestep <= t_start, and only the timesteps from there on are run (x_init is returned, constrained, if
            there are none).
        initial_noise: the standard-normal draw that starts the chain (``shape``; scaled by ``temperature`` as
            every draw), instead of drawing it from ``generator``: a deterministic sampler is then a function of
            it (what a distilled student learns to map in one step). Not with a warm start.
        clip_sample: clip each predicted x0 to [-clip_sample, clip_sample] (None = off).
        dtype, device: of the sample and of the precomputed coefficients (float64 keeps all math in float64).
        return_info: also return {"timesteps": the timesteps run, "guide_values": fn values of the last step's
            gradient guidance, or None}.
        """
        pred = get_prediction(prediction)
        self.schedule.check_prediction(prediction)
        shape = _check_shape(shape)
        if not (is_real(temperature) and 0 <= temperature < math.inf):
            raise ValueError(f"temperature must be a finite float >= 0 (1.0 = plain sampling), got {temperature!r}")
        _check_clip(clip_sample)
        if grad_guidance is not None and not isinstance(grad_guidance, GradientGuidance):
            raise ValueError(f"grad_guidance must be a GradientGuidance, got {type(grad_guidance).__name__}")
        device = _resolve_device(device, x_init, denoiser)
        all_ts = self.timesteps
        start = 0
        if x_init is not None:
            if tuple(x_init.shape) != shape:
                raise ValueError(f"x_init must have the sample shape {shape}, got {tuple(x_init.shape)}")
            if not is_integer(t_start) or not 0 <= t_start < self.schedule.num_steps:
                raise ValueError(
                    f"warm start needs t_start in [0, {self.schedule.num_steps - 1}] with x_init, got {t_start!r}"
                )
            start = next((k for k, t in enumerate(all_ts) if t <= int(t_start)), len(all_ts))
        elif t_start is not None:
            raise ValueError("t_start is only meaningful with x_init (warm start); got t_start without x_init")
        if initial_noise is not None:
            if x_init is not None:
                raise ValueError("initial_noise starts the chain at pure noise; it cannot be combined with a warm "
                                 "start (x_init)")
            if tuple(initial_noise.shape) != shape:
                raise ValueError(f"initial_noise must have the sample shape {shape}, got {tuple(initial_noise.shape)}")

        tab = self.tables(device, dtype)
        constrain = bind_constraints(constraints, shape, device, dtype)
        model = make_model_fn(denoiser, cond, guidance, shape[0], device)
        temp = float(temperature)

        def noise() -> Tensor:
            z = randn(shape, generator, device, dtype)
            return z if temp == 1.0 else z * temp

        if x_init is None:
            x = noise() if initial_noise is None else initial_noise.to(device=device, dtype=dtype) * temp
        elif start < len(all_ts):
            x0_init = x_init.to(device=device, dtype=dtype)
            x = tab["a"][start] * x0_init + tab["s"][start] * noise()
        else:
            x = x_init.to(device=device, dtype=dtype)
        x = constrain(x)

        t_rows = tab["t"][:, None].expand(len(all_ts), shape[0]).contiguous()
        state: dict = {}
        values: Tensor | None = None
        def predict(x: Tensor, i: int) -> tuple[Tensor, Tensor]:
            out = model(x, t_rows[i])
            if out.shape != x.shape:
                raise ValueError(f"denoiser output must have the sample shape {tuple(x.shape)}, got {tuple(out.shape)}")
            if out.dtype != x.dtype:  # e.g. a bf16 autocast model: keep the sampler's math in its own dtype
                out = out.to(x.dtype)
            x0, eps = pred.to_x0_eps(out, x, tab["a"][i], tab["s"][i])
            if clip_sample is not None:
                x0 = x0.clamp(-clip_sample, clip_sample)
            return x0, eps

        def predict_constrained(x: Tensor, i: int) -> tuple[Tensor, Tensor]:
            return predict(constrain(x), i)

        for i in range(start, len(all_ts)):
            if grad_guidance is not None:
                x, values = grad_guidance.apply(x, t_rows[i], all_ts[i], tab["guide_var"][i], constrain)
            x0, eps = predict(x, i)
            x = constrain(self._update_with_model(i, x, x0, eps, tab, state, noise, predict_constrained))
        if return_info:
            return x, {"timesteps": all_ts[start:], "guide_values": values}
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={len(self.timesteps)}, schedule={self.schedule!r})"


class SpacedSampler(Sampler):
    """A sampler on a spaced subsequence of the schedule's timesteps (``steps`` of them, ``timestep_spacing``
    "leading" | "trailing" | "linspace", ``steps_offset``; see :func:`spaced_timesteps`)."""

    def __init__(self, schedule: ForwardProcess, steps: int, timestep_spacing: str, steps_offset: int = 0,
                 final_to_zero: bool = False) -> None:
        super().__init__(schedule)
        self._timesteps = spaced_timesteps(schedule.num_steps, steps, timestep_spacing, steps_offset,
                                           final_to_zero=final_to_zero)
        self.steps = len(self._timesteps)
        self.timestep_spacing = timestep_spacing

    @property
    def timesteps(self) -> list[int]:
        return list(self._timesteps)
