"""ReplayBuffer against scripted vector-env streams whose every observation names itself.

An observation is ``[env, episode, t]`` (t = step within the episode), so a sampled (obs, next_obs) pair is
a real consecutive pair iff next_obs == [env, episode, t + 1]; the reset obs ``[env, episode + 1, 0]`` can
never pass for a final obs. ``reference`` maps every written transition to what the buffer must return.
With frame stacking the streams' stacks come from gymnasium's real ``FrameStackObservation`` wrapper (both
padding types), and ``make_obs`` (the expected stacks) is checked against it.
"""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import FrameStackObservation

from rlkit2.replay import ReplayBuffer

OBS_SHAPE, ACT_SHAPE = (3,), (2,)
FRAME = (2, 2)  # frame-stack tests: tiny "images"
PADDINGS = ("zero", "reset")


def default_reward(e: int, ep: int, t: int) -> float:
    return 10.0 * ep + t + 0.5 * e


class ScriptedFrames(gym.Env):
    """Env e of a scripted() stream as a gymnasium env: observations frame(e, ep, t), episode lengths and
    ends cycled from ``spec``."""
    observation_space = gym.spaces.Box(0, 255, FRAME, np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, e, spec):
        self.e, self.spec, self.ep, self.t = e, spec, -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.ep, self.t = self.ep + 1, 0
        return frame(self.e, self.ep, 0), {}

    def step(self, action):
        self.t += 1
        length, kind = self.spec[self.ep % len(self.spec)]
        end = self.t == length
        return frame(self.e, self.ep, self.t), 0.0, end and kind == "term", end and kind == "trunc", {}


def scripted(specs, steps, reward=default_reward, frame_stack=0, padding="zero"):
    """SAME_STEP-autoreset stream for len(specs) envs; specs[e] = [(episode length, 'term'|'trunc'), ...]
    cycled. Returns the per-step add() arguments and {(e, ep, t): expected transition}. With frame_stack,
    obs and next_obs are the stacks of real FrameStackObservation(padding_type=padding) wrappers."""
    n_envs = len(specs)
    ep, t, count = [0] * n_envs, [0] * n_envs, [0] * n_envs
    stream, reference = [], {}
    if frame_stack:
        wrappers = [FrameStackObservation(ScriptedFrames(e, specs[e]), frame_stack, padding_type=padding)
                    for e in range(n_envs)]
        current = [w.reset()[0] for w in wrappers]
    for _ in range(steps):
        obs, act, rew, term, trunc, nxt = [], [], [], [], [], []
        for e in range(n_envs):
            length, kind = specs[e][ep[e] % len(specs[e])]
            end = t[e] + 1 == length
            key = (e, ep[e], t[e])
            reference[key] = dict(action=[e * 1000 + ep[e] * 10 + t[e], -t[e]], reward=reward(*key),
                                  term=end and kind == "term", trunc=end and kind == "trunc",
                                  count=count[e], end=end)
            if frame_stack:
                obs.append(current[e])
                nxt.append(wrappers[e].step(0)[0])
                current[e] = wrappers[e].reset()[0] if end else nxt[-1]
            else:
                obs.append(make_obs(key))
                nxt.append(make_obs((e, ep[e], t[e] + 1)))
            act.append(reference[key]["action"])
            rew.append(reference[key]["reward"])
            term.append(reference[key]["term"])
            trunc.append(reference[key]["trunc"])
            count[e] += 1
            ep[e], t[e] = (ep[e] + 1, 0) if end else (ep[e], t[e] + 1)
        stream.append(tuple(np.array(x) for x in (obs, act, rew, term, trunc, nxt)))
    return stream, reference


def frame(e: int, ep: int, t: int) -> np.ndarray:
    return np.array([[e, ep], [t, 7]], dtype=np.uint8)


def make_obs(key, frame_stack=0, padding="zero"):
    """[e, ep, t], or the stack FrameStackObservation(padding_type=padding) yields: frames t-k+1..t, with
    frames before the episode start replaced by zeros ('zero') or by its first frame ('reset')."""
    e, ep, t = key
    if not frame_stack:
        return np.array(key, dtype=np.float32)
    frames = [frame(e, ep, max(0, t - frame_stack + 1 + i)) for i in range(frame_stack)]
    if padding == "zero":
        frames = [f if t - frame_stack + 1 + i >= 0 else np.zeros_like(f) for i, f in enumerate(frames)]
    return np.stack(frames)


