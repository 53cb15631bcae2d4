"""Forward processes: how clean data x0 and noise eps mix at timestep t, x_t = a(t) x0 + s(t) eps.

Two kinds implement :class:`ForwardProcess`:

- :class:`~diffusion_rl.diffusion.schedules.NoiseSchedule` (``process="diffusion"``): variance preserving,
  a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t), from a beta schedule (DDPM, Diffuser, Decision Diffuser).
- :class:`FlowPath` (``process="flow"``): the linear path of flow matching / rectified flow (Lipman et al. 2023,
  Liu et al. 2023), a = 1 - tau, s = tau, trained to predict the velocity dx_t / dtau = eps - x0.

Samplers, the training loss and the algorithms see only this interface: integer timesteps ``0..num_steps-1``
(0 the least noisy, ``-1`` meaning the clean sample), the signal power ``alpha_bar(t) = a^2``, the noise power
``sigma2(t) = s^2`` and the variance of one forward transition, all as host floats for the samplers' tables, plus
tensor coefficients for the loss. ``make_process(name, ...)`` builds one from an algorithm's settings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffusion_rl._numbers import is_integer

__all__ = ["MAX_NUM_STEPS", "PROCESSES", "FlowPath", "ForwardProcess", "check_num_steps", "make_process",
           "process_from_config"]

MAX_NUM_STEPS = 100_000
"""The most steps a forward process may have (papers use 20 to 1,000; a typo such as 1e9 would fill memory)."""


def check_num_steps(num_steps: Any) -> None:
    """``ValueError`` unless ``num_steps`` is an integer in [1, MAX_NUM_STEPS]."""
    if not is_integer(num_steps) or not 1 <= num_steps <= MAX_NUM_STEPS:
        raise ValueError(f"num_steps must be an integer in [1, {MAX_NUM_STEPS:,}], got {num_steps!r}")


class ForwardProcess(ABC):
    """What samplers and losses need from a forward process (see the module docstring)."""

    kind: str = ""
    """``"diffusion"`` or ``"flow"``: the registry name in :data:`PROCESSES`."""
    predictions: tuple[str, ...] = ()
    """The prediction types (``diffusion_rl.diffusion.PREDICTIONS``) that are defined on this process."""
    default_prediction: str = ""

    @property
    @abstractmethod
    def num_steps(self) -> int:
        """Number of integer timesteps of the training grid."""

    @abstractmethod
    def alpha_bar(self, t: int) -> float:
        """a(t)^2 as a host float; ``t = -1`` is the clean sample (1.0)."""

    @abstractmethod
    def sigma2(self, t: int) -> float:
        """s(t)^2 as a host float; ``t = -1`` is the clean sample (0.0)."""

    @abstractmethod
    def transition_variance(self, t: int, prev: int) -> float:
        """Variance of q(x_t | x_prev) for a (possibly strided) step prev -> t: s_t^2 - (a_t / a_prev)^2 s_prev^2."""

    @abstractmethod
    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(a(t), s(t)) for timesteps ``t`` [B], shaped [B, 1, ...] to broadcast against ``like``, in its dtype."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """A JSON-serializable description that :func:`process_from_config` rebuilds exactly."""

    @abstractmethod
    def to(self, device: torch.device | str) -> ForwardProcess:
        """Move any tables to ``device`` in place; returns ``self``."""

    def _check_t(self, t: int) -> None:
        if not 0 <= t < self.num_steps:
            raise ValueError(f"timestep must be in [0, {self.num_steps - 1}], got {t}")

    def posterior_variance(self, t: int, prev: int) -> float:
        """Variance of q(x_prev | x_t, x_0) for a (possibly strided) step t -> prev; prev = -1 means x_0."""
        return self.sigma2(prev) / self.sigma2(t) * self.transition_variance(t, prev)

    def check_prediction(self, prediction: str) -> None:
        """Refuse a prediction type that this process does not define (``ValueError`` listing the valid ones)."""
        if prediction not in self.predictions:
            raise ValueError(f"prediction {prediction!r} is not defined for process={self.kind!r}; expected one of "
                             f"{list(self.predictions)}")

    def sample_timesteps(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Training timesteps: uniform integers in [0, num_steps) of shape [batch], drawn with ``generator``."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_steps, (batch,), generator=generator, device=gen_device)
        return t.to(device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Draw x_t = a(t) x0 + s(t) noise for timesteps ``t`` [B], integers in [0, num_steps) (not checked here:
        that would wait for the device at every call; :func:`diffusion_loss` checks the ``t`` it is given)."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        a, s = self.coefficients(t, x0)
        return a * x0 + s * noise


def _check_batch_t(t: Tensor, like: Tensor) -> None:
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"t must have shape [{like.shape[0]}] (one timestep per batch row), got {tuple(t.shape)}")


class FlowPath(ForwardProcess):
    """The linear (rectified-flow) path x_tau = (1 - tau) x0 + tau eps, tau in [0, 1] (1 = pure noise).

    Integer timestep k of the grid is tau = (k + 1) / num_steps, so k = num_steps - 1 is pure noise and the sampler
    grids, warm starts and guidance settings of the diffusion samplers apply unchanged. ``coefficients`` also takes
    float tensors of continuous tau in [0, 1]. Its natural target is the velocity eps - x0 (``"velocity"``); the
    clean sample (``"sample"``) is defined too, ``"epsilon"`` is not (x0 = (x - tau eps) / (1 - tau) is undefined
    at the pure-noise end).
    """

    kind = "flow"
    predictions = ("velocity", "sample")
    default_prediction = "velocity"

    def __init__(self, num_steps: int = 1000) -> None:
        check_num_steps(num_steps)
        self._num_steps = int(num_steps)

    @property
    def num_steps(self) -> int:
        return self._num_steps

    def tau(self, t: int) -> float:
        """The continuous time of integer timestep ``t`` (``-1``: 0.0, the clean sample)."""
        if t < 0:
            return 0.0
        self._check_t(t)
        return (t + 1) / self._num_steps

    def alpha_bar(self, t: int) -> float:
        return (1.0 - self.tau(t)) ** 2

    def sigma2(self, t: int) -> float:
        return self.tau(t) ** 2

    def transition_variance(self, t: int, prev: int) -> float:
        a_t, a_prev = 1.0 - self.tau(t), 1.0 - self.tau(prev)
        ratio = a_t / a_prev if a_prev > 0 else 0.0
        return max(self.tau(t) ** 2 - ratio * ratio * self.tau(prev) ** 2, 0.0)

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(1 - tau, tau): integer timesteps map to tau = (t + 1) / num_steps; floats are tau itself."""
        _check_batch_t(t, like)
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"t must be integer timesteps or float times in [0, 1], got dtype {t.dtype}")
        tau = t.to(device=like.device, dtype=like.dtype)
        if not t.dtype.is_floating_point:
            tau = (tau + 1) / self._num_steps
        view = (-1,) + (1,) * (like.ndim - 1)
        tau = tau.view(view)
        return 1 - tau, tau

    def to_config(self) -> dict[str, Any]:
        return {"name": "flow_linear", "num_steps": self._num_steps}

    def to(self, device: torch.device | str) -> FlowPath:
        return self  # no tables

    def __repr__(self) -> str:
        return f"FlowPath(linear, num_steps={self._num_steps})"


