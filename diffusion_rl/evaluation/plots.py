"""A PNG of a predicted plan against the trajectory that was executed (matplotlib's Agg canvas, no pyplot)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffusion_rl.evaluation._files import write_atomic

__all__ = ["plot_plan"]


def _as_2d(name: str, value: np.ndarray) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an array of shape [steps, state_dim], got shape {arr.shape}")
    return arr


def plot_plan(
    planned: np.ndarray,
    executed: np.ndarray,
    path: str | os.PathLike,
    *,
    dims: Sequence[int] | None = None,
    title: str | None = None,
    xy: bool = False,
    dim_names: Sequence[str] | None = None,
    labels: tuple[str, str] = ("planned", "executed"),
) -> Path:
    """Plot ``planned [H, S]`` and ``executed [T, S]`` per state dimension; returns the PNG's path.

    ``dims`` picks the state dimensions (default: all; ``(0, 1)`` when ``xy``). ``xy=True`` adds a panel of
    ``dims[0]`` against ``dims[1]`` (the maze2d position), which needs exactly two dims. ``labels`` name the
    two curves. The file is written under a temporary name and renamed into place.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    planned = _as_2d("planned", planned)
    executed = _as_2d("executed", executed)
    if planned.shape[1] != executed.shape[1]:
        raise ValueError(
            f"planned and executed must share the state dimension, got {planned.shape[1]} and {executed.shape[1]}"
        )
    state_dim = planned.shape[1]
    if dims is None:
        dims = (0, 1) if xy else tuple(range(state_dim))
    dims = tuple(int(d) for d in dims)
    if not dims or any(not 0 <= d < state_dim for d in dims):
        raise ValueError(f"dims: expected indices in [0, {state_dim}), got {dims}")
    if xy and len(dims) != 2:
        raise ValueError(f"xy=True plots dims[0] against dims[1]: expected exactly 2 dims, got {dims}")
    if dim_names is not None and len(dim_names) != state_dim:
        raise ValueError(f"dim_names: expected {state_dim} names (one per state dim), got {len(dim_names)}")
    names = list(dim_names) if dim_names is not None else [f"state[{d}]" for d in range(state_dim)]

    panels = len(dims) + (1 if xy else 0)
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, d in zip(axes, dims):
        ax.plot(np.arange(len(planned)), planned[:, d], "-", color="tab:blue", label=labels[0], alpha=0.85)
        ax.plot(np.arange(len(executed)), executed[:, d], "--", color="tab:orange", label=labels[1])
        ax.set_title(names[d])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    if xy:
        ax = axes[len(dims)]
        dx, dy = dims
        ax.plot(planned[:, dx], planned[:, dy], "-", color="tab:blue", label=labels[0])
        ax.plot(executed[:, dx], executed[:, dy], "--", color="tab:orange", label=labels[1])
        ax.scatter(planned[0, dx], planned[0, dy], color="tab:green", zorder=3, label="start")
        ax.scatter(planned[-1, dx], planned[-1, dy], color="tab:red", marker="*", s=120, zorder=3,
                   label="plan end")
        ax.set_xlabel(names[dx])
        ax.set_ylabel(names[dy])
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title("x-y")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    for ax in axes[panels:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    return write_atomic(path, lambda f: fig.savefig(f, format="png"))
