"""Which training timesteps a few-step sampler visits, as diffusers' ``timestep_spacing`` defines them.

Spacings follow Lin et al. 2023, Table 2 ("Common diffusion noise schedules and sample steps are flawed"):
``leading`` (DDIM's default), ``trailing`` and ``linspace``. Lists are descending Python ints.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from diffusion_rl._numbers import is_integer

__all__ = ["TIMESTEP_SPACINGS", "check_steps", "spaced_timesteps"]


def _leading(num_train: int, n: int, offset: int) -> np.ndarray:
    ratio = num_train // n
    return (np.arange(0, n) * ratio).round()[::-1].astype(np.int64) + offset


def _linspace(num_train: int, n: int, offset: int) -> np.ndarray:
    return np.linspace(0, num_train - 1, n).round()[::-1].astype(np.int64)


def _trailing(num_train: int, n: int, offset: int) -> np.ndarray:
    ratio = num_train / n
    # np.arange with a float step can return one extra (last) element through rounding (e.g. 50 train steps,
    # 29 sampling steps); diffusers keeps it (a timestep of -1). Taking the first n entries drops exactly it.
    return (np.round(np.arange(num_train, 0, -ratio)).astype(np.int64) - 1)[:n]


TIMESTEP_SPACINGS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "leading": _leading,
    "linspace": _linspace,
    "trailing": _trailing,
}


def check_steps(steps: int, num_train: int) -> None:
    """ValueError unless 1 <= steps <= num_train."""
    if not is_integer(steps) or not 1 <= steps <= num_train:
        raise ValueError(f"steps must be an integer in [1, num_steps={num_train}], got {steps!r}")


def spaced_timesteps(num_train: int, steps: int, spacing: str, offset: int = 0, *, final_to_zero: bool = False) -> list[int]:
    """The descending timesteps of a ``steps``-step sampler over ``num_train`` training timesteps.

    ``final_to_zero=False`` is DDIMScheduler's rule (``steps`` points; the last step then jumps to the clean
    sample). ``final_to_zero=True`` is DPMSolverMultistepScheduler's rule for "leading" and "linspace": place
    ``steps + 1`` points and drop the last one (timestep 0), because its final step goes to sigma = 0 anyway;
    "trailing" is the same under both rules. Duplicates (possible only when steps is close to num_train under
    the DPM rule) are removed, keeping the order.
    """
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"unknown timestep_spacing {spacing!r}; expected one of {sorted(TIMESTEP_SPACINGS)}")
    check_steps(steps, num_train)
    if not is_integer(offset) or offset < 0:
        raise ValueError(f"steps_offset must be an integer >= 0, got {offset!r}")
    offset = int(offset)
    if offset and spacing != "leading":
        raise ValueError(f"steps_offset={offset} shifts 'leading' timesteps only; timestep_spacing={spacing!r} "
                         "ignores it (as diffusers does): leave it at 0")
    if final_to_zero and spacing != "trailing":
        ts = TIMESTEP_SPACINGS[spacing](num_train, steps + 1, offset)[:-1]
    else:
        ts = TIMESTEP_SPACINGS[spacing](num_train, steps, offset)
    out: list[int] = []
    for t in ts.tolist():
        if not 0 <= t < num_train:
            raise ValueError(
                f"timestep {t} out of range [0, {num_train - 1}] (steps_offset={offset} too large for steps={steps})"
            )
        if not out or t < out[-1]:
            out.append(int(t))
    # "leading" rounds the step down to num_train // steps: when steps does not divide num_train the chain starts
    # below the last timestep (DDIM 13 of 20 at t = 12, as diffusers does), and under the DPM rule with steps =
    # num_train (or DDIM's one step) at t = 0, where pure noise would be taken for an almost clean sample: refused
    if out[0] < (num_train - 1) / 2:
        raise ValueError(
            f"timestep_spacing={spacing!r} with steps={steps} of num_steps={num_train} starts the chain at t={out[0]}, "
            f"far from pure noise at t={num_train - 1}: use timestep_spacing='trailing' (it starts at t={num_train - 1})"
        )
    if spacing == "leading" and len(out) > 1 and num_train - 1 - out[0] > out[0] - out[1]:
        warnings.warn(
            f"timestep_spacing='leading' with steps={steps} of num_steps={num_train} starts the chain at t={out[0]}, "
            f"more than one stride ({out[0] - out[1]}) below pure noise at t={num_train - 1}: the first step takes "
            "pure noise for a partly clean sample. Use timestep_spacing='trailing' or a steps that divides num_steps",
            stacklevel=3,
        )
    return out
