"""On-policy actor-critic: PPO and A2C, with the design choices of Andrychowicz et al. (2021), "What Matters
for On-Policy Deep Actor-Critic Methods? A Large-Scale Study" (arXiv 2006.05990), as documented options.

Algorithm (one ``train_iteration``):
    1. collect T steps from N envs with one batched forward per step (rlkit2.collector; with --workers, remote
       workers each collect their share of the envs: rlkit2.remote);
       truncated episodes store V(final_obs) for bootstrapping -- a time limit is not a terminal;
    2. for each epoch:
         (re)compute advantages with GAE(lambda) or N-step returns on the current value function;
         split the T*N transitions into minibatches (shuffled transitions / trajectories);
         for each minibatch:
             L_pi = -E[min(r A, clip(r, 1-eps, 1+eps) A)]   (PPO)   or   -E[log pi(a|s) A]   (PG = A2C)
             L_V  = MSE / Huber(V, target), optionally PPO-clipped around the old value
             L    = L_pi + c_V L_V - c_H H[pi];   one optimizer step with gradient-norm clipping;
    3. decay the learning rate linearly with env steps (optional).

Presets (agents/presets/*.toml): ``ppo`` = the study's recommendations for MuJoCo (with Atari and classic-control
sections), ``a2c`` = synchronous A2C (Mnih et al. 2016) with SB3's A2C defaults and TF-style RMSprop, i.e.
openai/baselines' A2C optimizer (the value weight converted to our 1/2 MSE: ``value_coef``). Every field below can be overridden
from the command line: ``rlkit2 train --agent ppo --env Hopper-v5 --gae_lambda 0.95``.
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
from rlkit2.config import ConfigError
from rlkit2.device import check_bf16, set_threads
from rlkit2.distributions import Categorical, DiagGaussian, TanhGaussian, std_from_param
from rlkit2.networks import NatureCNN, image_torso, mlp
from rlkit2.normalizers import ObservationNormalizer, ValueNormalizer
from rlkit2.optim import RMSpropTF
from rlkit2.remote import make_on_policy_collector
from rlkit2.returns import gae, n_step_returns, next_values_from
from rlkit2.update_step import MinibatchUpdate, ParamGroup

PRESETS = Path(__file__).parent / "presets"
COMPILE_NOTE = ("compiling the update step with torch.compile (about 10-60 s on a CPU, once per run; --compile_loss "
                "false to skip, --rl.compile_loss false with --agent pref)")
# What each minibatch step adds up (rlkit2.update_step): the loss function's statistics, then the gradient norm.
# approx_kl and clipfrac are reported for the last epoch, the others averaged over all minibatches.
STATS = ("losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
         "losses/grad_norm")
LAST_EPOCH_STATS = ("losses/approx_kl", "losses/clipfrac")


@dataclass
class OnPolicyConfig:
    # --- policy loss --------------------------------------------------------------------------------------
    policy_loss: Literal["ppo", "pg"] = "ppo"
    """'ppo': clipped surrogate objective; 'pg': vanilla policy gradient (with epochs=1 this is A2C)."""
    clip_eps: float = 0.25
    """PPO clipping epsilon (study: start at 0.25)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (study: regularizers did not help on MuJoCo; Atari uses 0.01)."""
    # --- advantages ----------------------------------------------------------------------------------------
    advantage_estimator: Literal["gae", "nstep"] = "gae"
    """'gae' (Schulman et al. 2016) or 'nstep' bootstrapped returns minus V."""
    gamma: float = 0.99
    """Discount (study: among the most important settings; tune per task from 0.99)."""
    gae_lambda: float = 0.9
    """GAE lambda (study: 0.9)."""
    n_step: int = 0
    """N for the nstep estimator; 0 = up to the end of the rollout (A2C's estimator)."""
    timeout_handling: Literal["bootstrap", "terminate"] = "bootstrap"
    """'bootstrap': a truncated episode bootstraps from V(final obs) (correct); 'terminate': treat time limits
    as terminal (what many implementations do; kept for the ablation)."""
    # --- value loss ----------------------------------------------------------------------------------------
    value_loss: Literal["mse", "huber"] = "mse"
    """Value regression loss (study: MSE; Huber did not help)."""
    huber_delta: float = 1.0
    """Huber loss threshold."""
    value_clip: float = 0.0
    """PPO-style value clipping range around the old prediction; 0 = off (study: off)."""
    value_coef: float = 0.5
    """Weight of the value loss in the total loss. The value loss here is 1/2 (V - target)^2 (as in baselines'
    PPO2 and CleanRL), so a weight c here is c/2 in libraries whose value loss is the plain MSE (SB3's PPO and
    A2C, baselines' A2C, seed_rl): SB3's vf_coef 0.5 is value_coef 1.0 here."""
    # --- networks ------------------------------------------------------------------------------------------
    shared_network: bool = False
    """One torso for policy and value (study: separate networks won on 4 of 5 tasks)."""
    torso: Literal["auto", "mlp", "cnn"] = "auto"
    """Observation torso: auto = CNN for uint8 images (Nature-CNN for Atari frames, a grid CNN for MiniGrid), else MLP."""
    policy_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the policy MLP (and of the shared torso)."""
    value_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the value MLP (study: a wide value net helps, e.g. 256,256)."""
    activation: Literal["tanh", "relu", "elu", "gelu", "silu", "leaky_relu"] = "tanh"
    """Hidden activation (study: tanh best, ReLU worst)."""
    initializer: Literal["orthogonal", "xavier_uniform", "lecun_normal", "torch_default"] = "orthogonal"
    """Weight initializer (orthogonal: gain sqrt 2 for hidden layers)."""
    policy_last_layer_scale: float = 0.01
    """Scale of the policy output layer's init (study: 100x smaller, +66% on Humanoid)."""
    value_last_layer_scale: float = 1.0
    """Scale of the value output layer's init."""
    # --- continuous actions --------------------------------------------------------------------------------
    std_transform: Literal["softplus", "exp"] = "softplus"
    """How the std parameter maps to a std (study: softplus)."""
    init_std: float = 0.5
    """Initial action std, in the [-1, 1] action scale (study: ~0.5)."""
    min_std: float = 0.0
    """Lower bound added to the std (the study preset: seed_rl's 1e-3; the final stds of its 1M-step MuJoCo runs
    were 0.12-0.17, so the floor never bound there)."""
    state_dependent_std: bool = False
    """Std as a network output instead of a free parameter (study: no gain)."""
    action_handling: Literal["clip", "tanh"] = "clip"
    """Map Gaussian samples to the action bounds by clipping or by tanh squashing. The study recommends tanh; the
    preset clips, a measured choice: at 1M steps clipping ended ahead on HalfCheetah and far ahead on Hopper
    (docs/benchmarks.md, "Clipping vs tanh squashing")."""
    # --- normalization and clipping ------------------------------------------------------------------------
    normalize_obs: bool = True
    """Running mean/std observation normalization (study: always; crucial except Hopper)."""
    obs_clip: float = 10.0
    """Clip normalized observations to +-obs_clip (0 = no clip)."""
    normalize_value: bool = False
    """Train the value head on normalized targets (study: crucial on HalfCheetah/Humanoid, harmful on Walker2d)."""
    normalize_advantages: bool = True
    """Normalize advantages per minibatch."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip; 0 = off."""
    # --- optimizer -----------------------------------------------------------------------------------------
    optimizer: Literal["adam", "rmsprop", "rmsprop_tf"] = "adam"
    """Optimizer (study: Adam). 'rmsprop' is torch's RMSprop; 'rmsprop_tf' is TensorFlow's (square average
    starting at 1, eps inside the square root: rlkit2.optim.RMSpropTF), which baselines' A2C used and SB3 ships as
    RMSpropTFLike."""
    lr: float = 3e-4
    """Learning rate (study: 3e-4 is a safe default)."""
    lr_decay: Literal["linear", "none"] = "linear"
    """Decay the learning rate linearly to 0 over the run's total_steps."""
    adam_beta1: float = 0.9
    """Adam beta1 (study: 0.9)."""
    adam_eps: float = 1e-5
    """Adam epsilon."""
    rmsprop_alpha: float = 0.99
    """RMSprop smoothing constant."""
    rmsprop_eps: float = 1e-5
    """RMSprop epsilon."""
    rmsprop_momentum: float = 0.0
    """RMSprop momentum."""
    rmsprop_centered: bool = False
    """Centered RMSprop."""
    # --- data per iteration --------------------------------------------------------------------------------
    num_steps: int = 256
    """Steps per env per iteration (transitions per iteration = num_steps * num_envs)."""
    epochs: int = 10
    """Passes over each batch."""
    minibatch_size: int = 64
    """Transitions per minibatch; 0 = the whole batch."""
    batch_mode: Literal["shuffle_transitions", "shuffle_trajectories", "fixed_trajectories"] = "shuffle_transitions"
    """How minibatches are formed (study: shuffled transitions). Trajectory modes keep each env's T-step segment
    together."""
    recompute_advantages: bool = True
    """Recompute advantages with the current value net at the start of each epoch (study: helps)."""
    # --- execution -----------------------------------------------------------------------------------------
    cnn_precision: Literal["fp32", "bf16"] = "fp32"
    """Precision of the CNN torso's compute: 'bf16' runs it under bfloat16 autocast when acting and when
    updating alike, so a fresh policy's ratio to the one that acted starts at 1 (to rounding). Weights, heads,
    log-probs, losses and the optimizer stay fp32. PPO on Pong ran 1.75-1.9x faster on a CPU with AVX512-BF16 and
    10x slower on one without native bf16 (AVX2 only), so it is refused on a CPU without AVX512-BF16 / AMX-BF16 or a
    GPU without bf16 (RLKIT2_ALLOW_SLOW_BF16=1 overrides; docs/benchmarks.md, "PPO on Atari: CNN precision"); not
    yet measured on a GPU. CNN torsos only."""
    compile_loss: bool = False
    """torch.compile the whole minibatch step -- forward pass, loss, backward, gradient clipping and the
    optimizer step -- as one graph (rlkit2/update_step.py; the name predates the optimizer's part). Same math to
    float rounding; with small networks on CPU the update is per-op overhead, which this removes (docs/benchmarks.md,
    Throughput), after a one-off compile of ~10-40 s at the first update. Needs a C++ compiler; if compiling
    fails, the run warns and continues uncompiled. torch keeps at most 8 compiled variants of the step per process
    (recompile_limit), so a sweep over many configs inside one process runs the later ones uncompiled."""

    def validate(self) -> None:
        positive = ("num_steps", "epochs", "lr", "gamma")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"Option '{name}' must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ConfigError(f"Option 'gae_lambda' must be in [0, 1], got {self.gae_lambda}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"Option 'gamma' must be in (0, 1], got {self.gamma}")
        if self.init_std <= self.min_std:
            raise ConfigError(f"Option 'init_std' ({self.init_std}) must be larger than 'min_std' ({self.min_std})")
        for name in ("minibatch_size", "clip_eps", "max_grad_norm", "value_clip", "n_step", "obs_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"Option '{name}' must be >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------
def _drop_second_torso_name(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints from before the shared torso was registered once also carry it as ``value_torso.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "value_torso.")]:
        del state_dict[key]


