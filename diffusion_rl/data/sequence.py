"""``SequenceDataset``: fixed-horizon windows over episodes, built on the device by index arithmetic.

Every step of every episode starts a window of ``horizon`` steps. A window never crosses an episode end: steps
past the end are padding that repeats the episode's last real step, and ``mask`` is 0 there (1 on real steps),
so a loss weighted by the mask never learns padding as data. With ``pad_to_horizon=False`` only windows that
fit inside their episode are used (no padding at all). ``pad_before=p`` adds windows that start up to p steps
before their episode, padded with its first step (mask 0): Diffusion Policy's observation history at an
episode's first steps.

A batch is a dict of tensors on ``device``:

- ``<key>`` ``[B, H, D]`` for every key in ``keys`` (e.g. ``observations``, ``actions``), normalized per
  dimension;
- ``mask`` ``[B, H]`` float, 1 = real step, 0 = padding;
- ``returns`` ``[B, 1]`` (``returns=True``): discounted return-to-go from the window's current step (its start, or
  the step after its ``pad_before`` history rows) to the episode end (Decision Diffuser), with
  ``terminal_penalty`` on the last reward of episodes that terminated, labelled in [0, 1] over the dataset's
  window starts by ``return_label``: ``"quantile"`` (the fraction of window starts with a lower return, ties
  counted half: 0.9 = "better than 90% of the data") or ``"minmax"`` (90% of the way from the worst to the best
  return-to-go). Neither needs a per-environment returns scale;
- ``values`` ``[B]`` (``values=True``): Diffuser's value targets, the ``value_discount``-discounted sum of
  rewards from the window start to the episode end with ``terminal_penalty`` added to the last reward of
  episodes that terminated, min-max normalized to [-1, 1] over the window starts (Diffuser's ``normed``
  values);
- ``timestep`` ``[B]`` int64: the window start's step index within its episode (negative for windows that start
  in ``pad_before`` padding).

``normalizers`` holds one fitted normalizer per key, plus ``returns``/``values`` when used; pass
``normalizers=`` (e.g. from a trained artifact) to reuse statistics instead of fitting them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from diffusion_rl.data.normalizers import (
    NORMALIZERS,
    MinMaxNormalizer,
    Normalizer,
    QuantileNormalizer,
    make_normalizer,
)
from diffusion_rl.data.returns import discounted_values
from diffusion_rl.data.store import EpisodeStore

__all__ = ["RETURN_LABELS", "SequenceDataset", "check_normalizer_spec", "window_starts"]

#: How return-to-go values become the Decision Diffuser's [0, 1] condition (see the module docstring).
RETURN_LABELS = {
    "minmax": lambda: MinMaxNormalizer(0.0, 1.0),
    "quantile": lambda: QuantileNormalizer(),
}


def check_normalizer_spec(spec: Any, keys: Sequence[str]) -> None:
    """``ValueError`` unless ``spec`` is a normalizer name, or a mapping from some of ``keys`` to names (the
    others get ``gaussian``): a misspelt key or name is refused rather than silently replaced by the default."""
    names = spec.values() if isinstance(spec, Mapping) else [spec]
    bad = [n for n in names if not isinstance(n, str) or n not in NORMALIZERS]
    if bad:
        raise ValueError(f"normalizer: unknown name(s) {bad}; expected one of {sorted(NORMALIZERS)}"
                         + (f", or a mapping from {list(keys)} to them" if isinstance(spec, Mapping) else ""))
    if isinstance(spec, Mapping):
        unknown = sorted(str(k) for k in spec if k not in keys)
        if unknown:
            raise ValueError(f"normalizer: unknown key(s) {unknown}; expected some of {list(keys)}")


def window_starts(
    episode_ends: np.ndarray, horizon: int, pad_to_horizon: bool = True, pad_before: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Flat start index of every window and the (exclusive) end of its episode.

    ``pad_before = p`` adds the p windows that start up to p steps before their episode (Diffusion Policy's
    observation history at an episode's first steps); their starts lie before the episode's first step."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts_of_episodes = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    lengths = ends - starts_of_episodes
    counts = lengths + pad_before if pad_to_horizon else np.maximum(lengths - horizon + 1 + pad_before, 0)
    episode = np.repeat(np.arange(ends.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return starts_of_episodes[episode] - pad_before + offsets, ends[episode]


class SequenceDataset:
    """Windows of ``horizon`` steps over an ``EpisodeStore`` (see the module docstring)."""

    def __init__(
        self,
        store: EpisodeStore,
        horizon: int,
        *,
        keys: Sequence[str] = ("observations", "actions"),
        normalizer: str | Mapping[str, str] = "gaussian",
        discount: float = 0.99,
        returns: bool = True,
        values: bool = False,
        value_discount: float = 0.997,
        terminal_penalty: float | None = None,
        return_label: str = "minmax",
        pad_to_horizon: bool = True,
        pad_before: int = 0,
        device: str | torch.device = "cpu",
        normalizers: Mapping[str, Normalizer] | None = None,
    ) -> None:
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        if isinstance(pad_before, bool) or not isinstance(pad_before, (int, np.integer)) or not \
                0 <= pad_before < horizon:
            raise ValueError(f"pad_before must be an integer in [0, horizon={horizon}), got {pad_before!r}")
        if return_label not in RETURN_LABELS:
            raise ValueError(f"return_label must be one of {sorted(RETURN_LABELS)}, got {return_label!r}")
        keys = list(keys)
        check_normalizer_spec(normalizer, keys)
        missing = [k for k in keys if k not in store]
        if missing:
            raise ValueError(f"keys {missing} are not in the store; available keys: {store.keys()}")
        if (returns or values) and "rewards" not in store:
            raise ValueError(
                "returns=True / values=True need 'rewards' in the store "
                f"(keys: {store.keys()}); pass returns=False, values=False"
            )
        self.store, self.horizon, self.keys = store, int(horizon), keys
        self.device = torch.device(device)
        self.normalizers: dict[str, Normalizer] = dict(normalizers or {})

        if store.num_episodes == 0:
            raise ValueError(f"no windows: the store holds no episodes ({store.num_steps} steps); expected at least one")
        starts, ends = window_starts(store.episode_ends, self.horizon, pad_to_horizon, int(pad_before))
        if starts.size == 0:
            raise ValueError(
                f"no windows: every episode is shorter than horizon={horizon} and pad_to_horizon=False"
            )
        episode_start = store.episode_starts[np.searchsorted(store.episode_ends, ends, side="left")]
        self._starts = torch.as_tensor(starts, device=self.device)
        self._ends = torch.as_tensor(ends, device=self.device)
        self._episode_starts = torch.as_tensor(episode_start, device=self.device)
        self._timestep = torch.as_tensor(starts - episode_start, device=self.device)
        # scalar labels (returns-to-go, values) are taken at the window's current step: its first step, or after
        # the pad_before history rows (a planner given K past states conditions on the return from now on)
        self._pad_before = int(pad_before)
        now = starts + self._pad_before
        starts = now[now < ends]  # fitted over each real step once (windows past the episode's end share its last)
        self._arange = torch.arange(self.horizon, device=self.device)

        self._data: dict[str, torch.Tensor] = {}
        for key in keys:
            flat = store[key].reshape(store.num_steps, -1).astype(np.float64)
            norm = self._normalizer_for(key, normalizer, flat)
            self._data[key] = torch.as_tensor(norm.normalize(flat), dtype=torch.float32, device=self.device)

        self._scalars: dict[str, torch.Tensor] = {}
        rewards = store["rewards"] if (returns or values) else None
        terminals = store.get("terminals")
        successes = store.get("success")  # demonstrations: an episode that ends in success did not fall
        if returns:
            rtg = discounted_values(
                rewards, store.episode_ends, discount, terminals=terminals, terminal_penalty=terminal_penalty,
                successes=successes,
            )
            self._scalars["returns"] = self._scalar("returns", rtg, starts, RETURN_LABELS[return_label]())
        if values:
            vals = discounted_values(
                rewards,
                store.episode_ends,
                value_discount,
                terminals=terminals,
                terminal_penalty=terminal_penalty,
                successes=successes,
            )
            self._scalars["values"] = self._scalar("values", vals, starts, MinMaxNormalizer(-1.0, 1.0))

    def _normalizer_for(self, key: str, spec: str | Mapping[str, str], flat: np.ndarray) -> Normalizer:
        if key not in self.normalizers:
            name = spec if isinstance(spec, str) else spec.get(key, "gaussian")
            self.normalizers[key] = make_normalizer(name).fit(flat, key=key)
        return self.normalizers[key]

    def _scalar(
        self, key: str, per_step: np.ndarray, starts: np.ndarray, default: Normalizer
    ) -> torch.Tensor:
        if key not in self.normalizers:
            self.normalizers[key] = default.fit(per_step[starts][:, None], key=key)
        normed = self.normalizers[key].normalize(per_step[:, None])[:, 0]
        return torch.as_tensor(normed, dtype=torch.float32, device=self.device)

    # --- access ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts.numel())

    @property
    def dims(self) -> dict[str, int]:
        """Feature size of every windowed key."""
        return {k: int(v.shape[1]) for k, v in self._data.items()}

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The windows with the given indices (a long tensor ``[B]``) as a batch."""
        if index.device.type == "cpu" and self.device.type == "cuda":
            # drawn by the trainer's CPU generator: a pinned, asynchronous copy, so the host does not wait for the
            # previous step's kernels (a plain .to() from pageable memory synchronizes the stream)
            index = index.pin_memory().to(self.device, non_blocking=True)
        index = index.to(self.device)
        start, end = self._starts[index], self._ends[index]
        first = self._episode_starts[index]
        steps = start[:, None] + self._arange[None, :]
        real = (steps < end[:, None]) & (steps >= first[:, None])
        # padding repeats the episode's first step before it and its last step after it
        rows = torch.minimum(torch.maximum(steps, first[:, None]), end[:, None] - 1)
        batch = {k: v[rows] for k, v in self._data.items()}
        batch["mask"] = real.to(torch.float32)
        anchor = torch.minimum(start + self._pad_before, end - 1)
        if "returns" in self._scalars:
            batch["returns"] = self._scalars["returns"][anchor][:, None]
        if "values" in self._scalars:
            batch["values"] = self._scalars["values"][anchor]
        batch["timestep"] = self._timestep[index]
        return batch

    def sample_batch(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``batch_size`` windows drawn uniformly with replacement."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = generator.device if generator is not None else self.device
        index = torch.randint(len(self), (batch_size,), generator=generator, device=device)
        return self.gather(index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window index {i} out of range for {len(self)} windows")
        batch = self.gather(torch.tensor([i % len(self)], device=self.device))
        return {k: v[0] for k, v in batch.items()}
