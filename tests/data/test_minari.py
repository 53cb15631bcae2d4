"""Minari datasets: reading Minari's own files, writing with reference scores, conversion to and from D4RL,
atomic writes, and the catalogue lookup (official id first, then the local one)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from diffusion_rl.data import (
    DatasetNotFoundError,
    EpisodeStore,
    load_episodes,
    minari_io,
    save_d4rl_hdf5,
    save_minari,
)
from tests.data.conftest import make_store

# Datasets written here with Minari's own API leave out its optional descriptive fields on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:minari.*")


def _minari_buffers() -> list[EpisodeBuffer]:
    rng = np.random.default_rng(0)
    buffers = []
    for length, terminated in ((4, True), (6, False)):
        buffers.append(
            EpisodeBuffer(
                observations=rng.normal(size=(length + 1, 3)),
                actions=rng.uniform(-1, 1, size=(length, 2)).astype(np.float32),
                rewards=rng.normal(size=length),
                terminations=np.array([False] * (length - 1) + [terminated]),
                truncations=np.array([False] * (length - 1) + [not terminated]),
                infos={"success": np.arange(length + 1) % 2 == 0},
            )
        )
    return buffers


def test_minari_files_become_a_store(minari_root: Path) -> None:
    buffers = _minari_buffers()
    minari.create_dataset_from_buffers(
        "test/point/tiny-v0",
        buffers,
        observation_space=gym.spaces.Box(-np.inf, np.inf, (3,)),
        action_space=gym.spaces.Box(-1, 1, (2,)),
        algorithm_name="random",
        author="tests",
        author_email="t@example.org",
        code_permalink="none",
        description="tiny",
    )
    store = load_episodes("test/point/tiny-v0")
    np.testing.assert_array_equal(store.episode_ends, [4, 10])
    for i, buf in enumerate(buffers):
        ep = store.episode(i)
        np.testing.assert_array_equal(ep["observations"], buf.observations[:-1])
        np.testing.assert_array_equal(ep["next_observations"], buf.observations[1:])
        np.testing.assert_array_equal(ep["actions"], buf.actions)
        np.testing.assert_array_equal(ep["rewards"], buf.rewards)
        np.testing.assert_array_equal(ep["terminals"], buf.terminations)
        np.testing.assert_array_equal(ep["timeouts"], buf.truncations)
        np.testing.assert_array_equal(
            ep["infos/success"], buf.infos["success"][:-1]
        )  # aligned with observations
    assert store.metadata["algorithm_name"] == "random" and store.metadata["format"] == "minari"


def test_written_dataset_reads_in_minari_with_reference_scores(minari_root: Path) -> None:
    store = make_store([5, 3, 4])
    path = save_minari(
        store,
        "local/maze2d/umaze-v0",
        spec_name="maze2d-umaze",
        metadata={"locally_made": True, "algorithm_name": "waypoint controller"},
    )
    assert path == minari_root / "local/maze2d/umaze-v0"
    dataset = minari.load_dataset("local/maze2d/umaze-v0")  # Minari's own reader, from $MINARI_DATASETS_PATH
    assert dataset.total_episodes == 3 and dataset.total_steps == 12
    meta = dataset.storage.metadata
    assert meta["ref_min_score"] == 23.85 and meta["ref_max_score"] == 161.86
    assert meta["locally_made"] is True and meta["algorithm_name"] == "waypoint controller"
    assert meta["spec_name"] == "maze2d-umaze" and meta["note"] == "made in a test"
    np.testing.assert_allclose(minari.get_normalized_score(dataset, np.array([161.86])), [1.0])
    assert dataset.recover_environment(eval_env=True).spec.id == "Maze2D-UMaze-v1"
    episode = dataset[1]
    np.testing.assert_array_equal(episode.observations[:-1], store.episode(1)["observations"])
    np.testing.assert_array_equal(episode.observations[-1], store.episode(1)["next_observations"][-1])


def test_minari_d4rl_round_trips(minari_root: Path, tmp_path: Path) -> None:
    store = make_store([5, 3, 4], terminal_last=(1,))
    save_minari(store, "test/conv/a-v0")
    via_minari = load_episodes("test/conv/a-v0")
    d4rl_path = save_d4rl_hdf5(via_minari, tmp_path / "a.hdf5")
    via_d4rl = load_episodes(d4rl_path)
    save_minari(via_d4rl, "test/conv/b-v0")
    back = load_episodes("test/conv/b-v0")
    for result in (via_minari, via_d4rl, back):
        np.testing.assert_array_equal(result.episode_ends, store.episode_ends)
        for key in store.keys():
            np.testing.assert_array_equal(result[key], store[key], err_msg=key)
        assert result.metadata["note"] == "made in a test"


def test_interrupted_minari_write_leaves_nothing_loadable(
    minari_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = minari_io._episode_buffers

    def interrupted(store, *layout):
        for n, buffer in enumerate(original(store, *layout)):
            if n == 2:
                raise KeyboardInterrupt
            yield buffer

    monkeypatch.setattr(minari_io, "_episode_buffers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_minari(make_store([3, 3, 3, 3]), "local/hopper/medium-v0")
    assert minari.list_local_datasets() == {}
    assert [p for p in minari_root.rglob("*") if "medium-v0" in p.name or p.name.startswith(".tmp")] == []
    with pytest.raises(DatasetNotFoundError, match="make_dataset.py env=hopper-medium"):
        load_episodes("hopper-medium")


def test_existing_dataset_needs_overwrite(minari_root: Path) -> None:
    save_minari(make_store([3]), "test/ow/x-v0")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_minari(make_store([3]), "test/ow/x-v0")
    save_minari(make_store([5, 2]), "test/ow/x-v0", overwrite=True)
    assert load_episodes("test/ow/x-v0").num_steps == 7
    assert not [p for p in minari_root.rglob(".*")]  # no temporary or old copies left


def test_missing_catalogue_dataset_names_entry_ids_and_command(minari_root: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_episodes("hopper-medium")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in (
        "'hopper-medium'",
        "mujoco/hopper/medium-v0",
        "local/hopper/medium-v0",
        "python scripts/make_dataset.py env=hopper-medium",
        str(minari_root),
    ):
        assert part in message
    with pytest.raises(DatasetNotFoundError, match="make_dataset.py env=walker2d-expert"):
        load_episodes("local/walker2d/expert-v0")


def test_catalogue_prefers_the_official_dataset(minari_root: Path, tmp_path: Path) -> None:
    save_minari(make_store([4]), "local/hopper/medium-v0")
    assert load_episodes("hopper-medium").metadata["dataset_id"] == "local/hopper/medium-v0"
    save_minari(make_store([2, 2]), "mujoco/hopper/medium-v0")
    store = load_episodes("hopper-medium", minari_root=minari_root)
    assert store.metadata["dataset_id"] == "mujoco/hopper/medium-v0" and store.num_episodes == 2
    assert store.metadata["spec_name"] == "hopper-medium" and store.metadata["ref_max_score"] == 3234.3
    # maze2d: the official PointMaze data live in other coordinates than the Maze2D env; never picked silently
    save_minari(make_store([2, 2]), "D4RL/pointmaze/umaze-v2")
    with pytest.raises(DatasetNotFoundError, match="not for the official 'D4RL/pointmaze/umaze-v2'"):
        load_episodes("maze2d-umaze")
    save_minari(make_store([4]), "local/maze2d/umaze-v0")
    store = load_episodes("maze2d-umaze", minari_root=minari_root)
    assert store.metadata["dataset_id"] == "local/maze2d/umaze-v0" and store.metadata["ref_max_score"] == 161.86
    assert load_episodes("D4RL/pointmaze/umaze-v2").num_episodes == 2  # still loadable by its own id
    # An explicit root wins over $MINARI_DATASETS_PATH.
    other = tmp_path / "other"
    save_minari(make_store([7]), "local/maze2d/umaze-v0", minari_root=other)
    os.environ.pop("MINARI_DATASETS_PATH")
    assert load_episodes("local/maze2d/umaze-v0", minari_root=other).num_steps == 7


def test_dict_observations_are_flattened(minari_root: Path) -> None:
    """Minari's pointmaze datasets observe dicts; the store keeps every part and aliases 'observation'."""
    space = gym.spaces.Dict(
        {
            "observation": gym.spaces.Box(-np.inf, np.inf, (4,)),
            "desired_goal": gym.spaces.Box(-np.inf, np.inf, (2,)),
        }
    )
    obs = {"observation": np.arange(24.0).reshape(6, 4), "desired_goal": np.ones((6, 2))}
    buffer = EpisodeBuffer(
        observations=obs,
        actions=np.zeros((5, 2)),
        rewards=np.ones(5),
        terminations=np.zeros(5, bool),
        truncations=np.array([0, 0, 0, 0, 1], bool),
    )
    minari.create_dataset_from_buffers(
        "test/dict/x-v0", [buffer], observation_space=space, action_space=gym.spaces.Box(-1, 1, (2,))
    )
    store = load_episodes("test/dict/x-v0")
    np.testing.assert_array_equal(store["observations"], obs["observation"][:5])
    np.testing.assert_array_equal(store["next_observations"], obs["observation"][1:])
    np.testing.assert_array_equal(store["observations/desired_goal"], np.ones((5, 2)))


