"""Executions: what happens between an observation and an action, as small stateful objects with ``reset()``.

A planner returns a whole plan; an execution decides which action of which plan the robot gets now:

- ``first_action``: replan at every control step and execute the plan's first action (Diffuser, Decision
  Diffuser: receding-horizon control);
- ``follow_plan``: plan once after ``reset()`` and track the planned states with a PD-style controller (Diffuser's
  maze2d experiments);
- ``action_queue``: plan a chunk, execute its next ``action_steps`` actions open-loop from a queue, replan when the
  queue is empty (Diffusion Policy's Ta of Tp; any planner whose plan has an action chunk).

Each is chosen by name from :data:`EXECUTIONS` (``Policy(..., execution="action_queue",
execution_options={"action_steps": 8})``); ``Policy`` only wires normalization, history, execution and the
algorithm together. Every execution records ``expected_next``: the (normalized) state the executed plan expects
after this action, or None, for plan diagnostics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from diffusion_rl._numbers import is_integer

if TYPE_CHECKING:  # pragma: no cover
    from diffusion_rl.policy import Policy

__all__ = ["EXECUTIONS", "ActionQueue", "Execution", "FirstAction", "FollowPlan", "make_execution",
           "register_execution"]


class Execution:
    """Base class: ``step(policy, obs_n, context) -> normalized actions [B, act_dim]`` (``context["observation"]``:
    the observations as given, ``[B, S]``); ``reset()`` forgets every plan. Constructor keyword arguments are the
    execution's options (saved in the artifact)."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.reset()

    def options(self) -> dict[str, Any]:
        """The constructor options, JSON-ready (``type(self)(**options())`` rebuilds it)."""
        return {}

    def reset(self) -> None:
        self.expected_next: torch.Tensor | None = None
        self.previous: torch.Tensor | None = None  # the last plan's trajectory (normalized), for warm starts
        self.previous_now = 0  # the row of the then-current state in it (PlanOutput.now)

    def _keep(self, out: Any) -> None:
        """Remember a plan to warm-start the next from."""
        self.previous, self.previous_now = out.trajectory, int(out.now)

    def _warm(self, context: dict[str, Any], executed: int) -> dict[str, Any]:
        """``context`` plus the previous plan moved on by the ``executed`` steps since it was made (its last step
        repeated at the end), which a planner with ``warm_start_t`` set re-noises and denoises in a few steps
        instead of starting from noise. ``Policy`` calls it with the new plan's ``now`` (the row of the current
        state), so a window that still starts at the episode's start (a Decision Diffuser remembering fewer than
        K states) moves by fewer rows. The inpainted states still override the shifted plan's rows. Computed only
        if the plan uses it (``Policy`` asks for it when ``warm_start_t`` is set)."""
        if self.previous is None:
            return context
        prev, prev_now = self.previous, self.previous_now

        def shifted(now: int = prev_now) -> torch.Tensor:
            k = min(max(executed - (now - prev_now), 0), prev.shape[1] - 1)
            return torch.cat([prev[:, k:], prev[:, -1:].expand(-1, k, -1)], dim=1) if k > 0 else prev

        return {**context, "warm_start": shifted}

    def check(self, algo: Any) -> None:
        """Refuse, at construction, an algorithm this execution cannot drive (ValueError)."""

    def idle_setting(self, name: str) -> str | None:
        """Why this execution never reads the sampling setting ``name`` (a plan made once per episode is never
        warm-started), or None when it may."""
        return None

    def step(self, policy: Policy, obs_n: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract


EXECUTIONS: dict[str, type[Execution]] = {}


def register_execution(cls: type[Execution]) -> type[Execution]:
    """Class decorator: add an execution to :data:`EXECUTIONS` under ``cls.name``."""
    EXECUTIONS[cls.name] = cls
    return cls


def make_execution(name: str, options: dict[str, Any] | None = None) -> Execution:
    """Build the execution registered as ``name``; unknown names and options are refused with the valid ones."""
    if name not in EXECUTIONS:
        raise ValueError(f"unknown execution {name!r}; expected one of: {', '.join(EXECUTIONS)}")
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"execution options: expected a mapping of option name to value (e.g. "
                         f"{{'action_steps': 4}}), got {options!r} ({type(options).__name__})")
    try:
        return EXECUTIONS[name](**(options or {}))
    except TypeError:
        import inspect

        valid = [p for p in inspect.signature(EXECUTIONS[name].__init__).parameters if p != "self"]
        unknown = sorted(set(options or {}) - set(valid))
        raise ValueError(
            f"execution {name!r} does not take options {unknown or sorted(options or {})}; its options: "
            f"{valid or 'none'}"
        ) from None


