"""Distributional Soft Actor-Critic: DSAC v1 (Duan et al., TNNLS 2021, arXiv 2001.02811) and DSAC-T
(Duan et al., TPAMI 2025, arXiv 2310.05858), following the official code (Jingliang-Duan/DSAC-v1, DSAC-v2
and GOPS ``dsac.py`` / ``dsact.py``).

Each critic models the soft return as a Gaussian Z(s,a) ~ N(Q(s,a), sigma(s,a)^2): one MLP on [s, a] with a
mean head Q and a std head sigma = softplus(.). A return sample is Q + clamp(eps, -3, 3) sigma.

Algorithm (one gradient update, ``update``):
    sample (s, a, r, s', d) uniformly from replay; d = terminated only (a time limit is not a terminal)
    a' ~ pi_target(s')                                        (the *target* policy, unlike SAC)
    v1:      y_z = r + gamma (1-d) (Z'_sample(s',a') - alpha log pi'(a'|s'));   the mean regresses to y_z
    DSAC-T:  i* = argmin_i Q'_i(s',a')                         (twin value distributions)
             y_q = r + gamma (1-d) (Q'_{i*}(s',a') - alpha log pi'(a'|s'))   (expected value substitution)
             y_z = r + gamma (1-d) (Z'_{i*,sample}(s',a') - alpha log pi'(a'|s'))
             sigma_bar_i <- (1-tau_b) sigma_bar_i + tau_b mean_batch(sigma_i)   (variance-based adjustment)
    the std head regresses to y_z clipped to Q_i +- b (v1: fixed b; DSAC-T: b_i = 3 sigma_bar_i);
    critic loss: the gradient of -log N(y; Q, sigma) with stop-gradients (``critic_loss_v1/_t`` below),
             scaled by (sigma_bar_i^2 + eps) in DSAC-T;
    every ``delay`` updates:
        policy:      E[alpha log pi(a~|s) - min_i Q_i(s, a~)], a~ reparameterised (v1: the one critic)
        temperature: -log alpha E[log pi(a~|s) + H_target], H_target = -dim(A)
        Polyak targets (tau) for the critics *and* the policy.

Where the defaults come from (and where they differ; see also agents/presets/dsac.toml):
  - Paper / official code: 3x256 GELU MLPs, Adam lr 3e-4 for alpha, batch 256, replay 1e6, gamma 0.99,
    tau = tau_b = 0.005, delay 2, xi = 3, eps = 0.1, log-std clamp [-20, 0.5], reward scale 1 (DSAC-v2; GOPS
    DSAC-T uses 0.2); v1 TD bound 10 (see ``td_bound``).
  - Warm-up and initial temperature: the official 10k random steps and log alpha = 1 (alpha = e) are the MuJoCo
    preset's. They suit 30M-step MuJoCo runs, not a user's own env at a small budget: a budget below 10k trained
    nothing, and with alpha_lr 3e-4 and delay 2 alpha needs at least 6.7k updates to fall from e to 1. The
    defaults elsewhere: a warm-up of 5% of the budget, at most 10k (``learning_starts = None``), and log alpha =
    0 (alpha = 1, as SB3 and CleanRL SAC); docs/benchmarks.md, "DSAC on small envs". A budget that cannot
    reach the first update is refused.
  - Update-to-data ratio and learning rates: the official serial trainer does 1 update per 20 env steps
    (for 30M env steps) with lr 1e-4 for critic and policy. At the 100k-1M step budgets this library
    benchmarks we default to the regime of the authors' Stable-Baselines3 port of DSAC-T (and of SAC):
    1 update per env step with lr 3e-4. ``--replay_ratio 0.05 --critic_lr 1e-4 --policy_lr 1e-4``
    restores the serial trainer's values.
  - Critic loss: ``paper`` (default) is the DSAC-T paper's loss (GOPS ``dsact.py``, DSAC-v2 before commit
    c5105eb); ``huber_weighted`` is DSAC-v2 HEAD's later variant (per-sample weight
    clip(sigma_bar^2 / (sigma^2 + eps), 0.1, 10) and Huber(50) in both terms).
  - GOPS ``dsact.py`` exists in two versions: commit 92f5634 has the paper loss (running sigma_bar, scale
    sigma_bar^2 + eps); commit 00d7e50 clips with 3x the *batch* mean of the target critic's sigma and has no
    scale. We follow the paper and DSAC-v2 (running sigma_bar of the online critic, with the scale).
  - log pi uses the exact tanh correction log(1 - tanh(u)^2) (computed stably); the official code uses
    log(1 + 1e-6 - tanh(u)^2), which caps each saturated action dimension at about -13.8 nats.
  - The v1 variant follows DSAC-v2's ``dsac_v1.py`` (softplus std, samples clipped at 3 sigma), not GOPS
    ``dsac.py`` (exp std, samples clipped at 2 sigma, another loss form).
  - Warm-up actions: uniform random over the action box (as SAC implementations), or the initial policy's
    samples (``warmup_actions = "policy"``, as GOPS' buffer warm-up does).
  - The critics see actions rescaled to [-1, 1]; log pi includes -sum log((high-low)/2) as the official code
    does, so the entropy target refers to the env's action units.

With ``--workers N`` remote actors step the envs (rlkit2.remote.ReplayFeeder): each chunk of their transitions
goes into its actor's env columns of the replay and owes the same updates as in-process steps; an actor gets its
next request only after those updates (``_train_iteration_with_actors``).

Implementation notes (speed on CPU, no host syncs per update): the twin critics are one ``EnsembleMLP``
(one batched matmul per layer for both; Adam is elementwise, so one optimizer over both equals the
official two); the policy loss differentiates through detached critic weights (no requires_grad toggling);
statistics stay on the device and are read once per iteration; the replay buffer lives on the agent's device
when it fits. The update runs through rlkit2.update_step's ``MinibatchUpdate``, eager or (``compile_update``)
as compiled graphs, one for an update with the delayed policy step and one for an update without; its random
numbers are drawn outside the graph (``_update_noise``), so both paths compute the same update.
"""

