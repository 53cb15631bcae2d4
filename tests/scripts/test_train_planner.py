"""scripts/train_planner.py end to end with tiny budgets (subprocess), on small real datasets made in the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffusion_rl import Policy
from diffusion_rl.data import load_episodes
from diffusion_rl.data.make import make_local_dataset
from diffusion_rl.evaluation import evaluate
from tests.scripts.cli import run_lines

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_planner.py"
TINY_DD = ["preset=cpu", "algo.model.dim=8", "algo.model.horizon=8", "algo.model.num_steps=20",
           "algo.sampling.steps=3", "algo.sampling.warm_start_t=6", "trainer.batch_size=8",
           "trainer.checkpoint_every=10", "trainer.log_every=5"]


def _env(store: Path) -> dict[str, str]:
    env = dict(os.environ, MINARI_DATASETS_PATH=str(store), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(args: list[str], store: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=_env(store), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_train_planner_on_a_d4rl_hdf5_file_writes_artifact_and_eval(tmp_path, hopper_hdf5):
    run_dir = tmp_path / "run"
    proc = _run(["env=hopper-medium", f"dataset={hopper_hdf5}", f"run_dir={run_dir}", "trainer.max_steps=20",
                 "eval.episodes=2", "eval.num_envs=2", "eval.max_episode_steps=30", *TINY_DD], tmp_path / "empty")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "preset: cpu" in proc.stdout and "artifact:" in proc.stdout and "score:" in proc.stdout
    result = json.loads((run_dir / "eval.json").read_text())
    for key in ("normalized_score_mean", "normalized_score_stderr", "return_mean", "episodes"):
        assert key in result
    assert result["episodes"] == 2 and result["train_steps"] == 20
    assert (run_dir / "policy" / "model.safetensors").is_file() and (run_dir / "config.yaml").is_file()
    assert (run_dir / "plan.png").stat().st_size > 1000
    # plan diagnostics: per-episode dynamic-consistency error and its plot over the episode
    assert len(result["plan_errors"]) == 2 and 0 < result["plan_error_mean"] < 10
    assert (run_dir / "plan_consistency.png").stat().st_size > 1000
    assert any((run_dir / "tb").iterdir())
    config = json.loads((run_dir / "policy" / "config.json").read_text())
    assert config["algorithm"] == "decision_diffuser" and config["obs_dim"] == 11 and config["act_dim"] == 3
    assert config["sampling"]["steps"] == 3 and config["algo_config"]["dim"] == 8  # command line beat the preset

    # the loaded artifact acts on Hopper observations and reproduces the trainer's own evaluation
    policy = Policy.load(run_dir / "policy", device="cpu")
    obs = load_episodes(str(hopper_hdf5))["observations"][:4]
    assert policy.act(obs[0]).shape == (3,) and policy.act(obs).shape == (4, 3)
    assert result["seed"] == 0 and result["eval_seed"] == 10**9  # training seed 0's own evaluation episodes
    again = evaluate(policy, "hopper-medium", episodes=2, num_envs=2, seed=result["eval_seed"], max_episode_steps=30,
                     progress=False)
    assert np.allclose(again.returns, result["returns"])

    # resume=true continues from the last checkpoint to a larger budget
    more = _run(["env=hopper-medium", f"dataset={hopper_hdf5}", f"run_dir={run_dir}", "trainer.max_steps=30",
                 "trainer.resume=true", "eval.episodes=1", "eval.num_envs=1", "eval.max_episode_steps=5",
                 "eval.plot=false", *TINY_DD], tmp_path / "empty")
    assert more.returncode == 0, more.stderr[-3000:]
    assert json.loads((run_dir / "eval.json").read_text())["train_steps"] == 30
    # a resume the checkpoint refuses is one line, not Hydra's traceback
    past = _run(["env=hopper-medium", f"dataset={hopper_hdf5}", f"run_dir={run_dir}", "trainer.max_steps=10",
                 "trainer.resume=true", "eval.plot=false", *TINY_DD], tmp_path / "empty")
    assert past.returncode != 0 and "Traceback" not in past.stderr, past.stderr[-3000:]
    assert past.stderr.strip().splitlines()[-1].startswith("error: checkpoint ") and (
        "is at step 30, beyond max_steps=10; resume with max_steps >= 30" in past.stderr)
    # the refused resume left the run's record as it was (it wrote its own settings over it before the check)
    assert "max_steps: 30" in (run_dir / "config.yaml").read_text()
    # a rerun refused for its run_dir keeps the record of how the run was made (Hydra wrote over it)
    refused = _run(["env=hopper-medium", "algo=diffuser", f"dataset={hopper_hdf5}", f"run_dir={run_dir}", "preset=cpu"],
                   tmp_path / "empty")
    assert refused.returncode != 0 and "already holds checkpoints" in refused.stderr
    records = sorted((run_dir / ".hydra").iterdir())
    assert len(records) >= 2 and "trainer.max_steps=20" in (records[0] / "overrides.yaml").read_text()


def test_flow_matching_by_configuration_alone(tmp_path, hopper_hdf5):
    """``algo.model.process=flow`` trains a flow-matching Decision Diffuser and Diffuser with no other change;
    the artifacts record it and Policy.load serves them with any sampler of the registry."""
    obs = load_episodes(str(hopper_hdf5))["observations"][:2]
    for algo, extra in (("decision_diffuser", TINY_DD), ("diffuser", ["preset=cpu", "algo.model.dim=8",
                                                                      "algo.model.horizon=8", "algo.model.value_dim=16",
                                                                      "algo.sampling.num_plans=2"])):
        run_dir = tmp_path / algo
        proc = _run(["env=hopper-medium", f"algo={algo}", f"dataset={hopper_hdf5}", f"run_dir={run_dir}",
                     "trainer.max_steps=10", "trainer.batch_size=8", "eval.episodes=1", "eval.num_envs=1",
                     "eval.max_episode_steps=10", "eval.plot=false", "algo.model.process=flow", *extra],
                    tmp_path / "empty")
        assert proc.returncode == 0, proc.stderr[-3000:]
        config = json.loads((run_dir / "policy" / "config.json").read_text())
        assert config["algo_config"]["process"] == "flow" and config["algo_config"]["prediction"] == "velocity"
        policy = Policy.load(run_dir / "policy", device="cpu")
        for sampler in ("heun", "euler", config["sampling"]["sampler"]):
            policy.sampler = sampler
            assert np.all(np.isfinite(policy.act(obs)))
    # heun on a diffusion model is refused before any work, naming the fix
    bad = _run(["env=hopper-medium", f"run_dir={tmp_path / 'bad'}", "sampling.sampler=heun", *TINY_DD],
               tmp_path / "empty")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "sampler 'heun' integrates the velocity of the linear flow path: it needs process='flow'" in bad.stderr
    bad = _run(["env=hopper-medium", f"run_dir={tmp_path / 'bad'}", "algo.model.process=flow",
                "algo.model.prediction=epsilon", *TINY_DD], tmp_path / "empty")
    assert bad.returncode != 0 and "prediction 'epsilon' is not defined for process='flow'" in bad.stderr


def test_diffuser_on_hopper_and_maze2d(tmp_path, hopper_hdf5):
    proc = _run(["env=hopper-medium", "algo=diffuser", f"dataset={hopper_hdf5}", f"run_dir={tmp_path / 'h'}",
                 "trainer.max_steps=10", "eval.episodes=1", "eval.num_envs=1", "eval.max_episode_steps=10",
                 "preset=cpu", "algo.model.dim=8", "algo.model.horizon=8", "algo.model.value_dim=16",
                 "algo.sampling.num_plans=2", "trainer.batch_size=8"], tmp_path / "empty")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sampling = json.loads((tmp_path / "h" / "policy" / "config.json").read_text())["sampling"]
    # the cpu preset replans warm with DPM-Solver++ 5 (docs/results.md, quality against speed)
    assert (sampling["sampler"], sampling["steps"], sampling["warm_start_t"]) == ("dpmsolver++", 5, 6)

    store = tmp_path / "store"
    make_local_dataset("maze2d-umaze", num_steps=2000, minari_root=store, progress=False, num_workers=1)
    run_dir = tmp_path / "m"
    proc = _run(["env=maze2d-umaze", "algo=diffuser", f"run_dir={run_dir}", "trainer.max_steps=10",
                 "eval.episodes=1", "eval.num_envs=1", "eval.max_episode_steps=20", "preset=cpu",
                 "algo.model.dim=8", "algo.model.horizon=16", "trainer.batch_size=8"], store)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run_dir / "policy" / "config.json").read_text())
    # the env's Diffuser overrides: goal inpainting, no value net, plan once and follow it
    assert config["execution"] == "follow_plan" and config["algo_config"]["goal_conditioned"] is True
    assert config["algo_config"]["value_guided"] is False and config["algo_config"]["horizon"] == 16
    # ... from noise with the full DDPM chain, whatever the preset samples with
    assert (config["sampling"]["sampler"], config["sampling"]["warm_start_t"]) == ("ddpm", None)
    assert (run_dir / "plan.png").is_file()


def test_diffusion_policy_trains_and_acts_from_an_action_queue(tmp_path, hopper_hdf5):
    run_dir = tmp_path / "dp"
    proc = _run(["env=hopper-medium", "algo=diffusion_policy", f"dataset={hopper_hdf5}", f"run_dir={run_dir}",
                 "trainer.max_steps=10", "eval.episodes=1", "eval.num_envs=1", "eval.max_episode_steps=10",
                 "preset=cpu", "algo.model.down_dims=[16,32]", "algo.model.step_embed_dim=16",
                 "algo.sampling.steps=2", "trainer.batch_size=8", "trainer.warmup_steps=2"], tmp_path / "empty")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run_dir / "policy" / "config.json").read_text())
    assert config["algorithm"] == "diffusion_policy" and config["execution"] == "action_queue"
    assert config["execution_options"] == {"action_steps": 8} and config["algo_config"]["obs_steps"] == 2
    policy = Policy.load(run_dir / "policy", device="cpu")
    obs = load_episodes(str(hopper_hdf5))["observations"][:2]
    assert policy.plan(obs).action_chunk.shape == (2, 15, 3)  # Tp - To + 1 actions from the current step


def test_bad_keys_and_names_list_valid_choices(tmp_path):
    bad_key, bad_env, bad_algo = run_lines(SCRIPT, [["trainer.max_step=5"], ["env=hopper-mediocre"], ["algo=difuser"]],
                                           ROOT, _env(tmp_path))
    assert bad_key.returncode != 0 and "max_steps" in bad_key.stderr and "unknown config key" in bad_key.stderr
    assert bad_env.returncode != 0 and "hopper-medium" in bad_env.stdout + bad_env.stderr
    assert bad_algo.returncode != 0 and "decision_diffuser" in bad_algo.stdout + bad_algo.stderr


def test_bad_values_are_refused_in_one_line_before_any_work(tmp_path):
    import torch

    cases = [
        (["eval.episodes=0"], "error: eval.episodes: expected an integer >= 1, got 0"),
        (["eval.num_envs=0"], "error: eval.num_envs: expected an integer >= 1, got 0"),
        (["trainer.max_steps=0"], "error: trainer.max_steps: expected an integer >= 1 (a run trains), got 0"),
        (["trainer.max_steps=-5"], "error: trainer.max_steps: expected an integer >= 0, got -5"),
        (["trainer.batch_size=0"], "error: trainer.batch_size: expected an integer >= 1, got 0"),
        ([f"dataset={tmp_path / 'missing.hdf5'}"], "does not exist (expected a D4RL .hdf5 file"),
        (["sampling.gudiance_weight=1.0"], "unknown setting(s) ['gudiance_weight'] for decision_diffuser"),
        (["sampling.steps=0"], "sampling setting steps: expected None or an integer in [1, 100]"),
        # the paper preset's Diffuser samples with DDPM, which runs all of its steps: steps=5 was dropped
        (["algo=diffuser", "preset=paper", "sampling.steps=5"],
         "error: sampling.steps has no effect: sampler 'ddpm' does not read steps"),
    ]
    if not torch.cuda.is_available():
        cases.append((["device=cuda"], "asked for CUDA, but this machine has no CUDA device"))
    lines = [["env=hopper-medium", f"run_dir={tmp_path / f'run{i}'}", *args] for i, (args, _) in enumerate(cases)]
    # a dataset id that is nowhere: one line too (found when loading, still before training)
    lines.append(["env=hopper-medium", "dataset=local/nowhere/medium-v0", f"run_dir={tmp_path / 'r2'}"])
    *procs, nowhere = run_lines(SCRIPT, lines, ROOT, _env(tmp_path / "empty"))
    for i, ((args, message), proc) in enumerate(zip(cases, procs, strict=True)):
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        # refused before the dataset, a checkpoint or the artifact (Hydra has made the folder for its own logs)
        assert not any((tmp_path / f"run{i}" / name).exists()
                       for name in ("policy", "checkpoints", "eval.json", "config.yaml"))
    assert nowhere.returncode != 0 and "Traceback" not in nowhere.stderr, nowhere.stderr
    assert nowhere.stderr.startswith("error:"), nowhere.stderr
    assert not (tmp_path / "r2" / "policy").exists()


def _resolve(env_cfg: dict, preset: str, user: dict | None = None, algo: str = "decision_diffuser"):
    """resolve_config on ``configs/algo/<algo>.yaml`` with ``user`` ({dotted key: value}) set as from the command
    line."""
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_planner import resolve_config

    cfg = OmegaConf.create({
        "preset": preset,
        "algo": OmegaConf.load(ROOT / "configs" / "algo" / f"{algo}.yaml"),
        "env": env_cfg,
    })
    for key, value in (user or {}).items():
        OmegaConf.update(cfg, key, value)
    cfg, chosen = resolve_config(cfg, set(user or {}), cuda=False)
    return OmegaConf.to_container(cfg.algo, resolve=True), chosen


def test_env_overrides_per_preset_apply_only_to_their_preset():
    env = {"name": "walker2d-medium", "algo_overrides": {"decision_diffuser": {
        "sampling": {"steps": 7}, "presets": {"cpu": {"model": {"dim": 64}, "trainer": {"max_steps": 123}}}}}}
    cpu, chosen = _resolve(env, "cpu")
    assert chosen == "cpu"
    assert cpu["model"]["dim"] == 64 and cpu["trainer"]["max_steps"] == 123  # the env's cpu layer wins over the preset
    assert cpu["model"]["horizon"] == 20 and cpu["sampling"]["steps"] == 7  # preset and env layers still apply
    paper, _ = _resolve(env, "paper")
    assert paper["model"]["dim"] == 128 and paper["model"]["horizon"] == 100  # the cpu layer does not touch paper
    assert paper["sampling"]["steps"] == 7
    user, _ = _resolve(env, "cpu", {"algo.model.dim": 48})
    assert user["model"]["dim"] == 48 and user["trainer"]["max_steps"] == 123  # the command line wins


def test_env_override_of_an_unknown_preset_is_refused():
    env = {"name": "x", "algo_overrides": {"decision_diffuser": {"presets": {"gpu": {"model": {"dim": 64}}}}}}
    with pytest.raises(SystemExit, match=r"unknown preset\(s\) \['gpu'\]; expected paper or cpu"):
        _resolve(env, "cpu")


def test_a_null_the_user_sets_reaches_the_trainer_where_none_means_something():
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_planner import trainer_settings

    cfg = OmegaConf.create({"algo": {"trainer": {"max_steps": 500, "lr": 1e-3}},
                            "trainer": {"max_steps": None, "lr": None, "grad_clip": None, "log_every": 100}})
    # trainer.grad_clip=null on the command line: clipping off (the config default is 1.0)
    settings = trainer_settings(cfg, {"trainer.grad_clip"})
    assert settings == {"max_steps": 500, "lr": 1e-3, "grad_clip": None, "log_every": 100}
    # a null nobody set, or one on a setting where None means nothing, leaves the preset's value
    assert "grad_clip" not in trainer_settings(cfg, set())
    assert trainer_settings(cfg, {"trainer.max_steps"})["max_steps"] == 500


def test_paper_presets_train_as_the_reference_code_and_cpu_presets_as_their_scores_were_measured():
    """The paper presets take the reference trainers' settings (jannerm's and Ajay's gradient_accumulate_every 2,
    Chi's AdamW betas 0.95) that were missing; the cpu presets keep what docs/results.md was measured with, and
    every algorithm clips at 1.0 unless the command line says otherwise (the top-level null no longer hides an
    algorithm's own value)."""
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_planner import trainer_settings

    top = OmegaConf.load(ROOT / "configs" / "train_planner.yaml")
    expected = {  # algo: (paper, cpu) values of (grad_accum, betas)
        "diffuser": ((2, None), (1, None)), "decision_diffuser": ((2, None), (1, None)),
        "diffusion_policy": ((None, [0.95, 0.999]), (None, [0.9, 0.999])),
        "diffusion_policy_transformer": ((None, [0.9, 0.95]), (None, [0.9, 0.95])),
    }
    for algo, by_preset in expected.items():
        for preset, (accum, betas) in zip(("paper", "cpu"), by_preset):
            resolved, _ = _resolve({"name": "x"}, preset, algo=algo)
            cfg = OmegaConf.create({"algo": resolved, "trainer": top.trainer})
            settings = trainer_settings(cfg, set())
            assert settings.get("grad_accum") == accum and settings.get("betas") == betas, (algo, preset, settings)
            assert settings["grad_clip"] == 1.0
    cfg = OmegaConf.create({"algo": _resolve({"name": "x"}, "cpu")[0], "trainer": {**top.trainer, "grad_clip": None}})
    assert trainer_settings(cfg, {"trainer.grad_clip"})["grad_clip"] is None  # typed null: no clipping


@pytest.mark.parametrize("target", ["env", "task"])
def test_every_shipped_configuration_validates(target):
    """Every env (or task) x algorithm x preset the configs ship passes PlannerRunConfig.validate, so the checks
    refuse only what a user mistyped."""
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "scripts"))
    from _cli import to_plain
    from train_planner import resolve_config, trainer_settings

    from diffusion_rl.pipeline import PlannerRunConfig

    top = OmegaConf.load(ROOT / "configs" / ("train_planner.yaml" if target == "env" else "train_policy.yaml"))
    checked = 0
    for target_file in sorted((ROOT / "configs" / target).glob("*.yaml")):
        for algo_file in sorted((ROOT / "configs" / "algo").glob("*.yaml")):
            for preset in ("cpu", "paper"):
                cfg = OmegaConf.create({"preset": preset, "algo": OmegaConf.load(algo_file),
                                        target: OmegaConf.load(target_file), "trainer": top.trainer,
                                        "sampling": {}})
                cfg, _ = resolve_config(cfg, set(), cuda=False, target=target)
                PlannerRunConfig(env=cfg[target].name, algo=cfg.algo.name, model=to_plain(cfg.algo.model),
                                 data=to_plain(cfg.algo.get("data", {})), sampling=to_plain(cfg.algo.sampling),
                                 execution=cfg.algo.get("execution", "first_action"),
                                 execution_options=to_plain(cfg.algo.get("execution_options", {})) or {},
                                 trainer=trainer_settings(cfg, set()), run_dir="/nonexistent/run").validate()
                checked += 1
    assert checked >= 8


