"""make_local_dataset: recipe -> Minari dataset ``local/<env>/<quality>-v0`` (small collections)."""

from __future__ import annotations

import h5py
import minari
import numpy as np
import pytest

from diffusion_rl.data.make import make_local_dataset
from diffusion_rl.data.minari_io import datasets_path
from envs import get_spec
from envs.recipes.collect import COLLECTORS
from envs.recipes.recipes import WEIGHTS_DIR


def _load(root, dataset_id):
    with datasets_path(root):
        return minari.load_dataset(dataset_id)


def test_make_maze2d_writes_loadable_minari_and_hdf5(tmp_path, capsys):
    root = tmp_path / "minari"
    path = make_local_dataset("maze2d-umaze", num_steps=900, minari_root=root, hdf5_path=tmp_path / "u.hdf5",
                              seed=1)
    assert path == root / "local/maze2d/umaze-v0"
    ds = _load(root, "local/maze2d/umaze-v0")
    assert (ds.total_steps, ds.total_episodes) == (900, 3)
    meta = ds.storage.metadata
    spec = get_spec("maze2d-umaze")
    assert meta["locally_made"] is True or meta["locally_made"] == 1
    assert "waypoint" in meta["recipe"] and meta["catalogue_name"] == "maze2d-umaze"
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (spec.ref_min_score, spec.ref_max_score)
    assert meta["official_minari_id"] == spec.minari_id
    ep = next(ds.iterate_episodes())
    assert ep.observations.shape == (301, 4) and ep.infos["goal"].shape[1] == 2
    with h5py.File(tmp_path / "u.hdf5") as f:
        assert f["observations"].shape == (900, 4)
        assert int(f["timeouts"][()].sum()) == 3 and not f["terminals"][()].any()
        np.testing.assert_allclose(f["observations"][:300], ep.observations[:300])
    out = capsys.readouterr().out
    assert "900 steps, 3 episodes" in out and "normalized return" in out and str(path) in out


