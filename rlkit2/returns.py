"""Advantage and return estimators as pure functions of time-major tensors ``[T, N]``.

Conventions (shared by every agent):
- ``values[t]`` = V(s_t).
- ``next_values[t]`` = V of the state that *really* followed s_t: V(s_{t+1}) inside an episode, V(final_obs)
  when the episode was truncated at t (time limit), anything when it terminated at t (it is masked).
  ``next_values_from`` builds it from the collector's tensors.
- ``terminated[t]``: s_{t+1} is terminal, so nothing is bootstrapped after r_t.
- ``episode_end[t]`` = terminated or truncated: the recursion over time stops there (the next row belongs
  to a new episode), but a truncated step still bootstraps from ``next_values[t]``.
Treating truncation as termination (CleanRL's ``done = term | trunc``) biases values low near time limits;
see tests/rlkit2/test_returns.py::test_infinite_horizon.
"""

from __future__ import annotations

import torch
from torch import Tensor


def next_values_from(values: Tensor, last_value: Tensor, truncated: Tensor, final_values: Tensor) -> Tensor:
    """V(s_{t+1}) for every step: the next row's value, the bootstrap value after the last row, and the
    value of the true final observation where an episode was truncated."""
    shifted = torch.cat([values[1:], last_value.unsqueeze(0)], dim=0)
    return torch.where(truncated, final_values, shifted)


def gae(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, episode_end: Tensor,
        gamma: float, lam: float) -> Tensor:
    """Generalized advantage estimation (Schulman et al. 2016):
    delta_t = r_t + gamma (1 - term_t) V_{t+1} - V_t;   A_t = delta_t + gamma lam (1 - end_t) A_{t+1}."""
    not_terminal = 1.0 - terminated.to(values.dtype)
    continues = 1.0 - episode_end.to(values.dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    advantages = torch.empty_like(values)
    running = torch.zeros_like(values[0])
    for t in range(values.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lam * continues[t] * running
        advantages[t] = running
    return advantages


def lambda_returns(rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor,
                   episode_end: Tensor, gamma: float, lam: float) -> Tensor:
    """TD(lambda) returns G^lambda_t = A^GAE_t + V_t (the value targets that go with GAE)."""
    return gae(rewards, values, next_values, terminated, episode_end, gamma, lam) + values


def n_step_returns(rewards: Tensor, next_values: Tensor, terminated: Tensor, episode_end: Tensor,
                   gamma: float, n: int) -> Tensor:
    """G_t = sum_{k<m} gamma^k r_{t+k} + gamma^m (1 - term) V(s_{t+m}), with m <= n stopping early at an
    episode end or at the end of the rollout. ``n <= 0`` means: to the end of the rollout (A2C's estimator)."""
    steps = rewards.shape[0]
    n = steps if n <= 0 else min(n, steps)
    not_terminal = 1.0 - terminated.to(rewards.dtype)
    ends = episode_end.to(rewards.dtype)
    time = torch.arange(steps, device=rewards.device).view(-1, *([1] * (rewards.dim() - 1)))

    def ahead(x: Tensor, k: int) -> Tensor:  # row t holds x[t + k] (zeros past the end)
        return torch.cat([x[k:], torch.zeros_like(x[:k])], dim=0)

    returns = torch.zeros_like(rewards)
    alive = torch.ones_like(rewards)  # row t: its window has not stopped before step t + k
    discount = 1.0
    for k in range(n):
        returns = returns + alive * discount * ahead(rewards, k)
        discount *= gamma
        window_full = ((time + k == steps - 1) | torch.tensor(k == n - 1)).to(rewards.dtype)
        stop = alive * torch.clamp(ahead(ends, k) + window_full, max=1.0)
        returns = returns + stop * discount * ahead(not_terminal * next_values, k)
        alive = alive - stop
    return returns


def discounted_returns(rewards: Tensor, episode_end: Tensor, gamma: float) -> Tensor:
    """Monte-Carlo returns within each episode, not bootstrapped (used by tests and analysis)."""
    returns = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    continues = 1.0 - episode_end.to(rewards.dtype)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * continues[t] * running
        returns[t] = running
    return returns


def polyak_update(target: torch.nn.Module, source: torch.nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, in place (soft target update)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