def test_each_training_seed_is_scored_on_its_own_episodes():
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_planner import EVAL_SEED_BASE, EVAL_SEED_STRIDE, eval_seed

    from diffusion_rl.data.demos import DEMO_SEED

    for name in ("train_planner.yaml", "train_policy.yaml"):
        top = OmegaConf.load(ROOT / "configs" / name)
        assert top.eval.seed is None
        episodes = int(top.eval.episodes)
        blocks = [set(range(eval_seed(OmegaConf.merge(top, {"seed": k})),
                            eval_seed(OmegaConf.merge(top, {"seed": k})) + episodes)) for k in range(3)]
        assert not (blocks[0] & blocks[1]) and not (blocks[1] & blocks[2])  # disjoint across training seeds
        assert min(blocks[1]) == EVAL_SEED_BASE + EVAL_SEED_STRIDE and EVAL_SEED_STRIDE >= episodes
        # never a demonstration's scene (reset seeds DEMO_SEED + i), for any training seed
        assert eval_seed(OmegaConf.merge(top, {"seed": 0})) > DEMO_SEED + 10**6
        assert eval_seed(OmegaConf.merge(top, {"seed": 300_000})) + episodes < 2**32
        assert eval_seed(OmegaConf.merge(top, {"seed": 2, "eval": {"seed": 7}})) == 7  # an explicit one wins


