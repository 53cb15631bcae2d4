"""The policy artifact: ``model.safetensors`` + ``config.json`` (a folder) or one ``.safetensors`` file.

Round trips give the same actions; the config says what it holds; loading uses no pickle; foreign, damaged and
newer files are refused with clear messages; saving replaces an old artifact atomically.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffusion_rl import Policy, artifact
from diffusion_rl.artifact import FORMAT_VERSION, ArtifactError
from tests.test_policy import ACT_DIM, HORIZON, OBS_DIM, make_policy, raw_obs

torch.set_num_threads(1)

ALGOS = ["decision_diffuser", "diffuser"]
LAYOUTS = {"folder": "policy", "file": "policy.safetensors"}


def actions_after_reset(policy: Policy, obs: np.ndarray, calls: int = 2) -> list[np.ndarray]:
    policy.reset()
    return [policy.act(obs) for _ in range(calls)]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A decision-diffuser artifact folder shared by the tests (each copies it before damaging it)."""
    root = tmp_path_factory.mktemp("artifact")
    return make_policy("decision_diffuser").save(root / "policy")


def copy_artifact(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("model.safetensors", "config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


# --- round trips --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algo", ALGOS)
def test_round_trip_gives_identical_actions(tmp_path, algo, layout):
    policy = make_policy(algo, seed=7)
    policy.steps = 3  # a changed setting travels with the artifact
    path = policy.save(tmp_path / LAYOUTS[layout])
    assert path == tmp_path / LAYOUTS[layout]
    assert path.is_dir() == (layout == "folder")
    loaded = Policy.load(path, device="cpu")
    assert type(loaded.algo) is type(policy.algo)
    assert loaded.sampling == policy.sampling and loaded.steps == 3
    assert loaded.env_name == "hopper-medium" and loaded.seed == 7 and loaded.execution == policy.execution
    assert (loaded.obs_dim, loaded.act_dim) == (OBS_DIM, ACT_DIM)
    for key, norm in policy.normalizers.items():
        for stat_name, value in norm.state_dict().items():
            np.testing.assert_array_equal(loaded.normalizers[key].state_dict()[stat_name], value)
    for name, tensor in policy.algo.state_dict().items():
        assert torch.equal(loaded.algo.state_dict()[name], tensor), name
    obs = raw_obs(batch=2)
    for a, b in zip(actions_after_reset(policy, obs), actions_after_reset(loaded, obs)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("algo", ALGOS)
def test_artifacts_of_the_previous_format_load_and_act_the_same(tmp_path, algo):
    """Artifacts written before executions had options (no ``execution_options`` key, no return normalizer)
    still load, with the default execution, and act exactly as the policy that wrote them."""
    policy = make_policy(algo, seed=3)
    path = policy.save(tmp_path / "policy")
    config = json.loads((path / "config.json").read_text())
    del config["execution_options"]
    (path / "config.json").write_text(json.dumps(config))
    loaded = Policy.load(path, device="cpu")
    assert loaded.execution == "first_action" and loaded.execution_options == {}
    obs = raw_obs(batch=2)
    for a, b in zip(actions_after_reset(policy, obs), actions_after_reset(loaded, obs)):
        np.testing.assert_array_equal(a, b)


def test_folder_config_says_what_the_artifact_holds(saved):
    assert listing(saved) == ["config.json", "model.safetensors"]
    assert not list(saved.glob("*.pt")) and not list(saved.glob("*.pkl")) and not list(saved.glob("*.pth"))
    config = json.loads((saved / "config.json").read_text())  # plain JSON, readable without this library
    for key in ("algorithm", "obs_dim", "act_dim", "horizon", "normalizers", "sampling", "env_name",
                "format_version"):
        assert key in config, key
    assert config["algorithm"] == "decision_diffuser"
    assert (config["obs_dim"], config["act_dim"], config["horizon"]) == (OBS_DIM, ACT_DIM, HORIZON)
    assert config["env_name"] == "hopper-medium" and config["format_version"] == FORMAT_VERSION
    assert config["sampling"]["steps"] == 4 and config["sampling"]["sampler"] == "ddim"
    assert set(config["normalizers"]) == {"observations", "actions"}
    obs_norm = config["normalizers"]["observations"]
    assert obs_norm["name"] == "gaussian" and len(obs_norm["mean"]["__ndarray__"]) == OBS_DIM
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        assert len(list(f.keys())) == len(make_policy("decision_diffuser").algo.state_dict())


def test_single_file_holds_the_config_in_its_metadata(tmp_path):
    path = make_policy("diffuser").save(tmp_path / "planner.safetensors")
    assert listing(tmp_path) == ["planner.safetensors"]
    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    assert config["algorithm"] == "diffuser" and config["format_version"] == FORMAT_VERSION
    assert config["sampling"]["num_plans"] == 4 and config["horizon"] == HORIZON


def test_artifact_files_get_ordinary_permissions(tmp_path):
    """Readable by the robot controller's account too (mkstemp/mkdtemp make files private)."""
    umask = os.umask(0o022)
    try:
        folder = make_policy("decision_diffuser").save(tmp_path / "policy")
        single = make_policy("decision_diffuser").save(tmp_path / "policy.safetensors")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for path in (folder / "model.safetensors", folder / "config.json", single):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_loading_needs_no_pickle(saved, tmp_path, monkeypatch):
    single = make_policy("decision_diffuser").save(tmp_path / "p.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("artifact loading must not unpickle anything")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, forbidden)
    for path in (saved, single):
        policy = Policy.load(path, device="cpu")
        assert policy.act(raw_obs()).shape == (ACT_DIM,)


# --- refusing what is not an artifact -----------------------------------------------------------------------


def test_missing_path_is_file_not_found_with_the_path(tmp_path):
    missing = tmp_path / "no" / "such_policy"
    with pytest.raises(FileNotFoundError) as err:
        Policy.load(missing)
    assert str(missing) in str(err.value)


def test_foreign_config_is_refused(saved, tmp_path):
    foreign = copy_artifact(saved, tmp_path / "foreign")
    (foreign / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(ArtifactError, match="not a diffusion_rl artifact") as err:
        Policy.load(foreign)
    assert isinstance(err.value, ValueError) and str(foreign) in str(err.value)
    (foreign / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ArtifactError, match="not a diffusion_rl artifact"):
        Policy.load(foreign)


def test_folder_without_weights_is_refused(tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"anything": 1}))
    with pytest.raises(ArtifactError, match="missing model.safetensors"):
        Policy.load(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match="missing model.safetensors, config.json"):
        Policy.load(empty)


def test_damaged_config_json_is_refused(saved, tmp_path):
    damaged = copy_artifact(saved, tmp_path / "damaged")
    text = (saved / "config.json").read_text()
    (damaged / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Policy.load(damaged)


@pytest.mark.parametrize("record", [{"__ndarray__": [1.0, 2.0], "dtype": "not_a_dtype"},
                                    {"__ndarray__": [[1.0], [2.0, 3.0]], "dtype": "float64"}])
def test_an_array_record_numpy_cannot_read_is_refused_naming_the_file(saved, tmp_path, record):
    damaged = copy_artifact(saved, tmp_path / "damaged")
    config = json.loads((saved / "config.json").read_text())
    config["normalizers"]["observations"]["mean"] = record
    (damaged / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"damaged: config.json holds an array numpy cannot read"):
        Policy.load(damaged)


@pytest.mark.parametrize("suffix", [".txt", ".safetensors", ""])
def test_random_text_file_is_refused(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("these are my notes about the hopper, not a model\n" * 20)
    with pytest.raises(ArtifactError, match="not a readable .safetensors artifact") as err:
        Policy.load(path)
    assert str(path) in str(err.value)


def test_safetensors_file_without_our_config_is_refused(tmp_path):
    path = tmp_path / "other_model.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ArtifactError, match="without a diffusion_rl config"):
        Policy.load(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_weights_are_refused(saved, tmp_path, keep):
    damaged = copy_artifact(saved, tmp_path / "truncated")
    data = (saved / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ArtifactError, match="damaged") as err:
        Policy.load(damaged)
    assert "model.safetensors" in str(err.value)


def test_truncated_single_file_is_refused(tmp_path):
    path = make_policy("diffuser").save(tmp_path / "p.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ArtifactError, match=str(path)):
        Policy.load(path)
    path.write_bytes(data[:5])
    with pytest.raises(ArtifactError):
        Policy.load(path)


def test_newer_format_version_is_refused(saved, tmp_path):
    newer = copy_artifact(saved, tmp_path / "newer")
    config = json.loads((saved / "config.json").read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=rf"format_version={FORMAT_VERSION + 1}.*versions 1 to {FORMAT_VERSION}"):
        Policy.load(newer)
    for bad in ("1", 0, -1, True, 1.0):  # not a positive integer this library knows
        config["format_version"] = bad
        (newer / "config.json").write_text(json.dumps(config))
        with pytest.raises(ArtifactError, match="format_version"):
            Policy.load(newer)


def test_config_without_required_keys_is_refused(saved, tmp_path):
    broken = copy_artifact(saved, tmp_path / "broken")
    config = json.loads((saved / "config.json").read_text())
    del config["algo_config"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="algo_config"):
        Policy.load(broken)


def test_normalizer_statistics_edited_after_saving_are_refused(saved, tmp_path):
    """config.json's statistics are checked against the checksum the weights file recorded: one changed digit
    would scale every observation differently from training, silently."""
    Policy.load(copy_artifact(saved, tmp_path / "same"))  # an untouched copy loads
    edited = copy_artifact(saved, tmp_path / "edited")
    config = json.loads((saved / "config.json").read_text())
    stats = config["normalizers"]["observations"]
    key = next(k for k, v in stats.items() if isinstance(v, dict) and "__ndarray__" in v)
    values = stats[key]["__ndarray__"]
    while isinstance(values[0], list):
        values = values[0]
    values[0] = float(values[0]) + 0.5
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"normalizer statistics are not those saved with the weights"):
        Policy.load(edited)
    # reformatted by hand (indentation, key order) but the same values: still the artifact that was saved
    config = json.loads((saved / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps(config, indent=4))
    Policy.load(edited)
    # an artifact written before the record existed: loads as before
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "normalizers_sha256"}
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(edited / "model.safetensors"), metadata=meta)  # noqa: SIM118
    config["normalizers"]["observations"] = stats
    (edited / "config.json").write_text(json.dumps(config))
    Policy.load(edited)


def test_unknown_algorithm_lists_the_known_ones(saved, tmp_path):
    other = copy_artifact(saved, tmp_path / "other")
    config = json.loads((saved / "config.json").read_text())
    config["algorithm"] = "diffusion_transformer_xl"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"diffusion_transformer_xl.*decision_diffuser.*diffuser"):
        Policy.load(other)


def test_weights_that_do_not_match_the_config_are_refused(saved, tmp_path):
    wider = copy_artifact(saved, tmp_path / "wider")
    config = json.loads((saved / "config.json").read_text())
    config["algo_config"]["dim"] = 32  # a wider network than the weights were trained for
    (wider / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"disagrees with the network its weights were saved with: "
                                            r"algo_config.dim = 32 \(weights: 16\)"):
        Policy.load(wider)
    # an artifact written before weights recorded their network: the shapes still give it away
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(wider / "model.safetensors"))  # noqa: SIM118
    with pytest.raises(ValueError, match="weights do not match") as err:
        Policy.load(wider)
    assert not isinstance(err.value, RuntimeError)
    config["algo_config"]["dim"] = 200_000  # 640 GB of weights: refused without trying to allocate them all
    (wider / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="cannot be built|weights do not match"):
        Policy.load(wider)

    partial = copy_artifact(saved, tmp_path / "partial")
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("inv.")}  # noqa: SIM118
    save_file(tensors, str(partial / "model.safetensors"))
    with pytest.raises(ValueError, match=r"weights do not match.*missing \['inv\."):
        Policy.load(partial)

    foreign_kwargs = copy_artifact(saved, tmp_path / "kwargs")
    config = json.loads((saved / "config.json").read_text())
    config["algo_config"]["num_heads"] = 8  # DecisionDiffuser has no such argument
    (foreign_kwargs / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="num_heads"):  # the record names it (weights: None)
        Policy.load(foreign_kwargs)


# --- atomic replacement -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_saving_over_an_artifact_replaces_it_without_leftovers(tmp_path, layout):
    path = tmp_path / LAYOUTS[layout]
    obs = raw_obs()
    first = make_policy("decision_diffuser")
    first.save(path)
    torch.manual_seed(123)
    second = make_policy("decision_diffuser")
    for p in second.algo.parameters():  # different weights than `first`
        p.data.add_(0.5 * torch.randn_like(p))
    second.steps = 2
    second.save(path)
    assert listing(tmp_path) == [LAYOUTS[layout]]  # no temporary or old copies next to it
    loaded = Policy.load(path)
    assert loaded.steps == 2
    np.testing.assert_array_equal(actions_after_reset(loaded, obs), actions_after_reset(second, obs))
    assert not np.array_equal(actions_after_reset(loaded, obs), actions_after_reset(first, obs))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_failed_save_leaves_the_old_artifact_intact(tmp_path, layout, monkeypatch):
    path = tmp_path / LAYOUTS[layout]
    obs = raw_obs()
    old = make_policy("decision_diffuser")
    old.save(path)
    expected = actions_after_reset(Policy.load(path), obs)

    def crash_midway(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "save_file", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        make_policy("diffuser").save(path)
    assert listing(tmp_path) == [LAYOUTS[layout]]
    np.testing.assert_array_equal(actions_after_reset(Policy.load(path), obs), expected)


def test_a_save_that_fails_at_the_final_rename_puts_the_old_artifact_back(tmp_path, monkeypatch):
    path = tmp_path / "policy"
    obs = raw_obs()
    make_policy("decision_diffuser").save(path)
    expected = actions_after_reset(Policy.load(path), obs)
    real_replace = os.replace

    def refuse_the_new_folder(src, dst):
        if Path(src).name.endswith(".tmp"):  # the finished new folder moving into place
            raise OSError("device busy")
        real_replace(src, dst)

    monkeypatch.setattr(artifact.os, "replace", refuse_the_new_folder)
    with pytest.raises(OSError, match="device busy"):
        make_policy("diffuser").save(path)
    monkeypatch.undo()
    assert listing(tmp_path) == ["policy"]
    np.testing.assert_array_equal(actions_after_reset(Policy.load(path), obs), expected)


def test_a_save_refuses_to_replace_what_is_not_an_artifact(tmp_path):
    results = tmp_path / "results"  # a user's folder: a save would replace it whole
    (results / "sub").mkdir(parents=True)
    (results / "train_log.csv").write_text("step,loss\n")
    with pytest.raises(ArtifactError, match=r"holds files that are not an artifact's \(\['sub', 'train_log.csv'\]\)"):
        make_policy("decision_diffuser").save(results)
    assert sorted(p.name for p in results.iterdir()) == ["sub", "train_log.csv"]
    a_file = tmp_path / "notes"
    a_file.write_text("mine")
    for _ in range(2):  # refused every time, with the file untouched and nothing left beside it
        with pytest.raises(ArtifactError, match="exists and is not a folder"):
            make_policy("decision_diffuser").save(a_file)
    assert a_file.read_text() == "mine" and listing(tmp_path) == ["notes", "results"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    Policy.load(make_policy("decision_diffuser").save(tmp_path / "empty"))


def test_unknown_settings_in_config_json_are_refused_naming_the_file(tmp_path):
    from diffusion_rl.artifact import ArtifactError
    from tests.test_policy import make_policy

    path = make_policy().save(tmp_path / "p")
    config = json.loads((path / "config.json").read_text())
    config["sampling"]["gudiance_weight"] = 2.0
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"config.json: unknown sampling setting\(s\) \['gudiance_weight'\]"):
        Policy.load(path)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("seed", None, r"seed: expected an integer in \[0, 2\*\*63\), got None"),
    ("seed", 1.7, r"seed: expected an integer in \[0, 2\*\*63\), got 1.7"),  # not truncated to 1
    ("execution", ["follow_plan"], r"execution: expected a string, got \['follow_plan'\] \(list\)"),
    ("algorithm", ["decision_diffuser"], r"algorithm: expected a string, got \['decision_diffuser'\]"),
    ("metadata", [1, 2], r"metadata: expected an object or null, got \[1, 2\] \(list\)"),
    ("sampling", [1], r"sampling: expected an object or null, got \[1\]"),
    ("execution_options", [1], r"execution_options: expected an object or null"),
    ("env_name", 3, r"env_name: expected a string or null, got 3 \(int\)"),
])
def test_config_json_values_of_the_wrong_type_are_refused_naming_the_file_and_key(saved, tmp_path, key, value,
                                                                                    message):
    path = copy_artifact(saved, tmp_path / "edited")
    config = json.loads((path / "config.json").read_text())
    config[key] = value
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=rf"edited: config.json: {message}"):
        Policy.load(path, device="cpu")


