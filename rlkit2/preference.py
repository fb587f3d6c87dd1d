"""Learning a reward from preferences between trajectory segments (Christiano et al. 2017, "Deep RL from Human
Preferences", arXiv 1706.03741; cross-checked with ``imitation``'s preference_comparisons and rl-teacher).

The pieces, each usable on its own (agents/pref.py puts them together around an RL agent):
- ``bradley_terry_loss``: P'[s1 > s2] = (1 - noise) sigmoid(R^1 - R^2) + noise / 2 with R^i = sum_t r(o^i_t, a^i_t)
  (no discount inside a segment; noise = 0.1: the rater answers at random 10% of the time), cross-entropy
  against the label mu = P[s1 preferred] in {1, 0, 0.5 (tie)}; "can't tell" answers never reach it.
- ``RewardEnsemble``: E members (default 3) r_e(o, a): MLP 2x64 leaky-ReLU for vector observations, the paper's
  16-filter conv stack with batch norm and dropout 0.5 for image observations. Each member trains on its own
  bootstrap resample of the comparisons (Poisson(1) counts drawn once per pair) and validates on the pairs its
  resample left out (about 1/e of them); its L2 weight adapts so that validation loss stays between 1.1x and 1.5x
  training loss. The reward given to the RL agent is the mean over members of each member's output normalised to
  zero mean and unit std (statistics over recent (o, a)), rescaled to std ``scale``. The model rests in eval mode:
  only the trainer's steps run in train mode (batch statistics, dropout); every score that leaves it uses eval mode
  (running statistics, no dropout), so a row's reward is deterministic and independent of the rest of its batch.
- ``disagreement`` / ``select_pairs``: among ~10x more candidate pairs than labels wanted, the pairs whose
  predicted preference varies most across the members.
- ``SyntheticOracle``: prefers the segment with the higher true return; equal returns are a tie; optional
  Boltzmann noise (temperature > 0: P[s1 > s2] = sigmoid((R^1 - R^2) / temperature)).
- ``labels_due``: the label schedule, a share or a count up front (from the initial, random policy) and then a rate
  proportional to tau / (t + tau), scaled so that ``total`` labels are asked for by ``total_steps``.

Shapes: P pairs, K steps per segment, E members, B rows of (o, a).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlkit2.networks import EnsembleMLP


# --------------------------------------------------------------------------------------------- the losses
def log_preference(returns_1: Tensor, returns_2: Tensor, noise: float) -> tuple[Tensor, Tensor]:
    """(log P'[s1 > s2], log P'[s2 > s1]) with P' = (1 - noise) sigmoid(R^1 - R^2) + noise / 2, computed stably."""
    diff = returns_1 - returns_2
    if noise <= 0.0:
        return F.logsigmoid(diff), F.logsigmoid(-diff)
    keep, floor = math.log1p(-noise), math.log(noise / 2)
    floor_t = torch.full_like(diff, floor)
    return (torch.logaddexp(keep + F.logsigmoid(diff), floor_t),
            torch.logaddexp(keep + F.logsigmoid(-diff), floor_t))


def bradley_terry_loss(returns_1: Tensor, returns_2: Tensor, mu: Tensor, noise: float = 0.1) -> Tensor:
    """Mean over pairs of -(mu log P'[s1 > s2] + (1 - mu) log P'[s2 > s1]); returns ``[..., P]``, mu ``[P]``."""
    log_1, log_2 = log_preference(returns_1, returns_2, noise)
    return -(mu * log_1 + (1.0 - mu) * log_2).mean(-1)


def disagreement(returns_1: Tensor, returns_2: Tensor) -> Tensor:
    """Variance across members ([E, P] inputs) of the predicted P[s1 > s2]: ``[P]``."""
    return torch.sigmoid(returns_1 - returns_2).var(0, unbiased=False)


