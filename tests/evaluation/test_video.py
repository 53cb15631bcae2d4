"""AtomicVideoWriter and the rollout's frame rate: bad rates are refused and no temporary file is left behind."""
from __future__ import annotations

import gymnasium as gym
import pytest

from diffusion_rl.evaluation.rollout import _render_fps
from diffusion_rl.evaluation.video import AtomicVideoWriter


@pytest.mark.parametrize("fps", [None, 0, -5.0, float("nan"), "30", True])
def test_a_bad_frame_rate_is_refused_before_any_file_is_made(tmp_path, fps):
    with pytest.raises(ValueError, match="video fps: expected a positive number of frames per second"):
        AtomicVideoWriter(tmp_path / "v.mp4", fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_cannot_start_leaves_no_temporary_file(tmp_path, monkeypatch):
    import imageio.v2 as imageio

    def broken(*args, **kwargs):
        raise RuntimeError("no ffmpeg here")

    monkeypatch.setattr(imageio, "get_writer", broken)
    with pytest.raises(RuntimeError, match="no ffmpeg"):
        AtomicVideoWriter(tmp_path / "v.mp4", fps=30)
    assert list(tmp_path.iterdir()) == []


def test_an_env_without_a_render_fps_is_filmed_at_its_simulation_rate():
    env = gym.make("Hopper-v5")
    assert _render_fps(env) == env.metadata["render_fps"] == 125
    env.unwrapped.metadata = {**env.unwrapped.metadata, "render_fps": None}  # as many third-party envs set it
    env.metadata = env.unwrapped.metadata
    assert _render_fps(env) == pytest.approx(1 / env.unwrapped.dt) == pytest.approx(125)
    env.close()

    class Bare(gym.Env):
        metadata = {"render_fps": None}
        observation_space = gym.spaces.Box(-1, 1, (1,))
        action_space = gym.spaces.Box(-1, 1, (1,))

    assert _render_fps(Bare()) == 30.0  # no simulation rate either

