"""Two halves of the envs, each stepping while the policy acts on the other: ``envs.make(..., pipeline=True)``.

A ``PipelinedVecEnv`` is a ``VecEnv`` for all N envs (the same interface and autoreset semantic) built from two
VecEnvs, over envs ``[0, n_a)`` and ``[n_a, N)``, seeded so that env i still gets ``seed + i``. Its own ``step``
puts both halves in flight at once. A collector that knows about the halves (rlkit2/collector.py) instead keeps
one half stepping while it runs the policy on the other's observations:

    send(0, a0); send(1, a1); loop: obs0 = recv(0); send(0, policy(obs0)); obs1 = recv(1); send(1, policy(obs1))

``send(h, actions)`` starts half h's step and returns; ``recv(h)`` waits for it and returns what ``VecEnv.step``
returns for that half. The halves step in the backend's own threads or processes, so only natively asynchronous
backends pipeline: envpool (two pools in sync mode, so that each env keeps its index and its seed -- envpool's own
async mode returns whichever envs finish first, so which env met which policy sample would depend on thread
timing), ``ale`` (two of ale-py's native thread pools, likewise in sync mode) and ``async`` (gymnasium's worker
processes). ``sync`` is refused: there a worker thread stepping Python
envs contends with the policy for the GIL, and collection measured 0.35-0.64x as fast as without the pipeline
(docs/benchmarks.md, "Throughput").
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.vector import VecEnv


class PipelinedVecEnv(gym.vector.VectorEnv):
    def __init__(self, first: VecEnv, second: VecEnv):
        if first._steps is not second._steps:
            raise ValueError("the halves of a PipelinedVecEnv must share one StepCount (envs.make does this)")
        self.halves = (first, second)
        self.slices = (slice(0, first.num_envs), slice(first.num_envs, first.num_envs + second.num_envs))
        self.num_envs = first.num_envs + second.num_envs
        self.name, self.backend_name = first.name, first.backend_name
        self.clip_rewards, self.episodic_life = first.clip_rewards, first.episodic_life
        self.settings = {**first.settings, "num_envs": self.num_envs, "pipeline": True}
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.metadata = dict(first.metadata)
        if not (first.steps_natively_async and second.steps_natively_async):
            raise ValueError(f"backend '{first.backend_name}' steps the envs in this process, so its halves cannot "
                             "step while the policy acts; pipeline needs backend envpool or async")
        self._in_flight = [False, False]  # per half: a step was sent and not yet received

    @property
    def env_steps(self) -> int:
        return self.halves[0].env_steps

    @env_steps.setter
    def env_steps(self, value: int) -> None:
        self.halves[0].env_steps = value  # shared by both halves

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        self._drain()
        if seed is not None:
            self.action_space.seed(seed)
        first, second = self.halves
        obs_a, info_a = first.reset(seed=seed)
        obs_b, info_b = second.reset(seed=None if seed is None else seed + first.num_envs)
        return np.concatenate([obs_a, obs_b]), concat_info(info_a, info_b, first.num_envs, second.num_envs)

    def send(self, half: int, actions: np.ndarray) -> None:
        """Start half ``half``'s step with its ``actions`` [n_half, ...] and return."""
        self.halves[half].step_async(actions)
        self._in_flight[half] = True

    def recv(self, half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Wait for half ``half``'s step: ``(obs, reward, terminated, truncated, info)`` of its envs."""
        if not self._in_flight[half]:
            raise RuntimeError(f"recv({half}) without a send({half}) before it")
        self._in_flight[half] = False
        return self.halves[half].step_wait()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        self.send(0, actions[self.slices[0]])
        self.send(1, actions[self.slices[1]])
        first, second = self.recv(0), self.recv(1)
        n_a, n_b = self.halves[0].num_envs, self.halves[1].num_envs
        return (*(np.concatenate([a, b]) for a, b in zip(first[:4], second[:4])),
                concat_info(first[4], second[4], n_a, n_b))

    def _drain(self) -> None:
        """Receive steps still in flight (an interrupted collection), before a reset or close."""
        for half, in_flight in enumerate(self._in_flight):
            if in_flight:
                self._in_flight[half] = False
                try:
                    self.halves[half].step_wait()
                except Exception:  # noqa: BLE001 -- the abandoned step's result (or error) was not asked for
                    pass

    def render(self) -> np.ndarray | None:
        return self.halves[0].render()

    def close(self, **kwargs: Any) -> None:
        self._drain()
        for env in self.halves:
            env.close()

    def __repr__(self) -> str:
        return f"PipelinedVecEnv({self.name!r}, num_envs={self.num_envs}, backend={self.backend_name!r})"


def concat_info(a: dict, b: dict, n_a: int, n_b: int) -> dict:
    """The info dict of envs ``[0, n_a)`` and ``[n_a, n_a + n_b)``: each value concatenated along the env axis (a
    nested dict, e.g. ``final_info``, key by key); a key only one half reports is zero (mask False) in the other."""
    out: dict[str, Any] = {}
    for key in [*a, *(k for k in b if k not in a)]:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) or isinstance(vb, dict):
            out[key] = concat_info(va or {}, vb or {}, n_a, n_b)
            continue
        like = np.asarray(va if va is not None else vb)
        va = np.asarray(va) if va is not None else np.zeros((n_a, *like.shape[1:]), like.dtype)
        vb = np.asarray(vb) if vb is not None else np.zeros((n_b, *like.shape[1:]), like.dtype)
        out[key] = np.concatenate([va, vb])
    return out
