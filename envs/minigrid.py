"""MiniGrid (the third-party ``minigrid`` package, optional extra ``pip install -e '.[minigrid]'``), plugged in
through the custom-env path: ``envs.make("MiniGrid-DoorKey-5x5-v0")`` builds each env with ``make_env`` below,
exactly as it would any ``module:factory`` (``--env envs.minigrid:make_env --env_kwargs ...`` is equivalent),
so ``check_env`` runs on it first.

Preprocessing (the usual MiniGrid setup, as in the AGAC and rl-starter-files code):
- the partial, egocentric 7x7 view's symbolic encoding (object, colour, state ids per cell) as the observation,
  channels first: ``uint8 [3, 7, 7]`` (``minigrid.wrappers.ImgObsWrapper`` drops the mission string);
- the 7 MiniGrid actions unchanged; the env's own step limit and reward ``1 - 0.9 t / max_steps`` on success;
- ``info["agent_pos"]`` (x, y) at reset and after every step, for the episodic count bonus (agents/agac.py).

``register_paper_envs`` adds the MultiRoom sizes of the AGAC paper that ``minigrid`` does not register
(N10-S10, N12-S10); ``make_env`` calls it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.custom import EnvCheckError

PAPER_MULTIROOMS = {"MiniGrid-MultiRoom-N10-S10-v0": 10, "MiniGrid-MultiRoom-N12-S10-v0": 12}


def is_minigrid(env: Any) -> bool:
    return isinstance(env, str) and env.startswith("MiniGrid-")


def register_paper_envs() -> None:
    for env_id, rooms in PAPER_MULTIROOMS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="minigrid.envs:MultiRoomEnv",
                         kwargs={"minNumRooms": rooms, "maxNumRooms": rooms, "maxRoomSize": 10})


class SymbolicImage(gym.ObservationWrapper):
    """``obs["image"]`` ``[7, 7, 3]`` -> ``uint8 [3, 7, 7]``; adds ``info["agent_pos"]``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        h, w, c = env.observation_space["image"].shape
        self.observation_space = gym.spaces.Box(0, 255, (c, h, w), np.uint8)

    def observation(self, obs: dict) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(obs["image"], (2, 0, 1)), dtype=np.uint8)

    def reset(self, **kwargs):
        obs, info = super().reset(**kwargs)
        return obs, self._with_position(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, self._with_position(info)

    def _with_position(self, info: dict) -> dict:
        return {**info, "agent_pos": np.asarray(self.unwrapped.agent_pos, dtype=np.int64)}


def make_env(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    try:
        import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
    except ImportError as e:
        raise EnvCheckError(f"Env '{env_id}' needs the 'minigrid' package ({e}). Fix: pip install -e '.[minigrid]'") from e
    register_paper_envs()
    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("MiniGrid-"))
        raise EnvCheckError(f"Env '{env_id}' is not a registered MiniGrid id. Known: {', '.join(known[:40])} ...")
    return SymbolicImage(gym.make(env_id, render_mode=render_mode, **kwargs))
