"""Minari datasets (0.5.x, HDF5 storage): read into an ``EpisodeStore`` and write from one, local only.

Minari stores per episode ``T + 1`` observations (the last is the final next observation) and ``T`` actions,
rewards, terminations and truncations; ``infos`` hold ``T + 1`` rows (the reset info first), aligned with the
observations. The store keeps ``observations`` = the first ``T``, ``next_observations`` = the last ``T``,
``terminals``/``timeouts`` = terminations/truncations, and ``infos/<name>`` = the first ``T`` info rows; dict
observations become ``observations/<name>`` (with ``observations`` = ``observations/observation`` when
present).

Writes are atomic: the dataset is created with ``minari.create_dataset_from_buffers`` under a hidden temporary
``MINARI_DATASETS_PATH`` inside the real root and its folder is moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.dataset.minari_dataset import parse_dataset_id
from minari.namespace import create_namespace, list_local_namespaces

from diffusion_rl.data._atomic import remove_path, remove_stale, replace_path
from diffusion_rl.data.errors import DatasetNotFoundError, make_command
from diffusion_rl.data.store import PROVENANCE_KEYS, EpisodeStore
from diffusion_rl.progress import progress_bar

__all__ = ["datasets_path", "load_minari", "minari_dataset_exists", "resolve_minari_root", "save_minari"]

# Keyword arguments of create_dataset_from_buffers that may come from the metadata.
_MINARI_FIELDS = ("algorithm_name", "author", "author_email", "code_permalink", "description", "requirements")
# Keys Minari manages itself.
_MINARI_RESERVED = {
    "dataset_id",
    "observation_space",
    "action_space",
    "env_spec",
    "eval_env_spec",
    "data_format",
    "jpeg_encoding",
    "minari_version",
    "total_episodes",
    "total_steps",
    "dataset_size",
    "num_episodes_average_score",
}


def resolve_minari_root(root: str | os.PathLike | None = None) -> Path:
    """The Minari store folder: ``root``, else ``$MINARI_DATASETS_PATH``, else Minari's default."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


