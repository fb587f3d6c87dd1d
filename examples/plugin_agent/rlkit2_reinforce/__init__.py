"""REINFORCE as an rlkit2 agent plug-in: the smallest agent that fulfils the Agent contract (docs/agent_contract.md).

Every iteration collects ``num_steps`` steps from each of the run's ``num_envs`` envs, computes each step's
discounted reward-to-go within its episode, and takes one gradient step on
``-mean(log pi(a|s) * (G - mean G) / std G)`` (Williams 1992; the batch-mean baseline lowers the variance and, not
depending on the action, adds no bias). Steps at the end of a rollout see only part of their episode's return:
that only adds variance, as the baseline does, since it does not depend on the action either.

rlkit2 finds this module through the entry point in pyproject.toml (``reinforce = "rlkit2_reinforce:SPEC"``) and
imports it only when ``--agent reinforce`` is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from rlkit2.agent import AgentSpec, BuildContext
from rlkit2.config import ConfigError, check_ranges
from rlkit2.device import set_threads


@dataclass
class ReinforceConfig:
    """REINFORCE's options; each is a command-line option (--lr 0.01) and a key of the preset's [agent]."""

    num_steps: int = 256
    """Steps collected from each env per update (x num_envs = the batch)."""
    gamma: float = 0.99
    """Discount of the reward-to-go."""
    lr: float = 1e-3
    """Adam step size."""
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the policy MLP (tanh)."""

    def validate(self) -> None:  # called by rlkit2's config loader after every override
        check_ranges(self, positive=("num_steps", "lr"))
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"Option 'gamma' must be in (0, 1], got {self.gamma}")


class ReinforceAgent:
    def __init__(self, cfg: ReinforceConfig, ctx: BuildContext):
        self.cfg, self.ctx, self.env = cfg, ctx, ctx.env
        obs_size = int(np.prod(ctx.env.single_observation_space.shape))
        layers: list[nn.Module] = []
        for width in cfg.hidden:
            layers += [nn.Linear(obs_size, width), nn.Tanh()]
            obs_size = width
        self.policy = nn.Sequential(*layers, nn.Linear(obs_size, int(ctx.env.single_action_space.n))).to(ctx.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.env_steps = 0
        # One update needs the whole batch: the run loop says so when total_steps is not a multiple of it.
        self.budget_unit = (cfg.num_steps * self.env.num_envs, "one update per batch of num_steps x num_envs steps")
        self.obs = None  # the envs are reset on the first iteration (not when only acting: evaluate)

    def distribution(self, obs: Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.policy(obs.float().flatten(1)))

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """Raw observations [N, ...] on any device -> env actions [N]."""
        dist = self.distribution(obs.to(self.ctx.device))
        return dist.probs.argmax(-1) if deterministic else dist.sample()

    def train_iteration(self) -> dict[str, float]:
        set_threads(self.ctx.threads_collect)
        if self.obs is None:
            self.obs, _ = self.env.reset(seed=self.ctx.seed)
        observations, actions, rewards, ended, finished_returns = [], [], [], [], []
        for _ in range(self.cfg.num_steps):
            obs = torch.as_tensor(self.obs, device=self.ctx.device)
            action = self.act(obs)
            self.obs, reward, terminated, truncated, info = self.env.step(action.cpu().numpy())
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            ended.append(terminated | truncated)
            finished_returns += info["episode_return"][info["_episode"]].tolist()
        self.env_steps += self.cfg.num_steps * self.env.num_envs

        returns = reward_to_go(np.array(rewards), np.array(ended), self.cfg.gamma)
        returns_t = torch.as_tensor(returns, dtype=torch.float32, device=self.ctx.device).flatten()
        advantages = (returns_t - returns_t.mean()) / (returns_t.std() + 1e-8)
        set_threads(self.ctx.threads_update)
        dist = self.distribution(torch.cat(observations))
        loss = -(dist.log_prob(torch.cat(actions)) * advantages).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        stats = {"loss/policy": loss.item(), "loss/entropy": dist.entropy().mean().item()}
        if finished_returns:
            stats["charts/episode_return"] = float(np.mean(finished_returns))
        return stats

    # Checkpoints: plain tensors and numbers only (rlkit2 loads them with torch.load(weights_only=True)).
    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.env_steps = int(state["env_steps"])


def reward_to_go(rewards: np.ndarray, ended: np.ndarray, gamma: float) -> np.ndarray:
    """[T, N] rewards and episode ends -> [T, N] discounted returns from each step to its episode's end (or to
    the end of the rollout)."""
    out = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[1])
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running * ~ended[t]
        out[t] = running
    return out


def build(cfg: ReinforceConfig, ctx: BuildContext) -> ReinforceAgent:
    space, obs_space = ctx.env.single_action_space, ctx.env.single_observation_space
    if not isinstance(space, gym.spaces.Discrete) or not isinstance(obs_space, gym.spaces.Box):
        raise ConfigError(f"Agent 'reinforce' needs a Box observation and a Discrete action space; "
                          f"'{ctx.env.name}' has {obs_space} and {space}. Fix: a discrete env such as CartPole-v1, "
                          "or --agent ppo")
    return ReinforceAgent(cfg, ctx)


SPEC = AgentSpec("reinforce", ReinforceConfig, build, Path(__file__).with_name("reinforce.toml"),
                 "REINFORCE with a batch-mean baseline, discrete actions (an example plug-in)")
