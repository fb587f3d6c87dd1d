"""DSAC's update compiled (``compile_update``: targets, losses, backward, the three Adam steps, sigma_bar and the
Polyak targets as two torch.compile graphs, with and without the delayed policy step; rlkit2/update_step.py) is
the eager update's math: from the same weights, batches and random numbers, several updates -- policy steps and
critic-only steps, auto alpha on -- leave the networks, the targets, log alpha, sigma_bar and all three
optimizers' state equal to float rounding, also across a checkpoint load in between. The random numbers are drawn
outside the graph, in the order the eager update draws them."""

import copy
import warnings

import numpy as np
import pytest
import torch

from test_dsac import filled_agent
from test_update_step import _assert_same_optimizer_state, needs_compiler

NETWORKS = ("policy", "critic", "policy_target", "critic_target")


def _agents(**overrides):
    """An eager and a compiled agent with the same weights and the same replay."""
    return filled_agent(**overrides), filled_agent(compile_update=True, **overrides)


def _update_both(eager, compiled, batches, seed=0):
    """The same update on both agents (the same batch and, through the seed, the same noise); the statistics of
    each update must agree."""
    for i, batch in enumerate(batches):
        torch.manual_seed(seed + i)
        expected = eager.update(batch)
        torch.manual_seed(seed + i)
        got = compiled.update(batch)
        assert list(got) == list(expected)
        for key in expected:
            assert got[key].item() == pytest.approx(expected[key].item(), rel=1e-4, abs=1e-5), (i, key)


def _assert_same_agent_state(a, b):
    for name in NETWORKS:
        for x, y in zip(getattr(a, name).parameters(), getattr(b, name).parameters()):
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.log_alpha, a.log_alpha, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.sigma_bar, a.sigma_bar, rtol=1e-5, atol=1e-7)
    for name in ("critic_opt", "policy_opt", "alpha_opt"):  # v1's critic gradient divides by sigma^3 + eps: its
        _assert_same_optimizer_state(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-6)  # rounding grows


def _assert_moved(agent, **overrides):
    """Every network, the targets and log alpha moved away from a fresh agent's (the updates did something)."""
    fresh = filled_agent(**overrides)
    for name in NETWORKS:
        assert any(not torch.equal(x, y) for x, y in zip(getattr(agent, name).parameters(),
                                                          getattr(fresh, name).parameters())), name
    assert agent.log_alpha.item() != fresh.log_alpha.item()


@pytest.mark.parametrize("overrides", [{}, {"variant": "v1"}, {"critic_loss": "huber_weighted"},
                                       {"auto_alpha": False}])
def test_functional_update_run_eagerly_equals_the_eager_update(monkeypatch, overrides):
    """The compiled update's formulation (torch.func gradients, torch's functional Adam on the optimizers' state,
    the Polyak step and sigma_bar in the step) run without the compiler: fast, so in every quick test run."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    eager, functional = _agents(**overrides)
    batches = [eager.replay.sample(32) for _ in range(5)]  # updates 0, 2, 4 step the policy; 1, 3 do not
    _update_both(eager, functional, batches)
    assert all(step.compiled for step in functional._steps.values())  # the identity 'compile' was taken
    _assert_same_agent_state(eager, functional)
    if overrides.get("auto_alpha", True):
        _assert_moved(functional, **overrides)


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("variant", ["dsac_t", "v1"])
def test_compiled_update_equals_the_eager_update(variant):
    eager, compiled = _agents(variant=variant, tau=0.1)  # a large tau: the targets move visibly
    batches = [eager.replay.sample(32) for _ in range(5)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="compile_update")  # a fallback to eager: test meaningless
        _update_both(eager, compiled, batches)
    assert all(step.compiled for step in compiled._steps.values())
    _assert_same_agent_state(eager, compiled)
    _assert_moved(compiled, variant=variant, tau=0.1)


@pytest.mark.slow
@needs_compiler
def test_compiled_update_after_a_checkpoint_load_continues_from_the_loaded_state():
    """load_state_dict replaces the weights' values, sigma_bar and the optimizers' state tensors: the compiled
    update must go on from those, not from the tensors it was compiled with; and the optimizers it steps are the
    agent's own (their state_dict is what a checkpoint saves)."""
    eager, compiled = _agents()
    batches = [eager.replay.sample(32) for _ in range(7)]
    _update_both(eager, compiled, batches[:2])  # both graphs compiled; the same state
    _assert_same_agent_state(eager, compiled)
    for batch in batches[2:4]:  # the eager agent moves on alone...
        eager.update(batch)
    compiled.load_state_dict(copy.deepcopy(eager.state_dict()))  # ...and its checkpoint is loaded
    assert compiled.updates == eager.updates == 4
    _update_both(eager, compiled, batches[4:], seed=20)
    _assert_same_agent_state(eager, compiled)


def test_a_failed_compile_warns_and_trains_uncompiled(monkeypatch):
    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    agent = filled_agent(compile_update=True, steps_per_iteration=20)
    eager = filled_agent(steps_per_iteration=20)
    with pytest.warns(UserWarning, match="compile_update: torch.compile failed .*no C\\+\\+ compiler"):
        torch.manual_seed(0)
        stats = agent.train_iteration()
    torch.manual_seed(0)
    expected = eager.train_iteration()
    assert agent.updates == eager.updates == 20 and not any(step.compiled for step in agent._steps.values())
    assert np.isfinite(stats["loss/policy"]) and stats["loss/critic"] == expected["loss/critic"]