def test_env_shape_mismatch_is_reported(minari_root: Path) -> None:
    with pytest.raises(ValueError, match=r"Hopper-v5 has observation shape \(11,\).*\(4,\)"):
        save_minari(make_store([3]), "local/hopper/medium-v0", spec_name="hopper-medium")
    assert minari.list_local_datasets() == {}


def test_a_source_that_is_nothing_we_read_names_what_is(minari_root: Path) -> None:
    from diffusion_rl.data import DatasetNotFoundError, load_episodes

    for source in ("hopper", "x.npz"):  # minari's id parser fails on these with a bare TypeError
        with pytest.raises(DatasetNotFoundError, match=rf"'{source}' is not a dataset source: expected a catalogue "
                                                       r"name \(.*hopper-medium.*\), a Minari id"):
            load_episodes(source)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, bool, np.float16])
def test_integer_and_boolean_observations_round_trip(minari_root: Path, dtype: type) -> None:
    store = make_store([3, 4], infos=False)
    images = (np.arange(7 * 8 * 8 * 3) % 2).reshape(7, 8, 8, 3).astype(dtype)
    data = {k: v for k, v in store.items() if k != "next_observations"}
    data["observations"] = images
    save_minari(EpisodeStore(data, store.episode_ends), "test/pixels-v0")
    back = load_episodes("test/pixels-v0")
    assert back["observations"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back["observations"], images)
    space = minari.load_dataset("test/pixels-v0").observation_space
    assert space.dtype == np.dtype(dtype) and space.contains(images[0])


