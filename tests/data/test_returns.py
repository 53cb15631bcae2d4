"""Returns-to-go and Diffuser value targets against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_rl.data import discounted_values, returns_to_go


def test_returns_to_go_by_hand() -> None:
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ends = np.array([3, 5])
    g = 0.5
    expected = [1 + g * 2 + g * g * 3, 2 + g * 3, 3, 4 + g * 5, 5]  # never sums across the episode end at 3
    np.testing.assert_allclose(returns_to_go(rewards, ends, g), expected)
    np.testing.assert_allclose(returns_to_go(rewards, ends, 1.0), [6, 5, 3, 9, 5])


def test_returns_to_go_matches_a_loop_on_random_episodes() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=25)
    rewards = rng.normal(size=lengths.sum())
    ends = np.cumsum(lengths)
    expected = np.empty_like(rewards)
    for start, end in zip(np.concatenate([[0], ends[:-1]]), ends):
        acc = 0.0
        for t in range(end - 1, start - 1, -1):
            acc = rewards[t] + 0.99 * acc
            expected[t] = acc
    np.testing.assert_allclose(returns_to_go(rewards, ends, 0.99), expected, rtol=1e-12)


def test_values_add_penalty_only_to_terminated_episodes() -> None:
    rewards = np.array([1.0, 1.0, 1.0, 1.0])
    ends = np.array([2, 4])
    terminals = np.array([False, True, False, False])  # episode 0 terminated, episode 1 timed out
    v = discounted_values(rewards, ends, 0.5, terminals=terminals, terminal_penalty=-10.0)
    np.testing.assert_allclose(v, [1 + 0.5 * (1 - 10), 1 - 10, 1 + 0.5, 1])
    np.testing.assert_allclose(discounted_values(rewards, ends, 0.5), [1.5, 1, 1.5, 1])


def test_an_episode_that_ends_in_success_is_not_a_fall() -> None:
    """A robot task terminates on success: only terminal episodes that did not succeed get the fall penalty."""
    rewards = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    ends = np.array([2, 5])
    terminals = np.array([False, True, False, False, True])  # both episodes end in a terminal state
    success = np.array([False, True, False, False, False])  # the first at its goal, the second fell
    v = discounted_values(rewards, ends, 0.5, terminals=terminals, terminal_penalty=-10.0, successes=success)
    np.testing.assert_allclose(v, [0.5, 1.0, 0.25 * -10, 0.5 * -10, -10])
    with pytest.raises(ValueError, match="successes has 4 entries; expected 5"):
        discounted_values(rewards, ends, 0.5, terminals=terminals, terminal_penalty=-10.0, successes=success[:4])


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="episode_ends"):
        returns_to_go(np.zeros(4), np.array([2, 3]), 0.9)
    with pytest.raises(ValueError, match="discount"):
        returns_to_go(np.zeros(4), np.array([4]), 1.5)
    with pytest.raises(ValueError, match="terminals"):
        discounted_values(np.zeros(4), np.array([4]), terminal_penalty=-1.0)


@pytest.mark.parametrize("ends", [[4, 3, 6], [3, 3, 6], [0, 6], [3.5, 6.0]])
def test_episode_ends_are_validated_as_the_store_does(ends: list) -> None:
    # a decreasing end used to give [10, 9, 7, 15, 11, 6]: returns summed across episode boundaries
    with pytest.raises(ValueError, match="episode_ends"):
        returns_to_go(np.arange(1.0, 7.0), np.array(ends), 1.0)


def test_rewards_with_several_values_per_step_are_refused() -> None:
    with pytest.raises(ValueError, match=r"one value per step, shape \[N\] or \[N, 1\], got \(3, 2\)"):
        returns_to_go(np.ones((3, 2)), np.array([3]), 1.0)
    np.testing.assert_allclose(returns_to_go(np.ones((3, 1)), np.array([3]), 1.0), [3, 2, 1])
