"""PPO / A2C: learning on small tasks with fixed seeds, the timeout (infinite-horizon) test, exact resume,
NaN handling, and every switchable design choice running end to end."""

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.ppo import OnPolicyAgent, OnPolicyConfig
from rlkit2 import checkpoint as ckpt
from rlkit2.agent import BuildContext, NonFiniteLossError
from rlkit2.collector import OnPolicyCollector
from rlkit2.config import ConfigError, override
from rlkit2.run import resolve_config, resume, train

QUIET = {"progress": "false", "tensorboard": "false"}


def run_and_eval(agent, env, overrides, tmp_path):
    run, cfg = resolve_config(agent, env, {**QUIET, "runs_dir": str(tmp_path), **overrides})
    return train(run, cfg)


@pytest.mark.slow
def test_ppo_learns_cartpole(tmp_path):
    result = run_and_eval("ppo", "CartPole-v1", {"total_steps": 100_000, "eval_every": 0, "eval_episodes": 10}, tmp_path)
    assert result.final_eval["return_mean"] >= 475, result.final_eval


@pytest.mark.slow
def test_a2c_learns_cartpole(tmp_path):
    result = run_and_eval("a2c", "CartPole-v1", {"total_steps": 200_000, "eval_every": 0, "eval_episodes": 10}, tmp_path)
    assert result.final_eval["return_mean"] >= 475, result.final_eval


@pytest.mark.slow
def test_ppo_learns_continuous_control(tmp_path):
    result = run_and_eval("ppo", "Pendulum-v1", {"total_steps": 80_000, "eval_every": 0, "eval_episodes": 10}, tmp_path)
    assert result.final_eval["return_mean"] >= -300, result.final_eval


def make_agent(env, **overrides):
    cfg = override(OnPolicyConfig(), overrides)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=100_000, seed=0, threads_collect=1,
                       threads_update=1)
    return OnPolicyAgent(cfg, ctx)


@pytest.mark.parametrize("timeout_handling", ["bootstrap", "terminate"])
def test_infinite_horizon_value(timeout_handling):
    """A never-ending env with reward 1 under a 20-step time limit: V -> 1/(1-gamma) = 10 only when truncation
    is bootstrapped; treating it as termination gives the time-averaged truncated return (~6.05)."""
    torch.manual_seed(0)
    from toy_envs import ConstantRewardEnv

    env = envs.make(ConstantRewardEnv, num_envs=4, seed=0, max_episode_steps=20)
    agent = make_agent(env, gamma=0.9, num_steps=32, epochs=4, minibatch_size=64, lr=3e-3, lr_decay="none",
                       value_hidden=(16,), normalize_obs=False, timeout_handling=timeout_handling)
    for _ in range(60):
        agent.train_iteration()
    value = agent.value(torch.ones(1, 1)).item()
    if timeout_handling == "bootstrap":
        assert value == pytest.approx(10.0, abs=0.6)
    else:
        assert value < 7.5


def test_rollout_shapes_and_truncation_bootstrap():
    env = envs.make("Pendulum-v1", num_envs=3, seed=0, max_episode_steps=10)
    agent = make_agent(env, num_steps=16, minibatch_size=16)
    rollout = agent.collector.collect(agent)
    assert rollout.obs.shape == (16, 3, 3) and rollout.actions.shape == (16, 3, 1)
    assert rollout.logprobs.shape == rollout.values.shape == rollout.rewards.shape == (16, 3)
    assert rollout.truncated[9].all() and not rollout.terminated.any()  # 10-step limit -> truncation
    assert (rollout.final_values[9] != 0).all() and (rollout.final_values[:9] == 0).all()
    assert rollout.last_obs.shape == (3, 3) and rollout.last_value.shape == (3,)


