"""Envs with a bug that shows only during training, in one env of a vector env (issue 22): the run must stop at the
step where it appears and name it. Importable as 'faulty_envs:Class' (tests/ is on PYTHONPATH, see conftest)."""

from __future__ import annotations

import os

import numpy as np

from toy_envs import FixedHorizonEnv

BAD_AFTER = 40  # steps of the faulty copy before its bug shows (check_env's 8 probe steps pass)
FIXED = "FAULTY_ENVS_FIXED"  # set this environment variable to '1' to "fix the env" (and resume the run)


class _OneBadCopy(FixedHorizonEnv):
    """Only the copy first reset with seed 1 is faulty: env index 1 of a vector env seeded 0 (copy i gets seed
    0 + i); the evaluation envs (seed 10000 + i) and check_env's probe (seed 0) are not."""

    def __init__(self) -> None:
        super().__init__(horizon=8)
        self.first_seed = None
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        if self.first_seed is None:
            self.first_seed = seed
        return super().reset(seed=seed, options=options)

    def bad_now(self) -> bool:
        self.steps += 1
        return self.first_seed == 1 and self.steps > BAD_AFTER and os.environ.get(FIXED) != "1"


class RaisingEnv(_OneBadCopy):
    """step() raises ZeroDivisionError in env index 1 once it has taken BAD_AFTER steps."""

    def step(self, action):
        if self.bad_now():
            return 1 / 0
        return super().step(action)


class NaNRewardEnv(_OneBadCopy):
    """step() returns a NaN reward (finite observations) in env index 1 once it has taken BAD_AFTER steps."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, (np.nan if self.bad_now() else reward), terminated, truncated, info