def test_make_refuses_existing_unless_overwrite(tmp_path):
    root = tmp_path / "m"
    make_local_dataset("maze2d-umaze", num_steps=300, minari_root=root, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_local_dataset("maze2d-umaze", num_steps=300, minari_root=root, progress=False)
    make_local_dataset("maze2d-umaze", num_steps=600, minari_root=root, progress=False, overwrite=True)
    assert _load(root, "local/maze2d/umaze-v0").total_steps == 600


def test_make_bad_input(tmp_path):
    with pytest.raises(ValueError, match="hopper-medium.*maze2d-umaze|maze2d-umaze.*hopper-medium"):
        make_local_dataset("hopper-mediocre", num_steps=10, minari_root=tmp_path)
    with pytest.raises(ValueError, match="num_steps"):
        make_local_dataset("maze2d-umaze", num_steps=0, minari_root=tmp_path)


def test_interrupted_collection_leaves_no_dataset(tmp_path, monkeypatch):
    real = COLLECTORS["maze2d"]
    calls = []

    def interrupted(env_id, steps, seed, params):
        calls.append(steps)
        real(env_id, steps, seed, params)
        raise KeyboardInterrupt  # Ctrl-C at the last moment: every step collected, nothing written yet

    monkeypatch.setitem(COLLECTORS, "maze2d", interrupted)
    root = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        make_local_dataset("maze2d-umaze", num_steps=1200, minari_root=root, progress=False, num_workers=1,
                           hdf5_path=tmp_path / "x.hdf5")
    assert calls == [1200]
    assert not (root / "local/maze2d/umaze-v0").exists()
    assert not (tmp_path / "x.hdf5").exists()
    with pytest.raises(FileNotFoundError):
        _load(root, "local/maze2d/umaze-v0")


@pytest.mark.skipif(not (WEIGHTS_DIR / "hopper-medium.npz").exists(), reason="no hopper weights")
def test_make_hopper_medium_small(tmp_path):
    root = tmp_path / "m"
    make_local_dataset("hopper-medium", num_steps=4000, minari_root=root, progress=False)
    ds = _load(root, "local/hopper/medium-v0")
    assert ds.total_steps == 4000
    assert ds.env_spec.id == "Hopper-v5"
    meta = ds.storage.metadata
    assert "ARS" in meta["recipe"] and meta["ref_max_score"] == 3234.3
    returns = np.array([ep.rewards.sum() for ep in ds.iterate_episodes()])
    assert returns.max() > 500  # a walking hopper, not a random one
    # loaded by its catalogue name (what train_planner env=hopper-medium does), a smoke-test-sized dataset says so
    from diffusion_rl.data import load_episodes

    with pytest.warns(UserWarning, match=r"local/hopper/medium-v0 holds 4,000 steps, not the 1,000,000 of "
                                         r"hopper-medium's recipe .*make_dataset.py env=hopper-medium overwrite=true"):
        store = load_episodes("hopper-medium", minari_root=root, progress=False)
    assert store.num_steps == 4000
    # its dataset mean (eval.json's reference column) is the metadata's, over the episodes that ended in the env
    from diffusion_rl.data.make import dataset_mean_normalized_return

    assert dataset_mean_normalized_return(store, get_spec("hopper-medium")) == meta["mean_normalized_return"]


def test_the_metadata_names_the_algorithm_of_each_recipes_behaviour():
    from diffusion_rl.data.make import _algorithm_name
    from envs.recipes import recipe_for

    assert _algorithm_name(recipe_for("hopper-medium")) == "ARS V2-t linear policy"
    assert _algorithm_name(recipe_for("walker2d-medium")) == "SAC MLP policy"  # the committed SAC policies
    assert _algorithm_name(recipe_for("maze2d-umaze")) == "scripted waypoint controller"


def test_a_bad_hdf5_path_is_refused_before_collecting(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("run_recipe ran before hdf5_path was checked")

    monkeypatch.setattr("diffusion_rl.data.make.run_recipe", never)
    root = tmp_path / "m"
    with pytest.raises(ValueError, match=r"\.hdf5 or \.h5, got 'copy\.hdf'"):
        make_local_dataset("maze2d-umaze", num_steps=300, minari_root=root, hdf5_path=tmp_path / "copy.hdf")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="a_file is not a folder"):
        make_local_dataset("maze2d-umaze", num_steps=300, minari_root=root,
                           hdf5_path=tmp_path / "a_file" / "sub" / "copy.hdf5")
    assert not root.exists()  # nothing written either


def test_only_official_minari_datasets_that_exist_are_named(tmp_path):
    """Minari's mujoco namespace publishes simple, medium and expert sets: medium-replay and medium-expert have no
    official id (the catalogue named ids that do not exist, and the errors told users to look for them)."""
    from diffusion_rl.data import DatasetNotFoundError, load_episodes
    from envs import get_spec

    assert get_spec("hopper-medium").minari_id == "mujoco/hopper/medium-v0"
    assert get_spec("walker2d-expert").minari_id == "mujoco/walker2d/expert-v0"
    for name in ("hopper-medium-replay", "halfcheetah-medium-expert"):
        assert get_spec(name).minari_id is None
    with pytest.raises(KeyError, match="unknown environment"):
        get_spec("mujoco/hopper/medium-replay-v0")
    with pytest.raises(DatasetNotFoundError, match=r"Minari publishes no official hopper-medium-replay dataset; "
                                                   r"D4RL's is hopper-medium-replay-v2"):
        load_episodes("hopper-medium-replay", minari_root=tmp_path)


def test_a_local_dataset_from_an_earlier_recipe_revision_warns_on_load(tmp_path, monkeypatch):
    """The maze recipe's rewards changed (revision 2: towards the evaluation goal, as D4RL's v1 files); a dataset
    made before says so when it is loaded by its catalogue name, with the command that remakes it."""
    import warnings

    import diffusion_rl.data.make as make_mod
    from diffusion_rl.data import load_episodes

    root = tmp_path / "m"
    make_local_dataset("maze2d-umaze", num_steps=1200, minari_root=root, progress=False)
    assert _load(root, "local/maze2d/umaze-v0").storage.metadata["recipe_revision"] == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_episodes("maze2d-umaze", minari_root=root, progress=False)
    assert not [w for w in caught if "revision" in str(w.message)]  # made now: only the small-size warning
    old = make_mod._metadata

    def before_revisions(*args, **kwargs):  # what make_dataset wrote before revisions were recorded
        meta = old(*args, **kwargs)
        del meta["recipe_revision"]
        return meta

    monkeypatch.setattr(make_mod, "_metadata", before_revisions)
    make_local_dataset("maze2d-umaze", num_steps=1200, minari_root=root, progress=False, overwrite=True)
    with pytest.warns(UserWarning, match=r"local/maze2d/umaze-v0 was made with revision 1 of maze2d-umaze's recipe, "
                                         r"which is now at revision 2 \(revision 2 labels rewards towards the "
                                         r"evaluation goal.*make_dataset.py env=maze2d-umaze overwrite=true"):
        load_episodes("maze2d-umaze", minari_root=root, progress=False)
    with pytest.warns(UserWarning, match=r"was made with revision 1 of maze2d-umaze's recipe"):  # and copying it
        make_local_dataset("maze2d-umaze", num_steps=1200, minari_root=root, hdf5_path=tmp_path / "c.hdf5",
                           progress=False)


def test_the_hdf5_copy_of_an_existing_dataset_is_written_without_collecting_again(tmp_path, monkeypatch, capsys):
    """A run killed after the dataset was written but before its hdf5= copy: the rerun was refused ("already
    exists") and overwrite=True collected everything again; now the copy is written from the dataset made."""
    root = tmp_path / "m"
    make_local_dataset("maze2d-umaze", num_steps=1200, seed=3, minari_root=root, progress=False)

    def never(*args, **kwargs):
        raise AssertionError("collected again")

    monkeypatch.setattr("diffusion_rl.data.make.run_recipe", never)
    copy = tmp_path / "umaze.hdf5"
    path = make_local_dataset("maze2d-umaze", num_steps=1200, seed=3, minari_root=root, hdf5_path=copy, progress=True)
    assert path == root / "local/maze2d/umaze-v0" and "wrote its D4RL-layout copy" in capsys.readouterr().out
    with h5py.File(copy) as f:
        assert f["observations"].shape == (1200, 4) and f["metadata/seed"][()] == 3
    from diffusion_rl.data import load_episodes

    made = load_episodes("maze2d-umaze", minari_root=root, progress=False)
    np.testing.assert_array_equal(load_episodes(str(copy))["rewards"], made["rewards"])
    for kwargs, made in (({"seed": 4, "num_steps": 1200}, r"\(seed 3, 1200 steps\), not the seed 4, 1200 steps"),
                         ({"seed": 3}, r"\(seed 3, 1200 steps\), not the seed 3, 1000000 steps")):
        with pytest.raises(FileExistsError, match=made + r" asked for; pass overwrite=True to remake it"):
            make_local_dataset("maze2d-umaze", minari_root=root, hdf5_path=tmp_path / "other.hdf5", progress=False,
                               **kwargs)
    assert not (tmp_path / "other.hdf5").exists()


def test_the_dataset_mean_is_the_metadatas_complete_episode_mean_else_every_episode():
    """pipeline's eval.json `dataset_mean_normalized_return` and the dataset's metadata follow one rule: a locally
    made store's cut episodes (short, low-scoring) are left out, as its metadata's mean_normalized_return does."""
    from diffusion_rl.data import EpisodeStore
    from diffusion_rl.data.make import dataset_mean_normalized_return

    spec = get_spec("hopper-medium")
    rewards = np.concatenate([np.full(10, 100.0), np.full(10, 200.0), np.full(2, 5.0)]).astype(np.float32)
    data = {"observations": np.zeros((22, 11), np.float32), "actions": np.zeros((22, 3), np.float32),
            "rewards": rewards, "terminals": np.zeros(22, bool), "timeouts": np.zeros(22, bool)}
    every = float(np.mean(spec.normalized_score(np.array([1000.0, 2000.0, 10.0]))))
    plain = EpisodeStore(data, [10, 20, 22], {})
    assert dataset_mean_normalized_return(plain, spec) == pytest.approx(every)
    complete = float(np.mean(spec.normalized_score(np.array([1000.0, 2000.0]))))  # the cut 2-step one left out
    made = EpisodeStore(data, [10, 20, 22], {"mean_normalized_return": round(complete, 3),
                                             "ref_min_score": spec.ref_min_score, "ref_max_score": spec.ref_max_score})
    assert dataset_mean_normalized_return(made, spec) == pytest.approx(complete, abs=1e-3) and complete > every
    other_refs = EpisodeStore(data, [10, 20, 22], {"mean_normalized_return": 1.0, "ref_min_score": 0.0,
                                                   "ref_max_score": 1.0})
    assert dataset_mean_normalized_return(other_refs, spec) == pytest.approx(every)  # not this env's scale
