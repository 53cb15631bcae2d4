"""What counts as a number in a setting: ints and reals of Python, numpy and the like, but never a bool (True is an
``int`` to Python, and a flag given where a count or a weight belongs is a mistake). Imported by every layer."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["is_integer", "is_real"]


def is_integer(value: Any) -> bool:
    """An integer (``int``, ``np.int64``...) that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """A real number (``int``, ``float``, ``np.float32``...) that is not a bool; NaN and inf included."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
