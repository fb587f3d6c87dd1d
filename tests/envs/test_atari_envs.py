"""Atari through ale-py's native vector env ('ale') and gymnasium wrappers ('sync'): same contract on both."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs import AtariSettings

BACKENDS = ["ale", "sync"]


def _is_reset_stack(stack: np.ndarray) -> bool:
    """A stack right after a reset: the older frames are zeros, the newest is a real frame."""
    return not stack[:-1].any() and stack[-1].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_limit_truncates_with_valid_final_stack(backend):
    settings = AtariSettings(max_episode_frames=400, episodic_life=False)  # 400 frames = 100 agent steps
    venv = envs.make("ALE/Pong-v5", num_envs=2, seed=1, backend=backend, atari=settings)
    assert venv.backend_name == backend
    assert venv.settings["atari"] == settings.as_dict()
    assert venv.single_observation_space.shape == (4, 84, 84)
    assert venv.single_observation_space.dtype == np.uint8
    obs, _ = venv.reset(seed=1)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert all(_is_reset_stack(o) for o in obs)  # older frames of a fresh stack are zeros
    rng = np.random.default_rng(0)
    actions = rng.integers(0, venv.single_action_space.n, (130, 2))
    trajectory = [obs]
    truncations = np.zeros(2, int)
    for step_actions in actions:
        prev = obs
        obs, reward, terminated, truncated, info = venv.step(step_actions)
        trajectory.append(obs)
        assert not np.shares_memory(obs, prev)  # a fresh array each step, safe to store
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8 and reward.dtype == np.float32
        ended = terminated | truncated
        assert not terminated.any()  # a Pong game lasts far longer than 400 frames
        np.testing.assert_array_equal(info["_final_obs"], ended)
        np.testing.assert_array_equal(info["final_obs"][~ended], obs[~ended])
        # Continuing envs: the stack shifts by one frame.
        np.testing.assert_array_equal(obs[~ended, :-1], prev[~ended, 1:])
        for i in np.flatnonzero(ended):
            truncations[i] += 1
            final = info["final_obs"][i]
            # final_obs is the real last stack: the previous stack shifted by one plus a new, non-blank frame.
            np.testing.assert_array_equal(final[:-1], prev[i, 1:])
            assert all(frame.any() for frame in final)
            assert _is_reset_stack(obs[i])  # while obs already holds the next episode's reset stack
            assert not np.array_equal(final, obs[i])
            assert 50 < info["episode_length"][i] <= 100
        np.testing.assert_array_equal(info["episode_length"][~ended], 0)
    np.testing.assert_array_equal(truncations, [1, 1])

    # reset(seed=...) reseeds: replaying the same actions reproduces the trajectory.
    obs, _ = venv.reset(seed=1)
    replay = [obs] + [venv.step(a)[0] for a in actions[:30]]
    np.testing.assert_array_equal(np.stack(replay), np.stack(trajectory[:31]))
    venv.close()


@pytest.mark.parametrize("backend, episodic_life", [("ale", True), ("sync", True), ("ale", False)])
def test_episodic_life_terminates_on_life_loss_but_game_goes_on(backend, episodic_life):
    settings = AtariSettings(episodic_life=episodic_life, clip_rewards=False)
    venv = envs.make("ALE/Breakout-v5", num_envs=2, seed=0, backend=backend, atari=settings)
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    game_return = np.zeros(2)
    game_length = np.zeros(2, int)
    lives_lost = np.zeros(2, int)
    games = np.zeros(2, int)
    for _ in range(600):
        prev = obs
        obs, reward, terminated, truncated, info = venv.step(rng.integers(0, 4, 2))
        game_return += reward
        game_length += 1
        life_lost = info["life_lost"]
        assert life_lost.dtype == bool
        lives_lost += life_lost
        game_over = info["_episode"]
        assert not (life_lost & game_over).any()
        assert not truncated.any()
        # A lost life is a terminal for learning only with episodic_life...
        np.testing.assert_array_equal(terminated, game_over | (life_lost if episodic_life else False))
        # ... and never resets the game: the stack goes on and no episode is reported.
        np.testing.assert_array_equal(obs[life_lost, :-1], prev[life_lost, 1:])
        np.testing.assert_array_equal(info["_final_obs"], game_over)
        for i in np.flatnonzero(game_over):
            # Episode statistics count whole games (5 lives) in raw score.
            assert lives_lost[i] == 4
            assert info["episode_return"][i] == game_return[i]
            assert info["episode_length"][i] == game_length[i]
            assert _is_reset_stack(obs[i])
            games[i] += 1
        game_return[game_over] = 0.0
        game_length[game_over] = 0
        lives_lost[game_over] = 0
        if (games > 0).all():
            break
    assert (games > 0).all()
    venv.close()


def test_clip_rewards_clips_learning_reward_but_not_episode_return():
    """Two 'ale' runs, same seed and actions, with and without clipping: identical games, clipped rewards,
    identical (raw) episode returns."""
    def run(clip: bool):
        settings = AtariSettings(clip_rewards=clip, max_episode_frames=400)
        venv = envs.make("ALE/SpaceInvaders-v5", num_envs=2, seed=2, backend="ale", atari=settings)
        rng = np.random.default_rng(0)
        out = [venv.step(rng.integers(0, venv.single_action_space.n, 2)) for _ in range(100)]
        venv.close()
        return out

    raw, clipped = run(False), run(True)
    raw_rewards = np.stack([step[1] for step in raw])
    assert raw_rewards.max() > 1  # Space Invaders scores 5..30 per alien: clipping matters
    episodes = 0
    for (obs_r, rew_r, term_r, trunc_r, info_r), (obs_c, rew_c, term_c, trunc_c, info_c) in zip(raw, clipped):
        np.testing.assert_array_equal(obs_c, obs_r)  # same seed, same game
        assert rew_c.dtype == np.float32
        np.testing.assert_array_equal(rew_c, np.sign(rew_r))
        np.testing.assert_array_equal(term_c, term_r)
        np.testing.assert_array_equal(trunc_c, trunc_r)
        np.testing.assert_array_equal(info_c["_episode"], info_r["_episode"])
        np.testing.assert_array_equal(info_c["episode_return"], info_r["episode_return"])  # raw score
        episodes += int(info_r["_episode"].sum())
    assert episodes == 2  # each env truncated once, at 400 frames = step 100
    ends = np.stack([step[4]["_episode"] for step in raw])
    returns = np.stack([step[4]["episode_return"] for step in raw])
    for i in range(2):
        end = int(np.flatnonzero(ends[:, i])[0])
        assert returns[end, i] == raw_rewards[: end + 1, i].sum() > 1


def test_clip_rewards_sync_backend():
    venv = envs.make("ALE/SpaceInvaders-v5", num_envs=2, seed=2, backend="sync",
                     atari=AtariSettings(max_episode_frames=400))
    rng = np.random.default_rng(0)
    clipped_sum = np.zeros(2)
    returns = []
    for _ in range(100):
        _, reward, _, _, info = venv.step(rng.integers(0, venv.single_action_space.n, 2))
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        clipped_sum += reward
        for i in np.flatnonzero(info["_episode"]):
            returns.append((info["episode_return"][i], clipped_sum[i]))
            clipped_sum[i] = 0.0
    assert len(returns) == 2
    for raw_return, clipped_return in returns:
        # Every alien is worth 5..30 points: the raw score is a multiple of 5, at least 5x the clipped sum.
        assert raw_return % 5 == 0 and raw_return >= 5 * clipped_return
    assert max(r for r, _ in returns) > max(c for _, c in returns)


def _compare_backends(settings: AtariSettings, steps: int) -> None:
    ale = envs.make("ALE/Breakout-v5", num_envs=1, seed=0, backend="ale", atari=settings)
    sync = envs.make("ALE/Breakout-v5", num_envs=1, seed=0, backend="sync", atari=settings)
    np.testing.assert_array_equal(ale.reset(seed=0)[0], sync.reset(seed=0)[0])
    rng = np.random.default_rng(0)
    lives_lost = 0
    for _ in range(steps):
        action = rng.integers(0, 4, 1)
        a, s = ale.step(action), sync.step(action)
        for k in range(4):
            np.testing.assert_array_equal(a[k], s[k])
        np.testing.assert_array_equal(a[4]["life_lost"], s[4]["life_lost"])
        lives_lost += int(a[4]["life_lost"].sum())
    assert steps == 0 or lives_lost > 0


def test_backends_produce_identical_observations_without_randomness():
    """With no random no-ops, no sticky actions and no FIRE reset, the two backends are bit-identical."""
    _compare_backends(AtariSettings(noop_max=0, repeat_action_probability=0.0, fire_reset=False), steps=150)


def test_backends_produce_identical_observations_with_fire_reset():
    """FireReset presses FIRE for one raw frame, as ale-py's use_fire_reset does."""
    _compare_backends(AtariSettings(noop_max=0, repeat_action_probability=0.0, fire_reset=True), steps=150)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_episode_steps_is_rejected_for_atari(backend):
    with pytest.raises(ValueError, match=r"max_episode_steps does not apply to Atari env 'ALE/Pong-v5'.*"
                                         r"--atari.max_episode_frames"):
        envs.make("ALE/Pong-v5", num_envs=1, seed=0, backend=backend, max_episode_steps=10)
