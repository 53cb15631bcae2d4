"""Small pieces both planners share: sampler options, inpainting masks, masked means."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from diffusion_rl._numbers import is_integer, is_real
from diffusion_rl.diffusion import SAMPLERS, ForwardProcess, make_process, sampler_options
from diffusion_rl.nets import build_network


def applicable_options(name: str, **candidates: Any) -> dict[str, Any]:
    """Keep only the options that sampler ``name`` accepts (``steps`` means nothing to DDPM, ``eta`` only to DDIM).

    Unknown sampler names raise the core's own ValueError (listing the valid names) when the sampler is built.
    """
    allowed = sampler_options(name) if name in SAMPLERS else list(candidates)
    return {k: v for k, v in candidates.items() if k in allowed and v is not None}


#: the sampler options the algorithms pass on (to the samplers that take them, see ``applicable_options``)
SAMPLER_OPTION_SETTINGS = ("steps", "eta")


def idle_sampler_option(name: str, setting: str, num_steps: int | None = None) -> str | None:
    """Why sampler ``name`` ignores ``setting`` (one of :data:`SAMPLER_OPTION_SETTINGS`), or None when it reads it:
    ``steps`` set for DDPM would otherwise be dropped without a word while every step of the schedule runs."""
    if setting not in SAMPLER_OPTION_SETTINGS or name not in SAMPLERS or setting in sampler_options(name):
        return None
    readers = [s for s in SAMPLERS if setting in sampler_options(s)]
    runs = f"; it runs all {num_steps} steps of the model's schedule" if setting == "steps" and num_steps else ""
    return f"sampler {name!r} does not read {setting}{runs} (samplers that do: {', '.join(readers)})"


# How an algorithm's width settings (dim, dim_mults) map onto each denoiser backbone's constructor.
_BACKBONE_ARGS = {
    "temporal_unet": lambda dim, mults: {"dim": dim, "dim_mults": tuple(mults)},
    "transformer1d": lambda dim, mults: {"d_model": dim * 4, "depth": 2 * len(mults)},
}


def make_backbone(name: str, transition_dim: int, dim: int, dim_mults: Any, cond_dim: int | None = None,
                  **extra: Any) -> torch.nn.Module:
    """A trajectory denoiser ``net(x, t, cond, drop_mask)`` of the named backbone family."""
    if name not in _BACKBONE_ARGS:
        raise ValueError(f"unknown backbone {name!r}; expected one of: {', '.join(_BACKBONE_ARGS)}")
    return build_network(name, transition_dim=transition_dim, cond_dim=cond_dim, **_BACKBONE_ARGS[name](dim, dim_mults),
                         **extra)


def check_finite(name: str, value: Any) -> float:
    """``value`` as a float, or a ValueError when it is not a finite real number."""
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: Any, meaning: str = "") -> float:
    """``value`` as a float in [0, 1], or a ValueError naming the range (and ``meaning``, what the value is)."""
    if not is_real(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1]{f' ({meaning})' if meaning else ''}, got {value!r}")
    return float(value)


def check_weight(name: str, value: Any) -> float:
    """A loss weight: a finite float >= 0 (a negative one would ascend its loss, a NaN one make every step NaN)."""
    value = check_finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (a loss weight), got {value!r}")
    return value


#: most plans sampled per observation: beyond this a typo (num_plans=1e9) would try to allocate terabytes
MAX_NUM_PLANS = 4096


_FLOAT32_MAX = 3.4028234663852886e38


def _is_real(v: Any) -> bool:
    """A finite number the model's float32 math can hold."""
    return is_real(v) and math.isfinite(v) and abs(v) <= _FLOAT32_MAX


def auto_clip(algo_cls: type, normalizers: dict[str, Any]) -> float | None:
    """What ``clip_sample="auto"`` means for an algorithm: the widest range of the normalizers its sample lives in
    (``sample_keys``), or None (no clipping) when one of them is unbounded, e.g. Gaussian: clipping there would cut
    off real states or actions."""
    ranges = [normalizers[key].clip_range for key in algo_cls.sample_keys if key in normalizers]
    return None if not ranges or any(r is None for r in ranges) else max(ranges)