def test_rollout_log_probs_and_values_match_the_policy_at_each_step(monkeypatch):
    """PPO leaves log-probs and values to one batched pass after the rollout (and the collector evaluates in
    chunks); they must equal what a forward pass on the obs each step acted on gives, with and without value
    normalization."""
    monkeypatch.setattr(OnPolicyCollector, "EVALUATE_CHUNK", 7)  # chunks that do not divide T*N = 48
    for normalize_value in (False, True):
        env = envs.make("Pendulum-v1", num_envs=3, seed=0)
        agent = make_agent(env, num_steps=16, minibatch_size=16, normalize_value=normalize_value)
        if normalize_value:  # non-trivial statistics, so that denormalizing matters
            agent.value_normalizer.update(torch.linspace(-50.0, 10.0, 100))
        expected = []
        act = agent.step

        def recording_step(obs):
            out = act(obs)
            dist, value = agent.model(obs)
            expected.append((dist.log_prob(out.action), agent.value_normalizer.denormalize(value)))
            return out

        monkeypatch.setattr(agent, "step", recording_step)
        rollout = agent.collector.collect(agent)
        assert len(expected) == 16
        for t, (logprob, value) in enumerate(expected):
            torch.testing.assert_close(rollout.logprobs[t], logprob)
            torch.testing.assert_close(rollout.values[t], value)


OPTION_SETS = [
    {"policy_loss": "pg", "epochs": 1, "minibatch_size": 0},
    {"advantage_estimator": "nstep", "n_step": 5},
    {"value_loss": "huber", "value_clip": 0.2},
    {"shared_network": True, "activation": "relu", "initializer": "xavier_uniform"},
    {"std_transform": "exp", "state_dependent_std": True, "action_handling": "tanh"},
    {"normalize_value": True, "normalize_advantages": False, "max_grad_norm": 0.0},
    {"optimizer": "rmsprop", "rmsprop_centered": True, "lr_decay": "none"},
    {"batch_mode": "shuffle_trajectories", "recompute_advantages": False},
    {"batch_mode": "fixed_trajectories", "initializer": "torch_default", "obs_clip": 0.0},
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(o))
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_every_design_choice_trains(options, env_id):
    torch.manual_seed(0)
    env = envs.make(env_id, num_envs=2, seed=0)
    agent = make_agent(env, **{"num_steps": 32, "epochs": 2, "minibatch_size": 16, **options})
    before = [p.detach().clone() for p in agent.model.parameters()]
    stats = agent.train_iteration()
    assert all(np.isfinite(v) for k, v in stats.items() if not k.endswith("explained_variance"))
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.model.parameters()))
    actions = agent.act(torch.as_tensor(env.reset(seed=1)[0]), deterministic=True)
    assert env.action_space.contains(actions.numpy().astype(env.action_space.dtype))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_atari_cnn_iteration(precision, monkeypatch):
    monkeypatch.setenv("RLKIT2_ALLOW_SLOW_BF16", "1")  # the bf16 path on any machine (rlkit2/device.py:check_bf16)
    run, cfg = resolve_config("ppo", "ALE/Breakout-v5", {"num_steps": "16", "minibatch_size": "32", "epochs": "1",
                                                         "cnn_precision": precision})
    env = envs.make("ALE/Breakout-v5", num_envs=2, seed=0, atari=run.atari)
    # a full-scale policy layer, so that the features' precision shows in the log-probs
    agent = make_agent(env, policy_last_layer_scale=1.0, **{k: getattr(cfg, k) for k in (
        "torso", "shared_network", "num_steps", "minibatch_size", "epochs", "cnn_precision")})
    rollout = agent.collector.collect(agent)
    # a shared Nature-CNN gives log-probs and values while acting (no second pass over the rollout's frames) ...
    with torch.inference_mode():
        assert agent.step(rollout.obs[0]).logprob is not None
    # ... and they are what the update's forward pass computes: PPO's ratio starts at 1
    with torch.no_grad():
        dist, value = agent.model(rollout.obs.flatten(0, 1))
    ratio = (dist.log_prob(rollout.actions.flatten(0, 1)) - rollout.logprobs.flatten()).exp()
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-5, rtol=0)
    torch.testing.assert_close(rollout.values.flatten(), agent.value_normalizer.denormalize(value), atol=1e-5,
                               rtol=1e-5)
    stats = agent.train_iteration()
    assert agent.model.policy_torso.__class__.__name__ == "NatureCNN" and agent.model.policy_torso.bf16 == (
        precision == "bf16")
    assert np.isfinite(stats["losses/policy_loss"]) and agent.env_steps == 32


