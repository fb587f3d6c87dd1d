"""Value Prediction Networks (Oh, Singh, Lee, NeurIPS 2017, arXiv 1707.03497), following the official code
(junhyukoh/value-prediction-network: ``model.py``, ``vpn.py``, ``q.py``, ``async.py``), and the paper's
model-free baseline, n-step Q-learning with the same encoder (``--method nstep_q``).

Modules (all option-conditional; s is the encoder's feature map):
    f_enc(x) -> s         convs 32, 32, 64 (kernels 3, 3, 4; strides 1, 1, 2; SAME; ELU)
    f_value(s) -> V(s)    FC 64 ELU -> 1
    f_out(s, o) -> r, t   3x3 option-conv ELU, 3x3 conv ELU; heads FC 64 ELU -> 1; duration t = ReLU(.) + 1
    f_trans(s, o) -> s'   3x3 option-conv ELU, 3x3 conv ELU = h; s' = ELU(conv3x3(h) * sigmoid(conv1x1(h)) + s)
    core(s, o) = (r, gamma^t, V(s'), s');   Q(s, o) = r + gamma^t V(s')
    (an option-conv is one conv with |O| x C output channels: a filter bank per option.)

Planning (``plan``; depth d = len(branch)):
    Q^d(s, o) = r + gamma^t V^d(s'),   V^1(s) = V(s),   V^d(s) = V(s)/d + (d-1)/d max_o Q^{d-1}(s, o),
    expanding at depth i only the top branch[i] options by one-step Q; unexpanded root options are never
    chosen. Acting: epsilon-greedy on Q^d, epsilon annealed linearly from 1 to eps_final over eps_steps.

Training (``train_iteration``: an n-step rollout of T options from each of N envs, then one update):
    R_T = max_o Q^d(x_T, o) planned with the *target* network (0 after a terminal; V(final obs) after a
          truncation); R_t = r_t + gamma^{tau_t} R_{t+1}, with r_t the option's rewards discounted inside the
          option and tau_t its duration (the SMDP recursion);
    L = sum_t sum_{l=1..k} H(R_{t+1} - v^l_t) + H(r_t - r^l_t) + H(tau_t - tau^l_t),
        (r^l_t, tau^l_t, v^l_t): the core unrolled l steps from s_{t-l+1} with the executed options (v^l_t is
        the predicted value of the state after option t); H = Huber; k = prediction_steps, by default the
        plan depth d (the official runs pair --prediction-step with the branch list: k = d = 1, 2, 3, 5); the
        loss runs over one episode's piece of a rollout at a time;
      + the reward and duration terms on windows of up to T options of a buffer of random-policy rollouts
        (official code; not in the paper; ``random_buffer = 0`` turns it off);
    Adam, lr * lr_decay^(env steps / 1e6), global gradient-norm clip 40; target network copied every
    ``target_sync`` env steps. Env steps are options (the official global step).
    nstep_q: Q(s, o) = FC 1(FC 64(f_trans(s, o))) (the official q model) and L = sum_t H(R_t - Q(s_t, o_t)),
    R_T = max_o Q_target(x_T, o).

Synchronous instead of the paper's 16 asynchronous workers: the N envs play one rollout of T options each with
the same parameters. An official worker's rollout stops at a terminal, and the worker then takes one Adam step
on it (the loss summed over time and unroll steps) with one random-buffer window. We cut each env's rollout at
its episode ends into pieces and take one Adam step per piece, one after the other, each with one window. An
official worker's next rollout starts at the new episode, while our T-option window runs on across the episode
end, so a window that straddles one gives two short pieces: under random options on Collect we take ~158 Adam
steps per 1,000 options where the official workers take ~128 (``scripts/bench/vpn_collect.py adam-steps``), on
shorter pieces on average. What else differs: an official worker played its rollout with parameters a few steps
stale, ours are up to the number of pieces stale; all bootstrap values of an iteration come from the same target network; and the 16 workers had an Adam
each (moment estimates updated every 16th step) where we have one. (``rollouts_per_update 0`` takes one Adam
step on all pieces instead: many times fewer steps, which learned far slower in our tests at the same learning
rate.)

Other differences from the official code, all small: the remaining-time input is a plane of the observation
(envs/collect.py), so it enters the first conv instead of being tiled onto the feature map; the official env
discounts inside an option with 0.99 while the agent uses 0.98 -- we discount with the agent's gamma; the
random-policy buffer is collected on separate envs at the start and regenerated (not saved) on resume;
unexpanded root options score -inf instead of -100.
"""

from __future__ import annotations

import copy
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

