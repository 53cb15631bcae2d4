"""Train a planner end to end: dataset -> algorithm -> trainer -> MuJoCo evaluation -> artifact.

This is what ``scripts/train_planner.py`` runs, callable from Python without Hydra::

    from diffusion_rl.pipeline import PlannerRunConfig, train_planner
    result = train_planner(PlannerRunConfig(env="hopper-medium", trainer={"max_steps": 200}))
    print(result.policy_path, result.evaluation.normalized_score_mean)

Settings left empty take the algorithm's constructor defaults (the papers' sizes), not ``configs/algo/*.yaml`` or
a preset: the script composes those (with the env's overrides) into ``model``, ``data``, ``sampling`` and
``trainer``, and sets ``eval_seed`` to ``1e9 + 10000 * seed``; pass the same values to reproduce one of its runs.
"""

from __future__ import annotations

import inspect
import json
import numbers
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusion_rl.algos import ALGORITHMS, Algorithm, make_algorithm
from diffusion_rl.algos._common import check_kinds, check_process, check_settings
from diffusion_rl.artifact import normalizers_digest
from diffusion_rl.data import DatasetNotFoundError, EpisodeStore, SequenceDataset, load_episodes
from diffusion_rl.data.sequence import RETURN_LABELS, check_normalizer_spec
from diffusion_rl.evaluation import (
    EvalResult,
    action_bounds,
    env_dims,
    evaluate,
    plot_plan,
    resolve_env,
    rollout_eval_fn,
)
from diffusion_rl.evaluation._files import write_text_atomic
from diffusion_rl.execution import make_execution
from diffusion_rl.policy import Policy, check_device, resolve_device
from diffusion_rl.training import Trainer, TrainerConfig, check_fresh_run, lock_run_dir
from envs import TASKS, get_spec
from envs.catalogue import CATALOGUE


class ConfigError(ValueError):
    """A user's run configuration is invalid (found before any work is done); the message says what to fix."""


DATA_OPTIONS = ("normalizer", "discount", "value_discount", "terminal_penalty", "return_label")
"""The ``data`` settings of a run (SequenceDataset options it passes on; see ``PlannerRunConfig.data``)."""

TRAINER_KEYS_OWNED = {"seed": "seed=N", "device": "device=...", "run_dir": "run_dir=...",
                      "eval_every": "eval.every=N"}
"""TrainerConfig fields a run sets from its own settings (a ``trainer`` entry would be overridden or ignored)."""


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")


__all__ = ["ConfigError", "PlannerRunConfig", "PlannerRunResult", "load_or_make_dataset", "rollout_for_plot", "train_planner"]


