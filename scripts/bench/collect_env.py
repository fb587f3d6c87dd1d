#!/usr/bin/env python
"""Collect env stepping speed: the batched numpy backend vs gymnasium's sync vector of single envs.

    python scripts/bench/collect_env.py [--envs-per-batch 1 16 64] [--seconds 3] [--out docs/bench/collect_env.json]

Random options (pre-sampled, so sampling is not timed) through envs.make for both Collect ids (the paper's
10x10 maze, 8 goals, 20 steps) on both backends; option-steps/s (one option = one agent decision; it may take
several primitive moves). Episodes reset automatically inside the timed loop, as in training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchlib import raw_env_rate  # noqa: E402

IDS = ("rlkit2/Collect-v0", "rlkit2/CollectStochastic-v0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs-per-batch", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "docs" / "bench" / "collect_env.json")
    args = parser.parse_args()
    rows = []
    for env_id in IDS:
        for n in args.envs_per_batch:
            row = {"env": env_id, "envs": n}
            for backend in ("batched", "sync"):
                row[backend] = raw_env_rate(env_id, backend, n, args.seconds)  # one step = one option
            row["speedup"] = row["batched"] / row["sync"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}",
           "command": "python " + " ".join(sys.argv), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
