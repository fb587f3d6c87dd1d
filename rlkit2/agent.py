"""The Agent contract and the agent registry.

An agent is one module in ``agents/`` that registers an ``AgentSpec`` under one or more names (``ppo`` and
``a2c`` are two presets of the same on-policy agent). The run loop only needs the small ``Agent`` protocol:

- ``act(obs, deterministic)``: raw observations ``[N,O]`` (a device tensor) -> env actions ``[N,A]``; used by
  evaluation and the evaluate script.
- ``train_iteration()``: collect and update once; returns a dict of scalar stats.
- ``env_steps``: env steps consumed so far (the run's budget counter).
- ``state_dict()`` / ``load_state_dict()``: networks, optimizers, normalizers, counters (plain tensors).
- optional ``resume_state()`` / ``load_resume_state(state_or_None)``: what only resuming needs (an off-policy
  agent's replay buffer); saved in step/final/interrupt checkpoints, not in ``best.pt``.
- with ``AgentSpec.remote_workers``: ``acting_modules()``, the modules (by name) an acting copy on a remote
  worker needs, normalizers included (rlkit2/remote.py).
- optional ``budget_unit = (env steps, why)``: the env steps the agent cannot split (PPO: one iteration); the run
  loop says at the start when the budget rounds up to them.
- optional ``self_checked_state``: top-level ``state_dict`` keys whose network shapes ``load_state_dict`` checks
  itself (the run's checkpoint check skips them).
- optional ``export_module()``: an ``nn.Module`` from raw observations ``[N, ...]`` (the env's dtype) to the env
  actions of ``act(obs, deterministic=True)``, built from the agent's own acting code (an ``ActingModule``) and
  traceable by ``torch.jit.trace`` and ``torch.export``: what ``rlkit2 export`` writes (rlkit2/export.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from envs import VecEnv
from rlkit2.config import ConfigError


class Agent(Protocol):
    env_steps: int

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor: ...

    def train_iteration(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ActingModule(nn.Module):
    """An agent's deterministic policy as one module, what ``export_module()`` returns: ``forward`` is ``act``, the
    agent's own code from raw observations to env actions (so the exported math is the math the agent acts with),
    and ``parts`` registers the modules it reads, so that their weights are the module's parameters and buffers
    (a traced tensor that is no parameter or buffer would be frozen into the graph as a constant)."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor], parts: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.act = act

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.act(obs)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/inf; the update that produced it was not applied."""


@dataclass(frozen=True)
class BuildContext:
    """What an agent's constructor gets besides its own config."""

    env: VecEnv
    device: torch.device
    total_steps: int
    seed: int  # seeds the agent's training envs (the run loop offsets it on resume)
    threads_collect: int
    threads_update: int
    training: bool = True  # False when only acting (evaluate script): skip training-only checks
    run_dir: Path | None = None  # the run directory (agents that keep files there, e.g. labels from people)
    # True once SIGINT/SIGTERM asked the run to stop: an agent that blocks inside train_iteration (waiting for
    # people's labels) polls it and returns early, and the run loop then saves a checkpoint as after any iteration
    stop_requested: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class AgentSpec:
    name: str
    config_cls: type
    build: Callable[[Any, BuildContext], Agent]
    preset: Path | None = None  # TOML file with [agent], [run] and per-env-family sections
    description: str = ""
    # Runs with remote rollout workers (--workers, rlkit2/remote.py): the agent builds its collector with
    # make_on_policy_collector (or drives a ReplayFeeder) and has acting_modules()
    remote_workers: bool = False


AGENTS: dict[str, AgentSpec] = {}


def register(spec: AgentSpec) -> AgentSpec:
    if spec.name in AGENTS:
        raise ValueError(f"Agent '{spec.name}' is already registered")
    AGENTS[spec.name] = spec
    return spec


def get_agent_spec(name: str) -> AgentSpec:
    if not AGENTS:
        import agents  # noqa: F401  (registers the built-in agents; only reached from scripts/tests)
    if name not in AGENTS:
        raise ValueError(f"Unknown agent '{name}'. Available agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name]


def action_bounds(env_name: str, space: gym.spaces.Box, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) of a Box action space as float32 tensors on ``device``; the policies act in [-1, 1] rescaled to
    these bounds, so infinite bounds are an error that says how to fix them."""
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ConfigError(f"Env '{env_name}': action space {space} has infinite bounds, but the policy acts in "
                          "[-1, 1] rescaled to the bounds. Fix: declare finite bounds, or wrap the env with "
                          "gymnasium.wrappers.RescaleAction/ClipAction.")
    return (torch.as_tensor(space.low, dtype=torch.float32, device=device),
            torch.as_tensor(space.high, dtype=torch.float32, device=device))
