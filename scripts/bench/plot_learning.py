#!/usr/bin/env python
"""Plot learning curves (mean +- std over seeds per config, drawn by rlkit2/curves.py) from benchmark records (JSON
lines) or a sweep's results.json (each trial named by its config; --curve takes a logged metric, e.g.
eval/success_rate).

    python scripts/bench/plot_learning.py docs/bench/learning.jsonl docs/learning_curves.png [--key lib]
        [--hline ENV=VALUE --hline-label "random policy"] [--only NAME ...] [--curve success_curve]
    python scripts/bench/plot_learning.py docs/bench/sweeps/ppo_mujoco.json docs/ppo_mujoco_curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from benchlib import ROOT, record_name

sys.path.insert(0, str(ROOT))  # rlkit2 from this checkout
from rlkit2.curves import plot_panels  # noqa: E402


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
    # the docs' figures say "mean ± std over seeds": this script keeps that band (rlkit2 plot defaults to a CI)
    plot_panels(dict(sorted(by_env.items())), args.png, band="std", ylabel=args.ylabel, hlines=hlines,
                hline_label=args.hline_label, dpi=110)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
