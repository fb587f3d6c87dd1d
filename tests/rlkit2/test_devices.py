"""Every agent's train iteration, resume and evaluation, the collector's pinned-memory transfers and the bf16 paths,
parametrised over the device: 'cpu' runs everywhere (so these tests are known to work), 'cuda' runs on a machine
with a GPU and is skipped without one. The replay buffer on CUDA: tests/rlkit2/test_replay.py (test_cuda and the
save/load round trips across devices). scripts/bench/gpu.py runs the CUDA ones first and records their result."""

from __future__ import annotations

import json

import pytest
import torch

import envs
from rlkit2.cli import main_evaluate
from rlkit2.collector import OnPolicyCollector
from rlkit2.run import resolve_config, resume, train

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
QUIET = {"progress": "false", "tensorboard": "false", "eval_every": "0", "eval_episodes": "2", "eval_envs": "2",
         "checkpoint_every": "0"}
TINY_MAZE = {"env_kwargs.size": "6", "env_kwargs.num_goals": "2", "env_kwargs.max_steps": "8", "env_kwargs.holes": "1"}

# agent -> (env, options, steps of the first session): small enough for seconds on a CPU
AGENT_RUNS = {
    "ppo": ("CartPole-v1", {"num_envs": "2", "num_steps": "16", "minibatch_size": "16", "epochs": "1"}, 64),
    "a2c": ("CartPole-v1", {"num_envs": "2", "num_steps": "8"}, 32),
    "agac": ("CartPole-v1", {"num_envs": "2", "num_steps": "16", "minibatch_size": "16", "epochs": "1"}, 64),
    "dsac": ("Pendulum-v1", {"num_envs": "1", "learning_starts": "32", "batch_size": "16", "hidden": "32,32",
                             "steps_per_iteration": "32"}, 64),
    "vpn": ("rlkit2/Collect-v0", {**TINY_MAZE, "filters": "16,16,32", "branch": "4,2", "random_buffer": "64",
                                  "num_envs": "2", "num_steps": "8"}, 64),
    "pref": ("Pendulum-v1", {"num_envs": "2", "rl.num_steps": "16", "rl.minibatch_size": "16", "rl.epochs": "1",
                             "labels": "8", "warmup_steps": "64", "segment_length": "8", "pool_steps": "256",
                             "pretrain_epochs": "1"}, 128),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("agent", list(AGENT_RUNS))
def test_train_resume_and_evaluate_on_the_device(agent, device, tmp_path, capsys):
    env_id, options, steps = AGENT_RUNS[agent]
    run, cfg = resolve_config(agent, env_id, {**QUIET, **options, "device": device, "total_steps": str(steps),
                                              "runs_dir": str(tmp_path)})
    first = train(run, cfg)
    assert first.status == "finished" and first.env_steps >= steps
    second = resume(first.run_dir, {"total_steps": str(2 * steps)})
    assert second.status == "finished" and second.env_steps >= 2 * steps
    assert main_evaluate([str(first.run_dir), "--device", device, "--episodes", "2", "--envs", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and len(result["returns"]) == 2


class _RowPolicy:
    """Deterministic, row by row: the same numbers on any device (to float rounding)."""

    def preprocess(self, obs, update_stats):
        return obs.float()

    def step(self, obs):
        from rlkit2.collector import PolicyStep

        action = torch.tanh(obs[:, :1])
        return PolicyStep(2.0 * action, action)

    def evaluate(self, obs, actions):
        return -actions[:, 0].square(), obs.sum(-1)

    def value(self, obs):
        return obs.sum(-1)


@pytest.mark.parametrize("device", DEVICES)
def test_collector_transfers_through_pinned_memory_and_collects_what_the_cpu_collects(device, monkeypatch):
    """On CUDA the collector stages host arrays in pinned memory and copies them without blocking; the rollout must
    equal a CPU collector's (same env seeds, a deterministic policy) and live on the device."""
    pinned = []
    pin_memory = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: pinned.append(1) or pin_memory(self, *a))
    rollouts = {}
    for where in ("cpu", device):
        env = envs.make("Pendulum-v1", 3, seed=0, max_episode_steps=10)
        collector = OnPolicyCollector(env, num_steps=12, device=torch.device(where))
        collector.reset(seed=0)
        rollouts[where] = collector.collect(_RowPolicy())
        env.close()
    got, want = rollouts[device], rollouts["cpu"]
    assert got.obs.device.type == device and got.rewards.device.type == device
    assert (len(pinned) > 0) == (device == "cuda")
    for name in ("obs", "actions", "logprobs", "values", "rewards", "terminated", "truncated", "final_values",
                 "last_obs", "last_value"):
        torch.testing.assert_close(getattr(got, name).cpu(), getattr(want, name), msg=name)
    assert want.truncated[9].all()  # the bootstrap path (final observations moved to the device) is covered


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_cnn_iteration_on_the_device(device):
    """PPO on an Atari env with the Nature-CNN under bf16 autocast: the stored log-probs are what the update's
    forward computes (ratio 1), and an iteration gives finite losses."""
    from agents.ppo import OnPolicyAgent, OnPolicyConfig
    from rlkit2.agent import BuildContext
    from rlkit2.config import override

    run, _ = resolve_config("ppo", "ALE/Breakout-v5", {})
    env = envs.make("ALE/Breakout-v5", num_envs=2, seed=0, atari=run.atari)
    cfg = override(OnPolicyConfig(), {"num_steps": 16, "minibatch_size": 32, "epochs": 1, "cnn_precision": "bf16",
                                      "policy_last_layer_scale": 1.0})
    agent = OnPolicyAgent(cfg, BuildContext(env=env, device=torch.device(device), total_steps=10_000, seed=0,
                                            threads_collect=1, threads_update=1))
    rollout = agent.collector.collect(agent)
    with torch.no_grad():
        dist, _ = agent.model(rollout.obs.flatten(0, 1))
    ratio = (dist.log_prob(rollout.actions.flatten(0, 1)) - rollout.logprobs.flatten()).exp()
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)
    stats = agent.train_iteration()
    assert torch.isfinite(torch.tensor(stats["losses/policy_loss"]))
    env.close()


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_reward_model_on_the_device(device):
    """The preference agent's conv reward members in bf16 compute the fp32 rewards to bf16 rounding."""
    from rlkit2.preference import RewardEnsemble

    torch.manual_seed(0)
    fp32 = RewardEnsemble((4, 44, 44), 3, members=2).to(device)
    bf16 = RewardEnsemble((4, 44, 44), 3, members=2, precision="bf16").to(device)
    bf16.load_state_dict(fp32.state_dict())
    obs = torch.randint(0, 255, (16, 4, 44, 44), dtype=torch.uint8, device=device)
    actions = torch.nn.functional.one_hot(torch.randint(0, 3, (16,), device=device), 3)
    with torch.no_grad():
        exact, rounded = fp32(obs, actions), bf16(obs, actions)
    assert rounded.dtype == torch.float32 and rounded.device.type == device
    assert not torch.equal(exact, rounded)  # it did run in bf16
    torch.testing.assert_close(rounded, exact, rtol=0.05, atol=0.02 * exact.abs().max().item())