class ActorCritic(nn.Module):
    """Policy and value function; separate torsos or one shared torso, MLP or CNN (Nature / grid)."""

    def __init__(self, cfg: OnPolicyConfig, obs_space: gym.spaces.Box, action_space: gym.Space):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        act_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        image = len(obs_space.shape) == 3 and obs_space.dtype == np.uint8
        use_cnn = cfg.torso == "cnn" or (cfg.torso == "auto" and image)
        self.cfg = cfg

        def torso(hidden: tuple[int, ...]) -> tuple[nn.Module, int]:
            if use_cnn:  # Nature-CNN for Atari frames, a small grid CNN for MiniGrid (rlkit2.networks)
                cnn = image_torso(obs_space.shape, cfg.initializer, cfg.cnn_precision)
                return cnn, cnn.out_dim
            in_dim = int(np.prod(obs_space.shape))
            return nn.Sequential(nn.Flatten(), mlp(in_dim, hidden, None, cfg.activation, cfg.initializer)), \
                (hidden[-1] if hidden else in_dim)

        self.policy_torso, policy_dim = torso(cfg.policy_hidden)
        if cfg.shared_network:
            # The one torso, registered once: a module registered under two names makes torch.func's
            # functional_call tie the names, which the compiled update step (rlkit2/update_step.py) cannot trace.
            self.__dict__["value_torso"], value_dim = self.policy_torso, policy_dim
            self.register_load_state_dict_pre_hook(_drop_second_torso_name)
        else:
            self.value_torso, value_dim = torso(cfg.value_hidden)
        out_dim = act_dim * (2 if (cfg.state_dependent_std and not self.discrete) else 1)
        self.policy_head = mlp(policy_dim, (), out_dim, initializer=cfg.initializer,
                               out_scale=cfg.policy_last_layer_scale)
        self.value_head = mlp(value_dim, (), 1, initializer=cfg.initializer, out_scale=cfg.value_last_layer_scale)
        if not self.discrete and not cfg.state_dependent_std:
            self.std_param = nn.Parameter(torch.zeros(act_dim))  # zero -> init_std (rlkit2.distributions)

    def distribution(self, obs: Tensor) -> DiagGaussian | Categorical:
        return self._dist_from_features(self.policy_torso(obs))

    def value(self, obs: Tensor) -> Tensor:
        """The value head's raw output (normalized units when value normalization is on)."""
        return self.value_head(self.value_torso(obs)).squeeze(-1)

    def forward(self, obs: Tensor) -> tuple[DiagGaussian | Categorical, Tensor]:
        if self.cfg.shared_network:
            features = self.policy_torso(obs)
            return self._dist_from_features(features), self.value_head(features).squeeze(-1)
        return self.distribution(obs), self.value(obs)

    def _dist_from_features(self, features: Tensor) -> DiagGaussian | Categorical:
        out = self.policy_head(features)
        if self.discrete:
            return Categorical(out)
        if self.cfg.state_dependent_std:
            mean, std_param = out.chunk(2, dim=-1)
        else:
            mean, std_param = out, self.std_param
        return DiagGaussian(mean, std_from_param(std_param, self.cfg.std_transform, self.cfg.init_std,
                                                 self.cfg.min_std))