def test_a_shared_torso_is_one_module_and_checkpoints_that_named_it_twice_load():
    env = envs.make("CartPole-v1", num_envs=2, seed=0)
    agent = make_agent(env, shared_network=True, num_steps=16, minibatch_size=16)
    assert agent.model.value_torso is agent.model.policy_torso
    state = agent.model.state_dict()
    assert not any(key.startswith("value_torso.") for key in state)  # registered once (update_step can compile it)
    # checkpoints written before carry the torso under both names
    old = {**state, **{k.replace("policy_torso.", "value_torso."): v.clone() for k, v in state.items()
                       if k.startswith("policy_torso.")}}
    torch.manual_seed(1)
    other = make_agent(env, shared_network=True, num_steps=16, minibatch_size=16)
    other.model.load_state_dict(old)  # strict: an unexpected key would raise
    for a, b in zip(agent.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)
    obs = torch.as_tensor(env.reset(seed=0)[0], dtype=torch.float32)
    torch.testing.assert_close(other.value(obs), agent.value(obs))


def test_cnn_precision_on_an_mlp_torso_is_refused_with_the_fix():
    env = envs.make("CartPole-v1", num_envs=2, seed=0)
    with pytest.raises(ConfigError, match=r"'cnn_precision' \(bf16\) applies to CNN torsos.*CartPole-v1.*Fix"):
        make_agent(env, cnn_precision="bf16")


