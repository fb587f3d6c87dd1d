"""DSAC: the critic losses (v1, DSAC-T, Huber variant) against hand-computed values and gradients, the
temperature, sigma_bar and Polyak updates, stop-gradients inside a full update, learning Pendulum with a fixed
seed, save -> resume (replay included) -> evaluate, and the bad-input errors."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

import envs
from agents.dsac import (DSACAgent, DSACConfig, critic_loss_t, critic_loss_t_huber, critic_loss_v1,
                         temperature_loss, update_sigma_bar)
from rlkit2 import checkpoint as ckpt
from rlkit2.agent import BuildContext
from rlkit2.config import ConfigError, override
from rlkit2.evaluation import evaluate
from rlkit2.run import resolve_config, resume, train

QUIET = {"progress": "false", "tensorboard": "false"}


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# ------------------------------------------------------------------------------------------ critic losses
def test_v1_critic_loss_and_gradients_by_hand():
    """B = 2: sample 0 inside the TD bound, sample 1 far outside it (y_z - Q = -32, b = 20).

    sample 0: Q=1, sigma=0.5, y=2:   mean term -(1)/(0.25+0.1)*Q,      std term -((1)^2-0.25)/(0.125+0.1)*sigma
    sample 1: Q=2, sigma=1, y=-30:  mean term -(-32)/(1+0.1)*Q  (unclipped target),
                                    std term -((20)^2-1)/(1+0.1)*sigma  (target clipped to Q - 20)."""
    q, std, y_z = leaf([1.0, 2.0]), leaf([0.5, 1.0]), leaf([2.0, -30.0])
    loss = critic_loss_v1(q, std, y_z, td_bound=20.0, eps=0.1)
    per_sample = [-1 / 0.35 * 1.0 - 0.75 / 0.225 * 0.5, 32 / 1.1 * 2.0 - 399 / 1.1 * 1.0]
    assert loss.item() == pytest.approx(sum(per_sample) / 2, rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(q.grad, [-1 / 0.35 / 2, 32 / 1.1 / 2], rtol=1e-12)       # mean term only
    np.testing.assert_allclose(std.grad, [-0.75 / 0.225 / 2, -399 / 1.1 / 2], rtol=1e-12)  # std term only
    assert y_z.grad is None  # the target is a stop-gradient


def test_v1_loss_gradient_is_the_gaussian_nll_gradient_inside_the_bound_without_eps():
    q, std, y = leaf([0.3, -1.0, 4.0]), leaf([0.7, 2.0, 1.5]), torch.tensor([1.0, -2.5, 3.0], dtype=torch.float64)
    critic_loss_v1(q, std, y, td_bound=100.0, eps=0.0).backward()
    q2, std2 = q.detach().clone().requires_grad_(), std.detach().clone().requires_grad_()
    nll = -torch.distributions.Normal(q2, std2).log_prob(y).mean()
    nll.backward()
    np.testing.assert_allclose(q.grad, q2.grad, rtol=1e-12)
    np.testing.assert_allclose(std.grad, std2.grad, rtol=1e-12)


def scalar_t_loss_terms(q, s, yq, yz, sbar, xi=3.0, eps=0.1):
    """One critic, one sample, written out: (loss value, dL/dQ, dL/dsigma) before averaging."""
    yb = q + max(min(yz - q, xi * sbar), -xi * sbar)
    scale = sbar ** 2 + eps
    value = scale * (-(yq - q) / (s ** 2 + eps) * q - ((q - yb) ** 2 - s ** 2) / (s ** 3 + eps) * s)
    return value, scale * -(yq - q) / (s ** 2 + eps), scale * -((q - yb) ** 2 - s ** 2) / (s ** 3 + eps)


def test_dsac_t_critic_loss_and_gradients_by_hand():
    """Two critics with different sigma_bar (so different bounds and scales) share y_q and y_z; the mean
    regresses to the expected target y_q, the std to the sampled target clipped to Q_i +- 3 sigma_bar_i."""
    q, std = leaf([[1.0, 2.0], [0.5, 3.0]]), leaf([[0.5, 1.0], [2.0, 0.2]])
    y_q, y_z = leaf([1.5, 1.0]), leaf([4.0, -2.0])
    sigma_bar = torch.tensor([0.4, 1.0], dtype=torch.float64)
    loss = critic_loss_t(q, std, y_q, y_z, sigma_bar, xi=3.0, eps=0.1)
    expected, grad_q, grad_s = 0.0, np.zeros((2, 2)), np.zeros((2, 2))
    for i in range(2):
        for b in range(2):
            v, gq, gs = scalar_t_loss_terms(q[i, b].item(), std[i, b].item(), y_q[b].item(), y_z[b].item(),
                                            sigma_bar[i].item())
            expected += v / 2
            grad_q[i, b], grad_s[i, b] = gq / 2, gs / 2
    # spot check of one element by hand: critic 0, sample 0: bound 1.2, y_z - Q = 3 -> clipped to 1.2;
    # scale 0.26; mean term -(0.5)/0.35*1; std term -((1.2)^2 - 0.25)/0.225*0.5
    v00 = 0.26 * (-0.5 / 0.35 * 1.0 - (1.44 - 0.25) / 0.225 * 0.5)
    assert scalar_t_loss_terms(1.0, 0.5, 1.5, 4.0, 0.4)[0] == pytest.approx(v00, rel=1e-12)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(q.grad, grad_q, rtol=1e-12)
    np.testing.assert_allclose(std.grad, grad_s, rtol=1e-12)
    assert y_q.grad is None and y_z.grad is None


def test_huber_weighted_variant_by_hand():
    """DSAC-v2 HEAD: w = clip(sigma_bar^2/(sigma^2+eps), 0.1, 10); Huber(delta) in both terms."""
    q, std = leaf([[0.0, 10.0]]), leaf([[1.0, 0.1]])
    y_q, y_z = torch.tensor([3.0, -100.0], dtype=torch.float64), torch.tensor([1.0, 20.0], dtype=torch.float64)
    sigma_bar = torch.tensor([2.0], dtype=torch.float64)
    loss = critic_loss_t_huber(q, std, y_q, y_z, sigma_bar, xi=3.0, eps=0.1, delta=50.0)

    def huber(x, d=50.0):
        return 0.5 * x * x if abs(x) < d else d * (abs(x) - 0.5 * d)

    # sample 0: w = 4/1.1; yb = 0 + clip(1, -6, 6) = 1; sample 1: w = clip(4/0.11) = 10; yb = 10 + 6 = 16
    l0 = 4 / 1.1 * (huber(0 - 3) + 1.0 * (1.0 - huber(0 - 1)) / 1.1)
    l1 = 10 * (huber(10 + 100) + 0.1 * (0.01 - huber(10 - 16)) / 0.2)
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-12)


def test_huber_variant_gradients_reach_q_and_sigma_through_the_right_terms():
    """Inside the Huber threshold: dL/dQ = w (Q - y_q) / B (mean term only), dL/dsigma = w (sg(sigma)^2 -
    0.5 (sg(Q) - y_b)^2) / (sg(sigma) + eps) / B (std term only)."""
    q, std = leaf([[0.0, 1.0]]), leaf([[1.0, 0.5]])
    y_q, y_z = leaf([3.0, 2.0]), leaf([1.0, 9.0])
    sigma_bar = torch.tensor([1.0], dtype=torch.float64)
    critic_loss_t_huber(q, std, y_q, y_z, sigma_bar, xi=3.0, eps=0.1, delta=50.0).backward()
    w = [1 / 1.1, 1 / 0.35]
    y_b = [1.0, 1.0 + 3.0]  # sample 1 clipped at Q + 3 sigma_bar
    np.testing.assert_allclose(q.grad, [[w[0] * (0 - 3) / 2, w[1] * (1 - 2) / 2]], rtol=1e-12)
    np.testing.assert_allclose(std.grad, [[w[0] * (1 - 0.5 * (0 - y_b[0]) ** 2) / 1.1 / 2,
                                           w[1] * (0.25 - 0.5 * (1 - y_b[1]) ** 2) / 0.6 / 2]], rtol=1e-12)
    assert y_q.grad is None and y_z.grad is None


def test_sigma_bar_starts_at_the_first_batch_mean_then_averages():
    stds = torch.tensor([[1.0, 3.0], [4.0, 4.0]])
    sb = update_sigma_bar(torch.tensor([-1.0, -1.0]), stds, tau_b=0.1)
    np.testing.assert_allclose(sb, [2.0, 4.0])
    sb = update_sigma_bar(sb, torch.tensor([[6.0, 6.0], [0.0, 0.0]]), tau_b=0.1)
    np.testing.assert_allclose(sb, [0.9 * 2 + 0.1 * 6, 0.9 * 4 + 0.1 * 0], rtol=1e-6)


def test_temperature_loss_and_step_direction_by_hand():
    """log alpha = 1, log pi = [-1, -3] (entropy 2), target -1 (entropy 1): loss = -1 * mean(-2, -4) = 3, and
    the gradient +3 makes Adam lower alpha (the entropy is above its target)."""
    log_alpha = torch.nn.Parameter(torch.tensor(1.0))
    loss = temperature_loss(log_alpha, torch.tensor([-1.0, -3.0]), target_entropy=-1.0)
    assert loss.item() == pytest.approx(3.0)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(3.0)
    opt = torch.optim.Adam([log_alpha], lr=3e-4)
    opt.step()
    assert log_alpha.item() == pytest.approx(1.0 - 3e-4, abs=1e-7)  # Adam's first step is lr * sign(grad)


# ----------------------------------------------------------------------------------- the agent's update
def make_agent(env_id="Pendulum-v1", num_envs=2, **overrides):
    env = envs.make(env_id, num_envs=num_envs, seed=0)
    cfg = override(DSACConfig(), {"hidden": (32, 32), "learning_starts": 64, "buffer_size": 10_000, **overrides})
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=10_000, seed=0, threads_collect=1,
                       threads_update=1)
    return DSACAgent(cfg, ctx)


def filled_agent(**overrides):
    torch.manual_seed(0)
    agent = make_agent(**overrides)
    timing = {"env": 0.0, "inference": 0.0, "update": 0.0}
    for _ in range(100):
        agent._env_step(timing)
    return agent


def test_one_update_matches_a_step_by_step_replica():
    """Replays one DSAC-T update by hand with the same random numbers: next actions from the *target* policy,
    y_q from the lower target mean, y_z from that same critic's sample, sigma_bar updated before the loss, the
    policy loss on min(Q1, Q2) with a detached alpha, and log alpha's gradient from the temperature loss only."""
    agent = filled_agent(gamma=0.9)
    with torch.no_grad():  # make the targets differ from the online networks
        for p in list(agent.critic_target.parameters()) + list(agent.policy_target.parameters()):
            p.add_(0.1 * torch.randn_like(p))
        agent.log_alpha.fill_(-0.5)
    batch = agent.replay.sample(16)
    obs, actions, next_obs = batch.obs, batch.actions, batch.next_obs
    agent.updates = 0  # a policy step
    state = torch.get_rng_state()

    next_a, next_logp = agent.sample_with_log_prob(agent.policy_target, next_obs)
    next_q, next_std = agent.q_values(agent.critic_target, next_obs, next_a)
    z = next_q + torch.randn_like(next_q).clamp(-3, 3) * next_std
    alpha = math.exp(-0.5)
    cont = 0.9 * (~batch.terminated).float()
    lower = (next_q[1] < next_q[0]).long()  # the critic with the lower target mean
    pick = torch.arange(16)
    y_q = batch.rewards + cont * (next_q[lower, pick] - alpha * next_logp)
    y_z = batch.rewards + cont * (z[lower, pick] - alpha * next_logp)
    q, std = agent.q_values(agent.critic, obs, actions)
    sigma_bar = std.mean(1)  # first update: the batch mean, before the loss uses it
    expected_critic = critic_loss_t(q, std, y_q, y_z, sigma_bar.detach())
    new_a, logp = agent.sample_with_log_prob(agent.policy, obs)
    q_new, _ = agent.q_values(agent.critic, obs, new_a)
    expected_policy = (alpha * logp - q_new.min(0).values).mean()
    expected_alpha_grad = -(logp + agent.target_entropy).mean()

    torch.set_rng_state(state)
    stats = agent.update(batch)
    assert stats["critic/target_q"].item() == pytest.approx(y_q.mean().item(), rel=1e-5)
    assert stats["critic/target_z"].item() == pytest.approx(y_z.mean().item(), rel=1e-5)
    assert stats["loss/critic"].item() == pytest.approx(expected_critic.item(), rel=1e-5)
    assert stats["loss/policy"].item() == pytest.approx(expected_policy.item(), rel=1e-5)
    torch.testing.assert_close(agent.sigma_bar, sigma_bar.detach())
    assert agent.log_alpha.grad.item() == pytest.approx(expected_alpha_grad.item(), rel=1e-5)


