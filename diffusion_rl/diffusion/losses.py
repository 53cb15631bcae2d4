"""The denoising training loss: draw t and noise, form x_t, regress the chosen target with per-element weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffusion_rl.diffusion.prediction import get_prediction
from diffusion_rl.diffusion.process import ForwardProcess

__all__ = ["diffusion_loss", "sample_timesteps"]


def sample_timesteps(
    batch: int, schedule: ForwardProcess, device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """The process's training timesteps (uniform integers in [0, num_steps)) of shape [batch], from ``generator``."""
    return schedule.sample_timesteps(batch, device, generator)


def _check_given_timesteps(t: Tensor, schedule: ForwardProcess) -> None:
    """``ValueError`` unless ``t`` holds integer timesteps in [0, num_steps) (or, on a flow path, float times in
    [0, 1]): a negative index would wrap to the noisy end and a flow path would extrapolate."""
    if not torch.is_tensor(t) or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"t must be a tensor of integer timesteps, got {t!r:.80}")
    if t.dtype.is_floating_point:
        if schedule.kind != "flow":
            raise ValueError(f"t must hold integer timesteps for a {schedule.kind} process, got dtype {t.dtype}")
        lo, hi = 0.0, 1.0
    else:
        lo, hi = 0, schedule.num_steps - 1
    if t.numel() and not (bool((t >= lo).all()) and bool((t <= hi).all())):
        raise ValueError(f"t must lie in [{lo}, {hi}], got values from {t.min().item()} to {t.max().item()}")


def check_weights(weights: Tensor, shape: tuple[int, ...] | torch.Size) -> None:
    """``ValueError`` unless per-element loss ``weights`` broadcast to the data's ``shape`` (without growing it: a
    [B, 1, 1] weight on [B, D] data would average a larger tensor than the data)."""
    try:
        out_shape = torch.broadcast_shapes(weights.shape, shape)
    except RuntimeError:
        out_shape = None
    if out_shape != tuple(shape):
        raise ValueError(f"weights must broadcast to the data shape {tuple(shape)}, got shape {tuple(weights.shape)}")


def diffusion_loss(
    denoiser: Callable[..., Tensor],
    x0: Tensor,
    schedule: ForwardProcess,
    *,
    prediction: str = "epsilon",
    cond: Any = None,
    weights: Tensor | None = None,
    drop_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Weighted MSE between ``denoiser(x_t, t, cond)`` and the target of ``prediction`` for clean data ``x0``.

    ``schedule`` is any forward process: a ``NoiseSchedule`` (denoising diffusion) or a ``FlowPath`` (flow
    matching: with ``prediction="velocity"`` the target is eps - x0, the conditional flow-matching loss).

    ``weights`` (broadcastable to x0, e.g. Diffuser's x10 weight on the first action, or a padding mask) multiply
    the squared error before the mean over all elements, as Diffuser's WeightedLoss does. ``drop_mask`` [B] bool
    (True = condition dropped; [B, K] to drop the parts of a parted condition one by one) is passed to the
    denoiser for classifier-free guidance training. ``t`` [B] and
    ``noise`` (x0's shape) default to uniform timesteps and standard normal noise from ``generator``.
    """
    pred = get_prediction(prediction)
    schedule.check_prediction(prediction)
    if x0.ndim < 1:
        raise ValueError(f"x0 must have a batch dimension, got shape {tuple(x0.shape)}")
    batch = x0.shape[0]
    if t is None:
        t = sample_timesteps(batch, schedule, x0.device, generator)
    else:  # a caller's timesteps: checked here (once, off the training loop's own draws), not wrapped or extrapolated
        _check_given_timesteps(t, schedule)
    if noise is None:
        gen_device = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
    if weights is not None:
        check_weights(weights, x0.shape)
    if drop_mask is not None and (drop_mask.ndim not in (1, 2) or drop_mask.shape[0] != batch):
        raise ValueError(f"drop_mask must be a bool tensor of shape [{batch}] (or [{batch}, parts] for a parted "
                         f"condition), got {tuple(drop_mask.shape)}")

    x_t = schedule.q_sample(x0, t, noise)
    a, s = schedule.coefficients(t, x0)
    # float flow times tau reach the network on the samplers' scale (integer timestep k is tau = (k + 1) / N), so
    # a model trained on continuous times is sampled at the times it learned
    net_t = t * schedule.num_steps - 1 if t.dtype.is_floating_point else t
    if drop_mask is None:
        out = denoiser(x_t, net_t, cond)
    else:
        out = denoiser(x_t, net_t, cond, drop_mask=drop_mask)
    if out.shape != x0.shape:
        raise ValueError(f"denoiser output must have the data shape {tuple(x0.shape)}, got {tuple(out.shape)}")
    sq_err = (out - pred.target(x0, noise, a, s)) ** 2
    if weights is not None:
        sq_err = sq_err * weights.to(device=sq_err.device, dtype=sq_err.dtype)
    return sq_err.mean()