from __future__ import annotations

import copy
import functools
from collections import defaultdict
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlkit2.agent import ActingModule, AgentSpec, BuildContext, NonFiniteLossError, action_bounds
from rlkit2.collector import EpisodeStats, final_next_obs
from rlkit2.config import ConfigError, check_ranges
from rlkit2.device import set_threads
from rlkit2.distributions import TanhGaussian
from rlkit2.networks import EnsembleMLP, mlp
from rlkit2.remote import ReplayFeeder, WorkerGroup
from rlkit2.replay import ReplayBuffer, Transitions
from rlkit2.update_step import MinibatchUpdate, ParamGroup

PRESETS = Path(__file__).parent / "presets"
# What an update adds up (rlkit2.update_step): the loss function's statistics (the critic's, then on a policy step
# the policy's), then the gradient norm of each parameter group it steps.
CRITIC_STATS = ("loss/critic", "critic/q", "critic/std", "critic/target_q", "critic/target_z")
POLICY_STATS = ("loss/policy", "policy/entropy")
COMPILE_NOTE = ("compiling DSAC's update with torch.compile ({which} the delayed policy step; about 30-90 s on a "
                "CPU, once per run; --compile_update false to skip)")


@dataclass
class DSACConfig:
    variant: Literal["dsac_t", "v1"] = "dsac_t"
    """'dsac_t': twin critics, expected value substitution, variance-based adjustment (DSAC-T, default);
    'v1': one critic, sampled target for the mean, fixed TD bound (DSAC v1)."""
    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden layer widths of the policy and of each critic (official: 3x256)."""
    activation: Literal["gelu", "relu", "elu", "tanh", "silu", "leaky_relu"] = "gelu"
    """Hidden activation (official: GELU)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (authors' SB3 port at UTD 1: 3e-4; official serial trainer: 1e-4)."""
    policy_lr: float = 3e-4
    """Adam learning rate of the policy (authors' SB3 port at UTD 1: 3e-4; official serial trainer: 1e-4)."""
    alpha_lr: float = 3e-4
    """Adam learning rate of log alpha (official: 3e-4)."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics and the target policy."""
    delay: int = 2
    """Policy, temperature and target updates happen every ``delay`` critic updates (official: 2)."""
    batch_size: int = 256
    """Transitions per gradient update."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions (all envs together)."""
    learning_starts: int | None = None
    """Env steps of warm-up before the first update; None = 5% of total_steps, at most 10k (the official 10k is
    the MuJoCo preset's). Must be below total_steps."""
    warmup_actions: Literal["uniform", "policy"] = "uniform"
    """Warm-up actions: uniform over the action box, or samples from the initial policy."""
    replay_ratio: float = 1.0
    """Gradient updates per env step (update-to-data ratio). Official serial trainer: 0.05; SAC: 1."""
    steps_per_iteration: int = 1000
    """Env steps per ``train_iteration``: the granularity of logging, evaluation and checkpoints."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this in the critic targets (DSAC-v2: 1; GOPS DSAC-T: 0.2)."""
    auto_alpha: bool = True
    """Tune the entropy temperature towards ``target_entropy``; otherwise alpha stays at ``alpha``."""
    alpha: float = 0.2
    """Fixed temperature when auto_alpha is false."""
    log_alpha_init: float = 0.0
    """Initial log alpha when auto_alpha is true: 0, alpha = 1, as SB3 (official: 1.0, i.e. alpha = e: the MuJoCo
    preset's)."""
    target_entropy: float | None = None
    """Entropy target; None = -dim(A)."""
    log_std_min: float = -20.0
    """Policy log-std clamp, lower end."""
    log_std_max: float = 0.5
    """Policy log-std clamp, upper end (official: 0.5)."""
    sample_clip: float = 3.0
    """Return samples use clamp(eps, -c, c) with eps ~ N(0, 1)."""
    td_bound: float = 10.0
    """v1 only: the std term's target is clipped to Q +- td_bound. dsac_v1.py's fallback is 20, its example
    scripts pass 1 (MuJoCo/Humanoid), GOPS' 10; the right value depends on the reward scale."""
    td_bound_sigmas: float = 3.0
    """DSAC-T only: the clip bound is this many running sigma_bar (xi = 3)."""
    tau_b: float = 0.005
    """DSAC-T only: rate of the running mean sigma_bar of each critic's std."""
    epsilon: float = 0.1
    """The bias eps in sigma^2 + eps, sigma^3 + eps and in the DSAC-T scale sigma_bar^2 + eps."""
    critic_loss: Literal["paper", "huber_weighted"] = "paper"
    """DSAC-T critic loss: 'paper' (scaled by sigma_bar^2 + eps) or DSAC-v2 HEAD's 'huber_weighted'."""
    huber_delta: float = 50.0
    """Huber threshold of the 'huber_weighted' loss."""
    compile_update: bool = False
    """torch.compile the whole update -- targets, losses, backward, the three Adam steps, sigma_bar and the Polyak
    targets -- as two graphs, one with the delayed policy step and one without (rlkit2/update_step.py). Same math
    to float rounding, with the random numbers drawn outside the graphs; after a one-off compile at the first
    updates. Needs a C++ compiler; if compiling fails, the run warns and continues uncompiled."""
    replay_device: Literal["auto", "agent", "cpu"] = "auto"
    """Where replay lives: 'auto' = the agent's device if the buffer takes under half of its free memory,
    else the CPU; 'agent'; 'cpu'."""
    checkpoint_replay: bool = True
    """Save the replay buffer in resumable checkpoints (step/final/interrupt; not 'best'), so a resumed run
    continues from the same data. Off: a resumed run refills the buffer with a new warm-up."""
    # --- remote actors (--workers N: actors step the envs and fill the replay; rlkit2/remote.py) -------------
    actor_mode: Literal["async", "sync"] = "async"
    """'async': each actor steps with the newest weights it has and its chunks are added as they arrive; 'sync':
    one chunk from every actor per round, in worker order (deterministic: for tests and comparisons)."""
    actor_chunk: int = 32
    """Env steps per env in one chunk of transitions an actor sends."""
    actor_in_flight: int = 2
    """Chunk requests an actor may have outstanding (async): how far collection runs ahead of the updates."""
    actor_sync_every: int = 100
    """Send the actors the policy's weights every this many updates (the policy lag is logged)."""

    def validate(self) -> None:
        check_ranges(self, positive=("critic_lr", "policy_lr", "alpha_lr", "batch_size", "buffer_size", "delay",
                                     "replay_ratio", "steps_per_iteration", "sample_clip", "td_bound",
                                     "td_bound_sigmas", "epsilon", "huber_delta", "reward_scale", "actor_chunk",
                                     "actor_in_flight", "actor_sync_every"),
                     unit_interval=("gamma", "tau", "tau_b"))
        if self.learning_starts is not None and self.learning_starts < 0:
            raise ConfigError(f"Option 'learning_starts' must be >= 0 (or none: 5% of total_steps, at most 10k), "
                              f"got {self.learning_starts}")
        if self.log_std_min >= self.log_std_max:
            raise ConfigError(f"Options 'log_std_min' ({self.log_std_min}) must be below 'log_std_max' "
                              f"({self.log_std_max})")
        if not self.hidden:
            raise ConfigError("Option 'hidden' must list at least one layer width, e.g. --hidden 256,256")


# ---------------------------------------------------------------------------------------------- the losses
def critic_loss_v1(q: Tensor, std: Tensor, y_z: Tensor, td_bound: float, eps: float = 0.1) -> Tensor:
    """DSAC v1 critic loss for one critic: q, std, y_z are [B].

    Its gradient is that of -log N(y; Q, sigma) with stop-gradients: the mean term pulls Q towards the
    sampled target y_z; the std term uses y_z clipped to Q +- td_bound. y_z carries no gradient."""
    q_sg, std_sg, y_z = q.detach(), std.detach().clamp(min=0.0), y_z.detach()
    y_b = q_sg + (y_z - q_sg).clamp(-td_bound, td_bound)
    mean_term = -(y_z - q_sg) / (std_sg.square() + eps) * q
    std_term = -((q_sg - y_b).square() - std_sg.square()) / (std_sg.pow(3) + eps) * std
    return (mean_term + std_term).mean()


def critic_loss_t(q: Tensor, std: Tensor, y_q: Tensor, y_z: Tensor, sigma_bar: Tensor, xi: float = 3.0,
                  eps: float = 0.1) -> Tensor:
    """DSAC-T critic loss (paper): q, std are [E, B] (E critics), y_q, y_z [B] shared, sigma_bar [E].

    L_i = (sigma_bar_i^2 + eps) E[-sg(y_q - Q_i)/(sg(sigma_i)^2 + eps) Q_i
                                  - ((sg(Q_i) - y_b_i)^2 - sg(sigma_i)^2)/(sg(sigma_i)^3 + eps) sigma_i],
    y_b_i = sg(Q_i) + clamp(y_z - sg(Q_i), -xi sigma_bar_i, xi sigma_bar_i);   L = sum_i L_i."""
    q_sg, std_sg, y_q, y_z, sigma_bar = q.detach(), std.detach().clamp(min=0.0), y_q.detach(), y_z.detach(), sigma_bar.detach()
    bound = (xi * sigma_bar).unsqueeze(1)
    y_b = q_sg + torch.maximum(torch.minimum(y_z - q_sg, bound), -bound)
    mean_term = -(y_q - q_sg) / (std_sg.square() + eps) * q
    std_term = -((q_sg - y_b).square() - std_sg.square()) / (std_sg.pow(3) + eps) * std
    return ((sigma_bar.square() + eps) * (mean_term + std_term).mean(1)).sum()


def critic_loss_t_huber(q: Tensor, std: Tensor, y_q: Tensor, y_z: Tensor, sigma_bar: Tensor, xi: float = 3.0,
                        eps: float = 0.1, delta: float = 50.0) -> Tensor:
    """DSAC-v2 HEAD's DSAC-T critic loss (commit c5105eb): per-sample weight
    w = clip(sigma_bar^2 / (sg(sigma)^2 + eps), 0.1, 10) and Huber(delta) in both terms."""
    q_sg, std_sg, y_q, y_z, sigma_bar = q.detach(), std.detach().clamp(min=0.0), y_q.detach(), y_z.detach(), sigma_bar.detach()
    bound = (xi * sigma_bar).unsqueeze(1)
    y_b = q_sg + torch.maximum(torch.minimum(y_z - q_sg, bound), -bound)
    weight = (sigma_bar.square().unsqueeze(1) / (std_sg.square() + eps)).clamp(0.1, 10.0)
    y_q = y_q.expand_as(q)
    mean_term = F.huber_loss(q, y_q, delta=delta, reduction="none")
    std_term = std * (std_sg.square() - F.huber_loss(q_sg, y_b, delta=delta, reduction="none")) / (std_sg + eps)
    return (weight * (mean_term + std_term)).mean(1).sum()


def warmup_steps(learning_starts: int | None, total_steps: int) -> int:
    """Env steps of random warm-up: ``learning_starts``, or when None 5% of the budget, at most the official 10k."""
    return min(10_000, total_steps // 20) if learning_starts is None else learning_starts


def update_sigma_bar(sigma_bar: Tensor, batch_std: Tensor, tau_b: float) -> Tensor:
    """Running mean of each critic's std ([E]); a negative entry means 'not started': take the batch mean."""
    batch_mean = batch_std.detach().mean(1)
    return torch.where(sigma_bar < 0, batch_mean, (1.0 - tau_b) * sigma_bar + tau_b * batch_mean)


def temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """-log alpha E[log pi + H_target]: alpha grows while the entropy is below the target."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


# -------------------------------------------------------------------------------------------- the networks
class SquashedGaussianPolicy(nn.Module):
    """MLP -> (mean, log std); log std clamped; a = tanh(u), u ~ N(mean, std). Actions are in [-1, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...], act: str, log_std_min: float,
                 log_std_max: float):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * action_dim, act, initializer="torch_default")
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, obs: Tensor) -> TanhGaussian:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return TanhGaussian(mean, log_std.clamp(self.log_std_min, self.log_std_max).exp())


