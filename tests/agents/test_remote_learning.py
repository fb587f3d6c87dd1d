"""Agents with remote workers (--workers 2, rlkit2/remote.py): PPO learns CartPole and DSAC (asynchronous actors)
learns Pendulum on a local Ray; DSAC's synchronous actor mode trains bit-identical weights on Ray and in-process.
The machinery itself is tested in tests/rlkit2/test_remote.py."""

from __future__ import annotations

import csv

import pytest
import torch

from rlkit2 import checkpoint as ckpt
from rlkit2.run import resolve_config, resume, train
from ray_helpers import local_ray  # noqa: F401  (a fixture)

QUIET = {"progress": "false", "tensorboard": "false"}
TINY_DSAC = {"num_envs": 2, "total_steps": 400, "learning_starts": 100, "steps_per_iteration": 100,
             "hidden": "16,16", "batch_size": 32, "eval_every": 0, "eval_episodes": 1, "eval_envs": 1,
             "checkpoint_every": 0, "workers": 2, "actor_chunk": 10, "actor_sync_every": 20}


@pytest.mark.slow
def test_ppo_learns_cartpole_with_2_workers(tmp_path, local_ray):  # noqa: F811
    run, cfg = resolve_config("ppo", "CartPole-v1", {**QUIET, "runs_dir": str(tmp_path), "total_steps": 100_000,
                                                     "eval_every": 0, "eval_episodes": 10, "workers": 2})
    result = train(run, cfg)
    assert result.final_eval["return_mean"] >= 475, result.final_eval


def test_dsac_sync_actors_on_ray_and_in_process_train_bit_identical_weights(tmp_path, local_ray):  # noqa: F811
    states = {}
    for mode in ("ray", "local"):
        run, cfg = resolve_config("dsac", "Pendulum-v1", {**QUIET, "runs_dir": str(tmp_path), "run_name": mode,
                                                          **TINY_DSAC, "worker_mode": mode, "actor_mode": "sync"})
        result = train(run, cfg)
        states[mode] = ckpt.load(result.checkpoint)
        assert states[mode]["agent_state"]["env_steps"] == 400 and states[mode]["agent_state"]["updates"] == 300
        assert int(states[mode]["resume_state"]["replay"]["valid"].sum()) == 400  # every step of every actor
        row = list(csv.DictReader(open(result.run_dir / "progress.csv")))[-2]
        for key in ("workers/steps_per_sec_w0", "workers/steps_per_sec_w1", "workers/policy_lag_mean",
                    "perf/share_update", "perf/share_broadcast"):
            assert key in row and float(row[key]) >= 0, key
    for name in ("policy", "critic", "policy_target", "critic_target", "log_alpha", "sigma_bar"):
        a, b = states["ray"]["agent_state"][name], states["local"]["agent_state"][name]
        if isinstance(a, dict):
            assert all(torch.equal(a[k], b[k]) for k in a), name
        else:
            assert torch.equal(a, b), name
    replay_a, replay_b = states["ray"]["resume_state"]["replay"], states["local"]["resume_state"]["replay"]
    assert all(torch.equal(replay_a[k], replay_b[k]) for k in ("obs", "actions", "rewards", "valid", "ptr"))


def test_dsac_async_actors_resume_with_their_replay(tmp_path):
    """In-process actors (async protocol, local mode): an interrupted run resumes from its replay buffer and
    finishes its budget with the updates the replay ratio owes."""
    overrides = {**QUIET, "runs_dir": str(tmp_path), "run_name": "r", **TINY_DSAC, "worker_mode": "local",
                 "stop_after_steps": 200}
    first = train(*resolve_config("dsac", "Pendulum-v1", overrides))
    assert first.status == "interrupted" and first.env_steps == 200
    second = resume(first.run_dir, {"stop_after_steps": 0})
    assert second.status == "finished" and second.env_steps == 400
    final = ckpt.load(second.checkpoint)
    assert final["agent_state"]["updates"] == 300  # no second warm-up: the buffer came back
    assert int(final["resume_state"]["replay"]["valid"].sum()) == 400


@pytest.mark.slow
def test_dsac_learns_pendulum_with_2_async_actors(tmp_path, local_ray):  # noqa: F811
    # 30k steps (the preset's 20k, 5% warm-up, plus half): at 10k steps two envs are too few steps each (in-process
    # with 2 envs ended at -493 there, seed 0). Asynchronous actors on Ray are not deterministic (thread timing sets
    # which weights each chunk was collected with): at 20k one fresh-clone CI run in three ended at -469 with
    # some evaluation episodes unsolved (std 592), so the budget has room
    run, cfg = resolve_config("dsac", "Pendulum-v1", {**QUIET, "runs_dir": str(tmp_path), "total_steps": 30_000,
                                                      "eval_every": 0, "eval_episodes": 10, "seed": 0, "num_envs": 2,
                                                      "workers": 2})
    result = train(run, cfg)
    assert result.final_eval["return_mean"] >= -250, result.final_eval  # random policy: about -1200
    lag = [float(r["workers/policy_lag_max"]) for r in csv.DictReader(open(result.run_dir / "progress.csv"))
           if r.get("workers/policy_lag_max")]
    assert lag and max(lag) > 0  # asynchronous: chunks were collected with weights older than the learner's
