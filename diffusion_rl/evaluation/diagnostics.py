"""Plan diagnostics: how precise and how self-consistent a planner's plans are, and what sampling settings do.

A planner that acts through ``a = inv(s0, ŝ1)`` (Decision Diffuser) or executes the first planned action
(Diffuser) is only as good as its plans are precise. Three numbers describe that, measured from one start state:

- **action spread**: the standard deviation, over ``num_plans`` plans sampled from the same state, of the first
  action (raw units, averaged over action dimensions) -- what the sampler's noise does to the decision;
- **one-step error**: each plan's first action executed in a copy of the environment from that state; the RMS
  over state dimensions of (simulator's next state − planned ŝ1), normalized units, averaged over the plans;
- **rollout error and return**: the same error averaged over the steps of a short episode (``rollout_steps``),
  and that episode's return.

:func:`diagnose` measures them for the policy's own settings and for one-at-a-time changes of each sampling
setting (sampler, steps, temperature, guidance weight, target return...). ``scripts/diagnose.py`` prints it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from diffusion_rl.algos._common import idle_sampler_option
from diffusion_rl.evaluation.rollout import _make_env, _positive_int, evaluate, resolve_env
from diffusion_rl.progress import progress_bar

__all__ = ["DiagnosticRow", "diagnose", "plan_spread"]


@dataclass
class DiagnosticRow:
    """The diagnostics of one sampling setting (``setting`` = ``"default"`` or ``"<key>=<value>"``)."""

    setting: str
    action_spread: float
    next_state_spread: float
    one_step_error: float
    rollout_error: float
    rollout_return: float
    rollout_length: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)


def plan_spread(policy: Any, obs: np.ndarray, num_plans: int = 64, goal: np.ndarray | None = None,
                **settings: Any) -> dict[str, np.ndarray]:
    """``num_plans`` plans from the one state ``obs [obs_dim]``: their first actions ``[N, act_dim]`` and
    planned next states ``[N, obs_dim]`` (raw units), sampled in one batch from the policy's current seed.
    ``goal`` (``[k]``, e.g. maze2d's ``info["goal"]``) is given to every plan, as evaluation gives it to a policy
    that takes one (``policy.accepts_goal``); a goal-conditioned planner cannot plan without it."""
    batch = np.repeat(np.asarray(obs, dtype=np.float32)[None], int(num_plans), axis=0)
    if goal is not None:
        settings["goal"] = np.repeat(np.asarray(goal, dtype=np.float64).reshape(1, -1), int(num_plans), axis=0)
    policy.reset()
    plan = policy.plan(batch, **settings)
    if plan.next_observations is None:
        raise ValueError("plan diagnostics need a planner that predicts states (its plan has no next state)")
    return {"actions": _numpy(plan.actions), "next_observations": _numpy(plan.next_observations)}


def _one_step_errors(policy: Any, gym_id: str, seed: int, actions: np.ndarray,
                     expected: np.ndarray) -> np.ndarray:
    """Execute each first action from the same reset state (one env copy per plan): RMS normalized error of the
    simulator's next state against the plan's."""
    norm = policy.normalizers["observations"]
    errors = []
    env = _make_env(gym_id, None, False)
    try:
        for action, exp in zip(actions, expected):
            env.reset(seed=seed)
            low, high = env.action_space.low, env.action_space.high
            nxt, *_ = env.step(np.clip(action, low, high).astype(env.action_space.dtype))
            diff = norm.normalize(np.asarray(nxt, np.float64)[None]) - norm.normalize(exp[None])
            errors.append(float(np.sqrt(np.mean(diff**2))))
    finally:
        env.close()
    return np.asarray(errors)


def _measure(policy: Any, env_name: str, gym_id: str, obs0: np.ndarray, goal: np.ndarray | None, seed: int,
             num_plans: int, rollout_steps: int, setting: str, overrides: Mapping[str, Any]) -> DiagnosticRow:
    saved = dict(policy.sampling)
    try:
        policy.sampling.update(overrides)
        plans = plan_spread(policy, obs0, num_plans, goal=goal)
        errors = _one_step_errors(policy, gym_id, seed, plans["actions"], plans["next_observations"])
        norm = policy.normalizers["observations"]
        next_n = norm.normalize(plans["next_observations"])
        result = evaluate(policy, env_name, episodes=1, num_envs=1, seed=seed, max_episode_steps=rollout_steps,
                          progress=False)
    finally:
        policy.sampling.clear()
        policy.sampling.update(saved)
    rollout_error = result.plan_error_mean
    return DiagnosticRow(
        setting=setting,
        action_spread=float(plans["actions"].std(axis=0).mean()),
        next_state_spread=float(next_n.std(axis=0).mean()),
        one_step_error=float(errors.mean()),
        rollout_error=float("nan") if rollout_error is None else float(rollout_error),
        rollout_return=float(result.returns[0]),
        rollout_length=int(result.lengths[0]),
    )


def diagnose(
    policy: Any,
    env_name: str,
    *,
    seed: int = 0,
    num_plans: int = 64,
    rollout_steps: int = 100,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = True,
) -> tuple[list[DiagnosticRow], list[str]]:
    """Diagnostics for the policy's settings (row ``"default"``), then one row per value of each swept setting
    (the others at the policy's values). Returns the rows and notes on settings this policy does not have."""
    if not isinstance(num_plans, int) or num_plans < 2:
        raise ValueError(f"num_plans: expected an integer >= 2 (a spread needs several plans), got {num_plans!r}")
    rollout_steps = _positive_int("rollout_steps", rollout_steps)
    if not getattr(getattr(policy, "algo", None), "plans_states", True):  # told before any work, not in the bar
        raise ValueError(f"plan diagnostics need a planner that predicts states; {policy.algo.name} plans actions "
                         "only (use scripts/evaluate.py)")
    gym_id, _ = resolve_env(env_name)
    env = _make_env(gym_id, None, False)
    try:
        obs0, info = env.reset(seed=seed)
    finally:
        env.close()
    # maze2d's goal, for a policy that takes one (the rollout gets it from evaluate, as in scoring)
    goal = info.get("goal") if getattr(policy, "accepts_goal", True) else None
    sweep = dict(sweep or {})
    notes = [f"{k}: not a setting of this policy (its settings: {', '.join(sorted(policy.sampling))})"
             for k in sweep if k not in policy.sampling]
    sampler = policy.sampling.get("sampler")
    idle = {k: idle_sampler_option(sampler, k) for k in sweep if k in policy.sampling and isinstance(sampler, str)}
    notes += [f"{k}: not swept, {why}" for k, why in idle.items() if why]
    cases: list[tuple[str, dict[str, Any]]] = [("default", {})]
    for key, values in sweep.items():
        if key in policy.sampling and not idle.get(key):  # rows that would all be the default row
            cases += [(f"{key}={v}", {key: v}) for v in values]
    rows = []
    bar = progress_bar(total=len(cases), desc="diagnose", disable=not progress)
    try:
        for name, overrides in cases:
            rows.append(_measure(policy, env_name, gym_id, np.asarray(obs0), goal, seed, num_plans,
                                 rollout_steps, name, overrides))
            bar.update(1)
    finally:
        bar.close()
    return rows, notes
