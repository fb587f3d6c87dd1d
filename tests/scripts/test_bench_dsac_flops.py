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


def test_report_renders_the_compiled_update_beside_the_eager_one_as_medians_of_the_repeats(tmp_path, capsys):
    import json
    import sys

    sys.path.insert(0, str(SCRIPT.parent))
    from report import dsac_speed as render

    def row(lib, repeat, steps_per_sec, share=None):
        out = {"lib": lib, "threads": 1, "repeat": repeat, "steps_per_sec": steps_per_sec}
        if share is not None:
            out.update(share_update=0.9, gflop_per_update=0.874, update_gflop_per_sec=100.0 * share,
                       matmul_gflop_per_sec=100.0, update_share_of_matmul_rate=share)
        return out

    rows = [row("rlkit2", 0, 70.0, 0.40), row("rlkit2-compiled", 0, 90.0, 0.55), row("sb3", 0, 50.0),
            row("rlkit2", 1, 74.0, 0.44), row("rlkit2-compiled", 1, 80.0, 0.50), row("sb3", 1, 40.0),
            row("rlkit2", 2, 72.0, 0.42), row("rlkit2-compiled", 2, 86.0, 0.54), row("sb3", 2, 45.0)]
    record = {"env": "HalfCheetah-v5", "steps": 1000, "warmup": 1000, "torch": "2.13", "machine": "x86_64, 2 cores",
              "repeats": 3, "rows": rows}
    (tmp_path / "r.json").write_text(json.dumps(record))
    render(tmp_path / "r.json")
    out = capsys.readouterr().out
    # medians: rlkit2 72 steps/s, compiled 86, SB3 45
    assert ("| 1 | 72.0 (update share 90%; runs 70.0, 74.0, 72.0) | 45.0 | 1.60x | not run | – | "
            "42.0 of 100.0 = 42%") in out
    assert ("| 1, update compiled | 86.0 (update share 90%; runs 90.0, 80.0, 86.0) | 45.0 | 1.91x | not run | – | "
            "54.0 of 100.0 = 54%") in out
