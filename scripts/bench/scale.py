#!/usr/bin/env python
"""Cost with scale (issue 25, item 6): PPO steps/s vs the number of envs and DSAC updates/s vs the batch size, so
a user can see where each path saturates.

    python scripts/bench/scale.py --out docs/bench/scale.jsonl --plot docs/bench/scale.png
    python scripts/bench/scale.py --smoke --out /tmp/s.jsonl --plot /tmp/s.png   # seconds; what the tests run

PPO: HalfCheetah-v5 with its preset (compile_loss off) and N envs (1, 8, 32, 128); the transitions per iteration
stay 2048 (num_steps = 2048 / N), so the update's cost is the same at every N and what changes is collection:
one batched forward for N envs per step. Rates from the second iteration on; each phase's share is recorded.
DSAC-T: HalfCheetah-v5, 3x256, one update per env step, batch sizes 64 ... 4096: updates/s and samples/s.
``--repeats`` alternates the whole sweep; every repeat is recorded and the plot shows medians. One JSON record
(benchlib.append_record) per run; the plot is redrawn from that record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from benchlib import append_record, dsac_rate, ppo_rate  # noqa: E402

FULL = {"envs": (1, 8, 32, 128), "batch": 2048, "iterations": 3, "batch_sizes": (64, 256, 1024, 4096),
        "dsac_steps": 300, "dsac_warmup": 4096, "hidden": "256,256,256"}
SMOKE = {"envs": (1, 2), "batch": 32, "iterations": 2, "batch_sizes": (8, 16), "dsac_steps": 10,
         "dsac_warmup": 16, "hidden": "16,16"}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got '{text}'")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "scale.jsonl")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "bench" / "scale.png")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--envs", type=_ints, help="PPO env counts (default 1,8,32,128)")
    parser.add_argument("--batch-sizes", type=_ints, help="DSAC batch sizes (default 64,256,1024,4096)")
    parser.add_argument("--backend", default="sync", help="PPO's vector-env backend (default sync)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = dict(SMOKE if args.smoke else FULL)
    sizes["envs"] = args.envs or sizes["envs"]
    sizes["batch_sizes"] = args.batch_sizes or sizes["batch_sizes"]
    bad = [n for n in sizes["envs"] if sizes["batch"] % n]
    if bad:
        parser.error(f"--envs {','.join(map(str, bad))}: each must divide the {sizes['batch']} transitions per "
                     "iteration (num_steps = transitions / envs)")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    args.sizes = sizes
    return args


def measure(args: argparse.Namespace) -> dict:
    sizes = args.sizes
    ppo: dict[str, list[dict]] = {}
    dsac: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for n in sizes["envs"]:
            num_steps = sizes["batch"] // n
            overrides = {"num_envs": n, "num_steps": num_steps, "backend": args.backend, "device": args.device,
                         "compile_loss": False, "minibatch_size": min(64, sizes["batch"])}
            if args.smoke:
                overrides.update({"epochs": 1, "policy_hidden": "16", "value_hidden": "16"})
            row = ppo_rate("HalfCheetah-v5", sizes["iterations"] * sizes["batch"], overrides)
            ppo.setdefault(str(n), []).append(row)
            print(f"repeat {repeat} PPO {n:4d} envs: {row['steps_per_sec']:8.0f} steps/s", flush=True)
        for batch in sizes["batch_sizes"]:
            row = dsac_rate("HalfCheetah-v5", sizes["dsac_steps"], max(sizes["dsac_warmup"], batch),
                            {"batch_size": batch, "hidden": sizes["hidden"], "device": args.device,
                             "compile_update": False})
            row["samples_per_sec"] = row["updates_per_sec"] * batch
            dsac.setdefault(str(batch), []).append(row)
            print(f"repeat {repeat} DSAC batch {batch:5d}: {row['updates_per_sec']:8.1f} updates/s", flush=True)
    return {"ppo_vs_envs": ppo, "dsac_vs_batch": dsac}


def medians(rows: dict[str, list[dict]], key: str) -> tuple[list[int], list[float]]:
    import numpy as np

    xs = sorted(rows, key=int)
    return [int(x) for x in xs], [float(np.median([r[key] for r in rows[x]])) for x in xs]


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs, ys = medians(record["ppo_vs_envs"], "steps_per_sec")
    left.plot(xs, ys, "o-")
    left.set(xscale="log", xlabel="envs (2048 transitions per iteration)", ylabel="PPO env steps/s",
             title=f"PPO, HalfCheetah-v5, backend {record['backend']}")
    xs, ys = medians(record["dsac_vs_batch"], "updates_per_sec")
    right.plot(xs, ys, "o-", label="updates/s")
    right.set(xscale="log", xlabel="batch size", ylabel="DSAC-T updates/s", title="DSAC-T, HalfCheetah-v5")
    twin = right.twinx()
    twin.plot(xs, [x * y for x, y in zip(xs, ys)], "s--", color="tab:orange", label="samples/s")
    twin.set_ylabel("samples/s (updates/s x batch)")
    fig.suptitle(f"device {record['device']}, {record['machine']}, commit {record.get('commit', '?')}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import os
    import platform

    import torch

    args = parse_args(argv)
    torch.set_num_threads(1)
    record = {"smoke": args.smoke, "backend": args.backend, "device": args.device, "repeats": args.repeats,
              "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in args.sizes.items()},
              "machine": f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                         f"torch {torch.__version__}",
              **measure(args)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    append_record(args.out, record)
    from benchlib import read_records

    plot(read_records(args.out)[-1], args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
