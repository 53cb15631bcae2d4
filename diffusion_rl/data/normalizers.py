"""Per-dimension normalizers that work on numpy arrays and torch tensors and serialize to plain arrays.

- ``GaussianNormalizer``: ``(x - mean) / std``.
- ``MinMaxNormalizer``: maps the data range of each dimension to ``[low, high]`` (default [-1, 1]).
- ``CDFNormalizer``: D4RL/Diffuser's empirical-CDF normalizer, ``2 * F(x) - 1`` with ``F`` the
  piecewise-linear empirical CDF of each dimension (inputs clipped to the data range, inverse clipped to the
  CDF's range). ``max_knots`` thins the CDF to that many of its points so the statistics an artifact carries
  stay small; ``max_knots=None`` keeps every distinct value, exactly as Diffuser does.
- ``QuantileNormalizer``: the empirical CDF ``F(x)`` in ``[0, 1]`` (a value's quantile level in the data); the
  Decision Diffuser's return labels.

Zero-variance dimensions are guarded: they map to the centre of the output range (CDF: ``x - c``) and back; the
CDF normalizers also treat a dimension whose spread is below float32 resolution as constant.
``state_dict()`` gives ``{"name": str, <stat>: np.ndarray}`` (safetensors/json friendly);
``normalizer_from_state`` rebuilds the normalizer. Inputs have the normalized dimension last: ``[..., D]``.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch

__all__ = [
    "NORMALIZERS",
    "CDFNormalizer",
    "GaussianNormalizer",
    "MinMaxNormalizer",
    "Normalizer",
    "QuantileNormalizer",
    "make_normalizer",
    "normalizer_from_state",
]

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)
_EPS = 1e-6
_F32_EPS = float(np.finfo(np.float32).eps)


class Normalizer:
    """Base class; subclasses define ``_fit``, ``_forward``/``_inverse`` and ``_stat_names``."""

    name: ClassVar[str] = ""
    _stat_names: ClassVar[tuple[str, ...]] = ()
    _int_stats: ClassVar[tuple[str, ...]] = ()
    _positive_stats: ClassVar[tuple[str, ...]] = ()
    """Statistics that scale (a zero or negative one would divide by zero or flip signs)."""

    def __init__(self) -> None:
        self.stats: dict[str, np.ndarray] = {}
        self._cache: dict[tuple[Any, Any], dict[str, torch.Tensor]] = {}

    # --- fitting and serialization -------------------------------------------------------------------------
    def fit(self, data: np.ndarray | torch.Tensor, *, key: str | None = None) -> Normalizer:
        """Fit the per-dimension statistics on ``data`` of shape ``[N, D]`` (or ``[N]`` for one dimension).

        ``key`` (e.g. ``"observations"``) only names the data in error messages."""
        x = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        what = f"{key!r}" if key is not None else "data"
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(f"cannot fit a {self.name} normalizer on {what}: expected [N, D] with N > 0, "
                             f"got shape {x.shape}")
        x = x.astype(np.float64).reshape(x.shape[0], -1) if x.ndim != 1 else x.astype(np.float64)[:, None]
        finite = np.isfinite(x)
        if not finite.all():
            row, dim = (int(i[0]) for i in np.nonzero(~finite))
            raise ValueError(
                f"cannot fit a {self.name} normalizer on {what}: it holds NaN or infinite values, first "
                f"{x[row, dim]} at row {row}, dimension {dim}"
            )
        self.stats = self._fit(x)
        self._cache.clear()
        return self

    @property
    def clip_range(self) -> float | None:
        """Bound ``c`` such that normalized data lie in ``[-c, c]`` (None: unbounded, e.g. Gaussian).

        Samplers clip their x0 estimates to this range (``clip_sample="auto"``); clipping an unbounded
        normalization would cut off real states."""
        return None

    @property
    def dim(self) -> int:
        """Number of normalized dimensions."""
        self._require_fit()
        return int(next(iter(self.stats.values())).shape[0])

    def state_dict(self) -> dict[str, np.ndarray | str]:
        """Statistics as plain arrays plus the normalizer's name."""
        self._require_fit()
        return {"name": self.name, **{k: v.copy() for k, v in self.stats.items()}, **self._options()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Normalizer:
        """Rebuild from ``state_dict()`` output."""
        missing = [k for k in cls._stat_names if k not in state]
        if missing:
            raise ValueError(
                f"{cls.name} normalizer state lacks {missing}; expected keys {list(cls._stat_names)}"
            )
        obj = cls(**cls._options_from_state(state))
        obj.stats = {k: np.asarray(state[k]) for k in cls._stat_names}
        try:
            obj.stats = {
                k: v.astype(np.int64 if k in cls._int_stats else np.float64) for k, v in obj.stats.items()
            }
        except (TypeError, ValueError) as err:
            raise ValueError(f"{cls.name} normalizer state: statistics must be numeric arrays ({err})") from None
        for k, v in obj.stats.items():
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{cls.name} normalizer statistic {k!r} holds NaN or infinite values")
            if k in cls._positive_stats and not np.all(v > 0):
                raise ValueError(f"{cls.name} normalizer statistic {k!r} must be > 0 everywhere, got min {v.min()}")
        cls._check_shapes(obj.stats)
        return obj

    @classmethod
    def _check_shapes(cls, stats: dict[str, np.ndarray]) -> None:
        """Refuse statistics of different widths (found otherwise at the first use, as a numpy broadcast error
        that names nothing): here every statistic is one number per dimension, ``[D]`` with D >= 1."""
        shapes = {k: v.shape for k, v in stats.items()}
        first = next(iter(shapes.values()))
        if len(first) != 1 or first[0] < 1 or any(shape != first for shape in shapes.values()):
            raise ValueError(f"{cls.name} normalizer state: expected one number per dimension in every statistic "
                             f"(shape [D], the same D), got shapes {shapes}")

    def _options(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def _options_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        return {}

    # --- application ----------------------------------------------------------------------------------------
    def normalize(self, x: ArrayLike) -> ArrayLike:
        """Normalize ``x`` of shape ``[..., D]``; returns the same type, dtype and device."""
        return self._apply(x, inverse=False)

    def unnormalize(self, x: ArrayLike) -> ArrayLike:
        """Invert ``normalize``."""
        return self._apply(x, inverse=True)

    def far(self, x: ArrayLike, x_n: ArrayLike, limit: float) -> ArrayLike:
        """Which entries of raw ``x`` (``x_n`` = ``normalize(x)``) lie far from the fitted data: beyond ``±limit``
        once normalized. Normalizers that saturate (the empirical CDF maps everything into [-1, 1]) measure the raw
        value instead."""
        return x_n.abs() > limit if isinstance(x_n, torch.Tensor) else np.abs(x_n) > limit

    def _apply(self, x: ArrayLike, *, inverse: bool) -> ArrayLike:
        self._require_fit()
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"{self.name} normalizer expects shape [..., {self.dim}], got {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
            stats = self._torch_stats(x.device, dtype)
            fn = self._inverse_torch if inverse else self._forward_torch
            return fn(x.to(dtype), stats).to(x.dtype if x.is_floating_point() else dtype)
        x = np.asarray(x)
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        stats = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in self.stats.items()}
        fn = self._inverse_numpy if inverse else self._forward_numpy
        return fn(x.astype(dtype, copy=False), stats).astype(dtype, copy=False)

    def _torch_stats(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = {
                k: torch.as_tensor(v, device=device, dtype=dtype if v.dtype.kind == "f" else None)
                for k, v in self.stats.items()
            }
        return self._cache[key]

    def _require_fit(self) -> None:
        if not self.stats:
            raise ValueError(
                f"{type(self).__name__} is not fitted; call .fit(data) or build it with "
                "normalizer_from_state(state)"
            )

    # Arithmetic normalizers share one implementation for numpy and torch.
    def _forward_numpy(self, x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
        return self._forward(x, s)

    def _inverse_numpy(self, x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
        return self._inverse(x, s)

    def _forward_torch(self, x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._forward(x, s)

    def _inverse_torch(self, x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._inverse(x, s)

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _forward(self, x: Any, s: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _inverse(self, x: Any, s: dict[str, Any]) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim if self.stats else '?'})"


class GaussianNormalizer(Normalizer):
    """``(x - mean) / std`` per dimension (std of a constant dimension taken as 1)."""

    name = "gaussian"
    _stat_names = ("mean", "std")
    _positive_stats = ("std",)

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        std = x.std(axis=0)
        return {"mean": x.mean(axis=0), "std": np.where(std < _EPS, 1.0, std)}

    def _forward(self, x: Any, s: dict[str, Any]) -> Any:
        return (x - s["mean"]) / s["std"]

    def _inverse(self, x: Any, s: dict[str, Any]) -> Any:
        return x * s["std"] + s["mean"]


class MinMaxNormalizer(Normalizer):
    """Maps ``[min, max]`` of each dimension to ``[low, high]`` (a constant dimension to the middle)."""

    name = "minmax"
    _stat_names = ("center", "half_range")
    _positive_stats = ("half_range",)

    def __init__(self, low: float = -1.0, high: float = 1.0) -> None:
        super().__init__()
        if not high > low:
            raise ValueError(f"MinMaxNormalizer needs high > low, got low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    @property
    def clip_range(self) -> float | None:
        return max(abs(self.low), abs(self.high))

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        lo, hi = x.min(axis=0), x.max(axis=0)
        half = (hi - lo) / 2.0
        return {"center": (hi + lo) / 2.0, "half_range": np.where(half < _EPS, 1.0, half)}

    def _forward(self, x: Any, s: dict[str, Any]) -> Any:
        mid, half = (self.high + self.low) / 2.0, (self.high - self.low) / 2.0
        return (x - s["center"]) / s["half_range"] * half + mid

    def _inverse(self, x: Any, s: dict[str, Any]) -> Any:
        mid, half = (self.high + self.low) / 2.0, (self.high - self.low) / 2.0
        return (x - mid) / half * s["half_range"] + s["center"]

    def _options(self) -> dict[str, np.ndarray]:
        return {"low": np.asarray(self.low), "high": np.asarray(self.high)}

    @classmethod
    def _options_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        return {"low": float(state.get("low", -1.0)), "high": float(state.get("high", 1.0))}


def _interp_torch(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``np.interp`` for a 1-D non-decreasing ``xp`` (inputs already clipped into its range).

    Knots distinct in float64 can coincide once cast to float32 (values equal up to rounding noise, CDF levels
    of huge datasets): where ``x1 == x0`` the result is ``y1``, as ``np.interp`` gives, never ``0 / 0``."""
    idx = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, xp.numel() - 1)
    x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    gap = x1 - x0
    t = torch.where(gap > 0, (x - x0) / torch.where(gap > 0, gap, torch.ones_like(gap)), torch.ones_like(gap))
    return y0 + t * (y1 - y0)


class CDFNormalizer(Normalizer):
    """D4RL/Diffuser's empirical-CDF normalizer to [-1, 1] (see the module docstring)."""

    name = "cdf"
    _stat_names = ("quantiles", "cumprob", "counts")
    _int_stats = ("counts",)
    clip_range = 1.0

    def __init__(self, max_knots: int | None = 1024) -> None:
        super().__init__()
        if max_knots is not None and max_knots < 2:
            raise ValueError(f"max_knots must be >= 2 or None, got {max_knots}")
        self.max_knots = max_knots

    #: how a value's tied points count in its level: 1 = all of them (F(x) = P(X <= x)), 0.5 = half (mid-rank)
    _tied_share = 1.0

    def _fit(self, x: np.ndarray) -> dict[str, np.ndarray]:
        knots = []
        for column in x.T:
            low, high = column.min(), column.max()
            if high - low <= _F32_EPS * max(abs(low), abs(high)):
                # a spread below float32 resolution (a unit quaternion's w, 1.0 up to rounding noise) is no
                # signal: spread over [-1, 1] it would map float32 copies of the same states to -1 or 1
                knots.append((np.array([np.median(column)]), np.array([self._tied_share])))
                continue
            values, counts = np.unique(column, return_counts=True)
            cumprob = (np.cumsum(counts) - (1.0 - self._tied_share) * counts) / column.size
            if self.max_knots is not None and values.size > self.max_knots:
                # knots evenly spaced in probability, not in distinct values: a value many points share (a jump
                # of the CDF) is always kept, where spacing by values could skip it and misplace half the data
                levels = np.linspace(cumprob[0], cumprob[-1], self.max_knots)
                keep = np.unique(np.searchsorted(cumprob, levels, side="left").clip(0, values.size - 1))
                values, cumprob = values[keep], cumprob[keep]
            knots.append((values, cumprob))
        width = max(v.size for v, _ in knots)
        quantiles = np.stack([np.pad(v, (0, width - v.size), mode="edge") for v, _ in knots])
        cumprob = np.stack([np.pad(p, (0, width - p.size), mode="edge") for _, p in knots])
        return {"quantiles": quantiles, "cumprob": cumprob, "counts": np.array([v.size for v, _ in knots])}

    def _options(self) -> dict[str, np.ndarray]:
        return {"max_knots": np.asarray(-1 if self.max_knots is None else self.max_knots)}

    @classmethod
    def _check_shapes(cls, stats: dict[str, np.ndarray]) -> None:
        """Knots ``quantiles`` and ``cumprob`` of one shape ``[D, K]``, and ``counts [D]`` of used knots in [1, K]."""
        q, p, n = stats["quantiles"], stats["cumprob"], stats["counts"]
        if q.ndim != 2 or q.shape != p.shape or min(q.shape) < 1 or n.shape != q.shape[:1] \
                or not np.all((n >= 1) & (n <= q.shape[1])):
            raise ValueError(f"{cls.name} normalizer state: expected quantiles and cumprob of one shape [D, K] and "
                             f"counts [D] in [1, K]; got shapes {q.shape}, {p.shape} and {n.shape}")

    @classmethod
    def _options_from_state(cls, state: dict[str, Any]) -> dict[str, Any]:
        k = int(state.get("max_knots", -1))
        return {"max_knots": None if k < 0 else k}

    def far(self, x: ArrayLike, x_n: ArrayLike, limit: float) -> ArrayLike:
        """Beyond the fitted data's range by more than min-max normalization's ``±limit`` would allow, i.e. by more
        than ``(limit - 1) / 2`` ranges (a constant dimension: by more than ``limit``); the normalized value says
        nothing there, being clipped into [-1, 1]."""
        self._require_fit()
        key = ("far", float(limit), str(x.device) if isinstance(x, torch.Tensor) else "numpy",
               x.dtype if isinstance(x, torch.Tensor) else None)
        if key not in self._cache:  # once per limit and device: act() checks every observation
            counts = self.stats["counts"]
            rows = np.arange(counts.size)
            low, high = self.stats["quantiles"][rows, 0], self.stats["quantiles"][rows, counts - 1]
            span = high - low
            margin = np.where(span > 0, (limit - 1.0) / 2.0 * span, limit)
            bounds = (low - margin, high + margin)
            if isinstance(x, torch.Tensor):
                bounds = tuple(torch.as_tensor(b, device=x.device, dtype=x.dtype) for b in bounds)
            self._cache[key] = bounds
        low, high = self._cache[key]
        return (x < low) | (x > high)

    def _columns(self, s: dict[str, Any]):
        for d, k in enumerate(s["counts"].tolist()):
            yield d, s["quantiles"][d, :k], s["cumprob"][d, :k]

    def _forward_numpy(self, x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
        out = np.empty_like(x)
        for d, q, p in self._columns(s):
            col = x[..., d]
            out[..., d] = (
                col - q[0] if q.size == 1 else 2.0 * np.interp(np.clip(col, q[0], q[-1]), q, p) - 1.0
            )
        return out

    def _inverse_numpy(self, x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
        out = np.empty_like(x)
        for d, q, p in self._columns(s):
            col = x[..., d]
            out[..., d] = (
                col + q[0] if q.size == 1 else np.interp(np.clip((col + 1.0) / 2.0, p[0], p[-1]), p, q)
            )
        return out

    def _forward_torch(self, x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
        cols = []
        for d, q, p in self._columns(s):
            col = x[..., d]
            cols.append(
                col - q[0] if q.numel() == 1 else 2.0 * _interp_torch(col.clamp(q[0], q[-1]), q, p) - 1.0
            )
        return torch.stack(cols, dim=-1)

    def _inverse_torch(self, x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
        cols = []
        for d, q, p in self._columns(s):
            col = x[..., d]
            cols.append(
                col + q[0] if q.numel() == 1 else _interp_torch(((col + 1.0) / 2.0).clamp(p[0], p[-1]), p, q)
            )
        return torch.stack(cols, dim=-1)


class QuantileNormalizer(CDFNormalizer):
    """The empirical CDF itself, ``F(x)`` in [0, 1]: a value's quantile level among the fitted data.

    Used for return labels: a label of 0.9 is "a return higher than 90% of the data's", whatever the dataset's
    returns scale or shape, so a target return means the same on every dataset. Tied values count half (mid-rank):
    a value shared by the lowest 13% of the data is labelled 0.065, not 0.13."""

    name = "quantile"
    _tied_share = 0.5

    def _forward_numpy(self, x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
        return (super()._forward_numpy(x, s) + 1.0) / 2.0

    def _inverse_numpy(self, x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
        return super()._inverse_numpy(2.0 * x - 1.0, s)

    def _forward_torch(self, x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
        return (super()._forward_torch(x, s) + 1.0) / 2.0

    def _inverse_torch(self, x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
        return super()._inverse_torch(2.0 * x - 1.0, s)


NORMALIZERS: dict[str, type[Normalizer]] = {
    GaussianNormalizer.name: GaussianNormalizer,
    MinMaxNormalizer.name: MinMaxNormalizer,
    CDFNormalizer.name: CDFNormalizer,
    QuantileNormalizer.name: QuantileNormalizer,
}


def make_normalizer(name: str, **options: Any) -> Normalizer:
    """An unfitted normalizer by registry name (``gaussian``, ``minmax``, ``cdf``); call ``.fit(data)``."""
    if name not in NORMALIZERS:
        raise ValueError(f"unknown normalizer {name!r}; expected one of {sorted(NORMALIZERS)}")
    return NORMALIZERS[name](**options)


def normalizer_from_state(state: dict[str, Any]) -> Normalizer:
    """Rebuild a fitted normalizer from its ``state_dict()`` (numpy arrays or tensors)."""
    name = state.get("name")
    if isinstance(name, np.ndarray):
        name = str(name)
    if name not in NORMALIZERS:
        raise ValueError(f"normalizer state has name {name!r}; expected one of {sorted(NORMALIZERS)}")
    arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    return NORMALIZERS[name].from_state(arrays)
