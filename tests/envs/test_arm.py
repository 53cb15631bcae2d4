"""Meta-World arm tasks: scenes drawn from the reset seed alone, termination on success, the scripted experts
succeed, and the catalogue entries are wired to them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("metaworld")

import envs.arm  # noqa: E402,F401  (registers the MetaWorld* ids)
from envs import get_task  # noqa: E402


def _episode(gym_id: str, expert, seed: int) -> tuple[bool, int, np.ndarray, np.ndarray]:
    env = gym.make(gym_id)
    obs, info = env.reset(seed=seed)
    first, done, n = obs.copy(), False, 0
    assert info["success"] is False
    expert.reset(np.random.default_rng(0))
    while not done:
        obs, reward, terminated, truncated, info = env.step(expert.act(obs))
        n += 1
        done = terminated or truncated
        assert terminated == info["success"]  # the episode ends exactly at the first success
    env.close()
    return bool(info["success"]), n, first, obs


@pytest.mark.parametrize("task", ["metaworld-reach", "metaworld-pick-place"])
def test_expert_succeeds_and_scenes_follow_the_seed(task):
    spec = get_task(task)
    results = [_episode(spec.gym_id, spec.make_expert(), seed) for seed in (0, 1, 2)]
    assert all(ok for ok, *_ in results)
    assert all(n < spec.max_episode_steps for _, n, *_ in results)
    goals = np.array([first[-3:] for *_, first, _ in results])
    assert goals.shape == (3, 3) and np.all(np.abs(goals).sum(1) > 0.1)  # the goal is observed, not zeroed
    assert np.abs(goals[0] - goals[1]).max() > 1e-3  # another seed, another scene
    again = _episode(spec.gym_id, spec.make_expert(), 0)
    np.testing.assert_array_equal(again[2], results[0][2])  # the same seed, the same scene and episode
    np.testing.assert_array_equal(again[3], results[0][3])
    # the goal stays observed after steps too (Meta-World hides it unless told otherwise)
    np.testing.assert_allclose(results[0][3][-3:], goals[0])


def test_catalogue_entries_and_spaces():
    for name, gym_id in (("metaworld-reach", "MetaWorldReach-v3"), ("metaworld-pick-place", "MetaWorldPickPlace-v3")):
        spec = get_task(name)
        assert spec.gym_id == gym_id and spec.module == "envs.arm" and not spec.multimodal
        env = gym.make(gym_id)
        assert env.observation_space.shape == (39,) and env.action_space.shape == (4,)
        assert env.spec.max_episode_steps == spec.max_episode_steps
        env.close()
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        envs.arm.MetaWorldTaskEnv("juggle-v3")


def test_meta_worlds_own_step_limit_truncates_and_videos_play_at_the_simulated_rate():
    env = envs.arm.MetaWorldTaskEnv("reach-v3")
    assert env.metadata["render_fps"] == round(1 / env._env.dt) == 80  # 12.5 ms per step
    env.reset(seed=0)
    still = np.zeros(4, dtype=np.float32)  # standing still: no success, so only a time limit ends it
    flags = [env.step(still)[2:4] for _ in range(env._env.max_path_length)]
    assert flags[-1] == (False, True) and not any(t for _, t in flags[:-1])  # truncated at step 500, not an error
    env.close()


def test_frames_are_upright():
    """Meta-World's renderer gives frames bottom row first: the wooden table then hung above the arm in every
    evaluation video. Upright, its brown pixels lie mostly in the lower half of the frame."""
    env = gym.make("MetaWorldReach-v3", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render().astype(np.int32)
    env.close()
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    wood = (r > g + 15) & (g > b + 10) & (r < 200)  # brown: red over green over blue (not the red arm)
    half = frame.shape[0] // 2
    assert wood[half:].sum() > 2 * wood[:half].sum(), (wood[half:].sum(), wood[:half].sum())


def test_the_experts_controller_warning_is_not_passed_on():
    """Meta-World's scripted policies warn on every call that their gains exceed the action range; the expert clips
    its actions, so make_demos printed a warning a user could do nothing about."""
    import warnings

    env = gym.make("MetaWorldPickPlace-v3")
    obs, _ = env.reset(seed=0)
    expert = get_task("metaworld-pick-place").make_expert()
    expert.reset(np.random.default_rng(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(40):  # far from the object at first: the raw controller's response exceeds 1
            action = expert.act(obs)
            assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
            obs, *_ = env.step(action)
    env.close()
    assert not [w for w in caught if "may be too high" in str(w.message)], [str(w.message) for w in caught]