class DSACAgent:
    def __init__(self, cfg: DSACConfig, ctx: BuildContext):
        cfg.validate()
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        env = self.env = ctx.env
        obs_space, action_space = env.single_observation_space, env.single_action_space
        _check_spaces(env.name, obs_space, action_space)
        obs_dim, self.action_dim = int(np.prod(obs_space.shape)), int(np.prod(action_space.shape))
        self.num_envs = env.num_envs

        low, high = action_bounds(env.name, action_space, self.device)
        self.action_mid, self.action_half = (high + low) / 2, (high - low) / 2
        # log pi of the env action = log pi of the [-1, 1] action - sum log((high - low) / 2)
        self.log_half_range = float(torch.log(self.action_half).sum())
        self.target_entropy = -float(self.action_dim) if cfg.target_entropy is None else cfg.target_entropy

        self.num_critics = 2 if cfg.variant == "dsac_t" else 1
        self.policy = SquashedGaussianPolicy(obs_dim, self.action_dim, tuple(cfg.hidden), cfg.activation,
                                             cfg.log_std_min, cfg.log_std_max).to(self.device)
        self.critic = EnsembleMLP(self.num_critics, obs_dim + self.action_dim, tuple(cfg.hidden), 2,
                                  cfg.activation).to(self.device)
        self.policy_target = _frozen_copy(self.policy)
        self.critic_target = _frozen_copy(self.critic)
        # log alpha inside a module, so that the functional update (rlkit2.update_step) can substitute it
        self.temperature = nn.ParameterDict({"log_alpha": nn.Parameter(torch.tensor(
            cfg.log_alpha_init if cfg.auto_alpha else math.log(cfg.alpha), device=self.device))})
        self.sigma_bar = torch.full((self.num_critics,), -1.0, device=self.device)  # < 0: not started

        # Parameter lists built once: the per-update Polyak step and optimizers walk no module trees.
        self._policy_params, self._critic_params = list(self.policy.parameters()), list(self.critic.parameters())
        self._policy_target_params = list(self.policy_target.parameters())
        self._critic_target_params = list(self.critic_target.parameters())
        self.critic_opt = torch.optim.Adam(self._critic_params, lr=cfg.critic_lr, fused=True)
        self.policy_opt = torch.optim.Adam(self._policy_params, lr=cfg.policy_lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self._steps = self._update_steps()

        # an acting copy (evaluation, a remote actor) needs no replay
        self.replay = ReplayBuffer(cfg.buffer_size, self.num_envs, obs_space.shape, torch.float32,
                                   (self.action_dim,), torch.float32, device=self._replay_device(obs_dim)) \
            if ctx.training else None
        self.episodes = EpisodeStats()
        self.env_steps = 0
        self.budget_unit = (self.num_envs, f"one step of each of the {self.num_envs} envs")  # the run's rounding
        self.updates = 0
        self._update_debt = 0.0  # fractional updates owed (replay_ratio * env steps since learning_starts)
        self.warmup = warmup_steps(cfg.learning_starts, ctx.total_steps)
        if ctx.training:
            _check_budget(self.warmup, ctx.total_steps)
        self.learning_starts_at = self.warmup  # env step of the first update (moves if replay is lost)
        self._obs_np: np.ndarray | None = None
        # --workers: remote actors step the envs (ctx.env is then a WorkerGroup) and fill the replay
        self.actors = ReplayFeeder(env, cfg.actor_chunk, cfg.actor_in_flight, cfg.actor_sync_every,
                                   synchronous=cfg.actor_mode == "sync") if isinstance(env, WorkerGroup) else None
        if ctx.training:
            if self.actors is not None:
                self.actors.start(ctx.seed)
            else:
                self._obs_np, _ = env.reset(seed=ctx.seed)

    @property
    def log_alpha(self) -> Tensor:
        return self.temperature["log_alpha"]

    def _update_steps(self) -> dict[bool, MinibatchUpdate]:
        """The update as rlkit2.update_step runs it, keyed by 'with the policy step': without it, the critics'
        Adam step; with it, also the policy's and the temperature's, and the Polyak step of both targets."""
        cfg = self.cfg
        learned = nn.ModuleDict({"policy": self.policy, "critic": self.critic, "temperature": self.temperature})
        with_policy = [ParamGroup(self._critic_params, self.critic_opt, target=self._critic_target_params,
                                  tau=cfg.tau),
                       ParamGroup(self._policy_params, self.policy_opt, target=self._policy_target_params,
                                  tau=cfg.tau)]
        if cfg.auto_alpha:
            with_policy.append(ParamGroup([self.log_alpha], self.alpha_opt))
        self._stat_names = {False: (*CRITIC_STATS, "grad_norm/critic"),
                            True: (*CRITIC_STATS, *POLICY_STATS, "grad_norm/critic", "grad_norm/policy",
                                   *(("grad_norm/temperature",) if cfg.auto_alpha else ()))}
        # cpp_wrapper: the graph's kernels launched from C++, not from inductor's Python wrapper (less per-call
        # overhead on a CPU)
        return {policy_step: MinibatchUpdate(
                    learned, self._losses, groups, option="compile_update",
                    compile_note=COMPILE_NOTE.format(which="with" if policy_step else "without")
                    if cfg.compile_update else None, compile_options={"cpp_wrapper": True})
                for policy_step, groups in ((False, [ParamGroup(self._critic_params, self.critic_opt)]),
                                            (True, with_policy))}

    def _replay_device(self, obs_dim: int) -> torch.device:
        cfg = self.cfg
        if cfg.replay_device == "cpu" or self.device.type == "cpu":
            return torch.device("cpu")
        if cfg.replay_device == "agent":
            return self.device
        bytes_needed = cfg.buffer_size * 1.02 * (obs_dim + self.action_dim + 2) * 4
        free, _ = torch.cuda.mem_get_info(self.device)
        return self.device if bytes_needed < 0.5 * free else torch.device("cpu")

    # --- acting -------------------------------------------------------------------------------------------
    def to_env_action(self, action: Tensor) -> Tensor:
        return self.action_mid + self.action_half * action

    def sample_with_log_prob(self, policy: SquashedGaussianPolicy, obs: Tensor,
                             noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterised action in [-1, 1] (from ``noise`` ~ N(0, 1) when given) and log pi of the corresponding
        env action."""
        action, log_prob = policy(obs).rsample_with_log_prob(noise)
        return action, log_prob - self.log_half_range

    @torch.inference_mode()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return self.policy_action(obs.to(self.device), deterministic)

    def policy_action(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """Raw observations -> env actions: tanh of the mean (``deterministic``; also the exported policy) or of
        a sample, rescaled to the bounds."""
        dist = self.policy(obs.float())
        return self.to_env_action(dist.mode() if deterministic else dist.rsample_with_log_prob()[0])

    def export_module(self) -> ActingModule:
        """The deterministic policy, network to rescaling, as one module (rlkit2/export.py)."""
        return ActingModule(functools.partial(self.policy_action, deterministic=True), {"policy": self.policy})

    def explore(self, obs: Tensor, warmup: bool) -> Tensor:
        """The [-1, 1] action to collect with (stored in replay): uniform over the box during a uniform warm-up,
        else a sample of the policy. Shared by the in-process steps and the remote actors."""
        if warmup and self.cfg.warmup_actions == "uniform":
            return torch.rand(len(obs), self.action_dim, device=self.device) * 2.0 - 1.0
        with torch.inference_mode():
            return self.policy(obs).rsample_with_log_prob()[0]

    def acting_modules(self) -> dict[str, nn.Module]:
        """What a remote actor's acting copy needs (rlkit2/remote.py)."""
        return {"policy": self.policy}

    def q_values(self, critic: EnsembleMLP, obs: Tensor, action: Tensor, params=None) -> tuple[Tensor, Tensor]:
        """Mean and std [E, B] of each critic's return distribution."""
        out = critic(torch.cat([obs, action], dim=-1), params)
        return out[..., 0], F.softplus(out[..., 1])

    # --- one iteration: env steps interleaved with gradient updates ---------------------------------------
    def train_iteration(self) -> dict[str, float]:
        if self.actors is not None:
            return self._train_iteration_with_actors()
        cfg, N = self.cfg, self.num_envs
        set_threads(self.ctx.threads_update)
        budget = max(1, min(cfg.steps_per_iteration, self.ctx.total_steps - self.env_steps))
        timing = {"env": 0.0, "inference": 0.0, "update": 0.0}
        sums = self._new_sums()
        updates_before = self.updates
        for _ in range(math.ceil(budget / N)):
            self._env_step(timing)
            if self.env_steps > self.learning_starts_at:  # SB3 convention: warm-up steps owe no updates
                self._update_debt += N * cfg.replay_ratio
                timing["update"] += self._pay_update_debt(sums)
        return self._iteration_stats(sums, updates_before, timing)

    def _new_sums(self) -> dict[bool, Tensor]:
        """Per kind of update (with the policy step or not), its statistics summed on the device."""
        return {kind: torch.zeros(len(names), device=self.device) for kind, names in self._stat_names.items()}

    def _pay_update_debt(self, sums: dict[bool, Tensor]) -> float:
        """Make the whole updates the env steps so far owe (replay_ratio per step), adding their stats to ``sums``;
        returns the seconds they took."""
        start = time.perf_counter()
        while self._update_debt >= 1.0:
            self._update_debt -= 1.0
            self._update(self.replay.sample(self.cfg.batch_size), sums)
        return time.perf_counter() - start

    def _env_step(self, timing: dict[str, float]) -> None:
        start = time.perf_counter()
        obs = torch.as_tensor(self._obs_np, dtype=torch.float32, device=self.device)
        action = self.explore(obs, warmup=self.env_steps < self.learning_starts_at)
        env_action = self.to_env_action(action).cpu().numpy()  # the one sync per step: the env needs it
        timing["inference"] += time.perf_counter() - start

        start = time.perf_counter()
        next_obs, rewards, terminated, truncated, info = self.env.step(env_action)
        timing["env"] += time.perf_counter() - start
        self.episodes.record(info)
        # the stored next obs is the true final obs where an episode ended (for bootstrapping after truncation)
        real_next_obs = final_next_obs(next_obs, terminated | truncated, info)
        self.replay.add(self._obs_np, action, rewards, terminated, truncated, real_next_obs)
        self._obs_np = next_obs
        self.env_steps += self.num_envs

    def _train_iteration_with_actors(self) -> dict[str, float]:
        """``train_iteration`` with remote actors stepping the envs (--workers, rlkit2.remote.ReplayFeeder): each
        chunk of their transitions goes into its actor's replay columns step by step, owing updates as the
        in-process steps do, and the updates it owes are made before that actor gets its next request."""
        cfg = self.cfg
        set_threads(self.ctx.threads_update)
        budget = max(1, min(cfg.steps_per_iteration, self.ctx.total_steps - self.env_steps))
        timing = {"update": 0.0}
        sums = self._new_sums()
        updates_before, steps_before = self.updates, self.env_steps
        modules = self.acting_modules()
        while self.env_steps - steps_before < budget:
            # a request acts at random while the steps before it (received or not) are still in the warm-up
            chunks = self.actors.next_chunks(modules, self.updates,
                                             warmup=lambda ahead: self.env_steps + ahead < self.learning_starts_at)
            for chunk in chunks:
                k = chunk.envs.stop - chunk.envs.start
                for t in range(len(chunk.rewards)):
                    self.replay.add(chunk.obs[t], chunk.actions[t], chunk.rewards[t], chunk.terminated[t],
                                    chunk.truncated[t], chunk.next_obs[t], columns=chunk.envs)
                    self.env_steps += k
                    if self.env_steps > self.learning_starts_at:
                        self._update_debt += k * cfg.replay_ratio
                self.episodes.returns.extend(chunk.episodes[0])
                self.episodes.lengths.extend(chunk.episodes[1])
                timing["update"] += self._pay_update_debt(sums)
                self.actors.updated(modules, self.updates)
        stats = self._iteration_stats(sums, updates_before, {**timing, **self.actors.pop_timing()})
        stats.update(self.actors.pop_stats())
        return stats

    def update(self, batch: Transitions) -> dict[str, Tensor]:
        """One gradient update on a batch; returns its statistics as device scalars (for tests and FLOP counts:
        training adds them into per-iteration sums instead)."""
        policy_step = self.updates % self.cfg.delay == 0
        sums = self._new_sums()
        self._update(batch, sums)
        return dict(zip(self._stat_names[policy_step], sums[policy_step].unbind()))

    def _update(self, batch: Transitions, sums: dict[bool, Tensor]) -> None:
        """One gradient update (``_losses``, then the optimizer and Polyak steps: rlkit2.update_step), its
        statistics added to ``sums`` (no host sync)."""
        policy_step = self.updates % self.cfg.delay == 0
        batch = Transitions(*(t.to(self.device, non_blocking=True) for t in batch))
        self.sigma_bar, = self._steps[policy_step](
            sums[policy_step], batch.obs, batch.actions, batch.rewards, batch.next_obs, batch.terminated,
            self.sigma_bar, *self._update_noise(len(batch.rewards), policy_step))
        self.updates += 1

    def _update_noise(self, batch_size: int, policy_step: bool) -> tuple[Tensor, ...]:
        """The update's random numbers, drawn outside a compiled update and in the order the update has always
        drawn them (a seed gives the same run compiled or not, and as before): the target policy's action noise,
        the return samples' noise and, on a policy step, the policy's action noise."""
        noise = [torch.randn(batch_size, self.action_dim, device=self.device),
                 torch.randn(self.num_critics, batch_size, device=self.device)]
        if policy_step:
            noise.append(torch.randn(batch_size, self.action_dim, device=self.device))
        return tuple(noise)

    def _losses(self, obs: Tensor, actions: Tensor, rewards: Tensor, next_obs: Tensor, terminated: Tensor,
                sigma_bar: Tensor, next_noise: Tensor, return_noise: Tensor, policy_noise: Tensor | None = None
                ) -> tuple[Tensor, Tensor, tuple[Tensor]]:
        """The update's loss (the algorithm box above): the critics', plus on a policy step (``policy_noise``
        given) the policy's and the temperature's; its statistics (CRITIC_STATS, then POLICY_STATS); and the new
        sigma_bar."""
        cfg = self.cfg
        obs, next_obs = obs.float(), next_obs.float()
        rewards = rewards * cfg.reward_scale
        alpha = self.log_alpha.detach().exp()

        with torch.no_grad():
            next_actions, next_log_prob = self.sample_with_log_prob(self.policy_target, next_obs, next_noise)
            next_q, next_std = self.q_values(self.critic_target, next_obs, next_actions)  # [E, B]
            next_z = next_q + return_noise.clamp(-cfg.sample_clip, cfg.sample_clip) * next_std
            continues = cfg.gamma * (~terminated).float()
            lowest = next_q.argmin(0, keepdim=True)  # the critic with the smaller target mean
            y_q = rewards + continues * (next_q.gather(0, lowest).squeeze(0) - alpha * next_log_prob)
            y_z = rewards + continues * (next_z.gather(0, lowest).squeeze(0) - alpha * next_log_prob)

        q, std = self.q_values(self.critic, obs, actions)
        if cfg.variant == "v1":
            critic_loss = critic_loss_v1(q[0], std[0], y_z, cfg.td_bound, cfg.epsilon)
        else:
            sigma_bar = update_sigma_bar(sigma_bar, std, cfg.tau_b)
            if cfg.critic_loss == "paper":
                critic_loss = critic_loss_t(q, std, y_q, y_z, sigma_bar, cfg.td_bound_sigmas, cfg.epsilon)
            else:
                critic_loss = critic_loss_t_huber(q, std, y_q, y_z, sigma_bar, cfg.td_bound_sigmas,
                                                  cfg.epsilon, cfg.huber_delta)
        loss, policy_stats = critic_loss, []
        if policy_noise is not None:
            # The policy sees the critics as they were before this update's critic step (as the official
            # code does): their weights are detached, the gradient flows only through the action.
            new_actions, log_prob = self.sample_with_log_prob(self.policy, obs, policy_noise)
            q_new, _ = self.q_values(self.critic, obs, new_actions, self.critic.param_lists(detach=True))
            policy_loss = (alpha * log_prob - q_new.min(0).values).mean()
            loss = loss + policy_loss
            if cfg.auto_alpha:
                loss = loss + temperature_loss(self.log_alpha, log_prob, self.target_entropy)
            policy_stats = [policy_loss, -log_prob.mean()]
        stats = torch.stack([critic_loss, q.mean(), std.mean(), y_q.mean(), y_z.mean(), *policy_stats]).detach()
        return loss, stats, (sigma_bar,)

    def _iteration_stats(self, sums: dict[bool, Tensor], updates_before: int,
                         timing: dict[str, float]) -> dict[str, float]:
        stats: dict[str, float] = {}
        updates = self.updates - updates_before
        if updates:
            values = torch.cat([sums[False], sums[True]]).tolist()  # the one read of this iteration's stats
            policy_updates = sum(u % self.cfg.delay == 0 for u in range(updates_before, self.updates))
            made = {False: updates - policy_updates, True: policy_updates}  # updates of each kind
            totals: dict[str, float] = defaultdict(float)
            counts: dict[str, int] = defaultdict(int)
            names = [(name, kind) for kind in (False, True) for name in self._stat_names[kind]]
            for (name, kind), value in zip(names, values):
                totals[name] += value
                counts[name] += made[kind]
            # a NaN/inf loss (the temperature's included: it reaches log alpha's gradient norm) shows in the sums
            if not all(math.isfinite(value) for value in totals.values()):
                raise NonFiniteLossError(f"A DSAC loss or gradient became NaN/inf during the updates up to "
                                         f"{self.updates}.")
            # averages over the updates that made each (the policy's: over the policy steps; none: left out)
            stats.update({name: total / counts[name] for name, total in totals.items() if counts[name]})
            stats["critic/sigma_bar"] = float(self.sigma_bar.mean()) if self.cfg.variant == "dsac_t" else stats["critic/std"]
        stats["charts/alpha"] = float(self.log_alpha.detach().exp())
        stats["charts/updates"] = float(self.updates)
        returns, lengths = self.episodes.pop()
        if returns:
            stats["charts/episode_return"] = float(np.mean(returns))
            stats["charts/episode_length"] = float(np.mean(lengths))
        stats.update({f"time/{k}": v for k, v in timing.items()})
        return stats

    # --- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(), "policy_target": self.policy_target.state_dict(),
            "critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(), "sigma_bar": self.sigma_bar.clone(),
            "critic_opt": self.critic_opt.state_dict(), "policy_opt": self.policy_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "env_steps": self.env_steps, "updates": self.updates, "update_debt": self._update_debt,
            "learning_starts_at": self.learning_starts_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("policy", "policy_target", "critic", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.sigma_bar = state["sigma_bar"].to(self.device)
        for name in ("critic_opt", "policy_opt", "alpha_opt"):
            getattr(self, name).load_state_dict(state[name])
        for step in self._steps.values():  # a compiled update reads the loaded optimizer state from now on
            step.prepare()
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        self._update_debt = float(state["update_debt"])
        self.learning_starts_at = int(state["learning_starts_at"])

    def resume_state(self) -> dict[str, Any] | None:
        """What a resumed run needs beyond ``state_dict`` (kept out of 'best' checkpoints): the replay buffer."""
        return {"replay": self.replay.state_dict()} if self.cfg.checkpoint_replay else None

    def load_resume_state(self, state: dict[str, Any] | None) -> None:
        if state is None:  # no buffer saved: refill it, starting with a new warm-up
            self.learning_starts_at = max(self.learning_starts_at, self.env_steps + self.warmup)
            if self.learning_starts_at >= self.ctx.total_steps:
                warnings.warn(f"DSAC: this resumed run has no replay buffer (checkpoint_replay was false), so it "
                              f"warms up again for {self.warmup} random steps, up to step {self.learning_starts_at}"
                              f"; the budget ends at {self.ctx.total_steps}, so this session makes no update. Fix: "
                              f"resume with --total_steps above {self.learning_starts_at}.", stacklevel=2)
            return
        self.replay.load_state_dict(state["replay"])
        self.replay.break_episodes()  # the envs were reset: the stored episodes do not continue


def _check_budget(warmup: int, total_steps: int) -> None:
    """Refuse a budget that ends before the first update: such a run acted at random throughout and exited 0."""
    if warmup >= total_steps:
        raise ConfigError(f"DSAC would never update: total_steps ({total_steps}) is not above learning_starts "
                          f"({warmup}), the env steps of random warm-up before the first update. Fix: raise "
                          f"--total_steps above {warmup}, or lower the warm-up (--learning_starts none takes 5% of "
                          f"the budget, here {warmup_steps(None, total_steps)}).")


def _frozen_copy(module: nn.Module) -> nn.Module:
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def _check_spaces(env_name: str, obs_space: gym.Space, action_space: gym.Space) -> None:
    if not isinstance(action_space, gym.spaces.Box):
        raise ConfigError(f"DSAC needs continuous (Box) actions, but env '{env_name}' has {action_space}. "
                          "Use --agent ppo or --agent a2c for discrete actions.")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ConfigError(f"DSAC uses MLPs on flat observations, but env '{env_name}' has {obs_space}. Fix: "
                          "wrap the env with gymnasium.wrappers.FlattenObservation (image observations are "
                          "not supported by this agent).")


def build(cfg: DSACConfig, ctx: BuildContext) -> DSACAgent:
    return DSACAgent(cfg, ctx)


SPEC = AgentSpec("dsac", DSACConfig, build, PRESETS / "dsac.toml",
                 "distributional soft actor-critic (DSAC-T by default; --variant v1)", remote_workers=True)