@contextlib.contextmanager
def datasets_path(root: str | os.PathLike) -> Iterator[Path]:
    """Point Minari at ``root`` (``MINARI_DATASETS_PATH``) for the duration of the block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield Path(root)
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def minari_dataset_exists(dataset_id: str, minari_root: str | os.PathLike | None = None) -> bool:
    """Whether the local Minari store holds ``dataset_id``."""
    return (resolve_minari_root(minari_root) / dataset_id / "data" / "metadata.json").is_file()


def _catalogue_hint(dataset_id: str) -> str:
    from envs import get_spec

    try:
        spec = get_spec(dataset_id)
    except KeyError:
        return ""
    return f" It belongs to catalogue entry {spec.name!r}; make it locally with: {make_command(spec.name)}"


def _flatten(prefix: str, value: Any) -> dict[str, np.ndarray]:
    if isinstance(value, Mapping):
        out: dict[str, np.ndarray] = {}
        for key, sub in value.items():
            out.update(_flatten(f"{prefix}/{key}", sub))
        return out
    if isinstance(value, tuple):
        out = {}
        for i, sub in enumerate(value):
            out.update(_flatten(f"{prefix}/_index_{i}", sub))
        return out
    return {prefix: np.asarray(value)}


def _json_safe(value: Any) -> Any:
    if isinstance(value, set):
        value = sorted(value)
    try:
        return json.loads(
            json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else None)
        )
    except (TypeError, ValueError):
        return None


def load_minari(
    dataset_id: str,
    *,
    minari_root: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> EpisodeStore:
    """Read a local Minari dataset into an ``EpisodeStore`` (never downloads)."""
    try:
        parse_dataset_id(dataset_id)
    except (TypeError, ValueError):  # minari's parser fails with a bare TypeError on ids without a version
        from envs import catalogue_names

        raise DatasetNotFoundError(
            f"{dataset_id!r} is not a dataset source: expected a catalogue name ({', '.join(catalogue_names())}), "
            "a Minari id such as 'mujoco/hopper/medium-v0', a D4RL .hdf5 file or a .zarr replay buffer"
        ) from None
    root = resolve_minari_root(minari_root)
    if not minari_dataset_exists(dataset_id, root):
        raise DatasetNotFoundError(
            f"Minari dataset {dataset_id!r} is not in the local Minari store {root} "
            f"(nothing is downloaded).{_catalogue_hint(dataset_id)}"
        )
    with datasets_path(root):
        dataset = minari.load_dataset(dataset_id, download=False)
    columns: dict[str, list[np.ndarray]] = {}
    lengths = []
    bar = progress_bar(
        dataset.iterate_episodes(),
        total=dataset.total_episodes,
        desc=f"reading {dataset_id}",
        unit="episode",
        disable=(not progress) if progress is not None else dataset.total_steps < 200_000,
    )
    for episode in bar:
        t = len(episode.rewards)
        lengths.append(t)
        steps: dict[str, np.ndarray] = {}
        for key, arr in _flatten("observations", episode.observations).items():
            steps[key], steps["next_" + key] = arr[:t], arr[1 : t + 1]
        steps.update(_flatten("actions", episode.actions))
        steps["rewards"] = np.asarray(episode.rewards)
        steps["terminals"] = np.asarray(episode.terminations, dtype=bool)
        steps["timeouts"] = np.asarray(episode.truncations, dtype=bool)
        for key, arr in _flatten("infos", episode.infos or {}).items():
            if arr.ndim and arr.shape[0] in (t, t + 1):
                steps[key] = arr[:t]
        for key, arr in steps.items():
            columns.setdefault(key, []).append(arr)
    if not lengths:  # an interrupted creation leaves total_episodes at 0 with episodes in main_data.hdf5
        raise ValueError(
            f"Minari dataset {dataset_id!r} at {root / dataset_id} has no episodes (its metadata says "
            f"total_episodes={dataset.total_episodes}): it is empty or was not completely written (an interrupted "
            f"creation); remake it.{_catalogue_hint(dataset_id)}"
        )
    data = {k: np.concatenate(v) for k, v in columns.items() if len(v) == len(lengths)}
    if "observations" not in data and "observations/observation" in data:
        data["observations"] = data["observations/observation"]
        data["next_observations"] = data["next_observations/observation"]
    raw = dataset.storage.metadata
    metadata = {
        k: v
        for k, v in ((k, _json_safe(v)) for k, v in raw.items() if k not in _MINARI_RESERVED)
        if v is not None
    }
    for key, field in (("env_id", "env_spec"), ("eval_env_id", "eval_env_spec")):
        env_spec = raw.get(field)
        if isinstance(env_spec, str):
            metadata.setdefault(key, json.loads(env_spec).get("id"))
    metadata.update(format="minari", path=str(root / dataset_id), dataset_id=dataset_id)
    return EpisodeStore(data, np.cumsum(lengths, dtype=np.int64), metadata)


def _box_like(array: np.ndarray) -> gym.spaces.Box:
    """An unbounded Box for the rows of ``array``: ±inf for floats, the dtype's own limits for integers and
    booleans (gymnasium refuses infinite bounds for them, e.g. uint8 images)."""
    shape, dtype = array.shape[1:], array.dtype
    if dtype.kind == "b":
        return gym.spaces.Box(0, 1, shape=shape, dtype=dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return gym.spaces.Box(info.min, info.max, shape=shape, dtype=dtype)
    if dtype.kind != "f":
        raise ValueError(f"save_minari stores numeric or boolean arrays; got rows of dtype {dtype}")
    return gym.spaces.Box(-np.inf, np.inf, shape=shape, dtype=dtype)


def _nest(flat: Mapping[str, Any]) -> Any:
    """``{"a/b": x, "c": y}`` -> ``{"a": {"b": x}, "c": y}``; a level whose keys are all ``_index_<i>`` (how
    ``load_minari`` flattens a Tuple) becomes a tuple again."""
    tree = _unflatten(flat)

    def build(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out = {k: build(v) for k, v in node.items()}
        if out and all(k.startswith("_index_") and k[7:].isdigit() for k in out):
            return tuple(out[k] for k in sorted(out, key=lambda k: int(k[7:])))
        return out

    return build(tree)


def _space_of(tree: Any) -> gym.Space:
    """The observation space of a nested dict/tuple of example arrays (``[N, ...]`` rows)."""
    if isinstance(tree, dict):
        return gym.spaces.Dict({k: _space_of(v) for k, v in tree.items()})
    if isinstance(tree, tuple):
        return gym.spaces.Tuple([_space_of(v) for v in tree])
    return _box_like(tree)


def _observation_keys(store: EpisodeStore) -> dict[str, str] | None:
    """For dict observations (``observations/<name>`` keys): sub-key name -> store key; None for flat ones.

    The ``observations`` copy ``load_minari`` adds beside them (``observations/observation``) is not stored
    twice; an ``observations`` array that is not that copy is refused (it could not be stored beside them)."""
    names = {k.removeprefix("observations/"): k for k in store.keys() if k.startswith("observations/")}
    if not names:
        return None
    if "observations" in store:
        alias = store.get("observations/observation")
        if alias is None or not (alias is store["observations"] or np.array_equal(alias, store["observations"])):
            raise ValueError(
                f"the store has both an 'observations' array and dict observations {sorted(names.values())}; a "
                "Minari observation is either one array or a dict of them: drop one of the two"
            )
    return names


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _episode_buffers(
    store: EpisodeStore, info_keys: list[str], obs_keys: dict[str, str], next_keys: dict[str, str] | None
) -> Iterator[EpisodeBuffer]:
    """One buffer per episode: ``T + 1`` observations (the last from ``next_keys``, else the last one repeated)
    under the names of ``obs_keys`` (``""`` for a flat observation)."""
    n = store.num_steps
    terminals = store.get("terminals", np.zeros(n, dtype=bool))
    timeouts = store.get("timeouts", np.zeros(n, dtype=bool))
    for start, end in zip(store.episode_starts, store.episode_ends):
        observations = {}
        for name, key in obs_keys.items():
            obs = store[key][start:end]
            final = store[next_keys[name]][end - 1 : end] if next_keys else obs[-1:]
            observations[name] = np.concatenate([obs, final])
        infos = {
            k.removeprefix("infos/"): np.concatenate([store[k][start:end], store[k][end - 1 : end]])
            for k in info_keys
        }
        yield EpisodeBuffer(
            observations=observations[""] if "" in observations else _nest(observations),
            actions=store["actions"][start:end],
            rewards=store["rewards"][start:end],
            terminations=terminals[start:end],
            truncations=timeouts[start:end],
            infos=_unflatten(infos) if infos else None,
        )


def _check_env_space(env_id: str, what: str, space: gym.Space, tree: Any, where: str = "") -> None:
    """Refuse an env whose ``what`` space does not match the store's arrays (a dict/tuple or one array)."""
    if isinstance(tree, (dict, tuple)):
        keys = list(tree) if isinstance(tree, dict) else list(range(len(tree)))
        space_keys = (list(space.spaces) if isinstance(space, gym.spaces.Dict)
                      else list(range(len(space.spaces))) if isinstance(space, gym.spaces.Tuple) else None)
        if space_keys is None or sorted(map(str, space_keys)) != sorted(map(str, keys)):
            raise ValueError(f"{env_id} has {what} space {space}{where}, but the store holds "
                             f"{type(tree).__name__} {what}s with entries {keys}")
        for k in keys:
            _check_env_space(env_id, what, space[k], tree[k], f"{where}[{k!r}]")
        return
    if space.shape is None or tuple(space.shape) != tree.shape[1:]:
        raise ValueError(f"{env_id} has {what}{where} shape {space.shape} but the store's rows have shape "
                         f"{tree.shape[1:]}")


