"""A sweep's curves.png: one panel per env, one line per config (the mean over its seeds) with a 95% bootstrap
confidence band, drawn by rlkit2/curves.py. Needs matplotlib (the plot extra, also in ray and bench); without it
``rlkit2.sweep_cli`` skips the plot and says how to install it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlkit2.curves import plot_panels


def plot_curves(rows: list[dict[str, Any]], out: Path, metric: str = "eval/return_mean") -> Path:
    """``rows``: the sweep's trial results (rlkit2.sweep.trial_result), each with its ``curve`` of ``metric``."""
    several_agents = len({r["agent"] for r in rows}) > 1
    panels: dict[str, dict[str, list]] = {env: {} for env in sorted({r["env"] for r in rows})}
    for r in rows:
        if r["curve"]:
            name = f"{r['agent']} {r['config']}" if several_agents else r["config"]
            panels[r["env"]].setdefault(name, []).append(r["curve"])
    return plot_panels(panels, out, band="ci", ylabel=metric)
