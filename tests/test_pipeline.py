"""PlannerRunConfig.validate: every setting of a run is checked before a dataset is made or a step trained."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_rl.data import SequenceDataset
from diffusion_rl.pipeline import ConfigError, PlannerRunConfig, train_planner
from tests.data.conftest import make_store


def _validate(**kwargs) -> None:
    # a run_dir of its own: the default (runs/hopper-medium/...) may hold a user's checkpoints
    PlannerRunConfig(env="hopper-medium", **{"run_dir": "/nonexistent/diffusion_rl-test-run", **kwargs}).validate()


def test_settings_a_constructor_takes_as_null_pass():
    _validate(algo="diffuser", model={"process": "flow", "schedule": None}, data={"terminal_penalty": None})


def test_a_valid_configuration_passes():
    _validate(model={"num_steps": 100}, sampling={"sampler": "dpmsolver++", "steps": 3, "warm_start_t": 33})
    _validate(model={"horizon": np.int64(8), "dim": 8, "dim_mults": (1, 2), "cond_drop": 0}, data={"normalizer": {"observations": "cdf"}, "discount": 0.9,
                                                      "return_label": "quantile"}, trainer={"max_steps": 3})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"model": {"horizn": 20}}, "algo.model: unknown setting(s) ['horizn'] for decision_diffuser"),
    ({"data": {"normaliser": "cdf"}}, "algo.data: unknown setting(s) ['normaliser']; expected some of"),
    ({"data": {"discout": 0.5}}, "algo.data: unknown setting(s) ['discout']"),
    ({"data": {"normalizer": "cdff"}}, "algo.data.normalizer: unknown name(s) ['cdff']; expected one of"),
    ({"data": {"normalizer": {"observation": "cdf"}}},
     "algo.data.normalizer: unknown key(s) ['observation']; expected some of ['observations', 'actions']"),
    ({"data": {"return_label": "bogus"}}, "algo.data.return_label: expected one of ['minmax', 'quantile']"),
    ({"trainer": {"eval_every": 100}}, "trainer: ['eval_every'] are set by the run itself; use eval.every=N"),
    ({"trainer": {"seed": 1, "device": "cpu"}}, "trainer: ['device', 'seed'] are set by the run itself"),
    ({"model": {"horizon": "32"}}, "algo.model.horizon: expected an integer, got '32' (str)"),
    ({"model": {"num_steps": 20.0}}, "algo.model.num_steps: expected an integer, got 20.0 (float)"),
    ({"model": {"dim_mults": [1, "2"]}}, "algo.model.dim_mults: expected a list of values each an integer"),
    ({"model": {"cond_drop": "0.1"}}, "algo.model.cond_drop: expected a number"),
    ({"algo": "diffuser", "model": {"value_guided": "no"}}, "algo.model.value_guided: expected true or false"),
    ({"trainer": {"lr": "1e-3"}}, "trainer.lr: expected a number, got '1e-3' (str)"),
    ({"video": "no"}, "eval.video: expected true or false, got 'no'"),
    ({"data": {"discount": "0.99"}}, "algo.data.discount: expected a number, got '0.99' (str)"),
    ({"algo": "diffuser", "data": {"value_discount": True}}, "algo.data.value_discount: expected a number, got True"),
    ({"data": {"terminal_penalty": "-100"}}, "algo.data.terminal_penalty: expected a number"),
    ({"plot": "off"}, "eval.plot: expected true or false, got 'off'"),
    ({"eval_seed": 2**32 - 10}, "eval.seed: expected an integer in [0, 4294967286) (episode i resets with eval.seed + i"),
    # sizes out of range: the constructor's own checks, run before the dataset is loaded or made
    ({"model": {"horizon": 0}}, "algo.model: horizon: expected an integer >= 1, got 0"),
    ({"algo": "diffuser", "model": {"dim_mults": []}}, "algo.model: dim_mults: expected a list of integers >= 1"),
    ({"algo": "diffusion_policy", "model": {"obs_steps": 0}}, "algo.model: obs_steps: expected an integer >= 1"),
    # a warm replan that would run no denoising step (DPM-Solver++ 3 over T = 100 runs 99, 66, 33): refused before
    # training, not when the trained model is wrapped in a Policy
    ({"model": {"num_steps": 100}, "sampling": {"sampler": "dpmsolver++", "steps": 3, "warm_start_t": 30}},
     "algo: warm_start_t=30 is below every timestep sampler 'dpmsolver++' runs with steps=3 over T = 100 (the "
     "lowest is 33)"),
])
def test_unknown_or_misplaced_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError) as err:
        _validate(**kwargs)
    assert message in str(err.value)


def test_sequence_dataset_refuses_a_normalizer_mapping_it_would_ignore():
    store = make_store([12, 9])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['observation'\]"):
        SequenceDataset(store, 4, normalizer={"observation": "cdf"})
    with pytest.raises(ValueError, match=r"unknown name\(s\) \['cdff'\]"):
        SequenceDataset(store, 4, normalizer="cdff")
    data = SequenceDataset(store, 4, normalizer={"observations": "cdf"})
    assert type(data.normalizers["observations"]).__name__ == "CDFNormalizer"
    assert type(data.normalizers["actions"]).__name__ == "GaussianNormalizer"  # the documented default for the rest


def test_a_run_dir_holding_checkpoints_needs_resume(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_00000200.pt").write_bytes(b"a finished run's")
    with pytest.raises(ConfigError, match=r"already holds checkpoints \(latest step 200\); expected "
                                          r"trainer.resume=true to continue that run, or a new run_dir"):
        _validate(run_dir=str(tmp_path))
    _validate(run_dir=str(tmp_path), trainer={"resume": True})


def test_a_run_under_torchrun_is_refused_before_any_work(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"runs in one process; under torchrun \(WORLD_SIZE > 1\)"):
        _validate()
    monkeypatch.setenv("WORLD_SIZE", "1")
    _validate()


def _point_store(lengths: list[int]):
    """make_store's episodes (4 observation and 2 action values: point-obstacle's sizes) without its hopper
    label, which a run scored in point-obstacle refuses as recorded in another environment."""
    store = make_store(lengths)
    store.metadata.pop("spec_name")
    return store


def test_an_execution_the_model_cannot_drive_is_refused_before_training(tmp_path):
    from diffusion_rl.data import save_d4rl_hdf5
    from diffusion_rl.pipeline import train_planner

    path = tmp_path / "small.hdf5"
    save_d4rl_hdf5(_point_store([30, 30]), path)
    run_dir = tmp_path / "run"
    cfg = PlannerRunConfig(env="point-obstacle", algo="diffusion_policy", dataset=str(path), run_dir=str(run_dir),
                           model={"horizon": 8, "obs_steps": 2, "down_dims": [8, 16], "step_embed_dim": 8,
                                  "n_groups": 4},
                           execution="action_queue", execution_options={"action_steps": 8},  # chunks hold 7
                           trainer={"max_steps": 5, "batch_size": 4, "progress": False}, device="cpu")
    with pytest.raises(ConfigError, match=r"action_steps \(Ta=8\) must be in \[1, 7\]"):
        train_planner(cfg, log=lambda line: None)
    assert not (run_dir / "checkpoints").exists()  # no training was done and then thrown away


def test_a_dataset_of_other_sizes_than_the_env_is_refused_before_training(tmp_path):
    # a dataset with the env's actions but other observations trained to the end and failed at the first act()
    from diffusion_rl.data import save_d4rl_hdf5
    from diffusion_rl.pipeline import train_planner

    path = tmp_path / "other.hdf5"
    save_d4rl_hdf5(make_store([30, 30]), path)  # 4 observation and 2 action values per step; Hopper has 11 and 3
    cfg = PlannerRunConfig(env="hopper-medium", algo="bc", dataset=str(path), run_dir=str(tmp_path / "run"),
                           trainer={"max_steps": 5, "batch_size": 4, "progress": False}, device="cpu")
    with pytest.raises(ConfigError, match=r"has 4 observation and 2 action values per step, but Hopper-v5 has 11 "
                                          r"and 3; expected a dataset recorded in the environment"):
        train_planner(cfg, log=lambda line: None)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_plot_rollout_starts_a_history_planners_plan_at_its_current_state():
    """A Decision Diffuser given K past states holds them in the plan's first K - 1 rows: the plotted plan starts
    at the current state (row `now`), so planned step t is compared with executed step t."""
    import torch

    from diffusion_rl import Policy
    from diffusion_rl.algos import DecisionDiffuser
    from diffusion_rl.data import GaussianNormalizer
    from diffusion_rl.pipeline import rollout_for_plot

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    algo = DecisionDiffuser(obs_dim=11, act_dim=3, horizon=8, num_steps=10, dim=8, dim_mults=(1, 2),
                            inv_hidden_dim=16, history=4)
    policy = Policy(algo, {"observations": GaussianNormalizer().fit(rng.normal(size=(64, 11))),
                           "actions": GaussianNormalizer().fit(rng.normal(size=(64, 3)))},
                    env_name="hopper-medium", sampling={"steps": 2})
    planned, executed = rollout_for_plot(policy, "hopper-medium", seed=0)
    assert planned.shape == executed.shape == (8 - 3, 11)
    np.testing.assert_allclose(planned[0], executed[0], atol=1e-4)  # the inpainted current state
    assert not np.allclose(planned[1], planned[0], atol=1e-3)  # no history row repeated after it


def test_eval_json_is_written_last_so_a_run_stopped_while_plotting_is_not_taken_as_finished(tmp_path, monkeypatch):
    """reproduce.py counts a run folder with eval.json as a finished cell: a Ctrl-C while the plots were drawn left
    one without its plots (and without reproduce's record), and the cell was never finished."""
    import diffusion_rl.pipeline as pipeline
    from diffusion_rl.data import save_d4rl_hdf5

    path = tmp_path / "small.hdf5"
    save_d4rl_hdf5(_point_store([30, 30]), path)
    run_dir = tmp_path / "run"
    cfg = dict(env="point-obstacle", algo="diffusion_policy", dataset=str(path), run_dir=str(run_dir),
               model={"horizon": 8, "obs_steps": 2, "down_dims": [8, 16], "step_embed_dim": 8, "n_groups": 4},
               execution="action_queue", execution_options={"action_steps": 4}, eval_episodes=1,
               eval_max_episode_steps=4, sampling={"steps": 2}, device="cpu")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "plot_plan", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_planner(PlannerRunConfig(**cfg, trainer={"max_steps": 3, "batch_size": 4, "progress": False}),
                               log=lambda line: None)
    assert (run_dir / "policy").is_dir() and not (run_dir / "eval.json").exists()
    monkeypatch.undo()
    result = pipeline.train_planner(PlannerRunConfig(**cfg, trainer={"max_steps": 3, "batch_size": 4,
                                                                     "progress": False, "resume": True}),
                                    log=lambda line: None)
    assert (run_dir / "eval.json").is_file() and (run_dir / "plan.png").is_file()
    assert result.train_summary["step"] == 3


def test_a_goal_conditioned_diffuser_trains_only_on_windows_that_reach_their_goal_row():
    """Its goal is pinned at a window's last row; a window past an episode's end pinned the padding there (the last
    state repeated), a goal the data reached rows earlier: 42-48% of the maze2d windows. As jannerm's maze2d config
    (use_padding False), such a Diffuser trains on windows inside an episode; others keep the padded windows."""
    import torch

    from diffusion_rl.algos import Diffuser
    from diffusion_rl.pipeline import _sequence_dataset

    store = make_store([12, 12])  # observations encode (episode, step)
    data = {"normalizer": "minmax"}
    small = {"horizon": 8, "num_steps": 4, "dim": 8, "dim_mults": (1, 2), "value_guided": False}
    reaching = _sequence_dataset(Diffuser(4, 2, **small, goal_conditioned=True), store, 8, data, torch.device("cpu"))
    padded = _sequence_dataset(Diffuser(4, 2, **small), store, 8, data, torch.device("cpu"))
    assert len(reaching) == 2 * (12 - 8 + 1) and len(padded) == 24
    batch = reaching.gather(torch.arange(len(reaching)))
    assert bool(batch["mask"].all())  # every row real, the goal row included
    raw = reaching.normalizers["observations"].unnormalize(batch["observations"])
    steps = raw[:, :, 1]  # each window runs over 8 consecutive real steps of one episode
    assert torch.equal(steps[:, 1:] - steps[:, :-1], torch.ones(len(reaching), 7))
    with pytest.raises(ConfigError, match=r"diffuser trains on windows inside an episode .* every episode of the "
                                          r"dataset is shorter than horizon=16"):
        _sequence_dataset(Diffuser(4, 2, **{**small, "horizon": 16}, goal_conditioned=True), store, 16, data,
                          torch.device("cpu"))


def test_a_diffusion_policy_trained_from_python_executes_its_own_default(tmp_path):
    """PlannerRunConfig defaulted to first_action, so a Diffusion Policy trained through the Python API replanned
    at every step (8x the compute, another closed loop) while Policy and the configs gave it Ta = 8."""
    import diffusion_rl.pipeline as pipeline
    from diffusion_rl import Policy
    from diffusion_rl.data import save_d4rl_hdf5

    path = tmp_path / "small.hdf5"
    save_d4rl_hdf5(_point_store([30, 30]), path)
    cfg = PlannerRunConfig(env="point-obstacle", algo="diffusion_policy", dataset=str(path),
                           run_dir=str(tmp_path / "run"), eval_episodes=1, eval_max_episode_steps=2, device="cpu",
                           model={"horizon": 8, "obs_steps": 2, "down_dims": [8, 16], "step_embed_dim": 8,
                                  "n_groups": 4}, sampling={"steps": 2}, plot=False,
                           trainer={"max_steps": 2, "batch_size": 4, "progress": False})
    assert cfg.execution is None and cfg.execution_options is None
    pipeline.train_planner(cfg, log=lambda line: None)
    policy = Policy.load(tmp_path / "run" / "policy")
    assert (policy.execution, policy.execution_options) == ("action_queue", {"action_steps": 7})  # the 7-action chunk


def test_a_resume_on_a_dataset_remade_under_the_same_name_is_refused(tmp_path):
    """The checkpoint recorded the dataset's name only: a local dataset remade since (as its warning asks) resumed
    with statistics fitted on other data, under weights learned with the old ones."""
    from diffusion_rl.data import save_d4rl_hdf5

    path = tmp_path / "small.hdf5"
    save_d4rl_hdf5(_point_store([30, 30]), path)
    cfg = dict(env="point-obstacle", algo="diffusion_policy", dataset=str(path), run_dir=str(tmp_path / "run"),
               model={"horizon": 8, "obs_steps": 2, "down_dims": [8, 16], "step_embed_dim": 8, "n_groups": 4},
               execution="action_queue", execution_options={"action_steps": 4}, eval_episodes=1,
               eval_max_episode_steps=4, sampling={"steps": 2}, device="cpu", plot=False)
    train_planner(PlannerRunConfig(**cfg, trainer={"max_steps": 2, "batch_size": 4, "progress": False}),
                  log=lambda line: None)
    save_d4rl_hdf5(_point_store([30, 40]), path, overwrite=True)
    with pytest.raises(ValueError, match=r"other run settings \(saved -> now\): \{'dataset_digest': \(\{"
                                         r"'steps': 60, 'episodes': 2, .*\}, \{'steps': 70, 'episodes': 2, "):
        train_planner(PlannerRunConfig(**cfg, trainer={"max_steps": 4, "batch_size": 4, "progress": False,
                                                       "resume": True}), log=lambda line: None)


def test_a_dataset_recorded_in_another_environment_is_refused():
    """dataset=maze2d-umaze env=maze2d-large trained on the small maze's data (same sizes) and scored it in the
    large maze, with a dataset return normalized by the large maze's references."""
    import numpy as np

    from diffusion_rl.data import EpisodeStore
    from diffusion_rl.pipeline import ConfigError, check_recorded_env

    def store(**metadata):
        return EpisodeStore({"rewards": np.zeros(3)}, [3], metadata)

    with pytest.raises(ConfigError, match=r"'maze2d-umaze' was recorded in Maze2D-UMaze-v1, but this run is scored "
                                          r"in Maze2D-Large-v1"):
        check_recorded_env(store(env_id="Maze2D-UMaze-v1"), "maze2d-umaze", "Maze2D-Large-v1")
    with pytest.raises(ConfigError, match="recorded in Maze2D-UMaze-v1"):  # known by its catalogue name alone
        check_recorded_env(store(spec_name="maze2d-umaze"), "x.hdf5", "Maze2D-Large-v1")
    check_recorded_env(store(env_id="Hopper-v4"), "hopper.hdf5", "Hopper-v5")  # another version of the same env
    check_recorded_env(store(), "own.hdf5", "Hopper-v5")  # a file that does not say: its sizes were checked


def test_data_settings_have_one_source_the_algorithm_s_defaults():
    """The Python API trains with the data settings the Hydra config shows (a Decision Diffuser's target_return
    is a quantile level of CDF-normalized, fall-penalized labels): Algorithm.default_data, which configs/algo
    repeats, and what a run gives overrides it key by key."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from diffusion_rl.algos import ALGORITHMS

    for name, cls in ALGORITHMS.items():
        yaml = Path(__file__).resolve().parents[1] / "configs" / "algo" / f"{name}.yaml"
        if yaml.exists():
            assert OmegaConf.to_container(OmegaConf.load(yaml)).get("data", {}) == cls.default_data, name
        assert PlannerRunConfig(algo=name).resolved_data() == cls.default_data
    dd = PlannerRunConfig(algo="decision_diffuser", data={"terminal_penalty": 0})
    assert dd.resolved_data() == {"normalizer": "cdf", "discount": 0.99, "terminal_penalty": 0,
                                  "return_label": "quantile"}
    assert PlannerRunConfig(algo="nonexistent").resolved_data() == {}