import envs
from rlkit2.agent import ActingModule, AgentSpec, BuildContext, NonFiniteLossError
from rlkit2.collector import EpisodeStats
from rlkit2.config import ConfigError, check_ranges
from rlkit2.device import set_threads

PRESETS = Path(__file__).parent / "presets"


@dataclass
class VPNConfig:
    method: Literal["vpn", "nstep_q"] = "vpn"
    """'vpn': value prediction network with planning; 'nstep_q': the model-free n-step Q-learning baseline with
    the same encoder (the paper's DQN comparison)."""
    branch: tuple[int, ...] = (4, 4, 4)
    """Options expanded at each planning depth; the plan depth d is its length (official VPN(3): 4,4,4;
    VPN(5): 4,4,4,1,1)."""
    prediction_steps: int = 0
    """k, the unroll length of the training loss; 0 = the plan depth d = len(branch), as the official runs pair
    them (VPN(1): k 1, VPN(3): k 3, VPN(5): k 5)."""
    gamma: float = 0.98
    """Discount per primitive step."""
    lr: float = 1e-4
    """Adam learning rate (official: 1e-4)."""
    lr_decay: float = 0.9
    """The learning rate is lr * lr_decay^(env steps / 1e6) (official: 0.9 for VPN(1-3), 0.8 for VPN(5))."""
    grad_clip: float = 40.0
    """Global gradient-norm clip (official: 40)."""
    rollouts_per_update: int = 1
    """Rollout pieces (an env's rollout cut at episode ends) per Adam step: 1 = one step per piece, as each
    official worker takes; 0 = all pieces of the iteration in one step."""
    num_steps: int = 10
    """T, options per env per rollout (official t_max: 10)."""
    target_sync: int = 10_000
    """Copy the network to the target network every this many env steps (official: 10k)."""
    eps_final: float = 0.05
    """Final exploration epsilon (official: 0.05)."""
    eps_steps: int = 1_000_000
    """Env steps over which epsilon anneals from 1 to eps_final (official: 1M)."""
    eval_epsilon: float = 0.0
    """Epsilon of act(deterministic=False) (stochastic evaluation); deterministic evaluation is greedy."""
    random_buffer: int = 1_000_000
    """Options of random-policy experience for the extra reward/duration loss (official: 1M); 0 = off."""
    filters: tuple[int, ...] = (32, 32, 64)
    """Encoder conv channels (official: 32, 32, 64)."""
    kernels: tuple[int, ...] = (3, 3, 4)
    """Encoder conv kernel sizes (official: 3, 3, 4)."""
    strides: tuple[int, ...] = (1, 1, 2)
    """Encoder conv strides (official: 1, 1, 2)."""
    hidden: int = 64
    """Width of the value, reward and duration heads (official dim: 64)."""

    def validate(self) -> None:
        check_ranges(self, non_negative=("rollouts_per_update",),
                     positive=("lr", "grad_clip", "num_steps", "target_sync", "eps_steps"),
                     unit_interval=("gamma", "lr_decay", "eps_final", "eval_epsilon"))
        if not self.branch or min(self.branch) < 1:
            raise ConfigError(f"Option 'branch' must list positive widths, one per planning depth, e.g. "
                              f"--branch 4,4,4; got {self.branch}")
        check_ranges(self, non_negative=("prediction_steps",))
        if self.random_buffer != 0 and self.random_buffer < self.num_steps:
            raise ConfigError(f"Option 'random_buffer' must be 0 (off) or at least num_steps ({self.num_steps}) "
                              f"options, got {self.random_buffer}")
        if not (len(self.filters) == len(self.kernels) == len(self.strides) >= 1):
            raise ConfigError(f"Options 'filters', 'kernels' and 'strides' need one entry per encoder layer; got "
                              f"{self.filters}, {self.kernels}, {self.strides}")

    @property
    def unroll(self) -> int:
        return self.prediction_steps or len(self.branch)


