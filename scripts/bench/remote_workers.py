#!/usr/bin/env python
"""Remote rollout workers (--workers, rlkit2/remote.py): what moving data costs, and end-to-end PPO steps/s for
W = 0, 1, 2 workers on HalfCheetah-v5 and on a deliberately slow env (``SlowEnv``: 1 ms of sleep per step).

    python scripts/bench/remote_workers.py --repeats 3 --out docs/bench/remote_workers.json

1. Costs on a local Ray (127.0.0.1): moving one worker's rollout to the learner (a rollout-sized dict of numpy
   arrays returned by an actor, minus an empty call's round trip) and one broadcast of PPO's acting weights (one
   ray.put, every worker fetching it).
2. End to end: PPO (the env's preset, ``--num-envs`` envs x ``--num-steps`` steps per iteration) trained for
   ``--steps`` env steps with W workers, every configuration in turn within each repeat (alternating repeats, one
   process, one Ray), so all see the same machine state. The rate is the loop's own per-iteration steps/s after
   the first iteration (warm-up); the phase shares of W = 0 (env, inference, update) give Amdahl's bound.
Medians over repeats, every repeat recorded. ``--workers``/``--envs`` choose the configurations.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SLOW_ENV = "scripts.bench.remote_workers:SlowEnv"


class SlowEnv(gym.Env):
    """A user's slow simulator: HalfCheetah's spaces (17 obs, 6 actions), ``delay`` seconds of sleep per step (no
    CPU used: the envs of different workers wait in parallel even on 2 cores), 1000-step episodes."""

    def __init__(self, delay: float = 0.001, horizon: int = 1000):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (17,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
        self.delay, self.horizon, self.t = delay, horizon, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.normal(size=17).astype(np.float32), {}

    def step(self, action):
        time.sleep(self.delay)
        self.t += 1
        obs = self.np_random.normal(size=17).astype(np.float32)
        return obs, -float(np.square(action).sum()), False, self.t >= self.horizon, {}


def nbytes(tree) -> int:
    if isinstance(tree, np.ndarray):
        return tree.nbytes
    if isinstance(tree, dict):
        return sum(nbytes(v) for v in tree.values())
    return 0


def rollout_like(T: int, k: int) -> dict:
    """A worker's PPO rollout on HalfCheetah as the learner receives it (rlkit2.remote._rollout_arrays)."""
    rng = np.random.default_rng(0)
    f = np.float32
    return {"obs": rng.normal(size=(T, k, 17)).astype(f), "actions": rng.normal(size=(T, k, 6)).astype(f),
            **{key: rng.normal(size=(T, k)).astype(f) for key in ("logprobs", "values", "rewards", "final_values")},
            "terminated": np.zeros((T, k), bool), "truncated": np.zeros((T, k), bool),
            "last_obs": rng.normal(size=(k, 17)).astype(f), "last_value": np.zeros(k, f)}


def ppo_acting_state() -> dict:
    """PPO's acting weights for HalfCheetah-v5 with its MuJoCo preset, as the learner broadcasts them."""
    import torch

    import envs
    from rlkit2.agent import BuildContext, get_agent_spec
    from rlkit2.remote import acting_state
    from rlkit2.run import resolve_config

    _, cfg = resolve_config("ppo", "HalfCheetah-v5")
    env = envs.make("HalfCheetah-v5", 1, backend="sync")
    agent = get_agent_spec("ppo").build(cfg, BuildContext(env=env, device=torch.device("cpu"), total_steps=1, seed=0,
                                                          threads_collect=1, threads_update=1, training=False))
    state = acting_state(agent.acting_modules())
    env.close()
    return state


def transfer_costs(workers: int, T: int, k: int, calls: int) -> dict:
    """Milliseconds per rollout moved and per broadcast, each minus an empty call's round trip, ``calls`` times."""
    import ray

    class Probe:
        def __init__(self, T: int, k: int):
            self.rollout = rollout_like(T, k)

        def noop(self):
            return None

        def send_rollout(self):
            return self.rollout

        def fetch(self, box):
            return nbytes(ray.get(box[0]))

    actors = [ray.remote(num_cpus=0)(Probe).remote(T, k) for _ in range(workers)]
    ray.get([a.noop.remote() for a in actors])
    state = ppo_acting_state()
    noop, noop_all, move, broadcast = [], [], [], []
    for _ in range(calls):
        start = time.perf_counter()
        ray.get(actors[0].noop.remote())
        noop.append(time.perf_counter() - start)
        start = time.perf_counter()
        ray.get(actors[0].send_rollout.remote())
        move.append(time.perf_counter() - start)
        start = time.perf_counter()
        ray.get([a.noop.remote() for a in actors])
        noop_all.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = ray.put(state)  # one put; every worker fetches the same object (rlkit2.remote.WorkerGroup.put)
        ray.get([a.fetch.remote([ref]) for a in actors])
        broadcast.append(time.perf_counter() - start)
    for a in actors:
        ray.kill(a)
    base, base_all = statistics.median(noop), statistics.median(noop_all)
    weights = sum(v.size for entries in state.values() for v in entries.values())
    return {"rollout_shape": [T, k], "rollout_mb": nbytes(rollout_like(T, k)) / 2 ** 20, "weights": int(weights),
            "weights_mb": nbytes(state) / 2 ** 20, "workers": workers,
            "empty_call_ms": [1e3 * x for x in noop], "empty_call_all_ms": [1e3 * x for x in noop_all],
            "rollout_ms": [1e3 * (x - base) for x in move], "broadcast_ms": [1e3 * (x - base_all) for x in broadcast],
            "median": {"empty_call_ms": 1e3 * base, "rollout_ms": 1e3 * (statistics.median(move) - base),
                       "broadcast_ms": 1e3 * (statistics.median(broadcast) - base_all)}}


