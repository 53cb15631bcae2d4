"""One registry of network classes by name, so configs and saved artifacts can name a network and rebuild it.

Every network stores its constructor arguments in ``net.config`` (JSON-serializable), so
``build_network(network_name(net), **net.config)`` rebuilds the same architecture (weights come separately).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from torch import nn

from diffusion_rl.nets.conditional_unet import ConditionalUnet1D
from diffusion_rl.nets.inverse_dynamics import InverseDynamics
from diffusion_rl.nets.temporal_unet import TemporalUnet
from diffusion_rl.nets.transformer import TransformerDenoiser1D
from diffusion_rl.nets.value import ValueNet

NETWORKS: dict[str, type[nn.Module]] = {
    "temporal_unet": TemporalUnet,
    "conditional_unet1d": ConditionalUnet1D,
    "transformer1d": TransformerDenoiser1D,
    "value_net": ValueNet,
    "inverse_dynamics": InverseDynamics,
}

# the 2D image U-Net is written separately: register it once its module exists (its import errors still raise)
if importlib.util.find_spec("diffusion_rl.nets.image_unet") is not None:
    from diffusion_rl.nets.image_unet import ImageUnet2D

    NETWORKS["image_unet2d"] = ImageUnet2D


def build_network(name: str, **config: Any) -> nn.Module:
    """Build the network registered as ``name`` from its constructor arguments."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    return NETWORKS[name](**config)


def network_name(net: nn.Module) -> str:
    """The registry name of ``net``'s class (the inverse of :func:`build_network`)."""
    for name, cls in NETWORKS.items():
        if type(net) is cls:
            return name
    raise ValueError(
        f"{type(net).__name__} is not a registered network; expected one of "
        f"{sorted(c.__name__ for c in NETWORKS.values())}"
    )
