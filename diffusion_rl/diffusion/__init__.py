"""The shape-agnostic diffusion core: forward processes (noise schedules and the flow-matching path), the
training loss, samplers and their hooks.

It knows tensors, not RL: the same code trains and samples a trajectory model [B, H, D] and an image model
[B, C, H, W]. It imports nothing from the rest of ``diffusion_rl``.
"""

from diffusion_rl.diffusion.consistency import consistency_grid, consistency_loss, direct_distillation_loss
from diffusion_rl.diffusion.constraints import Constraint, Inpaint, bind_constraints
from diffusion_rl.diffusion.guidance import ClassifierFreeGuidance, ComposedGuidance, GradientGuidance
from diffusion_rl.diffusion.losses import diffusion_loss, sample_timesteps
from diffusion_rl.diffusion.prediction import PREDICTIONS, Prediction, get_prediction
from diffusion_rl.diffusion.process import (
    PROCESSES,
    FlowPath,
    ForwardProcess,
    make_process,
    process_from_config,
)
from diffusion_rl.diffusion.samplers import (
    SAMPLERS,
    ConsistencySampler,
    DDIMSampler,
    DDPMSampler,
    DPMSolverPlusPlusSampler,
    EulerSampler,
    HeunSampler,
    Sampler,
    make_sampler,
    sampler_options,
)
from diffusion_rl.diffusion.schedules import SCHEDULES, NoiseSchedule
from diffusion_rl.diffusion.timesteps import TIMESTEP_SPACINGS, spaced_timesteps

__all__ = [
    "PREDICTIONS",
    "PROCESSES",
    "SAMPLERS",
    "SCHEDULES",
    "TIMESTEP_SPACINGS",
    "ClassifierFreeGuidance",
    "ComposedGuidance",
    "ConsistencySampler",
    "Constraint",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPlusPlusSampler",
    "EulerSampler",
    "FlowPath",
    "ForwardProcess",
    "GradientGuidance",
    "HeunSampler",
    "Inpaint",
    "NoiseSchedule",
    "Prediction",
    "Sampler",
    "bind_constraints",
    "consistency_grid",
    "consistency_loss",
    "diffusion_loss",
    "direct_distillation_loss",
    "get_prediction",
    "make_process",
    "make_sampler",
    "process_from_config",
    "sample_timesteps",
    "sampler_options",
    "spaced_timesteps",
]