@dataclass
class PlannerRunConfig:
    """Everything one planner run needs, as plain values (the Hydra config is turned into this)."""

    env: str = "hopper-medium"
    """A catalogue name (``hopper-medium``: D4RL-normalized scores) or a robot task (``point-obstacle``: success
    rate, demonstrations made by its scripted expert on first use)."""
    algo: str = "decision_diffuser"
    model: dict[str, Any] = field(default_factory=dict)
    """Algorithm constructor arguments (horizon, network width, diffusion steps...)."""
    data: dict[str, Any] = field(default_factory=dict)
    """SequenceDataset options: ``normalizer``, ``discount``, ``value_discount``, ``terminal_penalty``,
    ``return_label``; those left out take the algorithm's (``Algorithm.default_data``, as ``configs/algo``)."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """Sampler settings stored in the artifact (sampler, steps, guidance weight...)."""
    execution: str | None = None
    """How the policy executes plans (``diffusion_rl.execution``); None: the algorithm's own
    (``Algorithm.default_execution``: a Diffusion Policy's action queue of Ta = 8, first action otherwise)."""
    execution_options: dict[str, Any] | None = None
    """Options of the execution, e.g. ``{"action_steps": 8}`` for ``action_queue`` (Diffusion Policy's Ta); None (or
    {}): the execution's defaults (the algorithm's own where ``execution`` is None)."""
    trainer: dict[str, Any] = field(default_factory=dict)
    """TrainerConfig fields (max_steps, batch_size, lr, ema...)."""
    eval_episodes: int = 10
    eval_num_envs: int = 5
    eval_every: int = 0
    eval_seed: int = 0
    eval_max_episode_steps: int | None = None
    video: bool = False
    plot: bool = True
    dataset: str | None = None
    """Data source override (catalogue name, Minari id, .hdf5 or .zarr path); None = the env's dataset."""
    run_dir: str = "runs/hopper-medium/decision_diffuser"
    seed: int = 0
    device: str = "auto"
    preset: str | None = None
    """The size preset these settings came from (``cpu``, ``paper``), recorded in ``eval.json`` so score tables
    never mix presets; None when the settings were given directly."""

    def resolved_data(self) -> dict[str, Any]:
        """``data`` over the algorithm's defaults (``Algorithm.default_data``): what the run trains with and
        records. An unknown ``algo`` gives ``data`` alone (``validate`` refuses it)."""
        defaults = ALGORITHMS[self.algo].default_data if self.algo in ALGORITHMS else {}
        return {**defaults, **self.data}

    def validate(self) -> None:
        """Check every value before any work (dataset, training, evaluation); ``ConfigError`` names the key, what
        was expected and what was given."""
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            # every rank would make the dataset, save the artifact and evaluate: not a multi-process pipeline
            raise ConfigError("train_planner runs in one process; under torchrun (WORLD_SIZE > 1) train with "
                              "diffusion_rl.training.Trainer directly, which is DDP-aware")
        if self.algo not in ALGORITHMS:
            raise ConfigError(f"algo: unknown algorithm {self.algo!r}; expected one of: {', '.join(sorted(ALGORITHMS))}")
        if self.env not in TASKS and self.env not in CATALOGUE:
            raise ConfigError(f"env: unknown {self.env!r}; expected a catalogue name ({', '.join(sorted(CATALOGUE))}) "
                              f"or a task ({', '.join(sorted(TASKS))})")
        cls = ALGORITHMS[self.algo]
        given = set(inspect.signature(cls.__init__).parameters) - {"self", "obs_dim", "act_dim"}
        unknown = sorted(set(self.model) - given)
        if unknown:
            raise ConfigError(f"algo.model: unknown setting(s) {unknown} for {self.algo}; its settings are "
                              f"{sorted(given)}")
        unknown = sorted(set(self.data) - set(DATA_OPTIONS))
        if unknown:
            raise ConfigError(f"algo.data: unknown setting(s) {unknown}; expected some of {list(DATA_OPTIONS)}")
        data = self.resolved_data()
        try:
            check_normalizer_spec(data.get("normalizer", "gaussian"), ("observations", "actions"))
        except ValueError as err:
            raise ConfigError(f"algo.data.{err}") from None
        for key in ("discount", "value_discount", "terminal_penalty"):  # "0.99" would fail after the data is loaded
            value = data.get(key)
            if (key in data and not (value is None and key == "terminal_penalty")
                    and (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real))):
                raise ConfigError(f"algo.data.{key}: expected a number, got {value!r} ({type(value).__name__})")
        label = data.get("return_label", "minmax")
        if not isinstance(label, str) or label not in RETURN_LABELS:
            raise ConfigError(f"algo.data.return_label: expected one of {sorted(RETURN_LABELS)}, got {label!r}")
        owned = sorted(set(self.trainer) & set(TRAINER_KEYS_OWNED))
        if owned:
            raise ConfigError(f"trainer: {owned} are set by the run itself; use "
                              + ", ".join(TRAINER_KEYS_OWNED[k] for k in owned))
        unknown = sorted(set(self.sampling) - set(cls.sampling_names()))
        if unknown:
            raise ConfigError(f"algo.sampling: unknown setting(s) {unknown} for {self.algo}; its settings are "
                              f"{cls.sampling_names() or 'none'}")
        try:
            check_kinds(cls, self.model)
        except ValueError as err:
            raise ConfigError(f"algo.model.{err}") from None
        try:
            steps = self.model.get("num_steps")
            steps = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
            check_settings(self.sampling, steps)
            if self.execution is not None:
                make_execution(self.execution, self.execution_options)
            if steps is not None and "process" in inspect.signature(cls.__init__).parameters:
                check_process(self.model, self.sampling, steps)
        except ValueError as err:
            raise ConfigError(f"algo: {err}") from None
        for key, value in (("eval.video", self.video), ("eval.plot", self.plot)):
            if not isinstance(value, (bool, np.bool_)):  # "no" or "off" would be truthy and do the opposite
                raise ConfigError(f"{key}: expected true or false, got {value!r}")
        _int_at_least("eval.episodes", self.eval_episodes, 1)
        _int_at_least("eval.num_envs", self.eval_num_envs, 1)
        _int_at_least("eval.every", self.eval_every, 0)
        _int_at_least("seed", self.seed, 0)
        _int_at_least("eval.seed", self.eval_seed, 0)
        if self.eval_seed >= 2**32 - self.eval_episodes:  # evaluate's own bound, told before training, not after
            raise ConfigError(f"eval.seed: expected an integer in [0, {2**32 - self.eval_episodes}) (episode i resets "
                              f"with eval.seed + i, below 2**32), got {self.eval_seed} (train_planner.py's "
                              "eval.seed: null is 1e9 + 10000 x seed)")
        if self.eval_max_episode_steps is not None:
            _int_at_least("eval.max_episode_steps", self.eval_max_episode_steps, 1)
        try:
            trainer = TrainerConfig(**{**self.trainer, "device": "cpu", "run_dir": str(self.run_dir)})
        except TypeError as err:
            raise ConfigError(f"trainer: {err}") from None
        except ValueError as err:
            raise ConfigError(str(err).replace("TrainerConfig.", "trainer.")) from None
        if trainer.max_steps < 1:
            raise ConfigError(f"trainer.max_steps: expected an integer >= 1 (a run trains), got {trainer.max_steps!r}")
        if not trainer.resume:  # the trainer's own check, made now rather than after the dataset was loaded
            try:
                check_fresh_run(Path(self.run_dir) / "checkpoints", "trainer.resume=true")
            except ValueError as err:
                raise ConfigError(f"run_dir: {err}") from None
        try:
            check_device(self.device)
        except ValueError as err:
            raise ConfigError(f"device: {err}") from None
        if self.dataset is not None:
            path = Path(str(self.dataset)).expanduser()
            if path.suffix in (".hdf5", ".h5", ".zarr") and not path.exists():
                raise ConfigError(f"dataset: {self.dataset!r} does not exist (expected a D4RL .hdf5 file, a .zarr "
                                  "replay buffer, a Minari id or a catalogue name)")
        # sizes out of range (a horizon or width of 0) are the constructor's to tell: build the model with the env's
        # dimensions on the meta device (no memory, milliseconds), now rather than after a dataset that may take
        # many minutes to make
        obs_dim, act_dim = env_dims(self.env)
        try:
            with torch.device("meta"):
                make_algorithm(self.algo, obs_dim=obs_dim, act_dim=act_dim, **self.model)
        except ValueError as err:
            raise ConfigError(f"algo.model: {err}") from None
        except (RuntimeError, NotImplementedError):
            pass  # an operation the meta device lacks: the real build, after the data are loaded, checks the sizes


