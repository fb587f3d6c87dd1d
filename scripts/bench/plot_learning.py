#!/usr/bin/env python
"""Plot learning curves (mean +- std over seeds per config) from benchmark records (JSON lines) or a sweep's
results.json (each trial named by its config; --curve takes a logged metric, e.g. eval/success_rate).

    python scripts/bench/plot_learning.py docs/bench/learning.jsonl docs/learning_curves.png [--key lib]
        [--hline ENV=VALUE --hline-label "random policy"] [--only NAME ...] [--curve success_curve]
    python scripts/bench/plot_learning.py docs/bench/sweeps/ppo_mujoco.json docs/ppo_mujoco_curves.png
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from benchlib import record_name  # noqa: E402


def group_curves(records: list[dict], key: str, only: list[str] | None, curve: str) -> dict[str, dict[str, list]]:
    """{env: {name: [one curve per seed]}} for the records whose ``key`` is in ``only`` (all when None)."""
    by_env: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if only is None or record_name(r, key) in only:
            by_env[r["env"]][record_name(r, key)].append(r[curve])
    return by_env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("jsonl", type=Path, help="records (.jsonl) or a sweep's results.json")
    parser.add_argument("png", type=Path)
    parser.add_argument("--key", default="lib", help="record field that names a curve (lib, variant), or fields joined by '+' (variant+commit)")
    parser.add_argument("--ylabel", default="deterministic eval return")
    parser.add_argument("--hline", action="append", default=[], metavar="ENV=VALUE",
                        help="a dashed reference line in that env's panel (e.g. a random policy's return)")
    parser.add_argument("--hline-label", default="reference")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="plot only the curves with these names")
    parser.add_argument("--curve", default="curve", help="record field with the (step, value) pairs to plot")
    args = parser.parse_args()
    hlines = {env: float(value) for env, value in (item.rsplit("=", 1) for item in args.hline)}
    if args.jsonl.suffix == ".json":  # a sweep's results.json: one record per trial, named by its config
        trials = json.loads(args.jsonl.read_text())["trials"]
        records = [{"env": t["env"], "config": t["config"] if t["config"] != "default" else t["agent"],
                    "curve": t["curve"], **t.get("curves", {})} for t in trials if t["curve"]]
        args.key = "config"
        args.curve = "curve" if args.curve in ("curve", "eval/return_mean") else args.curve
    else:
        records = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]
    by_env = group_curves([r for r in records if args.curve in r], args.key, args.only, args.curve)
    if not by_env:
        raise SystemExit(f"no records in {args.jsonl} with {args.key} in {args.only}")
    fig, axes = plt.subplots(1, len(by_env), figsize=(6 * len(by_env), 4), squeeze=False)
    # one colour per name in every panel, so a curve keeps its colour across envs
    names = sorted({name for groups in by_env.values() for name in groups})
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    for ax, (env, groups) in zip(axes[0], sorted(by_env.items())):
        for name, curves in sorted(groups.items()):
            steps = sorted({s for c in curves for s, _ in c})
            grid = np.array([[dict(c).get(s, np.nan) for s in steps] for c in curves], dtype=float)
            mean, std = np.nanmean(grid, 0), np.nanstd(grid, 0)
            seeds = f"{len(curves)} seed" + ("s" if len(curves) > 1 else "")
            ax.plot(steps, mean, color=colours[name], label=textwrap.fill(f"{name} ({seeds})", 60))  # long names wrap
            ax.fill_between(steps, mean - std, mean + std, color=colours[name], alpha=0.2)
        if env in hlines:
            ax.axhline(hlines[env], color="gray", linestyle="--", label=args.hline_label)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel(args.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: never over a curve
    fig.subplots_adjust(wspace=0.3)  # no tight_layout: it would shrink the axes to fit the legends below them
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110, bbox_inches="tight")
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
