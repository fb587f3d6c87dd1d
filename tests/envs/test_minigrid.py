"""MiniGrid through the custom-env path: observation layout, the agent position in info (also right after an
autoreset), the AGAC paper's extra MultiRoom sizes, and the error for an unknown id."""

import numpy as np
import pytest

import envs
from envs.custom import EnvCheckError

pytest.importorskip("minigrid")


def test_symbolic_view_and_agent_position_follow_the_returned_obs():
    venv = envs.make("MiniGrid-Empty-5x5-v0", num_envs=2, seed=0, max_episode_steps=3)
    obs, info = venv.reset(seed=0)
    assert obs.shape == (2, 3, 7, 7) and obs.dtype == np.uint8
    inner = venv.backend.vec.envs
    np.testing.assert_array_equal(info["agent_pos"], [e.unwrapped.agent_pos for e in inner])
    for _ in range(3):  # turn left (action 0) three times: the 3-step limit truncates and the envs reset
        obs, _, terminated, truncated, info = venv.step(np.zeros(2, dtype=np.int64))
    assert truncated.all() and not terminated.any()
    np.testing.assert_array_equal(info["agent_pos"], [e.unwrapped.agent_pos for e in inner])


def test_paper_multiroom_sizes_are_registered():
    venv = envs.make("MiniGrid-MultiRoom-N10-S10-v0", num_envs=1, seed=0)
    assert len(venv.backend.vec.envs[0].unwrapped.rooms) == 10


def test_unknown_minigrid_id_names_the_known_ones():
    with pytest.raises(EnvCheckError, match="not a registered MiniGrid id.*MiniGrid-DoorKey"):
        envs.make("MiniGrid-NoSuchRoom-v0", num_envs=1)