def test_polyak_targets_move_only_on_delayed_updates():
    agent = filled_agent(tau=0.25, delay=2)
    batch = agent.replay.sample(32)
    for update_index, policy_step in ((0, True), (1, False)):
        agent.updates = update_index
        critic_t = [p.clone() for p in agent.critic_target.parameters()]
        policy_t = [p.clone() for p in agent.policy_target.parameters()]
        agent.update(batch)
        for old, new, online in zip(critic_t + policy_t,
                                    list(agent.critic_target.parameters()) + list(agent.policy_target.parameters()),
                                    list(agent.critic.parameters()) + list(agent.policy.parameters())):
            expected = 0.75 * old + 0.25 * online if policy_step else old
            torch.testing.assert_close(new, expected, rtol=1e-6, atol=1e-7)


def test_policy_loss_does_not_reach_the_critics():
    """Same state and batch, one update with the policy step (updates % delay == 0) and one without: the
    critics come out identical, so the policy term sends no gradient into the critic weights."""
    agent = filled_agent()
    batch = agent.replay.sample(32)
    twin = copy.deepcopy(agent)
    agent.updates, twin.updates = 0, 1
    policy_before = [p.clone() for p in agent.policy.parameters()]
    torch.manual_seed(1)
    agent.update(batch)
    torch.manual_seed(1)
    twin.update(batch)
    for a, b in zip(agent.critic.parameters(), twin.critic.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(agent.policy.parameters(), policy_before))
    assert all(torch.equal(a, b) for a, b in zip(twin.policy.parameters(), policy_before))