def _diffusion(schedule: str, num_steps: int) -> ForwardProcess:
    from diffusion_rl.diffusion.schedules import NoiseSchedule  # schedules imports this module

    return NoiseSchedule.from_name(schedule, num_steps)


PROCESSES: dict[str, Callable[[str, int], ForwardProcess]] = {
    "diffusion": _diffusion,
    "flow": lambda schedule, num_steps: FlowPath(num_steps),
}
"""``process`` name -> builder(schedule name, num_steps); ``schedule`` only matters for ``"diffusion"``."""


def make_process(process: str, schedule: str, num_steps: int) -> ForwardProcess:
    """The forward process an algorithm trains and samples with: ``process="diffusion"`` (the noise schedule
    ``schedule``) or ``process="flow"`` (the linear flow path; ``schedule`` is not used)."""
    if process not in PROCESSES:
        raise ValueError(f"process: unknown {process!r}; expected one of {sorted(PROCESSES)}")
    return PROCESSES[process](schedule, num_steps)


def process_from_config(config: dict[str, Any]) -> ForwardProcess:
    """Inverse of ``to_config`` for every process (a flow path or any noise schedule)."""
    if isinstance(config, dict) and config.get("name") == "flow_linear":
        return FlowPath(int(config["num_steps"]))
    from diffusion_rl.diffusion.schedules import NoiseSchedule

    return NoiseSchedule.from_config(config)
