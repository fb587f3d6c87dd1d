"""Shared by the benchmark scripts: appending a run's record (with the commit it ran on), training one rlkit2 run to
completion, and timing a raw vectorized env. Learning benchmarks are sweep specs (benchmarks/*.toml, run by
scripts/sweep.py); an SB3 model trained with rlkit2's evaluation protocol is rlkit2.peers.learn_with_evaluation."""

from __future__ import annotations

import json
import statistics
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


def median_row(runs: list[dict]) -> dict:
    """The median of each measured number (float) over repeated runs of one configuration."""
    return {key: statistics.median(run[key] for run in runs) for key, value in runs[0].items()
            if isinstance(value, float)}


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


def ppo_rate(env_id: str, total_steps: int, overrides: dict) -> dict:
    """PPO steps/s with ``env_id``'s preset and ``overrides``, from the second iteration on (the first is warm-up,
    reported as ``first_iteration_seconds``), with each phase's share of the time."""
    from rlkit2 import run as run_module
    from rlkit2.run import resolve_config, train

    base = {"total_steps": total_steps, "eval_every": 0, "checkpoint_every": 0, "eval_episodes": 1, "eval_envs": 1,
            "progress": False, "tensorboard": False, "runs_dir": "/tmp/rlkit2_bench_runs"}
    if env_id.startswith("ALE/"):
        base["atari.max_episode_frames"] = 2000  # a short final evaluation
    run, cfg = resolve_config("ppo", env_id, {k: str(v) for k, v in {**base, **overrides}.items()})
    sums: dict[str, float] = {}
    original, iterations = run_module._perf_metrics, []

    def capture(stats, steps, seconds):
        iterations.append(seconds)
        if len(iterations) > 1:
            for key in ("time/env", "time/inference", "time/update"):
                sums[key] = sums.get(key, 0.0) + stats.get(key, 0.0)
            sums["steps"] = sums.get("steps", 0) + steps
            sums["seconds"] = sums.get("seconds", 0.0) + seconds
        return original(stats, steps, seconds)

    run_module._perf_metrics = capture
    try:
        train(run, cfg)
    finally:
        run_module._perf_metrics = original
    if "seconds" not in sums:
        raise ValueError(f"total_steps {total_steps} covers one iteration only; the first is not timed")
    seconds = sums["seconds"]
    return {"steps_per_sec": sums["steps"] / seconds, "backend": run.backend, "num_envs": run.num_envs,
            "num_steps": cfg.num_steps, **{f"share_{k[5:]}": sums[k] / seconds for k in
                                           ("time/env", "time/inference", "time/update")},
            # collection: env + inference time; "wall": everything outside the update (the collector's whole loop)
            "collect_steps_per_sec": sums["steps"] / (sums["time/env"] + sums["time/inference"]),
            "collect_wall_steps_per_sec": sums["steps"] / (seconds - sums["time/update"]),
            "first_iteration_seconds": iterations[0]}


def dsac_rate(env_id: str, steps: int, warmup: int, overrides: dict) -> dict:
    """DSAC updates/s at one update per env step (the preset's replay ratio unless overridden), timed over ``steps``
    env steps after ``warmup`` steps of random actions without updates."""
    _, timing = timed_dsac(env_id, steps, warmup, overrides)
    return {key: timing[key] for key in ("updates_per_sec", "steps_per_sec", "share_update")}


def timed_dsac(env_id: str, steps: int, warmup: int, overrides: dict) -> tuple[object, dict]:
    """The DSAC agent after ``dsac_rate``'s measurement (its replay filled, e.g. for a FLOP count; its env closed),
    and the timing: ``dsac_rate``'s rates plus the updates made and the seconds spent in them, and the seconds of
    the untimed first updates before (with ``compile_update``, the compile)."""
    import torch

    from rlkit2.agent import get_agent_spec
    from rlkit2.run import build_agent, make_env, resolve_config

    torch.manual_seed(0)
    run, cfg = resolve_config("dsac", env_id, {"num_envs": 1, "backend": "sync", "learning_starts": warmup,
                                               "steps_per_iteration": warmup, **overrides})
    env = make_env(run, 1, 0)
    agent = build_agent(get_agent_spec("dsac"), run, cfg, env)
    agent.train_iteration()  # warm-up: random actions, no updates
    start = time.perf_counter()
    for _ in range(agent.cfg.delay):  # untimed updates with and without the policy step (compile_update compiles)
        agent.update(agent.replay.sample(agent.cfg.batch_size))
    first_updates = time.perf_counter() - start
    agent.cfg.steps_per_iteration = steps
    updates = agent.updates
    start = time.perf_counter()
    stats = agent.train_iteration()
    seconds = time.perf_counter() - start
    env.close()
    updates = agent.updates - updates
    return agent, {"updates_per_sec": updates / seconds, "steps_per_sec": steps / seconds,
                   "share_update": stats["time/update"] / seconds, "updates": updates,
                   "update_seconds": stats["time/update"], "first_updates_seconds": first_updates}