@dataclass
class PlannerRunResult:
    policy_path: Path
    evaluation: EvalResult
    train_summary: dict[str, Any]
    dataset_summary: str


def load_or_make_dataset(source: str, log: Callable[[str], None] = print) -> EpisodeStore:
    """Load ``source``; a catalogue name whose dataset is missing is made locally first (and we say so); a task
    name (``envs.tasks``) loads its demonstrations, made by the scripted expert when missing."""
    if source in TASKS:  # a robot task: its demonstrations, made by the scripted expert on first use
        from diffusion_rl.data.demos import default_demo_path, make_demos

        path = default_demo_path(source)
        if not path.exists():
            log(f"demonstrations of {source!r} not found at {path}: making {TASKS[source].demo_episodes} with "
                f"its scripted expert in {TASKS[source].gym_id}")
            log(str(make_demos(source, path=path)))
        return load_episodes(str(path))
    try:
        return load_episodes(source)
    except DatasetNotFoundError:
        if source not in CATALOGUE:
            raise
    from diffusion_rl.data.make import make_local_dataset  # runs MuJoCo: imported only when needed

    spec = get_spec(source)
    log(f"dataset for {source!r} not found in the Minari store: making {spec.local_id} locally with the "
        f"D4RL recipe ({spec.dataset_steps:,} steps in {spec.gym_id})")
    make_local_dataset(source)
    return load_episodes(source)


