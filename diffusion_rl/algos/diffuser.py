"""Diffuser (Janner et al. 2022): state-action trajectories, inpainting, value-guided planning.

The model diffuses ``[B, H, A + S]`` trajectories (actions first) with a temporal U-Net, predicting x0 by default
with the first action's loss weighted by ``action_weight``. The current state (and for goal-reaching tasks the goal
state at the plan's end) is imposed by inpainting. A :class:`~diffusion_rl.nets.ValueNet` trained on noisy
trajectories against normalized discounted returns steers sampling by gradient ascent; ``num_plans`` plans are
sampled per observation and the first action of the best one is executed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from diffusion_rl.algos._common import (
    applicable_options,
    check_sizes,
    check_weight,
    forward_process,
    make_backbone,
    state_inpainting,
    warm_start_args,
)
from diffusion_rl.algos.base import Algorithm, DenoisingProblem, PlanOutput, register_algorithm
from diffusion_rl.diffusion import GradientGuidance, Inpaint, diffusion_loss
from diffusion_rl.nets import ValueNet

__all__ = ["Diffuser"]


@register_algorithm
class Diffuser(Algorithm):
    """State-action trajectory diffusion with inpainting and value guidance."""

    name = "diffuser"
    plans_states = True
    sample_keys = ("observations", "actions")
    batch_keys = ("observations", "actions", "mask", "values")
    default_data = {"normalizer": "gaussian", "value_discount": 0.997, "terminal_penalty": -100.0}
    default_sampling = {
        "sampler": "ddpm",
        "steps": None,
        "eta": None,
        "num_plans": 64,
        "guide_scale": 0.1,
        "n_guide_steps": 2,
        "t_stopgrad": 2,
        "scale_by_variance": True,
        "temperature": 1.0,
        "clip_sample": "auto",  # Policy: the state and action normalizers' range (none for Gaussian)
        "warm_start_t": None,  # replan from the previous plan re-noised to this timestep (None: from noise)
    }

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        horizon: int = 32,
        num_steps: int = 20,
        schedule: str = "cosine",
        prediction: str | None = None,
        process: str = "diffusion",
        backbone: str = "temporal_unet",
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        action_weight: float = 10.0,
        value_guided: bool = True,
        value_dim: int = 32,
        value_dim_mults: Sequence[int] = (1, 2, 4, 8),
        value_weight: float = 1.0,
        goal_conditioned: bool = False,
    ) -> None:
        check_sizes(obs_dim=obs_dim, act_dim=act_dim, horizon=horizon, num_steps=num_steps, dim=dim,
                    dim_mults=dim_mults, value_dim=value_dim, value_dim_mults=value_dim_mults)
        action_weight, value_weight = check_weight("action_weight", action_weight), check_weight(
            "value_weight", value_weight)
        proc, prediction = forward_process(process, schedule, num_steps, prediction, "sample")
        super().__init__(
            obs_dim=obs_dim, act_dim=act_dim, horizon=horizon, num_steps=num_steps, schedule=schedule,
            prediction=prediction, process=process, backbone=backbone, dim=dim, dim_mults=list(dim_mults),
            action_weight=action_weight, value_guided=value_guided, value_dim=value_dim,
            value_dim_mults=list(value_dim_mults), value_weight=value_weight, goal_conditioned=goal_conditioned,
        )
        self.obs_dim, self.act_dim, self.horizon = obs_dim, act_dim, horizon
        self.transition_dim = obs_dim + act_dim
        self.prediction, self.action_weight, self.value_weight = prediction, action_weight, value_weight
        self.goal_conditioned = goal_conditioned
        self.schedule = proc
        self.net = make_backbone(backbone, transition_dim=self.transition_dim, dim=dim, dim_mults=tuple(dim_mults))
        self.value = (
            ValueNet(self.transition_dim, horizon, dim=value_dim, dim_mults=tuple(value_dim_mults))
            if value_guided
            else None
        )
        if not value_guided:  # no value net: the data layer need not build value targets
            self.batch_keys = ("observations", "actions", "mask")
        if goal_conditioned:  # the goal pinned at the last row is a state the data reach at that row (jannerm's
            self.pad_to_horizon = False  # maze2d config: use_padding False), never the padding past an episode end

    def _inpainting(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = slice(self.act_dim, None)
        goals = x0[:, -1, states] if self.goal_conditioned else None
        return state_inpainting(x0.shape[0], self.horizon, self.transition_dim, states, x0[:, 0, states], goals)

    @classmethod
    def unused_sampling(cls, config: Mapping[str, Any]) -> dict[str, str]:
        defaults = inspect.signature(cls.__init__).parameters
        value_guided = config.get("value_guided", defaults["value_guided"].default)
        goal_conditioned = config.get("goal_conditioned", defaults["goal_conditioned"].default)
        if value_guided and not goal_conditioned:
            return {}
        why = ("this Diffuser has no value net (value_guided=False): it samples one plan, without value guidance"
               if not value_guided else
               "a goal-conditioned Diffuser samples one plan towards its goal: its value net is not used")
        return dict.fromkeys(("num_plans", "guide_scale", "n_guide_steps", "t_stopgrad", "scale_by_variance"), why)

    def denoising_problem(self, batch: dict[str, torch.Tensor]) -> DenoisingProblem:
        x0 = torch.cat([batch["actions"], batch["observations"]], dim=-1)
        known, _ = self._inpainting(x0)

        def wrap(net: nn.Module) -> Any:
            def denoiser(x: torch.Tensor, t: torch.Tensor, cond: Any = None, drop_mask: Any = None) -> torch.Tensor:
                return net(torch.where(known, x0, x), t)
            return denoiser

        weights = batch["mask"][..., None].to(x0.dtype) * (~known).to(x0.dtype)
        first_action = torch.ones_like(weights[:1])
        first_action[:, 0, : self.act_dim] = self.action_weight
        return DenoisingProblem(x0, wrap, None, known, weights * first_action)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        problem = self.denoising_problem(batch)
        x0, known = problem.x0, problem.known
        diffusion = diffusion_loss(problem.wrap(self.net), x0, self.schedule, prediction=self.prediction,
                                   weights=problem.weights)
        out = {"diffusion_loss": diffusion}
        total = diffusion
        if self.value is not None:
            t = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), device=x0.device)
            x_t = torch.where(known, x0, self.schedule.q_sample(x0, t, torch.randn_like(x0)))
            target = batch["values"]
            if target.numel() != x0.shape[0]:
                raise ValueError(f"batch['values']: expected one value per window, shape [{x0.shape[0]}], got "
                                 f"{tuple(target.shape)}")
            # [B, 1] (the shape of a Decision Diffuser's returns) would broadcast against [B] into a [B, B] loss
            value = ((self.value(x_t, t) - target.reshape(-1)) ** 2).mean()
            out["value_loss"] = value
            total = total + self.value_weight * value
        out["loss"] = total
        return out

    @property
    def action_chunk_length(self) -> int:
        return self.horizon

    @property
    def accepts_goal(self) -> bool:
        return self.goal_conditioned

    @torch.no_grad()
    def plan(
        self,
        obs: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        denoiser: Any = None,
        sampler: str = "ddpm",
        steps: int | None = None,
        eta: float | None = None,
        num_plans: int = 64,
        guide_scale: float = 0.1,
        n_guide_steps: int = 2,
        t_stopgrad: int = 2,
        scale_by_variance: bool = True,
        temperature: float = 1.0,
        clip_sample: float | None = 1.0,
        warm_start_t: int | None = None,
        goal: torch.Tensor | None = None,
        warm_start: torch.Tensor | None = None,
    ) -> PlanOutput:
        """Plan from normalized ``obs [B, S]``; ``goal [B, S]`` pins the final state (goal-reaching tasks: a model
        built with ``goal_conditioned=True``, which learned its trajectories with the goal pinned, needs one; a
        model without has not learned plans that end at a given state, and is refused one).

        ``guide_scale`` multiplies the gradient of the value net's output, a return normalized to [-1, 1] over the
        training data: the reference code's 0.1 applies to raw returns, about half their range (532 on hopper-medium)
        times more (docs/results.md measures both). ``clip_sample`` clips x0 estimates to [-c, c]: 1.0 suits data
        normalized into [-1, 1] (cdf, minmax); pass None for Gaussian-normalized data, the default normalizer here
        (``Policy`` resolves its ``"auto"`` from the normalizers, ``auto_clip``)."""
        self.check_dtypes(obs=obs, goal=goal, warm_start=warm_start)
        if goal is not None and not self.goal_conditioned:
            raise ValueError("goal: this diffuser was trained without goals (goal_conditioned=False); it plans from "
                             "the current state alone")
        if goal is None and self.goal_conditioned:
            raise ValueError("goal: this diffuser was trained to reach goals (goal_conditioned=True); pass goal=... "
                             "(the final state to reach)")
        b = obs.shape[0]
        ranked = self.value is not None and goal is None  # num_plans plans, the best by value is executed
        guided = ranked and guide_scale > 0  # ... each steered by the value's gradient on the way
        n = int(num_plans) if ranked else 1
        starts = obs.repeat_interleave(n, 0)
        goals = None if goal is None else goal.repeat_interleave(n, 0)
        mask, values = state_inpainting(
            b * n, self.horizon, self.transition_dim, slice(self.act_dim, None), starts, goals
        )
        guidance = (
            GradientGuidance(
                lambda x, t: self.value(x, t), scale=guide_scale, n_steps=n_guide_steps, t_stopgrad=t_stopgrad,
                scale_by_variance=scale_by_variance,
            )
            if guided
            else None
        )
        s = self.sampler(sampler, **applicable_options(sampler, steps=steps, eta=eta))
        net = self.net if denoiser is None else denoiser  # Policy(compile=True) passes a traced one
        x = s.sample(
            net, (b * n, self.horizon, self.transition_dim), prediction=self.prediction, generator=generator,
            grad_guidance=guidance, constraints=[Inpaint(mask, values)], temperature=temperature,
            clip_sample=clip_sample, device=obs.device, dtype=obs.dtype,
            **warm_start_args(None if warm_start is None else warm_start.repeat_interleave(n, 0), warm_start_t),
        )
        extras: dict[str, torch.Tensor] = {}
        if self.value is not None:
            zeros = torch.zeros(b * n, dtype=torch.long, device=obs.device)
            plan_values = self.value(x, zeros).reshape(b, n)
            best = plan_values.argmax(dim=1)
            x = x.reshape(b, n, self.horizon, self.transition_dim)[torch.arange(b, device=obs.device), best]
            extras["values"] = plan_values.gather(1, best[:, None])[:, 0]
        return PlanOutput(
            actions=x[:, 0, : self.act_dim], action_chunk=x[:, :, : self.act_dim], observations=x[:, :, self.act_dim :],
            trajectory=x, extras=extras,
        )