@pytest.mark.parametrize("config_name, target", [("train_planner", "env"), ("train_policy", "task")])
def test_a_one_episode_evaluation_prints_no_nan(config_name, target, tmp_path, monkeypatch, capsys):
    """train_planner.py and train_policy.py print score and success rate as evaluate.py does: no "± nan" when one
    episode leaves the standard error undefined (training replaced by a stub that returns such a result)."""
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir

    import diffusion_rl.pipeline
    from diffusion_rl.evaluation import EvalResult

    sys.path.insert(0, str(ROOT / "scripts"))
    import train_planner

    one = EvalResult("hopper-medium", "Hopper-v5", returns=[30.0], lengths=[20], normalized_scores=[0.7],
                     successes=[False])
    monkeypatch.setattr(diffusion_rl.pipeline, "train_planner",
                        lambda run_cfg, **_: SimpleNamespace(policy_path=tmp_path / "policy", evaluation=one))
    monkeypatch.setattr(train_planner, "user_override_keys", set)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=[f"run_dir={tmp_path / 'run'}", "device=cpu",
                                                          "eval.episodes=1"])
    train_planner.run(cfg, target)
    out = capsys.readouterr().out
    assert "nan" not in out, out
    assert "score:    0.7 (D4RL-normalized, 1 episode)" in out.splitlines(), out
    assert "success:  0.0% (1 episode)" in out.splitlines(), out