def key_of(obs, frame_stack=0):
    """The (e, ep, t) an observation names (from its newest frame when stacked)."""
    if frame_stack:
        f = obs[-1]
        return (int(f[0, 0]), int(f[0, 1]), int(f[1, 0]))
    return tuple(int(v) for v in obs.tolist())


def make_buffer(capacity, num_envs, frame_stack=0, seed=0, device="cpu", padding="zero"):
    obs_shape, obs_dtype = ((frame_stack, *FRAME), torch.uint8) if frame_stack else (OBS_SHAPE, torch.float32)
    gen = torch.Generator(device=device).manual_seed(seed)
    return ReplayBuffer(capacity, num_envs, obs_shape, obs_dtype, ACT_SHAPE, torch.float32, device=device,
                        frame_stack=frame_stack, generator=gen, stack_padding=padding)


def fill(buf, stream):
    for step in stream:
        buf.add(*step)


def check_transitions(sample, reference, frame_stack=0, padding="zero"):
    """Every sampled transition is a real one; returns the set of keys seen."""
    seen = set()
    for i in range(sample.obs.shape[0]):
        key = key_of(sample.obs[i], frame_stack)
        ref = reference[key]
        e, ep, t = key
        assert np.array_equal(sample.obs[i].cpu().numpy(), make_obs(key, frame_stack, padding)), key
        assert np.array_equal(sample.next_obs[i].cpu().numpy(),
                              make_obs((e, ep, t + 1), frame_stack, padding)), key
        assert sample.actions[i].tolist() == ref["action"]
        assert sample.rewards[i].item() == ref["reward"]
        assert (sample.terminated[i].item(), sample.truncated[i].item()) == (ref["term"], ref["trunc"])
        seen.add(key)
    return seen


SPECS_2 = [[(3, "term"), (5, "trunc")], [(4, "trunc"), (2, "term"), (6, "term")]]


def test_scripted_stream_pairs_and_flags():
    stream, reference = scripted(SPECS_2, 20)
    buf = make_buffer(100, 2)
    fill(buf, stream)
    assert len(buf) == 40
    sample = buf.sample(3000)
    assert sample.obs.shape == (3000, 3) and sample.actions.shape == (3000, 2)
    assert sample.rewards.dtype == torch.float32 and sample.terminated.dtype == torch.bool
    seen = check_transitions(sample, reference)
    assert seen == set(reference)  # uniform over all 40: every one shows up
    ends = {k for k, r in reference.items() if r["end"]}
    assert {k for k in ends if reference[k]["term"]} and {k for k in ends if reference[k]["trunc"]}


def test_uniform_over_envs_and_slots():
    stream, _ = scripted(SPECS_2, 20)
    buf = make_buffer(100, 2)
    fill(buf, stream)
    keys = [key_of(o) for o in buf.sample(20000).obs]
    counts = np.array([keys.count(k) for k in set(keys)])
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500  # 20000 / 40 transitions


@pytest.mark.parametrize("method", ["_sample_starts_rejection", "_sample_starts_exact"])
def test_both_sampling_paths_are_uniform_over_valid_slots_only(method):
    """The CPU (rejection) and accelerator (running count) paths, both on the CPU here: every valid slot
    equally often, never an invalid one (final obs, newest obs), also after the ring wrapped."""
    specs = [[(1, "term"), (7, "trunc")], [(2, "trunc"), (3, "term")], [(50, "trunc")]]
    buf = make_buffer(60, 3)
    stream, _ = scripted(specs, 90)
    fill(buf, stream)
    slot, env = getattr(buf, method)(60_000)
    assert bool(buf.valid[slot, env].all())
    counts = torch.zeros_like(buf.rewards).index_put_((slot, env), torch.ones(len(slot)), accumulate=True)
    expected = 60_000 / int(buf.valid.sum())
    assert counts[buf.valid].min() > 0.8 * expected and counts[buf.valid].max() < 1.2 * expected


