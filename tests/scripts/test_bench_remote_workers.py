"""scripts/bench/remote_workers.py at a tiny size, as a user runs it (its own local Ray on 127.0.0.1, isolated from
any other Ray on the machine by ray_helpers): it records every repeat, the medians, the transfer costs and Amdahl's
bound from the run without workers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from ray_helpers import ray_env, stop_our_ray  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SLOW = "scripts.bench.remote_workers:SlowEnv"


@pytest.fixture(autouse=True)
def no_ray_left_behind():
    yield
    stop_our_ray()


def test_remote_workers_benchmark_records_every_repeat_and_the_medians(tmp_path):
    out = tmp_path / "remote_workers.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench" / "remote_workers.py"), "--repeats", "2", "--steps", "128",
           "--num-envs", "2", "--num-steps", "32", "--workers", "0,1", "--envs", SLOW, "--calls", "2", "--out", str(out)]
    done = subprocess.run(cmd, env=ray_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "started a local Ray on 127.0.0.1" in done.stdout
    record = json.loads(out.read_text())
    assert record["settings"]["workers"] == [0, 1] and record["ray"]
    runs = record["runs"][SLOW]
    assert len(runs["0"]) == len(runs["1"]) == 2  # every repeat
    assert all(r["steps_per_sec"] > 0 for rs in runs.values() for r in rs)
    assert "share_env" in runs["0"][0]["shares"] and "share_wait" in runs["1"][0]["shares"]
    medians = record["median_steps_per_sec"][SLOW]
    assert sorted(medians) == ["0", "1"] and all(v > 0 for v in medians.values())
    transfer = record["transfer"]
    assert transfer["rollout_shape"] == [32, 2] and len(transfer["rollout_ms"]) == 2
    assert transfer["weights"] > 1000 and transfer["median"]["broadcast_ms"] is not None
    bound = record["amdahl"][SLOW]["bound_without_overhead"]
    assert 1.0 <= bound["2"] <= bound["16"] <= bound["64"] <= 1 / record["amdahl"][SLOW]["update_share_w0"] + 1e-9
