"""``EpisodeStore``: every dataset format becomes the same in-memory layout.

Flat numpy arrays per key (``observations [N, S]``, ``actions [N, A]``, ``rewards [N]``, ``terminals [N]``,
``timeouts [N]``, optional ``next_observations``, ``infos/<name>``...) plus ``episode_ends``: the cumulative,
exclusive end index of every episode (the zarr replay-buffer convention of Diffusion Policy), so episode ``i``
is rows ``episode_ends[i-1]:episode_ends[i]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["PROVENANCE_KEYS", "EpisodeStore", "check_episode_ends", "flat_layout"]

PROVENANCE_KEYS = ("format", "path", "dataset_id", "dropped_partial_steps")
"""Metadata keys a loader sets to say where a store came from and how it read it; writers do not copy them into
new files (a file written from a store has no partial tail to drop, for one)."""

_FLAG_KEYS = ("terminals", "timeouts")
_NUMERIC_KEYS = ("observations", "next_observations", "actions", "rewards")
_UNCHECKED_PREFIX = "infos/"
"""Keys under this prefix are auxiliary (qpos, goals, log-probs) and may use NaN as "missing"; they are not
checked for finiteness. Every other float array feeds training and must be finite."""
_FINITE_BLOCK = 1 << 24
"""Elements checked per block, so the finiteness check of a large image array needs no full-size temporary."""


def check_episode_ends(episode_ends: Iterable[int] | np.ndarray, num_steps: int | None = None) -> np.ndarray:
    """``episode_ends`` as int64 after checking it is 1-D, integer, strictly increasing and above 0 (every
    episode has at least one step) and, when ``num_steps`` is given, that its last entry is ``num_steps``."""
    ends = np.asarray(episode_ends)
    if ends.ndim != 1 or (ends.size and not np.issubdtype(ends.dtype, np.integer)):
        raise ValueError(
            f"episode_ends must be a 1-D integer array, got shape {ends.shape} dtype {ends.dtype}"
        )
    ends = ends.astype(np.int64)
    if ends.size and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
        raise ValueError(
            "episode_ends must be strictly increasing cumulative end indices starting above 0 "
            f"(every episode has at least one step), got {ends[:10].tolist()}..."
        )
    last = int(ends[-1]) if ends.size else 0
    if num_steps is not None and last != num_steps:
        raise ValueError(f"episode_ends[-1] must equal the number of steps ({num_steps}), got {last}")
    return ends


def _origin(metadata: Mapping[str, Any]) -> str:
    """`` in <file>`` when the metadata says which file a store was read from, else ``""``."""
    return f" in {metadata['path']}" if metadata.get("path") else ""


def _check_finite(key: str, arr: np.ndarray, ends: np.ndarray, metadata: Mapping[str, Any]) -> None:
    """Refuse NaN or infinite values in a float array, naming the key, the first bad row, its episode and the
    file: they would reach training as NaN losses, or a normalizer fit error that names none of these."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    flat = arr.reshape(arr.shape[0], -1)
    rows = max(1, _FINITE_BLOCK // max(flat.shape[1], 1))
    for start in range(0, flat.shape[0], rows):
        bad = ~np.isfinite(flat[start : start + rows]).all(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            episode = int(np.searchsorted(ends, row, side="right"))
            step = row - (int(ends[episode - 1]) if episode else 0)
            value = flat[row][~np.isfinite(flat[row])][0]
            raise ValueError(
                f"array {key!r} holds a non-finite value ({value}) at row {row} (episode {episode}, step {step})"
                f"{_origin(metadata)}; NaN or infinite values cannot be trained on: repair the source data or drop "
                "the episodes that hold them there"
            )


def check_flags(key: str, arr: np.ndarray, where: str = "") -> np.ndarray:
    """``arr`` as booleans, refusing values other than 0 and 1 (a NaN or a 0.5 would silently end an episode),
    naming the key, the first bad row and value, and ``where`` (e.g. " in <file>")."""
    arr = np.asarray(arr)
    if arr.dtype.kind != "b":
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"array {key!r} has dtype {arr.dtype}{where}; expected flags (bool, or numbers 0 and 1)")
        bad = (arr != 0) & (arr != 1)  # NaN compares unequal to both
        if bad.any():
            row = int(np.argmax(bad.reshape(-1)))
            raise ValueError(f"array {key!r} holds {arr.reshape(-1)[row]} at row {row}{where}; expected flags "
                             "(bool, or numbers 0 and 1)")
    return arr.astype(bool, copy=False)


def _check_feature_shapes(arrays: Mapping[str, list[np.ndarray]], what: str) -> None:
    """Refuse parts whose per-step shapes differ (hopper's 11 observations after walker's 17), naming the key,
    the part and both shapes, before numpy's concatenation error, which names neither."""
    for key, parts in arrays.items():
        first = parts[0].shape[1:]
        for n, part in enumerate(parts):
            if part.shape[1:] != first:
                raise ValueError(f"{what} {n}: {key!r} has per-step shape {list(part.shape[1:])}; expected "
                                 f"{list(first)}, as {what} 0 has")


class EpisodeStore:
    """Episodes as flat arrays per key plus cumulative ``episode_ends``; see the module docstring.

    Construction refuses NaN or infinite values in float arrays other than ``infos/*``, naming the key, row,
    episode and (from ``metadata["path"]``) the file, so every loader reports bad data where it was read."""

    def __init__(
        self,
        data: Mapping[str, np.ndarray],
        episode_ends: Iterable[int] | np.ndarray,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        ends = check_episode_ends(episode_ends)
        if not data:
            raise ValueError("an EpisodeStore needs at least one data array (e.g. 'observations')")
        meta = dict(metadata or {})
        num_steps = int(ends[-1]) if ends.size else 0
        arrays: dict[str, np.ndarray] = {}
        for key, value in data.items():
            arr = np.asarray(value)
            if key in _NUMERIC_KEYS and arr.dtype.kind not in "biuf":  # complex parts were dropped, strings failed
                # in a float conversion that named no key
                raise ValueError(f"array {key!r} has dtype {arr.dtype}{_origin(meta)}; expected real numbers")
            if arr.ndim == 0 or arr.shape[0] != num_steps:
                raise ValueError(
                    f"array {key!r} has shape {arr.shape}; expected {num_steps} rows "
                    f"(episode_ends[-1]) in its first dimension{_origin(meta)}"
                )
            if key in _FLAG_KEYS or key == "rewards":
                if arr.size != num_steps:  # [N, 2] rewards would otherwise fail in a bare numpy reshape
                    raise ValueError(
                        f"array {key!r} has shape {arr.shape}; expected one value per step, shape "
                        f"[{num_steps}] or [{num_steps}, 1]{_origin(meta)}"
                    )
                arr = arr.reshape(num_steps)
                if key in _FLAG_KEYS:
                    arr = check_flags(key, arr, _origin(meta))
            if not key.startswith(_UNCHECKED_PREFIX):
                _check_finite(key, arr, ends, meta)
            arrays[key] = arr
        self._data = arrays
        self._ends = ends
        self._ends.setflags(write=False)
        self.metadata: dict[str, Any] = meta

    # --- mapping-like access --------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._data:
            raise KeyError(f"no key {key!r} in this EpisodeStore; available keys: {sorted(self._data)}")
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        """The data keys, in insertion order."""
        return list(self._data)

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(key, flat array)`` pairs."""
        return iter(self._data.items())

    def get(self, key: str, default: np.ndarray | None = None) -> np.ndarray | None:
        """The array for ``key`` or ``default``."""
        return self._data.get(key, default)

    # --- episodes -------------------------------------------------------------------------------------------
    @property
    def episode_ends(self) -> np.ndarray:
        """int64 cumulative (exclusive) end index of every episode (read-only)."""
        return self._ends

    @property
    def episode_starts(self) -> np.ndarray:
        """int64 start index of every episode."""
        return np.concatenate([[0], self._ends[:-1]]).astype(np.int64)

    @property
    def num_episodes(self) -> int:
        return int(self._ends.size)

    @property
    def num_steps(self) -> int:
        return int(self._ends[-1]) if self._ends.size else 0

    def __len__(self) -> int:
        return self.num_steps

    def digest(self, keys: Iterable[str] = ("observations", "actions", "rewards", "terminals", "timeouts")) -> str:
        """A short sha256 of the episode boundaries and of ``keys``' names, shapes, dtypes and values (those
        present): which data a run learned from, for refusing a resume on other data under the same name."""
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(self._ends, dtype=np.int64).tobytes())
        for key in keys:
            if key in self._data:
                arr = np.ascontiguousarray(self._data[key])
                digest.update(f"{key}:{arr.shape}:{arr.dtype.str}".encode())
                digest.update(memoryview(arr).cast("B"))
        return digest.hexdigest()[:16]

    def episode_lengths(self) -> np.ndarray:
        """Number of steps of every episode."""
        return np.diff(self._ends, prepend=0)

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """The arrays of episode ``i`` (negative indices count from the end)."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode index {i} out of range for {self.num_episodes} episodes")
        i %= self.num_episodes
        start = 0 if i == 0 else int(self._ends[i - 1])
        return {k: v[start : self._ends[i]] for k, v in self._data.items()}

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode (float64)."""
        rewards = self["rewards"].astype(np.float64)
        if not self.num_episodes:
            return np.zeros(0)
        return np.add.reduceat(rewards, self.episode_starts)

    def select_episodes(self, indices: Iterable[int] | np.ndarray) -> EpisodeStore:
        """A new store holding the given episodes in the given order (e.g. a train/validation split): integer
        indices, or a bool mask with one value per episode (``store.episode_returns() > x``)."""
        raw = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if raw.dtype == bool:
            if raw.shape != (self.num_episodes,):
                raise ValueError(f"a bool episode mask needs one value per episode ({self.num_episodes}), "
                                 f"got shape {raw.shape}")
            raw = np.flatnonzero(raw)
        elif raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"episode indices must be integers or a bool mask, got dtype {raw.dtype}")
        idx = raw.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.num_episodes or idx.max() >= self.num_episodes):
            raise IndexError(f"episode indices must lie in [-{self.num_episodes}, {self.num_episodes})")
        idx = idx % max(self.num_episodes, 1)  # a new array: the caller's indices stay as they were
        starts, lengths = self.episode_starts[idx], self.episode_lengths()[idx]
        rows = (
            np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])
            if idx.size
            else np.zeros(0, int)
        )
        return EpisodeStore({k: v[rows] for k, v in self._data.items()}, np.cumsum(lengths), self.metadata)

    @classmethod
    def from_episodes(
        cls, episodes: Iterable[Mapping[str, np.ndarray]], metadata: Mapping[str, Any] | None = None
    ) -> EpisodeStore:
        """Build a store from per-episode dicts of arrays (all with the same keys)."""
        episodes = list(episodes)
        if not episodes:
            raise ValueError("from_episodes needs at least one episode")
        keys = list(episodes[0])
        for n, ep in enumerate(episodes):
            if list(ep) != keys and set(ep) != set(keys):
                raise ValueError(
                    f"episode {n} has keys {sorted(ep)}; expected the keys of episode 0: {sorted(keys)}"
                )
        lengths = [len(np.asarray(ep[keys[0]])) for ep in episodes]
        for n, ep in enumerate(episodes):  # else one episode's rows would slide into the next
            wrong = {k: len(np.asarray(ep[k])) for k in keys if len(np.asarray(ep[k])) != lengths[n]}
            if wrong:
                raise ValueError(f"episode {n}: every key must have its {lengths[n]} steps (those of {keys[0]!r}); "
                                 f"got {wrong}")
        arrays = {k: [np.asarray(ep[k]) for ep in episodes] for k in keys}
        _check_feature_shapes(arrays, "episode")
        data = {k: np.concatenate(v) for k, v in arrays.items()}
        return cls(data, np.cumsum(lengths), metadata)

    @classmethod
    def concatenate(
        cls, stores: Iterable[EpisodeStore], metadata: Mapping[str, Any] | None = None
    ) -> EpisodeStore:
        """Episodes of several stores one after another (e.g. medium-expert = medium + expert)."""
        stores = list(stores)
        if not stores:
            raise ValueError("concatenate needs at least one store")
        keys = stores[0].keys()
        for n, s in enumerate(stores):
            if set(s.keys()) != set(keys):
                raise ValueError(f"store {n} has keys {sorted(s.keys())}; expected {sorted(keys)}")
        arrays = {k: [s[k] for s in stores] for k in keys}
        _check_feature_shapes(arrays, "store")
        data = {k: np.concatenate(v) for k, v in arrays.items()}
        offsets = np.cumsum([0] + [s.num_steps for s in stores[:-1]])
        ends = np.concatenate([s.episode_ends + off for s, off in zip(stores, offsets)])
        return cls(data, ends, metadata if metadata is not None else stores[0].metadata)

    # --- reporting ------------------------------------------------------------------------------------------
    def reference_scores(self) -> tuple[float, float] | None:
        """D4RL's (random, expert) reference returns from the metadata or the catalogue entry, if known."""
        lo, hi = self.metadata.get("ref_min_score"), self.metadata.get("ref_max_score")
        if lo is not None and hi is not None:
            return float(lo), float(hi)
        name = self.metadata.get("spec_name")
        if name:
            from envs import get_spec

            try:
                spec = get_spec(str(name))
            except KeyError:
                return None
            return spec.ref_min_score, spec.ref_max_score
        return None

    def summary(self) -> str:
        """Human-readable summary: episodes, steps, keys, return statistics (D4RL-normalized when known)."""
        name = self.metadata.get("dataset_id") or self.metadata.get("spec_name") or ""
        origin = ", ".join(f"{k}={self.metadata[k]}" for k in ("format", "path") if k in self.metadata)
        lines = [f"EpisodeStore {name}".rstrip() + (f" ({origin})" if origin else "")]
        lengths = self.episode_lengths()
        if self.num_episodes:
            lines.append(
                f"  episodes: {self.num_episodes:,}  steps: {self.num_steps:,}  "
                f"length mean {lengths.mean():.1f} min {lengths.min()} max {lengths.max()}"
            )
        else:
            lines.append("  empty")
        lines.append(
            "  keys: " + ", ".join(f"{k} {list(v.shape[1:])} {v.dtype}" for k, v in self._data.items())
        )
        if "rewards" in self and self.num_episodes:
            ret = self.episode_returns()
            lines.append(f"  return: mean {ret.mean():.2f} min {ret.min():.2f} max {ret.max():.2f}")
            ref = self.reference_scores()
            if ref is not None:
                score = 100.0 * (ret - ref[0]) / (ref[1] - ref[0])
                lines.append(
                    f"  normalized score: mean {score.mean():.1f} min {score.min():.1f} max {score.max():.1f}"
                )
        if "terminals" in self:
            lines.append(
                f"  terminals: {int(self['terminals'].sum()):,}  timeouts: "
                f"{int(self['timeouts'].sum()) if 'timeouts' in self else 0:,}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"EpisodeStore(episodes={self.num_episodes}, steps={self.num_steps}, keys={self.keys()})"


def flat_layout(store: EpisodeStore, layout: str) -> dict[str, np.ndarray]:
    """The arrays of ``store`` for a file that holds one array per path (D4RL HDF5, zarr), where a name cannot be
    both an array and a folder of arrays. The ``observations`` copy a Minari loader adds beside dict observations
    (``observations`` = ``observations/observation``) is written once, as ``observations``; any other clash is a
    ``ValueError`` naming the keys, before anything is written."""
    arrays = dict(store.items())
    for key in [k for k in arrays if k.endswith("/observation")]:
        alias = key[: -len("/observation")]
        if alias in arrays and (arrays[alias] is arrays[key] or np.array_equal(arrays[alias], arrays[key])):
            del arrays[key]
    clashes = sorted(k for k in arrays if any(other.startswith(k + "/") for other in arrays))
    if clashes:
        parts = sorted(other for other in arrays if any(other.startswith(k + "/") for k in clashes))
        raise ValueError(f"{layout} holds one array per name, so {clashes} cannot also be folders of {parts[:5]} "
                         "(dict observations from a Minari dataset): save it with save_minari, or build a store "
                         "without one of them, e.g. EpisodeStore({k: v for k, v in store.items() if '/' not in k}, "
                         "store.episode_ends, store.metadata)")
    return arrays

