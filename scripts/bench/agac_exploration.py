#!/usr/bin/env python
"""Exploration benchmark: AGAC vs PPO on hard-exploration MiniGrid tasks, same network, batch, budget and seeds.

    python scripts/bench/agac_exploration.py --envs MiniGrid-KeyCorridorS3R2-v0 MiniGrid-MultiRoom-N2-S4-v0 \
        --seeds 0 1 2 --steps 2000000 --jobs 2 --out docs/bench/agac_exploration.jsonl
    python scripts/bench/plot_learning.py docs/bench/agac_exploration.jsonl docs/agac_exploration.png --key lib \
        --ylabel "eval return (sampled actions)"

Both agents run their MiniGrid presets (agents/presets/agac.toml, ppo.toml): 8 envs x 256 steps per rollout,
separate grid-CNN towers, 4 epochs of minibatches of 256, Adam 3e-4, clip 0.2, entropy 0.01, GAE 0.95; AGAC adds
the adversary, c = 4e-4 decaying, and the official episodic count bonus 0.1 (its MiniGrid setup). Evaluation
every --eval-every steps: 20 episodes with sampled actions on separate envs; success = a positive return (the
goal was reached). Each run appends one JSON line: its curve of (step, mean return, success rate) and its
training steps/s (the adversary's overhead, side by side with PPO under the same load).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from benchlib import append_record, column, run_jobs, train_to_completion  # noqa: E402


def run_one(agent: str, env_id: str, seed: int, steps: int, eval_every: int, options: list[str] | None = None,
            label: str | None = None) -> dict:
    options = options or []
    _, _, rows, seconds = train_to_completion(agent, env_id, {
        "seed": seed, "total_steps": steps, "eval_every": eval_every, "threads_update": 1,
        **dict(item.split("=", 1) for item in options)})
    curve = column(rows, "eval/return_mean", "eval/success_rate")
    sps = [v for _, v in column(rows, "perf/steps_per_sec")]
    return {"lib": label or agent, "env": env_id, "seed": seed, "steps": steps, "overrides": options, "curve": [(s, r) for s, r, _ in curve],
            "success_curve": [(s, v) for s, _, v in curve], "final": curve[-1][1], "final_success": curve[-1][2],
            "steps_per_sec": float(np.median(sps)), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", nargs="+", default=["MiniGrid-KeyCorridorS3R2-v0", "MiniGrid-MultiRoom-N2-S4-v0"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--agents", nargs="+", default=["agac", "ppo"])
    parser.add_argument("--steps", type=int, default=2_000_000)
    parser.add_argument("--eval-every", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one core each)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "agac_exploration.jsonl")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an option for every run (ablations, e.g. count_bonus=0), with --label")
    parser.add_argument("--label", help="the name of the runs in the record and tables (default: the agent)")
    parser.add_argument("--single", nargs=3, metavar=("AGENT", "ENV", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.single:
        record = run_one(args.single[0], args.single[1], int(args.single[2]), args.steps, args.eval_every,
                         args.set, args.label)
        append_record(args.out, record)
        return
    # seed-major: each seed's AGAC/PPO pair finishes before the next seed starts
    jobs = [(agent, env, seed) for seed, env, agent in itertools.product(args.seeds, args.envs, args.agents)]
    extra = [x for item in args.set for x in ("--set", item)] + (["--label", args.label] if args.label else [])
    run_jobs([[sys.executable, __file__, "--single", agent, env, str(seed), "--steps", str(args.steps),
               "--eval-every", str(args.eval_every), "--out", str(args.out)] + extra for agent, env, seed in jobs],
             args.jobs)


if __name__ == "__main__":
    main()
