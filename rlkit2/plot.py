"""``rlkit2 plot`` (scripts/plot.py): learning curves of your own runs, from each run directory's progress.csv.

Runs are grouped (by default: the agent, and a sweep trial's config, with one panel per env, so the seeds of one
agent on one env go together); each group is drawn as the mean of its runs and a band by rlkit2/curves.py, the same
code that draws a sweep's curves.png.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from rlkit2.cli_errors import ArgumentParser, UsageError, cli_boundary, command
from rlkit2.curves import BANDS, Curve, mean_and_band, plot_panels
from rlkit2.extras import import_extra
from rlkit2.logger import read_progress

USAGE = """Learning curves of runs: one panel per env, one line per group (the mean of its runs) with a band.

    {plot} runs/ --out curves.png                          # every run below runs/, seeds of agent+env together
    {plot} runs/ppo-Hopper-* runs/dsac-Hopper-* --metric charts/episode_return --out hopper.pdf
    {plot} runs/ --group "lr 3e-4=*lr3e-4*" --group "lr 1e-3=*lr1e-3*" --band se --out lr.png
    {plot} sweeps/lam --out lam.png                       # a sweep's trials, one line per config
"""

X_STEPS = "env_steps"


@dataclass
class Run:
    path: Path
    agent: str
    env: str
    config: str  # a sweep trial's config name ('default' for a plain run)
    rows: list[dict[str, float]]

    @property
    def default_group(self) -> str:
        return self.agent if self.config == "default" else f"{self.agent} {self.config}"


def find_run_dirs(paths: list[Path]) -> list[Path]:
    """The run directories given, and those below a folder given (runs/, a sweep's folder), each once."""
    found: dict[Path, None] = {}
    for path in paths:
        if (path / "progress.csv").is_file():
            found[path] = None
        elif path.is_dir():
            below = sorted(p.parent for p in path.rglob("progress.csv"))
            if not below:
                raise UsageError(f"'{path}' holds no run (no progress.csv in it or below) — give run directories "
                                 "(runs/<agent>-<env>-s<seed>-<time>) or a folder of them")
            found.update(dict.fromkeys(below))
        else:
            raise UsageError(f"'{path}' is not a directory — give run directories (runs/<agent>-<env>-s<seed>-<time>) "
                             "or a folder of them")
    return list(found)


def load_run(path: Path) -> Run:
    """progress.csv and what the run is: agent and env from config.json (a run) or trial.json (a sweep's trial,
    which also names its config; a peer library's trial has only trial.json)."""
    from rlkit2.sweep import Trial

    if (path / "trial.json").is_file():
        trial = Trial.from_record(json.loads((path / "trial.json").read_text()))
        agent, env, config = trial.agent, trial.env, trial.config_name
    elif (path / "config.json").is_file():
        record = json.loads((path / "config.json").read_text())
        agent, env, config = record["agent"], record["run"]["env"], "default"
    else:
        raise UsageError(f"'{path}' has a progress.csv but no config.json naming its agent and env — give run "
                         "directories written by rlkit2 (scripts/train.py, a sweep)")
    return Run(path, agent, env, config, read_progress(path))


def parse_groups(items: list[str]) -> list[tuple[str, str]]:
    groups = []
    for item in items:
        name, sep, pattern = item.partition("=")
        if not sep or not name or not pattern:
            raise UsageError(f"--group expects NAME=GLOB (e.g. --group 'lr 1e-3=*lr1e-3*'), got '{item}'")
        groups.append((name, pattern))
    return groups


def group_runs(runs: list[Run], groups: list[tuple[str, str]]) -> tuple[dict[str, dict[str, list[Run]]], list[Run]]:
    """{env: {group name: runs}} and the runs no --group matched. A glob is matched against a run directory's name
    and its path; a run that two groups match, or a group that matches no run, is an error."""
    panels: dict[str, dict[str, list[Run]]] = {}
    left_out, matched = [], set()
    for run in runs:
        if groups:
            names = list(dict.fromkeys(name for name, pattern in groups
                                       if fnmatch.fnmatch(run.path.name, pattern)
                                       or fnmatch.fnmatch(run.path.as_posix(), pattern)))
            if len(names) > 1:
                raise UsageError(f"run '{run.path}' matches --group {names[0]} and --group {names[1]} — make the "
                                 "globs match each run once")
            if not names:
                left_out.append(run)
                continue
            name = names[0]
            matched.add(name)
        else:
            name = run.default_group
        panels.setdefault(run.env, {}).setdefault(name, []).append(run)
    for name, pattern in groups:
        if name not in matched:
            shown = ", ".join(r.path.name for r in runs[:8]) + (", ..." if len(runs) > 8 else "")
            raise UsageError(f"--group {name}={pattern} matches no run — the globs are matched against the run "
                             f"directories' names and paths: {shown}")
    return dict(sorted(panels.items())), left_out


def run_curve(run: Run, metric: str, x: str) -> Curve:
    return [(row[x], row[metric]) for row in run.rows if metric in row and x in row]


def check_logged(runs: list[Run], column: str, flag: str) -> list[Run]:
    """The runs that logged ``column``; none is an error that lists what was logged (and the closest names)."""
    having = [run for run in runs if any(column in row for row in run.rows)]
    if not having:
        logged = sorted({key for run in runs for row in run.rows for key in row} - {"step"})
        close = difflib.get_close_matches(column, logged, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UsageError(f"no run logged '{column}' ({flag}).{hint} Logged: {', '.join(logged) or 'nothing yet'}")
    return having


@cli_boundary(lambda: f"{command('plot')} --help")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=command("plot"), description=USAGE.format(plot=command("plot")),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run directories, or folders that hold them (runs/, a sweep's folder)")
    parser.add_argument("--metric", default="eval/return_mean", help="any logged column of progress.csv")
    parser.add_argument("--group", action="append", default=[], metavar="NAME=GLOB",
                        help="a line named NAME for the runs whose directory name (or path) matches GLOB; repeat for "
                             "more lines; runs no group matches are left out (default: one line per agent and sweep "
                             "config, its seeds together)")
    parser.add_argument("--x", default=X_STEPS, help=f"the x axis: {X_STEPS} (default) or another logged column")
    parser.add_argument("--band", choices=list(BANDS), default="ci",
                        help="; ".join(f"{k}: {v}" for k, v in BANDS.items()).replace("%", "%%") + " (default ci)")
    parser.add_argument("--out", type=Path, default=Path("curves.png"),
                        help="the figure; its suffix picks the type (.png, .pdf, .svg; default curves.png)")
    parser.add_argument("--dpi", type=int, default=200, help="resolution of a raster figure (default 200)")
    args = parser.parse_args(argv)
    import_extra("matplotlib", "plot", command("plot"))  # before reading runs: the fix comes first
    _check_format(args.out)
    runs = [load_run(path) for path in find_run_dirs(args.run_dirs)]
    x = "step" if args.x in (X_STEPS, "step") else args.x
    having = check_logged(check_logged(runs, args.metric, "--metric"), x, "--x")
    if len(having) < len(runs):
        missing = [r.path.name for r in runs if r not in having]
        print(f"note: left out {len(missing)} run(s) that have not logged {args.metric} yet: {', '.join(missing)}",
              file=sys.stderr)
    panels, left_out = group_runs(having, parse_groups(args.group))
    if left_out:
        print(f"note: left out {len(left_out)} run(s) that no --group matches: "
              f"{', '.join(r.path.name for r in left_out)}", file=sys.stderr)
    curves = {env: {name: [run_curve(run, args.metric, x) for run in group] for name, group in sorted(lines.items())}
              for env, lines in panels.items()}
    out = plot_panels(curves, args.out, band=args.band, xlabel="env steps" if x == "step" else x,
                      ylabel=args.metric, per="run", dpi=args.dpi)
    print(f"wrote {out} ({args.metric}; line: mean over runs, band: {BANDS[args.band]})")
    for env, lines in curves.items():
        for name, group in lines.items():
            grid, mean, low, high = mean_and_band(group, args.band)
            spread = f" [{low[-1]:.4g}, {high[-1]:.4g}]" if len(group) > 1 else ""
            print(f"  {env} | {name}: {len(group)} run(s), at {grid[-1]:g}: {mean[-1]:.4g}{spread}")
    return 0


def _check_format(out: Path) -> None:
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if out.suffix.lstrip(".").lower() not in formats:
        raise UsageError(f"--out {out}: the suffix picks the figure's type; use one of: "
                         f"{', '.join('.' + f for f in sorted(formats))}")
