"""``envs.make(..., pipeline=True)``: two halves that step in turn give, env by env, exactly what one VecEnv gives
(the autoreset semantic, final observations, episode statistics, seeding), and errors name the run's env index."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for 'counter_envs' (also in spawned workers)

import envs  # noqa: E402
from counter_envs import CounterEnv  # noqa: E402
from envs.pipeline import PipelinedVecEnv, concat_info  # noqa: E402
from test_autoreset import SEED, rollout  # noqa: E402

HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None


@pytest.mark.parametrize("num_envs", [2, 5])
def test_halves_step_like_one_vec_env(num_envs):
    """``rollout`` checks every step against the CounterEnv model (autoreset, final_obs, episode statistics);
    the pipelined env must pass it and match the plain env's trajectory exactly, env by env."""
    plain = envs.make(CounterEnv, num_envs=num_envs, seed=SEED, backend="async", max_episode_steps=4)
    halves = envs.make(CounterEnv, num_envs=num_envs, seed=SEED, backend="async", max_episode_steps=4,
                       pipeline=True)
    try:
        assert isinstance(halves, PipelinedVecEnv) and halves.num_envs == num_envs
        assert [h.num_envs for h in halves.halves] == [num_envs // 2, num_envs - num_envs // 2]
        assert halves.settings == {**plain.settings, "pipeline": True}
        a, b = rollout(plain, steps=30, limit=4), rollout(halves, steps=30, limit=4)
        assert b["seen"]["truncated"] > 0 and b["seen"]["terminated"] > 0
        for key in ("obs", "reward", "terminated", "truncated", "final_obs", "actions"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert halves.env_steps == plain.env_steps == 30 * num_envs
    finally:
        plain.close()
        halves.close()


def test_send_recv_steps_one_half_and_recv_needs_a_send():
    venv = envs.make(CounterEnv, num_envs=4, seed=SEED, backend="async", pipeline=True)
    first = venv.reset(seed=SEED)[0]
    venv.send(1, np.array([1, 1]))
    obs, reward, *_ = venv.recv(1)
    np.testing.assert_array_equal(obs[:, 1], [1, 1])  # half 1 (envs 2, 3) took a step ...
    np.testing.assert_array_equal(reward, [11.0, 11.0])  # t + 10 * action
    obs_all = venv.step(np.zeros(4, int))[0]
    np.testing.assert_array_equal(obs_all[:2, 1], [1, 1])  # ... half 0 had not
    np.testing.assert_array_equal(obs_all[:2, 2], first[:2, 2])
    with pytest.raises(RuntimeError, match=r"recv\(0\) without a send\(0\)"):
        venv.recv(0)
    venv.send(0, np.array([0, 0]))
    venv.close()  # waits for the step in flight


def test_pipeline_needs_two_envs_and_a_natively_asynchronous_backend():
    with pytest.raises(ValueError, match="pipeline needs at least 2 envs"):
        envs.make(CounterEnv, num_envs=1, backend="async", pipeline=True)
    with pytest.raises(ValueError, match=r"pipeline needs a backend that steps the envs in its own threads or "
                                         r"processes \(envpool, ale, async\), not 'sync'"):
        envs.make(CounterEnv, num_envs=2, backend="sync", pipeline=True)


@pytest.mark.skipif(not HAS_ENVPOOL, reason="envpool is not installed")
def test_envpool_halves_match_one_pool_with_truncation():
    """Two envpool pools (seeds seed and seed + N/2, stepped with send/recv) equal one pool of N, env by env."""
    plain = envs.make("HalfCheetah-v5", 4, seed=1, backend="envpool", max_episode_steps=7)
    halves = envs.make("HalfCheetah-v5", 4, seed=1, backend="envpool", max_episode_steps=7, pipeline=True)
    assert all(h.steps_natively_async for h in halves.halves)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(20):
        actions = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
        expected, got = plain.step(actions), halves.step(actions)
        for x, y in zip(expected[:4], got[:4]):
            np.testing.assert_array_equal(x, y)
        for key in ("final_obs", "_final_obs", "episode_return", "episode_length", "_episode"):
            np.testing.assert_array_equal(expected[4][key], got[4][key], err_msg=key)
        ended += int(got[4]["_final_obs"].sum())
    assert ended == 4 * 2  # every env truncated at steps 7 and 14
    plain.close()
    halves.close()


def test_an_error_in_the_second_half_names_the_runs_env_index():
    """faulty_envs: env index 1 of a vector env seeded 0 fails after BAD_AFTER steps; with 2 envs it is the second
    half's only env, so the half must report index 1, not 0."""
    from faulty_envs import BAD_AFTER, NaNRewardEnv, RaisingEnv

    for env_cls, pattern in ((RaisingEnv, r"raised in step\(\) after \d+ env steps \(env index 1\): ZeroDivision"),
                             (NaNRewardEnv, r"NaN or inf rewards in env\(s\) \[1\]")):
        venv = envs.make(env_cls, num_envs=2, seed=0, backend="async", pipeline=True)
        with pytest.raises(envs.EnvCheckError, match=pattern):
            for _ in range(BAD_AFTER + 2):
                venv.step(np.zeros(2, int))
        venv.close()


def test_concat_info_fills_a_key_only_one_half_reports():
    a = {"x": np.array([1.0, 2.0]), "_x": np.array([True, True]), "final_info": {"k": np.array([3, 4])}}
    b = {"final_info": {}, "y": np.array([[5, 6]])}
    out = concat_info(a, b, 2, 1)
    np.testing.assert_array_equal(out["x"], [1.0, 2.0, 0.0])
    np.testing.assert_array_equal(out["_x"], [True, True, False])
    np.testing.assert_array_equal(out["final_info"]["k"], [3, 4, 0])
    np.testing.assert_array_equal(out["y"], [[0, 0], [0, 0], [5, 6]])
