"""The shape-agnostic diffusion core: noise schedules, the training loss, samplers and their hooks.

It knows tensors, not RL: the same code trains and samples a trajectory model [B, H, D] and an image model
[B, C, H, W]. It imports nothing from the rest of ``diffusion_rl``.
"""

from diffusion_rl.diffusion.constraints import Constraint, Inpaint, bind_constraints
from diffusion_rl.diffusion.guidance import ClassifierFreeGuidance, GradientGuidance
from diffusion_rl.diffusion.losses import diffusion_loss, sample_timesteps
from diffusion_rl.diffusion.prediction import PREDICTIONS, Prediction, get_prediction
from diffusion_rl.diffusion.samplers import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    DPMSolverPlusPlusSampler,
    Sampler,
    make_sampler,
    sampler_options,
)
from diffusion_rl.diffusion.schedules import SCHEDULES, NoiseSchedule
from diffusion_rl.diffusion.timesteps import TIMESTEP_SPACINGS, spaced_timesteps

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "TIMESTEP_SPACINGS",
    "ClassifierFreeGuidance",
    "Constraint",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPlusPlusSampler",
    "GradientGuidance",
    "Inpaint",
    "NoiseSchedule",
    "Prediction",
    "Sampler",
    "bind_constraints",
    "diffusion_loss",
    "get_prediction",
    "make_sampler",
    "sample_timesteps",
    "sampler_options",
    "spaced_timesteps",
]
