"""What the denoiser predicts: noise ("epsilon"), the clean sample ("sample"), diffusion's velocity
("v_prediction") or flow matching's velocity ("velocity").

Each prediction type converts between the model output and the pair (x0, eps) given the step's coefficients
(a, s) of x_t = a x0 + s eps. ``v_prediction`` is Salimans & Ho's v = a eps - s x0, defined for variance-preserving
processes (a^2 + s^2 = 1); ``velocity`` is dx_t / dtau = eps - x0 of the linear flow path (a = 1 - tau, s = tau,
a + s = 1). Which types a process defines is its ``predictions``. Coefficients may be scalars or tensors that
broadcast against x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

__all__ = ["PREDICTIONS", "Prediction", "get_prediction"]


@dataclass(frozen=True)
class Prediction:
    """Conversions for one prediction type.

    ``to_x0_eps(out, x_t, a, s)`` -> (x0, eps) recovered from the model output;
    ``target(x0, eps, a, s)`` -> the regression target of the training loss.
    """

    name: str
    to_x0_eps: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
    target: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def _eps_to_x0_eps(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    return (x_t - s * out) / a, out


def _sample_to_x0_eps(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    return out, (x_t - a * out) / s


def _v_to_x0_eps(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    return a * x_t - s * out, a * out + s * x_t


def _velocity_to_x0_eps(out: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    return x_t - s * out, x_t + a * out


PREDICTIONS: dict[str, Prediction] = {
    "epsilon": Prediction("epsilon", _eps_to_x0_eps, lambda x0, eps, a, s: eps),
    "sample": Prediction("sample", _sample_to_x0_eps, lambda x0, eps, a, s: x0),
    "v_prediction": Prediction("v_prediction", _v_to_x0_eps, lambda x0, eps, a, s: a * eps - s * x0),
    "velocity": Prediction("velocity", _velocity_to_x0_eps, lambda x0, eps, a, s: eps - x0),
}


def get_prediction(name: str) -> Prediction:
    """The ``Prediction`` registered under ``name``; a ValueError lists the allowed names otherwise."""
    if name not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {name!r}; expected one of {sorted(PREDICTIONS)}")
    return PREDICTIONS[name]
