"""scripts/evaluate.py end to end (subprocess) on a tiny untrained artifact, in the real Hopper-v5."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_rl import Policy
from diffusion_rl.algos import DecisionDiffuser
from diffusion_rl.data import GaussianNormalizer
from envs import get_spec
from tests.scripts.cli import run_lines

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "evaluate.py"


def _env() -> dict[str, str]:
    # one torch thread: on a shared, oversubscribed CPU two spinning threads make tiny forwards ~100x slower
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_script(cwd: Path, *overrides: str, timeout: int = 180) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(SCRIPT), *overrides], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def hopper_artifact(path: Path, seed: int = 0) -> Path:
    """An untrained Decision Diffuser for Hopper (11 states, 3 actions), saved as ``path`` (weights from ``seed``)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(0)
    algo = DecisionDiffuser(obs_dim=11, act_dim=3, horizon=8, num_steps=20, dim=16, dim_mults=(1, 2),
                            inv_hidden_dim=32)
    normalizers = {"observations": GaussianNormalizer().fit(rng.normal(size=(200, 11))),
                   "actions": GaussianNormalizer().fit(0.3 * rng.normal(size=(200, 3)))}
    return Policy(algo, normalizers, env_name="hopper-medium", sampling={"steps": 4}).save(path)


@pytest.fixture(scope="module")
def script_module():
    """The script imported as a module, for its two small helpers."""
    spec = importlib.util.spec_from_file_location("evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluates_an_artifact_and_writes_json_and_video_beside_it(tmp_path):
    policy = hopper_artifact(tmp_path / "run" / "policy")
    cwd = tmp_path / "cwd"
    proc = run_script(cwd, f"policy={policy}", "episodes=2", "num_envs=2", "max_episode_steps=20", "seed=3",
                      "video=true", "sampling.steps=2", "progress=false")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = tmp_path / "run" / "eval_hopper-medium.json"  # <policy>/../eval_<env>.json
    result = json.loads(out.read_text())
    assert result["env_name"] == "hopper-medium" and result["gym_id"] == "Hopper-v5"
    assert result["episodes"] == 2 and result["seed"] == 3 and result["num_envs"] == 2
    assert all(1 <= n <= 20 for n in result["lengths"])
    expected = get_spec("hopper-medium").normalized_score(np.asarray(result["returns"]))
    np.testing.assert_allclose(result["normalized_scores"], expected)
    assert math.isfinite(result["normalized_score_mean"])
    assert result["normalized_score_mean"] == pytest.approx(float(np.mean(expected)))
    assert result["extra"]["sampling"]["steps"] == 2  # the override, not the artifact's 4
    assert result["extra"]["algorithm"] == "decision_diffuser"
    assert result["extra"]["policy"] == str(policy.resolve())
    video = tmp_path / "run" / "eval_hopper-medium.mp4"
    assert video.is_file() and video.stat().st_size > 1000 and result["video_path"] == str(video)
    assert f"{result['normalized_score_mean']:.1f} ±" in proc.stdout
    # 20 steps, not the catalogue's 1000: the score line does not call it D4RL's
    assert "normalized with D4RL's references, time limit 20, not the catalogue's 1000" in proc.stdout
    assert "D4RL-normalized" not in proc.stdout and result["time_limit_differs"] is True
    assert str(out) in proc.stdout
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "eval_hopper-medium.json", "eval_hopper-medium.mp4", "policy"]
    assert list(cwd.iterdir()) == []  # no Hydra output folder or log in the working directory


def test_compiled_evaluation_scores_what_the_eager_one_scores(tmp_path):
    policy = hopper_artifact(tmp_path / "policy")
    results = []
    for flag in ("false", "true"):
        out = tmp_path / f"eval_{flag}.json"
        proc = run_script(tmp_path / "cwd", f"policy={policy}", "episodes=2", "num_envs=2", "max_episode_steps=15",
                          f"compile={flag}", f"out={out}", "progress=false")
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(json.loads(out.read_text()))
    assert [r["extra"]["compile"] for r in results] == [False, True]
    np.testing.assert_allclose(results[1]["returns"], results[0]["returns"], rtol=1e-4)
    assert results[1]["lengths"] == results[0]["lengths"]


