"""Deterministic evaluation on separate envs, and video recording."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from envs import VecEnv

ActFn = Callable[[torch.Tensor], torch.Tensor]  # raw obs [N,O] on device -> env actions [N,A]


@torch.inference_mode()
def evaluate(act: ActFn, env: VecEnv, episodes: int, device: torch.device, seed: int | None = None,
             max_episode_steps: int = 1_000_000) -> dict:
    """Run exactly ``episodes`` episodes and return mean/std of return and length.

    Env ``i`` runs a fixed share of the episodes (as SB3's evaluate_policy does), so short episodes from
    fast envs do not crowd out long ones and bias the mean."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n = env.num_envs
    targets = np.array([(episodes + i) // n for i in range(n)])
    counts = np.zeros(n, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    obs, _ = env.reset(seed=seed)
    steps_in_episode = np.zeros(n, dtype=int)
    while (counts < targets).any():
        actions = act(torch.as_tensor(obs, device=device)).cpu().numpy()
        obs, _, _, _, info = env.step(actions)
        done = info["_episode"]
        steps_in_episode = np.where(done, 0, steps_in_episode + 1)
        if steps_in_episode.max() >= max_episode_steps:
            raise RuntimeError(
                f"Evaluation of '{env.name}': an episode ran {max_episode_steps} steps without ending. Fix: give "
                "the env a time limit (--max_episode_steps N) so evaluation episodes end.")
        for i in np.flatnonzero(done):
            if counts[i] < targets[i]:
                returns.append(float(info["episode_return"][i]))
                lengths.append(int(info["episode_length"][i]))
                counts[i] += 1
    r = np.array(returns)
    return {"return_mean": float(r.mean()), "return_std": float(r.std()), "length_mean": float(np.mean(lengths)),
            "episodes": len(returns), "returns": returns}


@torch.inference_mode()
def record_video(act: ActFn, env: VecEnv, path: str | Path, device: torch.device, episodes: int = 1,
                 fps: int = 30, seed: int | None = None, max_frames: int = 10_000) -> Path:
    """Play ``episodes`` episodes in a single-env ``VecEnv`` made with render_mode='rgb_array'; write an mp4 with
    every frame, the first after reset to the last after the final step.

    The VecEnv resets an ended episode inside the same ``step`` (rlkit2's one autoreset semantic), so a frame
    rendered after that step already shows the next episode. The episode is therefore played on the vector's one
    gymnasium env, which has the same wrappers, so that the terminal frame is rendered before any reset."""
    import imageio.v2 as imageio

    single = renderable_env(env)

    def render() -> np.ndarray:
        frame = single.render()
        if frame is None:
            raise ValueError(f"Env '{env.name}' returned no frame; was it made with render_mode='rgb_array'?")
        return frame

    frames = []
    obs, _ = single.reset(seed=seed)
    frames.append(render())
    finished = 0
    while finished < episodes and len(frames) < max_frames:
        action = act(torch.as_tensor(obs[None], device=device)).cpu().numpy()[0]
        obs, _, terminated, truncated, _ = single.step(action)
        frames.append(render())
        if terminated or truncated:
            finished += 1
            if finished < episodes:
                obs, _ = single.reset()
                frames.append(render())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
    return path


def renderable_env(env: VecEnv, check_frame: bool = False):
    """The one gymnasium env of a single-env VecEnv made with render_mode='rgb_array', which record_video plays;
    ValueError if there is none (``check_frame``: or if it renders no frame after a reset)."""
    if env.num_envs != 1:
        raise ValueError("record_video needs a VecEnv with num_envs=1 and render_mode='rgb_array'")
    single = _single_gym_env(env)
    if single is None:
        raise ValueError(f"Env '{env.name}' (backend {env.backend_name}) cannot render a video; make it with "
                         "render_mode='rgb_array', which picks a gymnasium backend")
    if check_frame:
        single.reset()
        try:
            frame = single.render()
        except NotImplementedError:  # gymnasium.Env's own render(): the env has none
            frame = None
        if frame is None:
            raise ValueError(f"Env '{env.name}' renders no frame; give it render_mode='rgb_array' support (a "
                             "render() that returns an RGB array)")
    return single


def _single_gym_env(env: VecEnv):
    """The one gymnasium env inside a single-env VecEnv on a gymnasium Sync backend (what render_mode selects)."""
    vec = getattr(env.backend, "vec", None)
    inner = getattr(vec, "envs", None)
    return inner[0] if inner else None
