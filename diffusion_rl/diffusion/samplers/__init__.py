"""Samplers and the one registry that builds them by name."""

from __future__ import annotations

import inspect
from typing import Any

from diffusion_rl.diffusion.process import ForwardProcess
from diffusion_rl.diffusion.samplers.base import Sampler
from diffusion_rl.diffusion.samplers.consistency import ConsistencySampler
from diffusion_rl.diffusion.samplers.ddim import DDIMSampler
from diffusion_rl.diffusion.samplers.ddpm import DDPMSampler
from diffusion_rl.diffusion.samplers.dpmsolver import DPMSolverPlusPlusSampler
from diffusion_rl.diffusion.samplers.ode import EulerSampler, HeunSampler

__all__ = [
    "SAMPLERS",
    "ConsistencySampler",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPlusPlusSampler",
    "EulerSampler",
    "HeunSampler",
    "Sampler",
    "make_sampler",
    "sampler_options",
]

SAMPLERS: dict[str, type[Sampler]] = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "dpmsolver++": DPMSolverPlusPlusSampler,
    "euler": EulerSampler,
    "heun": HeunSampler,
    "consistency": ConsistencySampler,
}


def _defaults(name: str) -> dict[str, Any]:
    """The keyword options of sampler ``name`` and their defaults (from its constructor's signature)."""
    params = inspect.signature(SAMPLERS[name].__init__).parameters
    return {p: v.default for p, v in params.items() if p not in ("self", "schedule")}


def sampler_options(name: str) -> list[str]:
    """The keyword options that ``make_sampler(name, schedule, **options)`` accepts."""
    return list(_defaults(name))


def make_sampler(name: str, schedule: ForwardProcess, **options: Any) -> Sampler:
    """Build the sampler registered as ``name`` ("ddpm", "ddim", "dpmsolver++", "euler", "heun") for the forward
    process ``schedule`` (a ``NoiseSchedule`` or a ``FlowPath``; every sampler but heun runs on both).

    Options: ddim -- steps, eta, timestep_spacing, steps_offset, set_alpha_to_one; dpmsolver++ -- steps, order,
    timestep_spacing, steps_offset; euler, heun, consistency -- steps, timestep_spacing, steps_offset; ddpm --
    none (it runs all of the schedule's steps). ``steps`` left out (or None) is the sampler's default (ddim 50,
    dpmsolver++ 20, ...), capped at the schedule's steps. ``consistency`` samples a consistency-distilled model.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    defaults = _defaults(name)
    allowed = list(defaults)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for sampler {name!r}; expected some of {allowed}")
    if not isinstance(schedule, ForwardProcess):
        raise ValueError(f"schedule must be a forward process (a NoiseSchedule or FlowPath), got "
                         f"{type(schedule).__name__}")
    if "steps" in allowed and options.get("steps") is None:  # the default, at most the schedule's own steps
        options = {**options, "steps": min(int(defaults["steps"]), schedule.num_steps)}
    return SAMPLERS[name](schedule, **options)
