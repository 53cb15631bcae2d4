"""D4RL HDF5 files: episode boundaries as D4RL splits them, metadata keys, required keys, atomic writes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from diffusion_rl.data import EpisodeStore, d4rl_episode_ends, load_d4rl_hdf5, load_episodes, save_d4rl_hdf5
from diffusion_rl.data import d4rl_hdf5 as d4rl_module
from tests.data.conftest import make_store


def _write_d4rl_file(path: Path, n: int = 12) -> None:
    """A file laid out like D4RL's v2 locomotion files: timeouts, next_observations, infos/*, metadata/*."""
    rng = np.random.default_rng(0)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[2] = True  # episode [0, 3) terminates
    timeouts[6] = True  # episode [3, 7) is cut by the time limit
    terminals[9] = True  # episode [7, 10) terminates; steps 10, 11 are an unfinished episode
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, 3)).astype(np.float32)
        f["next_observations"] = rng.normal(size=(n, 3)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        f["rewards"] = np.arange(n, dtype=np.float32)
        f["terminals"] = terminals
        f["timeouts"] = timeouts
        f["infos/qpos"] = rng.normal(size=(n, 4))
        f["infos/action_log_probs"] = rng.normal(size=n)
        f["metadata/algorithm"] = "SAC"
        f["metadata/iteration"] = 42
        f["metadata/policy/fc0/weight"] = rng.normal(size=(8, 3))  # D4RL keeps policy weights here
        f["metadata/policy/nonlinearity"] = b"relu"


def test_d4rl_layout_gives_exact_episode_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "hopper-medium-v2.hdf5"
    _write_d4rl_file(path)
    store = load_episodes(path)
    np.testing.assert_array_equal(store.episode_ends, [3, 7, 10])  # the unfinished last episode is dropped
    np.testing.assert_array_equal(store["rewards"], np.arange(10))
    np.testing.assert_array_equal(store.episode_returns(), [0 + 1 + 2, 3 + 4 + 5 + 6, 7 + 8 + 9])
    np.testing.assert_array_equal(store["terminals"][store.episode_ends - 1], [True, False, True])
    np.testing.assert_array_equal(store["timeouts"][store.episode_ends - 1], [False, True, False])
    assert store["infos/qpos"].shape == (10, 4) and store["next_observations"].shape == (10, 3)
    assert store.metadata["algorithm"] == "SAC" and store.metadata["iteration"] == 42
    assert store.metadata["policy/nonlinearity"] == "relu"
    assert (
        "policy/fc0/weight" not in store.metadata
    )  # arrays under metadata/ are skipped, never break loading
    assert store.metadata["dropped_partial_steps"] == 2 and store.metadata["format"] == "d4rl_hdf5"
    kept = load_d4rl_hdf5(path, keep_partial=True)
    np.testing.assert_array_equal(kept.episode_ends, [3, 7, 10, 12])
    # how a file was read is not copied into a file written from the store (which has no tail to drop)
    again = load_d4rl_hdf5(save_d4rl_hdf5(store, tmp_path / "again.hdf5"))
    assert "dropped_partial_steps" not in again.metadata and again.metadata["algorithm"] == "SAC"


def test_split_rule_matches_d4rl_sequence_dataset() -> None:
    """Reference: D4RL's sequence_dataset loop (an episode ends after terminals[i] or timeouts[i])."""
    rng = np.random.default_rng(1)
    terminals, timeouts = rng.random(300) < 0.03, rng.random(300) < 0.02

    lengths, current = [], 0
    for i in range(300):
        current += 1
        if terminals[i] or timeouts[i]:
            lengths.append(current)
            current = 0
    np.testing.assert_array_equal(d4rl_episode_ends(terminals, timeouts), np.cumsum(lengths))


def test_files_without_timeouts_split_on_terminals_and_time_limit() -> None:
    terminals = np.zeros(10, bool)
    terminals[1] = True
    np.testing.assert_array_equal(d4rl_episode_ends(terminals), [2])
    np.testing.assert_array_equal(d4rl_episode_ends(terminals, max_episode_steps=3), [2, 5, 8])
    np.testing.assert_array_equal(
        d4rl_episode_ends(terminals, max_episode_steps=3, keep_partial=True), [2, 5, 8, 10]
    )
    # a timeouts array with no flag set is no timeouts, called directly as through the loader (it ignored the limit)
    np.testing.assert_array_equal(d4rl_episode_ends(terminals, np.zeros(10), max_episode_steps=3), [2, 5, 8])
    with pytest.raises(ValueError, match=r"'timeouts' holds 0.5 at row 3; expected flags"):
        d4rl_episode_ends(terminals, np.array([0, 0, 0, 0.5, 0, 0, 0, 0, 0, 1]))


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((4, 3))
        f["rewards"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['actions', 'terminals'\]"):
        load_episodes(path)


def test_a_file_that_is_not_hdf5_is_named_with_what_was_expected(tmp_path: Path) -> None:
    path = tmp_path / "notes.hdf5"
    path.write_text("not an HDF5 file")
    with pytest.raises(ValueError, match=r"notes.hdf5 is not a readable HDF5 file \(.*\); expected a D4RL-layout"):
        load_episodes(path)


@pytest.mark.parametrize("with_timeouts", [True, False])
def test_steps_that_never_end_an_episode_are_refused_with_the_ways_out(tmp_path: Path, with_timeouts: bool) -> None:
    path = tmp_path / "open.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"], f["actions"] = np.zeros((10, 3)), np.zeros((10, 2))
        f["rewards"], f["terminals"] = np.zeros(10), np.zeros(10, dtype=bool)
        if with_timeouts:
            f["timeouts"] = np.zeros(10, dtype=bool)
    # a 'timeouts' with no flag set ends nothing, as a missing one: max_episode_steps is a way out for both (it
    # was silently ignored beside a 'timeouts' dataset, and the message left it out)
    cut = "max_episode_steps=N to cut episodes every N steps, or "
    with pytest.raises(ValueError, match=rf"none of its 10 steps ends an episode .*; pass {cut}keep_partial=True"):
        load_episodes(path)
    assert load_d4rl_hdf5(path, keep_partial=True).num_episodes == 1
    cut_store = load_d4rl_hdf5(path, max_episode_steps=5)
    assert cut_store.num_episodes == 2 and cut_store["timeouts"].tolist() == [False] * 4 + [True] + [False] * 4 + [True]


def test_a_file_with_no_steps_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"], f["actions"] = np.zeros((0, 3)), np.zeros((0, 2))
        f["rewards"], f["terminals"] = np.zeros(0), np.zeros(0, dtype=bool)
    with pytest.raises(ValueError, match=r"empty.hdf5: holds no steps \('rewards' has 0 rows\)"):
        load_d4rl_hdf5(path)


def test_write_then_read_is_equal_and_marks_open_episode_ends(tmp_path: Path) -> None:
    store = make_store([5, 3, 4], terminal_last=(0,))
    store["timeouts"][store.episode_ends[2] - 1] = False  # an episode that ended without either flag
    path = save_d4rl_hdf5(store, tmp_path / "made.hdf5", metadata={"source": "test", "ref_min_score": -1.5})
    back = load_episodes(path)
    np.testing.assert_array_equal(back.episode_ends, store.episode_ends)
    for key in store.keys():
        if key != "timeouts":
            np.testing.assert_array_equal(back[key], store[key], err_msg=key)
    assert back["timeouts"][11]  # D4RL carries episode ends only in the flags
    assert back.metadata["source"] == "test" and back.metadata["ref_min_score"] == -1.5
    assert back.metadata["note"] == "made in a test"


def test_interrupted_write_leaves_nothing_loadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store([5, 3])
    written = []

    def failing_write(f, key, array, compression):
        if written:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the first array
        written.append(key)
        f.create_dataset(key, data=array)

    monkeypatch.setattr(d4rl_module, "_write_dataset", failing_write)
    target = tmp_path / "made.hdf5"
    with pytest.raises(KeyboardInterrupt):
        save_d4rl_hdf5(store, target)
    assert written and not target.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too
    with pytest.raises(FileNotFoundError):
        load_episodes(target)


def test_existing_file_needs_overwrite(tmp_path: Path) -> None:
    store = make_store([3])
    path = save_d4rl_hdf5(store, tmp_path / "a.hdf5")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_d4rl_hdf5(store, path)
    save_d4rl_hdf5(make_store([4]), path, overwrite=True)
    assert load_episodes(path).num_steps == 4


def _dict_observation_store(goal: bool) -> EpisodeStore:
    """A store as load_minari makes from dict observations: ``observations`` is ``observations/observation``."""
    store = make_store([3, 4])
    arrays = dict(store.items())
    arrays["observations/observation"] = arrays["observations"]
    if goal:
        arrays["observations/desired_goal"] = np.ones((store.num_steps, 2))
    return EpisodeStore(arrays, store.episode_ends, store.metadata)


@pytest.mark.parametrize("fmt", ["hdf5", "zarr"])
def test_dict_observations_are_written_once_or_refused_by_name(tmp_path: Path, fmt: str) -> None:
    from diffusion_rl.data import load_zarr, save_zarr

    save, load = (save_d4rl_hdf5, load_d4rl_hdf5) if fmt == "hdf5" else (save_zarr, load_zarr)
    store = _dict_observation_store(goal=False)
    written = load(save(store, tmp_path / f"alias.{fmt}"))  # the loader's copy: written once, as observations
    np.testing.assert_array_equal(written["observations"], store["observations"])
    assert "observations/observation" not in written
    with pytest.raises(ValueError, match=r"one array per name, so \['observations'\] cannot also be folders of "
                                         r"\['observations/desired_goal'\].*save_minari"):
        save(_dict_observation_store(goal=True), tmp_path / f"goal.{fmt}")
    assert not (tmp_path / f"goal.{fmt}").exists()



def test_a_flag_inside_an_episode_is_refused_rather_than_splitting_it(tmp_path: Path) -> None:
    store = make_store([6, 4])
    data = {k: store[k].copy() for k in store.keys()}
    data["terminals"][1] = True  # inside episode 0: the file would read back as episodes of 2, 4 and 4 steps
    flagged = EpisodeStore(data, store.episode_ends, store.metadata)
    with pytest.raises(ValueError, match=r"flags 1 step\(s\) inside an episode \(rows \[1\]\)"):
        save_d4rl_hdf5(flagged, tmp_path / "flagged.hdf5")
    assert not (tmp_path / "flagged.hdf5").exists()


def test_non_finite_values_in_a_file_are_refused_by_key_row_episode_and_file(tmp_path: Path) -> None:
    path = tmp_path / "inf obs.hdf5"
    _write_d4rl_file(path)
    with h5py.File(path, "r+") as f:
        f["observations"][8, 1] = np.inf
    with pytest.raises(ValueError, match=r"'observations' holds a non-finite value \(inf\) at row 8 "
                                         r"\(episode 2, step 1\) in .*inf obs\.hdf5"):
        load_d4rl_hdf5(path)
    with h5py.File(path, "r+") as f:
        f["observations"][8, 1] = 0.0
        f["observations"][11, 0] = np.nan  # in the unfinished tail that D4RL's rule drops: never read
    assert load_d4rl_hdf5(path).num_steps == 10


@pytest.mark.parametrize("key", ["rewards", "terminals"])
def test_per_step_scalars_with_several_columns_are_refused_by_name(tmp_path: Path, key: str) -> None:
    path = tmp_path / "wide.hdf5"
    _write_d4rl_file(path)
    with h5py.File(path, "r+") as f:
        column = f[key][()]
        del f[key]
        f[key] = np.stack([column, column], axis=1)
    with pytest.raises(ValueError, match=rf"wide\.hdf5: dataset '{key}' has shape \(12, 2\); expected one value "
                                         r"per step, shape \[12\] or \[12, 1\]"):
        load_d4rl_hdf5(path)


def test_column_terminals_without_timeouts_split_by_the_time_limit(tmp_path: Path) -> None:
    """terminals of shape [N, 1] (accepted) with max_episode_steps: timeouts are made per step, not [N, N]."""
    n = 10
    path = tmp_path / "col.hdf5"
    with h5py.File(path, "w") as f:
        f["observations"] = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
        f["actions"] = np.zeros((n, 1), np.float32)
        f["rewards"] = np.ones((n, 1), np.float32)
        terminals = np.zeros((n, 1), bool)
        terminals[3] = True
        f["terminals"] = terminals
    store = load_d4rl_hdf5(path, max_episode_steps=4)
    np.testing.assert_array_equal(store.episode_ends, [4, 8])  # the fall at step 3, then 4 steps cut by the limit
    np.testing.assert_array_equal(store["timeouts"].reshape(-1), [0, 0, 0, 0, 0, 0, 0, 1])


@pytest.mark.parametrize("value", [np.nan, 0.5, 2.0])
def test_flags_other_than_zero_and_one_are_refused_by_key_row_and_file(tmp_path: Path, value: float) -> None:
    """A NaN or a 0.5 among float terminals was cast to True: an episode end (and a terminal penalty) where the
    data had none."""
    path = tmp_path / "flags.hdf5"
    _write_d4rl_file(path)
    with h5py.File(path, "r+") as f:
        terminals = f["terminals"][()].astype(np.float32)
        terminals[4] = value
        del f["terminals"]
        f["terminals"] = terminals
    with pytest.raises(ValueError, match=rf"'terminals' holds {value} at row 4 in .*flags.hdf5; expected flags"):
        load_d4rl_hdf5(path)
    with pytest.raises(ValueError, match=rf"'timeouts' holds {value} at row 1; expected flags"):
        EpisodeStore({"rewards": np.zeros(3), "timeouts": np.array([0.0, value, 1.0])}, [3])


def test_a_required_dataset_holding_one_value_is_refused_by_name(tmp_path: Path) -> None:
    """A scalar 'actions' was read as metadata and then reported missing from the store, deep in training."""
    path = tmp_path / "scalar.hdf5"
    _write_d4rl_file(path)
    with h5py.File(path, "r+") as f:
        del f["actions"]
        f["actions"] = np.float32(0.5)
    with pytest.raises(ValueError, match=r"required dataset\(s\) \['actions'\] hold a single value; expected"):
        load_d4rl_hdf5(path)
