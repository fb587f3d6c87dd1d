"""Clips for the labeling page, rendered lazily from what training stored.

- MuJoCo segments are stored as simulator states (qpos and qvel per step, ``mujoco_state``): a few hundred bytes
  per step instead of frames. ``MujocoClipRenderer`` replays them in a rendering copy of the env (setting each
  state, rendering it).
- Atari segments are stored as the frames the agent saw (the newest frame of each observation stack, 84x84
  grayscale, as rl-teacher did): ``FrameClipRenderer`` scales them up for the page.
Both write an H.264 mp4 (yuv420p, which browsers play) at the env's own frame rate, with the last frame held for
``freeze_seconds`` so a rater sees how the segment ends before it loops.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def mujoco_state(env) -> np.ndarray:
    """qpos and qvel of a gymnasium MuJoCo env, concatenated ``[nq + nv]`` (float64)."""
    data = env.unwrapped.data
    return np.concatenate([data.qpos, data.qvel]).copy()


class MujocoClipRenderer:
    """Renders state sequences of one MuJoCo env id to mp4 files; keeps one rendering env open."""

    def __init__(self, env_id: str, width: int = 320, height: int = 240, freeze_seconds: float = 0.5,
                 env_kwargs: dict | None = None):
        import gymnasium as gym

        os.environ.setdefault("MUJOCO_GL", "egl")
        self.env = gym.make(env_id, render_mode="rgb_array", width=width, height=height, **(env_kwargs or {}))
        self.env.reset(seed=0)
        model = self.env.unwrapped.model
        self.nq, self.nv = model.nq, model.nv
        self.fps = int(self.env.metadata.get("render_fps") or round(1.0 / self.env.unwrapped.dt))
        self.freeze_frames = int(round(freeze_seconds * self.fps))

    def frames(self, states: np.ndarray) -> list[np.ndarray]:
        states = np.asarray(states, np.float64)
        if states.ndim != 2 or states.shape[1] != self.nq + self.nv:
            raise ValueError(f"states must be [steps, {self.nq + self.nv}] (qpos then qvel), got {states.shape}")
        out = []
        for state in states:
            self.env.unwrapped.set_state(state[:self.nq], state[self.nq:])
            out.append(self.env.render())
        return out

    def render(self, states: np.ndarray, path: str | Path) -> Path:
        return write_mp4(self.frames(states), path, self.fps, self.freeze_frames)

    def close(self) -> None:
        self.env.close()


class FrameClipRenderer:
    """Renders stored frames ([steps, H, W] grayscale or [steps, H, W, 3] RGB, uint8) to mp4 files, scaled up by
    whole pixels (nearest neighbour keeps the pixel art sharp) to at least ``min_width`` wide."""

    def __init__(self, fps: float, min_width: int = 320, freeze_seconds: float = 0.5):
        self.fps = fps
        self.min_width = min_width
        self.freeze_frames = int(round(freeze_seconds * fps))

    def frames(self, frames: np.ndarray) -> list[np.ndarray]:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
            raise ValueError(f"frames must be uint8 [steps, H, W] or [steps, H, W, 3], got {frames.dtype} "
                             f"{frames.shape}")
        if frames.ndim == 3:
            frames = np.repeat(frames[..., None], 3, axis=-1)
        scale = -(-self.min_width // frames.shape[2])  # ceil
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
        return list(frames)

    def render(self, frames: np.ndarray, path: str | Path) -> Path:
        return write_mp4(self.frames(frames), path, self.fps, self.freeze_frames)

    def close(self) -> None:
        pass


def write_mp4(frames: list[np.ndarray], path: str | Path, fps: float, freeze_frames: int) -> Path:
    """H.264 mp4 of ``frames`` then the last one ``freeze_frames`` more times; written to a temporary name and
    moved into place, so the page never serves a half-written clip."""
    import imageio.v2 as imageio

    frames = list(frames) + [frames[-1]] * freeze_frames
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.mp4")
    imageio.mimsave(tmp, frames, fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=16)
    os.replace(tmp, path)
    return path