def test_resume_reproduces_uninterrupted_run_exactly(tmp_path):
    """Train 2N steps vs train N + resume N. FixedHorizonEnv's episodes (8 steps) align with rollouts and its
    reset is deterministic, so env state at the checkpoint is reproducible; then every other piece of state
    (networks, Adam, normalizers, counters, lr schedule, RNGs) must be restored for the runs to match."""
    common = {**QUIET, "runs_dir": str(tmp_path), "num_envs": 2, "num_steps": 8, "minibatch_size": 8,
              "epochs": 2, "eval_every": 0, "eval_episodes": 2, "eval_envs": 1, "checkpoint_every": 0}
    run, cfg = resolve_config("ppo", "toy_envs:FixedHorizonEnv", {**common, "total_steps": 160, "run_name": "full"})
    full = train(run, cfg)
    run, cfg = resolve_config("ppo", "toy_envs:FixedHorizonEnv", {**common, "total_steps": 160, "run_name": "half",
                                                                          "stop_after_steps": 80})
    half = train(run, cfg)
    assert half.status == "interrupted" and half.env_steps == 80
    resumed = resume(half.run_dir, {"stop_after_steps": 0})
    assert resumed.env_steps == full.env_steps == 160
    a = ckpt.load(full.checkpoint)["agent_state"]
    b = ckpt.load(resumed.checkpoint)["agent_state"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["obs_normalizer"]:
        assert torch.equal(a["obs_normalizer"][key], b["obs_normalizer"][key]), key
    assert a["updates"] == b["updates"]


def test_resume_after_a_crash_drops_what_was_logged_past_the_checkpoint(tmp_path):
    """A session killed between checkpoints has logged steps that the resumed run trains again: progress.csv
    must not show them twice (the resumed run's rows replace them)."""
    common = {**QUIET, "runs_dir": str(tmp_path), "run_name": "crash", "num_envs": 2, "num_steps": 8,
              "minibatch_size": 8, "epochs": 1, "eval_every": 0, "checkpoint_every": 64, "total_steps": 128}
    run, cfg = resolve_config("ppo", "toy_envs:FixedHorizonEnv", common)
    train(run, cfg)
    checkpoints = tmp_path / "crash" / "checkpoints"
    for name in ("final.pt", "best.pt", "step_000000000128.pt"):  # the crash: only the step-64 checkpoint made it
        (checkpoints / name).unlink(missing_ok=True)
    assert [p.name for p in sorted(checkpoints.glob("step_*.pt"))] == ["step_000000000064.pt"]
    logged = [float(r["step"]) for r in csv.DictReader(open(tmp_path / "crash" / "progress.csv"))]
    assert sorted(set(logged)) == [16.0 * i for i in range(1, 9)]  # one row per iteration, the final eval's at 128
    resumed = resume(tmp_path / "crash", {"stop_after_steps": 0})
    assert resumed.env_steps == 128
    steps = [float(r["step"]) for r in csv.DictReader(open(tmp_path / "crash" / "progress.csv"))]
    assert steps == logged  # not 16 ... 128, 80 ... 128: the resumed session's rows replace the lost ones

    # killed after the final evaluation was logged, before final.pt: the resume evaluates again, at the same
    # step as the step-128 checkpoint, so only the row count saved with that checkpoint tells the rows apart
    for name in ("final.pt", "best.pt"):
        (checkpoints / name).unlink(missing_ok=True)
    resumed = resume(tmp_path / "crash", {"stop_after_steps": 0})
    assert resumed.status == "finished" and resumed.env_steps == 128
    steps = [float(r["step"]) for r in csv.DictReader(open(tmp_path / "crash" / "progress.csv"))]
    assert steps == logged and steps.count(128.0) == 2  # the iteration's row and one final evaluation's


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run, cfg = resolve_config("ppo", "toy_envs:ExplodingRewardEnv", {
        **QUIET, "runs_dir": str(tmp_path), "run_name": "nan", "num_envs": 2, "num_steps": 64,
        "minibatch_size": 64, "epochs": 1, "total_steps": 10_000, "checkpoint_every": 128, "eval_every": 0,
        "normalize_advantages": "false"})
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss.*the last good checkpoint .* was kept"):
        train(run, cfg)
    good = ckpt.CheckpointDir(tmp_path / "nan" / "checkpoints").latest()
    state = ckpt.load(good)["agent_state"]
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    # Rewards explode after 300 steps per env (2 envs x 64 steps per rollout): the rollout covering total
    # steps 513-640 is the first bad one, so the checkpoint at 512 is the last good one and must be kept.
    assert state["env_steps"] == 512


def test_non_box_observation_space_is_rejected():
    class DictObsEnv(gym.Env):
        observation_space = gym.spaces.Dict({"a": gym.spaces.Discrete(2)})
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return {"a": 0}, {}

        def step(self, action):
            return {"a": 0}, 0.0, False, False, {}

    env = envs.make(DictObsEnv, num_envs=1)
    with pytest.raises(ValueError, match="is not a Box; wrap the env"):
        make_agent(env)


def test_learning_rate_schedule_starts_full_and_never_wastes_the_last_iteration():
    env = envs.make("CartPole-v1", num_envs=2, seed=0)
    agent = make_agent(env, num_steps=16, minibatch_size=32, epochs=1, lr=1e-3)
    agent.ctx = BuildContext(env, torch.device("cpu"), total_steps=64, seed=0, threads_collect=1, threads_update=1)
    lrs = [agent.train_iteration()["charts/learning_rate"] for _ in range(2)]
    assert lrs == pytest.approx([1e-3, 0.5e-3])  # 32 of 64 steps done before the second iteration


def test_unbounded_action_space_is_rejected():
    class Unbounded(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

        def reset(self, *, seed=None, options=None):
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 0.0, False, False, {}

    with pytest.raises(ValueError, match="has infinite bounds.*RescaleAction"):
        make_agent(envs.make(Unbounded, num_envs=1))


def test_value_clip_is_centred_on_the_collection_time_prediction():
    """With value normalization, the old predictions must be normalized with the statistics they were produced
    under: at the first minibatch of the first epoch the clipped and unclipped value losses then coincide."""
    torch.manual_seed(0)
    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    agent = make_agent(env, num_steps=32, minibatch_size=64, epochs=1, normalize_value=True, value_clip=0.01,
                       batch_mode="fixed_trajectories")
    seen = {}
    original = agent._update.loss_fn

    def spy(obs, actions, logprobs, advantages, targets, old_values):
        with torch.no_grad():
            seen.setdefault("gap", (agent.model.value(obs) - old_values).abs().max().item())
        return original(obs, actions, logprobs, advantages, targets, old_values)

    agent._update.loss_fn = spy  # the loss of each minibatch step (rlkit2.update_step, eager)
    agent.train_iteration()  # statistics move a lot on the first iteration (returns of ~-100s)
    assert seen["gap"] < 1e-4


def test_evaluation_of_an_endless_episode_fails_with_a_fix():
    from rlkit2.evaluation import evaluate
    from toy_envs import ConstantRewardEnv

    env = envs.make(ConstantRewardEnv, num_envs=1)
    with pytest.raises(RuntimeError, match=r"ran 500 steps without ending.*--max_episode_steps"):
        evaluate(lambda obs: torch.zeros(len(obs), dtype=torch.long), env, 1, torch.device("cpu"),
                 max_episode_steps=500)


@pytest.mark.parametrize("init_std, sign", [(0.5, 1.0), (3.0, -1.0)])
def test_tanh_entropy_bonus_is_the_squashed_policys_entropy(init_std, sign):
    """With tanh squashing the bonus must raise the squashed policy's entropy. At the policy that collected the
    data, d(bonus)/d(log std) > 0 for a narrow policy, and < 0 for a wide one whose actions saturate at +-1 (the
    squashed entropy is bounded). The old bonus, -log pi of the stored samples, has zero expected gradient there
    (it is H(pi_old) + KL(pi_old || pi))."""
    torch.manual_seed(0)
    env = envs.make("Pendulum-v1", num_envs=4, seed=0)
    agent = make_agent(env, action_handling="tanh", std_transform="exp", init_std=init_std, num_steps=1024)
    rollout = agent.collector.collect(agent)
    obs = rollout.obs.reshape(-1, rollout.obs.shape[-1]).clone()
    actions, logprobs = rollout.actions.reshape(-1, 1).clone(), rollout.logprobs.reshape(-1).clone()
    zeros = torch.zeros_like(logprobs)
    entropy = agent.minibatch_losses(obs, actions, logprobs, zeros, zeros, zeros)[3]
    (grad,) = torch.autograd.grad(entropy, agent.model.std_param)  # exp transform: std_param = log std + const
    assert sign * grad.item() > 0.25, grad


def test_a2c_preset_value_weight_equals_sb3s():
    """SB3/baselines' A2C: loss = pg + vf_coef * MSE(V, R) with vf_coef 0.5. Ours is value_coef * 1/2 (V - R)^2,
    so the preset's value_coef must be 1.0 for the same gradient (0.5 on Atari: the zoo's vf_coef 0.25); and its
    optimizer is TF-style RMSprop."""
    _, cfg = resolve_config("a2c", "CartPole-v1", {})
    env = envs.make("CartPole-v1", num_envs=2, seed=0)
    agent = OnPolicyAgent(cfg, BuildContext(env=env, device=torch.device("cpu"), total_steps=1000, seed=0,
                                            threads_collect=1, threads_update=1))
    obs, targets = torch.randn(6, 4), torch.randn(6)
    zeros = torch.zeros(6)
    actions = torch.zeros(6, dtype=torch.long)
    loss, policy_loss, value_loss, entropy, _, _ = agent.minibatch_losses(obs, actions, zeros, zeros, targets, zeros)
    sb3_loss = policy_loss + 0.5 * torch.nn.functional.mse_loss(agent.model.value(obs), targets)
    assert loss.item() == pytest.approx(sb3_loss.item(), rel=1e-6)
    from rlkit2.optim import RMSpropTF
    assert isinstance(agent.optimizer, RMSpropTF)
    _, atari = resolve_config("a2c", "ALE/Pong-v5", {})
    assert atari.value_coef == 0.5
