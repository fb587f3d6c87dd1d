"""Shared by the benchmark scripts: running jobs in parallel processes, appending a run's record (with the commit
it ran on), training one rlkit2 run to completion, timing a raw vectorized env, and training an SB3 model with the
same periodic evaluation rlkit2's run loop does."""

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


def run_jobs(commands: list[list[str]], jobs: int) -> None:
    """Run the commands, at most ``jobs`` at a time (one core each), in the given order."""
    running: list[subprocess.Popen] = []
    for cmd in commands:
        while len(running) >= jobs:
            running = [p for p in running if p.poll() is None]
            time.sleep(1)
        running.append(subprocess.Popen(cmd))
    for p in running:
        p.wait()


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


def learn_with_evaluation(model, env_id: str, seed: int, steps: int, eval_every: int,
                          max_episode_steps: int | None = None) -> list[tuple[int, float]]:
    """``model.learn(steps)`` with a deterministic evaluation (10 episodes on 5 separate envs, seeds 10000+, raw
    reward: rlkit2's protocol) every ``eval_every`` env steps and at the end; returns the curve. ``max_episode_steps``
    sets the evaluation envs' time limit (an env given as 'module:Class' has none of its own)."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    import envs
    from rlkit2.evaluation import evaluate

    eval_env = envs.make(env_id, 5, seed=seed + 10_000, backend="sync", max_episode_steps=max_episode_steps)
    curve: list[tuple[int, float]] = []

    def act(obs):
        return torch.as_tensor(model.predict(obs.numpy(), deterministic=True)[0])

    def score() -> float:
        return evaluate(act, eval_env, 10, torch.device("cpu"), seed=seed + 10_000)["return_mean"]

    class Eval(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next = eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += eval_every
                curve.append((self.num_timesteps, score()))
            return True

    model.learn(total_timesteps=steps, callback=Eval())
    if not curve or curve[-1][0] != model.num_timesteps:
        curve.append((model.num_timesteps, score()))
    eval_env.close()
    return curve
