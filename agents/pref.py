"""Deep RL from human preferences (Christiano et al., NeurIPS 2017, arXiv 1706.03741): an RL agent (PPO by
default) trains on a reward model fitted to comparisons of trajectory segments; the comparisons come from a
synthetic oracle that knows the true reward. The learning pieces are in rlkit2/preference.py.

Algorithm (``train_iteration``):
    first call: play the initial policy for ``warmup_steps`` env steps into the segment pool; ask for
        ``initial_labels`` (else ``initial_share`` of the labels) on pairs from it (people: wait until they are
        answered); fit the reward model for ``pretrain_epochs``
    1. one iteration of the RL agent, which sees r_hat(o, a) (the ensemble's normalised mean) instead of the
       env reward; every step also goes into the pool of recent steps (obs, action, true reward, episode)
    2. labels due by now (``labels_due``: the rest at a rate ~ tau / (t + tau), t in env steps, held for
       ``label_rate_every`` steps at a time if set): draw ``candidates_per_label`` x as many random segment pairs
       (``segment_length`` steps, within one episode) from the pool, keep those the ensemble disagrees on most,
       label them
    3. ``reward_epochs`` passes of the reward model over all comparisons, or a fixed budget of ``reward_batches``
       minibatches (bootstrap per member, adaptive L2), then refit each member's output normalisation on the pool
The RL agent never sees the true reward; its episode statistics (and every evaluation) report the true return.

Choices where the paper leaves room, and what we follow:
- The RL agent is PPO with its own preset for the env family (``--rl.OPTION value`` overrides it); the paper
  used TRPO on MuJoCo and A2C on Atari. Its entropy bonus (the one value the paper tuned, 0.01, because the
  reward moves) is in our MuJoCo preset as ``rl.entropy_coef = 0.01``: without it one Hopper seed in three
  stalled at ~700 (entropy 0.06), and Hopper with 1400 labels reached 68% of PPO on the true reward; with it,
  95% of that same baseline and 99% of PPO on the true reward with the bonus (docs/benchmarks.md).
- MuJoCo episodes keep their early termination (the paper replaced it with a penalty, so that episode length
  leaks no reward). With termination, the learned reward (normalised to mean 0 on recent steps) cannot price
  survival: on Hopper PPO reached 691 against 3192 on the true reward. Fixed-length variants, which
  ``--train_env_kwargs`` makes a one-line change (e.g. ``terminate_when_unhealthy false``: training envs only,
  evaluation keeps the standard task), did worse in our pilots: without a penalty PPO learned to crawl after
  falling (~1.7 per step beats the healthy reward of 1 for standing; 43 on the standard env); with a healthy
  reward of 5 the fallen states fill the segment pool and the labels rarely compare upright with fallen
  (5-98). ``--absorbing true`` keeps termination and gives it a learned price instead: after a termination
  comes an absorbing state (as in DAC, Kostrikov et al. 2019) whose reward the model learns from segments that
  run into it, and the RL agent gets r_hat(absorbing) * gamma / (1 - gamma) when an episode terminates.
- Envs whose per-step reward is constant (CartPole, MountainCar, Acrobot) give only ties: nothing to learn;
  Pendulum works.
- The RL agent's learning-rate schedule counts its own steps, not the warm-up's.
- Labels are asked for between RL iterations. With people (``--oracle human``) the run waits, as the paper's
  does, until the initial pairs are answered (it says every 30 s how many are in and where the labeling page is),
  pretrains on them, then starts RL; after that the RL agent never waits for labels. ``--wait_for_initial_labels
  false`` starts RL at once on an untrained reward model (with a warning) and pretrains when the initial pairs are
  answered. A synthetic oracle answers at once.
- The reward model trains in step with the RL agent: ``reward_epochs`` passes after each iteration (the default,
  cheap on MuJoCo), or a fixed budget of ``reward_batches`` minibatches (as rl-teacher's one minibatch per 100 env
  steps; the paper trains it asynchronously). On Atari on a CPU an epoch over 3000 comparisons of the paper's conv
  ensemble takes minutes, so the reduced-budget Pong benchmark uses one minibatch of 16 per iteration, bf16
  convolutions (its CPU had AVX512-BF16 and AMX), held-out losses on 32 random comparisons and the normalisation refit on 1024 recent steps
  (docs/benchmarks.md, "Atari Pong with synthetic labels": -11.8 at 500k steps against -15.6 on the true reward,
  with the reward model as it was before batch norm and dropout).
- The Atari reward model follows the paper's: frames only (``reward_actions false``: an action input gives the
  policy a per-action bias to collect), batch norm and dropout 0.5 after every conv (``reward_batch_norm``,
  ``reward_dropout``: training steps use batch statistics and dropout; every reward, query score and held-out loss
  uses eval mode), and, our additions, reset padding filled with the first frame as the paper's frame stack pads,
  the reward clipped at +-5 std and a winsorised normalisation; without them PPO stayed at -21 (a zero-padded
  reset stack scored ~1000 std).
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

import envs
from envs.atari import is_atari
from rlkit2.agent import AgentSpec, BuildContext, get_agent_spec
from rlkit2.cli_errors import command
from rlkit2.clips import mujoco_state
from rlkit2.config import ConfigError, check_ranges
from rlkit2.device import check_bf16
from rlkit2.labels import LabelStore
from rlkit2.preference import (EnsembleTrainer, RewardEnsemble, StackedSegments, SyntheticOracle, labels_due,
                               select_pairs)
from rlkit2.remote import WorkerGroup

PRESETS = Path(__file__).parent / "presets"
LABEL_PAGE = "http://127.0.0.1:8765"  # the label command's default address
WAIT_POLL_SECONDS = 0.5  # how often a run waiting for people's initial labels reads the store
WAIT_REPORT_SECONDS = 30.0  # ... and says how many are answered


@dataclass
class PrefConfig:
    rl_agent: str = "ppo"
    """The agent trained on the learned reward (any on-policy agent: ppo, a2c)."""
    rl: dict = field(default_factory=dict)
    """Options of that agent on top of its preset, e.g. --rl.entropy_coef 0.01."""
    labels: int = 1400
    """Comparisons asked for over the whole run (paper MuJoCo: 350, 700, 1400 synthetic; 700 human)."""
    initial_share: float = 0.25
    """Share of the labels asked for before RL starts, on the initial policy's segments (paper MuJoCo: 25%); ignored
    when initial_labels > 0."""
    initial_labels: int = 0
    """> 0: the number of labels asked for before RL starts, instead of initial_share (paper Atari: 500, the Atari
    preset). At most labels."""
    label_tau: float = 2e6
    """The rest come at a rate ~ tau / (t + tau), t in env steps of all envs together (paper MuJoCo: 2e6 steps; paper
    Atari: 5e6 frames = 1.25e6 steps at frame skip 4, the Atari preset)."""
    label_rate_every: int = 0
    """> 0: that rate is lowered only every this many env steps, held at its value at the start of each stretch
    (paper Atari: every 5e6 frames = 1.25e6 steps, the Atari preset); 0: it changes continuously (paper MuJoCo)."""
    warmup_steps: int = 10_000
    """Env steps of the initial policy for the first segments (counted in the run's budget)."""
    segment_length: int = 25
    """Steps per segment (paper MuJoCo: 1.5 s, 15-60 steps; Atari 25)."""
    candidates_per_label: int = 10
    """Candidate pairs drawn per label asked for (paper: about 10)."""
    selection: Literal["disagreement", "random"] = "disagreement"
    """Which candidates get labelled: highest ensemble variance of P[s1 > s2], or random."""
    oracle: Literal["synthetic", "human"] = "synthetic"
    """Who labels: the synthetic oracle, or people on the labeling page (rlkit2 label RUN_DIR). Clips
    are rendered from stored simulator states (MuJoCo envs with --backend sync) or from the frames the agent saw
    (Atari)."""
    wait_for_initial_labels: bool = True
    """--oracle human: wait until people answer the initial pairs (initial_share of the labels), pretrain on them,
    then start RL (the paper). false: start RL at once on an untrained reward model (a warning says so) and
    pretrain when they are answered."""
    oracle_temperature: float = 0.0
    """Synthetic oracle: 0 prefers the higher true return (ties 0.5); > 0 answers Boltzmann-rationally."""
    members: int = 3
    """Reward-model ensemble size (paper: 3)."""
    reward_hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of each member's MLP (paper MuJoCo: 2x64, leaky ReLU); images use the paper's conv stack."""
    reward_lr: float = 1e-3
    """Adam learning rate of the reward model."""
    reward_batch: int = 32
    """Comparisons per reward-model minibatch."""
    reward_epochs: int = 1
    """Passes over all comparisons after each RL iteration."""
    reward_batches: int = 0
    """> 0: instead of reward_epochs, this many minibatches after each RL iteration, drawn at random from the
    comparisons: a fixed reward-model budget whose cost does not grow with the labels (rl-teacher trains one
    minibatch per 100 env steps; the paper trains the predictor asynchronously, at its own pace). For Atari on a
    CPU, where an epoch over 3000 comparisons takes minutes (docs/benchmarks.md)."""
    fit_eval_pairs: int = 0
    """> 0: after each fit, measure the losses (held-out accuracy, the L2 adaptation) on this many random
    comparisons instead of all of them (scoring all costs as much as an epoch)."""
    normalization_steps: int = 0
    """Recent steps the reward normalisation is refitted on after each fit; 0 = the whole pool (pool_steps)."""
    reward_precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 runs the Atari reward model's convolutions under bfloat16 autocast (weights stay fp32), as PPO's
    --cnn_precision bf16: about 2x cheaper on a CPU with AVX512-BF16; refused on hardware without native bf16
    (rlkit2/device.py:check_bf16). Vector observations ignore it."""
    reward_batch_norm: bool = True
    """Batch norm after each conv of the image reward model (paper Atari: "all convolutional layers use batch norm and
    dropout"); its running statistics score every reward. Vector observations ignore it (the paper's MuJoCo MLP has
    none). Checkpoints from before it existed need --reward_batch_norm false --reward_dropout 0 to resume."""
    reward_dropout: float = 0.5
    """Dropout after each conv of the image reward model, in its training steps only (paper Atari: 0.5). Vector
    observations ignore it (the paper's MuJoCo MLP has none)."""
    pretrain_epochs: int = 50
    """Passes over the initial comparisons before RL starts (people's labels: once the initial pairs are
    answered)."""
    noise: float = 0.1
    """Probability that the rater answers at random (P' = (1 - noise) P + noise / 2; paper: 0.1)."""
    l2_init: float = 1e-4
    """Initial L2 weight of each member (then adapted to keep validation/training loss in 1.1-1.5)."""
    reward_scale: float = 1.0
    """Std of the reward the RL agent sees on recent steps (paper: 1 on MuJoCo, 0.05 on Atari)."""
    reward_actions: bool = True
    """The reward model sees the action too, r(o, a) (paper MuJoCo); false: r(o) from observations only (paper Atari:
    frames only; with a one-hot action input the policy can farm a per-action bias the labels never pinned down)."""
    reward_clip: float = 0.0
    """> 0: the reward the RL agent sees is clipped to +-reward_clip std (its std being reward_scale): a bound on what
    the model says about inputs the comparisons never covered (Atari preset: 5)."""
    normalization_trim: float = 0.0
    """> 0: each member's normalisation is fitted on its outputs winsorised at the normalization_trim and
    1 - normalization_trim quantiles, so that a few off-range steps do not inflate the std (Atari preset: 0.005)."""
    pool_steps: int = 50_000
    """Recent env steps (all envs together) kept for drawing segments."""
    max_comparisons: int = 0
    """Keep only the newest comparisons for training (paper Atari: 3000); 0 = keep all."""
    absorbing: bool = False
    """Terminations lead to an absorbing state whose reward is learned (as in DAC, Kostrikov et al. 2019):
    segments may end in a termination, padded with absorbing steps (true reward 0), and the RL agent gets
    r_hat(absorbing) * gamma / (1 - gamma) on every terminated step, so the reward model can price ending an
    episode (Hopper-like envs). Off: segments stay inside episodes and a termination is worth 0."""

    def validate(self) -> None:
        check_ranges(self, positive=("labels", "segment_length", "candidates_per_label", "members", "reward_lr",
                                     "reward_batch", "pool_steps", "label_tau"))
        if not 0.0 <= self.normalization_trim < 0.5:
            raise ConfigError(f"Option 'normalization_trim' must be in [0, 0.5) (a share trimmed at each end), got "
                              f"{self.normalization_trim}")
        if not 0.0 <= self.noise < 1.0:
            raise ConfigError(f"Option 'noise' must be in [0, 1) (1 would make every answer random), got {self.noise}")
        if self.initial_labels > self.labels:
            raise ConfigError(f"Option 'initial_labels' ({self.initial_labels}) is more than 'labels' ({self.labels}), "
                              "the total it is part of: lower --initial_labels (0: --initial_share of the labels) or "
                              "raise --labels")
        if not 0.0 <= self.reward_dropout < 1.0:
            raise ConfigError(f"Option 'reward_dropout' must be in [0, 1) (the share of conv units dropped in "
                              f"training; 0 turns dropout off), got {self.reward_dropout}")
        check_ranges(self, unit_interval=("initial_share",),
                     non_negative=("warmup_steps", "reward_epochs", "pretrain_epochs", "max_comparisons",
                                   "oracle_temperature", "reward_batches", "fit_eval_pairs", "normalization_steps",
                                   "reward_clip", "initial_labels", "label_rate_every"))


# ------------------------------------------------------------------------------------- the env the RL agent sees
class SegmentPool:
    """The last ``capacity // N`` steps of each of N envs, time-major: obs, actions (one-hot if discrete), true
    rewards, an episode id and whether the step ended its episode by termination; segments never cross an episode
    boundary, but with ``absorbing`` one may run past a termination into absorbing steps."""

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple[int, ...], obs_dtype, action_dim: int,
                 state_dim: int = 0):
        self.length = max(2, capacity // num_envs)
        self.n = num_envs
        self.obs = np.zeros((self.length, num_envs, *obs_shape), obs_dtype)
        self.actions = np.zeros((self.length, num_envs, action_dim), np.float32)
        self.rewards = np.zeros((self.length, num_envs), np.float32)
        self.episode = np.full((self.length, num_envs), -1, np.int64)
        self.terminated = np.zeros((self.length, num_envs), bool)
        self.states = np.zeros((self.length, num_envs, state_dim))  # simulator states, to render clips from
        self.written = 0  # rows written in total; row r lives at r % length

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, episode: np.ndarray,
            states: np.ndarray | None = None, terminated: np.ndarray | None = None) -> None:
        row = self.written % self.length
        self.obs[row], self.actions[row], self.rewards[row], self.episode[row] = obs, actions, rewards, episode
        self.terminated[row] = False if terminated is None else terminated
        if states is not None:
            self.states[row] = states
        self.written += 1

    def sample_segments(self, count: int, k: int, rng: np.random.Generator,
                        absorbing: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(time rows [count, k], env [count], absorbing mask [count, k]) of segments inside one episode, or None
        if there are too few. With ``absorbing``, a segment may also run past its episode's termination (never
        past a truncation): the steps after it are absorbing (mask True; their rows repeat the last real step)."""
        filled = min(self.written, self.length)
        if filled < k:
            return None
        first_row = self.written - filled
        rows, envs_, masks = [], [], []
        for _ in range(100):  # rejection: a segment must not straddle an episode end
            starts = first_row + rng.integers(0, filled - k + 1, 4 * count)
            env = rng.integers(0, self.n, 4 * count)
            r = (starts[:, None] + np.arange(k)) % self.length
            same = self.episode[r, env[:, None]] == self.episode[r[:, :1], env[:, None]]  # [M, k], a prefix
            keep = same.all(1)
            real = same.sum(1)
            if absorbing:  # ... or the episode's last step inside the segment is a termination
                last = r[np.arange(len(r)), real - 1]
                keep |= self.terminated[last, env]
                r = np.where(same, r, last[:, None])
            rows.append(r[keep])
            envs_.append(env[keep])
            masks.append(~same[keep])
            if sum(len(x) for x in rows) >= count:
                break
        rows_all, env_all = np.concatenate(rows)[:count], np.concatenate(envs_)[:count]
        mask_all = np.concatenate(masks)[:count]
        return (rows_all, env_all, mask_all) if len(rows_all) == count else None

    def recent(self, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Obs, actions and true rewards of the newest ``limit`` steps (all envs), newest first."""
        filled = min(self.written, self.length)
        rows = (self.written - 1 - np.arange(min(filled, max(1, limit // self.n)))) % self.length
        return (self.obs[rows].reshape(-1, *self.obs.shape[2:]), self.actions[rows].reshape(-1, self.actions.shape[-1]),
                self.rewards[rows].reshape(-1))


class StepRecorder:
    """A remote worker's stand-in for the segment pool (``SegmentPool.add``'s interface): the steps of one request,
    handed to the learner, whose ``LearnedRewardEnv.add_worker_steps`` puts them in its pool."""

    def __init__(self):
        self.steps: list[tuple] = []

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, episode: np.ndarray,
            states: np.ndarray | None = None, terminated: np.ndarray | None = None) -> None:
        self.steps.append((np.array(obs), np.array(actions, np.float32), np.array(rewards, np.float32),
                           episode.copy(), None if states is None else np.array(states),
                           np.zeros(len(episode), bool) if terminated is None else np.array(terminated)))

    def take(self) -> dict[str, np.ndarray | None]:
        """The recorded steps, time-major [T, k, ...], and an empty recorder."""
        steps, self.steps = self.steps, []
        names = ("obs", "actions", "rewards", "episode", "states", "terminated")
        return {name: None if column[0] is None else np.stack(column)
                for name, column in zip(names, zip(*steps))} if steps else {}


def mark_absorbing(obs: np.ndarray, actions: np.ndarray, where: np.ndarray) -> None:
    """Make the steps at ``where`` the absorbing state's model input, in place: a zero observation and a zero
    action with the 'absorbing' flag (the last action column) set."""
    obs[where] = 0
    actions[where] = 0.0
    actions[where, -1] = 1.0


class LearnedRewardEnv:
    """A VecEnv whose reward is the reward model's; everything else (observations, episode statistics on the
    true reward, final observations) passes through. Every step goes into the segment pool."""

    def __init__(self, env, model: RewardEnsemble, pool: SegmentPool | StepRecorder, action_dim: int,
                 device: torch.device):
        self.env, self.model, self.pool, self.action_dim, self.device = env, model, pool, action_dim, device
        self.discrete = isinstance(env.single_action_space, gym.spaces.Discrete)
        self._obs: np.ndarray | None = None
        self._episode = np.arange(env.num_envs, dtype=np.int64)
        self._next_episode = env.num_envs
        self.use_model = True
        self.record_states = False  # keep MuJoCo simulator states in the pool (for clips people label)
        self.absorbing_tail = 0.0  # gamma / (1 - gamma) with absorbing states (the model then has a flag input)
        self._worker_episode = np.full(env.num_envs, -1, np.int64)  # the workers' episode ids last seen, per env

    def sim_states(self) -> np.ndarray:
        """[N, nq + nv] simulator states of the envs (sync gymnasium backend, MuJoCo envs)."""
        return np.stack([mujoco_state(e) for e in self.env.backend.vec.envs])

    def __getattr__(self, name: str) -> Any:  # name, num_envs, spaces, settings, close...
        return getattr(self.env, name)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._obs, info = self.env.reset(seed=seed, options=options)
        n = self.env.num_envs  # every env starts a new episode
        self._episode = self._next_episode + np.arange(n)
        self._next_episode += n
        return self._obs, info

    def model_input(self, actions: np.ndarray) -> np.ndarray:
        """The reward model's action input: one-hot (discrete) or flat actions, then, with absorbing states, an
        'absorbing' flag column (0 for every real step)."""
        if self.discrete:
            out = np.eye(self.env.single_action_space.n, dtype=np.float32)[np.asarray(actions, np.int64)]
        else:
            out = np.asarray(actions, np.float32).reshape(len(actions), -1)
        return np.concatenate([out, np.zeros((len(out), 1), np.float32)], 1) if self.absorbing_tail else out

    def absorbing_reward(self) -> float:
        """r_hat of the absorbing state."""
        obs = np.zeros((1, *self.env.single_observation_space.shape), np.float32)
        actions = np.zeros((1, self.action_dim), np.float32)
        mark_absorbing(obs, actions, np.ones(1, bool))
        return float(self.model.reward(torch.as_tensor(obs, device=self.device),
                                       torch.as_tensor(actions, device=self.device))[0])

    def step(self, actions: np.ndarray):
        obs_before, action_in = self._obs, self.model_input(actions)
        states = self.sim_states() if self.record_states else None  # the states the actions are taken in
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.pool.add(obs_before, action_in, reward, self._episode, states, terminated)
        ended = terminated | truncated
        if ended.any():  # the next rows of these envs belong to new episodes
            self._episode[ended] = self._next_episode + np.arange(ended.sum())
            self._next_episode += int(ended.sum())
        self._obs = obs
        info = {**info, "true_reward": reward}
        if self.use_model:
            with torch.no_grad():
                reward = self.model.reward(torch.as_tensor(obs_before, device=self.device),
                                           torch.as_tensor(action_in, device=self.device)).cpu().numpy()
                if self.absorbing_tail and terminated.any():  # the discounted absorbing steps after the end
                    reward = reward + terminated * (self.absorbing_tail * self.absorbing_reward())
        return obs, reward.astype(np.float32), terminated, truncated, info

    def add_worker_steps(self, steps: dict[str, np.ndarray | None]) -> None:
        """Remote workers' steps (``StepRecorder.take``, joined along the env axis in worker order) into the pool.
        A worker numbers its own episodes; a new number in an env's column starts a new episode here, so segments
        never join two episodes, also across a worker restart (resume)."""
        if not steps:
            return
        for t in range(len(steps["episode"])):
            new = steps["episode"][t] != self._worker_episode
            self._worker_episode = steps["episode"][t]
            self._episode[new] = self._next_episode + np.arange(new.sum())
            self._next_episode += int(new.sum())
            self.pool.add(steps["obs"][t], steps["actions"][t], steps["rewards"][t], self._episode,
                          None if steps["states"] is None else steps["states"][t], steps["terminated"][t])


# ---------------------------------------------------------------------------------------------------- agent
class PrefAgent:
    # The run's checkpoint check leaves the reward model to load_state_dict: a model saved before batch norm gets
    # the options that rebuild it (resume) or is skipped (evaluation only acts), see _load_reward_model.
    self_checked_state = ("reward_model",)

    def __init__(self, cfg: PrefConfig, ctx: BuildContext):
        cfg.validate()
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        env = ctx.env
        obs_space, action_space = env.single_observation_space, env.single_action_space
        action_dim = action_space.n if isinstance(action_space, gym.spaces.Discrete) else int(np.prod(action_space.shape))
        if cfg.absorbing:
            if len(obs_space.shape) != 1:
                raise ConfigError(f"Env '{env.name}': --absorbing is implemented for vector observations, got shape "
                                  f"{obs_space.shape}. Fix: --absorbing false")
            if not cfg.reward_actions:
                raise ConfigError("--absorbing marks absorbing steps in the reward model's action input; it needs "
                                  "--reward_actions true")
            action_dim += 1  # the reward model's 'absorbing' flag input
        # Atari observations stack S frames: comparisons keep each segment's K + S - 1 distinct frames only
        self.stack = obs_space.shape[0] if is_atari(env.name) and len(obs_space.shape) >= 3 else 0
        if cfg.reward_precision == "bf16" and len(obs_space.shape) == 3:  # vector observations ignore it
            check_bf16(self.device, "reward_precision")
        self.model = RewardEnsemble(obs_space.shape, action_dim, cfg.members, tuple(cfg.reward_hidden),
                                    scale=cfg.reward_scale, precision=cfg.reward_precision,
                                    frame_stack=self.stack > 0 and len(obs_space.shape) == 3, clip=cfg.reward_clip,
                                    trim=cfg.normalization_trim, use_actions=cfg.reward_actions,
                                    dropout=cfg.reward_dropout, batch_norm=cfg.reward_batch_norm).to(self.device)
        self.trainer = EnsembleTrainer(self.model, cfg.reward_lr, cfg.reward_batch, cfg.noise, cfg.l2_init, ctx.seed)
        self.human = cfg.oracle == "human"
        # what people's clips are rendered from: MuJoCo simulator states, or Atari frames (already in the pool)
        self.clip_source, state_dim = _check_human_labels(env, ctx) if self.human else (None, 0)
        # with remote workers (--workers) they step the envs and reward with a copy of the model; their steps come
        # back with each rollout (worker_payload) into the learner's pool. A worker's own copy (training False)
        # only records the steps of one request.
        self.remote = isinstance(env, WorkerGroup)
        self.pool = (SegmentPool(cfg.pool_steps, env.num_envs, obs_space.shape, obs_space.dtype, action_dim, state_dim)
                     if ctx.training else StepRecorder())
        self.env = LearnedRewardEnv(env, self.model, self.pool, action_dim, self.device)
        self.env.record_states = self.clip_source == "states"
        self.store = LabelStore(ctx.run_dir / "labels.sqlite") if self.human and ctx.run_dir is not None else None
        self.pending: dict[int, dict[str, Tensor]] = {}  # pairs shown to people, waiting for an answer
        self.label_seq = 0  # the last answer read from the store
        self.rl = _build_rl_agent(cfg, dataclasses.replace(ctx, env=env if self.remote else self.env))
        if self.remote:
            self.rl.collector.extra_modules = {"reward_model": self.model}  # workers reward with the learner's model
        if cfg.absorbing:
            gamma = self.rl.cfg.gamma
            if gamma >= 1.0:
                raise ConfigError("--absorbing needs the RL agent's gamma < 1 (the absorbing tail is worth "
                                  "r_hat * gamma / (1 - gamma)); set --rl.gamma")
            self.env.absorbing_tail = gamma / (1.0 - gamma)
        self.oracle = SyntheticOracle(cfg.oracle_temperature, seed=ctx.seed)
        self.rng = np.random.default_rng(ctx.seed + 1)
        # the comparisons: segment obs [P, K, ...] (Atari: their K + S - 1 frames) and actions [P, K, A] of both
        # sides, label mu [P], true returns [P, 2]
        self.comparisons: dict[str, Tensor] = {}
        self.extra_steps = 0  # warm-up steps of the initial policy
        self.started = False
        self.pretrained = False  # the reward model has had its pretraining passes over the initial comparisons
        self.initial_pairs: list[int] = []  # people's labels: the initial pairs pretraining waits for
        self.warned_untrained = False
        self.labels_asked = 0  # all labels so far (the FIFO of comparisons may keep fewer)
        self.starved = 0  # iterations whose labels waited for the pool to hold a segment

    @property
    def env_steps(self) -> int:
        return self.rl.env_steps + self.extra_steps

    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        return self.rl.act(obs, deterministic)

    # --- remote workers (rlkit2/remote.py): each worker holds an acting copy of this agent ---------------------
    @property
    def rollout_agent(self):
        """The agent whose collector steps the envs: the RL agent."""
        return self.rl

    def acting_modules(self) -> dict[str, torch.nn.Module]:
        return {**self.rl.acting_modules(), "reward_model": self.model}

    def worker_payload(self) -> dict[str, np.ndarray | None]:
        """On a worker, after a rollout: its steps, for the learner's segment pool."""
        return self.pool.take()

    def warm_up_on_worker(self, steps: int) -> dict[str, np.ndarray | None]:
        """On a worker: ``steps`` steps of the initial policy per env, returned for the learner's pool."""
        self._warm_up_steps(steps)
        return self.pool.take()

    def export_module(self) -> nn.Module:
        """The policy is the inner RL agent's (the reward model only trains it)."""
        return self.rl.export_module()

    @property
    def num_labels(self) -> int:
        """Comparisons held for training (all of them unless max_comparisons keeps only the newest)."""
        return len(self.comparisons["mu"]) if self.comparisons else 0

    # --- one iteration ---------------------------------------------------------------------------------------
    def train_iteration(self) -> dict[str, float]:
        cfg = self.cfg
        stats: dict[str, float] = {}
        if not self.started:
            self.started = True
            self._warm_up()
            self._ask(labels_due(0, cfg.labels, self.ctx.total_steps, cfg.initial_share, cfg.label_tau,
                                 cfg.initial_labels, cfg.label_rate_every))
            self.initial_pairs = sorted(self.pending)
        if not self.pretrained:
            if self.human and cfg.wait_for_initial_labels and not self._wait_for_initial_labels():
                # asked to stop while waiting: no RL step; the run loop saves, and a resumed run waits again
                return {"pref/labels": float(self.labels_asked), "pref/waiting_for_people": float(len(self.pending))}
            if self.human:
                self._read_answers()
            if self._initial_answered():
                stats.update(self._fit(cfg.pretrain_epochs, batches=0))  # pretraining: full passes
                self.pretrained = True
            elif not self.warned_untrained:
                self.warned_untrained = True
                warnings.warn(f"--wait_for_initial_labels false: RL starts on an untrained reward model; it is "
                              f"pretrained once people answer the {len(self.initial_pairs)} initial pairs "
                              f"({command('label')} {self.ctx.run_dir})", stacklevel=2)
        stats.update(self.rl.train_iteration())
        if self.remote:
            self._add_worker_steps(self.rl.collector.take_payloads())
        start = time.perf_counter()
        due = labels_due(self.env_steps, cfg.labels, self.ctx.total_steps, cfg.initial_share, cfg.label_tau,
                         cfg.initial_labels, cfg.label_rate_every)
        self._ask(due - self.labels_asked)
        if self.human:
            self._read_answers()
            stats["pref/waiting_for_people"] = float(len(self.pending))
        stats.update(self._fit(cfg.reward_epochs, cfg.reward_batches))
        stats["time/reward_model"] = time.perf_counter() - start
        return stats

    def _initial_answered(self) -> bool:
        return not any(pair in self.pending for pair in self.initial_pairs)

    def _wait_for_initial_labels(self) -> bool:
        """Block until people have answered every initial pair ("can't tell" counts), reading their answers as
        they come and saying every WAIT_REPORT_SECONDS how many are in and where to answer. Returns False as soon
        as the run is asked to stop (SIGINT/SIGTERM): the answers stay in the store and the pairs in the
        checkpoint, so a resumed run goes on waiting where this one left off."""
        total, last_report = len(self.initial_pairs), -math.inf
        while True:
            self._read_answers()
            answered = total - sum(pair in self.pending for pair in self.initial_pairs)
            if answered == total:
                if total:
                    print(f"pref: the {total} initial pairs are answered; pretraining the reward model, then RL "
                          "starts", flush=True)
                return True
            if self.ctx.stop_requested():
                print(f"pref: stopped while waiting for the initial labels ({answered} of {total} answered); "
                      f"{command('train')} --resume {self.ctx.run_dir} goes on waiting", flush=True)
                return False
            now = time.monotonic()
            if now - last_report >= WAIT_REPORT_SECONDS:
                last_report = now
                print(f"pref: waiting for people to label the initial pairs before RL starts: {answered} of {total} "
                      f"answered so far. Label them at {LABEL_PAGE} (start the page with: {command('label')} "
                      f"{self.ctx.run_dir}); --wait_for_initial_labels false starts RL without them", flush=True)
            time.sleep(WAIT_POLL_SECONDS)

    def _warm_up(self) -> None:
        """Fill the pool with the initial policy's steps (its rewards are not used)."""
        steps, n = max(1, self.cfg.warmup_steps // self.env.num_envs), self.env.num_envs
        if self.remote:  # the workers play them, the same number of steps in each env
            self._add_worker_steps(self.rl.collector.call(self, "warm_up_on_worker", steps))
        else:
            self._warm_up_steps(steps)
        self.extra_steps += steps * n

    def _warm_up_steps(self, steps: int) -> None:
        env = self.env
        env.use_model = False
        obs = env._obs
        for _ in range(steps):
            actions = self.rl.act(torch.as_tensor(obs, device=self.device), deterministic=False).cpu().numpy()
            obs, *_ = env.step(actions)
        env.use_model = True
        self.rl.collector.reset(seed=None)  # the RL agent starts from fresh episodes

    def _add_worker_steps(self, parts: list[dict]) -> None:
        """The workers' steps (warm-up, or the RL agent's last rollout), in worker order, into the pool."""
        if parts and parts[0]:
            joined = {key: None if parts[0][key] is None else np.concatenate([p[key] for p in parts], axis=1)
                      for key in parts[0]}
            self.env.add_worker_steps(joined)

    def _ask(self, count: int) -> None:
        """Label ``count`` new pairs, chosen among candidates_per_label x as many."""
        cfg = self.cfg
        if count <= 0:
            return
        sampled = self.pool.sample_segments(2 * count * cfg.candidates_per_label, cfg.segment_length, self.rng,
                                            cfg.absorbing)
        if sampled is None:
            self.starved += 1  # too few steps in the pool for a segment yet; asked again next iteration
            return
        rows, envs_, mask = sampled
        c = len(rows) // 2
        r = None
        if cfg.selection == "disagreement" and self.num_labels > 0:
            with torch.no_grad():  # score the candidates in chunks; gather observations only for the chosen
                r = torch.cat([self.trainer.segment_returns(*self._segments(rows[i:i + 256], envs_[i:i + 256],
                                                                            mask[i:i + 256]))
                               for i in range(0, len(rows), 256)], 1)  # [E, 2C]
            chosen = select_pairs(r[:, :c], r[:, c:], count).cpu().numpy()
        else:
            chosen = self.rng.permutation(c)[:count]
        first, second = chosen, chosen + c
        obs_1, act_1 = self._segments(rows[first], envs_[first], mask[first])
        obs_2, act_2 = self._segments(rows[second], envs_[second], mask[second])
        # true returns: absorbing steps earn 0, as the rest of a terminated episode does
        true_1 = np.where(mask[first], 0.0, self.pool.rewards[rows[first], envs_[first, None]]).sum(1)
        true_2 = np.where(mask[second], 0.0, self.pool.rewards[rows[second], envs_[second, None]]).sum(1)
        ids = torch.arange(self.labels_asked, self.labels_asked + len(chosen))
        self.labels_asked += len(chosen)
        if self.stack:
            obs_1, obs_2 = StackedSegments.compact(obs_1), StackedSegments.compact(obs_2)
        new = {"obs_1": obs_1, "act_1": act_1, "obs_2": obs_2, "act_2": act_2,
               "true_returns": torch.as_tensor(np.stack([true_1, true_2], 1)), "ids": ids}
        if self.human:  # to people: the pair waits for an answer; training goes on meanwhile
            clips_1, clips_2 = (self._clip_data(rows[idx], envs_[idx]) for idx in (first, second))
            self._show(new, clips_1, clips_2, None if r is None else r[:, :c][:, chosen] - r[:, c:][:, chosen])
            return
        new["mu"] = torch.as_tensor(self.oracle(true_1, true_2), device=self.device)
        self._add_comparisons(new)

    def _add_comparisons(self, new: dict[str, Tensor]) -> None:
        cfg = self.cfg
        for key, value in new.items():
            self.comparisons[key] = torch.cat([self.comparisons[key], value]) if key in self.comparisons else value
            if cfg.max_comparisons:  # a FIFO of the newest comparisons
                self.comparisons[key] = self.comparisons[key][-cfg.max_comparisons:]

    def _clip_data(self, rows: np.ndarray, envs_: np.ndarray) -> np.ndarray:
        """What the clips of segments (pool rows [S, K], envs [S]) are rendered from: simulator states
        [S, K, nq + nv], or the newest frame of each observation stack [S, K, H, W(, 3)] (uint8)."""
        if self.clip_source == "states":
            return self.pool.states[rows, envs_[:, None]]
        return self.pool.obs[rows, envs_[:, None], -1]

    def _show(self, new: dict[str, Tensor], clips_1: np.ndarray, clips_2: np.ndarray,
              return_gaps: Tensor | None) -> None:
        """Queue pairs for people: what their clips are rendered from goes to RUN_DIR/segments (clips are made
        when first requested), the pairs to the label store, with the ensemble's disagreement as priority."""
        folder = self.ctx.run_dir / "segments"
        folder.mkdir(parents=True, exist_ok=True)
        priority = (torch.sigmoid(return_gaps).var(0).cpu().numpy() if return_gaps is not None
                    else np.zeros(len(new["ids"])))
        rows = []
        for j in range(len(new["ids"])):
            # a fresh name per pair, never derived from a pair id: no file (or rendered clip) of a pair already
            # stored can be replaced, whatever checkpoint this run was resumed from
            name = f"seg-{secrets.token_hex(8)}"
            for side, data in ((1, clips_1[j]), (2, clips_2[j])):
                _save_new_npy(folder / f"{name}-{side}.npy", data)
            rows.append((f"{name}-1.mp4", f"{name}-2.mp4", float(priority[j])))
        ids = self.store.add_new_pairs(rows)  # the store allocates the ids
        for j, pair in enumerate(ids):
            self.pending[pair] = {k: v[j] for k, v in new.items() if k != "ids"}

    def _read_answers(self) -> None:
        """Move the pairs people answered since the last read into the comparisons (can't-tell answers drop the
        pair)."""
        answered = self.store.labels_since(self.label_seq)
        new: dict[str, list[Tensor]] = {}
        for label in answered:
            self.label_seq = label.seq
            pair = self.pending.pop(label.pair_id, None)
            if pair is None or label.mu is None:
                continue
            for key, value in pair.items():
                new.setdefault(key, []).append(value)
            new.setdefault("mu", []).append(torch.tensor(label.mu, device=self.device))
            new.setdefault("ids", []).append(torch.tensor(label.pair_id))
        if new:
            self._add_comparisons({k: torch.stack(v) for k, v in new.items()})

    def _segments(self, rows: np.ndarray, envs_: np.ndarray, mask: np.ndarray) -> tuple[Tensor, Tensor]:
        """Observations [S, K, ...] and model actions [S, K, A] of segments (pool rows [S, K], envs [S]); absorbing
        steps (``mask``) get a zero observation and a zero action with the absorbing flag (the last column) set."""
        obs = self.pool.obs[rows, envs_[:, None]]
        actions = self.pool.actions[rows, envs_[:, None]]
        if mask.any():
            obs, actions = obs.copy(), actions.copy()
            mark_absorbing(obs, actions, mask)
        return torch.as_tensor(obs, device=self.device), torch.as_tensor(actions, device=self.device)

    def _fit(self, epochs: int, batches: int) -> dict[str, float]:
        if self.num_labels == 0 or (epochs == 0 and batches == 0):
            return {"pref/labels": float(self.labels_asked)}
        c = self.comparisons
        obs_1, obs_2 = ((StackedSegments(c[k], self.stack) if self.stack else c[k]) for k in ("obs_1", "obs_2"))
        report = self.trainer.fit(obs_1, c["act_1"], obs_2, c["act_2"], c["mu"], c["ids"].numpy(), epochs, batches,
                                  self.cfg.fit_eval_pairs)
        obs, actions, true = self.pool.recent(self.cfg.normalization_steps or self.cfg.pool_steps)
        obs_t, act_t = torch.as_tensor(obs, device=self.device), torch.as_tensor(actions, device=self.device)
        predicted = self.model.fit_normalization(obs_t, act_t).cpu().numpy()
        stats = {"pref/labels": float(self.labels_asked), "pref/heldout_accuracy": report.accuracy,
                 "pref/train_loss": float(np.mean(report.train_loss)), "pref/val_loss": float(np.nanmean(report.val_loss)),
                 "pref/l2": float(np.mean(report.l2))}
        if self.env.absorbing_tail:  # what ending an episode is worth to the RL agent, per absorbing step
            stats["pref/absorbing_reward"] = self.env.absorbing_reward()
        # how well r_hat tracks the true reward on the recent steps (a diagnostic the RL agent never sees)
        if len(true) > 2 and true.std() > 0 and predicted.std() > 0:
            stats["pref/reward_correlation"] = float(np.corrcoef(predicted, true)[0, 1])
        return stats

    # --- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rl": self.rl.state_dict(), "reward_model": self.model.state_dict(), "trainer": self.trainer.state_dict(),
                "comparisons": {k: v.cpu() for k, v in self.comparisons.items()}, "extra_steps": self.extra_steps,
                "started": self.started, "pretrained": self.pretrained, "initial_pairs": list(self.initial_pairs),
                "labels_asked": self.labels_asked, "label_seq": self.label_seq,
                "pending": {str(k): {n: t.cpu() for n, t in v.items()} for k, v in self.pending.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rl.load_state_dict(state["rl"])
        _load_reward_model(self.model, self.trainer, state, self.ctx.training)
        self.comparisons = {k: v.to(self.device) for k, v in state["comparisons"].items()}
        self.extra_steps, self.started = int(state["extra_steps"]), bool(state["started"])
        self.pretrained = bool(state.get("pretrained", self.started))  # older checkpoints pretrained at the start
        self.initial_pairs = [int(p) for p in state.get("initial_pairs", [])]
        self.labels_asked = int(state["labels_asked"])
        self.label_seq = int(state.get("label_seq", 0))
        self.pending = {int(k): {n: t.to(self.device) for n, t in v.items()} for k, v in state.get("pending", {}).items()}

    def resume_state(self) -> dict[str, Any]:
        """What only resuming needs (kept out of 'best' checkpoints): the pool of recent steps (the candidates and
        the normalisation statistics come from it) and the random generators."""
        pool = self.pool
        arrays = {k: torch.from_numpy(getattr(pool, k).copy()) for k in ("obs", "actions", "rewards", "episode",
                                                                              "terminated", "states")}
        return {"pool": arrays | {"written": pool.written},
                "next_episode": self.env._next_episode, "rng": self.rng.bit_generator.state,
                "oracle_rng": self.oracle.rng.bit_generator.state}

    def load_resume_state(self, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        for key, value in state["pool"].items():
            setattr(self.pool, key, value.numpy() if torch.is_tensor(value) else value)
        # the envs were reset: their next steps belong to new episodes
        n = self.env.num_envs
        self.env._next_episode = int(state["next_episode"]) + n
        self.env._episode = int(state["next_episode"]) + np.arange(n)
        self.rng.bit_generator.state = state["rng"]
        self.oracle.rng.bit_generator.state = state["oracle_rng"]


def _save_new_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path``, which must not exist: to a temporary file, then hard-linked into place, so a
    reader never sees half a file and an existing file is never replaced (os.link fails instead)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part.npy")
    np.save(tmp, array)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()


def _check_human_labels(env, ctx: BuildContext) -> tuple[str, int]:
    """Labels from people need clips: Atari frames (the newest of each observation stack, kept in the pool
    anyway), or MuJoCo simulator states read from a sync gymnasium backend. Returns ("frames", 0) or
    ("states", state size)."""
    if ctx.training and ctx.run_dir is None:
        raise ConfigError("--oracle human keeps its label store in the run directory; train through "
                          f"{command('train')} or rlkit2.run.train")
    if isinstance(env, WorkerGroup):  # the workers' envs: check one built as theirs are
        probe = envs.make(env.spec.env, 1, seed=0, **env.spec.make_kwargs)
        try:
            return _check_human_labels(probe, ctx)
        finally:
            probe.close()
    space = env.single_observation_space
    if is_atari(env.name):
        if space.dtype != np.uint8 or len(space.shape) not in (3, 4):
            raise ConfigError(f"Env '{env.name}': --oracle human shows Atari clips from stacked uint8 frames, got "
                              f"observations {space.dtype} {space.shape}")
        return "frames", 0
    inner = getattr(getattr(env, "backend", None), "vec", None)
    envs_ = getattr(inner, "envs", None)
    if not envs_ or not hasattr(envs_[0].unwrapped, "set_state"):
        raise ConfigError(f"Env '{env.name}': --oracle human needs clips, rendered from Atari frames or from "
                          "MuJoCo simulator states (which needs a MuJoCo env on the sync backend). Fix: an Atari "
                          "env, --backend sync with a MuJoCo env, or --oracle synthetic.")
    return "states", len(mujoco_state(envs_[0]))


def _load_reward_model(model: RewardEnsemble, trainer: EnsembleTrainer, state: dict, training: bool) -> None:
    """The saved reward model and its trainer, or a clear error naming the options of its conv layout (a checkpoint
    from before the paper's batch norm and dropout were added has neither). Evaluation only acts: it goes on
    without them."""
    try:
        model.load_state_dict(state["reward_model"])
    except ValueError as e:
        fix = "--reward_batch_norm false --reward_dropout 0" if model.batch_norm else "--reward_batch_norm true"
        if training:
            raise ConfigError(f"Checkpoint: {e}. Resume it with {fix}: {command('train')} --resume RUN_DIR "
                              f"{fix}") from None
        warnings.warn(f"Checkpoint: {e}; the policy is evaluated without it (to load it: {fix})", stacklevel=3)
        return
    trainer.load_state_dict(state["trainer"])


def _build_rl_agent(cfg: PrefConfig, ctx: BuildContext):
    from rlkit2.run import resolve_config  # the inner agent's preset for this env family, then --rl.* options

    if cfg.rl_agent == "pref":
        raise ConfigError("Option 'rl_agent' cannot be 'pref' itself; use ppo or a2c")
    spec = get_agent_spec(cfg.rl_agent)
    fields = set(spec.config_cls.__dataclass_fields__)
    unknown = sorted(k for k in cfg.rl if k.replace("-", "_").split(".")[0] not in fields)
    if unknown:
        raise ConfigError(f"Options {', '.join('--rl.' + k for k in unknown)} are not options of agent "
                          f"'{cfg.rl_agent}'. See: {command('train')} --agent {cfg.rl_agent} --help")
    _, rl_cfg = resolve_config(cfg.rl_agent, ctx.env.name, dict(cfg.rl))
    agent = spec.build(rl_cfg, ctx)
    if not hasattr(agent, "collector"):
        raise ConfigError(f"Agent '{cfg.rl_agent}' cannot train on the learned reward here; use ppo or a2c")
    return agent


def build(cfg: PrefConfig, ctx: BuildContext) -> PrefAgent:
    return PrefAgent(cfg, ctx)


SPEC = AgentSpec("pref", PrefConfig, build, PRESETS / "pref.toml",
                 "an RL agent (PPO) on a reward model learned from segment comparisons (synthetic labels)",
                 remote_workers=True)
