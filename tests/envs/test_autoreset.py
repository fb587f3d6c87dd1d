"""SAME_STEP autoreset, episode statistics and seeding of ``envs.make`` on a deterministic custom env.

Every step is checked against what ``counter_envs.CounterEnv`` must produce (its observation carries the episode
index, the step counter and the episode's length), so the assertions are exact.
"""

from __future__ import annotations

import os
import sys

import gymnasium as gym
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for 'counter_envs' (also in spawned workers)

import envs  # noqa: E402
from counter_envs import CounterEnv  # noqa: E402

SEED = 3


def rollout(venv, steps: int, actions_seed: int = 0, limit: int | None = None, min_len: int = 3,
            max_len: int = 5, reset_seed: int | None = SEED) -> dict:
    """Step ``venv`` with random actions, asserting every output against the CounterEnv model.

    Returns the trajectory and counts of the kinds of episode ends seen.
    """
    n = venv.num_envs
    rng = np.random.default_rng(actions_seed)
    obs, info = venv.reset(seed=reset_seed)
    assert info == {}
    assert obs.dtype == np.float32 and obs.shape == (n, 3)
    np.testing.assert_array_equal(obs[:, 1], 0)  # t == 0 after reset
    assert ((obs[:, 2] >= min_len) & (obs[:, 2] <= max_len)).all()

    running_return = np.zeros(n)
    seen = {"terminated": 0, "truncated": 0, "terminated_at_limit": 0}
    traj = {"obs": [obs], "reward": [], "terminated": [], "truncated": [], "final_obs": [], "actions": []}
    for _ in range(steps):
        actions = rng.integers(0, 2, n)
        prev = obs
        obs, reward, terminated, truncated, info = venv.step(actions)

        t_new = prev[:, 1] + 1
        length = prev[:, 2]
        exp_term = t_new == length
        exp_trunc = ~exp_term & (t_new == limit) if limit is not None else np.zeros(n, bool)
        ended = exp_term | exp_trunc
        last = np.stack([prev[:, 0], t_new, length], axis=1).astype(np.float32)

        assert reward.dtype == np.float32 and reward.shape == (n,)
        np.testing.assert_array_equal(reward, t_new + 10 * actions)
        assert terminated.dtype == bool and truncated.dtype == bool
        np.testing.assert_array_equal(terminated, exp_term)
        np.testing.assert_array_equal(truncated, exp_trunc)
        assert not (terminated & truncated).any()

        # final_obs: the true last obs where an episode ended, a copy of obs elsewhere.
        assert info["final_obs"].shape == obs.shape
        np.testing.assert_array_equal(info["_final_obs"], ended)
        np.testing.assert_array_equal(info["final_obs"][ended], last[ended])
        np.testing.assert_array_equal(info["final_obs"][~ended], obs[~ended])
        # obs: continuing envs moved one step on; ended envs already show the next episode's first obs.
        np.testing.assert_array_equal(obs[~ended], last[~ended])
        np.testing.assert_array_equal(obs[ended, 0], prev[ended, 0] + 1)
        np.testing.assert_array_equal(obs[ended, 1], 0)
        assert ((obs[ended, 2] >= min_len) & (obs[ended, 2] <= max_len)).all()

        # Episode statistics, exact.
        running_return += reward
        np.testing.assert_array_equal(info["_episode"], ended)
        np.testing.assert_array_equal(info["episode_return"], np.where(ended, running_return, 0.0))
        np.testing.assert_array_equal(info["episode_length"], np.where(ended, t_new, 0))
        running_return[ended] = 0.0
        assert "life_lost" not in info  # the env reports no lives

        seen["terminated"] += int(exp_term.sum())
        seen["truncated"] += int(exp_trunc.sum())
        if limit is not None:
            seen["terminated_at_limit"] += int((exp_term & (t_new == limit)).sum())
        for key, value in (("obs", obs), ("reward", reward), ("terminated", terminated),
                           ("truncated", truncated), ("final_obs", info["final_obs"]), ("actions", actions)):
            traj[key].append(np.array(value, copy=True))
    traj = {k: np.stack(v) for k, v in traj.items()}
    traj["seen"] = seen
    return traj