def test_targets_use_the_lower_target_critic_and_ignore_truncation():
    """DSAC-T's y_q uses min_i Q'_i, and only 'terminated' zeroes the bootstrap (truncation bootstraps)."""
    agent = filled_agent(reward_scale=1.0, gamma=0.5)
    batch = agent.replay.sample(8)
    batch = batch._replace(terminated=torch.tensor([True, False] * 4), truncated=torch.tensor([False, True] * 4))
    torch.manual_seed(3)
    next_a, next_logp = agent.sample_with_log_prob(agent.policy_target, batch.next_obs)
    next_q, _ = agent.q_values(agent.critic_target, batch.next_obs, next_a)
    alpha = agent.log_alpha.exp().item()
    expected = batch.rewards + 0.5 * (~batch.terminated) * (next_q.min(0).values - alpha * next_logp)
    torch.manual_seed(3)
    stats = agent.update(batch)
    assert stats["critic/target_q"].item() == pytest.approx(expected.mean().item(), rel=1e-5)


def test_iteration_stats_average_each_statistic_over_the_updates_that_made_it():
    """Updates 0..2 with delay 2: two policy steps (0, 2) and one critic-only step (1), summed per kind on the
    device. The critic's statistics average over all three updates, the policy's over the two policy steps; an
    iteration without a policy step reports none; a NaN anywhere in the sums stops the run."""
    from rlkit2.agent import NonFiniteLossError

    agent = filled_agent(delay=2)
    names = agent._stat_names
    assert names[False] == ("loss/critic", "critic/q", "critic/std", "critic/target_q", "critic/target_z",
                            "grad_norm/critic")
    assert names[True] == names[False][:5] + ("loss/policy", "policy/entropy", "grad_norm/critic",
                                              "grad_norm/policy", "grad_norm/temperature")
    sums = {False: torch.full((6,), 1.0), True: torch.full((10,), 4.0)}
    agent.updates = 3
    stats = agent._iteration_stats(sums, 0, {})
    assert stats["loss/critic"] == stats["grad_norm/critic"] == pytest.approx(5.0 / 3)
    assert stats["loss/policy"] == stats["grad_norm/temperature"] == pytest.approx(2.0)
    agent.updates = 2
    stats = agent._iteration_stats({False: torch.full((6,), 1.0), True: torch.zeros(10)}, 1, {})  # update 1 only
    assert stats["loss/critic"] == 1.0 and "loss/policy" not in stats and "grad_norm/policy" not in stats
    sums[True][3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="NaN/inf during the updates up to 2"):
        agent._iteration_stats(sums, 0, {})


