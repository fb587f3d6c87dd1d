#!/usr/bin/env python
"""What Ray adds to a sweep on this machine: starting a local Ray (on 127.0.0.1), the memory of an idle local
Ray, and the wall time per trial of a sweep of short trials on Ray against the same trials run --serial.

    python scripts/bench/ray_overhead.py --repeats 3 --trials 4 --out docs/bench/ray_overhead.json

Alternating repeats (Ray, serial, Ray, serial ...), medians, every repeat listed. Each sweep is a fresh
scripts/sweep.py process (Ray's start-up and worker processes included), on PPO CartPole-v1 trials of
--trial-steps steps, one trial at a time on Ray too (--max-concurrent 1), so the difference is Ray's cost and
not parallelism. Linux only (memory from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def ray_processes_rss_mb() -> float:
    """Resident memory of every process whose command line names Ray's parts (raylet, gcs_server, workers...)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
            if not any(k in cmd for k in ("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard")):
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def start_local_ray() -> dict:
    """One fresh process: time ray.init (as scripts/sweep.py starts it) and measure the idle cluster."""
    code = ("import time, json; from rlkit2.sweep_ray import init_ray; import ray; t = time.perf_counter(); "
            "init_ray(num_cpus=2); t = time.perf_counter() - t; time.sleep(3); "
            "import scripts.bench.ray_overhead as m; print(json.dumps({'init_s': t, 'idle_rss_mb': m.ray_processes_rss_mb()})); "
            "ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep_seconds(root: Path, name: str, trials: int, steps: int, serial: bool) -> float:
    seeds = f"0-{trials - 1}"
    cmd = [sys.executable, str(ROOT / "scripts" / "sweep.py"), "--name", name, "--root", str(root), "--agent", "ppo",
           "--env", "CartPole-v1", "--seeds", seeds, "--set", f"total_steps={steps}", "--set", "eval_every=0",
           "--set", "eval_episodes=2", "--set", "eval_envs=2", "--set", "num_envs=2", "--set", "num_steps=128",
           "--set", "tensorboard=false"] + (["--serial"] if serial else ["--max-concurrent", "1"])
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--trial-steps", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "ray_overhead.json")
    args = parser.parse_args()
    starts, ray_runs, serial_runs = [], [], []
    root = Path(tempfile.mkdtemp(prefix="ray_overhead_"))
    try:
        for i in range(args.repeats):
            starts.append(start_local_ray())
            ray_runs.append(sweep_seconds(root, f"ray{i}", args.trials, args.trial_steps, serial=False))
            serial_runs.append(sweep_seconds(root, f"serial{i}", args.trials, args.trial_steps, serial=True))
            print(f"repeat {i}: start {starts[-1]}, ray sweep {ray_runs[-1]:.1f} s, serial {serial_runs[-1]:.1f} s",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ray_median, serial_median = statistics.median(ray_runs), statistics.median(serial_runs)
    result = {
        "command": "python scripts/bench/ray_overhead.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "ray": __import__("ray").__version__, "trials": args.trials, "trial_steps": args.trial_steps,
        "init_s": [s["init_s"] for s in starts], "idle_rss_mb": [s["idle_rss_mb"] for s in starts],
        "ray_sweep_s": ray_runs, "serial_sweep_s": serial_runs,
        "median": {"init_s": statistics.median(s["init_s"] for s in starts),
                   "idle_rss_mb": statistics.median(s["idle_rss_mb"] for s in starts),
                   "ray_sweep_s": ray_median, "serial_sweep_s": serial_median,
                   "extra_s_per_trial": (ray_median - serial_median) / args.trials,
                   # what remains per trial once Ray's start-up is taken out: a worker process per trial
                   "extra_s_per_trial_after_start": (ray_median - serial_median
                                                     - statistics.median(s["init_s"] for s in starts)) / args.trials},
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["median"]))


if __name__ == "__main__":
    main()