def select_pairs(returns_1: Tensor, returns_2: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` candidate pairs the ensemble disagrees on most, highest first."""
    return disagreement(returns_1, returns_2).argsort(descending=True)[:count]


class SyntheticOracle:
    """Labels a pair from the segments' true returns: mu = P[s1 preferred]."""

    def __init__(self, temperature: float = 0.0, seed: int = 0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.temperature = temperature
        self.rng = np.random.default_rng(seed)

    def __call__(self, true_returns_1: np.ndarray, true_returns_2: np.ndarray) -> np.ndarray:
        r1, r2 = np.asarray(true_returns_1, np.float64), np.asarray(true_returns_2, np.float64)
        if self.temperature == 0.0:
            return np.where(r1 > r2, 1.0, np.where(r1 < r2, 0.0, 0.5)).astype(np.float32)
        p = 1.0 / (1.0 + np.exp(-np.clip((r1 - r2) / self.temperature, -50, 50)))
        return (self.rng.random(len(p)) < p).astype(np.float32)


def labels_due(step: int, total: int, total_steps: int, initial_share: float = 0.25, tau: float = 2e6,
               initial_labels: int = 0, rate_every: int = 0) -> int:
    """Labels that should exist by env step ``step``: ``initial_labels`` (if > 0, else ``initial_share`` of
    ``total``) at step 0, the rest at a rate proportional to tau / (t + tau), all ``total`` by ``total_steps``.
    ``rate_every`` > 0 holds the rate for that many steps at a time, at its value at the start of each stretch (the
    paper's Atari schedule: lowered every 5e6 frames); 0 lets it change continuously (its MuJoCo schedule)."""
    initial = initial_labels if initial_labels > 0 else round(initial_share * total)
    if not 0 <= initial <= total:
        raise ValueError(f"initial labels ({initial}) must be in [0, total = {total}]")
    if step >= total_steps:
        return total

    def grown(t: float) -> float:  # the integral of the rate from 0 to t, in units of tau
        if rate_every <= 0:
            return math.log1p(t / tau)
        k = int(t // rate_every)
        held = float(np.sum(rate_every / (np.arange(k) * rate_every + tau)))  # the whole stretches
        return held + (t - k * rate_every) / (k * rate_every + tau)

    share = grown(max(step, 0)) / grown(total_steps)
    return min(total, initial + int((total - initial) * share))


# ----------------------------------------------------------------------------------------- the reward model
class StackedSegments:
    """Segments of frame-stacked observations (Atari: S frames per observation, newest last) kept as their
    distinct frames. Consecutive stacks share S - 1 frames, so a K-step segment is its K + S - 1 frames: 28
    instead of 100 for Atari's K = 25, S = 4, which matters for thousands of comparisons. Indexing gives the
    full stacks back: ``view[idx]`` is ``[*idx.shape, K, S, ...]``, as the reward model expects."""

    def __init__(self, frames: Tensor, stack: int):
        self.frames, self.stack = frames, stack  # frames [P, K + S - 1, ...]
        k = frames.shape[1] - stack + 1
        self.window = (torch.arange(k)[:, None] + torch.arange(stack)[None, :]).flatten().to(frames.device)

    @staticmethod
    def compact(obs: Tensor) -> Tensor:
        """[P, K, S, ...] stacks of segments inside one episode -> their [P, K + S - 1, ...] frames."""
        if not torch.equal(obs[:, 1:, :-1], obs[:, :-1, 1:]):
            raise ValueError("consecutive observations of a segment do not share their stacked frames: not a frame "
                             "stack with the newest frame last, or the segment crosses an episode start")
        return torch.cat([obs[:, 0], obs[:, 1:, -1]], dim=1)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, idx) -> Tensor:
        chosen = self.frames[idx]
        d = chosen.dim() - self.frames.dim() + 1  # the time dimension after indexing
        return chosen.index_select(d, self.window).unflatten(d, (-1, self.stack))


def fill_stack_padding(frames: Tensor) -> Tensor:
    """Frame stacks ``[B, S, H, W]`` (newest last) with the all-zero slots that follow a reset (our Atari envs pad
    with zeros, as ale-py's vector env does) filled with the oldest real frame, as the paper's frame stack
    (openai baselines: copies of the first frame) pads. The reward model has almost no labelled segments at episode
    starts to learn zero frames from: left in, its output there was ~1000 std off the normal range on Pong, which
    swamped PPO's value loss and advantage normalisation (docs/benchmarks.md, "Atari Pong with synthetic
    labels"). Stacks without padding pass through unchanged (a copy is made only if one has some)."""
    empty = frames.flatten(2).amax(-1) == 0  # [B, S]
    if not empty[:, :-1].any():
        return frames
    frames = frames.clone()
    for i in range(frames.shape[1] - 2, -1, -1):  # newest to oldest: each empty slot copies the next newer one
        frames[:, i] = torch.where(empty[:, i, None, None], frames[:, i + 1], frames[:, i])
    return frames


class ConvRewardMember(nn.Module):
    """The paper's Atari predictor (its App. A.2): 4 convs of 16 filters (7x7/3, 5x5/2, 3x3/1, 3x3/1), FC 64, then a
    scalar, leaky ReLU (0.01) throughout; "all convolutional layers use batch norm and dropout with alpha = 0.5 to
    prevent predictor overfitting". Each conv is followed by batch norm, leaky ReLU, then dropout, the order of
    mrahtz/learning-from-human-preferences (which reproduced Pong; it leaves out the last conv's dropout, the paper
    does not). ``batch_norm=False`` and ``dropout=0`` give the model without them (rlkit2's before they were added;
    its checkpoints load into that one only). The action, if any, enters as a one-hot next to the conv features.
    ``bf16``: the convolutions (and batch norm, on fp32 statistics) run under bfloat16 autocast (weights and output
    stay fp32), as PPO's ``--cnn_precision bf16``: about 2x faster on a CPU with AVX512-BF16
    (docs/bench/pref_reward_cost.jsonl)."""

    CONVS = ((7, 3), (5, 2), (3, 1), (3, 1))  # (kernel, stride), 16 filters each

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, dropout: float = 0.5, bf16: bool = False,
                 batch_norm: bool = True):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.bf16 = bf16
        layers: list[nn.Module] = []
        channels, height, width = obs_shape
        for k, stride in self.CONVS:
            layers.append(nn.Conv2d(channels, 16, k, stride))
            if batch_norm:
                layers.append(nn.BatchNorm2d(16))
            layers += [nn.LeakyReLU(0.01), nn.Dropout(dropout)]
            channels, height, width = 16, (height - k) // stride + 1, (width - k) // stride + 1
        if height < 1 or width < 1:
            raise ValueError(f"image observations {tuple(obs_shape)} are too small for the paper's conv stack "
                             "(at least 31x31)")
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16 * height * width + action_dim, 64), nn.LeakyReLU(0.01),
                                  nn.Linear(64, 1))

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        with torch.autocast(obs.device.type, torch.bfloat16) if self.bf16 else contextlib.nullcontext():
            features = self.convs(obs)
        return self.head(torch.cat([features.float(), actions], -1)).squeeze(-1)


class RewardEnsemble(nn.Module):
    """r_e(o, a) for e = 1..E. ``forward(obs [B, ...], actions [B, A]) -> [E, B]`` raw member outputs (in the
    module's current mode); ``reward`` -> [B], the normalised ensemble mean the RL agent sees. Image observations
    (uint8) are scaled by 1/255; discrete actions are given one-hot. ``precision="bf16"`` runs image members'
    convolutions in bfloat16. Image members have the paper's batch norm (``batch_norm``) and dropout (``dropout``,
    0.5) on every conv; each member has its own batch-norm statistics. Vector observations get the paper's MuJoCo
    MLP, which has neither (its App. A.1), and ignore both.

    Modes: the model rests in eval mode; ``EnsembleTrainer.fit`` switches it to train mode for its steps only (batch
    statistics, running statistics updated, dropout on) and back. Everything that scores it (``reward``,
    ``fit_normalization``, ``EnsembleTrainer.segment_returns`` and the held-out losses) runs under ``scoring()``:
    eval mode whatever the current mode, which is restored afterwards.
    ``frame_stack``: image observations are frame stacks [S, H, W] whose reset padding (all-zero frames) is filled
    with the oldest real frame (``fill_stack_padding``); leave it off for images whose channels are not frames.

    Guards against inputs the comparisons never covered (on Pong, the power-on frame some episodes start with gets
    rewards ~100 std off; docs/benchmarks.md): ``clip`` > 0 bounds ``reward`` to +-clip std, and ``trim`` > 0 fits
    the normalisation on outputs winsorised at their ``trim`` and ``1 - trim`` quantiles, so that a few such steps
    among the rows do not inflate the std (and shrink every other reward) for that fit.

    ``use_actions=False``: r_e(o) from observations only (the paper's Atari predictor sees frames only; an action
    input lets the policy collect a per-action bias the labels never pinned down instead of playing). The action
    arguments keep their shapes and are ignored."""

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, members: int = 3, hidden: tuple[int, ...] = (64, 64),
                 dropout: float = 0.5, scale: float = 1.0, precision: str = "fp32", frame_stack: bool = False,
                 clip: float = 0.0, trim: float = 0.0, use_actions: bool = True, batch_norm: bool = True):
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.image = len(obs_shape) == 3
        if frame_stack and not self.image:
            raise ValueError(f"frame_stack needs image observations [S, H, W], got shape {tuple(obs_shape)}")
        self.frame_stack = frame_stack
        if clip < 0 or not 0 <= trim < 0.5:
            raise ValueError(f"clip must be >= 0 and trim in [0, 0.5), got clip={clip}, trim={trim}")
        self.members, self.scale, self.clip, self.trim = members, scale, clip, trim
        self.use_actions = use_actions
        self.batch_norm = batch_norm and self.image
        action_dim = action_dim if use_actions else 0
        if self.image:  # separate modules, so each member keeps its own batch-norm statistics
            self.nets = nn.ModuleList(ConvRewardMember(obs_shape, action_dim, dropout, precision == "bf16", batch_norm)
                                      for _ in range(members))
        else:
            self.mlp = EnsembleMLP(members, int(np.prod(obs_shape)) + action_dim, hidden, 1, act="leaky_relu")
        self.register_buffer("out_mean", torch.zeros(members))
        self.register_buffer("out_std", torch.ones(members))
        self.register_buffer("mean_std", torch.ones(()))  # std of the mean of the normalised members
        self.eval()  # the scoring mode; only the trainer's steps train it

    @contextlib.contextmanager
    def scoring(self):
        """Eval mode for the duration (batch norm on its running statistics, no dropout), then each submodule's mode
        as it was: a score is deterministic and a row's score does not depend on the other rows of its batch."""
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            yield self
        finally:
            for m, training in modes:
                m.training = training

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``, with a clear error for a state saved with or without the conv members'
        batch norm when this model is the other kind (their layer keys differ)."""
        if self.image:
            saved = has_batch_norm(state_dict)
            if saved and not self.batch_norm:
                raise ValueError("the saved reward model has batch norm on its convolutions and this one has none: "
                                 "build it with batch_norm=True")
            if not saved and self.batch_norm:
                raise ValueError("the saved reward model has no batch norm on its convolutions (it was saved before "
                                 "rlkit2 gave the conv members the paper's batch norm and dropout) and this one has: "
                                 "build it with batch_norm=False and dropout=0 (the model it was saved from)")
        return super().load_state_dict(state_dict, strict, assign)

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        actions = self.action_input(actions)
        if self.image:
            x = self.image_input(obs)
            return torch.stack([net(x, actions) for net in self.nets])
        return self.mlp(torch.cat([obs.flatten(1).float(), actions], -1)).squeeze(-1)

    def action_input(self, actions: Tensor) -> Tensor:
        """Actions as the members take them: float, or no columns at all without ``use_actions``."""
        return actions.float() if self.use_actions else actions[..., :0].float()

    def image_input(self, obs: Tensor) -> Tensor:
        """Image observations ``[B, S, H, W]`` as the conv members take them: reset padding filled (frame stacks),
        uint8 scaled to [0, 1]."""
        if self.frame_stack:
            obs = fill_stack_padding(obs)
        return obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()

    @torch.no_grad()
    def fit_normalization(self, obs: Tensor, actions: Tensor, batch: int = 4096) -> Tensor:
        """Each member's output mean and std over these (o, a) rows (e.g. the recent rollouts), then the std of the
        members' normalised mean, so that ``reward`` has mean 0 and std ``scale`` on these rows. Returns
        ``reward`` of these rows (computed from the same forward pass, in eval mode)."""
        with self.scoring():
            outs = torch.cat([self(obs[i:i + batch], actions[i:i + batch]) for i in range(0, len(obs), batch)], 1)
        fit = outs
        if self.trim > 0:  # winsorise each member's outputs
            bounds = torch.quantile(outs, torch.tensor([self.trim, 1 - self.trim], device=outs.device), dim=1)
            fit = outs.clamp(bounds[0, :, None], bounds[1, :, None])
        self.out_mean.copy_(fit.mean(1))
        self.out_std.copy_(fit.std(1).clamp(min=1e-6))
        mean = ((fit - self.out_mean[:, None]) / self.out_std[:, None]).mean(0)
        self.mean_std.copy_(mean.std().clamp(min=1e-6))
        return self._scaled(((outs - self.out_mean[:, None]) / self.out_std[:, None]).mean(0))

    @torch.no_grad()
    def reward(self, obs: Tensor, actions: Tensor, batch: int = 4096) -> Tensor:
        """The reward the RL agent sees (in eval mode): the mean of the normalised members, scaled to std ``scale``
        (clipped to +-``clip`` std if set)."""
        with self.scoring():
            out = torch.cat([self(obs[i:i + batch], actions[i:i + batch]) for i in range(0, len(obs), batch)], 1)
        normalised = (out - self.out_mean[:, None]) / self.out_std[:, None]
        return self._scaled(normalised.mean(0))

    def _scaled(self, normalised_mean: Tensor) -> Tensor:
        """Unit std on the normalisation rows, clipped to +-``clip`` std if set, then times ``scale``."""
        z = normalised_mean / self.mean_std
        return self.scale * (z.clamp(-self.clip, self.clip) if self.clip > 0 else z)


def has_batch_norm(state_dict: dict) -> bool:
    """Whether a saved ``RewardEnsemble`` state has batch-norm statistics (conv members built with batch norm)."""
    return any(k.endswith("running_mean") for k in state_dict)


@dataclass
class FitReport:
    train_loss: list[float]  # per member, last epoch
    val_loss: list[float]
    l2: list[float]
    accuracy: float  # of each member on its own held-out pairs, pooled (ties count half)


class EnsembleTrainer:
    """Fits a ``RewardEnsemble`` to comparisons (segments ``[P, K, ...]`` obs and ``[P, K, A]`` actions, labels
    ``[P]``, permanent pair ids ``[P]``). Each member's bootstrap is a Poisson(1) count per pair, drawn once when
    the pair arrives (so a pair stays in or out of a member's sample as the data grows or old pairs are dropped);
    the pairs with count 0 are that member's validation set (about 1/e of them). After each fit the member's L2
    weight moves by ``l2_step`` towards keeping validation loss at 1.1-1.5x its training loss, within
    ``l2_bounds``. Adam. The L2 term covers the conv and linear weights (not batch norm's scale or any bias).
    The steps run in train mode (batch statistics, dropout); the losses after them, in eval mode, as every score.

    A fit is either ``epochs`` passes over every member's resample, or a fixed budget of ``batches`` minibatches
    drawn at random from it (rl-teacher trains one minibatch per 100 env steps; the paper trains the predictor
    asynchronously at its own pace), whose cost does not grow with the number of comparisons. The losses after a
    fit are measured on every pair, or on ``eval_pairs`` of them drawn at random."""

    def __init__(self, model: RewardEnsemble, lr: float = 1e-3, batch_size: int = 32, noise: float = 0.1,
                 l2_init: float = 1e-4, seed: int = 0, l2_bounds: tuple[float, float] = (1e-6, 1e-1),
                 l2_step: float = 1.2):
        self.model, self.batch_size, self.noise = model, batch_size, noise
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.l2 = [l2_init] * model.members
        self.l2_bounds, self.l2_step = l2_bounds, l2_step
        self.rng = np.random.default_rng(seed)
        self.ids = np.zeros(0, np.int64)  # the pairs the counts belong to
        self.counts = np.zeros((model.members, 0), np.int64)

    def segment_returns(self, obs: Tensor, actions: Tensor, chunk: int = 512) -> Tensor:
        """Summed predicted reward of each segment ``[P, K, ...]``, per member: ``[E, P]`` (in chunks of pairs; eval
        mode: the scores of held-out losses and of query selection)."""
        out = []
        with self.model.scoring():
            for i in range(0, len(actions), chunk):
                o, a = obs[i:i + chunk], actions[i:i + chunk]
                P, K = a.shape[:2]
                out.append(self.model(o.flatten(0, 1), a.flatten(0, 1)).view(-1, P, K).sum(-1))
        return torch.cat(out, 1)

    def member_returns(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Member e's summed reward of its own segments: obs ``[E, P, K, ...]``, actions ``[E, P, K, A]`` -> ``[E, P]``
        (the training forward pass, in the model's current mode; batch norm sees member e's batch only)."""
        E, P, K = actions.shape[:3]
        actions = self.model.action_input(actions)
        if self.model.image:
            x = self.model.image_input(obs.flatten(0, 2)).unflatten(0, (E, P, K))
            out = torch.stack([net(x[e].flatten(0, 1), actions[e].flatten(0, 1))
                               for e, net in enumerate(self.model.nets)])
        else:
            out = self.model.mlp(torch.cat([obs.flatten(3).float(), actions], -1).flatten(1, 2)).squeeze(-1)
        return out.view(E, P, K).sum(-1)

    def _sync_counts(self, ids: np.ndarray) -> None:
        """Keep the counts of pairs still present, draw counts for new ones (aligned with ``ids``)."""
        known = dict(zip(self.ids.tolist(), range(len(self.ids))))
        counts = np.zeros((self.model.members, len(ids)), np.int64)
        for j, pair in enumerate(ids.tolist()):
            i = known.get(pair)
            counts[:, j] = self.counts[:, i] if i is not None else self.rng.poisson(1.0, self.model.members)
        self.ids, self.counts = ids.copy(), counts

    def fit(self, obs_1: Tensor, act_1: Tensor, obs_2: Tensor, act_2: Tensor, mu: Tensor, ids: np.ndarray,
            epochs: int = 1, batches: int = 0, eval_pairs: int = 0) -> FitReport:
        """``epochs`` passes over the resamples, or (``batches`` > 0) that many minibatches drawn from them; then
        the losses on all pairs, or on ``eval_pairs`` random ones (> 0), and the L2 update."""
        if epochs < 0 or batches < 0 or eval_pairs < 0:
            raise ValueError(f"epochs, batches and eval_pairs must be >= 0, got {epochs}, {batches}, {eval_pairs}")
        self._sync_counts(np.asarray(ids))
        E = self.model.members
        in_bag = [np.repeat(np.arange(len(ids)), self.counts[e]) for e in range(E)]
        n = min(len(b) for b in in_bag)
        self.model.train()  # batch statistics (and running ones updated), dropout on
        try:
            if n > 0 and batches > 0:  # a fixed budget: each minibatch drawn afresh from each member's resample
                for _ in range(batches):
                    self._step(obs_1, act_1, obs_2, act_2, mu,
                               np.stack([self.rng.choice(b, min(self.batch_size, n), replace=False) for b in in_bag]))
            elif n > 0:
                for _ in range(epochs):
                    order = [self.rng.permutation(b)[:n] for b in in_bag]  # equal-size batches for every member
                    for start in range(0, n, self.batch_size):
                        self._step(obs_1, act_1, obs_2, act_2, mu,
                                   np.stack([o[start:start + self.batch_size] for o in order]))
        finally:
            self.model.eval()  # back to the scoring mode the model rests in
        scored = np.arange(len(ids))
        if 0 < eval_pairs < len(ids):
            scored = np.sort(self.rng.choice(len(ids), eval_pairs, replace=False))
        # r1, r2 [E, len(scored)]: each scored pair once, in eval mode; the losses index them by position
        r1, r2 = self._all_returns(obs_1, act_1, scored), self._all_returns(obs_2, act_2, scored)
        mu_scored = mu[torch.as_tensor(scored)]
        train_losses, _, _ = self._losses(r1, r2, mu_scored, [np.flatnonzero(self.counts[e, scored] > 0) for e in range(E)])
        val_losses, correct, total = self._losses(r1, r2, mu_scored,
                                                  [np.flatnonzero(self.counts[e, scored] == 0) for e in range(E)])
        low, high = self.l2_bounds
        for e in range(E):  # keep validation loss at 1.1-1.5x training loss
            if not math.isnan(val_losses[e]) and train_losses[e] > 0:
                ratio = val_losses[e] / train_losses[e]
                if ratio > 1.5:
                    self.l2[e] = min(high, self.l2[e] * self.l2_step)
                elif ratio < 1.1:
                    self.l2[e] = max(low, self.l2[e] / self.l2_step)
        return FitReport(train_losses, val_losses, list(self.l2), correct / max(total, 1))

    def _step(self, obs_1: Tensor, act_1: Tensor, obs_2: Tensor, act_2: Tensor, mu: Tensor, pairs: np.ndarray) -> None:
        """One Adam step of every member on its own minibatch (row e of ``pairs`` [E, b])."""
        idx = torch.as_tensor(pairs)
        r1 = self.member_returns(obs_1[idx], act_1[idx])
        r2 = self.member_returns(obs_2[idx], act_2[idx])
        member_losses = bradley_terry_loss(r1, r2, mu[idx], self.noise)  # [E]
        l2 = torch.stack([self.l2[e] * self._member_sq_norm(e) for e in range(self.model.members)])
        self.opt.zero_grad(set_to_none=True)
        (member_losses + l2).sum().backward()  # the members share no weights
        self.opt.step()

    @torch.no_grad()
    def _all_returns(self, obs: Tensor, actions: Tensor, which: np.ndarray, chunk: int = 256) -> Tensor:
        """Every member's summed reward of the segments at positions ``which``: ``[E, len(which)]``, gathering
        ``chunk`` of them at a time (Atari comparisons are stored compactly; all gathered at once would be
        gigabytes)."""
        if len(which) == 0:
            return torch.zeros(self.model.members, 0, device=actions.device)
        parts = []
        for i in range(0, len(which), chunk):
            idx = torch.as_tensor(which[i:i + chunk], device=actions.device)
            parts.append(self.segment_returns(obs[idx], actions[idx]))
        return torch.cat(parts, 1)

    def _losses(self, r1: Tensor, r2: Tensor, mu: Tensor, pairs: list[np.ndarray]) -> tuple[list[float], float, int]:
        """Each member's loss on its own set of pairs, from the members' segment returns ``r1``, ``r2`` [E, N] (in
        eval mode), and the ensemble's accuracy on them."""
        losses, correct, total = [], 0.0, 0
        for e, chosen in enumerate(pairs):
            if len(chosen) == 0:
                losses.append(float("nan"))
                continue
            i = torch.as_tensor(chosen)
            a, b = r1[e, i], r2[e, i]
            losses.append(float(bradley_terry_loss(a, b, mu[i], self.noise)))
            predicted = (a > b).float() + 0.5 * (a == b).float()
            correct += float((1.0 - (predicted - mu[i]).abs()).sum())
            total += len(i)
        return losses, correct, total

    def _member_sq_norm(self, e: int) -> Tensor:
        if self.model.image:  # conv and linear weights only: batch norm's scale is not a weight to shrink
            return sum(m.weight.square().sum() for m in self.model.nets[e].modules()
                       if isinstance(m, (nn.Conv2d, nn.Linear)))
        return sum(w[e].square().sum() for w in self.model.mlp.weights)

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "l2": list(self.l2), "ids": torch.from_numpy(self.ids.copy()),
                "counts": torch.from_numpy(self.counts.copy()), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["opt"])
        self.l2 = list(state["l2"])
        self.ids, self.counts = state["ids"].numpy(), state["counts"].numpy()
        self.rng.bit_generator.state = state["rng"]
