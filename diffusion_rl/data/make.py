"""Make a catalogue entry's dataset locally: run its recipe in real MuJoCo and store it in Minari's own format.

``make_local_dataset("hopper-medium")`` runs the committed behaviour policy (``envs.recipes``) for the catalogue's
number of steps and writes ``local/hopper/medium-v0`` into the Minari store (``$MINARI_DATASETS_PATH``, Minari's
default ``~/.minari/datasets`` when unset), with D4RL's reference scores, ``locally_made: true`` and the recipe in
the metadata, so it is never mistaken for the official dataset. Everything is collected in memory first and written
once at the end by the atomic writers, so an interrupted run leaves no dataset that loads as if complete.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusion_rl.data.d4rl_hdf5 import check_d4rl_target, save_d4rl_hdf5
from diffusion_rl.data.minari_io import load_minari, resolve_minari_root, save_minari
from diffusion_rl.data.sources import warn_if_older_recipe
from diffusion_rl.data.store import EpisodeStore
from envs import get_spec
from envs.catalogue import EnvSpec, catalogue_names
from envs.recipes import Collected, Recipe, run_recipe

__all__ = ["MakeSummary", "dataset_mean_normalized_return", "make_local_dataset", "summarize"]


@dataclass
class MakeSummary:
    name: str
    dataset_id: str
    path: Path | None
    steps: int
    episodes: int
    complete_episodes: int
    mean_score: float
    min_score: float
    max_score: float
    seconds: float
    hdf5_path: Path | None = None

    def __str__(self) -> str:
        cut = self.episodes - self.complete_episodes
        lines = [
            f"{self.dataset_id} ({self.name}, locally made): {self.steps} steps, {self.episodes} episodes"
            + (f" ({cut} cut at the end of a collection chunk, left out of the scores)" if cut else ""),
            (f"normalized return (D4RL): mean {self.mean_score:.1f}, min {self.min_score:.1f}, "
             f"max {self.max_score:.1f}"),
            f"collected in {self.seconds:.0f}s; written to {self.path}",
        ]
        if self.hdf5_path is not None:
            lines.append(f"D4RL-layout copy: {self.hdf5_path}")
        return "\n".join(lines)


def summarize(spec: EnvSpec, data: Collected, path: Path | None = None) -> MakeSummary:
    """Episode/step counts and normalized returns of the episodes that ended in the environment."""
    returns = data.episode_returns[data.episode_complete]
    if returns.size == 0:  # only cut episodes (tiny datasets): score what there is
        returns = data.episode_returns
    scores = np.asarray(spec.normalized_score(returns))
    return MakeSummary(spec.name, spec.local_id, path, data.num_steps, len(data.episode_ends),
                       int(data.episode_complete.sum()), float(scores.mean()), float(scores.min()),
                       float(scores.max()), data.seconds)


def dataset_mean_normalized_return(store: EpisodeStore, spec: EnvSpec) -> float:
    """A dataset's mean D4RL-normalized return, by one rule everywhere: the episodes that ended in the environment
    (:func:`summarize`). A locally made store carries that number as ``mean_normalized_return`` in its metadata (its
    cut episodes, stored with ``timeouts``, are short and would pull the mean down); any other store records no
    cut episodes, so every episode counts."""
    recorded = store.metadata.get("mean_normalized_return")
    refs = (store.metadata.get("ref_min_score"), store.metadata.get("ref_max_score"))
    same_refs = all(r is None for r in refs) or (
        None not in refs and np.allclose([float(r) for r in refs], [spec.ref_min_score, spec.ref_max_score]))
    if recorded is not None and same_refs:  # the metadata's number, normalized with these very references
        return float(recorded)
    return float(np.mean(spec.normalized_score(store.episode_returns())))


_POLICY_ALGORITHMS = {"linear": "ARS V2-t linear policy", "mlp": "SAC MLP policy"}


def _algorithm_name(recipe: Recipe) -> str:
    """What made the behaviour, from the recipe's own segments (their policies' kinds)."""
    kinds = sorted({str(seg.params["policy"].get("kind", "linear")) for seg in recipe.segments
                    if isinstance(seg.params.get("policy"), dict)})
    if not kinds:
        return "scripted waypoint controller" if recipe.spec.env == "maze2d" else "scripted controller"
    return " + ".join(_POLICY_ALGORITHMS.get(k, f"{k} policy") for k in kinds)


def _metadata(recipe: Recipe, data: Collected, seed: int, summary: MakeSummary) -> dict:
    spec = recipe.spec
    return {
        "locally_made": True,
        "recipe": recipe.description,
        "recipe_revision": recipe.revision,
        "description": f"Locally made with the D4RL/Minari recipe (not the official "
                       f"{spec.minari_id or spec.d4rl_name}): {recipe.description}",
        "catalogue_name": spec.name,
        **({"official_minari_id": spec.minari_id} if spec.minari_id else {}),
        "d4rl_name": spec.d4rl_name,
        "ref_min_score": spec.ref_min_score,
        "ref_max_score": spec.ref_max_score,
        "seed": int(seed),
        "num_steps": int(data.num_steps),
        "mean_normalized_return": round(summary.mean_score, 3),
        "algorithm_name": _algorithm_name(recipe),
        "author": "diffusion_rl make_dataset",
        "code_permalink": "envs/recipes (diffusion_rl)",
    }


def _copy_existing(spec: EnvSpec, root: Path, hdf5_path: Path, num_steps: int | None, seed: int,
                   progress: bool) -> Path:
    """Write the D4RL-layout copy of the dataset already made, when it is the one asked for (same seed and size):
    a run killed between writing the dataset and its copy need not collect again."""
    store = load_minari(spec.local_id, minari_root=root, progress=False)
    if store.metadata.get("locally_made"):  # a copy of an earlier recipe's data says so, as loading it does
        warn_if_older_recipe(spec, spec.local_id, store.metadata.get("recipe_revision", 1))
    made = (store.metadata.get("seed"), store.metadata.get("num_steps"))
    asked = (int(seed), spec.dataset_steps if num_steps is None else int(num_steps))
    if made != asked:
        raise FileExistsError(f"{spec.local_id} already exists at {root / spec.local_id} (seed {made[0]}, "
                              f"{made[1]} steps), not the seed {asked[0]}, {asked[1]} steps asked for; pass "
                              "overwrite=True to remake it")
    path = save_d4rl_hdf5(store, hdf5_path, progress=progress)
    if progress:
        print(f"{spec.local_id} already exists (seed {asked[0]}, {asked[1]} steps): wrote its D4RL-layout copy "
              f"{path}", flush=True)
    return root / spec.local_id


def make_local_dataset(
    name: str,
    *,
    num_steps: int | None = None,
    seed: int = 0,
    hdf5_path: str | os.PathLike | None = None,
    minari_root: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    num_workers: int = 2,
) -> Path:
    """Run the recipe of catalogue entry ``name`` and write ``local/<env>/<quality>-v0``; returns its path.

    ``num_steps`` defaults to the catalogue's dataset size (1M for hopper-medium); ``hdf5_path`` also writes a
    D4RL-layout copy. Refuses to replace an existing dataset unless ``overwrite``; asked only for the copy of an
    existing dataset made with the same seed and size, it writes the copy without collecting again. With ``progress`` a tqdm bar
    runs while collecting and a summary is printed at the end.
    """
    try:
        spec = get_spec(name)
    except KeyError:
        raise ValueError(f"unknown dataset name {name!r}; expected one of: {', '.join(catalogue_names())}") from None
    if num_steps is not None and int(num_steps) < 1:
        raise ValueError(f"num_steps must be a positive number of steps, got {num_steps}")
    root = resolve_minari_root(minari_root)
    target = root / spec.local_id
    if hdf5_path is not None:  # checked now, not after collecting for an hour and writing the Minari dataset
        hdf5_path = check_d4rl_target(hdf5_path)
        if hdf5_path.exists() and not overwrite:
            raise FileExistsError(f"{hdf5_path} already exists; pass overwrite=True to replace it")
    if target.exists() and not overwrite:
        if hdf5_path is not None:  # the copy of a run stopped after the dataset was written, or asked for later
            return _copy_existing(spec, root, hdf5_path, num_steps, seed, progress)
        raise FileExistsError(f"{spec.local_id} already exists at {target}; pass overwrite=True to remake it")
    recipe, data = run_recipe(spec.name, num_steps, seed=seed, num_workers=num_workers, progress=progress)
    store = EpisodeStore(data.arrays, data.episode_ends)
    summary = summarize(spec, data)
    metadata = _metadata(recipe, data, seed, summary)
    t0 = time.time()
    path = save_minari(store, spec.local_id, env_id=spec.gym_id, spec_name=spec.name, metadata=metadata,
                       minari_root=root, overwrite=overwrite, progress=progress)
    summary.path = Path(path)
    if hdf5_path is not None:
        summary.hdf5_path = Path(save_d4rl_hdf5(store, hdf5_path, metadata=metadata, overwrite=overwrite,
                                                    progress=progress))
    summary.seconds += time.time() - t0
    if progress:
        print(summary, flush=True)
    return Path(path)