@pytest.mark.parametrize("algo", sorted(p.stem for p in (ROOT / "configs" / "algo").glob("*.yaml")))
@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_every_algo_config_and_preset_builds_its_model(algo, preset, tmp_path):
    # a preset's sizes must fit its own backbone (the U-Net cpu preset under transformer1d was silently ignored)
    from diffusion_rl.pipeline import PlannerRunConfig

    resolved, _ = _resolve({"name": "hopper-medium"}, preset, algo=algo)
    cfg = PlannerRunConfig(env="hopper-medium", algo=resolved["name"], model=resolved["model"],
                           data=resolved.get("data") or {}, sampling=resolved.get("sampling") or {},
                           run_dir=str(tmp_path / "run"))
    cfg.validate()  # builds the model (on the meta device) from these settings
    if algo == "diffusion_policy_transformer":
        assert resolved["model"]["backbone"] == "transformer1d"
        assert resolved["model"]["d_model"] == (256 if preset == "paper" else 128)


def test_each_algo_config_trains_into_its_own_run_folder():
    """The default run_dir is named after the algo config's file, not the algorithm: the transformer Diffusion
    Policy (algorithm diffusion_policy) no longer overwrites the U-Net's run folder."""
    folders = {}
    for script, target, algo in (("train_policy.py", "point-obstacle", "diffusion_policy"),
                                 ("train_policy.py", "point-obstacle", "diffusion_policy_transformer"),
                                 ("train_planner.py", "hopper-medium", "diffuser")):
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), f"algo={algo}", "--cfg", "job",
                               "--resolve"], env=_env(ROOT), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        line = next(x for x in proc.stdout.splitlines() if x.startswith("run_dir:"))
        folders[algo] = line.split(":", 1)[1].strip()
    assert folders == {"diffusion_policy": "runs/point-obstacle/diffusion_policy",
                       "diffusion_policy_transformer": "runs/point-obstacle/diffusion_policy_transformer",
                       "diffuser": "runs/hopper-medium/diffuser"}