# ------------------------------------------------------------------------------------------- the networks
class SameConv2d(nn.Conv2d):
    """A conv with TensorFlow's 'SAME' padding: output size ceil(input / stride), the extra pixel at the end."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__(in_channels, out_channels, kernel, stride)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class OptionConv(nn.Module):
    """A 3x3 conv with one filter bank per option: [B, C, H, W] -> [B, O, C, H, W] (all options), or the
    banks of the given options -> [B, C, H, W]."""

    def __init__(self, channels: int, num_options: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, num_options * channels, 3, padding=1)
        self.num_options, self.channels = num_options, channels

    def forward(self, s: Tensor, options: Tensor | None = None) -> Tensor:
        out = F.elu(self.conv(s)).unflatten(1, (self.num_options, self.channels))
        if options is None:
            return out
        return out[torch.arange(s.shape[0], device=s.device), options]


class VPNNet(nn.Module):
    """Encoder, value, outcome and transition modules; ``core_all`` applies every option at once."""

    def __init__(self, obs_space: gym.spaces.Box, num_options: int, cfg: VPNConfig):
        super().__init__()
        channels, height, width = obs_space.shape
        high = np.broadcast_to(obs_space.high, obs_space.shape).astype(np.float32)
        finite = np.isfinite(high).all() and (high > 0).all()
        # obs / high: the official [0, 1] inputs (uint8 frames: / 255; Collect: planes 0/1, time / max_steps)
        self.register_buffer("obs_scale", torch.as_tensor(1.0 / high if finite else np.ones_like(high)))
        layers: list[nn.Module] = []
        for out, k, stride in zip(cfg.filters, cfg.kernels, cfg.strides):
            layers += [SameConv2d(channels, out, k, stride), nn.ELU()]
            channels = out
        self.encoder = nn.Sequential(*layers)
        with torch.no_grad():
            self.state_shape = tuple(self.encoder(torch.zeros(1, *obs_space.shape)).shape[1:])
        c, flat = self.state_shape[0], int(np.prod(self.state_shape))
        self.num_options = num_options

        def head() -> nn.Sequential:
            out = nn.Linear(cfg.hidden, 1)
            nn.init.normal_(out.weight, std=0.01 / math.sqrt(cfg.hidden))  # small initial outputs, as official
            nn.init.zeros_(out.bias)
            return nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.hidden), nn.ELU(), out)

        self.value = head()
        # the model-free baseline's Q head (official q model: FC dim then FC 1, no activation between)
        q_out = nn.Linear(cfg.hidden, 1)
        nn.init.normal_(q_out.weight, std=0.01 / math.sqrt(cfg.hidden))
        nn.init.zeros_(q_out.bias)
        self.q_head = nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.hidden), q_out)
        self.out_conv = OptionConv(c, num_options)
        self.out_body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ELU())
        self.reward, self.duration = head(), head()
        self.trans_conv = OptionConv(c, num_options)
        self.trans_body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ELU())
        self.trans_gate = nn.Conv2d(c, c, 1)
        self.trans_out = nn.Conv2d(c, c, 3, padding=1)
        # the official initialisers: Glorot-uniform for the outcome module's convs, He for the other convs,
        # Glorot for the heads' hidden layers (their last layers stay small, above)
        outcome = {id(m) for m in [*self.out_conv.modules(), *self.out_body.modules()]}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if id(m) in outcome:
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.out_features > 1:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, obs: Tensor) -> Tensor:
        return self.encoder(obs.float() * self.obs_scale)

    def _after_option(self, s: Tensor, h_out: Tensor, h_trans: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per (state, option) rows: outcome features h_out and transition features h_trans -> r, t, s'."""
        h = self.out_body(h_out)
        r, t = self.reward(h).squeeze(-1), F.relu(self.duration(h).squeeze(-1)) + 1.0
        g = self.trans_body(h_trans)
        s_next = F.elu(self.trans_out(g) * torch.sigmoid(self.trans_gate(g)) + s)
        return r, t, s_next

    def core(self, s: Tensor, options: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The executed options: s [B,C,H,W], options [B] -> r [B], t [B], V(s') [B], s' [B,C,H,W]."""
        r, t, s_next = self._after_option(s, self.out_conv(s, options), self.trans_conv(s, options))
        return r, t, self.value(s_next).squeeze(-1), s_next

    def core_all(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every option: s [B,...] -> r, t, V(s') [B,O] and s' [B,O,C,H,W]."""
        b, o = s.shape[0], self.num_options  # shape[0], not len(): a traced export keeps the batch size free
        s_rep = s.unsqueeze(1).expand(b, o, *s.shape[1:]).flatten(0, 1)
        r, t, s_next = self._after_option(s_rep, self.out_conv(s).flatten(0, 1), self.trans_conv(s).flatten(0, 1))
        v = self.value(s_next).squeeze(-1)
        return r.view(b, o), t.view(b, o), v.view(b, o), s_next.view(b, o, *s.shape[1:])

    def q_model_free(self, s: Tensor) -> Tensor:
        """nstep_q baseline: Q(s, o) = q_head(f_trans(s, o)) for every option, [B, O]."""
        b, o = s.shape[0], self.num_options
        s_rep = s.unsqueeze(1).expand(b, o, *s.shape[1:]).flatten(0, 1)
        g = self.trans_body(self.trans_conv(s).flatten(0, 1))
        s_next = F.elu(self.trans_out(g) * torch.sigmoid(self.trans_gate(g)) + s_rep)
        return self.q_head(s_next).view(b, o)


# --------------------------------------------------------------------------------- planning and the losses
def plan(core_all, s: Tensor, branch: tuple[int, ...], gamma: float) -> Tensor:
    """Q^d(s, o) [B, O] by d-step planning, d = len(branch) (module docstring); unexpanded options get -inf.

    core_all(s [M, ...]) -> (r, t, v_next [M, O], s_next [M, O, ...]); the expansion is batched over all B roots
    and all kept nodes of a depth: depth i makes one core_all call on B * prod(branch[:i]) states."""
    depth = len(branch)
    rewards, discounts, values, keep = [], [], [], []
    num_options = 0
    states = s
    for i, b in enumerate(branch):
        r, t, v, s_next = core_all(states)
        num_options = num_options if i else r.shape[1]
        g = gamma ** t
        b = min(b, r.shape[1])
        top = (r + g * v).topk(b, dim=1).indices  # [M, b] by one-step Q
        rewards.append(r.gather(1, top).flatten())
        discounts.append(g.gather(1, top).flatten())
        values.append(v.gather(1, top).flatten())
        keep.append(top)
        if i + 1 < depth:
            states = s_next[torch.arange(states.shape[0], device=s.device)[:, None], top].flatten(0, 1)
    # backup from the leaves: V^1 = V at the last depth, then V^{n+1} = (V + n max Q^n) / (n + 1)
    v_plan = values[-1]
    for i in reversed(range(depth)):
        q_plan = rewards[i] + discounts[i] * v_plan  # [M_i * b_i] = Q^{depth-i}
        if i > 0:
            n = float(depth - i)
            q_max = q_plan.view(-1, keep[i].shape[1]).max(1).values
            v_plan = (values[i - 1] + n * q_max) / (n + 1.0)
    q_root = torch.full((s.shape[0], num_options), float("-inf"), device=s.device, dtype=q_plan.dtype)
    return q_root.scatter(1, keep[0], q_plan.view(s.shape[0], -1))


def rollout_pieces(ended: np.ndarray) -> list[tuple[int, int, int]]:
    """(env, t0, t1) for each stretch of a [T, N] rollout inside one episode: cut after every ended step."""
    T, N = ended.shape
    pieces = []
    for n in range(N):
        t0 = 0
        for t in np.flatnonzero(ended[:, n]):
            pieces.append((n, t0, int(t) + 1))
            t0 = int(t) + 1
        if t0 < T:
            pieces.append((n, t0, T))
    return pieces


def _pad_time(x: Tensor, length: int) -> Tensor:
    """Pad dim 0 to ``length`` by repeating the last row (masked out by the caller's step mask)."""
    if x.shape[0] >= length:
        return x
    pad = x[-1:].expand(length - x.shape[0], *x.shape[1:])
    return torch.cat([x, torch.zeros_like(pad) if x.dtype == torch.bool else pad])


def huber(x: Tensor) -> Tensor:
    return F.huber_loss(x, torch.zeros_like(x), reduction="none", delta=1.0)


def smdp_returns(rewards: Tensor, discounts: Tensor, next_values: Tensor, continues: Tensor) -> Tensor:
    """R_t = r_t + g_t * (R_{t+1} if the episode continues after t, else next_values[t]), [T, N].
    ``discounts`` = gamma^duration; ``next_values[t]``: the value after step t where the rollout cannot supply
    R_{t+1} (the bootstrap at T-1, 0 after a terminal, V(final obs) after a truncation)."""
    returns = torch.zeros_like(rewards)
    following = next_values[-1]
    for t in reversed(range(len(rewards))):
        following = torch.where(continues[t], following, next_values[t])
        returns[t] = rewards[t] + discounts[t] * following
        following = returns[t]
    return returns


def model_losses(net: VPNNet, obs: Tensor, options: Tensor, rewards: Tensor, durations: Tensor,
                 starts: Tensor, next_returns: Tensor | None, k: int,
                 has_value: Tensor | None = None, step_mask: Tensor | None = None) -> dict[str, Tensor]:
    """The k-step losses of each trajectory ``[T, B]`` (obs ``[T, B, ...]``), summed over its time and unroll
    steps: a dict of ``[B]`` tensors. ``starts[t]``: obs t begins a new episode (an unroll from an earlier state
    into step t is masked). ``next_returns[t]`` = R_{t+1}, the target of the value after option t, for the
    trajectories in ``has_value`` ([B] bool, default all); None trains only the reward and duration terms.
    ``step_mask [T, B]``: which steps exist (trajectories of different lengths padded to T); default all.

    Unroll step l (1..k) advances the states started at every j = 0..T-l together by option j+l-1 and
    predicts the outcome of step t = j+l-1: k batched core calls instead of one per time step."""
    T, B = options.shape
    states = net.encode(obs.flatten(0, 1)).unflatten(0, (T, B))  # [T-l+1, B, ...]: the unrolls of depth l-1
    valid = torch.ones(T, B, dtype=torch.bool, device=obs.device)
    totals: dict[str, Tensor] = {}

    def add(key: str, error: Tensor, mask: Tensor) -> None:
        totals[key] = totals.get(key, 0.0) + (huber(error) * mask).sum(0)

    for l in range(1, min(k, T) + 1):
        n = T - l + 1
        steps = slice(l - 1, l - 1 + n)  # the time step t predicted from each start j = t - l + 1
        valid = valid[:n] & ~starts[steps] if l > 1 else valid
        mask = (valid if step_mask is None else valid & step_mask[steps]).float()
        r, dur, v, s_next = net.core(states[:n].flatten(0, 1), options[steps].flatten())
        add("reward", r.view(n, B) - rewards[steps], mask)
        add("duration", dur.view(n, B) - durations[steps], mask)
        if next_returns is not None:
            add("value", v.view(n, B) - next_returns[steps], mask if has_value is None else mask * has_value.float())
        states = s_next.unflatten(0, (n, B))
    return totals


# --------------------------------------------------------------------------------------------------- agent
class RandomWindows:
    """Random-policy rollouts ``[L, M]`` (M envs) from separate envs, for the reward/duration loss. A window is
    up to T consecutive options that stops at its episode's end and never starts on an episode's last option
    (the official ``RolloutMemory.sample``)."""

    def __init__(self, env: envs.VecEnv, size: int, gamma: float, seed: int):
        m = env.num_envs
        length = max(1, math.ceil(size / m))
        rng = np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        self.obs = np.zeros((length, *obs.shape), obs.dtype)
        self.options = np.zeros((length, m), np.int64)
        self.rewards = np.zeros((length, m), np.float32)
        self.durations = np.zeros((length, m), np.float32)
        self.ended = np.zeros((length, m), bool)  # the episode ended with option t
        n_options = env.single_action_space.n
        for t in range(length):
            options = rng.integers(0, n_options, m)
            self.obs[t], self.options[t] = obs, options
            obs, reward, terminated, truncated, info = env.step(options)
            self.rewards[t], self.durations[t] = option_outcome(reward, info, gamma)
            self.ended[t] = terminated | truncated
        self.ended[-1] = True  # the stored stream stops here
        self.length, self.m = length, m

    def sample(self, count: int, T: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(obs, options, rewards, durations, step mask), each ``[T', count, ...]`` with T' <= T the longest
        window; shorter windows are padded and masked."""
        t0, env = np.zeros(count, np.int64), np.zeros(count, np.int64)
        todo = np.arange(count)
        while len(todo):  # rejection: not on an episode's last option
            t0[todo], env[todo] = rng.integers(0, self.length, len(todo)), rng.integers(0, self.m, len(todo))
            todo = todo[self.ended[t0[todo], env[todo]]]
        rows = np.minimum(t0[None, :] + np.arange(T)[:, None], self.length - 1)  # [T, count]
        ended = self.ended[rows, env[None, :]]
        # a step exists while no earlier step of the window ended its episode
        mask = np.concatenate([np.ones((1, count), bool), np.cumsum(ended, 0)[:-1] == 0])
        mask &= t0[None, :] + np.arange(T)[:, None] < self.length
        T_used = int(mask.sum(0).max())
        rows, mask = rows[:T_used], mask[:T_used]
        pick = lambda x: x[rows, env[None, :]]  # noqa: E731
        return pick(self.obs), pick(self.options), pick(self.rewards), pick(self.durations), mask


def option_outcome(reward: np.ndarray, info: dict, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(discounted option reward, duration) per env from a VecEnv step. Envs with options (Collect) report
    ``option_rewards``/``option_steps`` in ``info["final_info"]``; for any other env a step is an option of
    duration 1 with the env's reward (Atari: primitive actions as options)."""
    step_info = info.get("final_info", {})
    if "option_rewards" in step_info and "option_steps" in step_info:
        raw = np.asarray(step_info["option_rewards"], np.float32)
        discounted = (raw * gamma ** np.arange(raw.shape[1], dtype=np.float32)).sum(1)
        return discounted.astype(np.float32), np.asarray(step_info["option_steps"], np.float32)
    return np.asarray(reward, np.float32), np.ones(len(reward), np.float32)


class VPNAgent:
    def __init__(self, cfg: VPNConfig, ctx: BuildContext):
        cfg.validate()
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        env = self.env = ctx.env
        _check_spaces(env.name, env.single_observation_space, env.single_action_space)
        self.num_envs, self.num_options = env.num_envs, int(env.single_action_space.n)
        # the run's budget rounds up to whole iterations (the run loop says so when it does)
        self.budget_unit = (env.num_envs * cfg.num_steps,
                            f"one iteration: num_envs {env.num_envs} x num_steps {cfg.num_steps}")
        self.net = VPNNet(env.single_observation_space, self.num_options, cfg).to(self.device)
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, fused=True)
        self.episodes = EpisodeStats()
        self.env_steps = 0
        self.updates = 0
        self.syncs = 0
        self.rng = np.random.default_rng(ctx.seed)  # exploration and random-buffer windows
        self.eval_rng = np.random.default_rng(ctx.seed + 10_000)
        self.random_windows: RandomWindows | None = None
        self._obs_np: np.ndarray | None = None
        if ctx.training:
            self._obs_np, _ = env.reset(seed=ctx.seed)

    # --- acting -------------------------------------------------------------------------------------------
    def q_values(self, net: VPNNet, obs: Tensor) -> Tensor:
        s = net.encode(obs)
        if self.cfg.method == "nstep_q":
            return net.q_model_free(s)
        return plan(net.core_all, s, tuple(self.cfg.branch), self.cfg.gamma)

    def epsilon(self) -> float:
        frac = min(1.0, self.env_steps / self.cfg.eps_steps)
        return 1.0 + frac * (self.cfg.eps_final - 1.0)

    def _epsilon_greedy(self, obs: Tensor, eps: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy options for a batch of observations. The envs that explore this step are not planned
        for: early in training, when epsilon is near 1, this skips most of the d-step planning, the bulk of
        acting's cost (the random draws are the same as when every env is planned for)."""
        n = obs.shape[0]
        explore = rng.random(n) < eps if eps > 0.0 else np.zeros(n, bool)
        options = rng.integers(0, self.num_options, n) if eps > 0.0 else np.zeros(n, np.int64)
        greedy = np.flatnonzero(~explore)
        if len(greedy):
            chosen = self.greedy_options(obs if len(greedy) == n else obs[torch.as_tensor(greedy, device=obs.device)])
            options[greedy] = chosen.cpu().numpy()
        return options

    def greedy_options(self, obs: Tensor) -> Tensor:
        """argmax_o Q^d(obs, o): deterministic acting, and the exported policy (the planner traces as one graph)."""
        return self.q_values(self.net, obs).argmax(1)

    def export_module(self) -> ActingModule:
        """Greedy acting, the encoder and the d-step planner, as one module (rlkit2/export.py)."""
        return ActingModule(self.greedy_options, {"net": self.net})

    @torch.inference_mode()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """Greedy on Q^d (deterministic), else epsilon-greedy with eval_epsilon; its own RNG, so evaluating does
        not change the training run."""
        eps = 0.0 if deterministic else self.cfg.eval_epsilon
        return torch.as_tensor(self._epsilon_greedy(obs.to(self.device), eps, self.eval_rng))

    # --- one iteration: N x T options, then one update ----------------------------------------------------
    def train_iteration(self) -> dict[str, float]:
        cfg, N, T = self.cfg, self.num_envs, self.cfg.num_steps
        set_threads(self.ctx.threads_update)
        timing = {"env": 0.0, "inference": 0.0, "update": 0.0}
        if self.random_windows is None and cfg.random_buffer > 0 and cfg.method == "vpn":
            start = time.perf_counter()
            self.random_windows = self._random_rollouts()
            timing["random_buffer"] = time.perf_counter() - start
        obs = np.zeros((T + 1, *self._obs_np.shape), self._obs_np.dtype)
        options = np.zeros((T, N), np.int64)
        rewards, durations = np.zeros((T, N), np.float32), np.zeros((T, N), np.float32)
        terminated, truncated = np.zeros((T, N), bool), np.zeros((T, N), bool)
        final_obs: list[tuple[int, np.ndarray, np.ndarray]] = []  # (t, envs, obs) of truncated episodes
        eps = self.epsilon()
        for t in range(T):
            start = time.perf_counter()
            obs[t] = self._obs_np
            with torch.inference_mode():
                options[t] = self._epsilon_greedy(torch.as_tensor(self._obs_np, device=self.device), eps, self.rng)
            timing["inference"] += time.perf_counter() - start
            start = time.perf_counter()
            self._obs_np, reward, terminated[t], truncated[t], info = self.env.step(options[t])
            timing["env"] += time.perf_counter() - start
            rewards[t], durations[t] = option_outcome(reward, info, cfg.gamma)
            self.episodes.record(info)
            if truncated[t].any():
                idx = np.flatnonzero(truncated[t])
                final_obs.append((t, idx, info["final_obs"][idx]))
        obs[T] = self._obs_np
        self.env_steps += N * T

        start = time.perf_counter()
        stats = self.update(obs, options, rewards, durations, terminated, truncated, final_obs)
        if self.env_steps // cfg.target_sync > self.syncs:
            self.syncs = self.env_steps // cfg.target_sync
            self.target.load_state_dict(self.net.state_dict())
        timing["update"] += time.perf_counter() - start
        stats.update({"charts/epsilon": eps, "charts/updates": float(self.updates)})
        returns, lengths = self.episodes.pop()
        if returns:
            stats["charts/episode_return"] = float(np.mean(returns))
            stats["charts/episode_length"] = float(np.mean(lengths))
        stats.update({f"time/{k}": v for k, v in timing.items()})
        return stats

    def _random_rollouts(self) -> RandomWindows:
        num_envs = max(1, min(64, self.cfg.random_buffer // self.cfg.num_steps))  # streams of >= T options
        env = envs.make(self.env.settings.get("env", self.env.name), num_envs,
                        seed=self.ctx.seed + 20_000, backend=self.env.settings.get("backend", "auto"),
                        env_kwargs=self.env.settings.get("env_kwargs"),
                        max_episode_steps=self.env.settings.get("max_episode_steps"),
                        atari=_atari_settings(self.env))
        try:
            return RandomWindows(env, self.cfg.random_buffer, self.cfg.gamma, self.ctx.seed + 20_000)
        finally:
            env.close()

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.as_tensor(array, device=self.device)

    def update(self, obs: np.ndarray, options: np.ndarray, rewards: np.ndarray, durations: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray,
               final_obs: list[tuple[int, np.ndarray, np.ndarray]]) -> dict[str, float]:
        """Targets for the N rollouts (time-major numpy arrays; ``obs`` has T + 1 rows), then one Adam step per
        ``rollouts_per_update`` of them."""
        cfg = self.cfg
        T, N = options.shape
        ended = terminated | truncated
        with torch.no_grad():  # bootstrap values from the target network (planned, for VPN)
            next_values = torch.zeros(T, N, device=self.device)
            next_values[-1] = self.q_values(self.target, self._tensor(obs[T])).max(1).values
            for t, idx, fobs in final_obs:
                next_values[t, self._tensor(idx)] = self.q_values(self.target, self._tensor(fobs)).max(1).values
            next_values[self._tensor(terminated)] = 0.0
            r, dur = self._tensor(rewards), self._tensor(durations)
            returns = smdp_returns(r, cfg.gamma ** dur, next_values, self._tensor(~ended))
            # R_{t+1}: the return after option t (the next step's R, or the bootstrap where the rollout ends)
            next_returns = torch.where(self._tensor(~ended), torch.cat([returns[1:], next_values[-1:]]), next_values)
        obs_t, options_t = self._tensor(obs[:T]), self._tensor(options)
        lr = cfg.lr * cfg.lr_decay ** (self.env_steps / 1e6)
        for group in self.opt.param_groups:
            group["lr"] = lr
        sums: dict[str, Tensor] = {}
        # Each env's rollout is cut at its episode ends, as an official worker's rollout stops at a terminal:
        # one Adam step per piece (rollouts_per_update pieces per step), pieces padded to a common length.
        pieces = rollout_pieces(ended)
        groups = [pieces[i:i + (cfg.rollouts_per_update or len(pieces))]
                  for i in range(0, len(pieces), cfg.rollouts_per_update or len(pieces))]
        for group in groups:
            b = len(group)
            times, env_idx, mask = self._piece_index(group)  # [L, b], [b], [L, b]
            take = lambda x: x[times, env_idx]  # noqa: E731
            if cfg.method == "nstep_q":
                L = times.shape[0]
                q = self.net.q_model_free(self.net.encode(take(obs_t).flatten(0, 1))).gather(1, take(options_t).reshape(-1, 1))
                parts = {"loss/q": (huber(q.view(L, b) - take(returns)) * mask).sum() / b}
            else:  # the pieces and (as many) random-policy windows in one batch; no value loss on the windows
                no_starts = torch.zeros_like(mask)
                batch = [take(obs_t), take(options_t), take(r), take(dur), no_starts, take(next_returns), mask]
                has_value = torch.ones(b, dtype=torch.bool, device=self.device)
                if self.random_windows is not None:
                    window = [self._tensor(a) for a in self.random_windows.sample(b, T, self.rng)]
                    window = [_pad_time(w, batch[0].shape[0]) for w in window]  # obs, options, rewards, durations, mask
                    batch = [_pad_time(x, window[0].shape[0]) for x in batch]
                    w_obs, w_opt, w_rew, w_dur, w_mask = window
                    extra = [w_obs, w_opt, w_rew, w_dur, torch.zeros_like(w_mask), torch.zeros_like(w_rew), w_mask]
                    batch = [torch.cat([x, w], 1) for x, w in zip(batch, extra)]
                    has_value = torch.cat([has_value, torch.zeros_like(has_value)])
                obs_b, opt_b, rew_b, dur_b, starts_b, next_b, mask_b = batch
                per_trajectory = model_losses(self.net, obs_b, opt_b, rew_b, dur_b, starts_b, next_b, cfg.unroll,
                                              has_value, mask_b)
                parts = {f"loss/{k}": v[:b].sum() / b for k, v in per_trajectory.items()}
                if self.random_windows is not None:
                    parts.update({f"loss/random_{k}": per_trajectory[k][b:].sum() / b for k in ("reward", "duration")})
            loss = sum(parts.values())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            self.opt.step()
            self.updates += 1
            for key, value in {"loss/total": loss, "charts/grad_norm": grad_norm, **parts}.items():
                sums[key] = sums.get(key, 0.0) + value.detach()
        keys = list(sums)
        values = (torch.stack([sums[k] for k in keys]) / len(groups)).tolist()  # one host read per iteration
        stats_steps = len(groups)
        if not all(math.isfinite(v) for v in values):
            raise NonFiniteLossError(f"A VPN loss became NaN/inf in the updates up to {self.updates}.")
        stats = dict(zip(keys, values))
        stats.update({"charts/return_target": float(returns.mean()), "charts/lr": lr,
                      "charts/adam_steps_per_iteration": float(stats_steps)})
        return stats

    def _piece_index(self, pieces: list[tuple[int, int, int]]) -> tuple[Tensor, Tensor, Tensor]:
        """Time index [L, b] (padded by repeating the last step), env index [b] and step mask [L, b] of pieces
        (env, t0, t1)."""
        L = max(t1 - t0 for _, t0, t1 in pieces)
        offsets = np.arange(L)[:, None]
        t0 = np.array([p[1] for p in pieces])
        length = np.array([p[2] - p[1] for p in pieces])
        times = t0 + np.minimum(offsets, length - 1)
        return (self._tensor(times), self._tensor(np.array([p[0] for p in pieces])),
                self._tensor(offsets < length))

    # --- checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "target": self.target.state_dict(), "opt": self.opt.state_dict(),
                "env_steps": self.env_steps, "updates": self.updates, "syncs": self.syncs,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.opt.load_state_dict(state["opt"])
        self.env_steps, self.updates, self.syncs = int(state["env_steps"]), int(state["updates"]), int(state["syncs"])
        if "rng" in state:  # exploration draws continue where they stopped
            self.rng.bit_generator.state = state["rng"]


def _atari_settings(env: envs.VecEnv):
    if "atari" not in env.settings:
        return None
    return envs.AtariSettings(**env.settings["atari"])


def _check_spaces(env_name: str, obs_space: gym.Space, action_space: gym.Space) -> None:
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"VPN plans over a discrete set of options, but env '{env_name}' has {action_space}. "
                          "Use --agent dsac or --agent ppo for continuous actions.")
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 3:
        raise ConfigError(f"VPN's encoder is convolutional and needs image-like observations [C, H, W], but env "
                          f"'{env_name}' has {obs_space}. Fix: use a grid/image env (Collect, Atari), or "
                          "--agent ppo for flat observations.")


def build(cfg: VPNConfig, ctx: BuildContext) -> VPNAgent:
    return VPNAgent(cfg, ctx)


SPEC = AgentSpec("vpn", VPNConfig, build, PRESETS / "vpn.toml",
                 "value prediction network: latent model with d-step planning (--method nstep_q: the "
                 "model-free baseline)")