def test_a_single_file_save_refuses_a_folder_of_that_name(tmp_path):
    folder = tmp_path / "policy.safetensors"
    (folder / "mine").mkdir(parents=True)
    with pytest.raises(ArtifactError, match=r"policy.safetensors exists and is a folder; a path ending in "
                                            r"\.safetensors is saved as one file"):
        make_policy("decision_diffuser").save(folder)
    assert listing(tmp_path) == ["policy.safetensors"] and listing(folder) == ["mine"]


def test_files_that_are_not_regular_files_are_refused_without_blocking(saved, tmp_path):
    fifo = copy_artifact(saved, tmp_path / "fifo")
    (fifo / "model.safetensors").unlink()
    os.mkfifo(fifo / "model.safetensors")  # reading it would block forever
    with pytest.raises(ArtifactError, match="weights must be a regular file, got a FIFO"):
        Policy.load(fifo)
    folder = copy_artifact(saved, tmp_path / "folder")
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    with pytest.raises(ArtifactError, match="config must be a regular file, got a folder"):
        Policy.load(folder)
    zero = copy_artifact(saved, tmp_path / "zero")
    (zero / "config.json").unlink()
    (zero / "config.json").symlink_to("/dev/zero")  # endless: must not be read until memory runs out
    with pytest.raises(ArtifactError, match="config must be a regular file"):
        Policy.load(zero)
    big = copy_artifact(saved, tmp_path / "big")
    with open(big / "config.json", "ab") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: a 65 MB file without writing 65 MB
    with pytest.raises(ArtifactError, match="too large for an artifact config"):
        Policy.load(big)


