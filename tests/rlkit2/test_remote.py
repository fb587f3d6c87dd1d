"""Remote rollout workers (rlkit2/remote.py, --workers): the normalizer merge by hand, the acting weights' trip to
the CPU, column-wise replay writes, the remote rollout against the in-process collector on the counter envs, Ray
and in-process workers training bit-identical weights, --workers 0 staying today's code path, and failures (an env
that raises, a killed worker process, a hung worker) stopping the run with a resumable checkpoint.

Ray tests share one local Ray per module (ray_helpers.local_ray: 127.0.0.1 only, its own RAY_TMPDIR, and only its
own processes are ended)."""

from __future__ import annotations

import copy
import csv
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import envs
from agents.ppo import OnPolicyAgent, OnPolicyConfig
from rlkit2 import checkpoint as ckpt
from rlkit2.agent import BuildContext
from rlkit2.collector import OnPolicyCollector
from rlkit2.config import ConfigError, override
from rlkit2.normalizers import Moments, RunningMeanStd, moments_since
from rlkit2.remote import (RemoteCollector, Worker, WorkerError, WorkerGroup, WorkerSpec, acting_state,
                           check_cpu_only, env_shares)
from rlkit2.replay import ReplayBuffer
from rlkit2.run import resolve_config, resume, train
from ray_helpers import local_ray  # noqa: F401  (a fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))  # counter_envs
from counter_envs import CounterEnv  # noqa: E402

QUIET = {"progress": "false", "tensorboard": "false", "eval_every": 0, "eval_episodes": 1, "eval_envs": 1,
         "checkpoint_every": 0}
TINY_PPO = {"num_envs": 4, "num_steps": 32, "total_steps": 384, "epochs": 2, "minibatch_size": 32}


def use_mode(request, mode: str) -> None:
    if mode == "ray":
        request.getfixturevalue("local_ray")


