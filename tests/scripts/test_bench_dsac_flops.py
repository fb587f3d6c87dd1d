"""scripts/bench/dsac_speed.py's FLOP count of a DSAC update, against a count by hand; and its matmul rate."""

import importlib.util
from pathlib import Path

import torch

from rlkit2.agent import get_agent_spec
from rlkit2.run import build_agent, make_env, resolve_config

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "dsac_speed.py"
spec = importlib.util.spec_from_file_location("dsac_speed", SCRIPT)
dsac_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dsac_speed)


def test_update_flops_count_every_matmul_of_the_forward_and_backward_passes():
    """DSAC-T on Pendulum (obs 3, action 1), hidden 8 x 8, batch 4, two critics, policy delay 2. Multiply-adds per
    sample: policy P = 3*8 + 8*8 + 8*2, its first layer P1 = 3*8; one critic C = 4*8 + 8*8 + 8*2, C1 = 4*8.
    Each update: target policy and target critics forward (P + 2C), the critics forward (2C) and backward (weight
    grads 2C; input grads of all but the first layer, whose input needs none: 2(C - C1)). Every second update
    also: the policy forward (P) and the critics on its actions (2C) with input grads only (2C: their weights are
    detached), and the policy's backward (weight grads P, input grads P - P1). FLOPs = 2 x batch x multiply-adds."""
    run, cfg = resolve_config("dsac", "Pendulum-v1", {"num_envs": 1, "backend": "sync", "hidden": "8,8",
                                                      "batch_size": 4, "learning_starts": 10})
    env = make_env(run, 1, 0)
    try:
        agent = build_agent(get_agent_spec("dsac"), run, cfg, env)
        timing = {"env": 0.0, "inference": 0.0}
        for _ in range(8):
            agent._env_step(timing)
        assert agent.cfg.delay == 2 and agent.num_critics == 2
        P, P1, C, C1 = 3 * 8 + 8 * 8 + 8 * 2, 3 * 8, 4 * 8 + 8 * 8 + 8 * 2, 4 * 8
        critic_only = (P + 2 * C) + 2 * C + 2 * C + 2 * (C - C1)
        policy_part = P + 2 * C + 2 * C + P + (P - P1)
        expected = 2 * 4 * (critic_only + policy_part / 2)
        assert dsac_speed.update_flops(agent) == expected
    finally:
        env.close()


def test_matmul_rate_is_a_positive_flop_rate():
    torch.set_num_threads(1)
    rate = dsac_speed.matmul_rate(batch=32, hidden=32, ensemble=2, seconds=0.05)
    assert 1e7 < rate < 1e13  # FLOP/s: between a very slow and an impossible single core


def test_report_renders_the_flop_rate_and_older_records_without_it(tmp_path, capsys):
    import json
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    from report import dsac_speed as render

    row = {"lib": "rlkit2", "threads": 1, "steps_per_sec": 20.0, "share_update": 0.9}
    record = {"env": "HalfCheetah-v5", "steps": 200, "warmup": 1000, "torch": "2.13", "machine": "x86_64, 2 cores",
              "rows": [row, {"lib": "sb3", "threads": 1, "steps_per_sec": 10.0}]}
    (tmp_path / "old.json").write_text(json.dumps(record))
    render(tmp_path / "old.json")
    assert "| 1 | 20.0 (update share 90%) | 10.0 | 2.00x | not run | – | not measured |" in capsys.readouterr().out
    row.update(gflop_per_update=0.874, update_gflop_per_sec=19.0, matmul_gflop_per_sec=54.6,
               update_share_of_matmul_rate=19.0 / 54.6)
    record["rows"].append({"lib": "tianshou", "threads": 1, "steps_per_sec": 8.0})  # the second peer, where installed
    (tmp_path / "new.json").write_text(json.dumps(record))
    render(tmp_path / "new.json")
    assert "| 2.00x | 8.0 | 2.50x | 19.0 of 54.6 = 35% (0.874 GFLOP per update) |" in capsys.readouterr().out