def test_non_finite_weights_and_statistics_are_refused_naming_what(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    nan = copy_artifact(saved, tmp_path / "nan")
    tensors = load_file(str(nan / "model.safetensors"))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(nan / "model.safetensors"))
    with pytest.raises(ArtifactError, match=rf"weight '{name}' holds NaN or infinite values"):
        Policy.load(nan)
    config = json.loads((saved / "config.json").read_text())
    assert config["normalizers"]["observations"]["name"] == "gaussian"
    for key, value, match in (("std", float("nan"), "'std' holds NaN or infinite values"),
                              ("mean", float("inf"), "'mean' holds NaN or infinite values"),
                              ("std", 0.0, "'std' must be > 0 everywhere")):
        bad = copy_artifact(saved, tmp_path / f"{key}{value}")
        broken = json.loads(json.dumps(config))
        broken["normalizers"]["observations"][key]["__ndarray__"][0] = value
        (bad / "config.json").write_text(json.dumps(broken))
        with pytest.raises(ArtifactError, match=rf"config.json: normalizers.observations: gaussian normalizer statistic {match}"):
            Policy.load(bad)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_leftovers_of_an_interrupted_save_are_removed_by_the_next(tmp_path, layout):
    import os

    from tests.test_policy import make_policy

    target = tmp_path / ("p.safetensors" if layout == "file" else "p")
    (tmp_path / f".{target.name}.x1y2_abc.tmp").mkdir()  # what a save killed half-way leaves (mkdtemp's names)
    (tmp_path / f".{target.name}.x1y2_abc.tmp" / "model.safetensors").write_bytes(b"half")
    (tmp_path / f".{target.name}.z3k9q0w2.tmp").write_bytes(b"half")
    (tmp_path / ".other.a1b2c3d4.tmp").write_bytes(b"not ours to remove")
    (tmp_path / f".{target.name}.live1234.tmp").write_bytes(b"another process's save in progress")
    for name in (f".{target.name}.x1y2_abc.tmp/model.safetensors", f".{target.name}.x1y2_abc.tmp",
                 f".{target.name}.z3k9q0w2.tmp", ".other.a1b2c3d4.tmp"):
        os.utime(tmp_path / name, (1e9, 1e9))  # nothing has written to them for years
    make_policy().save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".other.a1b2c3d4.tmp", f".{target.name}.live1234.tmp",
                                                                 target.name])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_weights_damaged_on_disk_but_still_finite_are_refused_by_their_checksum(tmp_path, layout):
    """One byte flipped near the end of the weights loaded silently and gave slightly different actions."""
    path = make_policy("decision_diffuser").save(tmp_path / LAYOUTS[layout])
    weights = path / "model.safetensors" if path.is_dir() else path
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01  # the lowest bit of a float's mantissa: finite, loads, acts a little differently
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"is damaged: its tensors do not match the checksum"):
        Policy.load(path)