def check_kinds(cls: type, settings: dict[str, Any]) -> None:
    """``ValueError`` naming the setting when a constructor argument has the wrong kind of value for its default
    (``horizon: "32"`` from a hand-edited file, a float for an integer), so a run refuses it before loading data;
    ranges stay the constructor's to check."""
    params = inspect.signature(cls.__init__).parameters
    kinds: list[tuple[type, Callable[[Any], bool], str]] = [
        (bool, lambda v: isinstance(v, (bool, np.bool_)), "true or false"),
        (int, is_integer, "an integer"),
        (float, is_real, "a number"),
        (str, lambda v: isinstance(v, str), "a string"),
    ]

    def rule(default: Any) -> tuple[Callable[[Any], bool], str] | None:
        for kind, ok, what in kinds:  # bool first: a bool is an int
            if isinstance(default, kind):
                return ok, what
        return None

    for name, value in settings.items():
        default = params[name].default if name in params else inspect.Parameter.empty
        if isinstance(default, (tuple, list)) and default:
            item = rule(default[0])
            if item is not None and (not isinstance(value, (tuple, list)) or not all(item[0](v) for v in value)):
                raise ValueError(f"{name}: expected a list of values each {item[1]} (like {list(default)}), "
                                 f"got {value!r}")
            continue
        found = rule(default)
        if value is None and isinstance(default, str):
            continue  # e.g. schedule: null on a flow path, which has none; the constructor says what it accepts
        if found is not None and not found[0](value):
            raise ValueError(f"{name}: expected {found[1]}, got {value!r} ({type(value).__name__})")


def check_sizes(minimum: int = 1, **sizes: Any) -> None:
    """``ValueError`` naming the argument unless each of ``sizes`` is an integer >= ``minimum`` (a sequence, such
    as ``dim_mults``: of such integers), before a constructor compares or allocates with it."""
    for name, value in sizes.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values or isinstance(value, str) or not all(is_integer(v) and v >= minimum for v in values):
            listed = isinstance(value, (list, tuple)) or name.endswith(("_mults", "_dims"))  # dim_mults, down_dims
            kind = "a list of integers" if listed else "an integer"
            raise ValueError(f"{name}: expected {kind} >= {minimum}, got {value!r}")


def check_settings(settings: dict[str, Any], num_steps: int | None = None) -> dict[str, Any]:
    """Refuse sampler settings outside their ranges (``ValueError`` naming the setting, the range and the value);
    returns them with numpy scalars (``np.int64(4)``) as plain Python numbers, which is what they are kept as.
    ``clip_sample="auto"`` is left to ``Policy``, which resolves it with :func:`auto_clip`."""
    max_steps = num_steps if num_steps is not None else 10**6
    rules: dict[str, tuple[Any, str]] = {
        "sampler": (lambda v: isinstance(v, str) and v in SAMPLERS, f"one of {sorted(SAMPLERS)}"),
        "steps": (lambda v: v is None or (is_integer(v) and 1 <= v <= max_steps),
                  f"None or an integer in [1, {max_steps}] (the schedule's steps)"),
        "eta": (lambda v: v is None or (_is_real(v) and 0 <= v <= 1), "None or a number in [0, 1] (DDIM's eta)"),
        "temperature": (lambda v: _is_real(v) and v >= 0, "a finite float32 number >= 0"),
        "clip_sample": (lambda v: v is None or v == "auto" or (_is_real(v) and v > 0),
                        "None, 'auto' or a float32 number > 0"),
        "guidance_weight": (_is_real, "a finite float32 number"),
        "target_return": (lambda v: _is_real(v) and 0 <= v <= 1, "a number in [0, 1] (a quantile level)"),
        "num_plans": (lambda v: is_integer(v) and 1 <= v <= MAX_NUM_PLANS, f"an integer in [1, {MAX_NUM_PLANS}]"),
        "guide_scale": (lambda v: _is_real(v) and v >= 0, "a finite float32 number >= 0 (0: rank plans by "
                        "value without gradient steps)"),
        "n_guide_steps": (lambda v: is_integer(v) and 0 <= v <= 100, "an integer in [0, 100]"),
        "t_stopgrad": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
        "scale_by_variance": (lambda v: isinstance(v, bool), "true or false"),
        "warm_start_t": (lambda v: v is None or (is_integer(v) and 0 <= v < max_steps),
                         f"None or an integer in [0, {max_steps - 1}] (the timestep a warm start re-noises to)"),
    }
    for name, value in settings.items():
        if name in rules and not rules[name][0](value):
            raise ValueError(f"sampling setting {name}: expected {rules[name][1]}, got {value!r}")
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in settings.items()}


