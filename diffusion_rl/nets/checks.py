"""Static shape checks shared by every network's forward.

They compare shapes (known at trace time), never values, so they add no host syncs and no graph breaks under
``torch.compile``. A mismatch raises ``ValueError`` naming the expected and the given shape.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch


def check_sequence(x: torch.Tensor, feature_dim: int, name: str = "x") -> tuple[int, int]:
    """Check that ``x`` is ``[B, H, feature_dim]`` with ``H >= 1``; return ``(B, H)``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape [B, H, {feature_dim}], got {type(x).__name__}"
        )
    if x.ndim != 3 or x.shape[-1] != feature_dim or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape [B, H, {feature_dim}] with H >= 1, got {tuple(x.shape)}")
    return x.shape[0], x.shape[1]


def check_timesteps(t: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """Return timesteps as a ``[batch]`` tensor; a Python number or a 0-d tensor is broadcast to the batch."""
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(t, device=device)
    if t.ndim == 0:
        return t.reshape(1).expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must have shape [B] = [{batch}] (or be a scalar), got {tuple(t.shape)}")
    return t


def check_cond(cond: torch.Tensor, batch: int, cond_dim: int) -> None:
    """Check that a condition is ``[B, cond_dim]``."""
    if not isinstance(cond, torch.Tensor):
        raise ValueError(
            f"cond must be a torch.Tensor of shape [{batch}, {cond_dim}], got {type(cond).__name__}"
        )
    if cond.shape != (batch, cond_dim):
        raise ValueError(
            f"cond must have shape [B, cond_dim] = [{batch}, {cond_dim}], got {tuple(cond.shape)}"
        )


def check_drop_mask(drop_mask: torch.Tensor, batch: int, parts: int | None = None) -> None:
    """Check that a classifier-free-guidance drop mask is a bool tensor ``[B]`` (the whole condition), or, for a
    condition made of ``parts`` parts, ``[B]`` or ``[B, parts]`` (each part dropped on its own)."""
    if not isinstance(drop_mask, torch.Tensor) or drop_mask.dtype != torch.bool:
        got = drop_mask.dtype if isinstance(drop_mask, torch.Tensor) else type(drop_mask).__name__
        raise ValueError(f"drop_mask must be a bool tensor of shape [{batch}], got {got}")
    if drop_mask.shape != (batch,) and (parts is None or drop_mask.shape != (batch, parts)):
        shapes = f"[B] = [{batch}]" + (f" or [B, parts] = [{batch}, {parts}]" if parts is not None else "")
        raise ValueError(f"drop_mask must have shape {shapes}, got {tuple(drop_mask.shape)}")


def check_positive(name: str, value: int) -> None:
    """Constructor check: an integer size must be >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        hint = " (a numpy integer: pass int(...), the network's config is saved as JSON)" if (
            isinstance(value, numbers.Integral) and not isinstance(value, bool)) else ""
        raise ValueError(f"{name} must be a positive integer, got {value!r}{hint}")


def check_group_divisible(name: str, channels: int, n_groups: int) -> None:
    """Constructor check: GroupNorm needs every channel count to be a multiple of the group count."""
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise ValueError(f"n_groups must be a positive integer (GroupNorm groups), got {n_groups!r}")
    if channels % n_groups != 0:
        raise ValueError(f"{name}={channels} must be divisible by n_groups={n_groups} (GroupNorm)")


def check_dim_mults(dim_mults: Sequence[int], name: str = "dim_mults") -> tuple[int, ...]:
    """Constructor check: U-Net widths or width multipliers are a non-empty sequence of positive integers (numpy
    integers taken as ints; 2.5 is refused, not cut to 2)."""
    given = tuple(dim_mults)
    if not given or any(isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1 for m in given):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {list(given)}")
    return tuple(int(m) for m in given)
