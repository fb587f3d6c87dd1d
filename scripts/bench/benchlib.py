"""Shared by the benchmark scripts: appending a run's record (with the commit it ran on), training one rlkit2 run to
completion, and timing a raw vectorized env. Learning benchmarks are sweep specs (benchmarks/*.toml, run by
scripts/sweep.py); an SB3 model trained with rlkit2's evaluation protocol is rlkit2.peers.learn_with_evaluation."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def source_commit() -> str:
    """The commit the benchmark runs on, with '+dirty' if tracked files differ from it; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def record_name(record: dict, key: str) -> str:
    """What names a record in tables and plots: the field ``key``, or several fields joined by '+' in ``key``
    (e.g. 'variant+commit': the variant, then '@ <commit>', for runs of one command on different code)."""
    return " @ ".join(str(record[k]) for k in key.split("+"))


STARTED_ON = source_commit()  # at import, i.e. when the run's process starts: the tree may change while it runs


def append_record(path: Path, record: dict) -> None:
    """Append one run's record as a JSON line, stamped with the commit its process started on, and print it
    without its curves."""
    record = {**record, "commit": STARTED_ON}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: v for k, v in record.items() if not k.endswith("curve")}), flush=True)


def read_records(path: Path) -> list[dict]:
    """The JSON-lines records in ``path`` ([] when it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_to_completion(agent: str, env_id: str, overrides: dict) -> tuple[object, object, list[dict], float]:
    """Train one rlkit2 run under /tmp/rlkit2_bench_runs (no progress bar, no checkpoints) and return
    ``(run, cfg, progress rows, seconds)``. An interrupted run (e.g. SIGTERM) exits without a record: benchmarks
    record finished runs only."""
    from rlkit2.logger import read_progress
    from rlkit2.run import resolve_config, train

    name = f"{agent}-{env_id.split('/')[-1]}-s{overrides.get('seed', 0)}-{time.time_ns()}"
    run, cfg = resolve_config(agent, env_id, {"progress": False, "checkpoint_every": 0,
                                              "runs_dir": "/tmp/rlkit2_bench_runs", "run_name": name, **overrides})
    start = time.perf_counter()
    result = train(run, cfg)
    if result.status != "finished":
        raise SystemExit(f"run {result.run_dir} was interrupted at {result.env_steps} steps; nothing recorded")
    return run, cfg, read_progress(result.run_dir), time.perf_counter() - start


def column(rows: list[dict], *keys: str) -> list[tuple]:
    """``(step, row[key], ...)`` for the progress rows that have the first key (e.g. the evaluation rows)."""
    return [(int(r["step"]), *(r[k] for k in keys)) for r in rows if keys[0] in r]


def raw_env_rate(env_id: str, backend: str, num_envs: int, seconds: float) -> float:
    """Env steps/s (all envs together) of ``envs.make(env_id, num_envs, backend=backend)`` under random actions,
    pre-sampled so that sampling is not timed; at least 50 steps after a 20-step warm-up."""
    import envs

    venv = envs.make(env_id, num_envs, seed=0, backend=backend)
    venv.reset(seed=0)
    venv.action_space.seed(0)
    actions = [venv.action_space.sample() for _ in range(256)]
    for i in range(20):  # warm-up
        venv.step(actions[i])
    steps, start = 0, time.perf_counter()
    while steps < 50 or time.perf_counter() - start < seconds:
        venv.step(actions[steps % 256])
        steps += 1
    rate = steps * num_envs / (time.perf_counter() - start)
    venv.close()
    return rate
