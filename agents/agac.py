"""Adversarially Guided Actor-Critic (Flet-Berliac et al., ICLR 2021, arXiv 2102.04376), following the official
code (yfletberliac/adversarially-guided-actor-critic: the TF ``agac/agac.py`` + ``run_minigrid.py``, and the
PyTorch port ``agac_torch/agac/agac_ppo.py``).

An adversary pi_adv learns to imitate the actor; the actor is rewarded for doing what the adversary does not
predict. Three networks, no shared trunk: actor pi, critic V and adversary pi_adv.

Algorithm (one ``train_iteration``; "old" = the networks at collection time):
    1. collect T steps from N envs (rlkit2.collector, or remote workers with --workers), storing log pi_old(a|s),
       log pi_adv_old(a|s) and both distributions' parameters; optionally add the episodic count bonus
       beta / sqrt(n(agent position)) to the rewards used for the actor's returns (MiniGrid presets; off by default);
    2. G_t = GAE(lambda) returns on the rewards with the bonus; G^ext_t = the same on the true rewards;
       A_t = G_t - V_old(s_t) + c (log pi_old(a_t|s_t) - log pi_adv_old(a_t|s_t))
       T_t = G^ext_t + c KL(pi_old || pi_adv_old)(s_t)                      (critic target; no gradient)
    3. epochs x shuffled minibatches, one backward pass on
         L = -E[min(rho A, clip(rho, 1-eps, 1+eps) A)]          (A normalised per minibatch, rho = pi / pi_old)
             - beta_H H[pi]
             + beta_V 0.5 E[max((V - T)^2, (V_clip - T)^2)]      (V_clip = V_old + clip(V - V_old, +-eps))
             + beta_adv E[KL(sg[pi_old] || pi_adv)]
       two Adam optimizers (eps 1e-5): actor+critic at lr, the adversary at adversary_lr_scale * lr; gradient
       norms clipped per group;
    4. c decays linearly: c = c0 (1 - (u - 1) / U) at iteration u, with U iterations in ``agac_c_decay_steps``
       (official MiniGrid: 2e8 steps, so at a few million steps c stays ~c0).

Where the official code deviates from the paper, and what we follow:
  - The count bonus (TF MiniGrid runner) is not part of the paper's method; it is an option here (``count_bonus``,
    0 by default, 0.1 in the MiniGrid preset, as ``run_minigrid.py``). Like the official runner it counts the
    agent's (x, y) position in one table per rollout, all envs pooled (``count_reset = "rollout"``; "episode"
    keeps a table per env that lives across rollouts until that env's episode ends). The TF runner writes 0.1 / sqrt(n), but stores it with
    ``np.asarray(mb_state_count, dtype=self.obs.dtype)``, and MiniGrid's image observations are uint8: 1/sqrt(1)
    becomes 1 and every later visit 0. So what it trains on is 0.1 on a position's first visit per rollout;
    the PyTorch port writes that explicitly (``np.floor(1 / np.sqrt(state_counts))``). We follow the code
    (``count_form = "first_visit"``). ``"inverse_sqrt"`` is the formula as written and what our first benchmark
    runs used: a dense bonus, under random actions (8 envs x 256 steps, pooled) 26 per rollout against 1.1 on
    KeyCorridorS3R2 and 75 against 11 on MultiRoom-N2-S4.
    The bonus enters only the actor's advantage; the critic learns the true rewards + c KL. The scale matters:
    a positive per-step bonus can outweigh a one-off goal reward, and the agent learns to wander. On
    MiniGrid-Empty-5x5 (seed 0, 40k steps, 8 envs x 256 steps, the dense form) per-env tables (8x fewer counts
    each, a larger bonus) took the sampled evaluation from 0.9 down to 0.14; the pooled table kept it at 0.95.
  - The official MiniGrid run decays c linearly over its 2e8-step budget, so c is ~c0 for the first few
    million steps. ``agac_c_decay_steps`` defaults to that horizon (c after 2M steps: 0.99 c0); 0 decays over
    the run's own budget instead (c0/2 on average).
Where we depart from the official code (each an option or a measured choice):
  - Time limits: the official runner (baselines-style ``dones``) treats MiniGrid's max_steps truncation as a
    terminal state; we bootstrap truncated episodes from V(final obs) (``timeout_handling = "bootstrap"``;
    "terminate" reproduces the official targets).
  - Observations: the official TF policy divides the uint8 observations by 255 and stacks 4 frames; our MiniGrid
    CNN takes the raw 7x7x3 grid codes (small integers) of one frame, the same for AGAC and PPO.
  - Batch: 8 envs x 256 steps with the count table pooled over the envs, where the official runner steps one env
    for 2048 steps (same batch and count scale, rollouts 8x shorter in time).
  - The paper states the advantage with the c-weighted log-ratio added to the *return*; the code adds it to the
    advantage per step (identical, as here).
  - The PyTorch port builds the adversary's optimizer with the actor's lr (its ``adversary_learning_rate`` is
    unused) and reads the old policy's std from the adversary's parameters in the Gaussian branch; we follow the
    TF code (lr x 0.3) and use the actor's own std.
What we measured (docs/benchmarks.md, 2M steps, the MiniGrid preset, c decaying over each run's budget): with the
  first-visit bonus AGAC solves MultiRoom-N4-S5 on 3 seeds of 3 by 0.1-0.2M steps, where PPO never reaches the
  goal; AGAC with c = 0 (the bonus alone) solves it as fast, and so does AGAC with c over the official 2e8 steps
  (c ~ c0 throughout; 3 seeds at 500k), so there the bonus does the exploring. AGAC solves KeyCorridorS3R2 on 3 seeds
  of 3 (success 0.5 at 0.5-0.9M steps; PPO 0.3-0.7M) and MultiRoom-N2-S4 by 0.1M, as PPO does; neither solves
  KeyCorridorS3R3 in 2M steps. Its policy entropy still falls early (0.1-0.5 from
  ~100k steps, PPO ~1.6 until the goal), with KL(pi || pi_adv) at 0.25-1.1 (beta_adv = 4e-5 leaves the
  adversary lagging), yet the goal is found. The earlier runs with the dense 1/sqrt(n) bonus never solved
  KeyCorridorS3R2; their ablations (``adversary_coef``, ``normalize_advantages``, c = 0) are recorded there.
  With c = 0 and no bonus the update is PPO's exactly (tests/agents/test_agac.py). The defaults stay official.
Continuous actions use Gaussian policies (state-independent log-std) with the KL in closed form; the env gets
the sample clipped to [-1, 1] and rescaled to the action bounds.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlkit2.agent import ActingModule, AgentSpec, BuildContext, NonFiniteLossError, action_bounds
from rlkit2.collector import PolicyStep, Rollout
from rlkit2.config import ConfigError, check_ranges
from rlkit2.device import set_threads
from rlkit2.distributions import Categorical, DiagGaussian
from rlkit2.networks import image_torso, mlp
from rlkit2.normalizers import ObservationNormalizer
from rlkit2.remote import make_on_policy_collector
from rlkit2.returns import gae, next_values_from
from rlkit2.update_step import MinibatchUpdate, ParamGroup

PRESETS = Path(__file__).parent / "presets"
MINIBATCH_KEYS = ("obs", "actions", "logprobs", "values", "advantages", "targets", "pi_old")


@dataclass
class AGACConfig:
    agac_c: float = 4e-4
    """c0: weight of the log-ratio bonus in the advantage and of the KL in the critic target (official MiniGrid: 4e-4)."""
    agac_c_decay: Literal["linear", "none"] = "linear"
    """Decay c linearly to 0 over ``agac_c_decay_steps`` (official) or keep it constant."""
    agac_c_decay_steps: int = 200_000_000
    """Env steps over which c decays linearly to 0 (official MiniGrid: its 2e8-step budget); 0 = the run's
    total_steps."""
    adversary_coef: float = 4e-5
    """beta_adv: weight of the adversary's KL loss (official MiniGrid: 4e-5)."""
    adversary_lr_scale: float = 0.3
    """The adversary's Adam lr is this times ``lr`` (official TF code: 0.3)."""
    count_bonus: float = 0.0
    """Episodic count bonus beta / sqrt(n(agent position)) added to the actor's rewards; 0 = off. Needs an env that
    reports info['agent_pos'] (MiniGrid does). Official MiniGrid: 0.1."""
    count_form: Literal["first_visit", "inverse_sqrt"] = "first_visit"
    """'first_visit': beta on a position's first visit in the table, 0 after (what the official code computes,
    see the module docstring); 'inverse_sqrt': beta / sqrt(n), the formula as written."""
    count_reset: Literal["rollout", "episode"] = "rollout"
    """'rollout': one count table per rollout, all envs pooled (the official single-env runner's scale);
    'episode': a table per env, kept across rollouts and cleared when that env's episode ends."""
    clip_eps: float = 0.2
    """PPO clip range of the ratio; also the value clip range (official: both 0.2)."""
    entropy_coef: float = 0.01
    """beta_H."""
    value_coef: float = 0.5
    """beta_V."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    lr: float = 3e-4
    """Adam learning rate of actor and critic (official MiniGrid: 3e-4, constant)."""
    adam_eps: float = 1e-5
    """Adam epsilon (official: 1e-5)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip, applied to actor+critic and to the adversary separately (official: 0.5)."""
    num_steps: int = 256
    """Steps per env per rollout (x num_envs = batch; official: 1 env x 2048)."""
    epochs: int = 4
    """Passes over each rollout (official: 4)."""
    minibatch_size: int = 256
    """Transitions per minibatch (official: 256)."""
    hidden: tuple[int, ...] = (64, 64)
    """MLP torso widths for vector observations (image observations use a CNN, rlkit2.networks.image_torso)."""
    activation: Literal["tanh", "relu", "elu", "gelu", "silu", "leaky_relu"] = "tanh"
    """MLP activation."""
    adversary_hidden: int = 128
    """Width of the adversary's extra hidden layer on its torso (official: FC 128 ELU)."""
    compile_loss: bool = False
    """torch.compile the whole minibatch step (forward, losses, backward, both gradient clips and both Adam steps)
    as one graph, as PPO's option of the same name (rlkit2/update_step.py). Same math to float rounding; a
    one-off compile at the first update. If compiling fails, the run warns and continues uncompiled."""
    normalize_advantages: bool = True
    """Normalize the advantages (the AGAC term included) to zero mean and unit std per minibatch (the paper and
    official code). Off: the ablation of what the normalization does to the log-ratio bonus before any reward."""
    normalize_obs: bool = False
    """Running mean/std observation normalization (vector observations only)."""
    timeout_handling: Literal["bootstrap", "terminate"] = "bootstrap"
    """Bootstrap truncated episodes from V(final obs) (correct) or treat truncation as terminal."""

    def validate(self) -> None:
        check_ranges(self, positive=("clip_eps", "lr", "adam_eps", "num_steps", "epochs", "minibatch_size",
                                     "adversary_lr_scale", "adversary_hidden"),
                     non_negative=("agac_c", "adversary_coef", "count_bonus", "entropy_coef", "value_coef",
                                   "max_grad_norm", "agac_c_decay_steps"),
                     unit_interval=("gamma", "gae_lambda"))


