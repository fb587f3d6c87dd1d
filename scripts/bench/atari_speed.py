#!/usr/bin/env python
"""PPO training speed on Atari (ALE/Pong-v5 x 8, the Atari preset's Nature-CNN) by update threads, CNN
precision (fp32, or bf16 autocast: ``--cnn_precision bf16``) and collection pipeline (``--collect_pipeline``: the
envs in two halves, each stepping while the policy acts on the other), beside SB3 PPO with the zoo's Atari settings, all
variants alternating over repeats so they see the same machine state. In the same run: the update's achieved
FLOP/s against this machine's rate on the Nature-CNN's own layer shapes and its dense-GEMM rate
(scripts/bench/cnn_peak.py), per thread count.

    python scripts/bench/atari_speed.py [--steps 20480] [--repeats 2] [--precisions fp32] [--pipelines false true]
                                        [--compile true] [--no-sb3]
                                        [--out docs/bench/atari_speed.json]
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

from cnn_peak import gemm_peak, nature_cnn_layers, shape_peak  # noqa: E402
from throughput import rlkit2_atari_rate, sb3_atari_rate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20480, help="agent steps per measurement (8 envs x 128 each)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--pipelines", nargs="+", default=["false", "true"], choices=["false", "true"],
                        help="--collect_pipeline values: envs stepped in two halves, overlapping the policy")
    parser.add_argument("--compile", nargs="+", default=["true"], choices=["false", "true"],
                        help="--compile_loss values (the preset compiles the minibatch step)")
    parser.add_argument("--no-sb3", action="store_true", help="leave out SB3 PPO (the peer)")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/atari_speed.json"))
    args = parser.parse_args()
    cpu_flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    model = next((line.split(":", 1)[1].strip() for line in cpu_flags.splitlines() if line.startswith("model name")),
                 platform.processor())
    results: dict = {"machine": {"cpus": os.cpu_count(), "cpu": model, "platform": platform.platform(),
                                 "torch": torch.__version__, "avx512_bf16": "avx512_bf16" in cpu_flags,
                                 "amx_bf16": "amx_bf16" in cpu_flags},
                     "command": " ".join(sys.argv), "runs": {}, "peak": {}}
    variants = {f"rlkit2 threads_update={t}, cnn_precision={p}" + (", collect_pipeline" if c == "true" else "")
                + (", eager" if e == "false" else ""):
                (lambda t=t, p=p, c=c, e=e: rlkit2_atari_rate(args.steps, t, p, c == "true", e == "true"))
                for t, p, c, e in itertools.product(args.threads, args.precisions, args.pipelines, args.compile)}
    if not args.no_sb3:
        variants.update({f"sb3 threads={t}": (lambda t=t: sb3_atari_rate(args.steps, t)) for t in args.threads})
    for repeat in range(args.repeats):
        for name, run in variants.items():
            out = run()
            results["runs"].setdefault(name, []).append(out)
            print(f"{name} repeat {repeat}: " + ", ".join(f"{k} {v:.3g}" for k, v in out.items()), flush=True)
        for threads in args.threads:  # the ceilings, measured between the runs too
            peak = {**shape_peak(nature_cnn_layers(actions=6), 256, threads), "gemm_gflops_per_sec": gemm_peak(threads)}
            results["peak"].setdefault(f"threads={threads}", []).append(peak)
            print(f"peak threads={threads} repeat {repeat}: Nature-CNN shapes {peak['gflops_per_sec']:.1f} GFLOP/s, "
                  f"dense GEMM {peak['gemm_gflops_per_sec']:.1f} GFLOP/s", flush=True)
    median = {name: {key: float(np.median([r[key] for r in runs])) for key in ("steps_per_sec", "update_gflops_per_sec")}
              for name, runs in results["runs"].items()}
    peaks = {name: {key: float(np.median([r[key] for r in runs])) for key in ("gflops_per_sec", "gemm_gflops_per_sec")}
             for name, runs in results["peak"].items()}
    results["median"], results["median_peak"] = median, peaks
    print("\nsummary (medians)")
    for name, m in median.items():
        threads = int(name.split("threads_update=" if name.startswith("rlkit2") else "threads=")[1].split(",")[0])
        peak = peaks[f"threads={threads}"]
        sb3 = median.get(f"sb3 threads={threads}")
        vs = f" = {m['steps_per_sec'] / sb3['steps_per_sec']:.2f}x SB3" if sb3 and not name.startswith("sb3") else ""
        print(f"{name:45s} {m['steps_per_sec']:6.0f} steps/s{vs}; update {m['update_gflops_per_sec']:.1f} GFLOP/s = "
              f"{m['update_gflops_per_sec'] / peak['gflops_per_sec']:.0%} of the shapes' rate, "
              f"{m['update_gflops_per_sec'] / peak['gemm_gflops_per_sec']:.0%} of dense GEMM")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