def test_the_checksum_covers_names_dtypes_and_shapes():
    base = {"a": torch.arange(6, dtype=torch.float32), "b": torch.ones(2)}
    digest = artifact.weights_digest(base)
    assert digest == artifact.weights_digest({k: v.clone() for k, v in base.items()})
    for changed in ({"a": base["a"].reshape(2, 3), "b": base["b"]}, {"c": base["a"], "b": base["b"]},
                    {"a": base["a"].to(torch.float64), "b": base["b"]}, {"a": base["a"]}):
        assert artifact.weights_digest(changed) != digest
    assert artifact.weights_digest({"x": torch.zeros(3, dtype=torch.bfloat16), "s": torch.tensor(1.0)})  # 0-dim


def test_unknown_top_level_keys_and_sizes_that_contradict_the_network_are_refused(saved, tmp_path):
    config = json.loads((saved / "config.json").read_text())
    assert config["written_by"]["diffusion_rl"] and config["written_by"]["torch"] == torch.__version__
    for edit, message in ((lambda c: c.update(action_bound=[[-1.0] * ACT_DIM, [1.0] * ACT_DIM]),
                           r"config.json: unknown key\(s\) \['action_bound'\]; an artifact holds .*action_bounds"),
                          (lambda c: c.update(act_dim=ACT_DIM + 1),
                           rf"config.json: act_dim = {ACT_DIM + 1} \(algo_config: {ACT_DIM}\) disagree"),
                          (lambda c: c.update(horizon=HORIZON * 2), r"horizon = 16 \(algo_config: 8\)")):
        bad = copy_artifact(saved, tmp_path / f"bad{len(list(tmp_path.iterdir()))}")
        edited = json.loads(json.dumps(config))
        edit(edited)
        (bad / "config.json").write_text(json.dumps(edited))
        with pytest.raises(ArtifactError, match=message):
            Policy.load(bad)
    older = copy_artifact(saved, tmp_path / "older")  # written before the record existed
    del config["written_by"]
    (older / "config.json").write_text(json.dumps(config))
    assert Policy.load(older).obs_dim == OBS_DIM