@pytest.mark.parametrize("backend", ["sync", "async"])
@pytest.mark.parametrize("spec", [CounterEnv, "counter_envs:CounterEnv"], ids=["callable", "path"])
def test_same_step_autoreset_with_time_limit(spec, backend):
    venv = envs.make(spec, num_envs=2, seed=SEED, backend=backend, max_episode_steps=4)
    try:
        assert isinstance(venv, gym.vector.VectorEnv)
        assert venv.num_envs == 2 and venv.backend_name == backend
        assert venv.name == ("CounterEnv" if spec is CounterEnv else "counter_envs:CounterEnv")
        assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
        assert venv.single_observation_space == CounterEnv().observation_space
        assert venv.settings == {"env": venv.name, "num_envs": 2, "seed": SEED, "backend": backend,
                                 "max_episode_steps": 4}
        traj = rollout(venv, steps=40, limit=4)
    finally:
        venv.close()
    seen = traj["seen"]
    # The time limit (4) cuts length-5 episodes: truncation, never termination...
    assert seen["truncated"] > 0
    # ... while an episode that terminates exactly at the limit is terminated, not truncated.
    assert seen["terminated_at_limit"] > 0
    assert seen["terminated"] > seen["terminated_at_limit"]  # length-3 episodes too


def test_no_time_limit_never_truncates():
    venv = envs.make(CounterEnv, num_envs=3, seed=SEED, backend="sync")
    traj = rollout(venv, steps=30)
    assert traj["seen"]["truncated"] == 0 and traj["seen"]["terminated"] > 10
    assert not traj["truncated"].any()


def test_env_kwargs_reach_a_module_factory():
    venv = envs.make("counter_envs:make_counter", num_envs=2, seed=SEED, backend="sync",
                     env_kwargs={"min_len": 2, "max_len": 2})
    traj = rollout(venv, steps=10, min_len=2, max_len=2)
    assert venv.settings["env_kwargs"] == {"min_len": 2, "max_len": 2}
    ends = traj["terminated"]
    np.testing.assert_array_equal(ends, np.tile([[False], [True]], (5, 2)))  # every second step


def test_same_seed_same_trajectory():
    a = rollout(envs.make(CounterEnv, num_envs=2, seed=7, backend="sync", max_episode_steps=4), 25, limit=4,
                reset_seed=7)
    b = rollout(envs.make(CounterEnv, num_envs=2, seed=7, backend="sync", max_episode_steps=4), 25, limit=4,
                reset_seed=7)
    for key in ("obs", "reward", "terminated", "truncated", "final_obs"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_different_seeds_differ_and_env_i_uses_seed_plus_i():
    a = rollout(envs.make(CounterEnv, num_envs=2, seed=7, backend="sync"), 25, reset_seed=7)
    c = rollout(envs.make(CounterEnv, num_envs=2, seed=8, backend="sync"), 25, reset_seed=8)
    # Episode lengths come from np_random: another seed gives another sequence.
    assert not np.array_equal(a["obs"][:, 0, 2], c["obs"][:, 0, 2])
    # The two envs of one VecEnv are seeded differently.
    assert not np.array_equal(a["obs"][:, 0, 2], a["obs"][:, 1, 2])
    # Env i is seeded with seed + i: env 1 of seed 7 starts like env 0 of seed 8 (same first length and,
    # under the same actions, the same episode lengths -- the lengths do not depend on actions).
    np.testing.assert_array_equal(a["obs"][:, 1, 2], c["obs"][:, 0, 2])


def test_make_seeds_without_an_explicit_reset():
    """make() already resets with ``seed``: two envs from the same call agree before any reset by the user."""
    outs = []
    for _ in range(2):
        venv = envs.make(CounterEnv, num_envs=2, seed=11, backend="sync")
        outs.append(np.stack([venv.step(np.array([1, 0]))[0] for _ in range(12)]))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_reset_with_seed_is_reproducible():
    venv = envs.make(CounterEnv, num_envs=2, seed=0, backend="sync")
    a = rollout(venv, 15, reset_seed=5)
    b = rollout(venv, 15, reset_seed=5)
    # Same lengths and outcomes; only the episode index column keeps counting across resets.
    for key in ("obs", "final_obs"):
        np.testing.assert_array_equal(a[key][..., 1:], b[key][..., 1:], err_msg=key)
    np.testing.assert_array_equal(a["reward"], b["reward"])
