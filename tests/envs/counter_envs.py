"""Tiny deterministic custom envs for the envs/ tests.

Importable as ``counter_envs`` (the test modules put tests/envs on sys.path; named apart from tests/toy_envs.py,
which is the top-level ``toy_envs``) so that ``'counter_envs:CounterEnv'`` paths resolve, including in the
spawned workers of the 'async' backend.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

NOT_AN_ENV_FACTORY = 42  # a non-callable attribute, for the 'module:attr' error test


class CounterEnv(gym.Env):
    """obs = ``[episode_index, t, length]`` (float32).

    ``episode_index`` counts the resets of this instance (0 after the first), ``t`` the steps of the current
    episode. ``length`` is drawn from ``np_random`` at reset, uniform in ``[min_len, max_len]``: the episode
    terminates at ``t == length``. The reward of the step that reaches ``t`` is ``t + 10 * action``, so a finished
    episode's return is exactly ``length * (length + 1) / 2 + 10 * sum(actions)``.
    """

    metadata = {"render_modes": []}

    def __init__(self, min_len: int = 3, max_len: int = 5):
        self.observation_space = spaces.Box(0.0, 1e6, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.min_len, self.max_len = min_len, max_len
        self.episode = -1
        self.t = 0
        self.length = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.episode, self.t, self.length], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        self.length = int(self.np_random.integers(self.min_len, self.max_len + 1))
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = float(self.t + 10 * int(action))
        return self._obs(), reward, self.t >= self.length, False, {}


def make_counter(**kwargs) -> CounterEnv:
    """A factory function (the 'module:function' form)."""
    return CounterEnv(**kwargs)
