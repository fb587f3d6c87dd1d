"""The Agent contract and the agent registry (docs/agent_contract.md).

An agent is an ``AgentSpec`` that a package declares under a name in the entry-point group ``rlkit2.agents``
(pyproject.toml: ``[project.entry-points."rlkit2.agents"] name = "module:SPEC"``); rlkit2's own agents are declared
the same way (``ppo`` and ``a2c`` are two specs of the one on-policy module). A spec's module is imported only when
the agent is asked for by name. The run loop only needs the small ``Agent`` protocol:

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

import functools
import importlib
import importlib.metadata
import re
import tomllib
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


ENTRY_POINT_GROUP = "rlkit2.agents"
# rlkit2 run from a checkout (scripts/*.py, PYTHONPATH, or an editable install whose metadata may predate the last
# edit of pyproject.toml): the built-in agents are read from the checkout's own pyproject.toml, their one
# declaration; an installed rlkit2 (a wheel) has no pyproject.toml beside it and reads its installed metadata.
_CHECKOUT_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
_BUILT_IN = "rlkit2"  # the distribution name of rlkit2's own declarations


class AgentPluginError(ConfigError):
    """An agent declared by an installed package cannot be used: two packages claim its name, or it fails to
    load. The message names the package(s); the fix is in that package, not in the command's options."""


@dataclass(frozen=True)
class AgentEntryPoint:
    name: str  # the agent's name (--agent NAME)
    target: str  # 'module:attribute', an AgentSpec
    package: str  # the distribution that declares it


def agent_names() -> list[str]:
    """Every declared agent's name, without importing any agent module."""
    return sorted(_declared())


def get_agent_spec(name: str) -> AgentSpec:
    """The agent declared as ``name``; imports its module on first use."""
    claims = _declared().get(name)
    if not claims:
        raise ValueError(f"Unknown agent '{name}'. Available agents: {', '.join(agent_names())}")
    if len(claims) > 1:
        owners = " and ".join(f"{c.package} ({c.target})" for c in claims)
        raise AgentPluginError(f"Agent '{name}' is claimed by two packages: {owners} — uninstall one of them "
                               f"(pip uninstall {claims[-1].package}), or rename the agent in its package's "
                               f"[project.entry-points.\"{ENTRY_POINT_GROUP}\"]")
    return _load(claims[0])


def available_agents() -> dict[str, AgentSpec | AgentPluginError]:
    """Every declared agent, loaded: its spec, or the error that says why it cannot be used (for listings, which
    show the agents that work beside the ones that do not)."""
    found: dict[str, AgentSpec | AgentPluginError] = {}
    for name in agent_names():
        try:
            found[name] = get_agent_spec(name)
        except AgentPluginError as error:
            found[name] = error
    return found


@functools.cache
def _declared() -> dict[str, list[AgentEntryPoint]]:
    """name -> every declaration of it (more than one: a name two packages claim), discovered once per process."""
    checkout = _checkout_declarations()
    claims = [AgentEntryPoint(name, target, _BUILT_IN) for name, target in (checkout or {}).items()]
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        package = entry_point.dist.name if entry_point.dist is not None else entry_point.value.split(":")[0]
        if checkout is not None and _canonical(package) == _BUILT_IN:
            continue  # an install of this checkout: its pyproject.toml, read above, is the newer declaration
        claims.append(AgentEntryPoint(entry_point.name, entry_point.value, package))
    by_name: dict[str, list[AgentEntryPoint]] = {}
    for claim in claims:
        by_name.setdefault(claim.name, []).append(claim)
    return by_name


def _checkout_declarations() -> dict[str, str] | None:
    """The built-in agents' entry points from the checkout's pyproject.toml; None when rlkit2 is not run from a
    checkout (then they come from its installed metadata)."""
    if not _CHECKOUT_PYPROJECT.is_file():
        return None
    project = tomllib.loads(_CHECKOUT_PYPROJECT.read_text()).get("project", {})
    if project.get("name") != _BUILT_IN:
        return None
    return dict(project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {}))


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()  # PEP 503


@functools.cache
def _load(claim: AgentEntryPoint) -> AgentSpec:
    module_name, _, attribute = claim.target.partition(":")
    if claim.package == _BUILT_IN:  # our own code: a failure here is a bug, shown with its traceback
        spec = _resolve(module_name, attribute)
    else:
        try:
            spec = _resolve(module_name, attribute)
        except Exception as error:  # noqa: BLE001 -- whatever the plug-in's import raises, said in one line
            raise AgentPluginError(
                f"Agent plug-in '{claim.name}' ({claim.target}, from package {claim.package}) failed to load: "
                f"{type(error).__name__}: {error} — fix or reinstall that package, or uninstall it (pip uninstall "
                f"{claim.package}); RLKIT2_TRACEBACK=1 shows where it failed") from error
    if not isinstance(spec, AgentSpec):
        raise AgentPluginError(f"Agent plug-in '{claim.name}' ({claim.target}, from package {claim.package}) is a "
                               f"{type(spec).__name__}, not an rlkit2.agent.AgentSpec — its entry point must name "
                               "the AgentSpec (docs/agent_contract.md)")
    if spec.name != claim.name:
        raise AgentPluginError(f"Agent plug-in '{claim.name}' ({claim.target}, from package {claim.package}) is "
                               f"an AgentSpec named '{spec.name}' — the entry point's name and AgentSpec.name "
                               "must be the same")
    return spec


def _resolve(module_name: str, attribute: str) -> Any:
    value: Any = importlib.import_module(module_name)
    for part in filter(None, attribute.split(".")):
        value = getattr(value, part)
    return value


def action_bounds(env_name: str, space: gym.spaces.Box, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) of a Box action space as float32 tensors on ``device``; the policies act in [-1, 1] rescaled to
    these bounds, so infinite bounds are an error that says how to fix them."""
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ConfigError(f"Env '{env_name}': action space {space} has infinite bounds, but the policy acts in "
                          "[-1, 1] rescaled to the bounds. Fix: declare finite bounds, or wrap the env with "
                          "gymnasium.wrappers.RescaleAction/ClipAction.")
    return (torch.as_tensor(space.low, dtype=torch.float32, device=device),
            torch.as_tensor(space.high, dtype=torch.float32, device=device))