@pytest.mark.parametrize("name", ["train_planner.yaml", "train_policy.yaml"])
def test_every_trainer_setting_can_be_set_from_the_command_line(name):
    """trainer.mixed_precision=no (bf16 off on CUDA), trainer.ema_decay=..., ...: every TrainerConfig field the
    run does not set itself is a key of the top-level trainer section (they were refused as unknown keys)."""
    import dataclasses

    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT / "scripts"))
    from train_planner import trainer_settings

    from diffusion_rl.training import TrainerConfig

    top = OmegaConf.load(ROOT / "configs" / name)
    set_by_the_run = {"eval_every", "run_dir", "seed", "device"}  # eval.every, run_dir, seed, device
    assert set(top.trainer) == {f.name for f in dataclasses.fields(TrainerConfig)} - set_by_the_run
    algo = OmegaConf.load(ROOT / "configs" / "algo" / "diffusion_policy.yaml")
    cfg = OmegaConf.create({"algo": algo, "trainer": OmegaConf.merge(top.trainer, {"mixed_precision": "no"})})
    settings = trainer_settings(cfg, set())
    assert settings["mixed_precision"] == "no" and settings["ema_power"] == algo.trainer.ema_power  # null: the algo's
    assert trainer_settings(cfg, {"trainer.ema_power"})["ema_power"] is None  # a null set by hand: a fixed decay
    TrainerConfig(**{k: v for k, v in settings.items() if k != "presets"})