def test_log_prob_includes_the_action_range_jacobian():
    agent = filled_agent()  # Pendulum: actions in [-2, 2]
    assert agent.log_half_range == pytest.approx(math.log(2.0))
    obs = torch.zeros(4, 3)
    torch.manual_seed(0)
    a, logp = agent.sample_with_log_prob(agent.policy, obs)
    torch.manual_seed(0)
    a2, logp_unit = agent.policy(obs).rsample_with_log_prob()
    torch.testing.assert_close(logp, logp_unit - math.log(2.0))
    env_a = agent.to_env_action(a)
    assert env_a.abs().max() <= 2.0 and torch.equal(a, a2)


@pytest.mark.parametrize("overrides", [{"variant": "v1"}, {"critic_loss": "huber_weighted"},
                                       {"auto_alpha": False, "alpha": 0.05}, {"warmup_actions": "policy"},
                                       {"replay_ratio": 0.25}])
def test_variants_train(overrides):
    agent = make_agent(**overrides, steps_per_iteration=200)
    stats = agent.train_iteration()
    assert agent.env_steps == 200
    expected_updates = (200 - 64) * overrides.get("replay_ratio", 1.0)
    assert abs(agent.updates - expected_updates) <= 2
    assert np.isfinite(stats["loss/critic"])
    if overrides.get("auto_alpha") is False:
        assert stats["charts/alpha"] == pytest.approx(0.05)
    assert agent.num_critics == (1 if overrides.get("variant") == "v1" else 2)


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_dsac_learns_pendulum(tmp_path):
    run, cfg = resolve_config("dsac", "Pendulum-v1", {**QUIET, "runs_dir": str(tmp_path), "total_steps": 10_000,
                                                      "eval_every": 0, "eval_episodes": 10, "seed": 0})
    result = train(run, cfg)
    assert result.final_eval["return_mean"] >= -250, result.final_eval  # random policy: about -1200