def test_ring_wraparound_keeps_newest_and_consistent():
    # env 0 never ends; env 1 has 3-step terminated episodes (4 slots each, with the final obs)
    specs = [[(1000, "trunc")], [(3, "term")]]
    buf = make_buffer(20, 2)
    assert buf.capacity_per_env == 12  # ceil(20 / 2) + 2 slack
    stream, reference = scripted(specs, 31)
    fill(buf, stream[:30])
    # env 0: 11 newest transitions (one slot holds the newest obs); env 1: episodes 7, 8, 9 fill all 12 slots
    expected = {(0, 0, t) for t in range(19, 30)} | {(1, ep, t) for ep in (7, 8, 9) for t in range(3)}
    assert len(buf) == 20
    assert check_transitions(buf.sample(4000), reference) == expected
    buf.add(*stream[30])  # env 1's new episode overwrites episode 7's first two steps (2 slots)
    expected = ({(0, 0, t) for t in range(20, 31)} | {(1, 7, 2), (1, 10, 0)}
                | {(1, ep, t) for ep in (8, 9) for t in range(3)})
    assert len(buf) == 19
    assert check_transitions(buf.sample(4000), reference) == expected


def test_long_mixed_stream_with_many_wraps():
    specs = [[(1, "term"), (7, "trunc")], [(2, "trunc"), (3, "term")], [(50, "trunc")]]
    buf = make_buffer(30, 3)
    stream, reference = scripted(specs, 200)
    last_count = {}
    for step in stream:
        buf.add(*step)
    for k, r in reference.items():
        last_count[k[0]] = max(last_count.get(k[0], 0), r["count"])
    for key in check_transitions(buf.sample(2000), reference):
        assert reference[key]["count"] > last_count[key[0]] - buf.capacity_per_env  # newest data only
    check_sequences(buf.sample_sequences(300, 6), reference)