def warm_start_args(warm_start: torch.Tensor | None, warm_start_t: int | None) -> dict[str, Any]:
    """The sampler's warm-start arguments: the previous plan (already shifted to the current step, normalized)
    re-noised to ``warm_start_t``; nothing when either is missing (a plan from noise)."""
    if warm_start is None or warm_start_t is None:
        return {}
    return {"x_init": warm_start, "t_start": int(warm_start_t)}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over entries where ``mask`` is 1 (0 when there are none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def state_inpainting(
    batch: int, horizon: int, dim: int, start: slice, starts: torch.Tensor, goals: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``[1, H, D]`` and values ``[B, H, D]`` that pin the state dims ``start`` of step 0 (and of step H-1)."""
    mask = torch.zeros(1, horizon, dim, dtype=torch.bool, device=starts.device)
    values = torch.zeros(batch, horizon, dim, dtype=starts.dtype, device=starts.device)
    mask[:, 0, start].fill_(True)  # a fill on the device (no host scalar copied: CUDA-graph safe)
    values[:, 0, start] = starts
    if goals is not None:
        mask[:, -1, start].fill_(True)
        values[:, -1, start] = goals
    return mask, values


def forward_process(process: str, schedule: str, num_steps: int, prediction: str | None,
                    diffusion_prediction: str) -> tuple[ForwardProcess, str]:
    """The algorithm's forward process and what its network predicts. ``process="diffusion"`` uses the noise
    ``schedule``; ``process="flow"`` the linear flow-matching path. ``prediction=None`` picks the process's
    natural target: ``diffusion_prediction`` (the algorithm's paper choice) for diffusion, the velocity for
    flow."""
    proc = make_process(process, schedule, num_steps)
    resolved = prediction if prediction is not None else (
        diffusion_prediction if proc.kind == "diffusion" else proc.default_prediction)
    proc.check_prediction(resolved)
    return proc, resolved


def check_process(model: dict[str, Any], sampling: dict[str, Any], num_steps: int) -> None:
    """Before any work: the model's ``process``, ``schedule`` and ``prediction`` exist and fit together, and the
    sampler setting runs on that process (heun needs the flow path); ``ValueError`` names what does not fit."""
    proc = make_process(model.get("process", "diffusion"), model.get("schedule", "cosine"), num_steps)
    if model.get("prediction") is not None:
        proc.check_prediction(model["prediction"])
    name = sampling.get("sampler")
    if name in SAMPLERS:
        # a probe that the sampler runs on this process: every timestep, so no spacing rule can refuse it
        SAMPLERS[name](proc, **({"steps": num_steps} if "steps" in sampler_options(name) else {}))
        if sampling.get("warm_start_t") is not None:
            options = applicable_options(name, steps=sampling.get("steps"), eta=sampling.get("eta"))
            check_warm_start(SAMPLERS[name](proc, **options), sampling)


def check_warm_start(sampler: Any, sampling: dict[str, Any]) -> None:
    """A ``warm_start_t`` below every timestep ``sampler`` runs is refused (``ValueError``): a warm replan would
    run no denoising step and return the previous plan as it was (``warm_start_t=30`` with DPM-Solver++ 3 over
    T = 100, whose lowest step is 33), so the planner would stop reacting to what it sees."""
    warm_t, lowest = sampling.get("warm_start_t"), min(sampler.timesteps)
    if warm_t is not None and int(warm_t) < lowest:
        raise ValueError(
            f"warm_start_t={warm_t} is below every timestep sampler {sampling.get('sampler')!r} runs with "
            f"steps={sampling.get('steps')} over T = {sampler.schedule.num_steps} (the lowest is {lowest}): a warm "
            f"replan would run no denoising step and return the previous plan unchanged; expected warm_start_t >= "
            f"{lowest}, more steps, or null"
        )
