"""Learning curves of many runs: one panel per env, one line per config (mean over its seeds) with a 95% bootstrap
confidence band. Needs matplotlib (the bench extra); ``rlkit2.sweep_cli`` skips the plot without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def mean_and_band(curves: list[list[tuple[int, float]]], reps: int = 1000, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps, the mean over seeds and a 95% percentile-bootstrap band, on the steps every curve has reached
    (seeds are interpolated onto the first curve's evaluation steps)."""
    curves = [c for c in curves if c]
    last = min(c[-1][0] for c in curves)
    steps = np.array(sorted({s for c in curves for s, _ in c if s <= last}), dtype=float)
    values = np.stack([np.interp(steps, [s for s, _ in c], [v for _, v in c]) for c in curves])  # [seeds, steps]
    mean = values.mean(0)
    if len(curves) == 1:
        return steps, mean, mean, mean
    rng = np.random.default_rng(seed)
    boots = values[rng.integers(0, len(curves), (reps, len(curves)))].mean(1)  # [reps, steps]
    return steps, mean, np.quantile(boots, 0.025, axis=0), np.quantile(boots, 0.975, axis=0)


def plot_curves(rows: list[dict[str, Any]], out: Path, metric: str = "eval/return_mean") -> Path:
    envs = sorted({r["env"] for r in rows})
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        groups: dict[str, list] = {}
        for r in rows:
            if r["env"] == env and r["curve"]:
                groups.setdefault(f"{r['agent']} {r['config']}" if len({x['agent'] for x in rows}) > 1
                                  else r["config"], []).append(r["curve"])
        for name, curves in sorted(groups.items()):
            steps, mean, low, high = mean_and_band(curves)
            (line,) = ax.plot(steps, mean, label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if groups:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
