"""Demonstrations of the robot-task catalogue (``envs.tasks``): scripted-expert rollouts in the real MuJoCo env,
written as a zarr replay buffer in Diffusion Policy's layout (``data/<key>``, ``meta/episode_ends``), atomically.

Every demonstration is kept, successful or not, with ``success`` per step (1 at a successful episode's last
step) so a user can filter; the summary reports the expert's success rate. For tasks with ``demo_noise`` the env
executes the expert's action plus Gaussian noise while the data record the expert's own action (DART), so the
demonstrations also show recoveries from states off the expert's path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusion_rl.data.store import EpisodeStore
from diffusion_rl.data.zarr_store import save_zarr
from diffusion_rl.progress import progress_bar
from envs.tasks import get_task

#: default first env seed of demonstrations: far from evaluation's seeds (0 + training seed ...), so the scenes an
#: imitation policy is scored on are never ones it was shown
DEMO_SEED = 100_000

__all__ = ["DEMO_SEED", "DemoSummary", "collect_demos", "default_demo_path", "make_demos"]


@dataclass
class DemoSummary:
    task: str
    path: Path | None
    episodes: int
    steps: int
    success_rate: float
    route_fractions: dict[str, float] | None = None
    """Share of demonstrations per route (``info["route"]`` at their last step), for tasks that report one."""

    def __str__(self) -> str:
        where = f" -> {self.path}" if self.path is not None else ""
        routes = ""
        if self.route_fractions:
            routes = "; routes " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.route_fractions.items())
        return (f"{self.task}: {self.episodes} demonstrations, {self.steps:,} steps, expert success rate "
                f"{100 * self.success_rate:.1f}%{routes}{where}")


def default_demo_path(task: str) -> Path:
    """``$DIFFUSION_RL_DEMOS/<task>.zarr`` (default ``~/.cache/diffusion_rl/demos``)."""
    root = os.environ.get("DIFFUSION_RL_DEMOS") or Path.home() / ".cache" / "diffusion_rl" / "demos"
    return Path(root) / f"{task}.zarr"


def collect_demos(task: str, episodes: int, seed: int = DEMO_SEED, progress: bool = True) -> EpisodeStore:
    """Roll out the task's scripted expert for ``episodes`` episodes (env reset seeds ``seed + i``)."""
    import gymnasium as gym

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: expected an integer >= 1, got {episodes!r}")
    spec = get_task(task)
    spec.register()
    env = gym.make(spec.gym_id, max_episode_steps=spec.max_episode_steps)
    expert = spec.make_expert()
    rng = np.random.default_rng(seed)
    eps = []
    routes: dict[str, int] = {}  # demonstrations per route, for tasks whose env reports info["route"]
    try:
        for i in progress_bar(range(episodes), desc=f"demos {task}", disable=not progress):
            obs, _ = env.reset(seed=seed + i)
            expert.reset(rng)
            rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals",
                                                      "timeouts", "success")}
            done = False
            while not done:
                action = np.asarray(expert.act(obs), dtype=np.float64)
                executed = action
                if spec.demo_noise > 0:  # DART-style: the env executes a perturbed action, the data keep the expert's
                    low, high = env.action_space.low, env.action_space.high
                    executed = np.clip(action + spec.demo_noise * rng.normal(size=action.shape), low, high)
                nxt, reward, terminated, truncated, info = env.step(executed.astype(env.action_space.dtype))
                for key, value in (("observations", obs), ("actions", action), ("rewards", reward),
                                   ("terminals", terminated), ("timeouts", truncated and not terminated),
                                   ("success", bool(info.get("success", False)))):
                    rows[key].append(value)
                obs, done = nxt, terminated or truncated
            if "route" in info:
                routes[str(info["route"])] = routes.get(str(info["route"]), 0) + 1
            eps.append({
                "observations": np.asarray(rows["observations"], np.float32),
                "actions": np.asarray(rows["actions"], np.float32),
                "rewards": np.asarray(rows["rewards"], np.float32),
                "terminals": np.asarray(rows["terminals"], bool),
                "timeouts": np.asarray(rows["timeouts"], bool),
                "success": np.asarray(rows["success"], bool),
            })
    finally:
        env.close()
    return EpisodeStore.from_episodes(eps, metadata={"task": task, "source": f"scripted expert {spec.expert}",
                                                     "seed": seed, "locally_made": True,
                                                     "demo_noise": spec.demo_noise,
                                                     **({"routes": dict(sorted(routes.items()))} if routes else {})})


def make_demos(task: str, episodes: int | None = None, path: str | os.PathLike | None = None, *, seed: int = DEMO_SEED,
               overwrite: bool = False, progress: bool = True) -> DemoSummary:
    """Collect the task's demonstrations and write them as a zarr replay buffer (atomically); returns a summary."""
    spec = get_task(task)
    episodes = spec.demo_episodes if episodes is None else episodes
    path = Path(path) if path is not None else default_demo_path(task)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (overwrite=true) to replace it")
    store = collect_demos(task, episodes, seed=seed, progress=progress)
    save_zarr(store, path, overwrite=overwrite, progress=False)
    ends = store.episode_ends
    success = store["success"][ends - 1]
    counts = store.metadata.get("routes")
    fractions = None if not counts else {k: v / len(ends) for k, v in counts.items()}
    return DemoSummary(task, path, len(ends), store.num_steps, float(np.mean(success)), fractions)
