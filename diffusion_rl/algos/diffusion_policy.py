"""Diffusion Policy (Chi et al. 2023): diffuse a chunk of future actions conditioned on the last observations.

The model denoises action chunks ``[B, Tp, A]`` (``horizon`` = Tp) conditioned on the flattened last ``obs_steps``
(To) normalized observations, through Chi's FiLM ``ConditionalUnet1D`` (``backbone="conditional_unet1d"``) or a
1D transformer with a global condition (``"transformer1d"``). Training windows are To observations + Tp actions
starting To - 1 steps before the current step, padded before an episode's start (first observation repeated)
and after its end (last action repeated), with padded action steps masked out of the loss. Defaults are the
paper's for low-dimensional tasks: squared-cosine schedule with 100 steps, epsilon prediction, DDIM 10 steps at
inference, samples clipped to the min-max normalized range [-1, 1].

``plan`` returns the whole chunk as ``action_chunk`` starting at the current step (index To - 1 of the chunk); a
``Policy`` executes Ta = 8 of them and replans (``execution="action_queue"``, its default for this algorithm;
``execution_options={"action_steps": Ta}`` or ``policy.set_execution(action_steps=Ta)`` chooses another Ta);
unlike MSE behaviour cloning, sampling keeps multimodal demonstrations multimodal.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from diffusion_rl.algos._common import applicable_options, check_sizes, forward_process
from diffusion_rl.algos.base import Algorithm, DenoisingProblem, PlanOutput, register_algorithm
from diffusion_rl.diffusion import diffusion_loss
from diffusion_rl.nets import build_network

__all__ = ["DiffusionPolicy"]

#: Ta of Chi et al.: actions executed from each chunk before replanning (a Policy built without an execution)
DEFAULT_ACTION_STEPS = 8
BACKBONES = ("conditional_unet1d", "transformer1d")
BACKBONE_SETTINGS = {
    "conditional_unet1d": ("down_dims", "kernel_size", "n_groups", "step_embed_dim"),
    "transformer1d": ("d_model", "depth"),
}
"""The size settings each backbone reads; those of the backbone not chosen must stay at their defaults."""


def _unused_defaults(backbone: str) -> dict[str, tuple[str, Any]]:
    """Each size setting of the backbones other than ``backbone``: name -> (the backbone reading it, its default)."""
    defaults = inspect.signature(DiffusionPolicy.__init__).parameters
    return {name: (other, defaults[name].default) for other, names in BACKBONE_SETTINGS.items() if other != backbone
            for name in names}


def _check_unused_sizes(backbone: str, given: dict[str, Any]) -> None:
    """A size set for the backbone not in use would be ignored (a small preset silently training the paper's
    network): refuse it, naming the backbone that reads it."""
    for name, (other, default) in _unused_defaults(backbone).items():
        value = given[name]
        if not (list(value) == list(default) if name == "down_dims" else value == default):
            raise ValueError(f"{name}={value!r} sizes the {other} backbone, but this model uses backbone="
                             f"{backbone!r}; expected {name} at its default {default!r} (the {backbone} sizes "
                             f"are {', '.join(BACKBONE_SETTINGS[backbone])})")


@register_algorithm
class DiffusionPolicy(Algorithm):
    name = "diffusion_policy"
    sample_keys = ("actions",)
    repeats_first_observation = True
    batch_keys = ("observations", "actions", "mask")
    default_data = {"normalizer": "minmax"}  # observations and actions to [-1, 1]
    default_sampling = {
        "sampler": "ddim",
        "steps": 10,
        "eta": 0.0,
        "temperature": 1.0,
        "clip_sample": "auto",  # Policy: the action normalizer's range ([-1, 1] for min-max, none for Gaussian)
    }

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        horizon: int = 16,
        obs_steps: int = 2,
        num_steps: int = 100,
        schedule: str = "squaredcos_cap_v2",
        prediction: str | None = None,
        process: str = "diffusion",
        backbone: str = "conditional_unet1d",
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        step_embed_dim: int = 256,
        d_model: int = 256,
        depth: int = 8,
    ) -> None:
        check_sizes(obs_dim=obs_dim, act_dim=act_dim, horizon=horizon, obs_steps=obs_steps, num_steps=num_steps,
                    down_dims=down_dims)
        if obs_steps > horizon:
            raise ValueError(f"obs_steps (To={obs_steps}) must be <= horizon (Tp={horizon})")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; expected one of: {', '.join(BACKBONES)}")
        _check_unused_sizes(backbone, {"down_dims": down_dims, "kernel_size": kernel_size, "n_groups": n_groups,
                                       "step_embed_dim": step_embed_dim, "d_model": d_model, "depth": depth})
        proc, prediction = forward_process(process, schedule, num_steps, prediction, "epsilon")
        super().__init__(
            obs_dim=obs_dim, act_dim=act_dim, horizon=horizon, obs_steps=obs_steps, num_steps=num_steps,
            schedule=schedule, prediction=prediction, process=process, backbone=backbone,
            down_dims=list(down_dims), kernel_size=kernel_size, n_groups=n_groups, step_embed_dim=step_embed_dim, d_model=d_model, depth=depth,
        )
        self.obs_dim, self.act_dim, self.horizon, self.obs_steps = obs_dim, act_dim, horizon, obs_steps
        self.history = obs_steps  # Policy keeps this many recent observations
        self.pad_before = obs_steps - 1  # training windows start up to To - 1 steps before their episode
        self.prediction = prediction
        self.schedule = proc
        cond_dim = obs_steps * obs_dim
        if backbone == "conditional_unet1d":
            self.net = build_network(backbone, action_dim=act_dim, global_cond_dim=cond_dim,
                                     down_dims=tuple(down_dims), kernel_size=kernel_size, n_groups=n_groups,
                                     diffusion_step_embed_dim=step_embed_dim)
        else:
            self.net = build_network(backbone, transition_dim=act_dim, cond_dim=cond_dim, d_model=d_model,
                                     depth=depth, max_horizon=max(horizon, 16))
        # the observations always condition the chunk (no guidance dropout), so the backbone's learned null
        # condition never gets a gradient: frozen, DDP does not wait for it (a 2-GPU run failed at step 2)
        null = getattr(self.net, "null_cond", None)
        if isinstance(null, nn.Parameter):
            null.requires_grad_(False)

    @classmethod
    def upgrade_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Artifacts written before the unused backbone's sizes were refused may record them (a cpu preset's U-Net
        sizes beside backbone=transformer1d): they never reached the network, so they load as the defaults."""
        backbone = config.get("backbone", inspect.signature(cls.__init__).parameters["backbone"].default)
        config.update({name: default for name, (_, default) in _unused_defaults(backbone).items() if name in config})
        return config

    def _cond(self, observations: torch.Tensor) -> torch.Tensor:
        """The global condition: the last To observations ``[B, To, S]`` flattened to ``[B, To * S]``."""
        return observations[:, : self.obs_steps].reshape(observations.shape[0], -1)

    def denoising_problem(self, batch: dict[str, torch.Tensor]) -> DenoisingProblem:
        actions, mask = batch["actions"], batch["mask"]
        weights = mask[..., None].to(actions.dtype)  # padding after an episode's end is repeated, not learned
        return DenoisingProblem(actions, lambda net: net, self._cond(batch["observations"]), None,
                                weights.expand_as(actions))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        problem = self.denoising_problem(batch)
        diffusion = diffusion_loss(self.net, problem.x0, self.schedule, prediction=self.prediction,
                                   cond=problem.cond, weights=problem.weights)
        return {"loss": diffusion, "diffusion_loss": diffusion}

    @property
    def action_chunk_length(self) -> int:
        return self.horizon - self.obs_steps + 1

    def default_execution(self) -> tuple[str, dict[str, Any]]:
        """Chi et al.'s: execute Ta = 8 actions of each chunk (all of a shorter chunk), then replan."""
        return "action_queue", {"action_steps": min(DEFAULT_ACTION_STEPS, self.action_chunk_length)}

    @torch.no_grad()
    def plan(
        self,
        obs: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        denoiser: Any = None,
        sampler: str = "ddim",
        steps: int | None = 10,
        eta: float | None = 0.0,
        temperature: float = 1.0,
        clip_sample: float | None = 1.0,
        history: torch.Tensor | None = None,
    ) -> PlanOutput:
        """Sample an action chunk from normalized ``obs [B, S]``, or a history ``[B, k, S]`` of the last k states
        (as ``obs`` or ``history``)
        (fewer than To: the oldest is repeated to fill it, as at an episode's start)."""
        self.check_dtypes(obs=obs, history=history)
        if history is not None:
            known = history
        else:
            known = obs if obs.ndim == 3 else obs[:, None]
        if known.ndim != 3 or known.shape[-1] != self.obs_dim:
            raise ValueError(f"history must have shape [B, k, {self.obs_dim}], got {tuple(known.shape)}")
        known = known[:, -self.obs_steps :]
        if known.shape[1] < self.obs_steps:
            fill = known[:, :1].expand(-1, self.obs_steps - known.shape[1], -1)
            known = torch.cat([fill, known], dim=1)
        b = known.shape[0]
        s = self.sampler(sampler, **applicable_options(sampler, steps=steps, eta=eta))
        net = self.net if denoiser is None else denoiser  # Policy(compile=True) passes a traced one
        chunk = s.sample(
            net, (b, self.horizon, self.act_dim), prediction=self.prediction, generator=generator,
            cond=self._cond(known), temperature=temperature, clip_sample=clip_sample, device=known.device,
            dtype=known.dtype,
        )
        now = self.obs_steps - 1  # the chunk starts with the oldest observation's step
        return PlanOutput(actions=chunk[:, now], action_chunk=chunk[:, now:], trajectory=chunk)