def test_save_resume_with_replay_then_evaluate(tmp_path):
    overrides = {**QUIET, "runs_dir": str(tmp_path), "run_name": "r", "total_steps": 1600, "stop_after_steps": 800,
                 "eval_every": 0, "eval_episodes": 2, "num_envs": 2, "learning_starts": 200,
                 "steps_per_iteration": 200, "hidden": "32,32"}
    run, cfg = resolve_config("dsac", "Pendulum-v1", overrides)
    first = train(run, cfg)
    assert first.status == "interrupted" and first.env_steps == 800
    saved = ckpt.load(first.checkpoint)
    replay_state = saved["resume_state"]["replay"]
    assert int(replay_state["valid"].sum()) == 800  # every env step stored one transition
    assert saved["agent_state"]["updates"] == 600

    second = resume(first.run_dir, {"stop_after_steps": 0})
    assert second.status == "finished" and second.env_steps == 1600
    final = ckpt.load(second.checkpoint)
    assert final["agent_state"]["updates"] == 1400  # no second warm-up: the buffer came back
    valid = final["resume_state"]["replay"]["valid"]
    assert int(valid.sum()) == 1600  # the first session's transitions plus the second's
    assert "resume_state" not in ckpt.load(tmp_path / "r" / "checkpoints" / "best.pt")

    # evaluate the saved policy in a fresh agent built from the checkpoint
    env = envs.make("Pendulum-v1", num_envs=2, seed=5)
    cfg2 = override(DSACConfig(), {"hidden": (32, 32)})
    agent = DSACAgent(cfg2, BuildContext(env=env, device=torch.device("cpu"), total_steps=1, seed=0,
                                         threads_collect=1, threads_update=1, training=False))
    agent.load_state_dict(final["agent_state"])
    result = evaluate(lambda o: agent.act(o, deterministic=True), env, episodes=2, device=torch.device("cpu"))
    assert result["episodes"] == 2 and np.isfinite(result["return_mean"])


def test_resume_without_saved_replay_warms_up_again(tmp_path):
    overrides = {**QUIET, "runs_dir": str(tmp_path), "run_name": "r", "total_steps": 1000, "stop_after_steps": 400,
                 "eval_every": 0, "eval_episodes": 1, "num_envs": 1, "learning_starts": 200,
                 "steps_per_iteration": 200, "hidden": "16", "checkpoint_replay": "false"}
    run, cfg = resolve_config("dsac", "Pendulum-v1", overrides)
    first = train(run, cfg)
    assert ckpt.load(first.checkpoint)["resume_state"] is None
    second = resume(first.run_dir, {"stop_after_steps": 0})
    state = ckpt.load(second.checkpoint)["agent_state"]
    assert state["learning_starts_at"] == 600
    assert state["updates"] == 200 + 400  # 200 before the interruption, none during the second warm-up