def test_periodic_evaluation_is_not_repeated_for_the_final_step(tmp_path, hopper_hdf5):
    """With eval.every the trainer scores the last step's model itself: the run's eval.json is that evaluation
    (the same policy on the same episodes was evaluated a second time)."""
    run_dir = tmp_path / "run"
    proc = _run(["env=hopper-medium", f"dataset={hopper_hdf5}", f"run_dir={run_dir}", "trainer.max_steps=20",
                 "eval.every=10", "eval.episodes=2", "eval.num_envs=2", "eval.max_episode_steps=10", "eval.plot=false",
                 *TINY_DD], tmp_path / "empty")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final evaluation: the trainer's evaluation of step 20 (2 episodes)" in proc.stdout, proc.stdout[-2000:]
    assert "evaluating 2 episodes" not in proc.stdout
    final = json.loads((run_dir / "eval.json").read_text())
    periodic = json.loads((run_dir / "evals" / "step_00000020.json").read_text())
    assert final["returns"] == periodic["returns"] and final["train_steps"] == 20 and "step" not in final.get("extra", {})


def test_a_sampling_setting_the_model_never_reads_is_refused_when_the_user_sets_it(tmp_path):
    """A goal-conditioned or value-less Diffuser samples one plan without value guidance: a value-guidance setting
    typed on the command line was dropped without a word; the algo config's own defaults still pass quietly."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from train_planner import refuse_unused_sampling

    from diffusion_rl.pipeline import PlannerRunConfig

    maze = PlannerRunConfig(env="maze2d-umaze", algo="diffuser", model={"goal_conditioned": True},
                            sampling={"num_plans": 64, "guide_scale": 0.1})
    refuse_unused_sampling(maze, set())  # the yaml's defaults: left out of the policy, not refused
    refuse_unused_sampling(maze, {"sampling.steps", "algo.model.dim"})
    with pytest.raises(SystemExit, match="error: sampling.num_plans has no effect: a goal-conditioned Diffuser"):
        refuse_unused_sampling(maze, {"sampling.num_plans"})
    valueless = PlannerRunConfig(env="hopper-medium", algo="diffuser", model={"value_guided": False})
    with pytest.raises(SystemExit, match=r"error: algo.sampling.guide_scale has no effect: this Diffuser has no "
                                         r"value net \(value_guided=False\)"):
        refuse_unused_sampling(valueless, {"algo.sampling.guide_scale"})
    guided = PlannerRunConfig(env="hopper-medium", algo="diffuser", model={})  # value-guided by default
    refuse_unused_sampling(guided, {"sampling.num_plans", "algo.sampling.guide_scale"})
    refuse_unused_sampling(PlannerRunConfig(env="hopper-medium", algo="decision_diffuser"), {"sampling.steps"})

    run_dir = tmp_path / "run"  # the script refuses it in one line, before the dataset is looked for
    proc = _run(["env=maze2d-umaze", "algo=diffuser", "sampling.num_plans=8", f"run_dir={run_dir}"],
                tmp_path / "empty", timeout=120)
    assert proc.returncode != 0 and proc.stderr.strip() == (  # maze2d's Diffuser is built without a value net
        "error: sampling.num_plans has no effect: this Diffuser has no value net (value_guided=False): it samples one "
        "plan, without value guidance"), proc.stderr[-2000:]
    assert not any((run_dir / name).exists() for name in ("policy", "checkpoints", "config.yaml"))


def test_a_run_dir_another_live_run_holds_is_refused_before_anything_is_written(tmp_path):
    """The refused run wrote its config.yaml over the live run's record (and loaded or made its dataset) before
    the trainer found the folder taken."""
    import textwrap

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("the live run's record\n")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from diffusion_rl.training import lock_run_dir
        lock_run_dir({str(run_dir)!r})
        print("holding", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "holding"
        proc = _run(["env=hopper-medium", f"run_dir={run_dir}", "trainer.resume=true"], tmp_path / "empty",
                    timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: run_dir '{run_dir}' is in use by another "
                                                           f"process (pid {holder.pid})")
    assert (run_dir / "config.yaml").read_text() == "the live run's record\n"
