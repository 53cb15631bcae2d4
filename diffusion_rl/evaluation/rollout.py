"""Roll a policy out in a gymnasium vector env and score it (D4RL-normalized for catalogue envs).

Episodes run in waves of ``num_envs`` environments in lockstep: every env of a wave is reset with its own seed
(episode ``i`` uses ``seed + i``), the policy acts on the whole batch each step, and an env that has finished
is frozen (its last observation is shown to the policy again, its rewards are ignored) until the wave ends.
So a deterministic policy's episode results do not depend on ``num_envs``: they equal a plain one-env loop with
the same seeds (exactly for a numpy policy; a torch network's batched matrix products round differently at each
batch size, which moved BC's returns by about 1e-6 over 160 steps). A stochastic one's do (every diffusion
``Policy``: its sampling noise is drawn per wave for the whole batch), which is why results record ``num_envs``:
rerun with the same ``num_envs`` to get the same episodes.

Policy protocol: ``policy.reset()`` (optional) at the start of each wave (``reset(seed=...)`` when the policy
has an integer ``seed`` and its ``reset`` takes one, as diffusion_rl's ``Policy`` does), then
``policy.act(obs [N, obs_dim], **context) -> actions [N, act_dim]`` with ``context = {"goal": [N, 2]}`` when
the env reports a goal in ``info["goal"]`` (maze2d) and the policy takes one (``policy.accepts_goal``, True when
absent): a goal-free policy (a Decision Diffuser, BC) is scored in a maze without it.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

import envs
from diffusion_rl._numbers import is_integer, is_real
from diffusion_rl.evaluation.result import EvalResult
from diffusion_rl.evaluation.video import AtomicVideoWriter, prepare_offscreen_rendering
from diffusion_rl.progress import progress_bar

__all__ = ["VIDEO_SIZE", "ActingPolicy", "action_bounds", "evaluate", "resolve_env"]

VIDEO_SIZE = 256
"""Width and height (pixels) of recorded video frames."""


class ActingPolicy(Protocol):
    def act(self, obs: np.ndarray, **context: Any) -> np.ndarray: ...


def _plan_errors(policy: Any, next_obs: np.ndarray) -> np.ndarray | None:
    """The policy's per-env error between ``next_obs`` and its planned next state, if it reports one: ``[n, D]``
    per state dimension when its ``plan_error`` takes ``per_dim`` (diffusion_rl.Policy), else ``[n, 1]``."""
    fn = getattr(policy, "plan_error", None)
    if not callable(fn):
        return None
    try:
        per_dim = "per_dim" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature (a C extension): the plain protocol
        per_dim = False
    err = fn(next_obs, per_dim=True) if per_dim else fn(next_obs)
    if err is None:
        return None
    err = np.asarray(err, dtype=np.float64)
    return err.reshape(err.shape[0], -1) if per_dim else err.reshape(-1, 1)


def _register_custom_envs() -> None:
    """Import the catalogue's own env packages so their gymnasium ids exist (maze2d)."""
    try:
        importlib.import_module("envs.maze2d")
    except ModuleNotFoundError as exc:  # a checkout without the maze package: only that is optional
        if exc.name not in ("envs.maze2d",):
            raise


def resolve_env(env_name: str) -> tuple[str, envs.EnvSpec | None]:
    """Catalogue name -> (gymnasium id, spec); a registered gymnasium id -> (id, None); else ``ValueError``."""
    if not isinstance(env_name, str) or not env_name:
        raise ValueError(f"env_name: expected a catalogue name or gymnasium id string, got {env_name!r}")
    _register_custom_envs()
    try:
        spec = envs.get_spec(env_name)
        return spec.gym_id, spec
    except KeyError:
        pass
    if env_name in envs.TASKS:  # a robot task: scored by success rate, no reference returns
        task = envs.get_task(env_name)
        task.register()
        return task.gym_id, None
    if ":" in env_name or env_name in gym.registry:
        return env_name, None
    raise ValueError(
        f"unknown environment {env_name!r}: expected a catalogue name ({', '.join(envs.catalogue_names())}), "
        f"a task ({', '.join(envs.task_names())}) or a registered gymnasium id such as 'Hopper-v5'"
    )


def _spaces(env_name: str) -> tuple[gym.Space, gym.Space]:
    gym_id, _ = resolve_env(env_name)
    env = gym.make(gym_id)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def env_dims(env_name: str) -> tuple[int, int]:
    """``(obs_dim, act_dim)``: the flat sizes of the env's observation and action spaces (what a model built for
    its data takes), known without loading a dataset."""
    obs_space, act_space = _spaces(env_name)
    return int(gym.spaces.flatdim(obs_space)), int(gym.spaces.flatdim(act_space))