def _dict_dataset(dataset_id: str) -> None:
    space = gym.spaces.Dict({"observation": gym.spaces.Box(-np.inf, np.inf, (3,)),
                             "desired_goal": gym.spaces.Box(-np.inf, np.inf, (2,))})
    rng = np.random.default_rng(0)
    buffers = [
        EpisodeBuffer(observations={"observation": rng.normal(size=(t + 1, 3)).astype(np.float32),
                                    "desired_goal": rng.normal(size=(t + 1, 2)).astype(np.float32)},
                      actions=rng.uniform(-1, 1, (t, 2)).astype(np.float32), rewards=np.ones(t),
                      terminations=np.r_[np.zeros(t - 1, bool), True], truncations=np.zeros(t, bool))
        for t in (5, 7)
    ]
    minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=space,
                                       action_space=gym.spaces.Box(-1, 1, (2,)))


def test_dict_observations_round_trip_through_save_minari(minari_root: Path) -> None:
    _dict_dataset("test/dict-v0")
    store = load_episodes("test/dict-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is dropped, so nothing to warn about
        save_minari(store, "test/dictcopy-v0")
    space = minari.load_dataset("test/dictcopy-v0").observation_space
    assert isinstance(space, gym.spaces.Dict) and set(space.spaces) == {"observation", "desired_goal"}
    back = load_episodes("test/dictcopy-v0")
    assert set(back.keys()) == set(store.keys())
    for key in store.keys():
        np.testing.assert_array_equal(back[key], store[key], err_msg=key)
    np.testing.assert_array_equal(back.episode_ends, [5, 12])
    # without the 'observations' alias load_minari adds, the dict parts alone are enough
    parts = {k: v for k, v in store.items() if k not in ("observations", "next_observations")}
    save_minari(EpisodeStore(parts, store.episode_ends), "test/parts-v0")
    np.testing.assert_array_equal(load_episodes("test/parts-v0")["observations"], store["observations"])


def test_dict_observations_beside_another_observations_array_are_refused(minari_root: Path) -> None:
    _dict_dataset("test/dict-v0")
    store = load_episodes("test/dict-v0")
    data = dict(store.items())
    data["observations"] = np.zeros_like(data["observations"])  # not the copy of observations/observation
    with pytest.raises(ValueError, match=r"both an 'observations' array and dict observations"):
        save_minari(EpisodeStore(data, store.episode_ends), "test/bad-v0")
    assert not (minari_root / "test" / "bad-v0").exists()


def test_a_dataset_without_episodes_names_itself_and_its_state(minari_root: Path) -> None:
    path = save_minari(make_store([3, 2]), "test/cut-v0")
    meta_file = path / "data" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta.update(total_episodes=0, total_steps=0)  # what an interrupted minari creation leaves
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"'test/cut-v0' at .*test/cut-v0 has no episodes \(its metadata says "
                                         r"total_episodes=0\): it is empty or was not completely written"):
        load_episodes("test/cut-v0")


def test_non_finite_observations_are_refused_by_key_and_dataset(minari_root: Path) -> None:
    obs = np.zeros((5, 3), np.float32)
    obs[2, 1] = np.nan
    buffer = EpisodeBuffer(observations=obs, actions=np.zeros((4, 2), np.float32), rewards=np.ones(4),
                           terminations=np.zeros(4, bool), truncations=np.array([0, 0, 0, 1], bool))
    minari.create_dataset_from_buffers("test/nan-v0", [buffer], action_space=gym.spaces.Box(-1, 1, (2,)),
                                       observation_space=gym.spaces.Box(-np.inf, np.inf, (3,)))
    with pytest.raises(ValueError, match=r"'observations' holds a non-finite value \(nan\) at row 2 \(episode 0, "
                                         r"step 2\) in .*test/nan-v0"):
        load_episodes("test/nan-v0")