# ----------------------------------------------------------------------------------------------------------
# The agent
# ----------------------------------------------------------------------------------------------------------
class OnPolicyAgent:
    def __init__(self, cfg: OnPolicyConfig, ctx: BuildContext):
        cfg.validate()
        self.cfg = cfg
        self.ctx = ctx
        self.device = ctx.device
        env = ctx.env
        obs_space, action_space = env.single_observation_space, env.single_action_space
        if not isinstance(obs_space, gym.spaces.Box):
            raise ConfigError(f"Agent '{ctx.env.name}': observation space {obs_space} is not a Box; wrap the env "
                              "to produce array observations (e.g. gymnasium.wrappers.FlattenObservation)")
        self.image_obs = obs_space.dtype == np.uint8 and len(obs_space.shape) == 3
        if cfg.cnn_precision != "fp32" and not (cfg.torso == "cnn" or (cfg.torso == "auto" and self.image_obs)):
            raise ConfigError(f"Option 'cnn_precision' ({cfg.cnn_precision}) applies to CNN torsos, but env "
                              f"'{env.name}' gets an MLP (observations {obs_space.dtype} {obs_space.shape}). Fix: "
                              "leave cnn_precision at fp32 (a CNN needs uint8 [C, H, W] image observations)")
        if cfg.cnn_precision == "bf16":
            check_bf16(self.device, "cnn_precision", also="--rl.cnn_precision fp32 with --agent pref")
        self.model = ActorCritic(cfg, obs_space, action_space).to(self.device)
        # With one Nature-CNN torso for policy and value, the features the action is drawn from also give the
        # value, and the batched pass after the rollout (evaluate) would repeat every convolution of the rollout:
        # compute-bound work, unlike an MLP's (or MiniGrid's small CNN's) per-op overhead, for which that one large
        # pass is cheaper than heads on every step.
        self._values_while_acting = cfg.shared_network and isinstance(self.model.policy_torso, NatureCNN)
        self.obs_normalizer = ObservationNormalizer(obs_space.shape, cfg.obs_clip,
                                                    enabled=cfg.normalize_obs and not self.image_obs).to(self.device)
        self.value_normalizer = ValueNormalizer(enabled=cfg.normalize_value).to(self.device)
        self.optimizer = self._make_optimizer()
        if isinstance(action_space, gym.spaces.Box):
            self.action_low, self.action_high = action_bounds(env.name, action_space, self.device)
            # once, not per step: (x + 1) * 0.5 * (high - low) == (x + 1) * this, bit for bit (* 0.5 is exact)
            self._action_half_range = 0.5 * (self.action_high - self.action_low)
        # in-process, or remote workers when ctx.env is a WorkerGroup (--workers)
        self.collector = make_on_policy_collector(env, cfg.num_steps, self.device,
                                                  bootstrap_truncation=cfg.timeout_handling == "bootstrap")
        self.env_steps = 0
        self.updates = 0
        self.batch_size = cfg.num_steps * env.num_envs
        # the run's budget rounds up to whole iterations (the run loop says so when it does)
        self.budget_unit = (self.batch_size, f"one iteration: num_envs {env.num_envs} x num_steps {cfg.num_steps}")
        self.minibatch_size = cfg.minibatch_size or self.batch_size
        if ctx.training and self.minibatch_size > self.batch_size:
            raise ConfigError(f"Option 'minibatch_size' ({self.minibatch_size}) is larger than the batch "
                              f"num_steps * num_envs = {self.batch_size}")
        self._update = MinibatchUpdate(
            self.model, self._loss_and_stats, [ParamGroup(self.params, self.optimizer, cfg.max_grad_norm)],
            compile_note=COMPILE_NOTE if cfg.compile_loss else None)
        self.collector.reset(seed=ctx.seed)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # Small networks on CPU: the per-tensor Python loop of the default optimizers and a module-tree walk
        # per minibatch cost as much as the backward pass, so the parameter list is built once and Adam is
        # fused (RMSprop has no fused kernel; foreach batches it).
        cfg = self.cfg
        self.params = list(self.model.parameters())
        if cfg.optimizer == "adam":
            return torch.optim.Adam(self.params, lr=cfg.lr, betas=(cfg.adam_beta1, 0.999), eps=cfg.adam_eps,
                                    fused=True)
        if cfg.optimizer == "rmsprop_tf":
            return RMSpropTF(self.params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps,
                             momentum=cfg.rmsprop_momentum, centered=cfg.rmsprop_centered)
        return torch.optim.RMSprop(self.params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps,
                                   momentum=cfg.rmsprop_momentum, centered=cfg.rmsprop_centered, foreach=True)

    # --- acting (RolloutPolicy for the collector; act() for evaluation) ------------------------------------
    def preprocess(self, obs: Tensor, update_stats: bool) -> Tensor:
        if self.image_obs:
            return obs  # uint8 frames; the CNN scales them
        obs = obs.float()
        if update_stats:
            self.obs_normalizer.update(obs)
        return self.obs_normalizer(obs)

    def step(self, obs: Tensor) -> PolicyStep:
        if self._values_while_acting:
            dist, value = self.model(obs)
            action = dist.sample()
            return PolicyStep(self.to_env_action(action), action, dist.log_prob(action),
                              self.value_normalizer.denormalize(value))
        action = self.model.distribution(obs).sample()
        return PolicyStep(self.to_env_action(action), action)  # log-probs and values: evaluate(), per rollout

    def evaluate(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        dist, value = self.model(obs)
        return dist.log_prob(actions), self.value_normalizer.denormalize(value)

    def value(self, obs: Tensor) -> Tensor:
        return self.value_normalizer.denormalize(self.model.value(obs))

    def to_env_action(self, action: Tensor) -> Tensor:
        """Policy outputs live in [-1, 1] (clip or tanh) and are rescaled to the env's bounds."""
        if self.model.discrete:
            return action
        squashed = torch.tanh(action) if self.cfg.action_handling == "tanh" else action.clamp(-1.0, 1.0)
        return self.action_low + (squashed + 1.0) * self._action_half_range

    @torch.inference_mode()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return self.policy_action(obs.to(self.device), deterministic)

    def policy_action(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """Raw observations -> env actions (the mode, or a sample); with ``deterministic`` also the exported
        policy's forward (``export_module``)."""
        dist = self.model.distribution(self.preprocess(obs, update_stats=False))
        return self.to_env_action(dist.mode() if deterministic else dist.sample())

    def export_module(self) -> ActingModule:
        """The deterministic policy, normalisation to rescaling, as one module (rlkit2/export.py)."""
        return ActingModule(functools.partial(self.policy_action, deterministic=True),
                            {"obs_normalizer": self.obs_normalizer, "model": self.model})

    def acting_modules(self) -> dict[str, nn.Module]:
        """What a remote worker's acting copy needs (rlkit2/remote.py)."""
        return {"model": self.model, "obs_normalizer": self.obs_normalizer, "value_normalizer": self.value_normalizer}

    # --- one iteration: collect -> advantages -> minibatch updates ------------------------------------------
    def train_iteration(self) -> dict[str, float]:
        self._set_learning_rate()  # from the steps done before this iteration: full lr first, > 0 last
        set_threads(self.ctx.threads_collect)
        self.model.eval()
        rollout = self.collector.collect(self)
        self.env_steps += self.batch_size
        timing = self.collector.pop_timing()

        start = time.perf_counter()
        set_threads(self.ctx.threads_update)
        self.model.train()
        stats = self.update(rollout)
        timing["update"] = time.perf_counter() - start

        returns, lengths = self.collector.episodes.pop()
        if returns:
            stats["charts/episode_return"] = float(np.mean(returns))
            stats["charts/episode_length"] = float(np.mean(lengths))
        stats["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        stats.update({f"time/{k}": v for k, v in timing.items()})
        stats.update(self.collector.pop_stats())
        return stats

    def advantages_and_returns(self, rollout: Rollout, values: Tensor, last_value: Tensor,
                               final_values: Tensor) -> tuple[Tensor, Tensor]:
        """A_t and value targets from rewards and the given values (in return units)."""
        cfg = self.cfg
        next_values = next_values_from(values, last_value, rollout.truncated, final_values)
        if cfg.timeout_handling == "bootstrap":
            terminated = rollout.terminated
        else:  # the biased variant: a time limit is treated as a terminal state
            terminated = rollout.episode_end
        if cfg.advantage_estimator == "gae":
            advantages = gae(rollout.rewards, values, next_values, terminated, rollout.episode_end,
                             cfg.gamma, cfg.gae_lambda)
            return advantages, advantages + values
        returns = n_step_returns(rollout.rewards, next_values, terminated, rollout.episode_end, cfg.gamma, cfg.n_step)
        return returns - values, returns

    def update(self, rollout: Rollout) -> dict[str, float]:
        cfg = self.cfg
        T, N = rollout.rewards.shape
        b_obs = rollout.obs.reshape(T * N, *rollout.obs.shape[2:])
        b_actions = rollout.actions.reshape(T * N, *rollout.actions.shape[2:])
        b_logprobs = rollout.logprobs.reshape(-1)
        b_values_old = rollout.values.reshape(-1)
        # per-epoch sums of STATS, added on the device by each step and read once, after the last epoch
        epoch_sums = torch.zeros(cfg.epochs, len(STATS), device=self.device).unbind(0)
        self._update.prepare()
        minibatches = 0
        for epoch in range(cfg.epochs):
            if epoch == 0 or cfg.recompute_advantages:
                with torch.no_grad():
                    if epoch == 0:
                        values, last_value, final_values = rollout.values, rollout.last_value, rollout.final_values
                        # The value head's outputs at collection time, in the units they were produced in
                        # (before this iteration's statistics update): the centre of value clipping.
                        b_values_old_n = self.value_normalizer.normalize(b_values_old)
                    else:  # the current critic everywhere, bootstrap values of truncated episodes included
                        values = self.value(b_obs).reshape(T, N)
                        last_value = self.value(rollout.last_obs)
                        final_values = self.collector.final_values(rollout, self.value)
                    advantages, returns = self.advantages_and_returns(rollout, values, last_value, final_values)
                    if epoch == 0:
                        self.value_normalizer.update(returns)
                    b_advantages = advantages.reshape(-1)
                    b_targets = self.value_normalizer.normalize(returns.reshape(-1))
            # One gather per tensor per epoch, then contiguous slices (views): far fewer ops per minibatch.
            order, mb_size = self._epoch_order(T, N)
            e_obs, e_actions, e_logprobs = b_obs[order], b_actions[order], b_logprobs[order]
            e_advantages, e_targets, e_values_old = b_advantages[order], b_targets[order], b_values_old_n[order]
            for start in range(0, T * N, mb_size):
                mb = slice(start, start + mb_size)
                self._update(epoch_sums[epoch], e_obs[mb], e_actions[mb], e_logprobs[mb], e_advantages[mb],
                             e_targets[mb], e_values_old[mb])
            minibatches = len(range(0, T * N, mb_size))
            self.updates += minibatches
        out = self._mean_stats(torch.stack(epoch_sums), minibatches)
        with torch.no_grad():
            var_returns = torch.var(returns)
            out["losses/explained_variance"] = float(1 - torch.var(returns - rollout.values) / var_returns) \
                if var_returns > 0 else float("nan")
        if not self.model.discrete:
            with torch.no_grad():
                out["charts/action_std"] = float(self.model.distribution(b_obs[:1]).std.mean())
        return out

    def _epoch_order(self, T: int, N: int) -> tuple[Tensor, int]:
        """A permutation of the flat T*N batch whose consecutive chunks of ``mb_size`` are the minibatches."""
        cfg = self.cfg
        if cfg.batch_mode == "shuffle_transitions":
            return torch.randperm(T * N, device=self.device), self.minibatch_size
        # Trajectory modes: minibatches of whole T-step env segments (flat indices n, N + n, 2N + n ...).
        per_mb = max(1, self.minibatch_size // T)
        envs = torch.randperm(N, device=self.device) if cfg.batch_mode == "shuffle_trajectories" \
            else torch.arange(N, device=self.device)
        steps = torch.arange(T, device=self.device).unsqueeze(1) * N
        order = torch.cat([(steps + envs[i:i + per_mb]).reshape(-1) for i in range(0, N, per_mb)])
        return order, per_mb * T

    def _mean_stats(self, epoch_sums: Tensor, minibatches: int) -> dict[str, float]:
        """STATS from the per-epoch sums (one read from the device per update); a NaN/inf there stops training."""
        means = (epoch_sums / minibatches).tolist()
        out = {key: sum(row[i] for row in means) / len(means) for i, key in enumerate(STATS)}
        out.update({key: means[-1][STATS.index(key)] for key in LAST_EPOCH_STATS})
        if not all(math.isfinite(value) for value in out.values()):
            # Checked once per update, not per minibatch (a per-minibatch check is a device sync): the model in
            # memory has taken the bad steps, and the run loop stops without saving it.
            raise NonFiniteLossError(
                f"Non-finite loss or gradient in the updates up to {self.updates} (mean policy loss "
                f"{out['losses/policy_loss']:.4g}, value loss {out['losses/value_loss']:.4g}, gradient norm "
                f"{out['losses/grad_norm']:.4g}).")
        return out

    def _minibatch_step(self, obs: Tensor, actions: Tensor, old_logprobs: Tensor, advantages: Tensor,
                        targets: Tensor, old_values: Tensor) -> dict[str, float]:
        """One optimizer step on one minibatch, its STATS returned (for tests; ``update`` keeps them on the
        device)."""
        sums = torch.zeros(len(STATS), device=self.device)
        self._update.prepare()
        self._update(sums, obs, actions, old_logprobs, advantages, targets, old_values)
        self.updates += 1
        return dict(zip(STATS, sums.tolist()))

    def _loss_and_stats(self, obs: Tensor, actions: Tensor, old_logprobs: Tensor, advantages: Tensor,
                        targets: Tensor, old_values: Tensor) -> tuple[Tensor, Tensor]:
        """The loss, and STATS but the gradient norm (rlkit2.update_step adds it)."""
        loss, policy_loss, value_loss, entropy, ratio, log_ratio = self.minibatch_losses(
            obs, actions, old_logprobs, advantages, targets, old_values)
        ratio, log_ratio = ratio.detach(), log_ratio.detach()
        approx_kl = ((ratio - 1) - log_ratio).mean()  # Schulman's k3 estimator
        clipfrac = ((ratio - 1.0).abs() > self.cfg.clip_eps).float().mean()
        return loss, torch.stack([policy_loss, value_loss, entropy, approx_kl, clipfrac]).detach()

    def minibatch_losses(self, obs: Tensor, actions: Tensor, old_logprobs: Tensor, advantages: Tensor,
                         targets: Tensor, old_values: Tensor) -> tuple[Tensor, ...]:
        """L = L_pi + c_V L_V - c_H H on one minibatch, forward pass included."""
        cfg = self.cfg
        dist, values = self.model(obs)
        logprobs = dist.log_prob(actions)
        log_ratio = (logprobs - old_logprobs).clamp(max=20.0)  # exp overflow would give NaN gradients
        ratio = log_ratio.exp()
        if cfg.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        if cfg.policy_loss == "ppo":
            clipped = ratio.clamp(1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps)
            policy_loss = -torch.min(ratio * advantages, clipped * advantages).mean()
        else:
            policy_loss = -(logprobs * advantages).mean()

        value_loss = self._value_loss(values, targets)
        if cfg.value_clip > 0:
            clipped_values = old_values + (values - old_values).clamp(-cfg.value_clip, cfg.value_clip)
            value_loss = torch.max(value_loss, self._value_loss(clipped_values, targets))
        value_loss = value_loss.mean()
        entropy = self._entropy(dist).mean()
        loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
        return loss, policy_loss, value_loss, entropy, ratio, log_ratio

    def _entropy(self, dist: DiagGaussian | Categorical) -> Tensor:
        """Policy entropy. With tanh squashing, the entropy of the squashed policy (a one-sample estimate at a
        fresh sample: rlkit2.distributions.TanhGaussian.entropy_estimate). Not -log pi of the *stored* samples:
        that estimates H(pi_old) + KL(pi_old || pi), whose gradient pushes the policy away from pi_old rather
        than toward higher entropy."""
        if self.model.discrete or self.cfg.action_handling != "tanh":
            return dist.entropy()
        return TanhGaussian(dist.mean, dist.std).entropy_estimate()

    def _value_loss(self, values: Tensor, targets: Tensor) -> Tensor:
        if self.cfg.value_loss == "huber":
            return F.huber_loss(values, targets, reduction="none", delta=self.cfg.huber_delta)
        return 0.5 * (values - targets).square()

    def _set_learning_rate(self) -> None:
        if self.cfg.lr_decay == "linear":
            fraction = max(0.0, 1.0 - self.env_steps / self.ctx.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = self.cfg.lr * fraction

    # --- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_normalizer": self.obs_normalizer.state_dict(),
            "value_normalizer": self.value_normalizer.state_dict(),
            "env_steps": self.env_steps,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        self.value_normalizer.load_state_dict(state["value_normalizer"])
        self.env_steps = int(state["env_steps"])
        self.updates = int(state["updates"])


def build(cfg: OnPolicyConfig, ctx: BuildContext) -> OnPolicyAgent:
    return OnPolicyAgent(cfg, ctx)


# One module, two agents (declared in pyproject.toml's [project.entry-points."rlkit2.agents"]): the same code
# with PPO's or A2C's preset.
PPO_SPEC = AgentSpec("ppo", OnPolicyConfig, build, PRESETS / "ppo.toml",
                     "PPO with the on-policy study's recommendations", remote_workers=True)
A2C_SPEC = AgentSpec("a2c", OnPolicyConfig, build, PRESETS / "a2c.toml",
                     "synchronous advantage actor-critic (vanilla policy gradient, N-step returns)",
                     remote_workers=True)