def tensor_bytes(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    values = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else []
    return sum(tensor_bytes(v) for v in values)


def test_checkpoint_of_a_large_buffer_is_sized_by_its_content(tmp_path):
    """Issue 22, item 9: with the default 1e6 buffer a checkpoint held every slot (69 MB after 3k Hopper steps)."""
    overrides = {**QUIET, "runs_dir": str(tmp_path), "run_name": "r", "total_steps": 4000, "stop_after_steps": 3000,
                 "eval_every": 0, "eval_episodes": 1, "eval_envs": 1, "num_envs": 2, "learning_starts": 2900,
                 "steps_per_iteration": 1000, "hidden": "16", "buffer_size": 1_000_000}
    first = train(*resolve_config("dsac", "Pendulum-v1", overrides))
    payload = ckpt.load(first.checkpoint)
    replay = payload["resume_state"]["replay"]
    # Pendulum: obs 3 and action 1 floats, a reward, 4 flags; per env 1500 steps + 7 episode ends + the newest obs
    content = 2 * (1500 + 8) * (3 * 4 + 1 * 4 + 4 + 4)
    assert tensor_bytes(replay) <= content + 64
    assert first.checkpoint.stat().st_size < content + 3 * tensor_bytes(payload["agent_state"]) + 100_000  # ~150 kB
    resumed = resume(first.run_dir, {"stop_after_steps": 0})  # and it resumes from it
    assert resumed.status == "finished" and int(ckpt.load(resumed.checkpoint)["resume_state"]["replay"]["valid"]
                                                .sum()) == 4000


def test_resume_restores_the_buffer_exactly(tmp_path):
    a = filled_agent(buffer_size=1_000_000)
    path = ckpt.save_atomic(ckpt.make_payload("dsac", {}, a.state_dict(), {}) | {"resume_state": a.resume_state()},
                            tmp_path / "c.pt")
    b = make_agent(buffer_size=1_000_000)
    b.load_state_dict(ckpt.load(path)["agent_state"])
    b.load_resume_state(ckpt.load(path)["resume_state"])
    a.replay.break_episodes()  # what the resumed run does to the buffer it loads
    for name in ("obs", "actions", "rewards", "terminated", "truncated", "valid", "episode_start", "ptr", "fresh"):
        assert torch.equal(getattr(a.replay, name), getattr(b.replay, name)), name
    assert a.replay.high_water == b.replay.high_water
    torch.manual_seed(7)
    batch_a = a.replay.sample(256)
    torch.manual_seed(7)
    batch_b = b.replay.sample(256)
    for x, y in zip(batch_a, batch_b):
        assert torch.equal(x, y)


def test_replay_break_keeps_the_last_transition_and_stops_windows():
    agent = filled_agent()
    replay = agent.replay
    ptr_before = replay.ptr.clone()
    replay.break_episodes()
    timing = {"env": 0.0, "inference": 0.0, "update": 0.0}
    agent._obs_np, _ = agent.env.reset(seed=123)
    agent._env_step(timing)
    for env_index in range(2):
        last = int(ptr_before[env_index]) - 1  # the last stored transition before the break
        assert bool(replay.valid[last, env_index]) and not bool(replay.valid[last + 1, env_index])
        assert bool(replay.episode_start[last + 2, env_index])


# --------------------------------------------------------------------- defaults, warm-up and the budget
def test_custom_env_defaults_serve_small_budgets_and_mujoco_keeps_the_official_values():
    """Issue 20, item 5: an env outside the preset's families gets a warm-up of 5% of the budget (at most 10k) and
    alpha = 1 at the start (SB3's); the MuJoCo section keeps the official 10k steps and log alpha = 1."""
    for env_id in ("my_package.envs:PointMass", "tests.toy_envs:ReachTargetEnv"):
        _, cfg = resolve_config("dsac", env_id)
        assert cfg.learning_starts is None and cfg.log_alpha_init == 0.0  # before: 10_000 and 1.0
    from agents.dsac import warmup_steps

    assert [warmup_steps(None, t) for t in (2_000, 20_000, 100_000, 1_000_000)] == [100, 1_000, 5_000, 10_000]
    assert warmup_steps(300, 1_000_000) == 300
    run, cfg = resolve_config("dsac", "Pendulum-v1")  # the classic preset's budget of 20k: 1k, its former value
    assert warmup_steps(cfg.learning_starts, run.total_steps) == 1_000
    for env_id in ("Hopper-v5", "HalfCheetah-v5", "Humanoid-v5"):
        _, cfg = resolve_config("dsac", env_id)
        assert cfg.learning_starts == 10_000 and cfg.log_alpha_init == 1.0
    agent = make_agent(learning_starts=None)  # total_steps 10_000: 500 warm-up steps, alpha starts at 1
    assert agent.learning_starts_at == 500 and agent.log_alpha.item() == 0.0


def test_a_budget_that_never_reaches_an_update_is_refused_with_a_fix():
    """Before: --total_steps 5000 with the 10k warm-up acted at random throughout and exited 0."""
    run, cfg = resolve_config("dsac", "Hopper-v5", {**QUIET, "total_steps": 5_000})
    env = envs.make("Pendulum-v1", num_envs=1, seed=0)  # the check needs no MuJoCo: Hopper's config, any env
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=run.total_steps, seed=0, threads_collect=1,
                       threads_update=1)
    with pytest.raises(ConfigError) as error:
        DSACAgent(cfg, ctx)
    assert str(error.value) == (
        "DSAC would never update: total_steps (5000) is not above learning_starts (10000), the env steps of random "
        "warm-up before the first update. Fix: raise --total_steps above 10000, or lower the warm-up "
        "(--learning_starts none takes 5% of the budget, here 250).")
    DSACAgent(override(cfg, {"learning_starts": None}), ctx)  # the fix it names works
    DSACAgent(cfg, dataclasses.replace(ctx, training=False))  # evaluating a saved policy: no budget to check


