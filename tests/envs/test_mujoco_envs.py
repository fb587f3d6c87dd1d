"""SAME_STEP autoreset on MuJoCo envs, through gymnasium ('sync') and envpool."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs

try:
    import envpool  # noqa: F401

    HAVE_ENVPOOL = True
except ImportError:  # pragma: no cover - depends on the install
    HAVE_ENVPOOL = False

needs_envpool = pytest.mark.skipif(not HAVE_ENVPOOL, reason="envpool is not installed")


def test_sync_time_limit_final_obs_matches_reference_envs():
    """Step a VecEnv and, in lockstep, plain gymnasium envs seeded seed + i: every output must match exactly."""
    seed, n, limit = 4, 2, 5
    venv = envs.make("HalfCheetah-v5", num_envs=n, seed=seed, backend="sync", max_episode_steps=limit)
    assert venv.backend_name == "sync"
    refs = [gym.make("HalfCheetah-v5") for _ in range(n)]
    obs, _ = venv.reset(seed=seed)
    ref_obs = np.stack([ref.reset(seed=seed + i)[0] for i, ref in enumerate(refs)])
    np.testing.assert_array_equal(obs, ref_obs)

    rng = np.random.default_rng(0)
    ref_return = np.zeros(n)
    for step in range(1, 2 * limit + 2):
        actions = rng.uniform(-1, 1, (n, 6)).astype(np.float32)
        obs, reward, terminated, truncated, info = venv.step(actions)
        outs = [ref.step(a) for ref, a in zip(refs, actions)]
        ref_last = np.stack([o[0] for o in outs])
        ref_reward = np.array([o[1] for o in outs])
        ref_return += ref_reward

        assert reward.dtype == np.float32
        np.testing.assert_allclose(reward, ref_reward, rtol=1e-6)
        ended = step % limit == 0
        assert not terminated.any()  # HalfCheetah never terminates
        np.testing.assert_array_equal(truncated, [ended] * n)
        np.testing.assert_array_equal(info["_final_obs"], [ended] * n)
        np.testing.assert_array_equal(info["final_obs"], ref_last)  # the true last observation
        if ended:
            ref_reset = np.stack([ref.reset()[0] for ref in refs])  # autoreset: no seed, RNG continues
            np.testing.assert_array_equal(obs, ref_reset)
            assert not np.allclose(obs, info["final_obs"])
            np.testing.assert_array_equal(info["episode_length"], [limit] * n)
            np.testing.assert_allclose(info["episode_return"], ref_return, rtol=1e-5)
            ref_return[:] = 0.0
        else:
            np.testing.assert_array_equal(obs, ref_last)
            np.testing.assert_array_equal(info["episode_length"], [0] * n)
    venv.close()


def test_max_episode_steps_replaces_registered_limit():
    """HalfCheetah-v5 is registered with 1000 steps; max_episode_steps=1003 must replace it, not stack under it."""
    venv = envs.make("HalfCheetah-v5", num_envs=1, seed=0, backend="sync", max_episode_steps=1003)
    action = np.zeros((1, 6), np.float32)
    for step in range(1, 1004):
        _, _, terminated, truncated, info = venv.step(action)
        assert not terminated[0]
        assert truncated[0] == (step == 1003), step
    assert info["episode_length"][0] == 1003


def test_auto_backend_choice():
    if HAVE_ENVPOOL:
        assert envs.make("HalfCheetah-v5", num_envs=1).backend_name == "envpool"
        # envpool honours a time limit itself (test_envpool_honours_max_episode_steps) ...
        assert envs.make("HalfCheetah-v5", num_envs=1, max_episode_steps=5).backend_name == "envpool"
    # ... but gymnasium constructor kwargs mean gymnasium.
    assert envs.make("HalfCheetah-v5", num_envs=1, env_kwargs={"forward_reward_weight": 2.0}).backend_name == "sync"
    assert envs.make("CartPole-v1", num_envs=1).backend_name == "sync"


@needs_envpool
def test_envpool_termination_resets_same_step_and_next_step_is_normal():
    """InvertedPendulum terminates when |angle| > 0.2; resets put every coordinate within +-0.01."""
    n = 2
    venv = envs.make("InvertedPendulum-v5", num_envs=n, seed=0, backend="envpool")
    assert venv.backend_name == "envpool"
    rng = np.random.default_rng(0)
    steps_since_reset = np.zeros(n, int)
    just_reset = np.zeros(n, bool)
    obs, _ = venv.reset()
    ends = 0
    for _ in range(60):
        actions = rng.uniform(-3, 3, (n, 1)).astype(np.float32)
        actions[just_reset] = 3.0  # a full push right after a reset must move the pole
        prev = obs
        obs, reward, terminated, truncated, info = venv.step(actions)
        steps_since_reset += 1
        ended = terminated | truncated
        assert not truncated.any()
        # The step right after an end is a real step from the reset obs (no extra reset step by envpool):
        # it earns the alive reward and moves the system well beyond the reset noise.
        if just_reset.any():
            np.testing.assert_array_equal(reward[just_reset], 1.0)
            assert (np.abs(obs[just_reset & ~ended]).max(axis=1) > 0.02).all()
            assert not (np.abs(prev[just_reset]) > 0.0101).any()
        np.testing.assert_array_equal(info["_final_obs"], ended)
        np.testing.assert_array_equal(info["final_obs"][~ended], obs[~ended])
        for i in np.flatnonzero(ended):
            ends += 1
            assert terminated[i]
            assert abs(info["final_obs"][i, 1]) > 0.2  # really ended on a fallen pole
            assert np.abs(obs[i]).max() <= 0.0101  # ... and obs is already the next episode's first obs
            assert info["episode_length"][i] == steps_since_reset[i]
            assert info["episode_return"][i] == steps_since_reset[i] - 1  # reward 1 per step, 0 when it falls
        np.testing.assert_array_equal(info["episode_length"][~ended], 0)
        steps_since_reset[ended] = 0
        just_reset = ended
    assert ends >= 6
    venv.close()


@needs_envpool
def test_envpool_final_obs_matches_raw_envpool():
    """Against envpool itself (same seed and actions, its own next-step autoreset): up to each env's first end,
    our final_obs is envpool's last obs and our reset row is the obs envpool's autoreset step returns."""
    import envpool

    n = 2
    venv = envs.make("Hopper-v5", num_envs=n, seed=1, backend="envpool")
    raw = envpool.make("Hopper-v5", env_type="gymnasium", num_envs=n, seed=1)
    raw.reset()
    rng = np.random.default_rng(1)
    pending_reset = {}
    done = np.zeros(n, bool)
    for _ in range(200):
        actions = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        obs, reward, terminated, truncated, info = venv.step(actions)
        raw_obs, raw_reward, raw_term, raw_trunc, raw_info = raw.step(actions)
        for i, expected_reset in list(pending_reset.items()):
            assert raw_info["elapsed_step"][i] == 0  # envpool's own autoreset step
            np.testing.assert_array_equal(expected_reset, raw_obs[i])
            del pending_reset[i]
            done[i] = True
        live = ~done & ~np.isin(np.arange(n), list(pending_reset))
        np.testing.assert_array_equal(info["final_obs"][live], raw_obs[live])
        np.testing.assert_array_equal(terminated[live], raw_term[live])
        np.testing.assert_allclose(reward[live], raw_reward[live], rtol=1e-6)
        for i in np.flatnonzero(live & (terminated | truncated)):
            assert info["episode_length"][i] == raw_info["elapsed_step"][i]
            pending_reset[i] = obs[i].copy()
        if done.all():
            break
    assert done.all(), "each Hopper should fall within 200 random steps"


@needs_envpool
def test_envpool_same_seed_same_trajectory():
    def run(seed):
        venv = envs.make("Hopper-v5", num_envs=2, seed=seed, backend="envpool")
        rng = np.random.default_rng(0)
        out = [venv.step(rng.uniform(-1, 1, (2, 3)))[0] for _ in range(30)]
        return np.stack(out)

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@needs_envpool
def test_envpool_honours_max_episode_steps():
    venv = envs.make("HalfCheetah-v5", num_envs=1, seed=0, backend="envpool", max_episode_steps=5)
    assert venv.settings["max_episode_steps"] == 5
    truncated = [venv.step(np.zeros((1, 6)))[3][0] for _ in range(5)]
    assert truncated == [False] * 4 + [True]


@pytest.mark.parametrize("backend", ["sync", pytest.param("envpool", marks=needs_envpool)])
def test_reset_with_seed_reseeds(backend):
    venv = envs.make("Hopper-v5", num_envs=2, seed=0, backend=backend)
    first, _ = venv.reset(seed=3)
    venv.step(np.ones((2, 3)))
    second, _ = venv.reset(seed=3)
    np.testing.assert_array_equal(first, second)


def test_train_env_kwargs_change_the_training_envs_only():
    """--train_env_kwargs.KEY VALUE reaches the training envs only: Hopper trained without its fall termination
    (fixed-length episodes) and a larger healthy reward, evaluated on the standard Hopper. Same actions: the
    training env keeps going where the evaluation env terminates."""
    from rlkit2.run import make_env, resolve_config

    run, _ = resolve_config("ppo", "Hopper-v5", {"backend": "sync", "train_env_kwargs.terminate_when_unhealthy": "false",
                                                 "train_env_kwargs.healthy_reward": "5"})
    assert run.train_env_kwargs == {"terminate_when_unhealthy": False, "healthy_reward": 5} and run.env_kwargs == {}
    train_env = make_env(run, 1, seed=0, training=True)
    eval_env = make_env(run, 1, seed=0)
    assert train_env.settings["env_kwargs"] == run.train_env_kwargs
    assert "env_kwargs" not in eval_env.settings
    action = np.full((1, 3), 1.0, np.float32)  # full torque on every joint: Hopper falls within ~100 steps
    eval_end = train_end = None
    for step in range(1, 301):
        _, eval_reward, terminated, truncated, _ = eval_env.step(action)
        if eval_end is None and terminated[0]:
            eval_end = step
        _, reward, terminated, truncated, _ = train_env.step(action)
        if terminated[0]:
            train_end = step
        if step == 1:
            assert reward[0] - eval_reward[0] == pytest.approx(4.0)  # healthy: 5 instead of 1, the rest alike
    assert eval_end is not None and eval_end < 300 and train_end is None
    assert abs(reward[0]) < 0.5  # fallen: no healthy reward (v5 pays it only while healthy), little motion
    train_env.close()
    eval_env.close()


def test_the_known_mujoco_deprecation_in_gymnasiums_models_is_dropped_and_other_warnings_kept(capfd):
    """mujoco >= 3.4 prints a deprecation for HalfCheetah's compiler attribute on every model load; it is dropped,
    and any other MuJoCo warning still reaches the user as a Python warning."""
    import warnings

    import envs
    from envs.custom import mujoco_warning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mujoco_warning("compiler attribute 'settotalmass' is deprecated and will be removed in a future release")
        mujoco_warning("Nan, Inf or huge value in QACC at DOF 0. The simulation is unstable.")
    assert [str(w.message) for w in caught] == ["MuJoCo: Nan, Inf or huge value in QACC at DOF 0. The simulation "
                                                "is unstable."]
    env = envs.make("HalfCheetah-v5", 3, seed=0, backend="sync")
    env.reset(seed=0)
    env.close()
    assert "settotalmass" not in capfd.readouterr().err
