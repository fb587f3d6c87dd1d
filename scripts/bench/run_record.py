#!/usr/bin/env python
"""Turn a finished ``scripts/train.py`` run into a benchmark record: for long single runs (PPO on Pong) that are
trained with the train script itself, so that they can be resumed across sessions.

    python scripts/bench/run_record.py runs/ppo-pong-10Mframes-bf16-s0 --out docs/bench/atari_pong.jsonl

The record holds the evaluation curve (deterministic evaluations on separate envs), the training episodes'
returns (raw per-game score, averaged over 20k-step windows), the median training steps/s, the training time
(``seconds``: the iterations' times, evaluations and checkpoints left out) and the run's whole
resolved config, with the commit the run's (last) session ran on (``run_commit``, from its config.json) beside
the commit this script runs on (``commit``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).parent))

from benchlib import append_record, column  # noqa: E402


def run_record(run_dir: Path, window: int = 20_000) -> dict:
    from rlkit2.logger import read_progress

    config = json.loads((run_dir / "config.json").read_text())
    rows = read_progress(run_dir)
    evals = column(rows, "eval/return_mean")
    if not (run_dir / "checkpoints" / "final.pt").exists() or not evals:
        raise SystemExit(f"{run_dir} has not finished (no final checkpoint or no evaluation): nothing recorded. "
                         f"Resume it with: python scripts/train.py --resume {run_dir}")
    episodes = column(rows, "charts/episode_return")
    last = int(rows[-1]["step"])
    edges = list(range(0, last, window)) + [last]  # windows labelled by their end; the last ends with the run
    if len(edges) > 2 and last - edges[-2] < window // 2:
        del edges[-2]  # a short last window (a handful of episodes) joins the one before it
    train_curve = []
    for start, end in zip(edges, edges[1:]):
        chunk = [ret for step, ret in episodes if start < step <= end]
        if chunk:
            train_curve.append((end, float(np.mean(chunk))))
    run = config["run"]
    rates = column(rows, "perf/steps_per_sec")
    steps = [0] + [step for step, _ in rates]
    training_seconds = sum((now - before) / rate for before, (now, rate) in zip(steps, rates))
    return {"run": run["run_name"], "agent": config["agent"], "env": run["env"], "seed": run["seed"],
            "steps": last, "curve": evals, "train_curve": train_curve, "final": evals[-1][1],
            "best": max(v for _, v in evals),
            "steps_per_sec": float(np.median([v for _, v in rates])), "seconds": training_seconds,
            "run_commit": config.get("source", {}).get("commit", "not recorded"), "config": config}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run-commit", help="the commit the run trained on, for runs whose config.json predates "
                                             "the 'source' entry")
    args = parser.parse_args()
    record = run_record(args.run_dir)
    if args.run_commit:
        if record["run_commit"] != "not recorded":
            parser.error(f"{args.run_dir} records its commit ({record['run_commit']}); drop --run-commit")
        record["run_commit"] = args.run_commit
    append_record(args.out, record)


if __name__ == "__main__":
    main()