def test_single_file_artifact_with_env_and_out(tmp_path):
    policy = hopper_artifact(tmp_path / "model.safetensors")
    out = tmp_path / "scores" / "hopper.json"
    proc = run_script(tmp_path / "cwd", f"policy={policy}", "env=hopper-medium", "episodes=1", "num_envs=1",
                      "max_episode_steps=5", f"out={out}", "+sampling.guidance_weight=0.0", "progress=false")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["episodes"] == 1 and result["lengths"][0] <= 5 and result["video_path"] is None
    assert result["extra"]["sampling"]["guidance_weight"] == 0.0 and result["extra"]["sampling"]["steps"] == 4
    assert not (tmp_path / "eval_hopper-medium.json").exists()


def test_unknown_key_lists_the_valid_ones(tmp_path):
    proc = run_script(tmp_path, "policy=whatever", "episodez=2")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "episodez" in text
    for key in ("episodes", "num_envs", "seed", "video", "max_episode_steps", "out", "sampling", "policy"):
        assert key in text, key
    bad_env = run_script(tmp_path, "policy=whatever", "env=hopper-mediocre")
    assert bad_env.returncode != 0
    assert "hopper-medium" in bad_env.stderr and "walker2d-expert" in bad_env.stderr


def test_unknown_key_lists_the_config_groups_and_no_empty_clause(tmp_path):
    # `env` and `task` default to null (no key in the composed config), yet both are valid groups: listed
    proc = run_script(tmp_path, "policy=whatever", "episodez=2")
    line = proc.stderr.strip()
    assert proc.returncode != 0 and line.startswith("error: unknown config key 'episodez'"), proc.stderr
    assert line.endswith("; valid config groups: env, task") and len(line.splitlines()) == 1, line
    # a config that uses no group: the clause is left out rather than left empty
    sys.path.insert(0, str(ROOT / "scripts"))
    from _cli import check_overrides

    with pytest.raises(SystemExit) as exit_info:
        check_overrides("reproduce", ["seedz=3"])
    message = str(exit_info.value.code)
    assert message.startswith("error: unknown config key 'seedz'") and "seeds" in message
    assert "config groups" not in message and not message.rstrip().endswith(":"), message


