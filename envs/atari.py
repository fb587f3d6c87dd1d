"""Atari (ALE v5 ids) with the standard preprocessing, on two backends that produce the same observations.

Every setting is explicit and recorded with the run (``AtariSettings`` is saved in the run's config):
no-op reset, frame skip 4 with max-pool over the last two frames, 84x84 grayscale (area interpolation),
a stack of 4 frames (the newest last; after a reset the older slots are zeros, as ale-py's native env does), FIRE on reset
for games that need it, sticky actions with ALE v5's default 0.25, and the 108k-frame episode limit
(a time limit: truncation). Episodic life and reward clipping are applied by ``VecEnv`` so that episode
statistics always count whole games and raw scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym

from envs.vector import GymnasiumBackend


@dataclass
class AtariSettings:
    noop_max: int = 30
    """Up to this many no-ops after reset (Mnih et al. 2015)."""
    frame_skip: int = 4
    """Each action is repeated this many frames; the observation max-pools the last two."""
    screen_size: int = 84
    """Observations are resized to screen_size x screen_size."""
    grayscale: bool = True
    """Grayscale (1 channel) observations."""
    frame_stack: int = 4
    """Number of stacked frames, newest last: observation shape [frame_stack, screen_size, screen_size]."""
    episodic_life: bool = True
    """A lost life is a terminal for learning (the game goes on). Episode stats still count whole games."""
    clip_rewards: bool = True
    """Learn from sign(reward); episode stats report the raw score."""
    repeat_action_probability: float = 0.25
    """Sticky actions, ALE v5's default (Machado et al. 2018)."""
    full_action_space: bool = False
    """Use all 18 actions rather than the game's minimal set."""
    fire_reset: bool = True
    """Press FIRE after reset in games that need it to start (Breakout...)."""
    max_episode_frames: int = 108_000
    """Episode time limit in emulator frames (30 minutes of play); hitting it is truncation."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_atari(env_id: object) -> bool:
    return isinstance(env_id, str) and env_id.startswith("ALE/")


def ale_game_name(env_id: str) -> str:
    """'ALE/MontezumaRevenge-v5' -> 'montezuma_revenge' (ale-py's ROM name)."""
    import re

    base = env_id.split("/", 1)[1].rsplit("-v", 1)[0]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


class FireReset(gym.Wrapper):
    """Press FIRE for one raw emulator frame after reset, in games that wait for it (Breakout...). This is what
    ale-py's native ``use_fire_reset`` does: with no no-ops and no sticky actions the two backends then give
    bit-identical observations (tests/envs/test_atari_envs.py). Wraps the raw env, below frame skipping."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.enabled = len(meanings) >= 3 and meanings[1] == "FIRE"

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        if self.enabled:
            obs, _, terminated, truncated, info = self.env.step(1)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


def make_gymnasium_atari(env_id: str, s: AtariSettings, render_mode: str | None = None) -> gym.Env:
    """One preprocessed Atari env through gymnasium's wrappers (used by the sync/async backends and video)."""
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(
        env_id,
        frameskip=1,
        repeat_action_probability=s.repeat_action_probability,
        full_action_space=s.full_action_space,
        max_num_frames_per_episode=s.max_episode_frames,
        render_mode=render_mode,
    )
    if s.fire_reset:
        env = FireReset(env)
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=s.noop_max, frame_skip=s.frame_skip, screen_size=s.screen_size,
        terminal_on_life_loss=False, grayscale_obs=s.grayscale, scale_obs=False,
    )
    return gym.wrappers.FrameStackObservation(env, s.frame_stack, padding_type="zero")


def ale_native_backend(env_id: str, num_envs: int, s: AtariSettings) -> GymnasiumBackend:
    """ale-py's C++ ``AtariVectorEnv``: preprocessing and stepping in a native thread pool."""
    from ale_py.vector_env import AtariVectorEnv

    vec = AtariVectorEnv(
        ale_game_name(env_id), num_envs,
        frameskip=s.frame_skip, grayscale=s.grayscale, stack_num=s.frame_stack,
        img_height=s.screen_size, img_width=s.screen_size, maxpool=True, noop_max=s.noop_max,
        repeat_action_probability=s.repeat_action_probability, full_action_space=s.full_action_space,
        max_num_frames_per_episode=s.max_episode_frames, use_fire_reset=s.fire_reset,
        episodic_life=False, reward_clipping=False,  # both done by VecEnv, see module docstring
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    return GymnasiumBackend(vec, dense_final_obs=True, native_send_recv=True)
