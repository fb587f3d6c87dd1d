"""Rollout collection with batched policy inference: one forward pass for all N envs per step.

Shape legend: ``T`` steps per rollout, ``N`` envs, ``O...`` observation dims, ``A...`` action dims.

The hot loop per step: numpy obs ``[N,O]`` -> one tensor transfer -> ``policy.step`` (inference mode, on the
agent's device) -> actions back to the env in one transfer -> ``env.step`` -> write row ``t`` of the
preallocated ``[T,N,...]`` rollout tensors. A policy may return only the actions from ``step`` and leave the
log-probs and values to ``policy.evaluate`` on the whole rollout after the last step. For a policy whose
networks do not change during collection and that keeps no per-step state (no recurrent memory), that gives
the same numbers from fewer, larger forward passes. PPO does this.

For an env whose episode was *truncated* at ``t`` the value of the true final observation is computed (only on
steps where some env was truncated) and stored in ``final_values[t]`` so advantage estimation can bootstrap it
(see rlkit2/returns.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from envs import VecEnv
from envs.pipeline import PipelinedVecEnv
from rlkit2.config import ConfigError


class PolicyStep(NamedTuple):
    env_action: Tensor  # [N,A...] what the env receives (clipped / squashed / rescaled)
    action: Tensor  # [N,A...] what the log-prob is of (pre-clip sample, or pre-tanh for tanh policies)
    logprob: Tensor | None = None  # [N]; None: policy.evaluate fills the rollout's log-probs and values
    value: Tensor | None = None  # [N], in return units (denormalized)
    extras: dict[str, Tensor] | None = None  # agent-specific per-step tensors (e.g. AGAC's adversary logits)


class RolloutPolicy(Protocol):
    def preprocess(self, obs: Tensor, update_stats: bool) -> Tensor:
        """Raw obs [N,O] -> what the networks see (e.g. normalized); may update normalizer statistics."""

    def step(self, obs: Tensor) -> PolicyStep: ...

    def value(self, obs: Tensor) -> Tensor:
        """V(obs) [N] in return units, for preprocessed obs."""

    def evaluate(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """(log pi(a|s), V(s)), each [B], for preprocessed obs [B,O] and actions [B,A]. Optional: needed only
        by policies whose ``step`` returns no log-prob and value (see the module docstring)."""


@dataclass
class Rollout:
    """Time-major, preallocated on the agent's device and reused every iteration."""

    obs: Tensor  # [T,N,O] preprocessed, as the policy saw them
    actions: Tensor  # [T,N,A]
    logprobs: Tensor  # [T,N]
    values: Tensor  # [T,N]
    rewards: Tensor  # [T,N]
    terminated: Tensor  # [T,N] bool
    truncated: Tensor  # [T,N] bool
    final_values: Tensor  # [T,N] V(final_obs) where truncated, else 0
    last_obs: Tensor  # [N,O] preprocessed obs after the last step
    last_value: Tensor  # [N]
    extras: dict[str, Tensor] = field(default_factory=dict)  # [T,N,...]
    # Preprocessed final observations of truncated episodes: (t, env indices [K], obs [K,O]); kept so the
    # bootstrap values can be re-evaluated with a newer critic (OnPolicyCollector.final_values).
    truncated_final_obs: list[tuple[int, Tensor, Tensor]] = field(default_factory=list)
    # The env info values named in the collector's ``info_keys``, on the host: infos[k][t] describes obs[t].
    infos: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def episode_end(self) -> Tensor:
        return self.terminated | self.truncated


@dataclass
class EpisodeStats:
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def record(self, info: dict) -> None:
        done = info["_episode"]
        if done.any():
            self.returns.extend(info["episode_return"][done].tolist())
            self.lengths.extend(info["episode_length"][done].tolist())

    def pop(self) -> tuple[list[float], list[int]]:
        out = (self.returns, self.lengths)
        self.returns, self.lengths = [], []
        return out


def final_next_obs(next_obs: np.ndarray, ended: np.ndarray, info: dict) -> np.ndarray:
    """The observation each transition leads to: the true final observation where an episode ended (SAME_STEP
    autoreset has already put the next episode's first obs in ``next_obs``)."""
    if not ended.any():
        return next_obs
    real = next_obs.copy()
    real[ended] = info["final_obs"][ended]
    return real


class _AllEnvs:
    """The plain path: one part, every env, stepped in ``send``."""

    def __init__(self, env: VecEnv):
        self.env, self.result = env, None

    def send(self, actions: np.ndarray) -> None:
        self.result = self.env.step(actions)

    def recv(self) -> tuple:
        result, self.result = self.result, None
        return result


