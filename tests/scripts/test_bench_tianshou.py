"""scripts/bench/tianshou_peer.py, the optional Tianshou peer of throughput.py and dsac_speed.py: its PPO has the
nets and initial std the benchmark claims (parameter for parameter SB3's MlpPolicy sizes, orthogonal init, std
1), its rate leaves out the first iteration, too short a run is refused, and its SAC does one update per env step.
Skipped without tianshou (the bench extra installs it)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("tianshou")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import tianshou_peer  # noqa: E402
from throughput import COMMON  # noqa: E402

TINY = {**COMMON, "num_steps": 16, "epochs": 2, "minibatch_size": 8}  # 2 envs x 16 = 32 steps per iteration


def test_ppo_nets_are_sb3s_sizes_with_its_init_and_std_one():
    env = gym.make("HalfCheetah-v5")
    algorithm = tianshou_peer.build_ppo(env.observation_space, env.action_space, COMMON, rollout_size=2048)
    actor, critic = algorithm.policy.actor, algorithm.critic
    ours = sum(p.numel() for p in actor.parameters()) + sum(p.numel() for p in critic.parameters())
    # SB3's MlpPolicy with separate 64x64 nets: 17*64+64 + 64*64+64 per trunk, 64*6+6 + 6 (log std), 64+1.
    assert ours == 2 * (17 * 64 + 64 + 64 * 64 + 64) + (64 * 6 + 6) + 6 + (64 + 1)
    out = actor.mu.model[0].weight  # 6 x 64, orthogonal with gain 0.01: W W^T = 1e-4 I
    torch.testing.assert_close(out @ out.T, 1e-4 * torch.eye(6), atol=1e-9, rtol=0)
    hidden = actor.preprocess.model.model[2].weight  # 64 x 64, gain sqrt 2
    torch.testing.assert_close(hidden @ hidden.T, 2 * torch.eye(64), atol=1e-5, rtol=0)
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in actor.modules() if isinstance(layer, torch.nn.Linear))
    obs = torch.as_tensor(np.stack([env.observation_space.sample() for _ in range(4)]))
    (mean, std), _ = actor(obs)
    assert mean.shape == std.shape == (4, 6)
    torch.testing.assert_close(std, torch.ones(4, 6))


def test_ppo_rate_times_every_iteration_after_the_first():
    out = tianshou_peer.ppo_rate(total_steps=96, threads=1, num_envs=2, settings=TINY)  # 3 iterations of 32
    assert out["steps"] == 64
    assert out["steps_per_sec"] > 0 and out["first_iteration_seconds"] > 0
    assert 0 < out["share_collect"] < 1
    assert out["collect_steps_per_sec"] == pytest.approx(out["steps_per_sec"] / out["share_collect"])


def test_ppo_rate_refuses_a_run_of_one_iteration():
    with pytest.raises(ValueError, match="must exceed one iteration"):
        tianshou_peer.ppo_rate(total_steps=32, threads=1, num_envs=2, settings=TINY)


def test_sac_rate_does_one_update_per_env_step():
    out = tianshou_peer.sac_rate("Pendulum-v1", steps=12, threads=1, warmup=64, hidden=(16, 16))
    assert out["steps_per_sec"] > 0
    assert out["updates_per_sec"] == pytest.approx(out["steps_per_sec"])  # same seconds: 12 updates for 12 steps
