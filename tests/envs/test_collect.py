"""The Collect domain (envs/collect.py): option semantics on hand-made mazes, rewards and the time limit,
the stochastic variant, maze generation, seeding, gymnasium's env checker, and the batched backend against a
sync vector of single envs."""

from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.collect import COLLECT_IDS, CollectBatch, CollectConfig, CollectEnv, generate_maze

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


def layout(rows: list[str], **config) -> CollectBatch:
    """A one-env batch in a hand-made maze: '#' wall, 'o' agent, 'x' goal."""
    grid = np.array([list(r) for r in rows])
    cfg = CollectConfig(size=len(rows), num_goals=int((grid == "x").sum()), holes=0, **config)
    batch = CollectBatch(1, cfg)
    batch.reset_envs(np.array([0]))
    batch.walls[0] = grid == "#"
    batch.goals[0] = grid == "x"
    batch.agent[0] = np.argwhere(grid == "o")[0]
    batch.goal_pos[0] = np.argwhere(grid == "x")
    batch.goal_alive[0] = True
    return batch


MAZE = ["#######",
        "#o   x#",
        "# ## ##",
        "#  #  #",
        "## # ##",
        "#x    #",
        "#######"]


def test_an_option_runs_along_a_corridor_to_the_goal():
    batch = layout(MAZE)
    reward, terminated, steps, rewards = batch.step(np.array([RIGHT]))
    # (1,1) -> (1,2): a branch? no (2 open neighbours); (1,3); (1,4) is a branch point (down is open): stop
    assert batch.agent[0].tolist() == [1, 4] and steps[0] == 3
    np.testing.assert_allclose(rewards[0, :3], [-0.2, -0.2, -0.2])
    reward, terminated, steps, rewards = batch.step(np.array([RIGHT]))  # one step onto the goal: +2, stop
    assert batch.agent[0].tolist() == [1, 5] and steps[0] == 1 and reward[0] == pytest.approx(2.0)
    assert not batch.goals[0, 1, 5] and batch.goal_alive[0].sum() == 1 and not terminated[0]


def test_a_blocked_option_costs_one_bump_and_an_option_stops_before_a_wall():
    batch = layout(MAZE)
    reward, _, steps, _ = batch.step(np.array([UP]))
    assert batch.agent[0].tolist() == [1, 1] and steps[0] == 1 and reward[0] == pytest.approx(-0.5)
    reward, _, steps, _ = batch.step(np.array([DOWN]))  # (2,1), (3,1): a wall ahead, stop
    assert batch.agent[0].tolist() == [3, 1] and steps[0] == 2 and reward[0] == pytest.approx(-0.4)
    reward, _, steps, _ = batch.step(np.array([RIGHT]))  # (3,2), then a wall ahead: stop
    assert batch.agent[0].tolist() == [3, 2] and steps[0] == 1


def test_collecting_every_goal_or_running_out_of_time_terminates():
    batch = layout(["#####",
                    "#ox #",
                    "#####",
                    "#####",
                    "#####"])
    reward, terminated, steps, _ = batch.step(np.array([RIGHT]))
    assert terminated[0] and steps[0] == 1 and reward[0] == pytest.approx(2.0)

    batch = layout(MAZE, max_steps=4)
    reward, terminated, steps, _ = batch.step(np.array([RIGHT]))  # 3 steps
    assert not terminated[0]
    reward, terminated, steps, _ = batch.step(np.array([LEFT]))  # the 4th step ends the episode mid-option
    assert terminated[0] and steps[0] == 1 and batch.t[0] == 4 and reward[0] == pytest.approx(-0.2)


def test_time_plane_counts_down_the_remaining_steps():
    batch = layout(MAZE, max_steps=20)
    assert (batch.observe()[0, 3] == 20).all()
    batch.step(np.array([RIGHT]))
    obs = batch.observe()[0]
    assert (obs[3] == 17).all() and obs[1, 1, 4] == 1 and obs[1].sum() == 1 and obs[0, 0].all()


