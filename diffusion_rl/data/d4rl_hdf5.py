"""D4RL's HDF5 layout: read and write.

A D4RL file holds flat datasets ``observations``, ``actions``, ``rewards``, ``terminals`` (required),
optionally ``timeouts``, ``next_observations``, ``infos/*`` (per-step) and ``metadata/*`` (descriptive;
scalars are kept in ``store.metadata``, arrays such as policy weights are skipped). Episodes are split as
D4RL's ``sequence_dataset`` does: an episode ends after every step with ``terminals`` or ``timeouts`` set, and
the steps after the last such flag (an unfinished final episode) are dropped -- ``keep_partial=True`` keeps
them as a last episode instead. Files without ``timeouts``, or with none set (D4RL's oldest), also end an
episode every ``max_episode_steps`` steps when that is given; unlike D4RL's counter, which makes every episode
after the first one step short, the count restarts at each episode's first step.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffusion_rl.data._atomic import atomic_path
from diffusion_rl.data.store import PROVENANCE_KEYS, EpisodeStore, check_flags, flat_layout
from diffusion_rl.progress import progress_bar

__all__ = ["REQUIRED_D4RL_KEYS", "check_d4rl_target", "d4rl_episode_ends", "load_d4rl_hdf5", "save_d4rl_hdf5"]

log = logging.getLogger(__name__)

REQUIRED_D4RL_KEYS = ("observations", "actions", "rewards", "terminals")
D4RL_SUFFIXES = (".hdf5", ".h5")
_PER_STEP_SCALARS = ("rewards", "terminals", "timeouts")


def d4rl_episode_ends(
    terminals: np.ndarray,
    timeouts: np.ndarray | None = None,
    *,
    max_episode_steps: int | None = None,
    keep_partial: bool = False,
) -> np.ndarray:
    """Cumulative episode end indices of a flat D4RL dataset (see the module docstring for the rule)."""
    done = check_flags("terminals", terminals).reshape(-1).copy()
    n = done.size
    if timeouts is not None:
        timeouts = check_flags("timeouts", timeouts).reshape(-1)
        if not timeouts.any():  # no flag set ends no episode: max_episode_steps may cut them instead
            timeouts = None
    if timeouts is not None:
        done |= timeouts
    elif max_episode_steps is not None:
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        starts = np.concatenate([[0], np.flatnonzero(done) + 1])
        stops = np.concatenate([np.flatnonzero(done) + 1, [n]])
        for start, stop in zip(starts, stops):
            done[start + max_episode_steps - 1 : stop : max_episode_steps] = True
    ends = np.flatnonzero(done) + 1
    if keep_partial and (ends.size == 0 or ends[-1] < n) and n:
        ends = np.append(ends, n)
    return ends.astype(np.int64)


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}
    f.visititems(lambda name, obj: found.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return found


def load_d4rl_hdf5(
    path: str | os.PathLike,
    *,
    max_episode_steps: int | None = None,
    keep_partial: bool = False,
    progress: bool | None = None,
) -> EpisodeStore:
    """Read a D4RL-layout HDF5 file into an ``EpisodeStore`` (episode split as D4RL does)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no D4RL HDF5 file at {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:  # h5py's "file signature not found" names neither the file nor what was expected
        raise ValueError(f"{path} is not a readable HDF5 file ({err}); expected a D4RL-layout .hdf5 file with "
                         f"datasets {list(REQUIRED_D4RL_KEYS)}") from None
    with handle as f:
        datasets = _read_datasets(f)
        missing = [k for k in REQUIRED_D4RL_KEYS if k not in datasets]
        if missing:
            raise ValueError(
                f"{path} is not a D4RL dataset: missing required key(s) {missing} "
                f"(required: {list(REQUIRED_D4RL_KEYS)}; found: {sorted(datasets)})"
            )
        scalars = [k for k in REQUIRED_D4RL_KEYS if datasets[k].ndim == 0]
        if scalars:  # a scalar would be read as metadata, and the key reported missing later
            raise ValueError(f"{path}: required dataset(s) {scalars} hold a single value; expected per-step arrays "
                             "with one row per step (shape [N, ...])")
        n = datasets["rewards"].shape[0]
        metadata: dict[str, Any] = {}
        data: dict[str, np.ndarray] = {}
        per_step = [k for k, d in datasets.items() if not k.startswith("metadata/") and d.ndim > 0]
        for key, dset in datasets.items():
            if key.startswith("metadata/") or dset.ndim == 0:
                if (
                    dset.ndim == 0
                ):  # scalars are descriptive; arrays under metadata/ (policy weights) are skipped
                    metadata[key.removeprefix("metadata/")] = _decode(dset[()])
        bar = progress_bar(per_step, desc=f"reading {path.name}", unit="key", disable=_disable(progress, n))
        for key in bar:
            dset = datasets[key]
            if dset.shape[0] != n:
                raise ValueError(f"{path}: dataset {key!r} has {dset.shape[0]} rows but 'rewards' has {n}")
            if key in _PER_STEP_SCALARS and int(np.prod(dset.shape[1:])) != 1:
                raise ValueError(f"{path}: dataset {key!r} has shape {dset.shape}; expected one value per step, "
                                 f"shape [{n}] or [{n}, 1]")
            data[key] = dset[()]
    if n == 0:
        raise ValueError(f"{path}: holds no steps ('rewards' has 0 rows); expected a D4RL dataset with at least one "
                         "episode")
    for key in ("terminals", "timeouts"):  # a NaN or 0.5 would end an episode here, before the store checks
        if key in data:
            data[key] = check_flags(key, data[key], f" in {path}")
    timeouts = data.get("timeouts")
    if timeouts is not None and not np.asarray(timeouts, dtype=bool).any():
        timeouts = None  # d4rl_episode_ends does the same; the stored flags are then made below
    if timeouts is None:
        data["timeouts"] = np.zeros(n, dtype=bool)
        if max_episode_steps is None:
            log.warning(
                "%s has no 'timeouts' set and no max_episode_steps was given: episodes end at terminals only",
                path,
            )
    ends = d4rl_episode_ends(
        data["terminals"], timeouts, max_episode_steps=max_episode_steps, keep_partial=keep_partial
    )
    used = int(ends[-1]) if ends.size else 0
    if n and not used:
        cut = "max_episode_steps=N to cut episodes every N steps, or " if timeouts is None else ""
        raise ValueError(f"{path}: none of its {n} steps ends an episode (no 'terminals' or 'timeouts' set); pass "
                         f"{cut}keep_partial=True to keep the steps as one episode")
    if used < n:
        metadata["dropped_partial_steps"] = n - used
        log.info("%s: dropped %d steps after the last terminal/timeout (D4RL's rule)", path, n - used)
    if timeouts is None and max_episode_steps is not None:
        last = np.zeros(n, dtype=bool)
        last[ends - 1] = True
        data["timeouts"] = last & ~np.asarray(data["terminals"], dtype=bool).reshape(n)  # terminals may be [N, 1]
    data = {k: v[:used] for k, v in data.items()}
    metadata.update(format="d4rl_hdf5", path=str(path))
    return EpisodeStore(data, ends, metadata)


def check_d4rl_target(path: str | os.PathLike) -> Path:
    """``path`` after checking a D4RL file can be written there: a ``.hdf5``/``.h5`` name and a folder that exists
    or can be made (its nearest existing ancestor is a writable folder). Cheap, so callers that collect data for
    a long time before writing (``make_local_dataset``) check first."""
    path = Path(path)
    if path.suffix not in D4RL_SUFFIXES:
        raise ValueError(f"a D4RL file name must end in .hdf5 or .h5, got {path.name!r}")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: the folder {folder} is not writable")
    return path


def _disable(progress: bool | None, size: int) -> bool:
    return (not progress) if progress is not None else size < 200_000


def _metadata_value(value: Any) -> Any | None:
    if isinstance(value, (str, bool, int, float, np.generic)):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        return None


def save_d4rl_hdf5(
    store: EpisodeStore,
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    compression: str | None = "gzip",
    progress: bool | None = None,
) -> Path:
    """Write ``store`` as a D4RL-layout HDF5 file, atomically.

    Episode boundaries are carried by ``terminals``/``timeouts`` only, so an episode whose last step has
    neither flag gets ``timeouts = True`` there. ``store.metadata`` merged with ``metadata`` goes to
    ``metadata/<key>`` (scalars as they are, other JSON-serializable values as JSON text).
    """
    path = check_d4rl_target(path)
    missing = [k for k in REQUIRED_D4RL_KEYS if k != "terminals" and k not in store]
    if missing:
        raise ValueError(f"a D4RL file needs keys {list(REQUIRED_D4RL_KEYS)}; the store lacks {missing}")
    n = store.num_steps
    terminals = store.get("terminals", np.zeros(n, dtype=bool))
    timeouts = store.get("timeouts", np.zeros(n, dtype=bool)).copy()
    last = store.episode_ends - 1
    inner = np.ones(n, dtype=bool)
    inner[last] = False
    flagged = np.flatnonzero(inner & (np.asarray(terminals, dtype=bool) | timeouts))
    if flagged.size:  # the file carries episode ends by these flags only: it would read back split there
        raise ValueError(f"a D4RL file marks episode ends by 'terminals'/'timeouts' alone, but the store flags "
                         f"{flagged.size} step(s) inside an episode (rows {flagged[:5].tolist()}); only an episode's "
                         "last step may carry one")
    timeouts[last[~(terminals[last] | timeouts[last])]] = True
    arrays = flat_layout(store, "a D4RL HDF5 file")
    arrays["terminals"], arrays["timeouts"] = terminals, timeouts
    meta = {k: v for k, v in store.metadata.items() if k not in PROVENANCE_KEYS}
    meta.update(metadata or {})
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        for key in progress_bar(arrays, desc=f"writing {path.name}", unit="key", disable=_disable(progress, n)):
            _write_dataset(f, key, arrays[key], compression)
        for key, value in meta.items():
            value = _metadata_value(value)
            if value is not None:
                f.create_dataset(f"metadata/{key}", data=value)
    return path


def _write_dataset(f: h5py.File, key: str, array: np.ndarray, compression: str | None) -> None:
    f.create_dataset(key, data=array, compression=compression if array.size else None)
