"""An env that gives different episodes for the same seed trains, but with a warning that names it and the fix."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import NotReproducibleWarning


class HonoursSeed(gym.Env):
    """Random start from self.np_random: the same seed, the same episode."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), 0.0, False, False, {}


class IgnoresSeed(HonoursSeed):
    """Takes a seed and drops it: its start comes from the global numpy RNG."""

    def reset(self, *, seed=None, options=None):
        return np.random.uniform(-1, 1, 2).astype(np.float32), {}


class RandomSteps(HonoursSeed):
    """Seeds its reset but steps with the global RNG: the same seed, different episodes."""

    def step(self, action):
        return np.zeros(2, np.float32), float(np.random.rand()), False, False, {}


@pytest.mark.parametrize("env", [IgnoresSeed, RandomSteps])
def test_an_env_that_ignores_its_seed_gets_a_warning(env):
    with pytest.warns(NotReproducibleWarning) as caught:
        envs.make(env, num_envs=2, seed=0, backend="sync").close()
    message = str(caught[0].message)
    assert f"Env '{env.__name__}'" in message and "will differ and cannot be reproduced" in message
    assert "call super().reset(seed=seed) and draw every random number from self.np_random" in message


def test_an_env_that_honours_its_seed_gets_none():
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotReproducibleWarning)
        envs.make(HonoursSeed, num_envs=2, seed=0, backend="sync").close()
        envs.make("CartPole-v1", num_envs=1, seed=3, backend="sync").close()