def test_resume_without_replay_warns_when_the_new_warm_up_outlasts_the_budget(tmp_path):
    overrides = {**QUIET, "runs_dir": str(tmp_path), "run_name": "r", "total_steps": 600, "stop_after_steps": 400,
                 "eval_every": 0, "eval_episodes": 1, "num_envs": 1, "learning_starts": 200,
                 "steps_per_iteration": 200, "hidden": "16", "checkpoint_replay": "false"}
    run, cfg = resolve_config("dsac", "Pendulum-v1", overrides)
    first = train(run, cfg)
    with pytest.warns(UserWarning, match="DSAC: this resumed run") as caught:
        resume(first.run_dir, {"stop_after_steps": 0})
    assert [str(w.message) for w in caught if "DSAC" in str(w.message)] == [(
        "DSAC: this resumed run has no replay buffer (checkpoint_replay was false), so it warms up again for 200 "
        "random steps, up to step 600; the budget ends at 600, so this session makes no update. Fix: resume with "
        "--total_steps above 600.")]


# ------------------------------------------------------------------------------------------ bad input
def test_discrete_actions_are_rejected_with_a_fix():
    with pytest.raises(ConfigError, match="continuous.*--agent ppo"):
        make_agent("CartPole-v1")


def test_image_observations_are_rejected_with_a_fix():
    from toy_envs import ImageObsContinuousEnv

    env = envs.make(ImageObsContinuousEnv, num_envs=1, seed=0)
    with pytest.raises(ConfigError, match="FlattenObservation"):
        DSACAgent(DSACConfig(), BuildContext(env=env, device=torch.device("cpu"), total_steps=1, seed=0,
                                             threads_collect=1, threads_update=1))


def test_bad_options_name_the_option():
    with pytest.raises(ConfigError, match="replay_ratio"):
        make_agent(replay_ratio=0.0)
    with pytest.raises(ConfigError, match="log_std_min"):
        make_agent(log_std_min=1.0)


@pytest.mark.parametrize("agent", ["dsac", "agac"])
def test_infinite_action_bounds_are_rejected_with_a_fix(agent):
    from agents.agac import AGACAgent, AGACConfig
    from toy_envs import UnboundedActionEnv

    env = envs.make(UnboundedActionEnv, num_envs=1, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=1000, seed=0, threads_collect=1,
                       threads_update=1)
    with pytest.raises(ConfigError, match="has infinite bounds.*RescaleAction"):
        DSACAgent(DSACConfig(), ctx) if agent == "dsac" else AGACAgent(AGACConfig(), ctx)
