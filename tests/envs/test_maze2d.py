"""Maze2D: D4RL-faithful point-mass maze, its registration, and the waypoint expert."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the Maze2D ids)
from envs import get_spec
from envs.maze2d import MAZE2D_IDS, Maze2DEnv, WaypointController
from envs.maze2d.controller import shortest_path
from envs.maze2d.layouts import parse_maze

GOALS = {"Maze2D-UMaze-v1": (1, 1), "Maze2D-Medium-v1": (6, 6), "Maze2D-Large-v1": (7, 9)}


@pytest.mark.parametrize("env_id", sorted(MAZE2D_IDS))
def test_registered_spaces_limits_and_goal(env_id: str) -> None:
    env = gym.make(env_id)
    assert (
        env.spec.max_episode_steps
        == {"Maze2D-UMaze-v1": 300, "Maze2D-Medium-v1": 600, "Maze2D-Large-v1": 800}[env_id]
    )
    assert env.action_space.shape == (2,)
    np.testing.assert_array_equal(env.action_space.low, [-1, -1])
    np.testing.assert_array_equal(env.action_space.high, [1, 1])
    obs, info = env.reset(seed=0)
    assert obs.shape == (4,) and obs.dtype == np.float64
    np.testing.assert_array_equal(info["goal"], GOALS[env_id])
    np.testing.assert_array_equal(env.unwrapped.goal, GOALS[env_id])
    # Reset lands within 0.1 of an open cell (D4RL's noise) with small velocity.
    cell = np.round(obs[:2])
    assert np.all(np.abs(obs[:2] - cell) <= 0.1)
    assert parse_maze(env.unwrapped.maze_spec)[int(cell[0]), int(cell[1])] != 10
    _, _, terminated, truncated, info = env.step(np.zeros(2))
    assert not terminated and not truncated
    np.testing.assert_array_equal(info["goal"], GOALS[env_id])
    env.close()


def test_module_prefixed_make_and_physics_constants() -> None:
    env = gym.make("envs.maze2d:Maze2D-UMaze-v1")
    model = env.unwrapped.model
    assert model.opt.timestep == pytest.approx(0.01)
    assert env.unwrapped.dt == pytest.approx(0.01)
    np.testing.assert_allclose(model.actuator_gear[:, 0], [100, 100])
    np.testing.assert_allclose(model.dof_damping, [1, 1])
    assert float(model.body("particle").mass[0]) == pytest.approx(1000 * 4 / 3 * np.pi * 0.1**3, rel=1e-6)


def test_sparse_reward_radius_and_no_termination() -> None:
    env = gym.make("Maze2D-UMaze-v1")
    obs, info = env.reset(seed=1, options={"start": (1, 1)})
    _, reward, terminated, _, _ = env.step(np.zeros(2))
    assert reward == 1.0 and not terminated
    env.reset(seed=1, options={"start": (3, 3)})
    _, reward, _, _, _ = env.step(np.zeros(2))
    assert reward == 0.0
    # The time limit truncates after exactly 300 steps; nothing terminates.
    env.reset(seed=2)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        done, steps = truncated, steps + 1
    assert steps == 300


def test_walls_block_and_velocity_is_clipped() -> None:
    env = gym.make("Maze2D-UMaze-v1")
    obs, _ = env.reset(seed=0, options={"start": (3, 1)})
    # Cell (2, 1) above is a wall: pushing in -x for 200 steps must not get through it.
    for _ in range(200):
        obs, *_ = env.step(np.array([-1.0, 0.0]))
    # The wall box spans world x in [2.5, 3.5]; the sphere (radius 0.1, world x = qpos x + 1.2) stops at 3.6.
    assert obs[0] > 2.35
    # Free flight along the bottom corridor: speed is clipped to 5 before every step (<= 5 + one step of
    # 0.24).
    env.reset(seed=0, options={"start": (3, 1)})
    speeds = [abs(env.step(np.array([0.0, 1.0]))[0][3]) for _ in range(40)]
    assert max(speeds) <= 5.0 + 100 / env.unwrapped.model.body("particle").mass[0] * 0.01 + 1e-9


def test_shortest_path_umaze_and_bad_layouts() -> None:
    grid = parse_maze("umaze")
    assert shortest_path(grid, (3, 1), (1, 1)) == [(3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    assert shortest_path(grid, (1, 1), (1, 1)) == [(1, 1)]
    # A start rounded into a wall first steps to its best open neighbour.
    assert shortest_path(grid, (2, 2), (1, 1))[0] == (1, 2)
    with pytest.raises(ValueError, match="unknown maze tile"):
        parse_maze("###\\#X#\\###")
    with pytest.raises(ValueError, match="reward_type must be one of"):
        Maze2DEnv(reward_type="shaped")


def test_controller_reaches_the_goal_from_every_cell() -> None:
    env = gym.make("Maze2D-UMaze-v1")
    goal = env.unwrapped.goal
    starts = [(3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 2)]
    returns = []
    for k, start in enumerate(starts):
        controller = WaypointController("umaze", seed=k)
        obs, info = env.reset(seed=k, options={"start": start})
        total, first_hit = 0.0, None
        for t in range(300):
            obs, reward, _, truncated, info = env.step(controller.get_action(obs, info["goal"]))
            total += reward
            if reward and first_hit is None:
                first_hit = t
        assert np.linalg.norm(obs[:2] - goal) < 0.5, f"controller from {start} ended at {obs[:2]}"
        assert controller.solved and truncated
        returns.append(total)
    # Starts are listed from the farthest (6 cells) to the nearest (1 cell): returns rise as the path
    # shortens.
    assert all(a < b for a, b in zip(returns, returns[1:])), returns
    assert min(returns) > 120  # even the farthest start arrives within 180 of 300 steps and then stays


def test_d4rl_reference_protocol_reproduces_reference_scores() -> None:
    """D4RL's reference scripts: 100 episodes; the expert keeps one controller across episodes (never
    re-planning for the fixed goal), the random policy samples the action space. Our env reproduces both
    references."""
    spec = get_spec("maze2d-umaze")
    env = gym.make(spec.gym_id)
    controller = WaypointController("umaze", seed=0)
    obs, info = env.reset(seed=0)
    expert = []
    for episode in range(100):
        if episode:
            obs, info = env.reset()
        total = 0.0
        for _ in range(spec.max_episode_steps):
            obs, reward, _, _, info = env.step(controller.get_action(obs, info["goal"]))
            total += reward
        expert.append(total)
    env.action_space.seed(0)
    env.reset(seed=0)
    random_returns = []
    for _ in range(100):
        env.reset()
        random_returns.append(
            sum(env.step(env.action_space.sample())[1] for _ in range(spec.max_episode_steps))
        )
    expert_score = spec.normalized_score(np.mean(expert))
    random_score = spec.normalized_score(np.mean(random_returns))
    assert 75 <= expert_score <= 125, (np.mean(expert), expert_score)
    assert -10 <= random_score <= 15, (np.mean(random_returns), random_score)


def test_controller_validates_shapes() -> None:
    controller = WaypointController("umaze")
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        controller.get_action(np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        controller.get_action(np.zeros(4), np.ones(3))


def test_rgb_array_render() -> None:
    if os.environ.get("MUJOCO_GL", "") not in ("egl", "osmesa"):
        pytest.skip("offscreen rendering needs MUJOCO_GL=egl or osmesa")
    env = gym.make("Maze2D-UMaze-v1", render_mode="rgb_array", width=64, height=64)
    env.reset(seed=0, options={"start": (3, 1)})
    first = env.render()
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    for _ in range(30):
        env.step(np.array([0.0, 1.0]))
    assert np.abs(env.render().astype(int) - first.astype(int)).sum() > 0  # the point mass moved on screen
    env.close()


@pytest.mark.filterwarnings(
    "ignore:.*Box observation space m:UserWarning"
)  # D4RL's unbounded observation box
def test_passes_gymnasium_checker_and_vectorizes() -> None:
    from gymnasium.utils.env_checker import check_env

    env = gym.make("Maze2D-Medium-v1")
    check_env(env.unwrapped, skip_render_check=True)
    first, _ = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    np.testing.assert_array_equal(first, again)  # seeded resets are reproducible
    vec = gym.make_vec("Maze2D-UMaze-v1", num_envs=2, vectorization_mode="sync")
    obs, info = vec.reset(seed=0)
    assert obs.shape == (2, 4)
    np.testing.assert_array_equal(info["goal"], [[1, 1], [1, 1]])
    vec.close()


def test_a_pointmaze_minari_id_is_not_taken_for_the_maze2d_entry() -> None:
    from diffusion_rl.evaluation import resolve_env

    assert get_spec("maze2d-umaze-v1") is get_spec("maze2d-umaze")  # the D4RL name is this env's
    assert get_spec("mujoco/hopper/medium-v0") is get_spec("hopper-medium")  # recorded in the env we score in
    with pytest.raises(KeyError, match="unknown environment 'D4RL/pointmaze/umaze-v2'"):
        get_spec("D4RL/pointmaze/umaze-v2")  # PointMaze: another maze, coordinates and step limit
    with pytest.raises(ValueError, match="unknown environment 'D4RL/pointmaze/umaze-v2'"):
        resolve_env("D4RL/pointmaze/umaze-v2")


def test_a_goal_reset_option_lasts_one_episode_and_set_target_persists() -> None:
    env = gym.make("Maze2D-UMaze-v1")
    _, info = env.reset(seed=0, options={"goal": (3.0, 1.0)})
    np.testing.assert_array_equal(info["goal"], [3.0, 1.0])
    _, info = env.reset(seed=0)  # a plain reset: the layout's goal again, whatever came before
    np.testing.assert_array_equal(info["goal"], GOALS["Maze2D-UMaze-v1"])
    env.unwrapped.set_target((2.0, 1.0))  # D4RL's API: the goal of this and later episodes
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(info["goal"], [2.0, 1.0])
    env.close()


def test_bad_reset_options_are_refused_before_anything_is_reset() -> None:
    env = gym.make("Maze2D-UMaze-v1")
    obs, info = env.reset(seed=0, options={"start": (3, 1)})
    state = env.unwrapped.data.qpos.copy()
    # (2, 2) is a wall in the u-maze; (9, 9) is outside it: a point mass placed there would pass through walls
    for start, where in (((2, 2), "a wall"), ((9.0, 9.0), "outside the maze")):
        with pytest.raises(ValueError, match=f"not in an open cell.*{where}"):
            env.reset(seed=1, options={"start": start})
    # a bad goal used to be refused after the start had been reset, leaving a half-reset env
    for goal, message in (((1.0, 2.0, 3.0), r"shape \(2,\)"), ((np.nan, 1.0), "finite")):
        with pytest.raises(ValueError, match=message):
            env.reset(seed=1, options={"start": (1, 1), "goal": goal})
    np.testing.assert_array_equal(env.unwrapped.data.qpos, state)
    np.testing.assert_array_equal(env.unwrapped.goal, info["goal"])
    # an open cell with the reset noise's offsets is accepted, as is the goal cell itself
    _, info = env.reset(seed=1, options={"start": (1.4, 2.6), "goal": (3, 3)})
    np.testing.assert_array_equal(info["goal"], [3.0, 3.0])
    env.reset(seed=1, options={"start": (1, 1)})
