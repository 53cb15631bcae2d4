"""Noise schedules: the betas of the forward process and the coefficients derived from them.

All tables are float64 so that samplers can precompute their per-step coefficients exactly and cast them once to
the sampling dtype. Timesteps are integers ``0..num_steps-1``; timestep 0 is the least noisy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffusion_rl.diffusion.process import ForwardProcess, check_num_steps

__all__ = ["SCHEDULES", "NoiseSchedule"]


def _alpha_bar_betas(num_steps: int, s: float, max_beta: float) -> Tensor:
    """Betas that discretize alpha_bar(u) = cos((u + s) / (1 + s) * pi / 2)^2 on u = i / num_steps (Nichol &
    Dhariwal 2021), each capped at ``max_beta``. The normalization alpha_bar(0) cancels in the ratios."""
    u = torch.arange(num_steps + 1, dtype=torch.float64, device="cpu") / num_steps
    alpha_bar = torch.cos((u + s) / (1.0 + s) * (math.pi / 2.0)) ** 2
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(min=0.0, max=max_beta)


class NoiseSchedule(ForwardProcess):
    """The forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), t = 0..num_steps-1.

    Build it with ``linear``, ``cosine``, ``squaredcos_cap_v2``, ``from_betas`` or ``from_name``. The tables are
    float64 tensors on ``self.device``; ``to(device)`` moves them in place (like a module) and returns ``self``.
    The schedule is deliberately not an ``nn.Module``: a model's ``.to(dtype)`` or ``.half()`` must never round it.
    """

    kind = "diffusion"
    predictions = ("epsilon", "sample", "v_prediction")
    default_prediction = "epsilon"

    def __init__(self, betas: Tensor, *, config: dict[str, Any] | None = None) -> None:
        # built where the betas are (host for the builders), never on the default device: a model is built under
        # torch.device("meta") to check its sizes, and the tables must stay real there
        if not isinstance(betas, Tensor):
            betas = torch.tensor(betas, device="cpu", dtype=torch.float64)  # a list straight to float64, not via float32
        betas = betas.detach().to(dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a 1-D tensor with at least one entry, got shape {tuple(betas.shape)}")
        if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas > 1).any():
            raise ValueError("betas must be finite and lie in (0, 1]")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self._alpha_bar_host: list[float] = self.alphas_cumprod.tolist()  # host copy: planning never syncs
        self._config = dict(config) if config is not None else {"name": "betas", "betas": betas.tolist()}
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    # ----------------------------------------------------------------------------------------------- builders
    @classmethod
    def linear(cls, num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> NoiseSchedule:
        """Betas evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020; diffusers' "linear")."""
        check_num_steps(num_steps)
        num_steps = int(num_steps)  # a numpy integer would not survive the config JSON
        if not 0.0 < beta_start <= beta_end <= 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end <= 1, got beta_start={beta_start}, beta_end={beta_end}")
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64, device="cpu")
        cfg = {"name": "linear", "num_steps": num_steps, "beta_start": beta_start, "beta_end": beta_end}
        return cls(betas, config=cfg)

    @classmethod
    def cosine(cls, num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """Cosine schedule of Nichol & Dhariwal (2021), as Diffuser and Decision Diffuser use it."""
        check_num_steps(num_steps)
        num_steps = int(num_steps)  # a numpy integer would not survive the config JSON
        if not (s >= 0.0 and 0.0 < max_beta <= 1.0):
            raise ValueError(f"need s >= 0 and 0 < max_beta <= 1, got s={s}, max_beta={max_beta}")
        cfg = {"name": "cosine", "num_steps": num_steps, "s": s, "max_beta": max_beta}
        return cls(_alpha_bar_betas(num_steps, s, max_beta), config=cfg)

    @classmethod
    def squaredcos_cap_v2(cls, num_steps: int) -> NoiseSchedule:
        """diffusers' "squaredcos_cap_v2" (what Diffusion Policy uses): the cosine schedule with s=0.008 and betas
        capped at 0.999, so it equals ``cosine(num_steps)`` up to float rounding."""
        check_num_steps(num_steps)
        num_steps = int(num_steps)  # a numpy integer would not survive the config JSON
        return cls(_alpha_bar_betas(num_steps, 0.008, 0.999), config={"name": "squaredcos_cap_v2", "num_steps": num_steps})

    @classmethod
    def from_betas(cls, betas: Tensor | list[float]) -> NoiseSchedule:
        """A schedule from explicit betas (e.g. those of a checkpoint trained elsewhere)."""
        return cls(betas if isinstance(betas, Tensor) else torch.tensor(betas, dtype=torch.float64, device="cpu"))

    @classmethod
    def from_name(cls, name: str, num_steps: int, **kwargs: Any) -> NoiseSchedule:
        """A schedule by registry name: one of ``SCHEDULES`` ("linear", "cosine", "squaredcos_cap_v2")."""
        if name not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {name!r}; expected one of {sorted(SCHEDULES)}")
        return SCHEDULES[name](num_steps, **kwargs)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NoiseSchedule:
        """Inverse of ``to_config`` (for artifacts saved as JSON)."""
        cfg = dict(config)
        name = cfg.pop("name", None)
        if name == "betas":
            return cls.from_betas(cfg["betas"])
        if name is None:
            raise ValueError(f"schedule config needs a 'name' (one of {sorted(SCHEDULES) + ['betas']}), got {config}")
        return cls.from_name(name, **cfg)

    def to_config(self) -> dict[str, Any]:
        """A JSON-serializable description that ``from_config`` rebuilds exactly."""
        return dict(self._config)

    # ----------------------------------------------------------------------------------------------- tables
    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """Move the float64 tables to ``device`` in place; returns ``self``."""
        self.betas = self.betas.to(device)
        self.alphas = self.alphas.to(device)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    def check_prediction(self, prediction: str) -> None:
        """As the base class; also refuses ``epsilon`` where the last step has no signal left (a beta of 1,
        alpha_bar = 0: zero terminal SNR), since x0 = (x - s eps) / a cannot be recovered there."""
        super().check_prediction(prediction)
        if prediction == "epsilon" and self._alpha_bar_host[-1] <= 0.0:
            raise ValueError("prediction 'epsilon' needs signal at every timestep, but this schedule's last beta is 1 "
                             "(alpha_bar = 0: zero terminal SNR); use prediction='v_prediction' or 'sample', or "
                             "max_beta < 1")

    def alpha_bar(self, t: int) -> float:
        """alpha_bar_t as a Python float (for host-side planning of sampler tables; -1 means 'clean', 1.0)."""
        if t < 0:
            return 1.0
        self._check_t(t)
        return self._alpha_bar_host[t]

    def sigma2(self, t: int) -> float:
        """1 - alpha_bar_t (0.0 for the clean sample, t = -1)."""
        return 1.0 - self.alpha_bar(t)

    def transition_variance(self, t: int, prev: int) -> float:
        """1 - alpha_bar_t / alpha_bar_prev: the variance of q(x_t | x_prev) (beta_t for a single step)."""
        return 1.0 - self.alpha_bar(t) / self.alpha_bar(prev)

    def _sqrt_tables(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (torch.device(device), dtype)
        if key not in self._cache:
            ac = self.alphas_cumprod.detach().cpu()
            self._cache[key] = (ac.sqrt().to(device=device, dtype=dtype), (1.0 - ac).sqrt().to(device=device, dtype=dtype))
        return self._cache[key]

    def coefficients(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for integer timesteps ``t`` [B], shaped [B, 1, ...] to
        broadcast against ``like`` and in its dtype and device. Tables are cached per device (no host sync)."""
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(f"t must have shape [{like.shape[0]}] (one timestep per batch row), got {tuple(t.shape)}")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"t must be an integer tensor, got dtype {t.dtype}")
        sa, sb = self._sqrt_tables(like.device, like.dtype)
        t = t.to(like.device)
        view = (-1,) + (1,) * (like.ndim - 1)
        return sa[t].view(view), sb[t].view(view)

    def __repr__(self) -> str:
        return f"NoiseSchedule({self._config.get('name')}, num_steps={self.num_steps})"


SCHEDULES: dict[str, Callable[..., NoiseSchedule]] = {
    "linear": NoiseSchedule.linear,
    "cosine": NoiseSchedule.cosine,
    "squaredcos_cap_v2": NoiseSchedule.squaredcos_cap_v2,
}
