"""Decision Diffuser (Ajay et al. 2023): return-conditioned state trajectories + inverse dynamics.

The model diffuses state-only trajectories ``[B, H, S]`` with a temporal U-Net whose time embedding is joined by
a returns embedding. Training drops the returns condition with probability ``cond_drop`` (classifier-free
guidance); the first ``history`` states are imposed by inpainting (at an episode's first steps, and in the training
windows that start before their episode, padded by repeating the first state); actions come from an inverse-dynamics MLP
``a_t = f(s_t, s_{t+1})`` trained jointly (loss = ``diffusion_weight * diffusion + inv_weight * MSE``);
``inv_noise`` > 0 trains it on ``s_{t+1} + inv_noise * N(0, I)`` (normalized units), so that it reads an imprecise
plan's next state as an approximate one instead of extrapolating from it: where the data's one-step transitions
cannot be planned precisely (walker2d's joint velocities, docs/results.md) the head leans on ``s_t`` more.
Returns are the data layer's return labels in ``[0, 1]``: with ``return_label="quantile"`` (the default of the
configs) a label is the quantile level of a window's discounted return-to-go among the dataset's window starts,
so ``target_return=0.9`` asks for "a return better than 90% of the data's" on any dataset, and every target in
[0, 1] lies inside the training distribution of the condition. The default, 0.1, was chosen on hopper-medium
evaluation seeds 100-109 (docs/results.md): with the fall penalty and a 0.99 discount, the labels rank windows
mostly by forward speed over the next ~100 steps, and asking for a modest speed keeps the hopper upright for the
whole episode, which is what the normalized score rewards most (0.9 asks for the fastest, riskiest gaits). Sampling defaults follow the paper's code:
low temperature (0.5: the initial noise and every injected noise scaled by 0.5) and guidance w = 1.2 (our 0.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from diffusion_rl.algos._common import (
    applicable_options,
    check_finite,
    check_sizes,
    check_unit_interval,
    check_weight,
    forward_process,
    make_backbone,
    masked_mean,
    state_inpainting,
    warm_start_args,
)
from diffusion_rl.algos.base import Algorithm, DenoisingProblem, PlanOutput, register_algorithm
from diffusion_rl.diffusion import ClassifierFreeGuidance, Inpaint, diffusion_loss
from diffusion_rl.nets import InverseDynamics

__all__ = ["DecisionDiffuser"]


@register_algorithm
class DecisionDiffuser(Algorithm):
    """Return-conditioned state-trajectory diffusion with an inverse-dynamics head."""

    name = "decision_diffuser"
    repeats_first_observation = True  # an episode's first states are padded by repeating the first, as in training
    plans_states = True
    batch_keys = ("observations", "actions", "mask", "returns")
    plan_conditions = {"returns": "target_return"}
    default_data = {
        "normalizer": "cdf",  # the paper code's CDFNormalizer: every state dimension in [-1, 1]
        "discount": 0.99,
        "terminal_penalty": -100.0,  # on the last reward of an episode that fell
        "return_label": "quantile",  # target_return is a quantile level of the return labels
    }
    default_sampling = {
        "sampler": "ddim",
        "steps": 20,
        "eta": 0.0,
        "guidance_weight": 0.2,  # Ho & Salimans' w; the DD paper's w=1.2 in its own convention
        "target_return": 0.1,  # quantile level of the data's return labels, in [0, 1] (see the module docstring)
        "temperature": 0.5,  # the paper code's low-temperature sampling
        "clip_sample": "auto",  # Policy: the state normalizer's range (none for Gaussian)
        "warm_start_t": None,  # replan from the previous plan re-noised to this timestep (None: from noise)
    }

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        horizon: int = 100,
        num_steps: int = 200,
        schedule: str = "cosine",
        prediction: str | None = None,
        process: str = "diffusion",
        backbone: str = "temporal_unet",
        dim: int = 128,
        dim_mults: Sequence[int] = (1, 4, 8),
        cond_drop: float = 0.25,
        inv_hidden_dim: int = 256,
        history: int = 1,
        diffusion_weight: float = 0.5,
        inv_weight: float = 0.5,
        inv_noise: float = 0.0,
    ) -> None:
        check_sizes(obs_dim=obs_dim, act_dim=act_dim, horizon=horizon, num_steps=num_steps, dim=dim,
                    dim_mults=dim_mults, inv_hidden_dim=inv_hidden_dim, history=history)
        if not 1 <= history < horizon:
            raise ValueError(f"history must be in [1, horizon={horizon}); got {history}")
        if horizon < 2:
            raise ValueError(f"Decision Diffuser needs horizon >= 2 (inverse dynamics uses s_t, s_t+1); got {horizon}")
        cond_drop = check_unit_interval("cond_drop", cond_drop, "the probability of dropping the returns condition")
        diffusion_weight, inv_weight = check_weight("diffusion_weight", diffusion_weight), check_weight(
            "inv_weight", inv_weight)
        check_finite("inv_noise", inv_noise)
        if inv_noise < 0:
            raise ValueError(f"inv_noise: expected a standard deviation >= 0 (normalized units), got {inv_noise!r}")
        proc, prediction = forward_process(process, schedule, num_steps, prediction, "epsilon")
        super().__init__(
            obs_dim=obs_dim, act_dim=act_dim, horizon=horizon, num_steps=num_steps, schedule=schedule,
            prediction=prediction, process=process, backbone=backbone, dim=dim, dim_mults=list(dim_mults),
            cond_drop=cond_drop, inv_hidden_dim=inv_hidden_dim, history=history, diffusion_weight=diffusion_weight,
            inv_weight=inv_weight, inv_noise=inv_noise,
        )
        self.obs_dim, self.act_dim, self.horizon, self.history = obs_dim, act_dim, horizon, history
        # windows start up to K - 1 steps before their episode, the first state repeated there (and inpainted,
        # like every history row): what planning does before K states are known, so no plan is made from rows
        # the network never learned (a window at the episode's start with fewer known rows)
        self.pad_before = history - 1
        self.prediction, self.cond_drop = prediction, cond_drop
        self.diffusion_weight, self.inv_weight, self.inv_noise = diffusion_weight, inv_weight, float(inv_noise)
        self.schedule = proc
        self.net = make_backbone(backbone, transition_dim=obs_dim, dim=dim, dim_mults=tuple(dim_mults), cond_dim=1)
        self.inv = InverseDynamics(obs_dim, act_dim, hidden_dim=inv_hidden_dim)

    def _history_mask(self, device: torch.device) -> torch.Tensor:
        mask = torch.zeros(1, self.horizon, self.obs_dim, dtype=torch.bool, device=device)
        mask[:, : self.history] = True
        return mask

    def denoising_problem(self, batch: dict[str, torch.Tensor]) -> DenoisingProblem:
        x0, valid = batch["observations"], batch["mask"]
        known = self._history_mask(x0.device)

        def wrap(net: nn.Module) -> Any:
            def denoiser(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, drop_mask: torch.Tensor | None = None):
                return net(torch.where(known, x0, x), t, cond, drop_mask=drop_mask)
            return denoiser

        weights = valid[..., None].to(x0.dtype) * (~known).to(x0.dtype)
        return DenoisingProblem(x0, wrap, batch["returns"], known, weights, guided=True)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        problem = self.denoising_problem(batch)
        x0, valid = problem.x0, batch["mask"]
        drop = torch.rand(x0.shape[0], device=x0.device) < self.cond_drop
        diffusion = diffusion_loss(
            problem.wrap(self.net), x0, self.schedule, prediction=self.prediction, cond=problem.cond,
            weights=problem.weights, drop_mask=drop,
        )
        s, s_next, a = x0[:, :-1], x0[:, 1:], batch["actions"][:, :-1]
        if self.inv_noise > 0:
            s_next = s_next + self.inv_noise * torch.randn_like(s_next)
        pred = self.inv(s.reshape(-1, self.obs_dim), s_next.reshape(-1, self.obs_dim)).reshape(a.shape)
        inv = masked_mean(((pred - a) ** 2).mean(-1), valid[:, :-1] * valid[:, 1:])
        total = self.diffusion_weight * diffusion + self.inv_weight * inv
        return {"loss": total, "diffusion_loss": diffusion, "inv_loss": inv}

    @property
    def action_chunk_length(self) -> int:
        return self.horizon - self.history

    def plan_now(self, remembered: int) -> int:
        # K history rows always (fewer remembered states are padded with the first), the current state last
        return self.history - 1

    @torch.no_grad()
    def plan(
        self,
        obs: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        denoiser: Any = None,
        sampler: str = "ddim",
        steps: int | None = 20,
        eta: float | None = 0.0,
        guidance_weight: float = 0.2,
        target_return: float = 0.1,
        temperature: float = 0.5,
        clip_sample: float | None = 1.0,
        warm_start_t: int | None = None,
        history: torch.Tensor | None = None,
        warm_start: torch.Tensor | None = None,
    ) -> PlanOutput:
        """Plan from normalized ``obs [B, S]``, and ``history [B, k, S]`` (the last k states, ending with ``obs``)
        for a planner conditioned on K past states.

        ``target_return`` is a return label in [0, 1] (see the module docstring); ``guidance_weight`` a finite
        number (0 = conditional only). ``clip_sample`` clips x0 estimates to [-c, c]: 1.0 suits states normalized
        into [-1, 1] (cdf, minmax); pass None for Gaussian-normalized ones (``Policy`` resolves its ``"auto"``
        from the normalizer, ``auto_clip``)."""
        self.check_dtypes(obs=obs, history=history, warm_start=warm_start)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape [B, {self.obs_dim}] (normalized states; a history of past states "
                             f"goes in history=[B, k, {self.obs_dim}]), got {tuple(obs.shape)}")
        check_unit_interval("target_return", target_return, "a return label, as the data's labels lie in [0, 1]")
        check_finite("guidance_weight", guidance_weight)
        known = obs[:, None] if history is None else history
        if known.shape[1] > self.history:
            known = known[:, -self.history :]
        if known.shape[1] < self.history:  # an episode's first steps: padded with the first state, as in training
            known = torch.cat([known[:, :1].expand(-1, self.history - known.shape[1], -1), known], dim=1)
        b, k = known.shape[0], known.shape[1]
        mask, values = state_inpainting(b, self.horizon, self.obs_dim, slice(None), known[:, 0])
        mask[:, :k].fill_(True)
        values[:, :k] = known
        cond = torch.full((b, 1), float(target_return), device=obs.device, dtype=obs.dtype)
        s = self.sampler(sampler, **applicable_options(sampler, steps=steps, eta=eta))
        net = self.net if denoiser is None else denoiser  # Policy(compile=True) passes a traced one
        x = s.sample(
            net, (b, self.horizon, self.obs_dim), prediction=self.prediction, generator=generator, cond=cond,
            guidance=ClassifierFreeGuidance(guidance_weight), constraints=[Inpaint(mask, values)],
            temperature=temperature, clip_sample=clip_sample, device=obs.device, dtype=obs.dtype,
            **warm_start_args(warm_start, warm_start_t),
        )
        now = k - 1
        # the action of every planned step by inverse dynamics between consecutive planned states
        chunk = self.inv(x[:, now:-1], x[:, now + 1 :])
        return PlanOutput(actions=chunk[:, 0], trajectory=x, observations=x, now=now, action_chunk=chunk)
