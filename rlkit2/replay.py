"""Replay buffer for off-policy agents: per-env observation streams, no duplicated ``next_obs``.

Layout
------
Every field is a time-major tensor ``[C, N, ...]`` on the buffer's device (C = slots per env, N = envs).
Each env owns column ``n``: a ring "stream" of observations with its own write pointer (pointers diverge
because episodes end at different times). One ``add`` writes, for each env at its pointer ``p``:

- slot ``p``: obs, action, reward, terminated, truncated; ``valid[p] = True`` (a transition starts here);
- slot ``p+1``: next_obs; ``valid[p+1] = False`` (it is the newest obs, or a final obs).

The pointer then moves by 1 if the episode continues (the next add rewrites slot ``p+1`` with the same obs
and makes it a valid start) or by 2 if it ended (slot ``p+1`` keeps the true final obs as a non-start; the
new episode's first obs goes to ``p+2``). All indices are modulo C.

Invariant: **the next obs of the transition in slot s is always the obs in slot s+1**, and a slot can be
sampled iff ``valid[s]``. It survives the ring wrap-around because a pointer never skips a slot: slot s is
rewritten (as ``p`` or as ``p+1``, which clears ``valid``) no later than slot s+1, so a valid slot never
points at overwritten data. Walking forward from a valid slot, the first invalid slot is either a final
obs (the step before ended the episode) or the newest obs of that env.

``episode_start[s]`` marks the first obs of an episode (first add after construction, and the slot after
a final obs). It is what frame stacking needs to rebuild stacks.

Frame stacking (``frame_stack = k > 0``)
-----------------------------------------
Observations are stacks ``[k, H, W]`` with the newest frame last. Only the newest frame ``obs[-1]`` of each
slot is stored, and a stack is rebuilt at sample time from slots ``s-k+1 .. s``. Frames before the episode
start are filled according to ``stack_padding``, which must match how the env pads its stacks:

- ``"zero"`` (default): zeros, i.e. gymnasium's ``FrameStackObservation(padding_type="zero")`` and ale-py's
  native ``AtariVectorEnv`` (at reset the stack is k-1 zero frames then the first frame). This is what
  ``envs/atari.py`` uses on both backends.
- ``"reset"``: the episode's first frame, i.e. ``FrameStackObservation(padding_type="reset")`` (at reset
  the stack is k copies of the first frame; gymnasium 1.x's default).

With the wrong setting the stacks of the first k-1 steps of each episode differ from the env's. Rebuilding
needs the k-1 slots before a sample, so each add also clears ``valid`` on the k-1 oldest slots just ahead
of the write position (their history was overwritten).

Capacity
--------
``capacity`` is the total number of transitions. Per env, ``C = ceil(capacity / N) + slack`` with
``slack = max(2, ceil(1% of ceil(capacity / N))) + max(k - 1, 0)``: an episode end costs one extra slot
(its final obs), one slot always holds the newest obs, and frame stacking invalidates k-1 slots. With long
episodes ``len()`` can slightly exceed ``capacity``; with very short ones it stays below it.

Shape legend
------------
N envs, B batch, C slots per env, L sequence length, O = ``obs_shape``, A = ``action_shape``.
Flags (terminated, truncated) are bool; rewards, returns, discount and mask are float32; steps int64.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor


class Transitions(NamedTuple):
    obs: Tensor         # [B, *O]
    actions: Tensor     # [B, *A]
    rewards: Tensor     # [B]
    next_obs: Tensor    # [B, *O]  the true final obs where the episode ended
    terminated: Tensor  # [B] bool
    truncated: Tensor   # [B] bool


class NStepTransitions(NamedTuple):
    obs: Tensor         # [B, *O]
    actions: Tensor     # [B, *A]
    returns: Tensor     # [B]  sum_{k<m} gamma^k r_{t+k}
    next_obs: Tensor    # [B, *O]  obs at slot t+m (bootstrap obs)
    discount: Tensor    # [B]  gamma^m * (1 - terminated): target = returns + discount * V(next_obs)
    steps: Tensor       # [B]  m, 1 <= m <= n
    terminated: Tensor  # [B] bool, the window ended with a termination
    truncated: Tensor   # [B] bool, the window ended with a truncation


class Sequences(NamedTuple):
    obs: Tensor         # [B, L+1, *O]  zeros where not part of the window
    actions: Tensor     # [B, L, *A]
    rewards: Tensor     # [B, L]
    terminated: Tensor  # [B, L] bool
    truncated: Tensor   # [B, L] bool
    mask: Tensor        # [B, L] float32: 1 while the step is written and in the start's episode


_STACK_PADDINGS = ("zero", "reset")
_TRANSITION_FIELDS = ("obs", "actions", "rewards", "terminated", "truncated", "valid", "episode_start")


class ReplayBuffer:
    """Uniform replay over all envs' valid slots; see the module docstring for the layout.

    ``generator`` (optional) must live on ``device``; without it torch's global RNG is used.
    ``stack_padding`` (used when ``frame_stack > 0``) fills the frames before an episode's start with zeros
    (``"zero"``, as ``envs/atari.py`` and ale-py do) or with the first frame (``"reset"``).
    """

    def __init__(self, capacity: int, num_envs: int, obs_shape: tuple, obs_dtype: torch.dtype,
                 action_shape: tuple, action_dtype: torch.dtype, device: str | torch.device = "cpu",
                 frame_stack: int = 0, generator: torch.Generator | None = None,
                 stack_padding: Literal["zero", "reset"] = "zero"):
        if capacity < 1 or num_envs < 1:
            raise ValueError(f"capacity and num_envs must be >= 1, got capacity={capacity}, "
                             f"num_envs={num_envs}")
        obs_shape, action_shape = tuple(obs_shape), tuple(action_shape)
        if frame_stack < 0:
            raise ValueError(f"frame_stack must be >= 0 (0 = no stacking), got {frame_stack}")
        if frame_stack and (len(obs_shape) < 2 or obs_shape[0] != frame_stack):
            raise ValueError(f"frame_stack={frame_stack} expects obs_shape (k, ...) with k={frame_stack} "
                             f"stacked frames first, got obs_shape={obs_shape}")
        if stack_padding not in _STACK_PADDINGS:
            raise ValueError(f"stack_padding must be 'zero' or 'reset' (how the env pads frame stacks at an "
                             f"episode start), got {stack_padding!r}")
        self.num_envs = num_envs
        self.obs_shape = obs_shape
        self.action_shape = action_shape
        self.frame_stack = frame_stack
        self.stack_padding = stack_padding
        self.device = torch.device(device)
        self.generator = generator
        per_env = math.ceil(capacity / num_envs)
        self.capacity = capacity
        self.capacity_per_env = per_env + max(2, math.ceil(per_env / 100)) + max(frame_stack - 1, 0)

        C, N, dev = self.capacity_per_env, num_envs, self.device
        stored_shape = obs_shape[1:] if frame_stack else obs_shape  # only the newest frame when stacking
        self.obs = torch.zeros((C, N, *stored_shape), dtype=obs_dtype, device=dev)
        self.actions = torch.zeros((C, N, *action_shape), dtype=action_dtype, device=dev)
        self.rewards = torch.zeros((C, N), dtype=torch.float32, device=dev)
        self.terminated = torch.zeros((C, N), dtype=torch.bool, device=dev)
        self.truncated = torch.zeros((C, N), dtype=torch.bool, device=dev)
        self.valid = torch.zeros((C, N), dtype=torch.bool, device=dev)
        self.episode_start = torch.zeros((C, N), dtype=torch.bool, device=dev)
        self.ptr = torch.zeros(N, dtype=torch.long, device=dev)        # next slot to write, per env
        self.fresh = torch.ones(N, dtype=torch.bool, device=dev)       # next add starts an episode
        self._envs = torch.arange(N, device=dev)
        self.num_adds = 0  # host-side, so "empty?" needs no device sync
        # CPU buffers only: every valid slot lies in [0, high_water) (the rejection sampler's range). Kept on the
        # host where reading ptr is free; never saved (an accelerator buffer does not keep it), derived on load.
        self.high_water = 0

    # ------------------------------------------------------------------ writing
    def add(self, obs: Any, actions: Any, rewards: Any, terminated: Any, truncated: Any,
            next_obs: Any, columns: slice | None = None) -> None:
        """Store one vector-env step (numpy arrays or tensors, leading dim N); see the module docstring.
        ``columns``: a step of only these envs (leading dim their count), e.g. one remote actor's envs."""
        N = self.num_envs if columns is None else len(range(*columns.indices(self.num_envs)))
        obs = self._as_tensor("obs", obs, (N, *self.obs_shape), self.obs.dtype)
        next_obs = self._as_tensor("next_obs", next_obs, (N, *self.obs_shape), self.obs.dtype)
        actions = self._as_tensor("actions", actions, (N, *self.action_shape), self.actions.dtype)
        rewards = self._as_tensor("rewards", rewards, (N,), torch.float32)
        terminated = self._as_tensor("terminated", terminated, (N,), torch.bool)
        truncated = self._as_tensor("truncated", truncated, (N,), torch.bool)
        if self.frame_stack:  # older frames of the stack are already in earlier slots
            obs, next_obs = obs[:, -1], next_obs[:, -1]

        C, envs = self.capacity_per_env, self._envs if columns is None else self._envs[columns]
        p = self.ptr if columns is None else self.ptr[columns]
        fresh = self.fresh if columns is None else self.fresh[columns]
        q = (p + 1) % C
        self.obs[p, envs] = obs
        self.actions[p, envs] = actions
        self.rewards[p, envs] = rewards
        self.terminated[p, envs] = terminated
        self.truncated[p, envs] = truncated
        self.valid[p, envs] = True
        self.episode_start[p, envs] = fresh
        self.obs[q, envs] = next_obs
        self.valid[q, envs] = False
        self.episode_start[q, envs] = False
        if self.frame_stack > 1:  # the oldest slots ahead lost the history their stacks are built from
            ahead = (q.unsqueeze(0) + torch.arange(1, self.frame_stack, device=self.device).unsqueeze(1)) % C
            self.valid[ahead, envs] = False
        ended = terminated | truncated
        if self.device.type == "cpu":  # reading a CPU tensor is no device sync
            self.high_water = min(C, max(self.high_water, int(p.max()) + 2))
        if columns is None:
            self.ptr = (p + 1 + ended.long()) % C
            self.fresh = ended
        else:  # new tensors, not in-place writes: a state_dict taken earlier keeps its values
            self.ptr = self.ptr.clone()
            self.ptr[columns] = (p + 1 + ended.long()) % C
            self.fresh = self.fresh.clone()
            self.fresh[columns] = ended
        self.num_adds += 1

    def break_episodes(self) -> None:
        """End every env's stream here without a terminal flag: the next ``add`` starts a new episode.

        For when the env was reset outside the buffer's view (e.g. resuming a run with a reloaded buffer and
        freshly reset envs). The newest obs of each unfinished stream stays as a non-start slot, so the last
        stored transition keeps its true next obs and n-step/sequence windows stop there."""
        self.ptr = torch.where(self.fresh, self.ptr, (self.ptr + 1) % self.capacity_per_env)
        self.fresh = torch.ones_like(self.fresh)

    def _as_tensor(self, name: str, x: Any, shape: tuple, dtype: torch.dtype) -> Tensor:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, device=self.device)
        if tuple(t.shape) != shape:
            raise ValueError(f"add(): {name} has shape {tuple(t.shape)}, expected {shape} "
                             f"(num_envs={self.num_envs} first, then the per-env shape)")
        return t.to(dtype)

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int) -> Transitions:
        """Uniform one-step transitions from all envs."""
        slot, env = self._sample_starts(batch_size)
        nxt = (slot + 1) % self.capacity_per_env  # the invariant: next obs lives in the next slot
        return Transitions(self._gather_obs(slot, env), self.actions[slot, env], self.rewards[slot, env],
                           self._gather_obs(nxt, env), self.terminated[slot, env],
                           self.truncated[slot, env])

    def sample_n_step(self, batch_size: int, n: int, gamma: float) -> NStepTransitions:
        """n-step returns that stop early at an episode end or at the env's newest data (m <= n steps)."""
        if n < 1:
            raise ValueError(f"sample_n_step(): n must be >= 1, got n={n}")
        slot, env = self._sample_starts(batch_size)
        C = self.capacity_per_env
        returns = torch.zeros(slot.shape, dtype=torch.float32, device=self.device)
        steps = torch.zeros(slot.shape, dtype=torch.long, device=self.device)
        term = torch.zeros(slot.shape, dtype=torch.bool, device=self.device)
        trunc = torch.zeros_like(term)
        alive = torch.ones_like(term)  # step k is part of the window
        for k in range(n):
            cur = (slot + k) % C
            if k > 0:  # continue only inside the episode and over written transitions
                alive = alive & ~(term | trunc) & self.valid[cur, env]
            returns += alive * (gamma ** k) * self.rewards[cur, env]
            steps += alive.long()
            term = term | (alive & self.terminated[cur, env])
            trunc = trunc | (alive & self.truncated[cur, env])
        discount = (gamma ** steps.float()) * (~term).float()
        return NStepTransitions(self._gather_obs(slot, env), self.actions[slot, env], returns,
                                self._gather_obs((slot + steps) % C, env), discount, steps, term, trunc)

    def sample_sequences(self, batch_size: int, length: int) -> Sequences:
        """Windows of ``length`` consecutive steps from uniform valid starts, masked past the episode end
        or the newest data."""
        if length < 1:
            raise ValueError(f"sample_sequences(): length must be >= 1, got length={length}")
        slot, env = self._sample_starts(batch_size)
        C = self.capacity_per_env
        slots = (slot.unsqueeze(1) + torch.arange(length + 1, device=self.device)) % C  # [B, L+1]
        envs = env.unsqueeze(1).expand_as(slots)
        steps, envs_l = slots[:, :-1], envs[:, :-1]
        ended = self.terminated[steps, envs_l] | self.truncated[steps, envs_l]
        # step k is in the window iff it is written and no earlier step ended the episode
        ok = self.valid[steps, envs_l]
        ok[:, 0] = True
        ended_before = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], dim=1)
        mask = torch.cumprod((ok & ~ended_before).long(), dim=1).bool()  # [B, L]
        obs_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)  # obs k+1 is real iff step k is
        return Sequences(_masked(self._gather_obs(slots, envs), obs_mask),
                         _masked(self.actions[steps, envs_l], mask), _masked(self.rewards[steps, envs_l], mask),
                         self.terminated[steps, envs_l] & mask, self.truncated[steps, envs_l] & mask,
                         mask.float())

    def _sample_starts(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(slot, env) of ``batch_size`` uniform valid slots, on device and without host syncs: the k-th
        valid slot in flat order is found by a binary search in the running count of valid slots."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.num_adds == 0:
            raise ValueError("cannot sample from an empty replay buffer; add() transitions first "
                             "(e.g. collect learning_starts steps before updating)")
        if self.device.type == "cpu":
            return self._sample_starts_rejection(batch_size)
        return self._sample_starts_exact(batch_size)

    def _sample_starts_exact(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """The accelerator path: the k-th valid slot in flat order by binary search in the running count of
        valid slots; no host sync (a cumsum over C*N slots is cheap on a GPU)."""
        counts = self.valid.view(-1).cumsum(0)
        total = counts[-1]
        u = torch.rand(batch_size, generator=self.generator, device=self.device, dtype=torch.float64)
        rank = torch.minimum((u * total).long(), total - 1)  # 0-based rank among valid slots
        flat = torch.searchsorted(counts, rank, right=True)   # first index whose count exceeds rank
        return flat // self.num_envs, flat % self.num_envs

    def _sample_starts_rejection(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """The CPU path: uniform (slot, env) over the written rectangle, redrawing the invalid ones.

        Accepted draws are exactly uniform over valid slots, at O(batch) cost: the device path's running
        count over all C*N slots costs O(capacity) per sample (~1.5 ms at 1e6 slots) and evicts the
        networks from the CPU caches. Invalid slots are rare (one final obs per episode, the newest obs per
        env), so a redraw is needed for a few percent of draws; checking for them is free on the CPU."""
        g, hw, n = self.generator, max(self.high_water, 1), self.num_envs
        slot = torch.randint(hw, (batch_size,), generator=g)
        env = torch.randint(n, (batch_size,), generator=g)
        ok = self.valid[slot, env]
        while not bool(ok.all()):
            bad = (~ok).nonzero().squeeze(1)
            slot[bad] = torch.randint(hw, (len(bad),), generator=g)
            env[bad] = torch.randint(n, (len(bad),), generator=g)
            ok[bad] = self.valid[slot[bad], env[bad]]
        return slot, env

    def _gather_obs(self, slot: Tensor, env: Tensor) -> Tensor:
        """Observations at (slot, env) of any batch shape; frame stacks are rebuilt from earlier slots."""
        if not self.frame_stack:
            return self.obs[slot, env]
        slots, pad = self._stack_slots(slot, env)
        frames = self.obs[slots, env.unsqueeze(-1)]  # [..., k, *frame]
        if self.stack_padding == "zero":
            frames = frames.masked_fill(pad.view(*pad.shape, *([1] * (frames.dim() - pad.dim()))), 0)
        return frames

    def _stack_slots(self, slot: Tensor, env: Tensor) -> tuple[Tensor, Tensor]:
        """[..., k] slots of the k frames ending at ``slot`` (oldest first) and a [..., k] bool mask of the
        padding frames (before the episode start). Walking back stops at the episode's first slot, which
        then repeats (reset padding); zero padding blanks the masked frames."""
        out, cur = [slot], slot
        pads, pad = [torch.zeros_like(slot, dtype=torch.bool)], torch.zeros_like(slot, dtype=torch.bool)
        for _ in range(self.frame_stack - 1):
            pad = pad | self.episode_start[cur, env]
            cur = torch.where(pad, cur, (cur - 1) % self.capacity_per_env)
            out.append(cur)
            pads.append(pad)
        return torch.stack(out[::-1], dim=-1), torch.stack(pads[::-1], dim=-1)

    # ------------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        """Number of valid (sampleable) transitions; syncs with the device."""
        return int(self.valid.sum().item())

    def memory_bytes(self) -> int:
        tensors = [getattr(self, f) for f in _TRANSITION_FIELDS] + [self.ptr, self.fresh]
        return sum(t.numel() * t.element_size() for t in tensors)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, ints and a string: loadable with ``torch.load(weights_only=True)``. The generator is the
        caller's and is not included. The same on every device: what only one device's code path keeps (the CPU
        sampler's ``high_water``) is left out and derived again on load.

        Only the rows in use are saved (``_rows_in_use``), copied out of the buffer: a checkpoint's size follows
        the content, not the capacity (a 1e6 buffer after 3k steps is kilobytes, not the 69 MB of all rows)."""
        rows = self._rows_in_use()
        state: dict[str, Any] = {f: getattr(self, f)[:rows].clone() for f in _TRANSITION_FIELDS}
        state.update(ptr=self.ptr, fresh=self.fresh, num_adds=self.num_adds, capacity=self.capacity,
                     num_envs=self.num_envs, frame_stack=self.frame_stack, stack_padding=self.stack_padding)
        return state

    def _rows_in_use(self) -> int:
        """1 + the last slot holding non-zero data in any env and field. A write pointer never skips a slot, so
        the slots after it are as the constructor left them (zeros) -- and once the ring has wrapped, every slot
        is in use. Saving slots [0, rows) and zero-filling the rest on load restores every field exactly."""
        C = self.capacity_per_env
        used = torch.zeros(C, dtype=torch.bool, device=self.device)
        for name in _TRANSITION_FIELDS:
            used |= getattr(self, name).reshape(C, -1).ne(0).any(1)
        last = used.nonzero()
        return int(last.max()) + 1 if len(last) else 0

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = {"capacity": self.capacity, "num_envs": self.num_envs, "frame_stack": self.frame_stack,
                "stack_padding": self.stack_padding}
        for key, value in mine.items():
            if state.get(key) != value:
                raise ValueError(f"load_state_dict(): {key}={state.get(key)} in the state but {value} "
                                 f"in this buffer; build the buffer with the same arguments")
        rows = state["valid"].shape[0]  # the rows in use when saved (all of them in states saved before that)
        for key in (*_TRANSITION_FIELDS, "ptr", "fresh"):
            src, dst = state[key], getattr(self, key)
            n = rows if key in _TRANSITION_FIELDS else dst.shape[0]
            if tuple(src.shape) != (n, *dst.shape[1:]) or n > dst.shape[0] or src.dtype != dst.dtype:
                raise ValueError(f"load_state_dict(): '{key}' is {tuple(src.shape)} {src.dtype}, expected "
                                 f"{(n, *dst.shape[1:])} {dst.dtype}; build the buffer with the same shapes")
            dst[:n].copy_(src)
            dst[n:].zero_()
        self.num_adds = int(state["num_adds"])
        # From the data, never from a saved counter: states saved on CUDA before this was derived carry
        # high_water = 0, and trusting it confined sampling to the slots below the write pointer.
        written = self.valid.any(1).nonzero()
        self.high_water = min(self.capacity_per_env, int(written.max()) + 2) if len(written) else 0


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """Zero ``x [B, T, ...]`` where ``mask [B, T]`` is false."""
    return torch.where(mask.view(*mask.shape, *([1] * (x.dim() - mask.dim()))), x, torch.zeros_like(x))
