"""Constraints applied to the sample after every denoising step (and to the initial noise).

A constraint is an object with ``bind(shape, device, dtype) -> callable(x) -> x``: ``bind`` validates it against
the sample shape and casts its tensors once per ``sample()`` call, so the inner loop does no conversions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["Constraint", "Inpaint", "bind_constraints"]


class Constraint(Protocol):
    def bind(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
        ...


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return tuple(torch.broadcast_shapes(shape, target)) == tuple(target)
    except RuntimeError:
        return False


class Inpaint:
    """Overwrite the entries of x where ``mask`` is True with ``values``: x = where(mask, values, x).

    ``mask`` (bool) and ``values`` must each broadcast to the sample shape, e.g. for a trajectory [B, H, D] the mask
    [1, H, D] with True at [0, 0, state dims] and values [B, H, D] (or [B, 1, D]) carrying the current states.
    Entries of ``values`` outside the mask are ignored. Since it runs after the last step, the output equals
    ``values`` exactly at masked entries.
    """

    def __init__(self, mask: Tensor, values: Tensor | float) -> None:
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise ValueError(f"Inpaint mask must be a bool tensor, got dtype {mask.dtype}")
        self.mask = mask
        self.values = torch.as_tensor(values)

    def bind(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
        """Check that mask and values broadcast to ``shape`` and return the in-loop overwrite function."""
        shape = tuple(shape)
        for what, t in (("mask", self.mask), ("values", self.values)):
            if not _broadcasts_to(tuple(t.shape), shape):
                raise ValueError(
                    f"Inpaint {what} of shape {tuple(t.shape)} does not broadcast to the sample shape {shape}; "
                    f"expected a shape broadcastable to {shape} (each dim equal or 1, at most {len(shape)} dims)"
                )
        mask = self.mask.to(device)
        values = self.values.to(device=device, dtype=dtype)

        def apply(x: Tensor) -> Tensor:
            return torch.where(mask, values, x)

        return apply


def bind_constraints(
    constraints: Constraint | Sequence[Constraint] | None,
    shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> Callable[[Tensor], Tensor]:
    """One function applying all constraints in order (identity when there are none)."""
    if constraints is None:
        items: list[Constraint] = []
    elif hasattr(constraints, "bind"):
        items = [constraints]  # type: ignore[list-item]
    else:
        items = list(constraints)  # type: ignore[arg-type]
    for c in items:
        if not hasattr(c, "bind"):
            raise ValueError(f"constraints must be objects with a bind(shape, device, dtype) method, got {c!r}")
    bound = [c.bind(tuple(shape), device, dtype) for c in items]

    def apply_all(x: Tensor) -> Tensor:
        for f in bound:
            x = f(x)
        return x

    return apply_all
