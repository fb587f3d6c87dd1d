"""The compiled minibatch step (forward, backward, gradient clipping and the optimizer step as one torch.compile
graph, rlkit2/update_step.py) is the eager step's math: after several steps from the same weights and minibatches
the parameters, the optimizer state and the statistics agree to float rounding -- for each optimizer the agents
use, for AGAC's two parameter groups, and across a checkpoint load in between. If compiling fails, training
continues on the eager step with a warning."""

import copy
import shutil
import warnings

import numpy as np
import pytest
import torch

import envs
from agents.agac import AGACAgent, AGACConfig
from agents.ppo import STATS, OnPolicyAgent, OnPolicyConfig
from rlkit2.agent import BuildContext
from rlkit2.config import override

needs_compiler = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                                    reason="torch.compile's CPU backend needs a C++ compiler")


def _ctx(env):
    return BuildContext(env=env, device=torch.device("cpu"), total_steps=100_000, seed=0, threads_collect=1,
                        threads_update=1)


def _ppo(env, **overrides):
    torch.manual_seed(0)  # the same initial weights for the eager and the compiled agent
    return OnPolicyAgent(override(OnPolicyConfig(), overrides), _ctx(env))


def _minibatches(env, count, size=32):
    gen = torch.Generator().manual_seed(0)
    obs_shape, act_shape = env.single_observation_space.shape, env.single_action_space.shape
    return [(torch.randn(size, *obs_shape, generator=gen), torch.randn(size, *act_shape, generator=gen),
             torch.randn(size, generator=gen) - 1.0, torch.randn(size, generator=gen),
             torch.randn(size, generator=gen), torch.randn(size, generator=gen)) for _ in range(count)]


def _assert_same_optimizer_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer, rtol=1e-5, atol=1e-7):
    state_a, state_b = a.state_dict()["state"], b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        assert state_a[index].keys() == state_b[index].keys()
        for key in state_a[index]:
            torch.testing.assert_close(state_b[index][key], state_a[index][key], rtol=rtol, atol=atol)


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("optimizer, shared_network", [("adam", False), ("rmsprop", False), ("rmsprop_tf", False),
                                                       ("adam", True)])
def test_compiled_ppo_step_equals_the_eager_step(optimizer, shared_network):
    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    # value clipping, an entropy bonus and a tight gradient clip: every part of the step is exercised
    options = dict(optimizer=optimizer, value_clip=0.2, entropy_coef=0.01, max_grad_norm=0.3, lr=1e-3,
                   shared_network=shared_network)  # shared: one torso for policy and value (the Atari preset's)
    eager, compiled = _ppo(env, **options), _ppo(env, compile_loss=True, **options)
    batches = _minibatches(env, 6)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="compile_loss")  # a fallback to eager: test meaningless
        for i, minibatch in enumerate(batches):
            if i == 3:  # a learning-rate change reaches the compiled step (a tensor input, read per update pass)
                for agent in (eager, compiled):
                    agent.optimizer.param_groups[0]["lr"] = 2e-4
            expected, got = eager._minibatch_step(*minibatch), compiled._minibatch_step(*minibatch)
            assert list(got) == list(STATS)
            for key in STATS:
                assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key
            if optimizer != "rmsprop_tf":  # its first steps are small; a clip makes the others' norms > 0.3
                assert expected["losses/grad_norm"] > 0.3 or i > 0
    assert compiled._update.compiled
    for a, b in zip(eager.params, compiled.params):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(eager.params, _ppo(env, **options).params))  # they moved
    _assert_same_optimizer_state(eager.optimizer, compiled.optimizer)


@pytest.mark.slow
@needs_compiler
def test_compiled_step_after_a_checkpoint_load_continues_from_the_loaded_state():
    """load_state_dict replaces the parameters' values and the optimizer's state tensors: the compiled step must
    read the new ones, not those it was compiled with."""
    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    eager, compiled = _ppo(env), _ppo(env, compile_loss=True)
    batches = _minibatches(env, 5)
    compiled._minibatch_step(*batches[0])  # compiles, and moves the compiled agent away from the eager one
    for minibatch in batches[1:3]:
        eager._minibatch_step(*minibatch)
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))  # as from a checkpoint file: no shared tensors
    for minibatch in batches[3:]:
        eager._minibatch_step(*minibatch)
        compiled._minibatch_step(*minibatch)
    for a, b in zip(eager.params, compiled.params):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    _assert_same_optimizer_state(eager.optimizer, compiled.optimizer)


