"""Zarr replay buffers in Diffusion Policy's layout: ``data/<key>`` arrays and ``meta/episode_ends``.

Reads zarr v2 and v3 stores (Diffusion Policy's own files are v2); writes zarr v3. Keys with slashes
(``infos/goal``) become nested groups under ``data/``. ``store.metadata`` is kept in the root attributes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffusion_rl.data._atomic import atomic_path
from diffusion_rl.data.store import PROVENANCE_KEYS, EpisodeStore, check_episode_ends, flat_layout
from diffusion_rl.progress import progress_bar

if TYPE_CHECKING:  # pragma: no cover
    import zarr  # imported where a store is read or written: 0.35 s that every script start paid

__all__ = ["is_zarr_store", "load_zarr", "save_zarr"]

log = logging.getLogger(__name__)


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a zarr group (v2 or v3)."""
    path = Path(path)
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists())


def load_zarr(
    path: str | os.PathLike,
    *,
    rename: Mapping[str, str] | None = None,
    progress: bool | None = None,
    allow_missing_chunks: bool = False,
) -> EpisodeStore:
    """Read a replay-buffer zarr into an ``EpisodeStore``; ``rename`` maps stored keys to store keys
    (e.g. ``{"state": "observations", "action": "actions"}`` for Diffusion Policy's Push-T files).

    Every ``data/`` array must have the same number of rows, at least ``episode_ends[-1]``; rows past it (an
    unfinished last episode) are dropped and counted in ``metadata["dropped_partial_steps"]``. A chunk that
    was never written reads as the fill value: in a file ``save_zarr`` wrote (every chunk written) that means an
    incomplete copy and is refused (``allow_missing_chunks=True`` reads it anyway); in other files, whose writer
    may skip chunks equal to the fill value, it is told in a warning. Flags, rewards, ``infos/*`` and boolean
    arrays are not checked (they may be all fill)."""
    path = Path(path)
    if not is_zarr_store(path):
        raise FileNotFoundError(f"no zarr store at {path}")
    import zarr

    root = zarr.open_group(str(path), mode="r")
    members = dict(root.members(max_depth=None))
    for needed in ("data", "meta/episode_ends"):
        if needed not in members:
            raise ValueError(
                f"{path} is not a replay-buffer zarr: missing {needed!r} "
                f"(expected 'data/<key>' arrays and 'meta/episode_ends'; found {sorted(members)})"
            )
    ends = _episode_ends(members["meta/episode_ends"][:], path)
    if not ends.size:  # every row would be dropped as "an unfinished last episode"
        raise ValueError(f"{path}: meta/episode_ends is empty; expected the end index of every episode in data/ "
                         "(at least one)")
    arrays = {
        k.removeprefix("data/"): v
        for k, v in members.items()
        if k.startswith("data/") and isinstance(v, zarr.Array)
    }
    targets = _renamed(arrays, dict(rename or {}), path)
    n = int(ends[-1]) if ends.size else 0
    rows = _common_rows(arrays, n, path)
    complete = bool(root.attrs.get(ALL_CHUNKS_WRITTEN))  # written by this library's save_zarr since 2026-12-07
    if not allow_missing_chunks:
        for key, array in arrays.items():
            _check_chunks(key, targets[key], array, path, strict=complete)
    metadata: dict[str, Any] = {k: v for k, v in root.attrs.items() if k != ALL_CHUNKS_WRITTEN}
    if rows > n:
        metadata["dropped_partial_steps"] = rows - n
        log.warning("%s: dropped %d rows after episode_ends[-1] = %d (an unfinished last episode)",
                    path, rows - n, n)
    data = {}
    for key in progress_bar(
        arrays,
        desc=f"reading {path.name}",
        unit="key",
        disable=(not progress) if progress is not None else n < 200_000,
    ):
        data[targets[key]] = np.asarray(arrays[key][:n])
    metadata.update(format="zarr", path=str(path))
    return EpisodeStore(data, ends, metadata)


def _episode_ends(raw: np.ndarray, path: Path) -> np.ndarray:
    """``meta/episode_ends`` as int64; float ends are accepted only when they hold whole numbers (a cast would
    truncate 12.7 to 12 and shift every episode boundary)."""
    ends = np.asarray(raw)
    if ends.size and ends.dtype.kind == "f":
        if not np.all(np.isfinite(ends) & (ends == np.round(ends))):
            bad = ends[~(np.isfinite(ends) & (ends == np.round(ends)))]
            raise ValueError(f"{path}: meta/episode_ends must hold whole numbers of steps, got {ends.dtype} "
                             f"values such as {bad[:5].tolist()}")
        ends = ends.astype(np.int64)
    elif ends.size and ends.dtype.kind not in "iu":
        raise ValueError(f"{path}: meta/episode_ends must be integers, got dtype {ends.dtype}")
    try:
        return check_episode_ends(ends)
    except ValueError as err:
        raise ValueError(f"{path}: meta/episode_ends: {err}") from None