def action_bounds(env_name: str) -> tuple[list[float], list[float]] | None:
    """``(low, high)`` of the env's Box action space (what a ``Policy`` clips its actions into), else None."""
    space = _spaces(env_name)[1]
    if not isinstance(space, gym.spaces.Box):
        return None
    return np.asarray(space.low, np.float64).reshape(-1).tolist(), np.asarray(space.high, np.float64).reshape(-1).tolist()


def _render_fps(env: gym.Env) -> float:
    """The video's frame rate: the env's ``render_fps``; where it leaves that unset (None), its simulation rate
    ``1 / dt`` when it has one, else 30."""
    fps = env.metadata.get("render_fps")
    if fps is None:
        dt = getattr(env.unwrapped, "dt", None)
        fps = 1.0 / dt if is_real(dt) and dt > 0 else 30.0
    return fps


def _make_env(gym_id: str, max_episode_steps: int | None, render: bool) -> gym.Env:
    kwargs: dict[str, Any] = {}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if not render:
        return gym.make(gym_id, **kwargs)
    prepare_offscreen_rendering()
    try:
        return gym.make(gym_id, render_mode="rgb_array", width=VIDEO_SIZE, height=VIDEO_SIZE, **kwargs)
    except TypeError:  # envs without width/height arguments render at their own size
        return gym.make(gym_id, render_mode="rgb_array", **kwargs)


def _as_numpy(actions: Any) -> np.ndarray:
    if hasattr(actions, "detach"):  # torch tensor, without importing torch here
        actions = actions.detach().cpu().numpy()
    try:
        return np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"policy.act must return a numeric array, got {type(actions)!r}") from exc


def _check_actions(actions: Any, expected: tuple[int, ...]) -> np.ndarray:
    arr = _as_numpy(actions)
    if arr.shape != expected:
        raise ValueError(f"policy.act returned actions of shape {arr.shape}; expected {expected} [num_envs, act_dim]")
    if not np.all(np.isfinite(arr)):
        raise ValueError("policy.act returned NaN or infinite actions")
    return arr


def _update_goal(goal: np.ndarray | None, info: dict[str, Any], which: np.ndarray) -> np.ndarray | None:
    if "goal" not in info:
        return goal
    new = np.asarray(info["goal"], dtype=np.float64)
    present = np.asarray(info.get("_goal", np.ones(len(new), dtype=bool)), dtype=bool) & which
    if goal is None:
        return new.copy()
    goal[present] = new[present]
    return goal


def _warnings_above(bar: Any) -> Callable[[], None]:
    """Show warnings raised while ``bar`` runs above it (its line cleared first, then redrawn) rather than inside
    its line; returns what restores the usual display. The display in force is kept (``logging.captureWarnings``
    still logs them), and warnings being recorded (``catch_warnings(record=True)``, pytest) are left alone."""
    if bar.disable or getattr(getattr(warnings, "_showwarnmsg_impl", None), "__name__", "") != "_showwarnmsg_impl":
        return lambda: None
    shown = warnings.showwarning

    def show(*args: Any, **kwargs: Any) -> None:
        with type(bar).external_write_mode(file=sys.stderr):
            shown(*args, **kwargs)

    warnings.showwarning = show

    def restore() -> None:
        if warnings.showwarning is show:
            warnings.showwarning = shown

    return restore