@pytest.mark.slow
@needs_compiler
def test_compiled_agac_step_equals_the_eager_step():
    """AGAC's step: one loss, two parameter groups (actor+critic, adversary), each clipped and stepped by its own
    Adam."""
    env = envs.make("MiniGrid-Empty-5x5-v0", num_envs=4, seed=0)
    agents = []
    for compile_loss in (False, True):
        torch.manual_seed(0)
        agents.append(AGACAgent(override(AGACConfig(), dict(compile_loss=compile_loss, adversary_coef=0.5,
                                                            max_grad_norm=0.3)), _ctx(env)))
    eager, compiled = agents
    rollout = eager.collector.collect(eager)
    gen = torch.Generator().manual_seed(1)
    for t in range(4):
        mb = {"obs": rollout.obs[t].clone(), "actions": rollout.actions[t].clone(),
              "logprobs": rollout.logprobs[t].clone() - 0.1, "values": rollout.values[t].clone(),
              "advantages": torch.randn(4, generator=gen), "targets": torch.randn(4, generator=gen),
              "pi_old": rollout.extras["pi_params"][t].clone()}
        torch.testing.assert_close(compiled._minibatch_step(mb), eager._minibatch_step(mb), rtol=1e-4, atol=1e-6)
    assert compiled._update.compiled
    for a, b in zip(eager.nets.parameters(), compiled.nets.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    _assert_same_optimizer_state(eager.optimizer, compiled.optimizer)
    _assert_same_optimizer_state(eager.adversary_optimizer, compiled.adversary_optimizer)


def test_failed_compile_warns_and_trains_uncompiled(monkeypatch):
    """torch.compile fails at the first call (e.g. no C++ compiler): a warning, then the eager step, for the
    same minibatch and the later ones."""
    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    agent = _ppo(env, compile_loss=True, num_steps=16, minibatch_size=16, epochs=2)
    before = [p.clone() for p in agent.params]
    with pytest.warns(UserWarning, match="compile_loss: torch.compile failed .*no C\\+\\+ compiler"):
        stats = agent.train_iteration()
    assert np.isfinite(stats["losses/policy_loss"]) and not agent._update.compiled
    assert agent.updates == 4 and any(not torch.equal(a, b) for a, b in zip(before, agent.params))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: later updates go straight to the eager step
        agent.train_iteration()


def test_update_stats_are_read_once_and_a_nonfinite_loss_stops_the_update():
    """The per-minibatch statistics stay on the device; the one read per update finds a NaN."""
    from rlkit2.agent import NonFiniteLossError

    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    agent = _ppo(env, num_steps=16, minibatch_size=16, epochs=2)
    rollout = agent.collector.collect(agent)
    with torch.inference_mode():  # rollout tensors are inference tensors
        rollout.rewards[3, 1] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss or gradient in the updates up to 4 \(mean policy"):
        agent.update(rollout)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "rmsprop_tf"])
def test_functional_step_run_eagerly_equals_the_eager_step(monkeypatch, optimizer):
    """The compiled step's formulation (torch.func gradients, clip_grad_norm_'s math, torch's functional
    optimizers on the optimizer's state), run without the compiler: fast, and so in every quick test run."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    options = dict(optimizer=optimizer, value_clip=0.2, entropy_coef=0.01, max_grad_norm=0.3, lr=1e-3)
    eager, functional = _ppo(env, **options), _ppo(env, compile_loss=True, **options)
    for minibatch in _minibatches(env, 4):
        expected, got = eager._minibatch_step(*minibatch), functional._minibatch_step(*minibatch)
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert functional._update.compiled  # the identity 'compile' was taken
    for a, b in zip(eager.params, functional.params):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    _assert_same_optimizer_state(eager.optimizer, functional.optimizer)


@pytest.mark.slow
@needs_compiler
def test_agents_with_different_networks_in_one_process_each_run_their_own_compiled_step():
    """Each MinibatchUpdate compiles its own copy of the step and keeps only tensor guards: a second agent (as in
    a sweep inside one process) with another network and other constants must not run the first one's graph."""
    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    configs = [dict(policy_hidden=(16,), value_hidden=(16,), clip_eps=0.2),
               dict(policy_hidden=(8, 8), value_hidden=(8,), clip_eps=0.1, value_clip=0.3)]
    pairs = [(_ppo(env, **options), _ppo(env, compile_loss=True, **options)) for options in configs]
    for minibatch in _minibatches(env, 3):
        for eager, compiled in pairs:
            assert compiled._minibatch_step(*minibatch) == pytest.approx(eager._minibatch_step(*minibatch),
                                                                        rel=1e-4, abs=1e-6)
    for eager, compiled in pairs:
        assert compiled._update.compiled
        for a, b in zip(eager.params, compiled.params):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@needs_compiler
def test_a_compiled_update_pass_equals_the_eager_one():
    """PPO's whole update (epochs of shuffled minibatches, advantages recomputed per epoch, per-epoch statistics
    summed into rows of one device tensor and read once) compiled and eager, on the same rollout and shuffles."""
    env = envs.make("Pendulum-v1", num_envs=2, seed=0)
    options = dict(num_steps=32, minibatch_size=16, epochs=3, value_clip=0.2, normalize_value=True)
    eager, compiled = _ppo(env, **options), _ppo(env, compile_loss=True, **options)
    for _ in range(2):  # the second pass runs on the compiled graph from the start
        rollout = eager.collector.collect(eager)
        stats = []
        for agent in (eager, compiled):
            torch.manual_seed(1)  # the same minibatch shuffles
            stats.append(agent.update(rollout))
        assert stats[1] == pytest.approx(stats[0], rel=1e-4, abs=1e-6)
        assert compiled._update.compiled and compiled.updates == eager.updates
    for a, b in zip(eager.params, compiled.params):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    _assert_same_optimizer_state(eager.optimizer, compiled.optimizer)