def save_minari(
    store: EpisodeStore,
    dataset_id: str,
    *,
    env_id: str | None = None,
    spec_name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    minari_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write ``store`` as Minari dataset ``dataset_id`` into the Minari store, atomically; returns its folder.

    ``spec_name`` (a catalogue name) supplies the evaluation env id and D4RL's
    ``ref_min_score``/``ref_max_score``; ``env_id`` overrides the env. ``store.metadata`` merged with
    ``metadata`` is stored in Minari's metadata (``algorithm_name``, ``author``, ``description``... go to
    Minari's own fields). Dict observations (``observations/<name>`` keys, as ``load_minari`` gives them) are
    stored as a Dict observation space. Without ``next_observations`` the final observation of each episode
    repeats its last observation (recorded as ``final_observation_repeated``). Keys other than observations,
    actions, rewards, terminals, timeouts, next_observations and ``infos/*`` are not stored (a warning names
    them).
    """
    parse_dataset_id(dataset_id)
    has_dict_obs = any(k.startswith("observations/") for k in store.keys())
    missing = [k for k in ("observations", "actions", "rewards") if k not in store]
    missing = [k for k in missing if not (k == "observations" and has_dict_obs)]
    if missing:
        raise ValueError(f"a Minari dataset needs keys ['observations' (or observations/*), 'actions', 'rewards']; "
                         f"the store lacks {missing}")
    root = resolve_minari_root(minari_root)
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {final}; pass overwrite=True")
    meta: dict[str, Any] = {k: v for k, v in store.metadata.items() if k not in PROVENANCE_KEYS}
    meta.update(metadata or {})
    if spec_name is not None:
        from envs import get_spec

        spec = get_spec(spec_name)
        env_id = env_id or spec.gym_id
        meta.setdefault("ref_min_score", spec.ref_min_score)
        meta.setdefault("ref_max_score", spec.ref_max_score)
        meta["spec_name"] = spec.name
    names = _observation_keys(store)
    obs_keys = {"": "observations"} if names is None else names
    next_keys = {name: "next_" + key for name, key in obs_keys.items()}
    if not all(k in store for k in next_keys.values()):
        next_keys = None
        meta["final_observation_repeated"] = True
    known = {"observations", "actions", "rewards", "terminals", "timeouts", "next_observations"}
    known |= set(obs_keys.values()) | set((next_keys or {}).values())
    info_keys = [k for k in store.keys() if k.startswith("infos/")]
    dropped = [k for k in store.keys() if k not in known and k not in info_keys]
    if dropped:
        warnings.warn(
            f"save_minari stores only observations (one array or observations/*), actions, rewards, terminals, "
            f"timeouts, their next_observations and infos/*; not stored: {dropped}",
            stacklevel=2,
        )

    observations = {name: store[key] for name, key in obs_keys.items()}
    obs_space = _box_like(observations[""]) if names is None else _space_of(_nest(observations))
    act_space = _box_like(store["actions"])
    env_spec = None
    if env_id is not None:
        import envs  # noqa: F401  (registers the catalogue's custom envs, e.g. Maze2D)

        env_spec = gym.spec(env_id)
        env = gym.make(env_spec)
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        _check_env_space(env_id, "observation", obs_space, _nest(observations) if names else observations[""])
        _check_env_space(env_id, "action", act_space, store["actions"])
    ref = (meta.pop("ref_min_score", None), meta.pop("ref_max_score", None))
    minari_kwargs = {k: meta.pop(k) for k in _MINARI_FIELDS if k in meta}
    if isinstance(minari_kwargs.get("author"), (list, tuple)):
        minari_kwargs["author"] = set(minari_kwargs["author"])
    extra = {
        k: v
        for k, v in ((k, _json_safe(v)) for k, v in meta.items() if k not in _MINARI_RESERVED)
        if v is not None
    }
    if None not in ref:
        extra.update(ref_min_score=float(ref[0]), ref_max_score=float(ref[1]))

    root.mkdir(parents=True, exist_ok=True)
    slug = dataset_id.replace("/", "--")  # the temporary store names its dataset: a killed write is removed by the
    remove_stale(root, f".tmp-{slug}-", random_part="hex12")  # next write of the same id
    remove_stale(root, ".tmp-", random_part="hex12", holding=dataset_id)  # named as before 2026-12-07
    tmp_root = root / f".tmp-{slug}-{uuid.uuid4().hex[:12]}"
    try:
        buffers = progress_bar(
            _episode_buffers(store, info_keys, obs_keys, next_keys),
            total=store.num_episodes,
            desc=f"writing {dataset_id}",
            unit="episode",
            disable=(not progress) if progress is not None else store.num_steps < 200_000,
        )
        with datasets_path(tmp_root), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"minari(\..*)?")
            dataset = minari.create_dataset_from_buffers(
                dataset_id,
                buffer=buffers,
                env=env_spec,
                eval_env=env_spec if None not in ref else None,
                observation_space=obs_space,
                action_space=act_space,
                ref_min_score=None if None in ref else float(ref[0]),
                ref_max_score=None if None in ref else float(ref[1]),
                data_format="hdf5",
                **minari_kwargs,
            )
            dataset.storage.update_metadata(extra)
        namespace = parse_dataset_id(dataset_id)[0]
        if namespace is not None:
            with datasets_path(root):
                if namespace not in list_local_namespaces():
                    create_namespace(namespace)
        replace_path(tmp_root / dataset_id, final, overwrite=overwrite)
    finally:
        remove_path(tmp_root)
    return final
