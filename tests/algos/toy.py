"""A toy 1-D control problem made in the tests: s' = s + 0.1 a, reward = a, a in [-1, 1].

Its demonstrations mix episodes that drift right (high return) and left (low return) at several speeds, so a
return-conditioned model must learn which way to go from the returns it is asked for, and a value function learns
that moving right pays.
"""

from __future__ import annotations

import numpy as np

from diffusion_rl.data import EpisodeStore, SequenceDataset

OBS_DIM, ACT_DIM, EPISODE_LEN = 2, 1, 24


def toy_step(obs: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched dynamics: obs = [position, last action]; returns (next obs, reward)."""
    a = np.clip(action[..., 0], -1.0, 1.0)
    nxt = np.stack([obs[..., 0] + 0.1 * a, a], axis=-1)
    return nxt, a


def toy_store(episodes: int = 64, seed: int = 0) -> EpisodeStore:
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(episodes):
        speed = rng.choice([-0.9, -0.5, 0.5, 0.9])
        obs = np.array([rng.uniform(-0.5, 0.5), 0.0])
        o, a, r = [], [], []
        for _ in range(EPISODE_LEN):
            act = np.clip(np.array([speed + 0.05 * rng.normal()]), -1, 1)
            nxt, rew = toy_step(obs, act)
            o.append(obs), a.append(act), r.append(rew)
            obs = nxt
        eps.append({
            "observations": np.asarray(o, np.float32), "actions": np.asarray(a, np.float32),
            "rewards": np.asarray(r, np.float32), "terminals": np.zeros(EPISODE_LEN, bool),
            "timeouts": np.r_[np.zeros(EPISODE_LEN - 1, bool), True],
        })
    return EpisodeStore.from_episodes(eps)


def toy_dataset(horizon: int, **kwargs) -> SequenceDataset:
    return SequenceDataset(toy_store(), horizon, **kwargs)


def rollout_return(policy, starts: np.ndarray, steps: int = 12, **settings) -> np.ndarray:
    """Return of ``policy`` from each start (batched) in the toy dynamics."""
    policy.reset()
    obs, total = starts.copy(), np.zeros(len(starts))
    for _ in range(steps):
        obs, reward = toy_step(obs, policy.act(obs, **settings))
        total += reward
    return total
