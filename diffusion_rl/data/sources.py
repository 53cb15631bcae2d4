"""``load_episodes``: one entry point for every dataset source.

``source`` may be a catalogue name (``hopper-medium``, or its D4RL name ``hopper-medium-v2``), a Minari id
(``mujoco/hopper/medium-v0``, ``local/hopper/medium-v0``), a D4RL-layout ``.hdf5``/``.h5`` file or a ``.zarr``
replay buffer. A catalogue name reads the official Minari dataset from the local Minari store if it is there,
else the locally made one; when neither is there the ``DatasetNotFoundError`` names both ids and the command
that makes the dataset. Nothing is downloaded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffusion_rl._numbers import is_integer
from diffusion_rl.data.d4rl_hdf5 import load_d4rl_hdf5
from diffusion_rl.data.errors import DatasetNotFoundError, make_command
from diffusion_rl.data.minari_io import load_minari, minari_dataset_exists, resolve_minari_root
from diffusion_rl.data.store import EpisodeStore
from diffusion_rl.data.zarr_store import is_zarr_store, load_zarr
from envs import CATALOGUE, EnvSpec

__all__ = ["SOURCE_LOADERS", "catalogue_entry", "load_episodes", "source_kind"]

_SUFFIX_KINDS = {".hdf5": "d4rl_hdf5", ".h5": "d4rl_hdf5", ".zarr": "zarr"}


def catalogue_entry(name: str) -> EnvSpec | None:
    """The catalogue entry named ``name`` (catalogue or D4RL name), or None."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    return next((spec for spec in CATALOGUE.values() if spec.d4rl_name == name), None)


def source_kind(source: str | os.PathLike) -> str:
    """Which loader handles ``source``: ``catalogue``, ``minari``, ``d4rl_hdf5`` or ``zarr``."""
    text = os.fspath(source)
    suffix = Path(text).suffix.lower()
    if suffix in _SUFFIX_KINDS:
        return _SUFFIX_KINDS[suffix]
    if is_zarr_store(text):
        return "zarr"
    if isinstance(source, str) and catalogue_entry(source) is not None:
        return "catalogue"
    return "minari"


def warn_if_older_recipe(spec: EnvSpec, dataset_id: str, made: Any) -> None:
    """A locally made dataset from an earlier revision of its recipe is not what the recipe makes now (the maze
    datasets' rewards before revision 2): warn, naming the change and the command that remakes it."""
    from envs.recipes import recipe_revision

    current, change = recipe_revision(spec.name)
    if is_integer(made) and made < current:
        warnings.warn(
            f"{dataset_id} was made with revision {made} of {spec.name}'s recipe, which is now at revision {current} "
            f"({change}): what is trained on it is not comparable with datasets made now. Remake it with: "
            f"{make_command(spec.name)} overwrite=true",
            stacklevel=4,
        )


def _load_catalogue(
    name: str, *, minari_root: str | os.PathLike | None = None, progress: bool | None = None
) -> EpisodeStore:
    spec = catalogue_entry(name)
    assert spec is not None
    root = resolve_minari_root(minari_root)
    official = spec.minari_id is not None and spec.official_matches_env
    ids = (spec.minari_id, spec.local_id) if official else (spec.local_id,)
    for dataset_id in ids:
        if minari_dataset_exists(dataset_id, root):
            store = load_minari(dataset_id, minari_root=root, progress=progress)
            made = store.metadata.get("num_steps") if store.metadata.get("locally_made") else None
            if isinstance(made, (int, float)) and made < spec.dataset_steps:
                warnings.warn(
                    f"{dataset_id} holds {int(made):,} steps, not the {spec.dataset_steps:,} of {spec.name}'s recipe (it "
                    f"was made with num_steps={int(made)}): what is trained on it is not comparable with the full "
                    f"dataset's scores. Remake it with: {make_command(spec.name)} overwrite=true",
                    stacklevel=3,
                )
            if store.metadata.get("locally_made"):
                warn_if_older_recipe(spec, dataset_id, store.metadata.get("recipe_revision", 1))
            store.metadata["spec_name"] = spec.name
            store.metadata.setdefault("ref_min_score", spec.ref_min_score)
            store.metadata.setdefault("ref_max_score", spec.ref_max_score)
            return store
    if official:
        looked = f"official id {spec.minari_id!r} and the local id {spec.local_id!r}, found neither"
    elif spec.minari_id is None:
        looked = (f"local id {spec.local_id!r} (Minari publishes no official {spec.name} dataset; D4RL's is "
                  f"{spec.d4rl_name}), did not find it")
    else:
        looked = (f"local id {spec.local_id!r} (not for the official {spec.minari_id!r}: recorded in another "
                  f"environment than {spec.gym_id}), did not find it")
    raise DatasetNotFoundError(
        f"no dataset for catalogue entry {spec.name!r}: looked in the Minari store {root} for the "
        f"{looked}. Make it locally "
        f"with: {make_command(spec.name)}  (or pass a D4RL file: "
        f"load_episodes('/path/to/{spec.d4rl_name}.hdf5'))"
    )


def _load_minari(
    source: str | os.PathLike, *, minari_root: str | os.PathLike | None = None, progress: bool | None = None
) -> EpisodeStore:
    return load_minari(os.fspath(source), minari_root=minari_root, progress=progress)


def _load_hdf5(
    source: str | os.PathLike, *, minari_root: Any = None, progress: bool | None = None, **options: Any
) -> EpisodeStore:
    if not Path(source).is_file():
        raise DatasetNotFoundError(f"no D4RL HDF5 file at {source}")
    return load_d4rl_hdf5(source, progress=progress, **options)


def _load_zarr(
    source: str | os.PathLike, *, minari_root: Any = None, progress: bool | None = None, **options: Any
) -> EpisodeStore:
    if not Path(source).exists():
        raise DatasetNotFoundError(f"no zarr store at {source}")
    return load_zarr(source, progress=progress, **options)


SOURCE_LOADERS: dict[str, Callable[..., EpisodeStore]] = {
    "catalogue": _load_catalogue,
    "minari": _load_minari,
    "d4rl_hdf5": _load_hdf5,
    "zarr": _load_zarr,
}


def load_episodes(
    source: str | os.PathLike,
    *,
    minari_root: str | os.PathLike | None = None,
    progress: bool | None = None,
    **options: Any,
) -> EpisodeStore:
    """Load any supported source into an ``EpisodeStore`` (see the module docstring).

    ``options`` go to the file loaders: ``max_episode_steps``/``keep_partial`` for D4RL files, ``rename`` for
    zarr. ``progress`` forces progress bars on or off (default: shown for large datasets).
    """
    kind = source_kind(source)
    if options and kind in ("catalogue", "minari"):
        raise ValueError(f"options {sorted(options)} apply to file sources only, not to a {kind} source")
    return SOURCE_LOADERS[kind](source, minari_root=minari_root, progress=progress, **options)
