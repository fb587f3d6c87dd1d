"""Learning curves of several runs drawn as the mean of each group and a band around it: the one drawing code behind
``rlkit2 plot`` (rlkit2/plot.py), a sweep's curves.png (rlkit2/sweep_plot.py) and scripts/bench/plot_learning.py.

Runs that logged at different steps are interpolated linearly onto one grid: every step any of them logged, within
the range all of them reached (a mean over fewer runs at the tail would hide that the others never got there).
The band is one of ``BANDS``; with a single run there is no band. matplotlib (the ``plot`` extra) is imported only
to draw, through its object-oriented API (no pyplot, so the caller's backend is left alone).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from rlkit2.extras import import_extra

Curve = Sequence[tuple[float, float]]  # one run's (x, value) pairs, e.g. (env step, eval/return_mean)

BANDS = {
    "ci": "95% bootstrap CI of the mean",
    "se": "±1 standard error of the mean",
    "std": "±1 standard deviation",
}


def common_grid(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """The grid (every x a curve logged within the range all curves cover) and the curves on it, [curves, grid]."""
    arrays = [np.array(sorted(c, key=lambda point: point[0]), dtype=float).reshape(-1, 2) for c in curves if len(c)]
    if not arrays:
        raise ValueError("no curve has a point to plot")
    start, end = max(a[0, 0] for a in arrays), min(a[-1, 0] for a in arrays)
    if start > end:
        raise ValueError(f"the runs share no range of x to average over (one starts at {start:g}, another ends at "
                         f"{end:g})")
    grid = np.unique(np.concatenate([a[:, 0] for a in arrays]))
    grid = grid[(grid >= start) & (grid <= end)]
    return grid, np.stack([np.interp(grid, a[:, 0], a[:, 1]) for a in arrays])


def mean_and_band(curves: Sequence[Curve], band: str = "ci", reps: int = 1000, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(grid, mean, low, high) over the curves on their common grid. ``band``: 'ci' the 95% percentile-bootstrap
    confidence interval of the mean (``reps`` resamples of the runs, seeded: the same figure every time), 'se' the
    mean ± its standard error (sample std / sqrt(n)), 'std' the mean ± the std over runs. One run: low = high =
    mean."""
    if band not in BANDS:
        raise ValueError(f"unknown band '{band}' — choose one of: {', '.join(BANDS)}")
    grid, values = common_grid(curves)
    mean = values.mean(0)
    n = len(values)
    if n == 1:
        return grid, mean, mean, mean
    if band == "ci":
        resampled = values[np.random.default_rng(seed).integers(0, n, (reps, n))].mean(1)  # [reps, grid]
        return grid, mean, np.quantile(resampled, 0.025, axis=0), np.quantile(resampled, 0.975, axis=0)
    spread = values.std(0, ddof=1) / np.sqrt(n) if band == "se" else values.std(0)
    return grid, mean, mean - spread, mean + spread


def plot_panels(panels: Mapping[str, Mapping[str, Sequence[Curve]]], out: str | Path, *, band: str = "ci",
                xlabel: str = "env steps", ylabel: str = "eval/return_mean", per: str = "seed",
                hlines: Mapping[str, float] | None = None, hline_label: str = "reference", dpi: int = 150) -> Path:
    """One panel per key of ``panels`` ({title: {line name: [curve per run]}}), side by side; each line the mean of
    its curves with the band, one colour per line name in every panel; the legend (below each panel, so it never
    covers a curve) counts the runs (``per``: what one run is, 'seed' or 'run') and names the band. ``hlines``: a
    dashed reference line in the panel of that title. The file type follows ``out``'s suffix (.png, .pdf, .svg)."""
    import_extra("matplotlib", "plot", "Drawing learning curves")
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("no curves to draw")
    out = Path(out)
    hlines = hlines or {}
    names = sorted({name for lines in panels.values() for name in lines})
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig = Figure(figsize=(6 * len(panels), 4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, lines) in zip(axes, panels.items()):
        several = False
        for name, curves in sorted(lines.items()):
            try:
                x, mean, low, high = mean_and_band(curves, band)
            except ValueError as e:
                raise ValueError(f"cannot average '{name}' in '{title}': {e}") from None
            count = f"{len(curves)} {per}{'s' if len(curves) > 1 else ''}"
            ax.plot(x, mean, color=colours[name], label=textwrap.fill(f"{name} ({count})", 60))  # long names wrap
            if len(curves) > 1:
                several = True
                ax.fill_between(x, low, high, color=colours[name], alpha=0.2, linewidth=0)
        if title in hlines:
            ax.axhline(hlines[title], color="gray", linestyle="--", label=hline_label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if lines or title in hlines:
            ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False,
                      title=f"line: mean over {per}s; band: {BANDS[band]}" if several else None,
                      title_fontsize="small")
    fig.subplots_adjust(wspace=0.3)  # no tight_layout: it would shrink the axes to fit the legends below them
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    return out
