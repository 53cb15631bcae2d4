"""Rollout collectors: run a behaviour in the real environment and return flat episode buffers.

A recipe is a list of :class:`Segment` s (one behaviour each, e.g. the medium policy for 1M steps, or one training
snapshot after another). Each segment is cut into tasks of about ``chunk_steps`` steps that a pool of worker
processes collects independently (one seed per task from a ``SeedSequence``; the tasks follow from the segments
and ``chunk_steps`` alone, so results depend neither on which worker ran what nor on how many there are); the
results are concatenated in segment/task order. Every task collects exactly its number of
steps; an episode still running when its task's quota is reached is cut and flagged as a timeout, as D4RL cut its
datasets at N steps. Per-episode statistics say which episodes were cut, so summaries can leave them out.

Collectors are looked up by ``Segment.kind`` in :data:`COLLECTORS`.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from envs.recipes._workers import die_with_parent
from envs.recipes.policies import policy_from_arrays

__all__ = ["COLLECTORS", "Collected", "Segment", "collect", "split_steps"]


@dataclass
class Segment:
    """``steps`` transitions of one behaviour (``kind`` selects the collector; ``params`` are its arguments)."""

    kind: str
    env_id: str
    steps: int
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass
class Collected:
    """Flat arrays (``observations``, ``next_observations``, ``actions``, ``rewards``, ``terminals``,
    ``timeouts`` and any ``infos/*``) plus cumulative ``episode_ends`` and per-episode statistics."""

    arrays: dict[str, np.ndarray]
    episode_ends: np.ndarray
    episode_returns: np.ndarray
    episode_complete: np.ndarray
    """False for episodes cut at the end of a task (not ended by the environment or its time limit)."""
    seconds: float = 0.0

    @property
    def num_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0


def split_steps(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal positive integers (larger ones first)."""
    if total < 1 or parts < 1:
        raise ValueError(f"expected total >= 1 and parts >= 1, got total={total}, parts={parts}")
    parts = min(parts, total)
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# ----------------------------------------------------------------------------------------- buffers
class _Episodes:
    """Accumulates transitions per episode and emits flat arrays."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {}
        self.lengths: list[int] = []
        self.returns: list[float] = []
        self.complete: list[bool] = []

    def add_episode(self, steps: dict[str, list], complete: bool) -> None:
        n = len(steps["rewards"])
        if n == 0:
            return
        for key, values in steps.items():
            self.cols.setdefault(key, []).append(np.asarray(values))
        self.lengths.append(n)
        self.returns.append(float(np.sum(steps["rewards"])))
        self.complete.append(complete)

    def result(self) -> dict[str, Any]:
        arrays = {k: np.concatenate(v) for k, v in self.cols.items()}
        return dict(arrays=arrays, lengths=np.array(self.lengths, dtype=np.int64),
                    returns=np.array(self.returns), complete=np.array(self.complete, dtype=bool))


def _new_steps(extra: tuple[str, ...] = ()) -> dict[str, list]:
    keys = ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts") + extra
    return {k: [] for k in keys}


_PROGRESS: Any = None  # a shared counter of collected steps (set in each worker)


def _report(n: int) -> None:
    if _PROGRESS is not None:
        with _PROGRESS.get_lock():
            _PROGRESS.value += n


# ----------------------------------------------------------------------------------------- collectors
def _collect_policy(env_id: str, steps: int, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    """A behaviour policy (linear or MLP) with Gaussian action noise in ``num_envs`` environments stepped in lockstep
    (one batched policy call per step); each env collects its share of ``steps``."""
    policy = policy_from_arrays(params["policy"])
    noise_std = float(params.get("noise_std", 0.0))
    quotas = split_steps(steps, int(params.get("num_envs", 2)))
    rng = np.random.default_rng(seed)
    envs = [gym.make(env_id, disable_env_checker=True) for _ in quotas]
    out = [_Episodes() for _ in quotas]
    obs = np.stack([env.reset(seed=int(rng.integers(2**31)))[0] for env in envs])
    cur = [_new_steps() for _ in quotas]
    taken = [0] * len(quotas)
    active = list(range(len(quotas)))
    pending = 0
    while active:
        actions = policy.act(obs[active], noise_std, rng)
        for row, i in enumerate(active):
            next_obs, reward, terminated, truncated, _ = envs[i].step(actions[row])
            taken[i] += 1
            cut = taken[i] >= quotas[i]
            ep = cur[i]
            ep["observations"].append(obs[i].copy())
            ep["next_observations"].append(next_obs)
            ep["actions"].append(actions[row])
            ep["rewards"].append(reward)
            ep["terminals"].append(bool(terminated))
            ep["timeouts"].append(bool(truncated or (cut and not terminated)))
            obs[i] = next_obs
            if terminated or truncated or cut:
                out[i].add_episode(ep, complete=bool(terminated or truncated))
                cur[i] = _new_steps()
                if not cut:
                    obs[i] = envs[i].reset(seed=int(rng.integers(2**31)))[0]
        pending += len(active)
        if pending >= 1000:
            _report(pending)
            pending = 0
        active = [i for i in active if taken[i] < quotas[i]]
    _report(pending)
    for env in envs:
        env.close()
    parts = [o.result() for o in out]
    return _merge(parts)


def _collect_maze2d(env_id: str, steps: int, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    """D4RL's maze2d recipe: the waypoint controller keeps steering to random goal cells (a new goal as soon
    as it reports the current one solved), Gaussian action noise (std 0.5 in D4RL), clipped to [-1, 1]; one
    continuous trajectory cut into episodes of ``max_episode_steps`` (timeouts), never reset in between.

    Rewards are labelled as in D4RL's published maze2d-*-v1 files (its ``relabel_maze2d_rewards.py``): the env's
    reward towards the evaluation goal (the layout's goal cell, which scoring uses), at each step's observation,
    not towards the controller's passing goal (kept in ``infos/goal``)."""
    import envs.maze2d  # noqa: F401  (registers the ids)
    from envs.maze2d import WaypointController
    from envs.maze2d.env import REWARD_FUNCTIONS

    rng = np.random.default_rng(seed)
    noise_std = float(params.get("noise_std", 0.5))
    env = gym.make(env_id, disable_env_checker=True)
    max_len = int(params.get("max_episode_steps") or env.spec.max_episode_steps)
    maze = env.unwrapped
    controller = WaypointController(maze.maze_arr, seed=rng)
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    eval_goal, reward_of = maze.goal, REWARD_FUNCTIONS[maze.reward_type]  # before set_target moves the goal
    maze.set_target()  # a random goal cell (D4RL's env.set_target()) drawn from the env's seeded generator
    out = _Episodes()
    ep = _new_steps(("infos/goal",))
    for t in range(steps):
        goal = maze.goal
        action = controller.get_action(obs, goal)
        if controller.solved:
            maze.set_target()
            goal = maze.goal
            action = controller.get_action(obs, goal)
        action = np.clip(action + noise_std * rng.standard_normal(2), -1.0, 1.0)
        next_obs, _, terminated, _, _ = maze.step(action)  # the unwrapped env: episodes are cut here
        ep["observations"].append(obs)
        ep["next_observations"].append(next_obs)
        ep["actions"].append(action)
        ep["rewards"].append(reward_of(float(np.linalg.norm(obs[:2] - eval_goal))))
        ep["infos/goal"].append(goal)
        ep["terminals"].append(bool(terminated))
        full = len(ep["rewards"]) >= max_len
        last = t == steps - 1
        ep["timeouts"].append(bool(full or last))
        obs = next_obs
        if full or last or terminated:
            _report(len(ep["rewards"]))
            out.add_episode(ep, complete=full or bool(terminated))
            ep = _new_steps(("infos/goal",))
    env.close()
    return out.result()


COLLECTORS: dict[str, Callable[[str, int, int, dict[str, Any]], dict[str, Any]]] = {
    "policy": _collect_policy,
    "maze2d": _collect_maze2d,
}


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    keys = parts[0]["arrays"].keys()
    return dict(
        arrays={k: np.concatenate([p["arrays"][k] for p in parts]) for k in keys},
        lengths=np.concatenate([p["lengths"] for p in parts]),
        returns=np.concatenate([p["returns"] for p in parts]),
        complete=np.concatenate([p["complete"] for p in parts]),
    )


def _run_task(task: tuple[str, str, int, int, dict[str, Any]]) -> dict[str, Any]:
    kind, env_id, steps, seed, params = task
    return COLLECTORS[kind](env_id, steps, seed, params)


def _init_worker(counter: Any) -> None:
    global _PROGRESS
    die_with_parent()
    _PROGRESS = counter


# ----------------------------------------------------------------------------------------- driver
MIN_TASKS = 2
"""A segment shorter than ``chunk_steps`` (a replay snapshot, a small dataset) is still cut into this many tasks
(of at least 1,000 steps), so two workers share it; how many workers run them never changes the data."""


def collect(
    segments: list[Segment],
    *,
    seed: int = 0,
    num_workers: int = 2,
    chunk_steps: int = 100_000,
    progress: bool = True,
    desc: str = "collecting",
) -> Collected:
    """Collect every segment (in order) with ``num_workers`` processes; a tqdm bar counts steps."""
    for seg in segments:
        if seg.kind not in COLLECTORS:
            raise ValueError(f"unknown segment kind {seg.kind!r}; expected one of {sorted(COLLECTORS)}")
        if seg.steps < 1:
            raise ValueError(f"segment {seg.label or seg.kind!r} must have steps >= 1, got {seg.steps}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    tasks = []
    for seg in segments:
        # from the segment alone, never from num_workers: the same seed makes the same data on any machine
        n_tasks = max(-(-seg.steps // chunk_steps), min(MIN_TASKS, max(1, seg.steps // 1000)))
        for steps in split_steps(seg.steps, n_tasks):
            tasks.append([seg.kind, seg.env_id, steps, 0, seg.params])
    for task, child in zip(tasks, np.random.SeedSequence(seed).spawn(len(tasks))):
        task[3] = int(child.generate_state(1, dtype=np.uint64)[0] % (2**62))
    total = sum(t[2] for t in tasks)
    start = time.time()

    from tqdm.auto import tqdm

    # Redraw rarely when stderr is a log file rather than a terminal (one line per redraw there).
    to_terminal = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    bar = tqdm(total=total, desc=desc, unit="step", unit_scale=True, disable=not progress, smoothing=0.05,
               mininterval=0.1 if to_terminal else 30.0)
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    global _PROGRESS
    try:
        if num_workers == 1:
            _PROGRESS = counter
            results = []
            for t in tasks:
                results.append(_run_task(tuple(t)))
                bar.update(counter.value - bar.n)
        else:
            # an executor, not multiprocessing.Pool: a worker killed from outside (the out-of-memory killer) breaks
            # it and every pending task raises, where a Pool lost the task and waited for it for good
            pool = ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_init_worker, initargs=(counter,))
            try:
                pending = [pool.submit(_run_task, tuple(t)) for t in tasks]
                try:
                    while not all(p.done() for p in pending):
                        time.sleep(0.2)
                        bar.update(counter.value - bar.n)
                        failed = next((p for p in pending if p.done() and p.exception() is not None), None)
                        if failed is not None:
                            failed.result()  # its error now, not when the other tasks end (they are stopped below)
                    results = [p.result() for p in pending]
                except BrokenProcessPool:
                    raise RuntimeError(
                        "a collection worker process died (killed by a signal, e.g. the out-of-memory killer?): its "
                        "task is lost and nothing was written. Rerun, with fewer num_workers if memory is short"
                    ) from None
            except BaseException:
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()  # Ctrl-C or a failed task: the running tasks stop now, not when they end
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        bar.update(total - bar.n)
    finally:
        _PROGRESS = None
        bar.close()
    merged = _merge(results)
    ends = np.cumsum(merged["lengths"])
    if int(ends[-1]) != total:
        raise RuntimeError(f"collected {int(ends[-1])} steps, expected {total}")
    return Collected(arrays=merged["arrays"], episode_ends=ends, episode_returns=merged["returns"],
                     episode_complete=merged["complete"], seconds=time.time() - start)