def test_numpy_and_torch_inputs_agree():
    stream, _ = scripted(SPECS_2, 12)
    a, b = make_buffer(50, 2), make_buffer(50, 2)
    fill(a, stream)
    for step in stream:
        b.add(*(torch.as_tensor(x) for x in step))
    for key, value in a.state_dict().items():
        other = b.state_dict()[key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def test_n_step_hand_computed():
    # rewards 1, 2, 4 by step; episodes: 3 steps terminated, 2 steps truncated, then 2 steps so far
    specs = [[(3, "term"), (2, "trunc"), (100, "trunc")]]
    stream, reference = scripted(specs, 7, reward=lambda e, ep, t: float(2 ** t))
    buf = make_buffer(50, 1)
    fill(buf, stream)
    # key: (returns, steps, discount, next obs key, terminated, truncated) with gamma = 0.5
    expected = {
        3: {(0, 0, 0): (1 + 0.5 * 2 + 0.25 * 4, 3, 0.0, (0, 0, 3), True, False),  # stops at termination
            (0, 0, 1): (2 + 0.5 * 4, 2, 0.0, (0, 0, 3), True, False),
            (0, 0, 2): (4, 1, 0.0, (0, 0, 3), True, False),
            (0, 1, 0): (1 + 0.5 * 2, 2, 0.25, (0, 1, 2), False, True),  # truncation: bootstrap final obs
            (0, 1, 1): (2, 1, 0.5, (0, 1, 2), False, True),
            (0, 2, 0): (1 + 0.5 * 2, 2, 0.25, (0, 2, 2), False, False),  # stops at the newest data
            (0, 2, 1): (2, 1, 0.5, (0, 2, 2), False, False)},
        2: {(0, 0, 0): (1 + 0.5 * 2, 2, 0.25, (0, 0, 2), False, False),  # stops at n
            (0, 0, 1): (2 + 0.5 * 4, 2, 0.0, (0, 0, 3), True, False)},
        1: {(0, 0, 2): (4, 1, 0.0, (0, 0, 3), True, False),
            (0, 1, 0): (1, 1, 0.5, (0, 1, 1), False, False)},
    }
    for n, table in expected.items():
        s = buf.sample_n_step(500, n=n, gamma=0.5)
        assert s.steps.dtype == torch.long and s.returns.shape == (500,)
        seen = set()
        for i in range(500):
            key = key_of(s.obs[i])
            assert s.actions[i].tolist() == reference[key]["action"]
            if key in table:
                ret, m, disc, nxt, term, trunc = table[key]
                assert s.returns[i].item() == pytest.approx(ret)
                assert (s.steps[i].item(), s.discount[i].item(), key_of(s.next_obs[i])) == (m, disc, nxt)
                assert (s.terminated[i].item(), s.truncated[i].item()) == (term, trunc)
                seen.add(key)
        assert seen == set(table)


def test_n_step_one_matches_one_step_target():
    stream, _ = scripted(SPECS_2, 15)
    buf = make_buffer(60, 2)
    fill(buf, stream)
    g1 = torch.Generator().manual_seed(3)
    buf.generator = g1
    one = buf.sample(200)
    buf.generator = torch.Generator().manual_seed(3)
    n1 = buf.sample_n_step(200, n=1, gamma=0.9)
    assert torch.equal(one.obs, n1.obs) and torch.equal(one.next_obs, n1.next_obs)
    assert torch.equal(one.rewards, n1.returns)
    assert torch.allclose(n1.discount, 0.9 * (~one.terminated).float())


def check_sequences(seq, reference, frame_stack=0, padding="zero"):
    B, L = seq.mask.shape
    assert seq.obs.shape[:2] == (B, L + 1) and seq.actions.shape == (B, L, 2)
    for b in range(B):
        e, ep, t = key_of(seq.obs[b, 0], frame_stack)
        assert seq.mask[b, 0] == 1
        for k in range(L):
            key = (e, ep, t + k)
            live = key in reference  # written and still inside the start's episode
            assert seq.mask[b, k].item() == float(live), (b, k, key)
            if live:
                ref = reference[key]
                assert np.array_equal(seq.obs[b, k + 1].cpu().numpy(),
                                      make_obs((e, ep, t + k + 1), frame_stack, padding))
                assert seq.actions[b, k].tolist() == ref["action"]
                assert seq.rewards[b, k].item() == ref["reward"]
                assert (seq.terminated[b, k].item(), seq.truncated[b, k].item()) == (ref["term"], ref["trunc"])
            else:
                assert not seq.obs[b, k + 1].any() and not seq.actions[b, k].any()
                assert seq.rewards[b, k] == 0 and not seq.terminated[b, k] and not seq.truncated[b, k]


def test_sequences_mask_and_contents():
    stream, reference = scripted(SPECS_2, 20)
    buf = make_buffer(100, 2)
    fill(buf, stream)
    seq = buf.sample_sequences(400, 4)
    assert seq.mask.dtype == torch.float32
    check_sequences(seq, reference)
    # windows longer than the ring still stop at the newest data
    small = make_buffer(10, 2)
    fill(small, stream)
    check_sequences(small.sample_sequences(50, 20), reference)


@pytest.mark.parametrize("padding", PADDINGS)
def test_expected_stacks_match_gymnasium_frame_stack(padding):
    """make_obs (what the buffer must return) is what FrameStackObservation(padding_type=padding) yields,
    in the first k-1 steps of episodes, at their ends (final obs) and right after resets."""
    specs = [[(1, "term"), (2, "trunc"), (6, "term"), (3, "trunc")], [(5, "trunc"), (1, "trunc")]]
    stream, reference = scripted(specs, 30, frame_stack=4, padding=padding)
    checked = set()
    for i, (obs, _, _, _, _, nxt) in enumerate(stream):
        keys = [k for k, r in reference.items() if r["count"] == i]  # count = step index here
        for k in keys:
            e, ep, t = k
            assert np.array_equal(obs[e], make_obs(k, 4, padding)), k
            assert np.array_equal(nxt[e], make_obs((e, ep, t + 1), 4, padding)), k
            checked.add(k)
    assert checked == set(reference)
    assert {t for (_, _, t) in checked} >= {0, 1, 2, 3, 4}
    assert sum(r["end"] for r in reference.values()) >= 6  # boundaries, incl. 1-step episodes
    first = stream[0][0][0]  # env 0's reset stack: [pad, pad, pad, frame 0]
    pad = np.zeros(FRAME, np.uint8) if padding == "zero" else frame(0, 0, 0)
    assert all(np.array_equal(first[i], pad) for i in range(3)) and np.array_equal(first[3], frame(0, 0, 0))
    # the paddings differ exactly in the first k-1 steps of an episode
    for t in range(6):
        differ = not np.array_equal(make_obs((0, 2, t), 4, "zero"), make_obs((0, 2, t), 4, "reset"))
        assert differ == (t < 3), t


@pytest.mark.parametrize("padding", PADDINGS)
def test_frame_stack_rebuilds_exact_stacks_across_boundaries_and_wraps(padding):
    # the stream's stacks come from the real gymnasium wrapper with this padding; short episodes (1, 2
    # steps) cross the padding region; a long one makes the ring overwrite history
    specs = [[(2, "term"), (6, "trunc"), (1, "term"), (40, "trunc")], [(5, "term"), (1, "trunc"), (3, "trunc")]]
    buf = make_buffer(16, 2, frame_stack=4, padding=padding)
    assert buf.obs.shape == (buf.capacity_per_env, 2, *FRAME)  # only the newest frame per slot
    stream, reference = scripted(specs, 70, frame_stack=4, padding=padding)
    seen = set()
    for i, step in enumerate(stream):
        buf.add(*step)
        if i % 5 == 4:
            seen |= check_transitions(buf.sample(300), reference, frame_stack=4, padding=padding)
            written = {k: r for k, r in reference.items() if r["count"] <= i}  # count = step index here
            check_sequences(buf.sample_sequences(40, 5), written, frame_stack=4, padding=padding)
            s = buf.sample_n_step(100, n=3, gamma=0.9)
            for b in range(100):
                e, ep, t = key_of(s.obs[b], 4)
                assert np.array_equal(s.next_obs[b].numpy(),
                                      make_obs((e, ep, t + s.steps[b].item()), 4, padding))
    assert {t for (_, _, t) in seen} >= {0, 1, 2, 3}  # first steps of episodes were checked
    assert any(reference[k]["end"] for k in seen)


def test_frame_stack_padding_mismatch_is_visible():
    """A buffer whose padding differs from the env's returns different stacks in the first k-1 steps."""
    stream, reference = scripted([[(3, "term")]], 6, frame_stack=4, padding="zero")
    buf = make_buffer(20, 1, frame_stack=4, padding="reset")
    fill(buf, stream)
    s = buf.sample(200)
    for i in range(200):
        key = key_of(s.obs[i], 4)
        assert np.array_equal(s.obs[i].numpy(), make_obs(key, 4, "reset"))
        assert not np.array_equal(s.obs[i].numpy(), make_obs(key, 4, "zero"))  # all t < 3 here


def test_frame_stack_memory_is_a_quarter():
    big = ReplayBuffer(1000, 1, (4, 84, 84), torch.uint8, (1,), torch.long)
    small = ReplayBuffer(1000, 1, (4, 84, 84), torch.uint8, (1,), torch.long, frame_stack=4)
    assert 0.24 < small.memory_bytes() / big.memory_bytes() < 0.26


@pytest.mark.parametrize("frame_stack, padding", [(0, "zero"), (4, "zero"), (4, "reset")])
def test_state_dict_round_trip(frame_stack, padding):
    stream, _ = scripted(SPECS_2, 40, frame_stack=frame_stack, padding=padding)
    a = make_buffer(24, 2, frame_stack=frame_stack, seed=5, padding=padding)
    fill(a, stream[:35])
    f = io.BytesIO()
    torch.save(a.state_dict(), f)
    f.seek(0)
    assert a.state_dict()["stack_padding"] == padding
    b = make_buffer(24, 2, frame_stack=frame_stack, seed=5, padding=padding)
    b.load_state_dict(torch.load(f, weights_only=True))
    assert len(a) == len(b) and a.memory_bytes() == b.memory_bytes()
    for buf in (a, b):  # the same data keeps arriving after the checkpoint
        fill(buf, stream[35:])
    for x, y in [(a.sample(64), b.sample(64)), (a.sample_n_step(64, 3, 0.9), b.sample_n_step(64, 3, 0.9)),
                 (a.sample_sequences(16, 4), b.sample_sequences(16, 4))]:
        for u, v in zip(x, y):
            assert torch.equal(u, v)


def ring_sampled_after_resume(state, device="cpu"):
    """Load ``state`` into a fresh buffer on ``device`` as a resumed run does (break the episodes, add one step
    of the new session) and return (distinct transitions in 20000 draws, valid transitions)."""
    buf = make_buffer(200, 1, device=device)
    buf.load_state_dict(state)
    buf.break_episodes()
    buf.add(*scripted([[(10_000, "trunc")]], 1)[0][0])
    slot, env = buf._sample_starts(20_000)
    assert bool(buf.valid[slot, env].all())
    return len(set(zip(slot.tolist(), env.tolist()))), len(buf)


def full_ring_state(device="cpu"):
    """One env, capacity 200 (202 slots), one endless episode written 392 times: the ring is full, ptr = 190."""
    buf = make_buffer(200, 1, device=device)
    fill(buf, scripted([[(10_000, "trunc")]], 392)[0])
    assert int(buf.ptr[0]) == 190 and len(buf) == 201
    f = io.BytesIO()
    torch.save(buf.state_dict(), f)
    f.seek(0)
    return torch.load(f, weights_only=True)


def test_resumed_full_ring_samples_every_slot_whatever_device_saved_it():
    """Issue 20, item 4: a buffer saved on CUDA carried high_water = 0 (a counter only CPU buffers kept), and a
    CPU buffer that loaded it drew only from the slots below its write pointer: 191 of 201 transitions. The
    saved state no longer has device-specific counters; the sampled extent is derived from ``valid``."""
    state = full_ring_state()
    cuda_like = {**state, "high_water": 0}  # what a CUDA buffer saved before the fix
    for saved in (cuda_like, state):
        distinct, valid = ring_sampled_after_resume(saved)
        assert valid == 200 and distinct == valid  # before the fix: 191 from the CUDA-saved state
    assert "high_water" not in state  # nothing in the saved state depends on the device that wrote it


@pytest.mark.parametrize("saved_on, loaded_on", [("cuda", "cpu"), ("cpu", "cuda"), ("cuda", "cuda")])
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resumed_full_ring_samples_every_slot_across_devices(saved_on, loaded_on):
    distinct, valid = ring_sampled_after_resume(full_ring_state(saved_on), loaded_on)
    assert valid == 200 and distinct == valid


def test_seeded_sampling_is_reproducible():
    stream, _ = scripted(SPECS_2, 20)
    a, b, c = make_buffer(100, 2, seed=1), make_buffer(100, 2, seed=1), make_buffer(100, 2, seed=2)
    for buf in (a, b, c):
        fill(buf, stream)
    assert torch.equal(a.sample(100).obs, b.sample(100).obs)
    assert not torch.equal(a.sample(100).obs, c.sample(100).obs)


def test_errors():
    buf = make_buffer(20, 2)
    with pytest.raises(ValueError, match="empty replay buffer"):
        buf.sample(4)
    stream, _ = scripted(SPECS_2, 3)
    obs, act, rew, term, trunc, nxt = stream[0]
    with pytest.raises(ValueError, match=r"obs has shape \(2, 4\), expected \(2, 3\)"):
        buf.add(np.zeros((2, 4)), act, rew, term, trunc, nxt)
    with pytest.raises(ValueError, match=r"next_obs has shape \(3,\), expected \(2, 3\)"):
        buf.add(obs, act, rew, term, trunc, nxt[0])
    with pytest.raises(ValueError, match=r"actions has shape \(2,\), expected \(2, 2\)"):
        buf.add(obs, act[:, 0], rew, term, trunc, nxt)
    with pytest.raises(ValueError, match=r"rewards has shape \(3,\), expected \(2,\)"):
        buf.add(obs, act, np.zeros(3), term, trunc, nxt)
    with pytest.raises(ValueError, match=r"terminated has shape \(2, 1\), expected \(2,\)"):
        buf.add(obs, act, rew, term[:, None], trunc, nxt)
    assert buf.num_adds == 0  # a rejected add writes nothing
    fill(buf, stream)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        buf.sample(0)
    with pytest.raises(ValueError, match="n must be >= 1, got n=0"):
        buf.sample_n_step(4, n=0, gamma=0.9)
    with pytest.raises(ValueError, match="length must be >= 1, got length=0"):
        buf.sample_sequences(4, length=0)
    with pytest.raises(ValueError, match=r"frame_stack=4 expects obs_shape \(k, ...\)"):
        ReplayBuffer(10, 1, (3, 84, 84), torch.uint8, (1,), torch.long, frame_stack=4)
    with pytest.raises(ValueError, match="capacity=30 in the state but 20 in this buffer"):
        make_buffer(20, 2).load_state_dict(make_buffer(30, 2).state_dict())
    with pytest.raises(ValueError, match="stack_padding must be 'zero' or 'reset'.*got 'edge'"):
        ReplayBuffer(10, 1, (4, 84, 84), torch.uint8, (1,), torch.long, frame_stack=4, stack_padding="edge")
    with pytest.raises(ValueError, match="stack_padding=reset in the state but zero in this buffer"):
        make_buffer(20, 2, frame_stack=4).load_state_dict(
            make_buffer(20, 2, frame_stack=4, padding="reset").state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    stream, reference = scripted(SPECS_2, 30, frame_stack=4)
    buf = make_buffer(24, 2, frame_stack=4, device="cuda")
    fill(buf, stream)
    s = buf.sample(500)
    assert s.obs.device.type == "cuda"
    check_transitions(s, reference, frame_stack=4)
    check_sequences(buf.sample_sequences(50, 4), reference, frame_stack=4)


def saved_bytes(state) -> int:
    return sum(t.numel() * t.element_size() for t in state.values() if isinstance(t, torch.Tensor))


def round_trip(state):
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return torch.load(f, weights_only=True)


def assert_same_buffers(a, b):
    for name in ("obs", "actions", "rewards", "terminated", "truncated", "valid", "episode_start", "ptr", "fresh"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.num_adds, a.high_water) == (b.num_adds, b.high_water)


def test_state_dict_holds_only_the_rows_in_use_and_restores_every_field():
    """Issue 22, item 9: a 1e6 buffer after 1500 steps saved all 1e6 slots (DSAC: 69 MB after 3k steps). Only
    the slots written so far are saved; loading zero-fills the rest, so the restored buffer is the same."""
    stream, _ = scripted(SPECS_2, 1500)
    a = make_buffer(1_000_000, 2, seed=3)
    fill(a, stream)
    state = round_trip(a.state_dict())
    # per env: one slot per step, one more per episode end (its final obs), one for the newest obs
    ends = [sum(bool(step[3][e] or step[4][e]) for step in stream) for e in range(2)]
    rows_bound = max(1500 + ends[e] + 1 for e in range(2))
    bytes_per_row = 2 * (3 * 4 + 2 * 4 + 4 + 4)  # 2 envs x (obs, action, reward, 4 flags)
    assert state["valid"].shape[0] <= rows_bound
    assert saved_bytes(state) <= rows_bound * bytes_per_row + 64  # + ptr and fresh
    assert saved_bytes(state) < a.memory_bytes() / 200  # 105 kB, not 28 MB

    b = make_buffer(1_000_000, 2, seed=3)
    b.load_state_dict(state)
    assert_same_buffers(a, b)
    for x, y in [(a.sample(256), b.sample(256)), (a.sample_n_step(64, 3, 0.9), b.sample_n_step(64, 3, 0.9))]:
        for u, v in zip(x, y):
            assert torch.equal(u, v)


def test_a_wrapped_ring_is_saved_whole_and_older_full_size_states_still_load():
    stream, _ = scripted(SPECS_2, 60)
    a = make_buffer(40, 2, seed=1)
    fill(a, stream[:15])
    assert a.state_dict()["valid"].shape[0] < a.capacity_per_env  # not wrapped yet: a prefix
    fill(a, stream[15:])
    state = round_trip(a.state_dict())
    assert state["obs"].shape[0] == a.capacity_per_env  # wrapped: every slot holds data
    b = make_buffer(40, 2, seed=1)
    b.load_state_dict(state)
    assert_same_buffers(a, b)

    c = make_buffer(1000, 2, seed=1)  # a state saved before only the rows in use were: every slot
    fill(c, stream[:20])
    full = {k: (torch.cat([v, torch.zeros(c.capacity_per_env - v.shape[0], *v.shape[1:], dtype=v.dtype)])
                if k in ("obs", "actions", "rewards", "terminated", "truncated", "valid", "episode_start") else v)
            for k, v in c.state_dict().items()}
    d = make_buffer(1000, 2, seed=1)
    d.load_state_dict(full)
    assert_same_buffers(c, d)
    with pytest.raises(ValueError, match=r"'obs' is \(2000, 2, 3\) torch.float32, expected"):
        make_buffer(1000, 2).load_state_dict({**full, "obs": torch.zeros(2000, 2, 3)})