def _sequence_dataset(algo: Algorithm, store: EpisodeStore, horizon: int, data: dict[str, Any],
                      device: torch.device, normalizers: dict[str, Any] | None = None) -> SequenceDataset:
    keys = algo.batch_keys  # the instance's: e.g. a Diffuser without a value net needs no value targets
    if not algo.pad_to_horizon and not np.any(np.diff(store.episode_ends, prepend=0) >= horizon):
        raise ConfigError(f"{algo.name} trains on windows inside an episode (its last row is a condition: a "
                          f"goal-conditioned Diffuser's goal), but every episode of the dataset is shorter than "
                          f"horizon={horizon}; use a shorter algo.model.horizon or longer episodes")
    return SequenceDataset(
        store,
        horizon,
        keys=("observations", "actions"),
        normalizer=data.get("normalizer", "gaussian"),
        discount=data.get("discount", 0.99),
        returns="returns" in keys,
        values="values" in keys,
        value_discount=data.get("value_discount", 0.997),
        terminal_penalty=data.get("terminal_penalty"),
        return_label=data.get("return_label", "minmax"),
        pad_before=getattr(algo, "pad_before", 0),
        pad_to_horizon=algo.pad_to_horizon,
        device=device,
        normalizers=normalizers,
    )


def rollout_for_plot(policy: Policy, env_name: str, seed: int, steps: int | None = None,
                     one_step: int = 0) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                              np.ndarray]:
    """One plan from the first observation and the states actually visited over the plan's horizon (for
    action-only policies: the plan's action chunk and the actions executed).

    With ``one_step > 0`` the episode goes on for up to that many steps and two more arrays come back: the state
    each executed plan expected next (``ŝ1`` of every ``act``) and the state the simulator returned, step by
    step (the dynamic consistency of the plans over an episode)."""
    import gymnasium as gym

    gym_id, _ = resolve_env(env_name)
    env = gym.make(gym_id)
    expected: list[np.ndarray] = []
    reached: list[np.ndarray] = []
    try:
        obs, info = env.reset(seed=seed)
        policy.reset()
        context = {"goal": info["goal"]} if "goal" in info and policy.accepts_goal else {}
        plan = policy.plan(obs, **context)
        states = plan.observations is not None  # else an action-only policy: its chunk against what it did
        # a planner given K past states holds them in its first K - 1 rows: the plan from now starts at row `now`
        planned = plan.observations[plan.now:] if states else plan.action_chunk
        if planned is None:
            planned = plan.actions[None]
        length = steps or planned.shape[0]
        policy.reset()
        executed = [obs] if states else []
        for t in range(max(length - (1 if states else 0), one_step)):
            action = policy.act(obs, **context)
            obs, _, terminated, truncated, info = env.step(action)
            if len(executed) < length:
                executed.append(obs if states else action)
            if policy.expected_next is not None and t < one_step:
                expected.append(policy.expected_next[0].cpu().numpy())
                reached.append(obs)
            if terminated or truncated:
                break
    finally:
        env.close()
    if one_step <= 0:
        return np.asarray(planned), np.asarray(executed)
    return np.asarray(planned), np.asarray(executed), np.asarray(expected), np.asarray(reached)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


def check_recorded_env(store: EpisodeStore, source: str, gym_id: str) -> None:
    """Refuse a dataset whose metadata says it was recorded in another environment than ``gym_id`` (versions
    aside: Hopper-v4 data for Hopper-v5 passes). maze2d-umaze's data has maze2d-large's sizes; trained on, it was
    scored in the large maze, and its dataset_mean_normalized_return used the large maze's reference returns."""
    recorded, named = store.metadata.get("env_id"), store.metadata.get("spec_name")
    if not isinstance(recorded, str) and isinstance(named, str) and named in CATALOGUE:
        recorded = CATALOGUE[named].gym_id
    if isinstance(recorded, str) and recorded.rsplit("-v", 1)[0] != gym_id.rsplit("-v", 1)[0]:
        raise ConfigError(f"dataset: {source!r} was recorded in {recorded}, but this run is scored in {gym_id}; "
                          "expected a dataset recorded in the environment the run is scored in (pick the env "
                          "that matches the dataset)")


