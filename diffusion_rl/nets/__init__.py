"""Torch modules shared by the algorithms: denoisers, a value net and an inverse dynamics model.

Every denoiser is called as ``net(x, t, cond=None, drop_mask=None)`` with ``x [B, H, D]`` channels-last and
returns a tensor shaped like ``x``; ``drop_mask [B]`` (bool, True = condition dropped) selects the null
condition for classifier-free guidance.
"""

import importlib.util

from diffusion_rl.nets.conditional_unet import ConditionalUnet1D
from diffusion_rl.nets.inverse_dynamics import InverseDynamics
from diffusion_rl.nets.registry import NETWORKS, build_network, network_name
from diffusion_rl.nets.temporal_unet import TemporalUnet
from diffusion_rl.nets.transformer import TransformerDenoiser1D
from diffusion_rl.nets.value import ValueNet

__all__ = [
    "NETWORKS",
    "ConditionalUnet1D",
    "InverseDynamics",
    "TemporalUnet",
    "TransformerDenoiser1D",
    "ValueNet",
    "build_network",
    "network_name",
]

if importlib.util.find_spec("diffusion_rl.nets.image_unet") is not None:
    from diffusion_rl.nets.image_unet import ImageUnet2D  # noqa: F401

    __all__.append("ImageUnet2D")
