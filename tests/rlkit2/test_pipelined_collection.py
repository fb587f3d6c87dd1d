"""The pipelined collector (``envs.make(..., pipeline=True)``: one half of the envs steps while the policy acts on
the other) collects, for a deterministic policy that treats each env's row on its own, exactly the rollout the
plain collector collects: every ``[t, i]`` entry is env i's step t on both paths -- observations, actions,
rewards, terminated/truncated, the bootstrap values of truncated episodes, the last observation and value, the
kept env infos, and the finished episodes' returns and lengths in the same order. Two rollouts in a row, so that
what a collector carries from one to the next is covered too."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "envs"))

import envs  # noqa: E402
from envs.atari import AtariSettings  # noqa: E402
from counter_envs import CounterEnv  # noqa: E402
from rlkit2.collector import OnPolicyCollector, PolicyStep  # noqa: E402

HAS_ENVPOOL = importlib.util.find_spec("envpool") is not None


class RowPolicy:
    """Deterministic, and row by row (no arithmetic across envs): an observation gets the same action, log-prob
    and value in any batch. ``in_step``: log-prob, value and an extra come from ``step`` (like AGAC) rather than
    from ``evaluate`` after the rollout (like PPO)."""

    def __init__(self, discrete: bool, in_step: bool):
        self.discrete, self.in_step = discrete, in_step
        self.steps_seen = 0

    def preprocess(self, obs, update_stats):
        return obs.float()

    def step(self, obs):
        self.steps_seen += 1
        x = obs.flatten(1)  # (image frames: a row of pixels)
        action = (x.sum(1) % 2 == 0).long() if self.discrete else torch.tanh(x[:, :6] + x[:, 6:12])
        if not self.in_step:
            return PolicyStep(action, action)
        logprob, value = self.evaluate(obs, action)
        return PolicyStep(action, action, logprob, value, {"obs_doubled": 2 * obs})

    def evaluate(self, obs, actions):
        return obs.flatten(1)[:, 0] - 0.5 * actions.reshape(len(obs), -1)[:, 0], self.value(obs)

    def value(self, obs):
        x = obs.flatten(1)
        return 3.0 * x[:, 0] + x.mean(1)


def collect_twice(env, policy, info_keys=()):
    collector = OnPolicyCollector(env, num_steps=13, device=torch.device("cpu"), info_keys=info_keys)
    collector.reset(seed=5)
    out = []
    for _ in range(2):
        rollout = collector.collect(policy)
        record = {name: getattr(rollout, name).clone() for name in (
            "obs", "actions", "logprobs", "values", "rewards", "terminated", "truncated", "final_values", "last_obs",
            "last_value")}
        record.update({f"extra_{k}": v.clone() for k, v in rollout.extras.items()})
        record.update({f"info_{k}": torch.as_tensor(v.copy()) for k, v in rollout.infos.items()})
        # the preprocessed final observations of truncated episodes, placed at [t, env]
        finals = torch.full_like(rollout.obs, float("nan"))
        for t, idx, final_obs in rollout.truncated_final_obs:
            finals[t, idx] = final_obs
        record["truncated_final_obs"] = finals
        record["episodes"] = collector.episodes.pop()
        out.append(record)
    timing = collector.pop_timing()
    assert timing["env"] > 0 and timing["inference"] > 0
    env.close()
    return out


ASYNC = {False: "sync", True: "async"}
CASES = {
    # halves in gymnasium's worker processes (step_async / step_wait) vs the plain path on 'sync' (same seeds, same
    # envs); odd N: halves of 2 and 3
    "counter-async": dict(make=lambda pipeline: envs.make(CounterEnv, 5, seed=5, backend=ASYNC[pipeline],
                                                          max_episode_steps=4, pipeline=pipeline),
                          discrete=True, info_keys=()),
    # MuJoCo, with an env info key kept per step
    "cheetah-async": dict(make=lambda pipeline: envs.make("HalfCheetah-v5", 4, seed=5, backend=ASYNC[pipeline],
                                                          max_episode_steps=6, pipeline=pipeline),
                          discrete=False, info_keys=("x_position",)),
    # two envpool pools sent and received asynchronously
    "cheetah-envpool": dict(make=lambda pipeline: envs.make("HalfCheetah-v5", 4, seed=5, backend="envpool",
                                                            max_episode_steps=6, pipeline=pipeline),
                            discrete=False, info_keys=()),
    # two of ale-py's native pools (send / recv); frames are uint8 and the policy reads two pixels per env
    "pong-ale": dict(make=lambda pipeline: envs.make("ALE/Pong-v5", 4, seed=5, backend="ale", pipeline=pipeline,
                                                     atari=AtariSettings(max_episode_frames=40)),
                     discrete=True, info_keys=()),
}


@pytest.mark.parametrize("in_step", [False, True], ids=["evaluated", "in-step"])
@pytest.mark.parametrize("case", list(CASES))
def test_pipelined_rollout_equals_the_plain_rollout_env_by_env(case, in_step):
    spec = CASES[case]
    if "envpool" in case and not HAS_ENVPOOL:
        pytest.skip("envpool is not installed")
    plain_policy, piped_policy = RowPolicy(spec["discrete"], in_step), RowPolicy(spec["discrete"], in_step)
    plain = collect_twice(spec["make"](False), plain_policy, spec["info_keys"])
    piped = collect_twice(spec["make"](True), piped_policy, spec["info_keys"])
    assert plain_policy.steps_seen == 2 * 13 and piped_policy.steps_seen == 2 * 2 * 13  # one forward per half
    for first, second in zip(plain, piped):
        assert first.keys() == second.keys()
        assert first["truncated"].any()  # the bootstrap path is exercised
        for key in first:
            if key == "episodes":
                assert first[key] == second[key] and first[key][0], "episode returns and lengths, in order"
            else:
                torch.testing.assert_close(first[key], second[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_a_run_with_collect_pipeline_trains_records_it_and_refuses_one_env(tmp_path):
    import json

    from rlkit2.config import ConfigError
    from rlkit2.run import resolve_config, train

    options = {"backend": "async", "collect_pipeline": "true", "num_envs": "2", "num_steps": "16",
               "minibatch_size": "16", "total_steps": "64", "eval_every": "0", "eval_episodes": "1", "eval_envs": "1",
               "progress": "false", "tensorboard": "false", "runs_dir": str(tmp_path)}
    result = train(*resolve_config("ppo", "Pendulum-v1", options))
    assert result.status == "finished" and result.env_steps == 64
    settings = json.loads((result.run_dir / "config.json").read_text())
    assert settings["run"]["collect_pipeline"] is True
    with pytest.raises(ConfigError, match=r"collect_pipeline.*needs num_envs >= 2, got 1"):
        resolve_config("ppo", "Pendulum-v1", {**options, "num_envs": "1"})[0].validate()