# ------------------------------------------------------------------------------------- the AGAC quantities
def kl_categorical(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p || q) per row for logits [..., A]."""
    log_p, log_q = F.log_softmax(logits_p, -1), F.log_softmax(logits_q, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def kl_gaussian(mean_p: Tensor, std_p: Tensor, mean_q: Tensor, std_q: Tensor) -> Tensor:
    """KL(N(mean_p, std_p) || N(mean_q, std_q)) summed over the action dims, in closed form."""
    return (torch.log(std_q / std_p) + (std_p.square() + (mean_p - mean_q).square()) / (2 * std_q.square())
            - 0.5).sum(-1)


def agac_advantage(returns: Tensor, values_old: Tensor, logprob_old: Tensor, adv_logprob_old: Tensor,
                   c: float) -> Tensor:
    """A_t = G_t - V_old(s_t) + c (log pi_old(a_t|s_t) - log pi_adv_old(a_t|s_t)) (before normalisation)."""
    return returns - values_old + c * (logprob_old - adv_logprob_old)


def critic_target(true_returns: Tensor, kl_old: Tensor, c: float) -> Tensor:
    """T_t = G^ext_t + c KL(pi_old || pi_adv_old)(s_t), with no gradient through the KL."""
    return true_returns + c * kl_old.detach()


def clipped_value_loss(values: Tensor, values_old: Tensor, targets: Tensor, clip: float) -> Tensor:
    """0.5 E[max((V - T)^2, (V_old + clip(V - V_old, +-clip) - T)^2)]."""
    clipped = values_old + (values - values_old).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - targets).square(), (clipped - targets).square()).mean()


def episodic_count_bonus(positions: np.ndarray, episode_end: np.ndarray, beta: float, reset: str,
                         form: str = "first_visit", episode_tables: list[dict] | None = None) -> np.ndarray:
    """The count bonus per step for the positions [T, N, 2] of obs t: beta on a position's first visit and 0 after
    (form='first_visit'), or beta / sqrt(n) with n = visits so far (form='inverse_sqrt').

    reset='rollout': one count table for the whole rollout, all envs pooled in time order -- the official runner
    has one env and counts its 2048 steps (several episodes) in one table, so pooling N envs x T steps keeps the
    bonus on the same scale. reset='episode': a table per env, cleared after each of its episode ends; pass the
    agent's ``episode_tables`` (one dict per env, updated in place) so that an episode's counts carry over from
    one rollout into the next."""
    T, N = positions.shape[:2]
    bonus = np.zeros((T, N), np.float32)
    pooled: dict[tuple, int] = {}
    per_env = episode_tables if episode_tables is not None else [{} for _ in range(N)]
    for t in range(T):
        for n in range(N):
            counts = pooled if reset == "rollout" else per_env[n]
            key = tuple(positions[t, n].tolist())
            counts[key] = counts.get(key, 0) + 1
            if form == "inverse_sqrt":
                bonus[t, n] = beta / math.sqrt(counts[key])
            else:
                bonus[t, n] = beta if counts[key] == 1 else 0.0
            if reset == "episode" and episode_end[t, n]:
                per_env[n].clear()
    return bonus


# -------------------------------------------------------------------------------------------- the networks
class AGACNetworks(nn.Module):
    """Actor, critic and adversary, each with its own torso (CNN for uint8 images, else MLP)."""

    def __init__(self, cfg: AGACConfig, obs_space: gym.spaces.Box, action_space: gym.Space):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        act_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        image = len(obs_space.shape) == 3 and obs_space.dtype == np.uint8

        def torso() -> tuple[nn.Module, int]:
            if image:
                cnn = image_torso(obs_space.shape)
                return cnn, cnn.out_dim
            in_dim = int(np.prod(obs_space.shape))
            return nn.Sequential(nn.Flatten(), mlp(in_dim, cfg.hidden, None, cfg.activation)), \
                (cfg.hidden[-1] if cfg.hidden else in_dim)

        actor_torso, dim = torso()
        self.actor = nn.Sequential(actor_torso, mlp(dim, (), act_dim, out_scale=0.01))
        critic_torso, dim = torso()
        self.critic = nn.Sequential(critic_torso, mlp(dim, (), 1, out_scale=1.0))
        adversary_torso, dim = torso()
        self.adversary = nn.Sequential(adversary_torso, mlp(dim, (cfg.adversary_hidden,), act_dim, act="elu",
                                                             out_scale=0.01))
        if not self.discrete:  # state-independent log-stds, starting at std 1
            self.actor_log_std = nn.Parameter(torch.zeros(act_dim))
            self.adversary_log_std = nn.Parameter(torch.zeros(act_dim))

    def params(self, out: Tensor, who: str) -> Tensor:
        """Distribution parameters as one tensor: logits ``[B, A]``, or mean and std side by side, ``[B, 2A]``."""
        if self.discrete:
            return out
        log_std = self.actor_log_std if who == "actor" else self.adversary_log_std
        return torch.cat([out, log_std.exp().expand_as(out)], -1)

    def dist(self, params: Tensor) -> Categorical | DiagGaussian:
        if self.discrete:
            return Categorical(params)
        mean, std = params.chunk(2, -1)
        return DiagGaussian(mean, std)

    def kl(self, params_p: Tensor, params_q: Tensor) -> Tensor:
        if self.discrete:
            return kl_categorical(params_p, params_q)
        return kl_gaussian(*params_p.chunk(2, -1), *params_q.chunk(2, -1))

    def actor_params(self, obs: Tensor) -> Tensor:
        return self.params(self.actor(obs), "actor")

    def adversary_params(self, obs: Tensor) -> Tensor:
        return self.params(self.adversary(obs), "adversary")

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(obs).squeeze(-1)


class AGACAgent:
    def __init__(self, cfg: AGACConfig, ctx: BuildContext):
        cfg.validate()
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        env = ctx.env
        obs_space, action_space = env.single_observation_space, env.single_action_space
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError(f"Env '{env.name}': observation space {obs_space} is not a Box; wrap the env to "
                              "produce arrays (e.g. gymnasium.wrappers.FlattenObservation, or MiniGrid's image)")
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ConfigError(f"Env '{env.name}': AGAC supports Discrete and Box actions, not {action_space}")
        if isinstance(action_space, gym.spaces.Box):
            self.action_low, self.action_high = action_bounds(env.name, action_space, self.device)
        self.image_obs = obs_space.dtype == np.uint8 and len(obs_space.shape) == 3
        self.nets = AGACNetworks(cfg, obs_space, action_space).to(self.device)
        self.obs_normalizer = ObservationNormalizer(obs_space.shape, enabled=cfg.normalize_obs and not self.image_obs
                                                    ).to(self.device)
        # actor + critic in one optimizer at lr; the adversary in its own at a lower lr (official TF code)
        self.main_params = [p for name, p in self.nets.named_parameters() if not name.startswith("adversary")]
        self.adversary_params = [p for name, p in self.nets.named_parameters() if name.startswith("adversary")]
        self.optimizer = torch.optim.Adam(self.main_params, lr=cfg.lr, eps=cfg.adam_eps)
        self.adversary_optimizer = torch.optim.Adam(self.adversary_params, lr=cfg.lr * cfg.adversary_lr_scale,
                                                    eps=cfg.adam_eps)
        self._update = MinibatchUpdate(
            self.nets, self._loss_and_stats,
            [ParamGroup(self.main_params, self.optimizer, cfg.max_grad_norm),
             ParamGroup(self.adversary_params, self.adversary_optimizer, cfg.max_grad_norm)],
            compile_note=("compiling the update step with torch.compile (about 10-60 s on a CPU, once per run; "
                          "--compile_loss false to skip)") if cfg.compile_loss else None)
        info_keys = ("agent_pos",) if cfg.count_bonus > 0 else ()
        # in-process, or remote workers when ctx.env is a WorkerGroup (--workers)
        self.collector = make_on_policy_collector(env, cfg.num_steps, self.device, info_keys=info_keys,
                                                  bootstrap_truncation=cfg.timeout_handling == "bootstrap")
        self.batch_size = cfg.num_steps * env.num_envs
        # the run's budget rounds up to whole iterations (the run loop says so when it does)
        self.budget_unit = (self.batch_size, f"one iteration: num_envs {env.num_envs} x num_steps {cfg.num_steps}")
        self.decay_iterations = max(1, (cfg.agac_c_decay_steps or ctx.total_steps) // self.batch_size)
        self.episode_counts: list[dict[tuple, int]] = [{} for _ in range(env.num_envs)]  # count_reset="episode"
        self.env_steps = 0
        self.iterations = 0
        if ctx.training:
            if cfg.minibatch_size > self.batch_size:
                raise ConfigError(f"Option 'minibatch_size' ({cfg.minibatch_size}) is larger than the batch "
                                  f"num_steps * num_envs = {self.batch_size}")
            self.collector.reset(seed=ctx.seed)

    # --- acting -------------------------------------------------------------------------------------------
    def preprocess(self, obs: Tensor, update_stats: bool) -> Tensor:
        if self.image_obs:
            return obs
        obs = obs.float()
        if update_stats:
            self.obs_normalizer.update(obs)
        return self.obs_normalizer(obs)

    def step(self, obs: Tensor) -> PolicyStep:
        pi_params, adv_params = self.nets.actor_params(obs), self.nets.adversary_params(obs)
        pi = self.nets.dist(pi_params)
        action = pi.sample()
        return PolicyStep(self.to_env_action(action), action, pi.log_prob(action),
                          self.nets.value(obs),
                          {"pi_params": pi_params, "adv_params": adv_params,
                           "adv_logprob": self.nets.dist(adv_params).log_prob(action)})

    def value(self, obs: Tensor) -> Tensor:
        return self.nets.value(obs)

    def to_env_action(self, action: Tensor) -> Tensor:
        if self.nets.discrete:
            return action
        return self.action_low + (action.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.action_high - self.action_low)

    @torch.inference_mode()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return self.policy_action(obs.to(self.device), deterministic)

    def policy_action(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """Raw observations -> env actions; with ``deterministic`` also the exported policy (``export_module``)."""
        dist = self.nets.dist(self.nets.actor_params(self.preprocess(obs, update_stats=False)))
        return self.to_env_action(dist.mode() if deterministic else dist.sample())

    def export_module(self) -> ActingModule:
        """The actor's deterministic policy, normalisation to rescaling, as one module (rlkit2/export.py)."""
        return ActingModule(functools.partial(self.policy_action, deterministic=True),
                            {"obs_normalizer": self.obs_normalizer, "nets": self.nets})

    def acting_modules(self) -> dict[str, nn.Module]:
        """What a remote worker's acting copy needs (rlkit2/remote.py); the adversary too: it fills the extras."""
        return {"nets": self.nets, "obs_normalizer": self.obs_normalizer}

    def current_c(self) -> float:
        """c at this iteration: c0 (1 - (u - 1) / U) for iteration u = 1..U, U = the iterations in
        ``agac_c_decay_steps`` (official), or c0."""
        if self.cfg.agac_c_decay == "none":
            return self.cfg.agac_c
        return self.cfg.agac_c * max(0.0, 1.0 - self.iterations / self.decay_iterations)

    # --- one iteration ------------------------------------------------------------------------------------
    def train_iteration(self) -> dict[str, float]:
        c = self.current_c()
        set_threads(self.ctx.threads_collect)
        self.nets.eval()
        rollout = self.collector.collect(self)
        self.env_steps += self.batch_size
        timing = self.collector.pop_timing()

        start = time.perf_counter()
        set_threads(self.ctx.threads_update)
        self.nets.train()
        stats = self.update(rollout, c)
        timing["update"] = time.perf_counter() - start
        self.iterations += 1

        returns, lengths = self.collector.episodes.pop()
        if returns:
            stats["charts/episode_return"] = float(np.mean(returns))
            stats["charts/episode_length"] = float(np.mean(lengths))
        stats["charts/agac_c"] = c
        stats.update({f"time/{k}": v for k, v in timing.items()})
        stats.update(self.collector.pop_stats())
        return stats

    def returns(self, rollout: Rollout, rewards: Tensor, next_values: Tensor) -> Tensor:
        """GAE(lambda) returns (advantage + V_old) on the given rewards, truncation bootstrapped."""
        advantages = gae(rewards, rollout.values, next_values, rollout.terminated, rollout.episode_end,
                         self.cfg.gamma, self.cfg.gae_lambda)
        return advantages + rollout.values

    def update(self, rollout: Rollout, c: float) -> dict[str, float]:
        cfg = self.cfg
        next_values = next_values_from(rollout.values, rollout.last_value, rollout.truncated, rollout.final_values)
        true_returns = self.returns(rollout, rollout.rewards, next_values)
        returns = true_returns
        if cfg.count_bonus > 0:
            bonus = episodic_count_bonus(rollout.infos["agent_pos"], rollout.episode_end.cpu().numpy(),
                                         cfg.count_bonus, cfg.count_reset, cfg.count_form, self.episode_counts)
            returns = self.returns(rollout, rollout.rewards + torch.as_tensor(bonus, device=self.device), next_values)
        pi_old, adv_old = rollout.extras["pi_params"], rollout.extras["adv_params"]
        with torch.no_grad():
            kl_old = self.nets.kl(pi_old, adv_old)
        advantages = agac_advantage(returns, rollout.values, rollout.logprobs, rollout.extras["adv_logprob"], c)
        targets = critic_target(true_returns, kl_old, c)

        flat = {"obs": rollout.obs, "actions": rollout.actions, "logprobs": rollout.logprobs,
                "values": rollout.values, "advantages": advantages, "targets": targets, "pi_old": pi_old}
        flat = {k: v.reshape(self.batch_size, *v.shape[2:]) for k, v in flat.items()}
        # policy, value, adversary, entropy, approx_kl, clipfrac, grad norms (main, adversary): summed on the device
        sums = torch.zeros(8, device=self.device)
        starts = range(0, self.batch_size - cfg.minibatch_size + 1, cfg.minibatch_size)
        self._update.prepare()
        for _ in range(cfg.epochs):
            # one gather per tensor per epoch, then contiguous slices (views) per minibatch
            order = torch.randperm(self.batch_size, device=self.device)
            epoch = [flat[k][order] for k in MINIBATCH_KEYS]
            for begin in starts:
                self._update(sums, *(v[begin:begin + cfg.minibatch_size] for v in epoch))
        means = (sums / max(cfg.epochs * len(starts), 1)).tolist()
        if not all(math.isfinite(v) for v in means):
            raise NonFiniteLossError(f"An AGAC loss became NaN/inf at iteration {self.iterations}.")
        return {"loss/policy": means[0], "loss/value": means[1], "loss/adversary": means[2],
                "policy/entropy": means[3], "policy/approx_kl": means[4], "policy/clip_fraction": means[5],
                "agac/kl_pi_adv": float(kl_old.mean()), "agac/advantage_bonus": float(c * (
                    rollout.logprobs - rollout.extras["adv_logprob"]).mean())}

    def _minibatch_step(self, mb: dict[str, Tensor]) -> Tensor:
        """One step on one minibatch (a dict of MINIBATCH_KEYS); its statistics as ``update`` sums them."""
        sums = torch.zeros(8, device=self.device)
        self._update.prepare()
        self._update(sums, *(mb[k] for k in MINIBATCH_KEYS))
        return sums

    def _loss_and_stats(self, obs: Tensor, actions: Tensor, logprobs: Tensor, values: Tensor, advantages: Tensor,
                        targets: Tensor, pi_old: Tensor) -> tuple[Tensor, Tensor]:
        cfg, nets = self.cfg, self.nets
        if cfg.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        dist = nets.dist(nets.actor_params(obs))
        log_ratio = dist.log_prob(actions) - logprobs
        ratio = log_ratio.clamp(max=20.0).exp()
        policy_loss = -torch.min(ratio * advantages, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * advantages).mean()
        entropy = dist.entropy().mean()
        value_loss = clipped_value_loss(nets.value(obs), values, targets, cfg.clip_eps)
        adversary_loss = nets.kl(pi_old, nets.adversary_params(obs)).mean()
        loss = (policy_loss - cfg.entropy_coef * entropy + cfg.value_coef * value_loss
                + cfg.adversary_coef * adversary_loss)
        ratio, log_ratio = ratio.detach(), log_ratio.detach()
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clip_fraction = ((ratio - 1).abs() > cfg.clip_eps).float().mean()
        return loss, torch.stack([policy_loss, value_loss, adversary_loss, entropy, approx_kl, clip_fraction]).detach()

    # --- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "optimizer": self.optimizer.state_dict(),
                "adversary_optimizer": self.adversary_optimizer.state_dict(),
                "obs_normalizer": self.obs_normalizer.state_dict(), "env_steps": self.env_steps,
                "iterations": self.iterations,
                # count_reset="episode": the running episodes' tables, as [x, y, n] rows per env
                "episode_counts": [[[*key, n] for key, n in table.items()] for table in self.episode_counts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.adversary_optimizer.load_state_dict(state["adversary_optimizer"])
        self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        self.env_steps, self.iterations = int(state["env_steps"]), int(state["iterations"])
        if "episode_counts" in state:  # checkpoints from before it was saved resume with empty tables
            self.episode_counts = [{tuple(row[:-1]): int(row[-1]) for row in table}
                                   for table in state["episode_counts"]]


def build(cfg: AGACConfig, ctx: BuildContext) -> AGACAgent:
    return AGACAgent(cfg, ctx)


SPEC = AgentSpec("agac", AGACConfig, build, PRESETS / "agac.toml",
                 "adversarially guided actor-critic (PPO-based; MiniGrid presets with the count bonus)",
                 remote_workers=True)
