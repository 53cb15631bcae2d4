"""What every algorithm provides, and the registry that names them.

An algorithm turns networks and the diffusion core into two things: ``loss(batch)`` for the trainer and
``plan(obs)`` for the policy. It works entirely in normalized space; the deployable :class:`diffusion_rl.Policy`
owns the normalizers and turns raw observations into normalized ones and planned actions back into raw actions.
Its constructor takes only JSON-friendly keyword arguments, so ``config()`` plus the weights rebuild it anywhere
(no pickles, no training code).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from diffusion_rl.diffusion import make_sampler

__all__ = ["ALGORITHMS", "Algorithm", "DenoisingProblem", "PlanOutput", "algorithm_from_config", "make_algorithm",
           "register_algorithm"]


@dataclass
class DenoisingProblem:
    """What an algorithm's denoising loss regresses on one batch, so that other losses (consistency distillation)
    train the same model the same way: the clean sample ``x0``, ``wrap(net)`` -> the denoiser
    ``(x_t, t, cond, drop_mask=None) -> output`` the algorithm builds around a network (e.g. holding inpainted
    entries), the condition, the inpainted entries ``known`` (a bool mask broadcastable to x0, or None), the
    per-element loss ``weights`` and whether the condition is guided by classifier-free guidance."""

    x0: torch.Tensor
    wrap: Callable[[nn.Module], Callable[..., torch.Tensor]]
    cond: Any = None
    known: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    guided: bool = False


@dataclass
class PlanOutput:
    """What a plan holds: returned by every ``Algorithm.plan`` (torch, normalized units, batched) and by
    ``Policy.plan`` (raw units; numpy or torch as the observation came in; without the batch axis for one
    unbatched observation).

    - ``actions``: the action to execute now ``[B, act_dim]``;
    - ``action_chunk``: the actions of the coming steps ``[B, n, act_dim]``, ``action_chunk[:, 0]`` being
      ``actions`` (None when the plan has only the next action: behaviour cloning);
    - ``observations``: the plan's state part ``[B, H, obs_dim]``, None for plans of actions alone (Diffusion
      Policy, BC); ``now`` is the index of the current state in it (0, or K - 1 for a planner conditioned on K
      past states), so ``observations[:, now + 1]`` is the state the plan expects after ``actions``;
    - ``trajectory``: the sample as the model diffused it ``[B, H, D]`` (``Algorithm.plan`` only: its columns
      mix normalized states and actions, so ``Policy.plan`` leaves it None);
    - ``extras``: per-algorithm diagnostics (e.g. ``values`` of Diffuser's chosen plans).
    """

    actions: Any
    action_chunk: Any = None
    observations: Any = None
    now: int = 0
    trajectory: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def next_observations(self) -> Any:
        """The planned next state ``[B, obs_dim]`` (``ŝ1``), or None when the plan holds no future state."""
        if self.observations is None or self.observations.shape[-2] <= self.now + 1:
            return None
        return self.observations[..., self.now + 1, :]


class Algorithm(nn.Module):
    """Base class: a trainable model with ``loss`` and a planner with ``plan``."""

    name: ClassVar[str] = ""
    #: keys of the dataset batch this algorithm reads (the data layer builds them)
    batch_keys: ClassVar[tuple[str, ...]] = ("observations", "actions", "mask")
    #: whether plans hold future states (``PlanOutput.observations``), which ``follow_plan`` tracks
    plans_states: ClassVar[bool] = False
    #: whether a history shorter than ``history`` is filled by repeating its oldest observation (as training pads
    #: an episode's start), so one environment of a batch can restart while the others go on
    repeats_first_observation: ClassVar[bool] = False
    #: the normalizers the diffused sample lives in: ``clip_sample="auto"`` clips x0 estimates to their range
    sample_keys: ClassVar[tuple[str, ...]] = ("observations",)
    #: sampler settings used when the caller does not override them
    default_sampling: ClassVar[dict[str, Any]] = {}
    #: the training data settings a run uses when it does not override them (``PlannerRunConfig.data``: the
    #: normalizer, discount, fall penalty and return label the paper's code trains this algorithm with); the Hydra
    #: config's ``algo.data`` shows the same values
    default_data: ClassVar[dict[str, Any]] = {}
    #: batch keys that are conditions, each with the sampling setting that gives its value when planning (a
    #: Decision Diffuser's return label is the plan's ``target_return``): what distillation can draw at the
    #: condition the planner will be asked for instead of the data's
    plan_conditions: ClassVar[dict[str, str]] = {}
    #: whether training windows run past an episode's end (the rows beyond it padded and masked out of the loss);
    #: False where a window's last row is a condition (a goal-conditioned Diffuser pins it as the goal), which
    #: padding would make a state the data reached rows earlier
    pad_to_horizon: bool = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._config = dict(kwargs)
        self._samplers: dict[tuple, Any] = {}

    def config(self) -> dict[str, Any]:
        """JSON-ready constructor arguments; ``type(self)(**config)`` rebuilds the same architecture."""
        return dict(self._config)

    @classmethod
    def upgrade_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A saved ``config()`` as this version's constructor takes it (artifacts of earlier versions may record
        settings that are refused now but never changed the network); the default keeps it as it is."""
        return config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_dtypes(self, **inputs: Any) -> None:
        """Refuse ``plan`` tensors of another floating dtype than the model's (float64 observations into a float32
        model failed deep inside torch with a bias-type message). ``Policy`` converts observations itself."""
        dtype = next(self.parameters()).dtype
        for name, x in inputs.items():
            if isinstance(x, torch.Tensor) and x.dtype != dtype:
                raise ValueError(f"{name}: expected {dtype} (the model's dtype; Policy converts observations "
                                 f"itself), got {x.dtype}")

    def sampler(self, name: str, **options: Any):
        """A cached sampler over this algorithm's schedule (schedule tensors are built once per setting)."""
        key = (name, tuple(sorted(options.items())))
        if key not in self._samplers:
            self._samplers[key] = make_sampler(name, self.schedule, **options)
        return self._samplers[key]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def denoising_problem(self, batch: dict[str, torch.Tensor]) -> DenoisingProblem:
        """The batch's denoising problem (see :class:`DenoisingProblem`); diffusion-based algorithms define it."""
        raise NotImplementedError(f"{self.name} has no denoising model to distil")

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``forward`` is ``loss`` so that DistributedDataParallel all-reduces the gradients of the loss."""
        return self.loss(batch)

    @property
    def action_chunk_length(self) -> int | None:
        """How many actions from the current step on a plan's ``action_chunk`` holds (None: no chunk)."""
        return None

    def default_execution(self) -> tuple[str, dict[str, Any]]:
        """The execution (name, options) a ``Policy`` built without one uses: replan at every step and execute
        the plan's first action. Algorithms made to execute chunks name theirs."""
        return "first_action", {}

    @property
    def next_step_row(self) -> int | None:
        """The row of a denoised sample that decides the action executed now, the first step of the action chunk
        (Decision Diffuser: the next state, for its inverse dynamics; Diffuser and Diffusion Policy: the current
        action); None without a chunk."""
        n = self.action_chunk_length
        return None if n is None else int(self.config()["horizon"]) - n

    def plan_now(self, remembered: int) -> int:
        """The row of the current state in a plan made from ``remembered`` observations (``PlanOutput.now``):
        what a warm start aligns the previous plan by. 0 unless a planner's window starts at past states."""
        return 0

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, **settings: Any) -> PlanOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    #: keyword arguments of ``plan`` that carry context (filled by ``Policy``), not sampler settings
    CONTEXT_ARGS: ClassVar[tuple[str, ...]] = ("generator", "history", "goal", "warm_start", "denoiser")

    @property
    def accepts_goal(self) -> bool:
        """Whether ``plan`` takes a ``goal`` (pinned as the final state) for this model."""
        return "goal" in self.plan_arguments()

    @classmethod
    def plan_arguments(cls) -> dict[str, Any]:
        """``plan``'s keyword arguments and their defaults (the sampler settings plus context arguments); the
        sampler settings a ``Policy`` accepts are exactly these minus :attr:`CONTEXT_ARGS`."""
        import inspect

        params = inspect.signature(cls.plan).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    @classmethod
    def sampling_names(cls) -> list[str]:
        """The sampler settings this algorithm's ``plan`` takes (what ``Policy`` settings may name)."""
        return sorted(k for k in cls.plan_arguments() if k not in cls.CONTEXT_ARGS)

    @classmethod
    def unused_sampling(cls, config: Mapping[str, Any]) -> dict[str, str]:
        """Sampler settings that an instance built with the constructor settings ``config`` (omitted ones take
        their defaults) takes in ``plan`` but never reads, each with the reason (a Diffuser built without a value
        net has no value guidance): told before a model is built, so a run can refuse them up front."""
        return {}

    def unused_settings(self) -> dict[str, str]:
        """This instance's :meth:`unused_sampling`: a ``Policy`` leaves those settings out, so setting one is refused
        rather than ignored."""
        return type(self).unused_sampling(self.config())


ALGORITHMS: dict[str, type[Algorithm]] = {}


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: add an algorithm to :data:`ALGORITHMS` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered")
    ALGORITHMS[cls.name] = cls
    return cls


def _lookup(name: str) -> type[Algorithm]:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; expected one of: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]


def make_algorithm(name: str, **kwargs: Any) -> Algorithm:
    """Build a registered algorithm by name with constructor keyword arguments."""
    return _lookup(name)(**kwargs)


def algorithm_from_config(name: str, config: dict[str, Any]) -> Algorithm:
    """Rebuild an algorithm from ``name`` and the dict its ``config()`` returned."""
    cls = _lookup(name)
    return cls(**cls.upgrade_config(dict(config)))