def test_stochastic_options_slip_past_branch_points_and_goals_move():
    batch = layout(MAZE, p_slip=1.0)
    batch.step(np.array([RIGHT]))  # the branch at (1,4) does not stop it: it reaches the goal at (1,5)
    assert batch.agent[0].tolist() == [1, 5]

    batch = layout(MAZE, p_goal=1.0)
    before = batch.goal_pos[0].copy()
    batch.step(np.array([UP]))  # one primitive step: every goal with an empty neighbour moves one cell
    moved = np.abs(batch.goal_pos[0] - before).sum(1)
    assert (moved == 1).all() and batch.goals[0].sum() == 2
    assert not (batch.walls[0][tuple(batch.goal_pos[0].T)]).any()


def test_generated_mazes_are_walled_connected_and_seeded():
    rng = np.random.default_rng(0)
    for _ in range(20):
        walls = generate_maze(10, 5, rng)
        assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
        cells = {tuple(c) for c in np.argwhere(~walls)}
        seen, todo = set(), deque([next(iter(cells))])
        while todo:
            y, x = todo.popleft()
            if (y, x) in seen or (y, x) not in cells:
                continue
            seen.add((y, x))
            todo.extend([(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)])
        assert seen == cells  # one connected maze
    a, b = generate_maze(10, 5, np.random.default_rng(3)), generate_maze(10, 5, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("env_id", COLLECT_IDS)
def test_env_checker_and_seeded_determinism(env_id):
    check_env(gym.make(env_id).unwrapped, skip_render_check=True)
    runs = []
    for seed in (7, 7, 8):
        env = gym.make(env_id)
        obs, _ = env.reset(seed=seed)
        trace = [obs]
        for option in [0, 1, 2, 3, 1, 2, 0, 3] * 3:
            obs, reward, terminated, _, _ = env.step(option)
            trace += [obs, reward]
            if terminated:
                obs, _ = env.reset()
        runs.append(trace)
    assert all(np.array_equal(x, y) for x, y in zip(runs[0], runs[1]))
    assert not all(np.array_equal(x, y) for x, y in zip(runs[0], runs[2]))


@pytest.mark.parametrize("env_id", COLLECT_IDS)
def test_batched_backend_matches_a_sync_vector_of_single_envs(env_id):
    batched = envs.make(env_id, 5, seed=3)
    sync = envs.make(env_id, 5, seed=3, backend="sync")
    assert batched.backend_name == "batched" and sync.backend_name == "sync"
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(120):
        options = rng.integers(0, 4, 5)
        b, s = batched.step(options), sync.step(options)
        for x, y in zip(b[:4], s[:4]):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(b[4]["final_obs"], s[4]["final_obs"])
        for key in ("option_steps", "option_rewards"):
            np.testing.assert_array_equal(b[4]["final_info"][key], s[4]["final_info"][key])  # the step's option
            np.testing.assert_array_equal(b[4][key], s[4][key])  # describes the returned obs (0 after reset)
        ended = b[4]["_episode"]
        episodes += ended.sum()
        assert (b[4]["final_info"]["option_steps"][ended] > 0).all() and (b[4]["option_steps"][ended] == 0).all()
    assert episodes > 10


def test_episode_return_is_the_undiscounted_sum_of_primitive_rewards():
    venv = envs.make("rlkit2/Collect-v0", 4, seed=0)
    rng = np.random.default_rng(1)
    sums = np.zeros(4)
    for _ in range(60):
        _, reward, _, _, info = venv.step(rng.integers(0, 4, 4))
        step_rewards = info["final_info"]["option_rewards"].sum(1)
        np.testing.assert_allclose(reward, step_rewards, rtol=1e-6)
        sums += step_rewards
        ended = info["_episode"]
        np.testing.assert_allclose(info["episode_return"][ended], sums[ended], rtol=1e-5)
        sums[ended] = 0.0


def test_bad_collect_settings_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="options must be in 0..3"):
        CollectBatch(1).step(np.array([4]))
    with pytest.raises(ValueError, match="too few for the agent"):
        CollectEnv(size=5, num_goals=8).reset(seed=0)
    with pytest.raises(ValueError, match="bad env_kwargs"):
        envs.make("rlkit2/Collect-v0", 2, env_kwargs={"goals": 3})
    with pytest.raises(ValueError, match="backend 'batched' runs the Collect ids"):
        envs.make("CartPole-v1", 2, backend="batched")
