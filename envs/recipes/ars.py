"""Augmented Random Search (Mania, Guy & Recht 2018, variant V2-t), a short numpy reference implementation.

ARS trains a linear policy on normalized observations by finite differences along random directions: each
iteration samples N Gaussian directions ``delta``, runs one episode with ``M + nu*delta`` and one with
``M - nu*delta``, keeps the b directions with the best ``max(r+, r-)`` and steps
``M += alpha / (b * sigma_R) * sum (r+ - r-) delta`` (``sigma_R``: std of the 2b returns used). Observation
statistics are updated from every state visited in training (V2). It needs no gradients and costs almost nothing
beyond the simulator, which makes it the cheapest well-known way to get behaviour policies on a CPU.

Rollouts run in a pool of worker processes, each owning one environment.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs.recipes._workers import die_with_parent
from envs.recipes.behavior import Snapshot, TrainingRun
from envs.recipes.policies import LinearPolicy

__all__ = ["ARS_PRESETS", "ARSConfig", "ARSResult", "ARSSnapshot", "evaluate_policy", "train_ars"]


@dataclass
class ARSConfig:
    """Hyper-parameters of one ARS run (names follow the paper: alpha, N, b, nu)."""

    env_id: str
    step_size: float = 0.02
    num_directions: int = 8
    top_directions: int = 4
    delta_std: float = 0.03
    horizon: int = 1000
    reward_shift: float = 0.0
    """Subtracted from every reward in training (the paper removes the survival bonus of Hopper/Walker2d)."""
    iterations: int = 1000
    max_env_steps: int | None = None
    """Stop once training rollouts used this many env steps (evaluation steps not counted)."""
    max_seconds: float | None = None
    num_workers: int = 2
    seed: int = 0
    eval_every: int = 10
    eval_episodes: int = 6
    eval_noise_std: float = 0.1
    """Gaussian action noise during evaluation: the same noise the data collection uses."""
    train_noise_std: float = 0.0
    """Gaussian action noise in the training rollouts too (0 = the paper's deterministic rollouts). Optimizing
    the return under the collection noise gives policies that do not fall apart when collected with noise."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_directions <= self.num_directions:
            raise ValueError(
                f"top_directions must be in [1, num_directions={self.num_directions}], got {self.top_directions}"
            )
        for key in ("step_size", "delta_std"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.num_workers < 1 or self.eval_every < 1 or self.eval_episodes < 1:
            raise ValueError("num_workers, eval_every and eval_episodes must be >= 1")


# Per-environment hyper-parameters (Mania et al. 2018, table of V2-t settings for the v1 MuJoCo tasks).
ARS_PRESETS: dict[str, dict[str, Any]] = {
    "hopper": dict(env_id="Hopper-v5", step_size=0.01, num_directions=8, top_directions=4, delta_std=0.025,
                   reward_shift=1.0),
    "walker2d": dict(env_id="Walker2d-v5", step_size=0.03, num_directions=40, top_directions=30,
                     delta_std=0.025, reward_shift=1.0, train_noise_std=0.1),
    "halfcheetah": dict(env_id="HalfCheetah-v5", step_size=0.02, num_directions=32, top_directions=4,
                        delta_std=0.03, reward_shift=0.0),
}


ARSSnapshot = Snapshot
"""The policy after ``iteration`` updates, with its noisy evaluation."""
ARSResult = TrainingRun


# ----------------------------------------------------------------------------------------------- workers
_ENV: gym.Env | None = None


def _init_worker(env_id: str, in_pool: bool = True) -> None:
    """The env of this process; a pool worker also dies with its parent (never the calling process itself: with
    one worker that is the user's script, which must outlive its launcher under nohup)."""
    global _ENV
    if in_pool:
        die_with_parent()
    _ENV = gym.make(env_id, disable_env_checker=True)


def _episode(args: tuple) -> tuple[float, float, int, np.ndarray, np.ndarray]:
    """One episode; returns (shifted return, true return, length, sum of obs, sum of obs**2)."""
    weights, mean, std, low, high, noise_std, seed, horizon, shift = args
    assert _ENV is not None
    rng = np.random.default_rng(seed)
    obs, _ = _ENV.reset(seed=int(seed % (2**31)))
    s1 = np.zeros_like(mean)
    s2 = np.zeros_like(mean)
    total = shifted = 0.0
    steps = 0
    for _ in range(horizon):
        s1 += obs
        s2 += obs * obs
        action = weights @ ((obs - mean) / std)
        if noise_std > 0:
            action = action + noise_std * rng.standard_normal(action.shape)
        obs, reward, terminated, truncated, _ = _ENV.step(np.clip(action, low, high))
        total += reward
        shifted += reward - shift
        steps += 1
        if terminated or truncated:
            break
    return shifted, total, steps, s1, s2


class _Pool:
    """A process pool (or the current process when ``num_workers == 1``) that runs :func:`_episode`."""

    def __init__(self, env_id: str, num_workers: int) -> None:
        self._pool = None
        if num_workers > 1:
            self._pool = mp.get_context("fork").Pool(num_workers, initializer=_init_worker, initargs=(env_id,))
        else:
            _init_worker(env_id, in_pool=False)

    def map(self, tasks: list[tuple]) -> list[tuple]:
        if self._pool is None:
            return [_episode(t) for t in tasks]
        return self._pool.map(_episode, tasks, chunksize=max(1, len(tasks) // 8))

    def close(self) -> None:
        global _ENV
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
        elif _ENV is not None:  # this process's own env
            _ENV.close()
            _ENV = None


# ----------------------------------------------------------------------------------------------- training
def _policy_tasks(policy: LinearPolicy, noise_std: float, seeds: np.ndarray, horizon: int, shift: float) -> list:
    return [
        (policy.weights, policy.obs_mean, policy.obs_std, policy.action_low, policy.action_high, noise_std,
         int(s), horizon, shift)
        for s in seeds
    ]


def evaluate_policy(
    policy: LinearPolicy, env_id: str, *, episodes: int = 10, noise_std: float = 0.1, seed: int = 0,
    horizon: int = 1000, num_workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``episodes`` noisy episodes; returns (returns, lengths)."""
    pool = _Pool(env_id, num_workers)
    try:
        seeds = np.random.default_rng(seed).integers(0, 2**62, size=episodes)
        out = pool.map(_policy_tasks(policy, noise_std, seeds, horizon, 0.0))
    finally:
        pool.close()
    return np.array([o[1] for o in out]), np.array([o[2] for o in out])


def train_ars(
    config: ARSConfig, *, callback: Callable[[ARSSnapshot], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> ARSResult:
    """Train a linear policy with ARS V2-t; snapshots (noisy evaluations) every ``config.eval_every`` iterations."""
    env = gym.make(config.env_id, disable_env_checker=True)
    obs_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    env.close()
    rng = np.random.default_rng(config.seed)
    weights = np.zeros((act_dim, obs_dim))
    count, s1, s2 = 0, np.zeros(obs_dim), np.zeros(obs_dim)
    mean, std = np.zeros(obs_dim), np.ones(obs_dim)
    result = ARSResult(config=config)
    pool = _Pool(config.env_id, config.num_workers)
    start = time.time()
    n, b, nu = config.num_directions, config.top_directions, config.delta_std

    def snapshot(iteration: int) -> ARSSnapshot:
        policy = LinearPolicy(weights.copy(), mean.copy(), std.copy(), low, high,
                              info=dict(env_id=config.env_id, iteration=iteration, env_steps=result.env_steps,
                                        method="ARS V2-t", config=asdict(config)))
        seeds = rng.integers(0, 2**62, size=config.eval_episodes)
        out = pool.map(_policy_tasks(policy, config.eval_noise_std, seeds, config.horizon, 0.0))
        returns = [float(o[1]) for o in out]
        snap = ARSSnapshot(iteration, result.env_steps, policy, float(np.mean(returns)), returns,
                           [int(o[2]) for o in out])
        policy.info.update(eval_return=snap.eval_return, eval_noise_std=config.eval_noise_std)
        result.snapshots.append(snap)
        if log:
            log(f"iter {iteration:5d}  steps {result.env_steps:9d}  {time.time() - start:7.1f}s  "
                f"eval return {snap.eval_return:8.1f} (len {np.mean(snap.eval_lengths):.0f})")
        if callback:
            callback(snap)
        return snap

    try:
        snapshot(0)
        for it in range(1, config.iterations + 1):
            deltas = rng.standard_normal((n, act_dim, obs_dim))
            seeds = rng.integers(0, 2**62, size=2 * n)
            tasks = []
            for i in range(n):
                for sign in (1.0, -1.0):
                    tasks.append((weights + sign * nu * deltas[i], mean, std, low, high, config.train_noise_std,
                                  int(seeds[len(tasks)]), config.horizon, config.reward_shift))
            out = pool.map(tasks)
            r = np.array([o[0] for o in out]).reshape(n, 2)
            for o in out:
                count += o[2]
                s1 += o[3]
                s2 += o[4]
                result.env_steps += o[2]
            top = np.argsort(-r.max(axis=1))[:b]
            sigma = r[top].std()
            sigma = sigma if sigma > 1e-8 else 1.0
            weights = weights + config.step_size / (b * sigma) * np.einsum("i,iaj->aj", r[top, 0] - r[top, 1],
                                                                           deltas[top])
            # V2: statistics of all states visited so far, used from the next iteration on.
            mean = s1 / count
            var = np.maximum(s2 / count - mean * mean, 0.0)
            std = np.where(var > 1e-8, np.sqrt(var), 1.0)
            done = (config.max_env_steps is not None and result.env_steps >= config.max_env_steps) or (
                config.max_seconds is not None and time.time() - start >= config.max_seconds)
            if it % config.eval_every == 0 or done or it == config.iterations:
                snapshot(it)
            if done:
                break
    finally:
        pool.close()
        result.seconds = time.time() - start
    return result
