#!/usr/bin/env python
"""PPO training speed on Atari (ALE/Pong-v5 x 8, the Atari preset's Nature-CNN) by update threads and CNN
precision (fp32, or bf16 autocast: ``--cnn_precision bf16``), alternating the variants over repeats so they see
the same machine state.

    python scripts/bench/atari_speed.py [--steps 20480] [--repeats 2] [--out docs/bench/atari_speed.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).parent))

from throughput import rlkit2_atari_rate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20480, help="agent steps per measurement (8 envs x 128 each)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--out", type=Path, default=Path("docs/bench/atari_speed.json"))
    args = parser.parse_args()
    cpu_flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                                 "avx512_bf16": "avx512_bf16" in cpu_flags, "amx_bf16": "amx_bf16" in cpu_flags},
                     "command": " ".join(sys.argv), "runs": {}}
    for repeat in range(args.repeats):
        for threads, precision in itertools.product(args.threads, args.precisions):
            name = f"threads_update={threads}, cnn_precision={precision}"
            out = rlkit2_atari_rate(args.steps, threads, precision)
            results["runs"].setdefault(name, []).append(out)
            print(f"{name} repeat {repeat}: " + ", ".join(f"{k} {v:.3g}" for k, v in out.items()), flush=True)
    results["median_steps_per_sec"] = {name: float(np.median([r["steps_per_sec"] for r in runs]))
                                       for name, runs in results["runs"].items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
