"""EpisodeStore: layout, validation, episodes, returns, selection, summary."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_rl.data import EpisodeStore
from tests.data.conftest import make_store


def test_layout_and_episode_access() -> None:
    store = make_store([4, 2, 3])
    assert store.num_episodes == 3 and store.num_steps == 9 and len(store) == 9
    assert store.episode_ends.dtype == np.int64
    np.testing.assert_array_equal(store.episode_ends, [4, 6, 9])
    np.testing.assert_array_equal(store.episode_starts, [0, 4, 6])
    np.testing.assert_array_equal(store.episode_lengths(), [4, 2, 3])
    ep = store.episode(1)
    np.testing.assert_array_equal(ep["observations"][:, :2], [[1, 0], [1, 1]])
    np.testing.assert_array_equal(store.episode(-1)["observations"][:, 0], [2, 2, 2])
    assert "rewards" in store and store["rewards"].shape == (9,)
    assert set(store.keys()) >= {"observations", "actions", "rewards", "terminals", "timeouts", "infos/goal"}
    with pytest.raises(KeyError, match="available keys"):
        store["reward"]
    with pytest.raises(IndexError):
        store.episode(3)


def test_episode_returns_sum_rewards_per_episode() -> None:
    store = EpisodeStore({"rewards": np.array([1.0, 2.0, 3.0, 10.0, 20.0])}, [3, 5])
    np.testing.assert_allclose(store.episode_returns(), [6.0, 30.0])


@pytest.mark.parametrize(
    "ends, message",
    [
        ([3, 3, 5], "strictly increasing"),
        ([0, 5], "strictly increasing"),
        ([2.0, 5.0], "integer"),
        ([2, 4], "expected 4 rows"),
    ],
)
def test_validation_errors(ends: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EpisodeStore({"rewards": np.zeros(5)}, np.array(ends))


def test_flags_are_bool_and_rewards_flat() -> None:
    store = EpisodeStore({"rewards": np.ones((3, 1)), "terminals": np.array([0.0, 0.0, 1.0])}, [3])
    assert store["rewards"].shape == (3,) and store["terminals"].dtype == bool


def test_select_and_concatenate_keep_episodes_intact() -> None:
    store = make_store([4, 2, 3])
    picked = store.select_episodes([2, 0])
    np.testing.assert_array_equal(picked.episode_ends, [3, 7])
    negative = np.array([-1, 0])  # counted from the end, and the caller's array left as it was
    np.testing.assert_array_equal(store.select_episodes(negative)["observations"][:, 0], picked["observations"][:, 0])
    np.testing.assert_array_equal(negative, [-1, 0])
    np.testing.assert_array_equal(picked["observations"][:, 0], [2, 2, 2, 0, 0, 0, 0])
    both = EpisodeStore.concatenate([store, picked])
    np.testing.assert_array_equal(both.episode_ends, [4, 6, 9, 12, 16])
    np.testing.assert_array_equal(both["rewards"][9:], picked["rewards"])
    rebuilt = EpisodeStore.from_episodes([store.episode(i) for i in range(3)])
    for key in store.keys():
        np.testing.assert_array_equal(rebuilt[key], store[key])
    np.testing.assert_array_equal(rebuilt.episode_ends, store.episode_ends)


def test_summary_reports_counts_and_normalized_returns() -> None:
    store = EpisodeStore(
        {"rewards": np.array([1000.0, 2000.0, 3234.3])}, [2, 3], {"spec_name": "hopper-medium"}
    )
    text = store.summary()
    assert "episodes: 2" in text and "steps: 3" in text
    assert "return: mean 3117.15 min 3000.00 max 3234.30" in text
    # hopper: 100 * (3234.3 + 20.272305) / (3234.3 + 20.272305) = 100 for the second episode
    assert "max 100.0" in text


def test_from_episodes_refuses_keys_of_other_lengths_by_episode_and_key() -> None:
    def episode(n: int) -> dict[str, np.ndarray]:
        return {"observations": np.zeros((n, 3)), "actions": np.zeros((n, 2))}

    with pytest.raises(ValueError, match=r"episode 0: every key must have its 5 steps \(those of 'observations'\); "
                                         r"got \{'actions': 4\}"):
        EpisodeStore.from_episodes([{**episode(5), "actions": np.zeros((4, 2))}, episode(3)])
    assert EpisodeStore.from_episodes([episode(5), episode(3)]).episode_ends.tolist() == [5, 8]


@pytest.mark.parametrize("key, bad", [("observations", np.nan), ("rewards", -np.inf), ("next_observations", np.inf)])
def test_non_finite_values_are_refused_by_key_row_episode_and_file(key: str, bad: float) -> None:
    store = make_store([4, 3, 5])
    data = {k: v.copy() for k, v in store.items()}
    data[key][5] = bad  # episode 1, step 1
    with pytest.raises(ValueError, match=rf"'{key}' holds a non-finite value \({bad}\) at row 5 "
                                         r"\(episode 1, step 1\) in /data/x\.hdf5"):
        EpisodeStore(data, store.episode_ends, {"path": "/data/x.hdf5"})


def test_non_finite_infos_and_integer_arrays_pass() -> None:
    store = make_store([4, 3])
    data = dict(store.items())
    data["infos/goal"] = np.full((7, 2), np.nan)  # auxiliary: NaN may mean "missing"
    data["pixels"] = np.zeros((7, 2, 2), np.uint8)
    assert EpisodeStore(data, store.episode_ends)["infos/goal"].shape == (7, 2)


@pytest.mark.parametrize("key", ["rewards", "terminals", "timeouts"])
def test_per_step_scalars_of_other_shapes_are_refused_by_key(key: str) -> None:
    with pytest.raises(ValueError, match=rf"'{key}' has shape \(5, 2\); expected one value per step, shape \[5\] "
                                         r"or \[5, 1\] in f\.hdf5"):
        EpisodeStore({key: np.zeros((5, 2))}, [5], {"path": "f.hdf5"})


def test_select_episodes_takes_a_bool_mask_and_refuses_other_dtypes() -> None:
    store = make_store([4, 2, 3])
    mask = np.array([False, True, True])  # was read as the indices [0, 1, 1]
    picked = store.select_episodes(mask)
    np.testing.assert_array_equal(picked.episode_ends, [2, 5])
    np.testing.assert_array_equal(picked["observations"][:, 0], [1, 1, 2, 2, 2])
    with pytest.raises(ValueError, match=r"a bool episode mask needs one value per episode \(3\), got shape \(2,\)"):
        store.select_episodes([True, False])
    with pytest.raises(ValueError, match="episode indices must be integers or a bool mask, got dtype float64"):
        store.select_episodes([0.5, 1.0])
    assert store.select_episodes([]).num_episodes == 0


def test_parts_with_other_feature_sizes_are_refused_by_name() -> None:
    """hopper (11 observations) and walker (17) stores concatenated by mistake: numpy's error named neither the
    key nor the part."""
    hopper = EpisodeStore({"observations": np.zeros((4, 11)), "actions": np.zeros((4, 3)), "rewards": np.zeros(4),
                           "terminals": np.zeros(4, bool)}, [2, 4])
    walker = EpisodeStore({"observations": np.zeros((3, 17)), "actions": np.zeros((3, 3)), "rewards": np.zeros(3),
                           "terminals": np.zeros(3, bool)}, [3])
    with pytest.raises(ValueError, match=r"store 1: 'observations' has per-step shape \[17\]; expected \[11\], as "
                                         r"store 0 has"):
        EpisodeStore.concatenate([hopper, walker])
    with pytest.raises(ValueError, match=r"episode 1: 'observations' has per-step shape \[17\]; expected \[11\]"):
        EpisodeStore.from_episodes([hopper.episode(0), walker.episode(0)])
    assert EpisodeStore.concatenate([hopper, hopper]).num_episodes == 4


@pytest.mark.parametrize("values", [np.zeros((3, 2), dtype=complex), np.array([["a", "b"]] * 3)])
def test_observations_that_are_not_real_numbers_are_refused_by_key(values):
    """Complex observations lost their imaginary parts with only numpy's warning; strings failed later in a float
    conversion that named no key."""
    with pytest.raises(ValueError, match=rf"array 'observations' has dtype {values.dtype}; expected real numbers"):
        EpisodeStore({"observations": values, "actions": np.zeros((3, 1))}, [3])
