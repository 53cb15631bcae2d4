"""What every algorithm provides, and the registry that names them.

An algorithm turns networks and the diffusion core into two things: ``loss(batch)`` for the trainer and
``plan(obs)`` for the policy. It works entirely in normalized space; the deployable :class:`diffusion_rl.Policy`
owns the normalizers and turns raw observations into normalized ones and planned actions back into raw actions.
Its constructor takes only JSON-friendly keyword arguments, so ``config()`` plus the weights rebuild it anywhere
(no pickles, no training code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from diffusion_rl.diffusion import make_sampler

__all__ = ["Algorithm", "PlanOutput", "ALGORITHMS", "register_algorithm", "make_algorithm", "algorithm_from_config"]


@dataclass
class PlanOutput:
    """What a planner returns, in normalized units.

    ``actions`` are the actions to execute now ``[B, act_dim]``; ``trajectory`` is the whole chosen plan
    ``[B, H, D]``; ``observations`` its state part ``[B, H, obs_dim]``; ``now`` the index of the current state
    in ``observations`` (0, or K - 1 for a planner conditioned on K past states), so ``observations[:, now + 1]``
    is the state the plan expects after executing ``actions``; ``action_chunk [B, n, act_dim]`` (when the plan
    has one) the actions of the coming steps, ``action_chunk[:, 0]`` being ``actions``; ``extras`` holds
    per-algorithm diagnostics (e.g. plan values).
    """

    actions: torch.Tensor
    trajectory: torch.Tensor
    observations: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    now: int = 0
    action_chunk: torch.Tensor | None = None

    @property
    def next_observations(self) -> torch.Tensor | None:
        """The planned next state ``[B, obs_dim]`` (``ŝ1``), or None when the plan holds no future state."""
        if self.observations.shape[1] <= self.now + 1:
            return None
        return self.observations[:, self.now + 1]


class Algorithm(nn.Module):
    """Base class: a trainable model with ``loss`` and a planner with ``plan``."""

    name: ClassVar[str] = ""
    #: keys of the dataset batch this algorithm reads (the data layer builds them)
    batch_keys: ClassVar[tuple[str, ...]] = ("observations", "actions", "mask")
    #: sampler settings used when the caller does not override them
    default_sampling: ClassVar[dict[str, Any]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._config = dict(kwargs)
        self._samplers: dict[tuple, Any] = {}

    def config(self) -> dict[str, Any]:
        """JSON-ready constructor arguments; ``type(self)(**config)`` rebuilds the same architecture."""
        return dict(self._config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sampler(self, name: str, **options: Any):
        """A cached sampler over this algorithm's schedule (schedule tensors are built once per setting)."""
        key = (name, tuple(sorted(options.items())))
        if key not in self._samplers:
            self._samplers[key] = make_sampler(name, self.schedule, **options)
        return self._samplers[key]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``forward`` is ``loss`` so that DistributedDataParallel all-reduces the gradients of the loss."""
        return self.loss(batch)

    @property
    def action_chunk_length(self) -> int | None:
        """How many actions from the current step on a plan's ``action_chunk`` holds (None: no chunk)."""
        return None

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, **settings: Any) -> PlanOutput:  # pragma: no cover - abstract
        raise NotImplementedError


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
    return _lookup(name)(**config)