def _renamed(arrays: Mapping[str, zarr.Array], rename: dict[str, str], path: Path) -> dict[str, str]:
    """The store key of every stored key; two stored keys may not land on one store key."""
    unknown = set(rename) - set(arrays)
    if unknown:
        raise ValueError(
            f"rename names keys {sorted(unknown)} that are not in {path}; stored keys: {sorted(arrays)}"
        )
    targets = {key: rename.get(key, key) for key in arrays}
    sources: dict[str, list[str]] = {}
    for key, target in targets.items():
        sources.setdefault(target, []).append(key)
    clashes = {t: sorted(k) for t, k in sources.items() if len(k) > 1}
    if clashes:
        raise ValueError(
            f"{path}: rename {rename} maps several stored keys onto one store key: "
            + "; ".join(f"{t!r} <- {k}" for t, k in sorted(clashes.items()))
            + " (one would silently replace the other); rename the stored key that is in the way too"
        )
    return targets


def _common_rows(arrays: Mapping[str, zarr.Array], n: int, path: Path) -> int:
    """The number of rows every ``data/`` array holds; refuses differing lengths or fewer than ``n`` rows."""
    lengths = {key: (int(a.shape[0]) if a.ndim else 0) for key, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        lengths = dict(sorted(lengths.items()))
        raise ValueError(f"{path}: the data/ arrays must all have the same number of rows, got {lengths}")
    rows = next(iter(lengths.values()), n)
    if rows < n:
        raise ValueError(f"{path}: meta/episode_ends ends at step {n} but the data/ arrays hold only {rows} rows")
    return rows


_MAY_BE_ALL_FILL = ("rewards", "terminals", "timeouts")
"""Store keys whose chunks may legitimately equal the fill value (sparse rewards, all-False flags), so a writer
that skips such chunks leaves them out; observations, actions or images rarely are all fill over a whole chunk."""

ALL_CHUNKS_WRITTEN = "diffusion_rl_all_chunks_written"
"""Root attribute ``save_zarr`` sets: every chunk of the file was written, so a missing one means an incomplete
copy. Files without it (other writers; zarr-python 3 and this library before 2026-12-07 skip chunks equal to the
fill value) may lack chunks and be whole."""


def _check_chunks(key: str, target: str, array: zarr.Array, path: Path, strict: bool) -> None:
    """A ``data/`` array some of whose chunks were never written (they read as the fill value): refused in a file
    that says every chunk was written (``strict``), told in a warning otherwise (a writer that skips all-fill
    chunks leaves them out of whole files too). Flags, rewards, ``infos/*`` and booleans may be all fill."""
    if (target in _MAY_BE_ALL_FILL or target.startswith("infos/") or array.dtype == np.bool_
            or array.ndim == 0):
        return
    missing = array.nchunks - array.nchunks_initialized
    if not missing:
        return
    fill = array.fill_value.item() if isinstance(array.fill_value, np.generic) else array.fill_value
    what = (f"{path}: {missing} of the {array.nchunks} chunks of 'data/{key}' were never written, so they read as "
            f"the fill value {fill!r}")
    if strict:
        raise ValueError(f"{what}: the file was written with every chunk, so it is incomplete (an interrupted "
                         "copy); copy it again, or pass allow_missing_chunks=True to read it as it is")
    log.warning("%s; whole if its writer skips chunks equal to the fill value (zarr-python 3's default), "
                "incomplete if it was copied or written only in part", what)


def _json_safe(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in metadata.items():
        if key in PROVENANCE_KEYS:
            continue
        try:
            out[key] = json.loads(
                json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
            )
        except (TypeError, ValueError):
            continue
    return out


def save_zarr(
    store: EpisodeStore,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write ``store`` as a zarr v3 replay buffer at ``path``, atomically."""
    path = Path(path)
    arrays = flat_layout(store, "a zarr replay buffer")
    import zarr

    with atomic_path(path, overwrite=overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for key, array in progress_bar(
            list(arrays.items()),
            desc=f"writing {path.name}",
            unit="key",
            disable=(not progress) if progress is not None else store.num_steps < 200_000,
        ):
            _write_array(root, f"data/{key}", array)
        _write_array(root, "meta/episode_ends", store.episode_ends.astype(np.int64))
        root.attrs.update({**_json_safe(store.metadata), ALL_CHUNKS_WRITTEN: True})
    return path


def _write_array(root: zarr.Group, name: str, array: np.ndarray) -> None:
    # every chunk is written, even one equal to the fill value: a missing chunk then always means an
    # incomplete file, which load_zarr refuses
    root.create_array(name, data=np.ascontiguousarray(array), config={"write_empty_chunks": True})