def _reset_takes_seed(policy: Any) -> bool:
    """Whether ``policy.reset`` accepts ``seed=`` (diffusion_rl.Policy's does; the protocol's plain reset() not)."""
    reset = getattr(policy, "reset", None)
    if reset is None:
        return False
    try:
        params = inspect.signature(reset).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == "seed" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def evaluate(
    policy: ActingPolicy,
    env_name: str,
    *,
    episodes: int = 10,
    num_envs: int = 5,
    seed: int = 0,
    video_path: str | None = None,
    max_episode_steps: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` in ``env_name`` and summarise returns and normalized scores.

    ``env_name``: a catalogue name (``hopper-medium`` -> ``Hopper-v5``, scored with D4RL's references) or a
    gymnasium id (returns only). ``max_episode_steps`` overrides the time limit (default: the catalogue's).
    ``video_path``: record env 0's episodes into one mp4 file. For policies with ``plan_error(next_obs)``
    (planners: see :meth:`diffusion_rl.Policy.plan_error`) each episode's mean plan error is recorded too; for
    envs that report ``info["success"]`` or ``info["route"]`` (robot tasks), the value at each episode's last step.
    A policy with an integer ``seed`` (``diffusion_rl.Policy``) is reset with ``seed=policy.seed + seed + i`` before
    the wave of episodes that starts at episode ``i``, so no two waves reuse the same sampling noise, and gets its
    own seed back at the end (``result.sampler_seed`` records ``policy.seed + seed``).
    """
    if not callable(getattr(policy, "act", None)):
        raise ValueError(f"policy: expected an object with .act(obs_batch, **context), got {type(policy)!r}")
    episodes = _positive_int("episodes", episodes)
    num_envs = _positive_int("num_envs", num_envs)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32 - episodes:
        raise ValueError(f"seed: expected an integer in [0, 2**32 - episodes) (episode i resets with seed + i), "
                         f"got {seed!r}")
    base_seed = getattr(policy, "seed", None)  # a seeded policy (diffusion_rl.Policy): restored at the end
    if not is_integer(base_seed) or not _reset_takes_seed(policy):  # another policy's own `seed` attribute: reset() as the protocol says
        base_seed = None
    last_wave = (episodes - 1) // min(num_envs, episodes) * min(num_envs, episodes)  # its first episode
    if base_seed is not None and int(base_seed) + int(seed) + last_wave >= 2**63:
        raise ValueError(f"seed: the policy's seed {int(base_seed)} plus seed {seed} plus {last_wave} (the last "
                         f"wave's first episode) reaches 2**63, beyond the policy's seeds (each wave resets it with "
                         "policy.seed + seed + its first episode); expected a smaller policy.seed or seed")
    if max_episode_steps is not None:
        max_episode_steps = _positive_int("max_episode_steps", max_episode_steps)
    gym_id, spec = resolve_env(env_name)
    if max_episode_steps is None and spec is not None:
        max_episode_steps = spec.max_episode_steps
    n = min(num_envs, episodes)
    fns = [partial(_make_env, gym_id, max_episode_steps, video_path is not None and i == 0) for i in range(n)]
    vec = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    limit = max_episode_steps if max_episode_steps is not None else getattr(vec.envs[0].spec, "max_episode_steps", None)
    action_shape = (n, *vec.single_action_space.shape)
    action_dtype = vec.single_action_space.dtype
    writer = None
    if video_path is not None:
        try:
            writer = AtomicVideoWriter(video_path, fps=_render_fps(vec.envs[0]))
        except BaseException:  # a bad path: the envs (and their renderers) were already made
            vec.close()
            raise
    returns: list[float] = []
    lengths: list[int] = []
    plan_errors: list[float] = []  # per episode: mean over its steps of the policy's plan error
    dim_sq, dim_count = None, 0  # per state dimension: sum over every step of the squared plan error
    successes: list[bool] = []  # per episode, for envs that report info["success"]
    reports_success = False
    routes: list[str] = []  # per episode, for envs that report info["route"] (which way a task was done)
    reports_route = False
    written: str | None = None
    wants_goal = bool(getattr(policy, "accepts_goal", True))
    stats = getattr(policy, "stats", None)  # diffusion_rl.Policy counts clipped actions and far observations
    stats_before = dict(stats) if isinstance(stats, dict) else None
    # a policy that says which rows of its last act() it counted (diffusion_rl.Policy.row_stats): only the rows of
    # environments still in their episode count (the others act on their last observation until the wave ends)
    by_row = stats_before is not None and isinstance(getattr(policy, "row_stats", None), dict)
    counted = {k: 0 for k in ("actions", "clipped_actions", "far_observations")}
    bar = progress_bar(total=episodes, desc=f"eval {env_name}", disable=not progress)
    restore_warnings = _warnings_above(bar)
    try:
        for start in range(0, episodes, n):
            in_wave = min(n, episodes - start)
            # padding envs of a partial last wave (never counted) reuse the wave's first seed: seed + start + j
            # could pass 2**32 - 1, which Meta-World refuses
            obs, info = vec.reset(seed=[seed + start + (j if j < in_wave else 0) for j in range(n)])
            active = np.arange(n) < in_wave
            goal = _update_goal(None, info, np.ones(n, dtype=bool))
            last_obs = np.array(obs, copy=True)
            ret = np.zeros(n, dtype=np.float64)
            length = np.zeros(n, dtype=np.int64)
            err_sum = np.zeros(n, dtype=np.float64)
            err_count = np.zeros(n, dtype=np.int64)
            success = np.zeros(n, dtype=bool)
            route = np.full(n, "none", dtype=object)
            if hasattr(policy, "reset"):
                if base_seed is None:
                    policy.reset()
                else:  # each wave its own sampling noise: a stochastic policy's first plans differ per episode
                    policy.reset(seed=base_seed + seed + start)
            if writer is not None and active[0]:
                writer.append(vec.envs[0].render())
            while active.any():
                context = {} if goal is None or not wants_goal else {"goal": goal.copy()}
                actions = _check_actions(policy.act(last_obs.copy(), **context), action_shape)
                if by_row:
                    _count_rows(counted, policy.row_stats, active)
                obs, reward, terminated, truncated, info = vec.step(actions.astype(action_dtype, copy=False))
                ret[active] += reward[active]
                length[active] += 1
                err = _plan_errors(policy, obs)  # obs: the true next states (final ones on termination)
                if err is not None:
                    rms = np.sqrt((err**2).mean(axis=1)) if err.shape[1] > 1 else err[:, 0]
                    err_sum[active] += rms[active]
                    err_count[active] += 1
                    if err.shape[1] > 1:
                        sq = (err[active] ** 2).sum(axis=0)
                        dim_sq = sq if dim_sq is None else dim_sq + sq
                        dim_count += int(active.sum())
                if writer is not None and active[0]:
                    writer.append(vec.envs[0].render())
                done = (terminated | truncated) & active
                if "success" in info:  # judged at the episode's last step
                    reports_success = True
                    ok = np.asarray(info["success"], dtype=bool) & np.asarray(info.get("_success", True), dtype=bool)
                    success[done] = ok[done]
                if "route" in info:
                    reports_route = True
                    given = np.asarray(info.get("_route", np.ones(n, dtype=bool)), dtype=bool) & done
                    route[given] = [str(r) for r in np.asarray(info["route"], dtype=object)[given]]
                active &= ~done
                last_obs[active] = obs[active]
                goal = _update_goal(goal, info, active)
                bar.update(int(done.sum()))
            returns.extend(ret[:in_wave].tolist())
            lengths.extend(length[:in_wave].tolist())
            successes.extend(success[:in_wave].tolist())
            routes.extend(route[:in_wave].tolist())
            if err_count[:in_wave].any():
                plan_errors.extend((err_sum[:in_wave] / np.maximum(err_count[:in_wave], 1)).tolist())
        if writer is not None:
            path = writer.close()
            writer = None
            written = None if path is None else str(path)
    finally:
        restore_warnings()
        bar.close()
        if writer is not None:
            writer.abort()
        vec.close()
        if base_seed is not None and hasattr(policy, "reset"):
            policy.reset(seed=base_seed)
    scores = None if spec is None else np.asarray(spec.normalized_score(np.asarray(returns)), dtype=np.float64)
    return EvalResult(
        env_name=env_name,
        gym_id=gym_id,
        returns=np.asarray(returns),
        lengths=np.asarray(lengths),
        normalized_scores=scores,
        seed=seed,
        num_envs=n,
        max_episode_steps=limit,
        reference_max_episode_steps=None if spec is None else spec.max_episode_steps,
        sampler_seed=None if base_seed is None else int(base_seed) + int(seed),
        video_path=written,
        plan_errors=np.asarray(plan_errors) if len(plan_errors) == len(returns) else None,
        plan_error_per_dim=None if dim_sq is None or len(plan_errors) != len(returns)
        else np.sqrt(dim_sq / max(dim_count, 1)),
        successes=np.asarray(successes) if reports_success else None,
        routes=routes if reports_route else None,
        policy_stats=None if stats_before is None else counted if by_row else {
            k: int(v) - int(stats_before.get(k, 0)) for k, v in stats.items()
            if isinstance(v, (int, np.integer)) and isinstance(stats_before.get(k, 0), (int, np.integer))},
    )


def _count_rows(counted: dict[str, int], row_stats: dict[str, Any], active: np.ndarray) -> None:
    """Add the rows of environments still in their episode to ``counted`` (a policy's per-row counts of one act)."""
    counted["actions"] += int(active.sum())
    for key in ("clipped_actions", "far_observations"):
        rows = np.asarray(row_stats.get(key, ()), dtype=bool).reshape(-1)
        if rows.shape == active.shape:
            counted[key] += int(rows[active].sum())