class _Half:
    """The pipelined path: one half of a ``PipelinedVecEnv``, stepping between ``send`` and ``recv``."""

    def __init__(self, env: PipelinedVecEnv, half: int):
        self.env, self.half = env, half

    def send(self, actions: np.ndarray) -> None:
        self.env.send(self.half, actions)

    def recv(self) -> tuple:
        return self.env.recv(self.half)


class OnPolicyCollector:
    """Steps ``env`` for ``num_steps`` per call, keeping the current obs between calls.

    The envs step in parts: all of them at once, or -- for a ``PipelinedVecEnv`` (``envs.make(..., pipeline=True)``)
    -- its two halves in turn, each half's env step overlapping the policy's forward pass on the other half. Per
    env, both give the same rollout: the same observations meet the same policy, and every row ``[t, i]`` of the
    rollout is env ``i``'s step ``t``. Only what is shared across envs within a step sees the split: the policy
    runs once per half (a stochastic policy draws its noise per half), and observation statistics are updated
    half by half (the same observations, each once, when acted on).
    """

    EVALUATE_CHUNK = 4096  # rows per policy.evaluate call

    def __init__(self, env: VecEnv | PipelinedVecEnv, num_steps: int, device: torch.device,
                 bootstrap_truncation: bool = True, info_keys: tuple[str, ...] = ()):
        self.env = env
        self.info_keys = info_keys  # env info values to keep per step (e.g. MiniGrid's agent_pos)
        self._info_now: dict[str, np.ndarray] = {}  # [N, ...]: describes the obs the policy acts on next
        self.num_steps = num_steps
        self.device = device
        self.bootstrap_truncation = bootstrap_truncation
        self.episodes = EpisodeStats()
        self.env_time = 0.0  # waiting for the envs (their step, or what of it did not overlap the policy)
        self.inference_time = 0.0
        self._rollout: Rollout | None = None
        if isinstance(env, PipelinedVecEnv):
            self._parts = [(cols, _Half(env, h)) for h, cols in enumerate(env.slices)]
        else:
            self._parts = [(slice(0, env.num_envs), _AllEnvs(env))]
        self._obs_np: list[np.ndarray] | None = None  # per part, its envs' current obs
        self._pin = device.type == "cuda"

    def reset(self, seed: int | None = None) -> None:
        obs, info = self.env.reset(seed=seed)
        self._obs_np = [obs[cols] for cols, _ in self._parts]
        self._info_now = {}
        self._keep_info(info, slice(0, self.env.num_envs))

    def _keep_info(self, info: dict, cols: slice) -> None:
        for key in self.info_keys:
            if key not in info:
                raise ConfigError(f"Env '{self.env.name}' does not report info['{key}'], which this agent needs "
                               f"(reported: {sorted(k for k in info if not k.startswith('_'))}). Fix: use an env "
                               "that reports it, or turn off the option that needs it.")
            value = np.asarray(info[key])
            if key not in self._info_now:
                self._info_now[key] = np.zeros((self.env.num_envs, *value.shape[1:]), value.dtype)
            self._info_now[key][cols] = value

    def _to_device(self, array: np.ndarray) -> Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cpu":
            return tensor
        if self._pin:
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def collect(self, policy: RolloutPolicy) -> Rollout:
        if self._obs_np is None:
            self.reset()
        T, N = self.num_steps, self.env.num_envs
        rewards_np = np.zeros((T, N), np.float32)  # staged on the host, one transfer per rollout
        terminated_np = np.zeros((T, N), bool)
        truncated_np = np.zeros((T, N), bool)
        truncated_final_obs: list[tuple[int, Tensor, Tensor]] = []
        infos = {k: np.zeros((T, *v.shape), v.dtype) for k, v in self._info_now.items()}

        def receive(t: int, part: int) -> None:
            """Part ``part``'s step ``t`` has been sent: wait for it and keep what it returned."""
            cols, envs = self._parts[part]
            start = time.perf_counter()
            self._obs_np[part], rewards_np[t, cols], terminated_np[t, cols], truncated_np[t, cols], info = envs.recv()
            self.env_time += time.perf_counter() - start
            self.episodes.record(info)
            self._keep_info(info, cols)
            truncated = truncated_np[t, cols]
            if self.bootstrap_truncation and truncated.any():
                idx = self._to_device(np.flatnonzero(truncated) + cols.start)
                final_obs = policy.preprocess(self._to_device(info["final_obs"][truncated]), update_stats=False)
                truncated_final_obs.append((t, idx, final_obs))

        for t in range(T):
            for part, (cols, envs) in enumerate(self._parts):
                if t > 0:
                    receive(t - 1, part)
                for key, value in self._info_now.items():
                    infos[key][t, cols] = value[cols]
                # Each observation updates normalizer statistics exactly once: when it is acted on.
                obs = policy.preprocess(self._to_device(self._obs_np[part]), update_stats=True)
                start = time.perf_counter()
                out = policy.step(obs)
                env_action = out.env_action.cpu().numpy()  # the one sync per step: the env needs the action
                self.inference_time += time.perf_counter() - start
                start = time.perf_counter()
                envs.send(env_action)  # a half steps while the policy acts on the other
                self.env_time += time.perf_counter() - start

                storage = self._storage(obs, out)
                storage.obs[t, cols] = obs
                storage.actions[t, cols] = out.action
                if out.logprob is not None:
                    storage.logprobs[t, cols] = out.logprob
                    storage.values[t, cols] = out.value
                for key, value in (out.extras or {}).items():
                    storage.extras[key][t, cols] = value
        for part in range(len(self._parts)):
            receive(T - 1, part)

        if out.logprob is None:  # one batched pass for the rollout (chunked to bound memory on image obs)
            start_evaluate = time.perf_counter()
            flat_obs, flat_actions = storage.obs.flatten(0, 1), storage.actions.flatten(0, 1)
            for start in range(0, T * N, self.EVALUATE_CHUNK):
                rows = slice(start, start + self.EVALUATE_CHUNK)
                storage.logprobs.view(-1)[rows], storage.values.view(-1)[rows] = policy.evaluate(
                    flat_obs[rows], flat_actions[rows])
            if self.device.type == "cuda":  # kernels run asynchronously: time them here, not in the update
                torch.cuda.synchronize(self.device)
            self.inference_time += time.perf_counter() - start_evaluate
        storage.rewards.copy_(self._to_device(rewards_np))
        storage.terminated.copy_(self._to_device(terminated_np))
        storage.truncated.copy_(self._to_device(truncated_np))
        storage.truncated_final_obs = truncated_final_obs
        storage.infos = infos
        storage.final_values.copy_(self.final_values(storage, policy.value))
        last_obs = self._obs_np[0] if len(self._obs_np) == 1 else np.concatenate(self._obs_np)
        storage.last_obs = policy.preprocess(self._to_device(last_obs), update_stats=False)
        storage.last_value = policy.value(storage.last_obs)
        return storage

    @staticmethod
    def final_values(rollout: "Rollout", value_fn) -> Tensor:
        """[T,N] V(final_obs) where an episode was truncated, else 0, for the given value function."""
        final_values = torch.zeros_like(rollout.rewards)
        for t, idx, final_obs in rollout.truncated_final_obs:
            final_values[t, idx] = value_fn(final_obs)
        return final_values

    def _storage(self, obs: Tensor, out: PolicyStep) -> Rollout:
        """Allocate the [T,N,...] tensors once, from the shapes of the first step."""
        if self._rollout is None:
            shape = (self.num_steps, self.env.num_envs)

            def alloc(like: Tensor) -> Tensor:  # like: one part's [n, ...]
                return torch.zeros(*shape, *like.shape[1:], dtype=like.dtype, device=self.device)

            self._rollout = Rollout(
                obs=alloc(obs), actions=alloc(out.action), logprobs=torch.zeros(shape, device=self.device),
                values=torch.zeros(shape, device=self.device), rewards=torch.zeros(shape, device=self.device),
                terminated=torch.zeros(shape, dtype=torch.bool, device=self.device),
                truncated=torch.zeros(shape, dtype=torch.bool, device=self.device),
                final_values=torch.zeros(shape, device=self.device),
                last_obs=torch.zeros(shape[1], *obs.shape[1:], dtype=obs.dtype, device=self.device),
                last_value=torch.zeros(shape[1:], device=self.device),
                extras={k: alloc(v) for k, v in (out.extras or {}).items()},
            )
        return self._rollout

    def pop_timing(self) -> dict[str, float]:
        out = {"env": self.env_time, "inference": self.inference_time}
        self.env_time = self.inference_time = 0.0
        return out

    def pop_stats(self) -> dict[str, float]:
        """Collector statistics beyond timing: none in-process (the remote collector's: per-worker steps/s ...)."""
        return {}