def dataset_digest(store: Any, data: Any) -> dict[str, Any]:
    """What the weights learned from, beyond the dataset's name: its size and the statistics fitted on it (a
    resume on a local dataset remade since under the same name, or an official one found since, is refused)."""
    return {"steps": int(store.num_steps), "episodes": int(store.num_episodes),
            "normalizers_sha256": normalizers_digest({k: n.state_dict() for k, n in data.normalizers.items()})}


def train_planner(cfg: PlannerRunConfig, log: Callable[[str], None] = print,
                  before_training: Callable[[], None] | None = None) -> PlannerRunResult:
    """Train ``cfg.algo`` on ``cfg.env``'s data (or ``cfg.dataset``), score it, and write the artifact.

    ``before_training`` is called once the run is accepted (a resume's checkpoint matches its settings), before
    the first step: where a caller records the run's configuration, so that a refused run leaves the folder's
    record as it was.

    Writes ``<run_dir>/policy/`` (the artifact), ``<run_dir>/eval.json``, TensorBoard logs under
    ``<run_dir>/tb`` and checkpoints under ``<run_dir>/checkpoints``; with ``plot`` a PNG of a plan against the
    executed trajectory, with ``video`` an mp4 of the final evaluation. ``eval.json`` is written last: a run
    folder with one holds a finished run.
    """
    cfg.validate()
    release = lock_run_dir(cfg.run_dir)  # the whole run's, not only training's: another run here is refused first
    try:
        return _train_planner(cfg, log, before_training)
    finally:
        release()