@register_execution
class FirstAction(Execution):
    """Replan at every step and execute the plan's first action."""

    name = "first_action"

    def step(self, policy: Policy, obs_n: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        out = policy._plan_normalized(obs_n, self._warm(context, 1))
        self._keep(out)
        self.expected_next = out.next_observations
        return out.actions


@register_execution
class FollowPlan(Execution):
    """Plan once after ``reset()`` and track the planned states with a PD-style controller (Diffuser, Maze2D).

    As in the Diffuser paper's maze2d experiments: the action is ``(s*_{k+1} - s_k)`` on positions plus
    ``(v*_{k+1} - v_k)`` on velocities, computed in raw units; after the plan's end the last waypoint is held.
    """

    name = "follow_plan"

    def idle_setting(self, name: str) -> str | None:
        if name == "warm_start_t":
            return ("execution 'follow_plan' plans once after reset() and follows that plan, so no plan is "
                    "warm-started (warm starts are for execution='first_action' or 'action_queue')")
        return None

    def check(self, algo: Any) -> None:
        if not algo.plans_states:
            raise ValueError(f"execution 'follow_plan' tracks planned states; {algo.name} plans hold actions only "
                             "(use execution='first_action' or 'action_queue')")
        if algo.obs_dim != 2 * algo.act_dim:  # the PD law pairs each position with its velocity and its action
            raise ValueError(f"execution 'follow_plan' needs states [positions, velocities] with one action per "
                             f"position (obs_dim = 2 x act_dim, as maze2d's 4 and 2); {algo.name} has obs_dim "
                             f"{algo.obs_dim} and act_dim {algo.act_dim} (use execution='first_action')")

    def reset(self) -> None:
        super().reset()
        self.plan: torch.Tensor | None = None  # raw units [B, H, S]
        self.now = 0  # the plan's row of the state it was made from (K - 1 for a planner given K past states)
        self.k = 0

    def step(self, policy: Policy, obs_n: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        if self.plan is None or self.plan.shape[0] != obs_n.shape[0]:
            out = policy._plan_normalized(obs_n, context)
            self.plan = policy._unnormalize("observations", out.observations)
            self.now, self.k = out.now, 0
        last = self.plan.shape[1] - 1
        k = min(self.now + self.k + 1, last)
        self.expected_next = policy._normalize("observations", self.plan[:, k])
        target = self.plan[:, k].clone()
        if self.now + self.k + 1 > last:  # past the plan's end (not at its last waypoint): hold, no velocity
            target[:, policy.obs_dim // 2 :] = 0.0
        self.k += 1
        # the observation as given: un-normalizing obs_n would give a clipped state where the normalizer clips
        obs = torch.as_tensor(context["observation"], dtype=self.plan.dtype, device=self.plan.device)
        half = policy.obs_dim // 2
        action = (target[:, :half] - obs[:, :half]) + (target[:, half:] - obs[:, half:])
        return policy._normalize("actions", action[:, : policy.act_dim])


@register_execution
class ActionQueue(Execution):
    """Plan a chunk, queue its next ``action_steps`` actions (from the current step on), pop one per control
    step and replan when the queue is empty (Diffusion Policy's Ta of Tp). A new batch size starts afresh."""

    name = "action_queue"

    def __init__(self, action_steps: int = 8) -> None:
        if not is_integer(action_steps) or action_steps < 1:
            raise ValueError(f"action_steps must be an integer >= 1, got {action_steps!r}")
        self.action_steps = int(action_steps)
        super().__init__()

    def options(self) -> dict[str, Any]:
        return {"action_steps": self.action_steps}

    def check(self, algo: Any) -> None:
        length = getattr(algo, "action_chunk_length", None)
        if length is None:
            raise ValueError(f"execution 'action_queue' needs a plan with an action chunk; {algo.name} plans give "
                             "only the next action (use execution='first_action')")
        if self.action_steps > length:
            raise ValueError(f"action_steps (Ta={self.action_steps}) must be in [1, {length}]: {algo.name}'s chunks "
                             f"hold {length} actions from the current step")

    def reset(self) -> None:
        super().reset()
        self.actions: list[torch.Tensor] = []  # normalized [B, A] each: the queue, next first
        self.states: list[torch.Tensor] | None = None  # normalized [B, S]: the state expected after each action
        self.batch = 0
        self.k = 0

    def step(self, policy: Policy, obs_n: torch.Tensor, context: dict[str, Any]) -> torch.Tensor:
        if self.k >= len(self.actions) or self.batch != obs_n.shape[0]:
            out = policy._plan_normalized(obs_n, self._warm(context, self.k))
            self._keep(out)
            if out.action_chunk is None:
                raise ValueError(f"execution 'action_queue' needs a plan with an action chunk; {policy.algo.name} "
                                 "plans give only the next action (use execution='first_action')")
            chunk = out.action_chunk[:, : self.action_steps]
            self.actions = list(chunk.unbind(1))  # popping is then a list lookup, not a tensor index
            self.states = None
            if out.observations is not None:  # the states the plan holds after each queued action (a chunk may
                # run past the plan's last state: those actions have no expected next state)
                future = out.observations[:, out.now + 1 : out.now + 1 + chunk.shape[1]]
                self.states = list(future.unbind(1))
            self.batch, self.k = obs_n.shape[0], 0
        action = self.actions[self.k]
        self.expected_next = None if self.states is None or self.k >= len(self.states) else self.states[self.k]
        self.k += 1
        return action