# ------------------------------------------------------------------------------------------ normalizers
def test_merged_worker_moments_equal_one_normalizer_over_all_data():
    """The learner's statistics, then two workers that each start from them and see their own rows: merging what
    each saw gives the moments of all rows, computed here by hand (RunningMeanStd starts as 1e-4 pseudo-rows of
    mean 0 and variance 1)."""
    rng = np.random.default_rng(0)
    prior, part1, part2 = rng.normal(3, 2, (50, 3)), rng.normal(-1, 5, (30, 3)), rng.normal(0, 1, (20, 3))
    learner = RunningMeanStd((3,))
    learner.update(torch.tensor(prior))
    before = learner.moments()
    seen = []
    for part in (part1, part2):
        worker = copy.deepcopy(learner)
        for batch in np.array_split(part, 4):  # a worker updates step by step
            worker.update(torch.tensor(batch))
        seen.append(moments_since(worker.moments(), before))
    for moments in seen:
        learner.merge(moments)

    data, eps = np.concatenate([prior, part1, part2]), 1e-4
    mean = data.sum(0) / (len(data) + eps)
    var = (eps * 1.0 + eps * mean ** 2 + ((data - mean) ** 2).sum(0)) / (len(data) + eps)
    np.testing.assert_allclose(learner.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(learner.var.numpy(), var, rtol=1e-12)
    assert float(learner.count) == pytest.approx(len(data) + eps, rel=1e-15)
    one = RunningMeanStd((3,))
    one.update(torch.tensor(data))
    np.testing.assert_allclose(learner.mean.numpy(), one.mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(learner.var.numpy(), one.var.numpy(), rtol=1e-12)
    assert seen[0].count == 30 and seen[1].count == 20


def test_merging_nothing_leaves_the_statistics_bit_identical():
    rms = RunningMeanStd((2,))
    rms.update(torch.tensor([[1.0, 2.0], [3.0, 7.0]]))
    state = copy.deepcopy(rms.state_dict())
    nothing = moments_since(rms.moments(), rms.moments())  # e.g. the value normalizer: workers never update it
    assert nothing.count == 0
    rms.merge(nothing)
    rms.merge(Moments(np.zeros(2), np.zeros(2), 0.0))
    for key, value in rms.state_dict().items():
        assert torch.equal(value, state[key]), key


# ------------------------------------------------------------------------------------------ devices
def test_acting_weights_are_cpu_snapshots_and_a_worker_refuses_device_tensors():
    module = nn.Linear(2, 2)
    state = acting_state({"m": module})
    assert all(isinstance(v, np.ndarray) for v in state["m"].values())
    before = state["m"]["weight"].copy()
    with torch.no_grad():
        module.weight.add_(1.0)  # the learner's next update ...
    np.testing.assert_array_equal(state["m"]["weight"], before)  # ... never reaches a broadcast in flight
    # a tensor on any device but the CPU ('meta' stands in for CUDA here) is refused before it is loaded
    with pytest.raises(ValueError, match=r"'m\.weight' is on meta; workers act on the CPU only"):
        check_cpu_only({"m": {"weight": torch.empty(2, 2, device="meta")}})


def test_a_worker_acts_on_the_cpu_and_never_touches_cuda(monkeypatch):
    """The worker's whole path (envs, acting copy, loading weights, a rollout) with CUDA's entry points made to
    fail: a learner on a GPU gives its workers CPU weights, and they never initialise CUDA."""
    def no_cuda(*args, **kwargs):
        raise AssertionError("a worker touched CUDA")

    for name in ("is_available", "init", "_lazy_init", "device_count"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    spec = WorkerSpec("ppo", override(OnPolicyConfig(), {"num_steps": 8}), "CartPole-v1", {"backend": "sync"})
    worker = Worker(spec, index=0, offset=0, num_envs=2, seed=0)
    learner = Worker(spec, index=1, offset=2, num_envs=2, seed=0)  # another copy stands in for the learner
    with torch.no_grad():
        for p in learner.agent.model.parameters():
            p.add_(0.5)
    out = worker.collect(0, [acting_state(learner.modules)], request=0)
    assert worker.agent.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in worker.agent.model.parameters())
    for a, b in zip(worker.agent.model.parameters(), learner.agent.model.parameters()):
        assert torch.equal(a, b)  # the broadcast weights, loaded
    assert out["obs"].shape == (8, 2, 4) and out["actions"].shape == (8, 2)
    worker.close()
    learner.close()


def test_rollouts_from_cpu_workers_land_on_the_learners_device():
    """The learner's side of a GPU run: the workers' numpy rollouts become tensors on the learner's device ('meta'
    stands in for CUDA on a machine without one), truncation bootstraps included."""
    spec = WorkerSpec("ppo", override(OnPolicyConfig(), {"num_steps": 8}), "CartPole-v1",
                      {"backend": "sync", "max_episode_steps": 5})
    group = WorkerGroup(spec, envs.make("CartPole-v1", 1), 4, 2, "local")
    group.start(0)
    try:
        parts = [w.collect(0, [acting_state(w.modules)], 0) for w in group.workers]
        rollout = RemoteCollector(group, 8, torch.device("meta"))._assemble(parts)
    finally:
        group.close()
    tensors = [rollout.obs, rollout.actions, rollout.logprobs, rollout.values, rollout.rewards, rollout.terminated,
               rollout.truncated, rollout.final_values, rollout.last_obs, rollout.last_value]
    tensors += [t for _, idx, obs in rollout.truncated_final_obs for t in (idx, obs)]
    assert len(rollout.truncated_final_obs) >= 2 and all(t.device.type == "meta" for t in tensors)
    assert rollout.obs.shape == (8, 4, 4) and rollout.last_value.shape == (4,)


# ------------------------------------------------------------------------------------------ replay columns
def test_replay_writes_of_some_env_columns_equal_writes_of_all():
    """An actor's chunk fills its own env columns of the learner's replay: column-wise adds give the buffer that
    adding whole vector steps gives (pointers, episode starts and final obs included)."""
    rng = np.random.default_rng(1)
    full = ReplayBuffer(40, 4, (3,), torch.float32, (2,), torch.float32)
    split = ReplayBuffer(40, 4, (3,), torch.float32, (2,), torch.float32)
    for _ in range(60):
        obs, nxt = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
        actions, rewards = rng.normal(size=(4, 2)), rng.normal(size=4)
        terminated, truncated = rng.random(4) < 0.1, rng.random(4) < 0.1
        full.add(obs, actions, rewards, terminated, truncated, nxt)
        for cols in (slice(0, 1), slice(1, 4)):
            split.add(obs[cols], actions[cols], rewards[cols], terminated[cols], truncated[cols], nxt[cols],
                      columns=cols)
    a, b = full.state_dict(), split.state_dict()
    for key in a:
        if key != "num_adds":
            assert (torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]), key
    assert full.high_water == split.high_water
    torch.manual_seed(3)
    x = full.sample(16)
    torch.manual_seed(3)
    y = split.sample(16)
    for u, v in zip(x, y):
        assert torch.equal(u, v)


def test_env_shares_cover_every_env_once():
    assert env_shares(8, 2) == [4, 4] and env_shares(7, 3) == [3, 2, 2] and sum(env_shares(32, 5)) == 32


# ------------------------------------------------------------------------------------------ counter envs
@pytest.mark.parametrize("mode", ["local", "ray"])
def test_remote_rollout_has_the_in_process_collectors_truncation_final_obs_and_episode_statistics(request, mode):
    """4 counter envs under a 4-step time limit, in-process and as 2 workers x 2 envs: env i is seeded seed + i either
    way, and the episode lengths and time limits do not depend on the actions, so terminations, truncations, true final
    observations, episode lengths and (reward - 10 x action) agree exactly; the bootstrap values of truncated
    episodes are the learner's critic on the true final observation, and the workers' log-probs and values are the
    learner's on the same data (the broadcast weights arrived)."""
    use_mode(request, mode)
    seed, limit, T = 3, 4, 16
    cfg = override(OnPolicyConfig(), {"num_steps": T, "normalize_obs": False, "minibatch_size": 16})

    def context(env):
        return BuildContext(env=env, device=torch.device("cpu"), total_steps=10_000, seed=seed, threads_collect=1,
                            threads_update=1)

    local_env = envs.make(CounterEnv, 4, seed=seed, backend="sync", max_episode_steps=limit)
    torch.manual_seed(0)
    agent = OnPolicyAgent(cfg, context(local_env))
    reference = agent.collector.collect(agent)
    ref_episodes = agent.collector.episodes.pop()

    spec = WorkerSpec("ppo", cfg, "counter_envs:CounterEnv", {"backend": "sync", "max_episode_steps": limit})
    group = WorkerGroup(spec, envs.make(CounterEnv, 1, seed=seed, backend="sync", max_episode_steps=limit), 4, 2, mode,
                        timeout=120)
    try:
        torch.manual_seed(0)
        learner = OnPolicyAgent(cfg, context(group))
        assert isinstance(learner.collector, RemoteCollector)
        remote = learner.collector.collect(learner)
        episodes = learner.collector.episodes.pop()
    finally:
        group.close()

    assert remote.obs.shape == reference.obs.shape == (T, 4, 3)
    assert torch.equal(remote.terminated, reference.terminated) and torch.equal(remote.truncated, reference.truncated)
    assert remote.truncated.any() and remote.terminated.any()
    # obs = [reset count, t, length]: t and the episode lengths agree (the reset counter counts the worker's one
    # extra seeded reset, which changes nothing else)
    assert torch.equal(remote.obs[..., 1:], reference.obs[..., 1:])
    assert torch.equal(remote.last_obs[..., 1:], reference.last_obs[..., 1:])
    assert torch.equal(remote.rewards - 10 * remote.actions, reference.rewards - 10 * reference.actions)

    def final_obs(rollout):
        return {(t, int(i)): tuple(obs[j, 1:].tolist()) for t, idx, obs in rollout.truncated_final_obs
                for j, i in enumerate(idx)}

    assert final_obs(remote) == final_obs(reference) and len(final_obs(remote)) == int(remote.truncated.sum())
    for t, idx, obs in remote.truncated_final_obs:
        torch.testing.assert_close(remote.final_values[t, idx], learner.value(obs))
    assert (remote.final_values[~remote.truncated] == 0).all()
    assert sorted(episodes[1]) == sorted(ref_episodes[1])  # episode lengths
    for ret, length in zip(*episodes):  # return = L(L+1)/2 + 10 x (actions 1 taken)
        assert 0 <= ret - length * (length + 1) / 2 <= 10 * length and (ret - length * (length + 1) / 2) % 10 == 0
    logprobs, values = learner.evaluate(remote.obs.flatten(0, 1), remote.actions.flatten(0, 1))
    torch.testing.assert_close(logprobs.view(T, 4), remote.logprobs)
    torch.testing.assert_close(values.view(T, 4), remote.values)


# ------------------------------------------------------------------------------------------ --workers 0
# Fingerprints of the weights after a few iterations, computed on the commit before remote workers existed
# (e085d75) with torch 2.13.0+cpu on the development machine: --workers 0 must stay that code path, bit for bit.
W0_FINGERPRINTS = {
    "ppo": ("CartPole-v1", TINY_PPO, "2cfe7e664e59e705"),
    "agac": ("CartPole-v1", TINY_PPO, "0072112cc17c4d81"),
    "dsac": ("Pendulum-v1", {"num_envs": 2, "total_steps": 400, "learning_starts": 100, "steps_per_iteration": 100,
                             "hidden": "16,16", "batch_size": 32}, "cb96aa1354af7d1e"),
}


def fingerprint(state: dict) -> str:
    """sha256 of every tensor and counter in an agent state, optimizers left out."""
    h = hashlib.sha256()

    def walk(x, prefix=""):
        if isinstance(x, dict):
            for k in sorted(x):
                if k not in ("optimizer", "critic_opt", "policy_opt", "alpha_opt", "adversary_optimizer"):
                    walk(x[k], f"{prefix}/{k}")
        elif isinstance(x, torch.Tensor):
            h.update(prefix.encode())
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(f"{prefix}={x!r}".encode())

    walk(state)
    return h.hexdigest()[:16]


@pytest.mark.parametrize("agent", sorted(W0_FINGERPRINTS))
def test_workers_0_trains_the_weights_it_trained_before_remote_workers_existed(tmp_path, agent):
    if torch.__version__ != "2.13.0+cpu":
        pytest.skip(f"fingerprints recorded with torch 2.13.0+cpu, this is {torch.__version__}")
    env_id, extra, expected = W0_FINGERPRINTS[agent]
    run, cfg = resolve_config(agent, env_id, {**QUIET, "runs_dir": str(tmp_path), **extra})
    assert run.workers == 0
    result = train(run, cfg)
    assert fingerprint(ckpt.load(result.checkpoint)["agent_state"]) == expected


def test_workers_0_builds_the_in_process_collector():
    env = envs.make("CartPole-v1", 2, seed=0)
    agent = OnPolicyAgent(override(OnPolicyConfig(), {"num_steps": 8, "minibatch_size": 8}),
                          BuildContext(env=env, device=torch.device("cpu"), total_steps=100, seed=0,
                                       threads_collect=1, threads_update=1))
    assert type(agent.collector) is OnPolicyCollector


# ------------------------------------------------------------------------------------------ Ray = local
@pytest.mark.parametrize("agent", ["ppo", "agac"])
def test_ray_and_in_process_workers_train_bit_identical_weights_and_log_the_workers(tmp_path, local_ray,  # noqa: F811
                                                                                    agent):
    states = {}
    for mode in ("ray", "local"):
        run, cfg = resolve_config(agent, "CartPole-v1", {**QUIET, "runs_dir": str(tmp_path), "run_name": mode,
                                                         **TINY_PPO, "workers": 2, "worker_mode": mode})
        result = train(run, cfg)
        assert result.status == "finished" and result.env_steps == 384
        states[mode] = ckpt.load(result.checkpoint)["agent_state"]
        rows = list(csv.DictReader(open(result.run_dir / "progress.csv")))
        row = rows[0]
        for key in ("workers/steps_per_sec_w0", "workers/steps_per_sec_w1", "workers/wait_s", "workers/broadcast_s",
                    "perf/share_wait", "perf/share_broadcast", "perf/share_update"):
            assert float(row[key]) > 0, key
        assert "perf/share_env" not in row  # the learner steps no env
        assert float(row["charts/episode_return"]) > 0
    assert fingerprint(states["ray"]) == fingerprint(states["local"])
    for key in ("optimizer", "adversary_optimizer"):  # the optimizers too
        if key in states["ray"]:
            for a, b in zip(states["ray"][key]["state"].values(), states["local"][key]["state"].values()):
                assert all(torch.equal(a[k], b[k]) for k in a)


def test_options_that_workers_cannot_serve_are_refused_with_a_fix(tmp_path):
    run, cfg = resolve_config("vpn", "rlkit2/Collect-v0", {**QUIET, "runs_dir": str(tmp_path), "workers": 2})
    with pytest.raises(ConfigError, match=r"Agent 'vpn' does not run with remote workers.*a2c, agac, dsac, ppo.*"
                                          r"--workers 0"):
        train(run, cfg)
    assert not any(tmp_path.iterdir())  # refused before a run directory was made
    with pytest.raises(ConfigError, match=r"'workers' \(3\) is larger than 'num_envs' \(2\)"):
        resolve_config("ppo", "CartPole-v1", {"workers": 3, "num_envs": 2})[0].validate()
    with pytest.raises(ConfigError, match="worker_mode"):
        resolve_config("ppo", "CartPole-v1", {"worker_mode": "threads"})


# ------------------------------------------------------------------------------------------ failures
def failing_run(tmp_path: Path, mode: str, how: str, **extra):
    """PPO on FailingEnv, 2 workers x 2 envs, 8 steps per env per iteration: the env seeded 3 (worker 1's second)
    fails at its 30th step, i.e. in iteration 4, after 3 x 32 = 96 env steps."""
    marker = tmp_path / "failed-once"
    return resolve_config("ppo", "toy_envs:FailingEnv", {
        **QUIET, "runs_dir": str(tmp_path), "run_name": "fails", "num_envs": 4, "num_steps": 8, "minibatch_size": 16,
        "epochs": 1, "total_steps": 256, "workers": 2, "worker_mode": mode, "worker_timeout": 60,
        "env_kwargs": {"fail_seed": 3, "fail_after": 30, "how": how, "marker": str(marker)}, **extra})


@pytest.mark.parametrize("mode,how,says", [
    ("local", "raise", "RuntimeError: env seeded 3 broke at step 30"),
    ("ray", "raise", "RuntimeError: env seeded 3 broke at step 30"),
    ("ray", "kill", "its process died"),
])
def test_a_failed_worker_stops_the_run_with_a_resumable_checkpoint_and_resume_finishes(tmp_path, request, mode, how,
                                                                                        says):
    use_mode(request, mode)
    run, cfg = failing_run(tmp_path, mode, how)
    with pytest.raises(WorkerError) as failure:
        train(run, cfg)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("rollout worker 1 of 2 failed: ") and says in message, message
    assert "training stopped at 96 env steps with a resumable checkpoint" in message
    assert f"--resume {tmp_path / 'fails'}" in message
    saved = ckpt.CheckpointDir(tmp_path / "fails" / "checkpoints").latest()
    assert saved is not None and ckpt.load(saved)["agent_state"]["env_steps"] == 96

    resumed = resume(tmp_path / "fails")  # new workers; the env fails only once (its marker file exists now)
    assert resumed.status == "finished" and resumed.env_steps == 256


def test_a_hung_worker_is_an_error_not_a_hang(tmp_path, local_ray):  # noqa: F811
    run, cfg = failing_run(tmp_path, "ray", "hang", worker_timeout=5)
    with pytest.raises(WorkerError, match=r"^rollout worker 1 of 2 failed: no answer to 'collect' within 5 s "
                                          r"\(worker_timeout\); workers still silent: \[1\] -- training stopped at "
                                          r"96 env steps"):
        train(run, cfg)
    assert ckpt.load(ckpt.CheckpointDir(tmp_path / "fails" / "checkpoints").latest())["agent_state"]["env_steps"] == 96


def test_a_failed_dsac_actor_stops_the_run_with_a_resumable_checkpoint(tmp_path, local_ray):  # noqa: F811
    """The asynchronous path: the actor whose env raises is named, the learner keeps what it added, and a resume
    with the replay finishes."""
    marker = tmp_path / "failed-once"
    run, cfg = resolve_config("dsac", "toy_envs:FailingEnv", {
        **QUIET, "runs_dir": str(tmp_path), "run_name": "fails", "num_envs": 2, "total_steps": 400,
        "learning_starts": 50, "steps_per_iteration": 100, "hidden": "16", "batch_size": 16, "workers": 2,
        "actor_chunk": 10, "worker_timeout": 60,
        "env_kwargs": {"fail_seed": 1, "fail_after": 75, "continuous": True, "marker": str(marker)}})
    with pytest.raises(WorkerError, match=r"^rollout worker 1 of 2 failed: .*RuntimeError: env seeded 1 broke at step "
                                          r"75 -- training stopped at \d+ env steps with a resumable checkpoint"):
        train(run, cfg)
    saved = ckpt.load(ckpt.CheckpointDir(tmp_path / "fails" / "checkpoints").latest())
    steps = saved["agent_state"]["env_steps"]
    assert 0 < steps < 400 and int(saved["resume_state"]["replay"]["valid"].sum()) == steps
    resumed = resume(tmp_path / "fails")
    assert resumed.status == "finished" and resumed.env_steps >= 400


@pytest.mark.parametrize("mode", ["local", "ray"])
def test_a_worker_that_cannot_build_its_env_is_named_with_its_error(request, mode):
    """Both workers fail to start; the first to answer is named (on Ray, either), with the env layer's own message."""
    use_mode(request, mode)
    spec = WorkerSpec("ppo", OnPolicyConfig(), "toy_envs:NoSuchEnv", {"backend": "sync"})
    group = WorkerGroup(spec, envs.make("CartPole-v1", 1), 2, 2, mode, timeout=60)
    with pytest.raises(WorkerError, match=r"^rollout worker [01] of 2 failed: .*Env 'toy_envs:NoSuchEnv'"
                                          r": module 'toy_envs' has no attribute 'NoSuchEnv'"):
        group.start(0)
    group.close()


def test_workers_local_mode_leaves_the_learners_random_stream_alone():
    """In-process workers draw from their own streams (seeded by run seed, worker, request), so the learner's
    minibatch order is the same as on Ray, where the workers are other processes."""
    spec = WorkerSpec("ppo", override(OnPolicyConfig(), {"num_steps": 4}), "CartPole-v1", {"backend": "sync"})
    torch.manual_seed(7)
    np.random.seed(7)
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(7)
    np.random.seed(7)
    worker = Worker(spec, 0, 0, 2, seed=0)
    worker.collect(0, [acting_state(worker.modules)], request=0)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    worker.close()
    assert os.getpid() == worker.ready()["pid"]


# ------------------------------------------------------------------------------------------ pref's RL agent
def pref_on_workers(seed: int, limit: int, mode: str = "local", **options):
    from agents.pref import PrefAgent

    _, cfg = resolve_config("pref", "counter_envs:CounterEnv", {"labels": 20, "warmup_steps": 64, "pretrain_epochs": 1,
                                                                 "segment_length": 2, "rl.num_steps": 8, "rl.minibatch_size": 16,
                                                                 **options})
    spec = WorkerSpec("pref", cfg, "counter_envs:CounterEnv", {"backend": "sync", "max_episode_steps": limit})
    group = WorkerGroup(spec, envs.make(CounterEnv, 1, seed=seed, backend="sync", max_episode_steps=limit), 4, 2,
                        mode, timeout=120)
    agent = PrefAgent(cfg, BuildContext(env=group, device=torch.device("cpu"), total_steps=2000, seed=seed,
                                        threads_collect=1, threads_update=1))
    return agent, group


def test_pref_workers_fill_the_learners_segment_pool_with_whole_episodes_and_reward_with_its_model():
    """pref with 2 workers x 2 counter envs (obs [resets, t, length], reward t + 10 x action, 4-step time limit):
    the learner's pool gets every worker step (16 warm-up rows, then the RL agent's 8) with the true reward, the
    action, a termination flag and episode ids that change exactly where an episode starts (t = 0: after an end,
    and where the warm-up hands over to the RL agent's fresh episodes); the rewards the workers gave the RL agent are
    the learner's reward model's on those steps."""
    agent, group = pref_on_workers(seed=3, limit=4)
    try:
        agent.train_iteration()
        pool = agent.pool
        assert pool.written == 64 // 4 + 8 and agent.extra_steps == 64 and agent.num_labels > 0
        obs, actions, episode = pool.obs[:24], pool.actions[:24], pool.episode[:24]
        t, length = obs[..., 1], obs[..., 2]
        starts = np.concatenate([np.ones((1, 4), bool), episode[1:] != episode[:-1]])
        assert np.array_equal(starts, t == 0) and starts[16].all() and starts[1:16].any()
        assert len(np.unique(episode[starts])) == starts.sum()  # a new id for every episode
        np.testing.assert_array_equal(pool.rewards[:24], t + 1 + 10 * actions[..., 1])
        np.testing.assert_array_equal(pool.terminated[:24], t + 1 == length)
        assert np.array_equal(actions.sum(-1), np.ones((24, 4)))  # one-hot discrete actions

        rollout = agent.rl.collector.collect(agent.rl)  # the next rollout, with this model
        (steps_w0, steps_w1) = agent.rl.collector.take_payloads()
        obs = np.concatenate([steps_w0["obs"], steps_w1["obs"]], 1)
        acts = np.concatenate([steps_w0["actions"], steps_w1["actions"]], 1)
        expected = agent.model.reward(torch.as_tensor(obs.reshape(-1, 3)), torch.as_tensor(acts.reshape(-1, 2)))
        torch.testing.assert_close(rollout.rewards, expected.view(8, 4))
    finally:
        group.close()


def test_pref_with_ray_and_in_process_workers_trains_bit_identical_reward_models_and_policies(tmp_path,
                                                                                              local_ray):  # noqa: F811
    states = {}
    for mode in ("ray", "local"):
        run, cfg = resolve_config("pref", "Pendulum-v1", {
            **QUIET, "runs_dir": str(tmp_path), "run_name": mode, "num_envs": 4, "total_steps": 1024, "labels": 30,
            "warmup_steps": 256, "pretrain_epochs": 2, "rl.num_steps": 64, "rl.epochs": 2, "workers": 2,
            "worker_mode": mode})
        result = train(run, cfg)
        assert result.status == "finished" and result.env_steps == 1024  # the warm-up counts
        states[mode] = ckpt.load(result.checkpoint)["agent_state"]
        assert len(states[mode]["comparisons"]["mu"]) == 30
    assert fingerprint(states["ray"]) == fingerprint(states["local"])


def test_pref_with_workers_resumes_with_its_labels_and_pool(tmp_path):
    run, cfg = resolve_config("pref", "Pendulum-v1", {
        **QUIET, "runs_dir": str(tmp_path), "run_name": "pref", "num_envs": 4, "total_steps": 2048,
        "stop_after_steps": 1024, "labels": 40, "warmup_steps": 256, "pretrain_epochs": 2, "rl.num_steps": 64,
        "rl.epochs": 2, "workers": 2, "worker_mode": "local"})
    first = train(run, cfg)
    assert first.status == "interrupted"
    saved = ckpt.load(ckpt.CheckpointDir(tmp_path / "pref" / "checkpoints").latest())
    pool_rows = saved["resume_state"]["pool"]["written"]
    assert pool_rows == 256 // 4 + saved["agent_state"]["rl"]["env_steps"] // 4
    resumed = resume(tmp_path / "pref", {"stop_after_steps": 0})  # new workers
    assert resumed.status == "finished"
    final = ckpt.load(resumed.checkpoint)
    assert len(final["agent_state"]["comparisons"]["mu"]) == 40
    assert final["resume_state"]["pool"]["written"] == 2048 // 4  # every env step, the warm-up included