def _train_planner(cfg: PlannerRunConfig, log: Callable[[str], None],
                   before_training: Callable[[], None] | None = None) -> PlannerRunResult:
    task = TASKS.get(cfg.env)
    spec = None if task is not None else get_spec(cfg.env)
    env_name = cfg.env
    gym_id = task.gym_id if task is not None else spec.gym_id
    device = resolve_device(cfg.device)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    store = load_or_make_dataset(cfg.dataset or cfg.env, log)
    log(store.summary())
    obs_dim = int(np.prod(store["observations"].shape[1:]))
    act_dim = int(np.prod(store["actions"].shape[1:]))
    env_obs_dim, env_act_dim = env_dims(env_name)
    if (obs_dim, act_dim) != (env_obs_dim, env_act_dim):  # else it would train to the end, then fail at act()
        raise ConfigError(f"dataset: {cfg.dataset or cfg.env!r} has {obs_dim} observation and {act_dim} action values "
                          f"per step, but {gym_id} has {env_obs_dim} and {env_act_dim}; expected a dataset recorded "
                          "in the environment the run is scored in")
    check_recorded_env(store, cfg.dataset or cfg.env, gym_id)
    algo = make_algorithm(cfg.algo, obs_dim=obs_dim, act_dim=act_dim, **cfg.model)
    horizon = int(algo.config()["horizon"])
    data_settings = cfg.resolved_data()
    data = _sequence_dataset(algo, store, horizon, data_settings, device)
    # the return labels' normalizer travels too: it says what a target_return means in returns
    normalizers = {k: data.normalizers[k] for k in ("observations", "actions", "returns") if k in data.normalizers}
    n_params = sum(p.numel() for p in algo.parameters())
    log(f"{cfg.algo}: {n_params:,} parameters, horizon {horizon}, {len(data):,} training windows, device {device}")

    bounds = action_bounds(env_name)  # the artifact records the action space; act() clips into it

    def make_policy(model: Algorithm) -> Policy:
        return Policy(model, normalizers, env_name=env_name, sampling=cfg.sampling, execution=cfg.execution,
                      execution_options=cfg.execution_options, action_bounds=bounds,
                      seed=cfg.eval_seed, metadata={"dataset": cfg.dataset or cfg.env, "data": data_settings})

    try:  # the policy's own checks (execution against the model, sampler settings) before training, not after
        make_policy(algo)
    except ValueError as err:
        raise ConfigError(f"the trained model could not be used as configured: {err}") from None
    eval_fn = None
    if cfg.eval_every > 0:
        eval_fn = rollout_eval_fn(make_policy, env_name, episodes=cfg.eval_episodes, num_envs=cfg.eval_num_envs,
                                  seed=cfg.eval_seed, max_episode_steps=cfg.eval_max_episode_steps,
                                  results_dir=run_dir / "evals")
    trainer_cfg = TrainerConfig(**{"seed": cfg.seed, "device": str(device), "run_dir": str(run_dir),
                                   "eval_every": cfg.eval_every, **cfg.trainer})
    trainer = Trainer(algo, data, trainer_cfg, eval_fn=eval_fn,  # a resume with other ones is refused
                      run_settings={"env": cfg.env, "algo": cfg.algo, "model": cfg.model, "data": data_settings,
                                    "dataset": cfg.dataset or cfg.env, "dataset_digest": dataset_digest(store, data)})
    if before_training is not None:
        before_training()
    summary = trainer.fit()

    policy = make_policy(trainer.ema_model)
    policy_path = policy.save(run_dir / "policy")
    video = str(run_dir / "eval.mp4") if cfg.video else None
    last = getattr(eval_fn, "last", None)
    if last is not None and last[0] == summary["step"] and video is None:
        # the trainer has just scored this very model on these episodes (same policy settings and seeds)
        log(f"final evaluation: the trainer's evaluation of step {last[0]} ({cfg.eval_episodes} episodes)")
        result = last[1]
        result.extra.pop("step", None)
    else:
        log(f"evaluating {cfg.eval_episodes} episodes in {gym_id} ({cfg.eval_num_envs} envs)")
        result = evaluate(policy, env_name, episodes=cfg.eval_episodes, num_envs=cfg.eval_num_envs,
                          seed=cfg.eval_seed, video_path=video, max_episode_steps=cfg.eval_max_episode_steps)
    payload = {**result.to_dict(), "train_steps": summary["step"], "algo": cfg.algo, "seed": cfg.seed,
               "dataset": cfg.dataset or cfg.env, "policy": str(policy_path), "preset": cfg.preset,
               "eval_seed": cfg.eval_seed}  # "seed" is the training seed; episode i reset with eval_seed + i
    if spec is not None:
        # the rule of the dataset's own metadata: complete episodes only (a recipe's cut ones score low)
        from diffusion_rl.data.make import dataset_mean_normalized_return

        payload["dataset_mean_normalized_return"] = dataset_mean_normalized_return(store, spec)
    if "success" in store:  # demonstrations: how often the demonstrator succeeded
        payload["demo_success_rate"] = float(np.mean(store["success"][store.episode_ends - 1]))
    if cfg.plot:
        planned, executed, expected, reached = rollout_for_plot(
            Policy.load(policy_path, device=device), env_name, cfg.eval_seed, one_step=min(200, cfg.eval_max_episode_steps or 200)
        )
        # the x-y panel of a maze is the position, which only a state plan holds
        maze = spec is not None and spec.env == "maze2d" and algo.plans_states
        labels = ("planned", "executed") if algo.plans_states else ("planned actions", "executed actions")
        names = None if algo.plans_states else [f"action[{d}]" for d in range(planned.shape[-1])]
        plot_plan(planned, executed, run_dir / "plan.png", dims=(0, 1) if maze else None, xy=maze, labels=labels,
                  dim_names=names, title=f"{cfg.algo} on {env_name}: plan vs executed")
        if len(expected) > 1:  # planners only: each step's planned next state against the simulator's
            plot_plan(expected, reached, run_dir / "plan_consistency.png", labels=("planned next state",
                      "simulator's next state"), title=f"{cfg.algo} on {env_name}: one-step plan vs executed "
                      f"(plan error {result.plan_error_mean:.4f} RMS, normalized)")
    # last: eval.json marks a finished run (reproduce.py counts a cell with one as done), so a run interrupted
    # while plotting has none and is finished by a rerun with trainer.resume=true
    _write_json(run_dir / "eval.json", payload)
    return PlannerRunResult(policy_path, result, summary, store.summary())


def run_config_dict(cfg: PlannerRunConfig) -> dict[str, Any]:
    """The run configuration as a plain dict (for logs and config.yaml)."""
    return asdict(cfg)
