"""AGAC: the advantage, critic target, KLs and count bonus against hand-computed values (discrete and Gaussian),
the adversary's loss reaching only the adversary, the c schedule, learning a small MiniGrid room through the
scripts (save -> evaluate), and smoke runs on MuJoCo and Atari."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from agents.agac import (AGACAgent, AGACConfig, agac_advantage, clipped_value_loss, critic_target,
                         episodic_count_bonus, kl_categorical, kl_gaussian)
from conftest import subprocess_env
from rlkit2.agent import BuildContext
from rlkit2.config import ConfigError, override

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("minigrid")


def test_advantage_by_hand():
    """A = G - V_old + c (log pi_old - log pi_adv_old): [1 - 0.2 + 0.1 * 2, 0.5 - 0.4 + 0.1 * (-1.5)]."""
    a = agac_advantage(torch.tensor([1.0, 0.5]), torch.tensor([0.2, 0.4]), torch.tensor([-1.0, -2.0]),
                       torch.tensor([-3.0, -0.5]), c=0.1)
    np.testing.assert_allclose(a, [1.0, -0.05], rtol=1e-6)


def test_critic_target_by_hand_and_without_gradient_through_the_kl():
    kl = torch.tensor([0.5, 0.0], requires_grad=True)
    target = critic_target(torch.tensor([2.0, 1.0]), kl, c=0.2)
    np.testing.assert_allclose(target.detach(), [2.1, 1.0], rtol=1e-6)
    assert not target.requires_grad


def test_kl_categorical_by_hand():
    """p = (1/2, 1/2), q = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3)."""
    kl = kl_categorical(torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.75]])) + 3.0)
    assert kl.item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)


def test_kl_gaussian_by_hand():
    """Per dim KL(N(0,1) || N(1,2)) = ln 2 + (1 + 1) / 8 - 1/2; two equal dims sum."""
    kl = kl_gaussian(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2), 2 * torch.ones(1, 2))
    assert kl.item() == pytest.approx(2 * (math.log(2) + 0.25 - 0.5), rel=1e-6)
    # and it agrees with torch.distributions
    p = torch.distributions.Normal(torch.tensor([0.3, -1.0]), torch.tensor([0.5, 1.5]))
    q = torch.distributions.Normal(torch.tensor([0.0, 0.2]), torch.tensor([1.0, 0.7]))
    assert kl_gaussian(p.loc, p.scale, q.loc, q.scale).item() == pytest.approx(
        torch.distributions.kl_divergence(p, q).sum().item(), rel=1e-6)


def test_clipped_value_loss_by_hand():
    """V_old = 0, V = 1, T = 2, clip 0.2: max((1-2)^2, (0.2-2)^2) / 2 = 1.62."""
    loss = clipped_value_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([2.0]), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 1.8 ** 2, rel=1e-6)


def test_episodic_count_bonus_by_hand():
    positions = np.array([[1, 1], [1, 1], [2, 1], [1, 1]]).reshape(4, 1, 2)
    ends = np.array([False, True, False, False]).reshape(4, 1)
    np.testing.assert_allclose(episodic_count_bonus(positions, ends, 0.1, "rollout", "inverse_sqrt")[:, 0],
                               [0.1, 0.1 / math.sqrt(2), 0.1, 0.1 / math.sqrt(3)], rtol=1e-6)
    np.testing.assert_allclose(episodic_count_bonus(positions, ends, 0.1, "episode", "inverse_sqrt")[:, 0],
                               [0.1, 0.1 / math.sqrt(2), 0.1, 0.1], rtol=1e-6)
    # two envs at the same positions: 'rollout' pools them in time order, 'episode' keeps them apart
    both = np.concatenate([positions, positions], axis=1)
    np.testing.assert_allclose(episodic_count_bonus(both, np.zeros((4, 2), bool), 0.1, "rollout", "inverse_sqrt"),
                               0.1 / np.sqrt([[1, 2], [3, 4], [1, 2], [5, 6]]), rtol=1e-6)
    np.testing.assert_allclose(episodic_count_bonus(both, np.zeros((4, 2), bool), 0.1, "episode", "inverse_sqrt")[:, 1],
                               0.1 / np.sqrt([1, 2, 1, 3]), rtol=1e-6)


def test_first_visit_count_bonus_is_what_the_official_uint8_cast_computes():
    """The official runner stores 0.1 * 1/sqrt(n) through a uint8 array: 1 on a first visit, 0 after."""
    positions = np.array([[1, 1], [1, 1], [2, 1], [1, 1]]).reshape(4, 1, 2)
    ends = np.array([False, True, False, False]).reshape(4, 1)
    counts = np.array([1, 2, 1, 3])
    official = 0.1 * np.asarray(1 / np.sqrt(counts), dtype=np.uint8)
    np.testing.assert_allclose(episodic_count_bonus(positions, ends, 0.1, "rollout")[:, 0], official)
    np.testing.assert_allclose(official, [0.1, 0.0, 0.1, 0.0])
    # per-episode tables: the env's episode ends after step 1, so (1, 1) is new again at step 3
    np.testing.assert_allclose(episodic_count_bonus(positions, ends, 0.1, "episode")[:, 0], [0.1, 0.0, 0.1, 0.1])
    both = np.concatenate([positions, positions], axis=1)  # pooled: the second env's visits are never first
    np.testing.assert_allclose(episodic_count_bonus(both, np.zeros((4, 2), bool), 0.1, "rollout"),
                               [[0.1, 0.0], [0.0, 0.0], [0.1, 0.0], [0.0, 0.0]])


def test_episode_count_tables_carry_across_rollouts_until_the_episode_ends():
    """count_reset='episode' keeps each env's table across rollout boundaries: (1, 1) visited in one rollout is
    not a first visit in the next unless the episode ended in between."""
    tables = [{}, {}]
    first = np.array([[1, 1], [2, 1]]).reshape(2, 1, 2).repeat(2, axis=1)
    ends = np.array([[False, False], [False, True]])  # env 1's episode ends at the rollout's last step
    np.testing.assert_allclose(episodic_count_bonus(first, ends, 0.1, "episode", episode_tables=tables),
                               [[0.1, 0.1], [0.1, 0.1]])
    second = np.array([[1, 1], [3, 1]]).reshape(2, 1, 2).repeat(2, axis=1)
    np.testing.assert_allclose(episodic_count_bonus(second, np.zeros((2, 2), bool), 0.1, "episode",
                                                    episode_tables=tables), [[0.0, 0.1], [0.1, 0.1]])
    assert tables[0] == {(1, 1): 2, (2, 1): 1, (3, 1): 1} and tables[1] == {(1, 1): 1, (3, 1): 1}


def test_episode_count_tables_are_checkpointed():
    agent = make_agent(count_bonus=0.1, count_reset="episode")
    agent.train_iteration()
    assert any(agent.episode_counts)  # MiniGrid-Empty-5x5 episodes outlast a 32-step rollout
    restored = make_agent(count_bonus=0.1, count_reset="episode")
    restored.load_state_dict(agent.state_dict())
    assert restored.episode_counts == agent.episode_counts


def make_agent(env_id="MiniGrid-Empty-5x5-v0", total_steps=10_000, **overrides):
    env = envs.make(env_id, num_envs=4, seed=0)
    cfg = override(AGACConfig(), {"num_steps": 32, "minibatch_size": 64, **overrides})
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=total_steps, seed=0, threads_collect=1,
                       threads_update=1)
    return AGACAgent(cfg, ctx)


@pytest.mark.parametrize("env_id", ["MiniGrid-Empty-5x5-v0", "Pendulum-v1"])  # discrete and Gaussian
def test_adversary_loss_reaches_only_the_adversary(env_id):
    """Same minibatch, adversary_coef 0 vs 1: the actor and critic end up identical; the adversary moves only
    when its loss is on."""
    torch.manual_seed(0)
    agent = make_agent(env_id, adversary_coef=0.0)
    rollout = agent.collector.collect(agent)
    mb = {"obs": rollout.obs[0], "actions": rollout.actions[0], "logprobs": rollout.logprobs[0],
          "values": rollout.values[0], "advantages": torch.randn(4), "targets": torch.randn(4),
          "pi_old": rollout.extras["pi_params"][0]}
    mb = {k: v.clone() for k, v in mb.items()}  # rollout tensors come from inference mode
    with_adv = copy.deepcopy(agent)
    with_adv.cfg.adversary_coef = 1.0
    adversary_before = [p.clone() for p in agent.nets.adversary.parameters()]
    agent._minibatch_step(mb)
    with_adv._minibatch_step(mb)
    for a, b in zip(agent.nets.actor.parameters(), with_adv.nets.actor.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(agent.nets.critic.parameters(), with_adv.nets.critic.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(agent.nets.adversary.parameters(), adversary_before))
    assert any(not torch.equal(a, b) for a, b in zip(with_adv.nets.adversary.parameters(), adversary_before))


@pytest.mark.parametrize("normalize", [True, False])
def test_minibatch_advantage_normalization_is_an_option(normalize):
    """At ratio 1 (the minibatch's log-probs are the current policy's) the clipped surrogate is -mean(A): 0 for
    advantages normalized per minibatch, -mean of the raw ones (here -2.5) without."""
    torch.manual_seed(0)
    agent = make_agent(normalize_advantages=normalize)
    rollout = agent.collector.collect(agent)
    obs, actions = rollout.obs[0].clone(), rollout.actions[0].clone()
    with torch.no_grad():
        logprobs = agent.nets.dist(agent.nets.actor_params(obs)).log_prob(actions)
    mb = {"obs": obs, "actions": actions, "logprobs": logprobs, "values": torch.zeros(4),
          "advantages": torch.tensor([1.0, 2.0, 3.0, 4.0]), "targets": torch.zeros(4),
          "pi_old": rollout.extras["pi_params"][0].clone()}
    policy_loss = float(agent._minibatch_step(mb)[0])
    assert policy_loss == pytest.approx(0.0 if normalize else -2.5, abs=1e-6)


def test_without_its_terms_agac_takes_the_ppo_minigrid_update():
    """c = 0 and no count bonus: from the same weights and minibatch, AGAC's losses and its optimizer step equal
    PPO's with the MiniGrid preset (the control behind the exploration benchmark: any difference between the
    two there comes from the AGAC terms, not from the networks, losses, clipping or Adam settings)."""
    from agents.ppo import OnPolicyAgent
    from rlkit2.run import resolve_config

    env = envs.make("MiniGrid-Empty-5x5-v0", num_envs=4, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=10_000, seed=0, threads_collect=1,
                       threads_update=1)
    _, ppo_cfg = resolve_config("ppo", "MiniGrid-Empty-5x5-v0", {})
    _, agac_cfg = resolve_config("agac", "MiniGrid-Empty-5x5-v0", {"agac_c": 0.0, "count_bonus": 0.0})
    torch.manual_seed(0)
    ppo, agac = OnPolicyAgent(ppo_cfg, ctx), AGACAgent(agac_cfg, ctx)
    agac.nets.actor[0].load_state_dict(ppo.model.policy_torso.state_dict())
    agac.nets.actor[1].load_state_dict(ppo.model.policy_head.state_dict())
    agac.nets.critic[0].load_state_dict(ppo.model.value_torso.state_dict())
    agac.nets.critic[1].load_state_dict(ppo.model.value_head.state_dict())

    obs = torch.as_tensor(np.concatenate([env.reset(seed=s)[0] for s in range(16)]))
    g = torch.Generator().manual_seed(1)
    actions = torch.randint(0, 7, (len(obs),), generator=g)
    with torch.no_grad():
        old_logprobs = ppo.model.distribution(obs).log_prob(actions) + 0.3 * torch.randn(len(obs), generator=g)
    advantages, targets = torch.randn(len(obs), generator=g), torch.randn(len(obs), generator=g)
    old_values = targets + 0.5 * torch.randn(len(obs), generator=g)  # some value clipping applies
    stats = ppo._minibatch_step(obs, actions, old_logprobs, advantages, targets, old_values)
    mb = {"obs": obs, "actions": actions, "logprobs": old_logprobs, "values": old_values, "advantages": advantages,
          "targets": targets, "pi_old": torch.zeros(len(obs), 7)}
    policy, value, _, entropy = agac._minibatch_step(mb)[:4].tolist()
    assert (policy, value, entropy) == pytest.approx((float(stats["losses/policy_loss"]),
                                                      float(stats["losses/value_loss"]),
                                                      float(stats["losses/entropy"])), rel=1e-5)
    assert float(stats["losses/grad_norm"]) > ppo_cfg.max_grad_norm  # the gradient clip was active in both
    after = [*ppo.model.policy_torso.parameters(), *ppo.model.policy_head.parameters(),
             *ppo.model.value_torso.parameters(), *ppo.model.value_head.parameters()]
    for a, b in zip(after, [*agac.nets.actor.parameters(), *agac.nets.critic.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_c_decays_linearly_to_zero_over_the_run_with_decay_steps_0():
    agent = make_agent(total_steps=4 * 128, agac_c=0.4, agac_c_decay_steps=0)  # 4 iterations of 4 envs x 32 steps
    cs = []
    for _ in range(4):
        cs.append(agent.train_iteration()["charts/agac_c"])
    np.testing.assert_allclose(cs, [0.4, 0.3, 0.2, 0.1], rtol=1e-6)


def test_c_decays_over_the_official_horizon_by_default():
    """The official MiniGrid run decays c over 2e8 steps: after 2M steps c is still 0.99 c0, not ~0."""
    assert AGACConfig().agac_c_decay_steps == 200_000_000
    agent = make_agent(total_steps=4 * 128, agac_c=0.4)
    cs = [agent.train_iteration()["charts/agac_c"] for _ in range(4)]
    np.testing.assert_allclose(cs, [0.4 * (1 - u * 128 / 2e8) for u in range(4)], rtol=1e-9)
    agent = make_agent(total_steps=2_000_000, agac_c=0.4, agac_c_decay_steps=1024)  # 8 iterations of 128
    agent.iterations = 6
    assert agent.current_c() == pytest.approx(0.1)
    agent.iterations = 9
    assert agent.current_c() == 0.0


def test_count_bonus_needs_agent_positions():
    with pytest.raises(ConfigError, match="agent_pos"):
        make_agent("CartPole-v1", count_bonus=0.1)


@pytest.mark.parametrize("env_id", ["InvertedPendulum-v5", "ALE/Pong-v5"])
def test_agac_runs_on_mujoco_and_atari(env_id):
    env = envs.make(env_id, num_envs=2, seed=0)
    cfg = override(AGACConfig(), {"num_steps": 16, "minibatch_size": 16, "epochs": 1})
    agent = AGACAgent(cfg, BuildContext(env=env, device=torch.device("cpu"), total_steps=64, seed=0,
                                        threads_collect=1, threads_update=1))
    stats = agent.train_iteration()
    assert agent.env_steps == 32 and np.isfinite(stats["loss/adversary"])
    actions = agent.act(torch.as_tensor(env.reset(seed=1)[0]), deterministic=True)
    assert actions.shape[0] == 2


@pytest.mark.slow
def test_agac_learns_a_minigrid_room_through_the_scripts(tmp_path):
    """Train from the real script on MiniGrid (a third-party package through the custom-env path), then evaluate
    the saved checkpoint from the evaluate script. Random policy on Empty-5x5: about 0.1."""
    quiet = ["--progress", "false", "--tensorboard", "false"]
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--agent", "agac", "--env",
                          "MiniGrid-Empty-5x5-v0", "--total_steps", "40960", "--eval_every", "0",
                          "--runs_dir", str(tmp_path)] + quiet,
                         capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert out.returncode == 0, out.stderr
    run_dir = Path(next(l.split(":", 1)[1].strip() for l in out.stdout.splitlines() if l.startswith("run directory")))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent_config"]["count_bonus"] == 0.1 and config["run"]["eval_deterministic"] is False
    ev = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(run_dir), "--episodes", "20",
                         "--json"], capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["episodes"] == 20 and result["return_mean"] >= 0.75, result
