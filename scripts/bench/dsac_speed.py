#!/usr/bin/env python
"""Speed benchmark: rlkit2 DSAC-T vs Stable-Baselines3 SAC and Tianshou SAC at one update per env step, same sizes.

    python scripts/bench/dsac_speed.py --env HalfCheetah-v5 --steps 1000 --threads 1 2 \
        --out docs/bench/dsac_speed.json

rlkit2 runs twice: its update eager (``rlkit2``) and compiled (``rlkit2-compiled``: ``--compile_update``, the
whole update as two torch.compile graphs, compiled in untimed first updates). ``--repeats N`` runs every library
N times, alternating, each run in its own process; the summary gives medians and the record every run.

Both: one env, 3x256 GELU actor and critics, batch 256, after a 1000-step warm-up; we time --steps env
steps with their updates (so updates/s = env steps/s). DSAC-T does more work per update than SAC (a target
policy forward, two return-distribution heads) but updates the actor every second step (delay 2). Run on a
quiet machine: the numbers are wall-clock rates. Tianshou 2's SAC runs beside SB3's where it is installed
(scripts/bench/tianshou_peer.py lists what differs); without it the script says so and runs the rest.

Near the hardware limit? For rlkit2 the same run also counts the FLOPs of an update (torch's FlopCounterMode:
the matmuls of every forward and backward pass, averaged over ``delay`` updates so that the delayed policy update
counts in its share) and times dense matmuls at the update's hidden-layer shapes on the same thread count: the
update's achieved FLOP/s (FLOPs per update x updates/s) is reported against that measured matmul rate.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, also when imported by a test
WARMUP = 1000

import tianshou_peer  # noqa: E402  (beside this script)
from benchlib import median_row, timed_dsac  # noqa: E402


def time_rlkit2(env_id: str, steps: int, threads: int, compiled: bool = False) -> dict:
    agent, timing = timed_dsac(env_id, steps, WARMUP, {"threads_update": threads, "hidden": "256,256,256",
                                                       "activation": "gelu", "compile_update": compiled})
    flops = update_flops(agent)
    peak = matmul_rate(agent.cfg.batch_size, agent.cfg.hidden[-1], agent.num_critics)
    achieved = flops * timing["updates"] / timing["update_seconds"]  # the update phase's own FLOP/s
    return {"steps_per_sec": timing["steps_per_sec"], "updates_per_sec": timing["updates_per_sec"],
            "share_update": timing["share_update"], "gflop_per_update": flops / 1e9,
            "update_gflop_per_sec": achieved / 1e9, "matmul_gflop_per_sec": peak / 1e9,
            "update_share_of_matmul_rate": achieved / peak, "first_updates_seconds": timing["first_updates_seconds"]}


def update_flops(agent, batches: int | None = None) -> float:
    """FLOPs of one DSAC update as torch's FlopCounterMode counts them (matmuls, forward and backward), averaged
    over ``batches`` updates (default: the policy delay, so the delayed policy update counts in its share). It
    takes those updates: call it after the timed part."""
    from torch.utils.flop_counter import FlopCounterMode

    batches = batches or agent.cfg.delay
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(batches):
            agent.update(agent.replay.sample(agent.cfg.batch_size))
    return counter.get_total_flops() / batches


def matmul_rate(batch: int, hidden: int, ensemble: int, seconds: float = 1.0) -> float:
    """The best dense-matmul rate (FLOP/s) at the update's hidden-layer shapes on the current thread count: the
    policy's [B, H] @ [H, H] and the critic ensemble's batched [E, B, H] @ [E, H, H] (their backward products have
    the same sizes when B = H, as at the default 256 x 256). These layers are almost all of an update's FLOPs."""
    import torch

    best = 0.0
    for shape_a, shape_b, op in (((batch, hidden), (hidden, hidden), torch.mm),
                                 ((ensemble, batch, hidden), (ensemble, hidden, hidden), torch.bmm)):
        a, b = torch.randn(*shape_a), torch.randn(*shape_b)
        out = op(a, b)
        flops = 2 * out.numel() * hidden
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            for _ in range(20):
                op(a, b, out=out)
            calls += 20
        best = max(best, flops * calls / (time.perf_counter() - start))
    return best


def time_sb3(env_id: str, steps: int, threads: int) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    torch.set_num_threads(threads)
    model = SAC("MlpPolicy", gym.make(env_id), seed=0, device="cpu", learning_starts=WARMUP, batch_size=256,
                policy_kwargs={"net_arch": [256, 256, 256], "activation_fn": torch.nn.GELU})
    model.learn(WARMUP + 1)
    updates = model._n_updates
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    return {"steps_per_sec": steps / seconds, "updates_per_sec": (model._n_updates - updates) / seconds}


def time_tianshou(env_id: str, steps: int, threads: int) -> dict:
    return tianshou_peer.sac_rate(env_id, steps, threads, WARMUP)


TIMERS = {"rlkit2": time_rlkit2, "rlkit2-compiled": lambda *args: time_rlkit2(*args, compiled=True),
          "sb3": time_sb3, "tianshou": time_tianshou}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--libs", nargs="+", choices=list(TIMERS), default=list(TIMERS),
                        help="what to time (default: all; tianshou where it is installed)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each library, alternating")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "dsac_speed.json")
    parser.add_argument("--single", nargs=2, metavar=("LIB", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:  # one measurement per process: no shared torch state between libraries
        print(json.dumps(TIMERS[args.single[0]](args.env, args.steps, int(args.single[1]))))
        return
    libs = args.libs
    if "tianshou" in libs and not tianshou_peer.available():
        print("tianshou is not installed: its SAC is left out (pip install -e '.[bench]' installs it)", flush=True)
        libs = [lib for lib in libs if lib != "tianshou"]
    rows = []
    for repeat in range(args.repeats):
        for threads in args.threads:
            for lib in libs:
                out = subprocess.run([sys.executable, __file__, "--single", lib, str(threads), "--env", args.env,
                                      "--steps", str(args.steps)], check=True, capture_output=True, text=True).stdout
                row = {"lib": lib, "threads": threads, "repeat": repeat, **json.loads(out.strip().splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), flush=True)
    for threads in args.threads:
        median = {lib: median_row([r for r in rows if r["lib"] == lib and r["threads"] == threads]) for lib in libs}
        line = [f"threads={threads} (medians of {args.repeats} run(s)):"]
        for mine in (lib for lib in ("rlkit2", "rlkit2-compiled") if lib in median):
            peers = "".join(f", {median[mine]['steps_per_sec'] / median[peer]['steps_per_sec']:.2f}x {peer} SAC"
                            for peer in ("sb3", "tianshou") if peer in median)
            line.append(f"  {mine}: {median[mine]['steps_per_sec']:.1f} steps/s{peers}; update "
                        f"{median[mine]['update_gflop_per_sec']:.1f} GFLOP/s = "
                        f"{median[mine]['update_share_of_matmul_rate']:.0%} of the "
                        f"{median[mine]['matmul_gflop_per_sec']:.1f} GFLOP/s dense matmuls reach at its layer shapes "
                        f"({median[mine]['gflop_per_update']:.3f} GFLOP per update)")
        print("\n".join(line))
    import torch

    record = {"env": args.env, "steps": args.steps, "warmup": WARMUP, "repeats": args.repeats, "rows": rows,
              "torch": torch.__version__,
              "machine": f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
