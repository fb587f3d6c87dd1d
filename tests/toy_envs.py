"""Tiny deterministic environments used by the rlkit2/agents/scripts tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class ConstantRewardEnv(gym.Env):
    """Never terminates; observation constant, reward 1 every step. Under a TimeLimit the correct value is
    1 / (1 - gamma) only if truncation is bootstrapped (SB3's test_infinite_horizon)."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        return np.ones(1, np.float32), 1.0, False, False, {}


class FixedHorizonEnv(gym.Env):
    """Deterministic reset, episodes of exactly `horizon` steps (terminated). Reward: +1 if the action matches
    the sign of the observed feature. Observations depend only on t, so a run whose rollouts align with
    episodes can be resumed bit-exactly."""

    def __init__(self, horizon: int = 8) -> None:
        self.horizon = horizon
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([np.cos(self.t), self.t / self.horizon], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 if int(action) == int(np.cos(self.t) > 0) else 0.0
        self.t += 1
        return self._obs(), reward, self.t >= self.horizon, False, {}


def make_fixed_horizon(horizon: int = 8) -> gym.Env:
    """A factory function, for the 'module:factory' form."""
    return FixedHorizonEnv(horizon)


class NaNAfterStepsEnv(FixedHorizonEnv):
    """Produces a NaN observation after 50 steps: passes the up-front check, must be caught while training."""

    def __init__(self) -> None:
        super().__init__(horizon=1000)
        self.total = 0

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        self.total += 1
        if self.total > 50:
            obs = np.full(2, np.nan, np.float32)
        return obs, r, term, trunc, info


class ExplodingRewardEnv(FixedHorizonEnv):
    """Finite rewards for the up-front check, then 1e38 rewards: the value loss overflows to inf."""

    def __init__(self) -> None:
        super().__init__(horizon=16)
        self.total = 0

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        self.total += 1
        return obs, (1e38 if self.total > 300 else r), term, trunc, info


class ImageObsContinuousEnv(gym.Env):
    """Pixel observations with continuous actions (for agents that accept only flat observations)."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 1), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((8, 8, 1), np.uint8), {}

    def step(self, action):
        return np.zeros((8, 8, 1), np.uint8), 0.0, False, False, {}


class ReachTargetEnv(gym.Env):
    """Continuous control in one line: observe a target in [-1, 1], act, get -(action - target)^2; 10 steps
    per episode (terminated). A random policy earns about -6.7 per episode, a perfect one 0."""

    def __init__(self, horizon: int = 10) -> None:
        self.horizon = horizon
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.target = self.np_random.uniform(-1, 1, 1).astype(np.float32)
        return self.target.copy(), {}

    def step(self, action):
        reward = -float((np.asarray(action, np.float32)[0] - self.target[0]) ** 2)
        self.t += 1
        self.target = self.np_random.uniform(-1, 1, 1).astype(np.float32)
        return self.target.copy(), reward, self.t >= self.horizon, False, {}


class UnboundedActionEnv(ReachTargetEnv):
    """ReachTargetEnv with an infinite action box (agents that rescale [-1, 1] to the bounds must refuse it)."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)


class FailingEnv(FixedHorizonEnv):
    """FixedHorizonEnv that fails once, for the remote-worker failure tests: the instance seeded ``fail_seed`` (env i of
    envs.make(seed=s) is seeded s + i, so this picks one worker's env) fails at its ``fail_after``-th step by raising,
    killing its own process (``how="kill"``) or hanging (``"hang"``); it first creates ``marker``, and does not fail
    once that file exists, so a resumed run finishes."""

    def __init__(self, fail_seed: int = -1, fail_after: int = 20, how: str = "raise", marker: str = "",
                 continuous: bool = False) -> None:
        super().__init__()
        self.fail_seed, self.fail_after, self.how, self.marker = fail_seed, fail_after, how, marker
        self.continuous = continuous  # a Box(-1, 1) action (for DSAC): its sign is the discrete action
        if continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.seed_used: int | None = None
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.seed_used = seed
        return super().reset(seed=seed, options=options)

    def step(self, action):
        import os

        self.steps += 1
        if self.seed_used == self.fail_seed and self.steps == self.fail_after and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            if self.how == "kill":
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
            if self.how == "hang":
                import time

                time.sleep(3600)
            raise RuntimeError(f"env seeded {self.seed_used} broke at step {self.steps}")
        return super().step(int(np.asarray(action).reshape(-1)[0] > 0) if self.continuous else action)


class RenderCountingEnv(FixedHorizonEnv):
    """FixedHorizonEnv (3 steps) whose rgb frame is filled with its step count t: a video's frames say which states
    it shows."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(horizon=3)
        self.render_mode = render_mode

    def render(self):
        return np.full((8, 8, 3), self.t, np.uint8)