def test_a_misspelt_config_group_choice_is_one_line_with_the_nearest_name():
    # Hydra's own report of an unknown env/algo/task is about twenty lines with its search path
    sys.path.insert(0, str(ROOT / "scripts"))
    from _cli import check_overrides

    for config, arg, message in [
        ("train_planner", "env=hoper-medium", "error: env='hoper-medium' is not a known env (did you mean "
                                              "hopper-medium?); expected one of: halfcheetah-expert"),
        ("train_planner", "algo=difuser", "(did you mean diffuser?)"),
        ("train_policy", "task=point-obstcle", "(did you mean point-obstacle?)"),
        ("evaluate", "env=nowhere", "error: env='nowhere' is not a known env; expected one of"),
        ("evaluate", "env=null", "error: env=null is not a choice on the command line: leave env out"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            check_overrides(config, [arg])
        assert message in str(exit_info.value.code), exit_info.value.code
    check_overrides("train_planner", ["env=maze2d-umaze", "algo=diffuser"])  # known names pass
    check_overrides("train_planner", ["env='hopper-medium'"])  # as quoted on some shells
    check_overrides("train_planner", ["-m", "env=hopper-medium,walker2d-medium"])  # a sweep is Hydra's to read
    check_overrides("train_planner", ["env=hopper-medium,walker2d-medium"])


def test_renaming_a_chosen_config_group_is_refused():
    """env.name=hopper-medium with env=walker2d-medium trained hopper with walker2d's per-env settings (its
    inverse-dynamics noise); env.name= alone trained walker2d without them. Choosing is group=<name>'s job."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from _cli import check_overrides

    for config, args in [("train_planner", ["env=walker2d-medium", "env.name=hopper-medium"]),
                         ("train_planner", ["env.name=walker2d-medium"]),
                         ("train_planner", ["algo.name=diffuser"]),
                         ("train_policy", ["task.name=metaworld-reach"])]:
        group = args[-1].split(".")[0]
        with pytest.raises(SystemExit) as exit_info:
            check_overrides(config, args)
        assert f"error: {group}.name= renames the {group} chosen" in str(exit_info.value.code)
        assert f"{group}=<name>" in str(exit_info.value.code)


def test_sampler_or_env_that_does_not_fit_the_policy_is_one_line(tmp_path):
    """heun on a diffusion model and an env with other observation sizes are refused before any rollout, naming
    the key, instead of a traceback at the first act."""
    policy = hopper_artifact(tmp_path / "policy")
    cases = [("sampling.sampler=heun", "error: sampling.sampler: sampler 'heun' integrates the velocity of the "
                                       "linear flow path: it needs process='flow'"),
             ("env=walker2d-medium", "error: env: expected an environment with observations of size 11, as the "
                                     "policy was trained on (hopper-medium); got walker2d-medium (Walker2d-v5) "
                                     "with observations of shape [17]")]
    lines = [[f"policy={policy}", arg, "episodes=1", "max_episode_steps=2", "progress=false"] for arg, _ in cases]
    for (arg, message), proc in zip(cases, run_lines(SCRIPT, lines, tmp_path / "cwd"), strict=True):
        assert proc.returncode != 0 and message in proc.stderr, (arg, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.rglob("eval_*.json"))


def test_score_lines_leave_out_an_undefined_standard_error():
    sys.path.insert(0, str(ROOT / "scripts"))
    from _cli import score_lines

    from diffusion_rl.evaluation import EvalResult

    one = EvalResult("hopper-medium", "Hopper-v5", returns=[30.0], lengths=[20], normalized_scores=[1.5],
                     successes=[True])
    assert score_lines(one) == ["score: 1.5 (D4RL-normalized, 1 episode)", "success: 100.0% (1 episode)"]
    two = EvalResult("hopper-medium", "Hopper-v5", returns=[30.0, 10.0], lengths=[20, 9],
                     normalized_scores=[1.0, 3.0], successes=[True, False])
    assert score_lines(two, label_width=9) == ["score:    2.0 ± 1.0 (D4RL-normalized, 2 episodes)",
                                               "success:  50.0 ± 50.0% (2 episodes)"]
    assert score_lines(EvalResult("Hopper-v5", "Hopper-v5", returns=[1.0], lengths=[1])) == []


def test_missing_policy_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_run" / "policy"
    proc, unset = run_lines(SCRIPT, [[f"policy={missing}", "episodes=1"], ["episodes=1"]], tmp_path)
    assert proc.returncode != 0
    assert f"error: cannot load policy={missing}" in proc.stderr and "no artifact at" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert unset.returncode != 0 and "policy=<path> is required" in unset.stderr


def test_unknown_sampling_setting_lists_the_policy_settings(tmp_path):
    policy = hopper_artifact(tmp_path / "policy")
    proc = run_script(tmp_path, f"policy={policy}", "sampling.stepz=3")
    assert proc.returncode != 0
    assert "stepz" in proc.stderr and "guidance_weight" in proc.stderr and "steps" in proc.stderr
    assert not list(tmp_path.glob("eval_*.json"))


def test_bad_values_are_one_line_before_the_policy_is_loaded(tmp_path):
    import torch

    policy = hopper_artifact(tmp_path / "policy")
    cases = [("episodes=0", "error: episodes: expected an integer >= 1, got 0"),
             ("num_envs=abc", "error: num_envs: expected an integer >= 1, got 'abc'"),
             ("seed=-1", "error: seed: expected an integer >= 0, got -1"),
             ("max_episode_steps=0", "error: max_episode_steps: expected null or an integer >= 1, got 0"),
             ("video=maybe", "error: video: expected true or false, got 'maybe'"),
             ("compile=jit", "error: compile: expected True, False or one of ['trace', 'cuda_graph', 'inductor'], "
                            "got 'jit'"),
             ("precision=fp16", "error: precision: expected one of ['float32', 'bfloat16'], got 'fp16'"),
             ("device=tpu", "error: device: 'tpu' is not a device"),
             ("out=/proc/eval.json", "error: out=/proc/eval.json: cannot write there"),
             ("out=eval.txt", "error: out: expected a path ending in .json"),
             ("sampling.steps=0", "error: sampling.steps: sampling setting steps: expected None or an integer")]
    if not torch.cuda.is_available():
        cases.append(("device=cuda", "asked for CUDA, but this machine has no CUDA device"))
    lines = [[f"policy={policy}", arg, *([] if arg.startswith("episodes") else ["episodes=1"])] for arg, _ in cases]
    for (arg, message), proc in zip(cases, run_lines(SCRIPT, lines, tmp_path / "cwd"), strict=True):
        assert proc.returncode != 0 and message in proc.stderr, (arg, proc.stderr[-1500:])
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.rglob("eval_*.json")) and list((tmp_path / "cwd").iterdir()) == []


def test_seed_too_close_to_2_to_the_32_is_one_line_before_the_policy_is_loaded(tmp_path):
    """Episode i resets with seed + i, which must stay below 2**32: the CLI says so up front (no traceback)."""
    policy = hopper_artifact(tmp_path / "policy")
    proc = run_script(tmp_path / "cwd", f"policy={policy}", "episodes=10", "seed=4294967290", "progress=false")
    message = ("error: seed: expected an integer in [0, 4294967286) (episode i resets with seed + i, below 2**32 "
               "for episodes=10), got 4294967290")
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "policy:" not in proc.stdout  # refused before the policy is loaded
    last = run_script(tmp_path / "cwd", f"policy={policy}", "episodes=2", "num_envs=1", "seed=4294967293",
                      "max_episode_steps=2", "sampling.steps=2", "progress=false", f"out={tmp_path / 'e.json'}")
    assert last.returncode == 0, last.stderr[-1500:]  # the largest seed that fits two episodes
    assert json.loads((tmp_path / "e.json").read_text())["seed"] == 4294967293


def test_num_envs_comment_says_a_stochastic_policy_depends_on_it(tmp_path):
    """configs/evaluate.yaml must not promise num_envs-independent results: a diffusion Policy draws its sampling
    noise per wave, so its episodes change with num_envs (as the evaluate docstring says)."""
    from diffusion_rl.evaluation import evaluate

    policy = Policy.load(hopper_artifact(tmp_path / "policy"))
    policy.temperature = 1.0
    runs = [evaluate(policy, "hopper-medium", episodes=2, num_envs=n, seed=0, max_episode_steps=3, progress=False)
            for n in (1, 2)]
    assert not np.allclose(runs[0].returns, runs[1].returns)  # the claim the comment must not make
    line = next(x for x in (ROOT / "configs" / "evaluate.yaml").read_text().splitlines() if x.startswith("num_envs:"))
    assert "do not depend on it" not in line and "stochastic" in line, line


def test_helpers(script_module):
    assert script_module.sampling_overrides_as_additions(
        ["policy=p", "sampling.steps=5", "+sampling.eta=0.1", "seed=1"]
    ) == ["policy=p", "++sampling.steps=5", "+sampling.eta=0.1", "seed=1"]
    out = script_module.default_out("/runs/x/policy", "hopper-medium")
    assert out == Path("/runs/x/eval_hopper-medium.json")
    # a single-file artifact's results are named after it too: two checkpoints of one folder keep theirs apart
    assert script_module.default_out("/runs/x/m.safetensors", "envs.maze2d:Maze2D-UMaze-v1") == Path(
        "/runs/x/eval_m_envs.maze2d_Maze2D-UMaze-v1.json")
    assert script_module.default_out("/runs/x/n.safetensors", "hopper-medium", "diagnose") == Path(
        "/runs/x/diagnose_n_hopper-medium.json")


def test_a_robot_task_is_named_by_task(tmp_path):
    """evaluate.py task=point-obstacle scores a policy in a robot task (env= names D4RL-style entries only, and an
    artifact without an env_name needs one of them)."""
    from diffusion_rl.algos import DiffusionPolicy

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    algo = DiffusionPolicy(4, 2, horizon=8, obs_steps=2, num_steps=10, down_dims=(16, 32), step_embed_dim=16,
                           n_groups=4)
    normalizers = {"observations": GaussianNormalizer().fit(rng.normal(size=(64, 4))),
                   "actions": GaussianNormalizer().fit(rng.normal(size=(64, 2)))}
    path = Policy(algo, normalizers, sampling={"steps": 2}, execution="action_queue",
                  execution_options={"action_steps": 4}).save(tmp_path / "dp")
    out = tmp_path / "task.json"
    proc = run_script(tmp_path / "cwd", f"policy={path}", "task=point-obstacle", "episodes=1", "num_envs=1",
                      "max_episode_steps=5", f"out={out}", "progress=false")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["env_name"] == "point-obstacle" and "success_rate_mean" in result and result["lengths"] == [5]
    assert (result["extra"]["execution"], result["extra"]["execution_options"]) == ("action_queue", {"action_steps": 4})
    # Ta of a loaded Diffusion Policy from the command line; a DDPM artifact's steps typed after the sampler
    # that reads them (the sampler is applied first, whatever the order)
    ddpm = Policy(algo, normalizers, sampling={"sampler": "ddpm"}).save(tmp_path / "dp_ddpm")
    proc = run_script(tmp_path / "cwd", f"policy={ddpm}", "task=point-obstacle", "episodes=1", "num_envs=1",
                      "max_episode_steps=3", f"out={out}", "progress=false", "execution_options.action_steps=2",
                      "sampling.steps=2", "sampling.sampler=ddim")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["extra"]["execution_options"] == {"action_steps": 2} and result["extra"]["sampling"]["sampler"] == "ddim"
    assert "kept for other samplers" not in proc.stderr  # steps typed: read by the sampler typed with it
    bad = run_script(tmp_path / "cwd", f"policy={path}", "task=point-obstacle", "execution_options.action_steps=99")
    assert bad.returncode != 0 and "error: execution_options: action_steps (Ta=99) must be in [1, 7]" in bad.stderr
    both = run_script(tmp_path / "cwd", f"policy={path}", "task=point-obstacle", "env=hopper-medium")
    assert both.returncode != 0 and "env= and task= both name the environment" in both.stderr
    neither = run_script(tmp_path / "cwd", f"policy={path}")
    assert neither.returncode != 0 and "pass env=<catalogue name> or task=<robot task>" in neither.stderr


def test_a_sampling_override_the_model_never_reads_is_refused_with_the_reason(tmp_path):
    from diffusion_rl.algos import Diffuser
    from tests.test_policy import ACT_DIM, OBS_DIM, make_normalizers

    torch.manual_seed(0)
    algo = Diffuser(OBS_DIM, ACT_DIM, horizon=8, num_steps=10, dim=8, dim_mults=(1, 2), value_guided=False)
    path = Policy(algo, make_normalizers(), env_name="hopper-medium").save(tmp_path / "diffuser")
    proc = run_script(tmp_path / "cwd", f"policy={path}", "sampling.num_plans=4", "episodes=1")
    assert proc.returncode != 0
    assert "sampling.num_plans has no effect: this Diffuser has no value net" in proc.stderr, proc.stderr[-2000:]


def test_the_cli_scores_the_episodes_the_python_api_does(tmp_path):
    """evaluate.py seed=s and `evaluate(Policy.load(p), env, seed=s)` give the same episodes: the script used to
    reset the policy with seed=s before evaluate() added the policy's seed again (sampler seed 2s + i)."""
    from diffusion_rl.evaluation import evaluate

    policy_path = hopper_artifact(tmp_path / "run" / "policy")
    out = tmp_path / "cli.json"
    proc = run_script(tmp_path / "cwd", f"policy={policy_path}", "episodes=2", "num_envs=1", "seed=3",
                      "max_episode_steps=6", f"out={out}", "progress=false")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    cli = json.loads(out.read_text())
    policy = Policy.load(policy_path)
    api = evaluate(policy, "hopper-medium", episodes=2, num_envs=1, seed=3, max_episode_steps=6, progress=False)
    assert cli["returns"] == pytest.approx(api.returns.tolist(), rel=1e-6, abs=1e-9)
    assert cli["sampler_seed"] == api.sampler_seed == policy.seed + 3
    # the time limit is not the catalogue's 1000: eval.json and the printed score line say so
    assert cli["time_limit_differs"] is True
    assert "(normalized with D4RL's references, time limit 6, not the catalogue's 1000" in proc.stdout


def test_score_lines_say_when_the_time_limit_is_not_the_catalogues():
    sys.path.insert(0, str(ROOT / "scripts"))
    from _cli import score_lines

    from diffusion_rl.evaluation import EvalResult

    short = EvalResult("hopper-medium", "Hopper-v5", returns=[30.0], lengths=[20], normalized_scores=[1.5],
                       max_episode_steps=200, reference_max_episode_steps=1000)
    assert score_lines(short) == ["score: 1.5 (normalized with D4RL's references, time limit 200, not the "
                                  "catalogue's 1000: not comparable with D4RL, 1 episode)"]
    full = EvalResult("hopper-medium", "Hopper-v5", returns=[30.0], lengths=[20], normalized_scores=[1.5],
                      max_episode_steps=1000, reference_max_episode_steps=1000)
    assert score_lines(full) == ["score: 1.5 (D4RL-normalized, 1 episode)"]
