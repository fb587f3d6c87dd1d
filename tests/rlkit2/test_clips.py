"""Clips for the labeling page (rlkit2/clips.py): a MuJoCo segment stored as simulator states renders to an
mp4 a browser plays, whose frames are the states' frames followed by a held last frame."""

import gymnasium as gym
import numpy as np
import pytest

from rlkit2.clips import MujocoClipRenderer, mujoco_state


def test_states_render_to_an_h264_clip_with_the_segments_frames(tmp_path):
    import imageio.v3 as iio

    env = gym.make("HalfCheetah-v5")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    states = []
    for _ in range(6):
        states.append(mujoco_state(env))
        env.step(rng.uniform(-1, 1, 6))
    env.close()
    renderer = MujocoClipRenderer("HalfCheetah-v5", width=160, height=128, freeze_seconds=0.5)
    try:
        direct = renderer.frames(np.stack(states))
        path = renderer.render(np.stack(states), tmp_path / "clips" / "seg0.mp4")
        frames = np.stack(list(iio.imiter(path)))
        assert frames.shape == (6 + renderer.freeze_frames, 128, 160, 3) and renderer.freeze_frames == 10
        assert np.abs(frames[0].astype(int) - direct[0].astype(int)).mean() < 8  # lossy, but the same picture
        assert np.abs(direct[0].astype(int) - direct[5].astype(int)).mean() > 0.5  # the cheetah moved
        assert open(path, "rb").read(12)[4:8] == b"ftyp" and not path.with_name("seg0.part.mp4").exists()
        with pytest.raises(ValueError, match=r"states must be \[steps, 18\]"):
            renderer.frames(np.zeros((3, 7)))
    finally:
        renderer.close()