def train_rate(env_id: str, workers: int, args, runs_dir: str) -> dict:
    """Steps/s of one PPO run after its first iteration, and its phase shares (medians over iterations)."""
    from rlkit2.run import resolve_config, train

    overrides = {"total_steps": args.steps, "num_envs": args.num_envs, "num_steps": args.num_steps,
                 "workers": workers, "eval_every": 0, "checkpoint_every": 0, "eval_episodes": 1, "eval_envs": 1,
                 "progress": False, "tensorboard": False, "runs_dir": runs_dir, "compile_loss": False}
    run, cfg = resolve_config("ppo", env_id, overrides)
    start = time.perf_counter()
    result = train(run, cfg)
    wall = time.perf_counter() - start
    rows = [r for r in csv.DictReader(open(result.run_dir / "progress.csv")) if r.get("perf/steps_per_sec")]
    steady = rows[1:] or rows
    seconds = sum(_steps(rows, r) / float(r["perf/steps_per_sec"]) for r in steady)
    shares = {key.split("/")[1]: statistics.median(float(r[key]) for r in steady)
              for key in steady[0] if key.startswith("perf/share_") and all(r.get(key) for r in steady)}
    return {"steps_per_sec": sum(_steps(rows, r) for r in steady) / seconds, "wall_s": wall, "shares": shares}


def _steps(rows: list[dict], row: dict) -> float:
    """Env steps of the iteration a progress row logged (the step column's difference to the row before)."""
    i = rows.index(row)
    return float(row["step"]) - (float(rows[i - 1]["step"]) if i else 0.0)


def amdahl(update_share: float, overhead_share: float, workers: list[int]) -> dict:
    """Speedup <= 1 / (update share + overhead share + collection share / W) for W workers."""
    collection = max(0.0, 1.0 - update_share)
    return {str(w): 1.0 / (update_share + overhead_share + collection / w) for w in workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32_768, help="env steps per training run")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=256, help="steps per env per iteration")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--envs", default=f"HalfCheetah-v5,{SLOW_ENV}")
    parser.add_argument("--calls", type=int, default=20, help="round trips per transfer-cost measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "remote_workers.json")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    env_ids = args.envs.split(",")

    # Ray's workers import this file (the slow env) and rlkit2 from the checkout
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    from rlkit2.device import cpu_count
    from rlkit2.ray_local import init_ray

    print(init_ray(num_cpus=max(cpu_count(), max(workers))), flush=True)
    import ray

    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    from benchlib import source_commit

    k = args.num_envs // max(1, max(workers))
    costs = transfer_costs(max(1, max(workers)), args.num_steps, k, args.calls)
    print(f"transfer: {json.dumps(costs['median'])}", flush=True)
    runs: dict[str, dict[str, list[dict]]] = {env: {str(w): [] for w in workers} for env in env_ids}
    with tempfile.TemporaryDirectory(prefix="remote_workers_") as runs_dir:
        for repeat in range(args.repeats):
            for env_id in env_ids:
                for w in workers:
                    out = train_rate(env_id, w, args, runs_dir)
                    runs[env_id][str(w)].append(out)
                    print(f"repeat {repeat} {env_id} W={w}: {out['steps_per_sec']:.0f} steps/s "
                          f"{json.dumps({k: round(v, 3) for k, v in out['shares'].items()})}", flush=True)
    medians, scaling = {}, {}
    for env_id in env_ids:
        medians[env_id] = {w: statistics.median(r["steps_per_sec"] for r in rs) for w, rs in runs[env_id].items()}
        if "0" in runs[env_id]:
            update = statistics.median(r["shares"].get("share_update", 0.0) for r in runs[env_id]["0"])
            scaling[env_id] = {"update_share_w0": update, "bound_without_overhead": amdahl(update, 0.0, [2, 16, 64])}
    result = {
        "command": "python scripts/bench/remote_workers.py " + " ".join(sys.argv[1:]),
        "commit": source_commit(), "ray": ray.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"steps": args.steps, "num_envs": args.num_envs, "num_steps": args.num_steps, "workers": workers,
                     "repeats": args.repeats},
        "transfer": costs, "runs": runs, "median_steps_per_sec": medians, "amdahl": scaling,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"median_steps_per_sec": medians, "transfer": costs["median"]}), flush=True)


if __name__ == "__main__":
    main()
