"""Zarr replay buffers in Diffusion Policy's layout: ``data/<key>`` arrays and ``meta/episode_ends``.

Reads zarr v2 and v3 stores (Diffusion Policy's own files are v2); writes zarr v3. Keys with slashes
(``infos/goal``) become nested groups under ``data/``. ``store.metadata`` is kept in the root attributes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from diffusion_rl.data._atomic import atomic_path
from diffusion_rl.data.store import PROVENANCE_KEYS, EpisodeStore, flat_layout
from diffusion_rl.progress import progress_bar

__all__ = ["is_zarr_store", "load_zarr", "save_zarr"]


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding a zarr group (v2 or v3)."""
    path = Path(path)
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zgroup").exists())


def load_zarr(
    path: str | os.PathLike,
    *,
    rename: Mapping[str, str] | None = None,
    progress: bool | None = None,
) -> EpisodeStore:
    """Read a replay-buffer zarr into an ``EpisodeStore``; ``rename`` maps stored keys to store keys
    (e.g. ``{"state": "observations", "action": "actions"}`` for Diffusion Policy's Push-T files)."""
    path = Path(path)
    if not is_zarr_store(path):
        raise FileNotFoundError(f"no zarr store at {path}")
    root = zarr.open_group(str(path), mode="r")
    members = dict(root.members(max_depth=None))
    for needed in ("data", "meta/episode_ends"):
        if needed not in members:
            raise ValueError(
                f"{path} is not a replay-buffer zarr: missing {needed!r} "
                f"(expected 'data/<key>' arrays and 'meta/episode_ends'; found {sorted(members)})"
            )
    ends = np.asarray(members["meta/episode_ends"][:], dtype=np.int64)
    arrays = {
        k.removeprefix("data/"): v
        for k, v in members.items()
        if k.startswith("data/") and isinstance(v, zarr.Array)
    }
    rename = dict(rename or {})
    unknown = set(rename) - set(arrays)
    if unknown:
        raise ValueError(
            f"rename names keys {sorted(unknown)} that are not in {path}; stored keys: {sorted(arrays)}"
        )
    n = int(ends[-1]) if ends.size else 0
    data = {}
    for key in progress_bar(
        arrays,
        desc=f"reading {path.name}",
        unit="key",
        disable=(not progress) if progress is not None else n < 200_000,
    ):
        data[rename.get(key, key)] = np.asarray(arrays[key][:n])
    metadata: dict[str, Any] = dict(root.attrs)
    metadata.update(format="zarr", path=str(path))
    return EpisodeStore(data, ends, metadata)


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
        root.attrs.update(_json_safe(store.metadata))
    return path


def _write_array(root: zarr.Group, name: str, array: np.ndarray) -> None:
    root.create_array(name, data=np.ascontiguousarray(array))
