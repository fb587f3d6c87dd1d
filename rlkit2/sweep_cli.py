"""The sweep command (``rlkit2 sweep``; scripts/sweep.py in a checkout), importable for tests."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlkit2.cli_errors import ArgumentParser, cli_boundary, command
from rlkit2.sweep import (SweepError, SweepSpec, best_command, check_name, expand, load_spec, parse_assignments,
                          parse_seeds, prepare_directory, render_table, run_serial, search_probes, summary_table,
                          trial_result, validate_trials, write_results_csv, write_results_json)

USAGE = """Run many trainings: agents x envs x grid values x seeds, resumable (rerun the same command).

    {sweep} --name lam --agent ppo --env Hopper-v5,HalfCheetah-v5 --seeds 0-4 \\
        --grid gae_lambda=0.9,0.95 --set total_steps=1000000
    {sweep} --name lam --table          # results so far, nothing runs
    {sweep} --spec benchmarks/ppo_mujoco.toml
    RAY_ADDRESS=head-node:6379 {sweep} --spec ... --root /shared/sweeps
"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=command("sweep"), description=USAGE.format(sweep=command("sweep")),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", help="the sweep's folder under --root (default: the spec file's name)")
    p.add_argument("--spec", type=Path, help="a TOML spec (benchmarks/*.toml) instead of --agent/--env/...")
    p.add_argument("--agent", help="agent(s), comma-separated")
    p.add_argument("--env", help="env id(s), comma-separated")
    p.add_argument("--seeds", help="e.g. 0-4 or 0,1,5 (default 0, or the spec's)")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="an option and its values (';' separates values that contain commas: policy_hidden=64,64;32,32)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="an option for every trial")
    p.add_argument("--root", help="parent folder of sweeps (default: sweeps/, or the spec's root)")
    p.add_argument("--table", action="store_true", help="gather and print the results so far; run nothing")
    p.add_argument("--serial", action="store_true", help="run the trials one by one in this process, without Ray")
    p.add_argument("--address", help="join an existing Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (also its torch threads)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--max-concurrent", type=int, default=0, help="at most this many trials at once (0: as the CPUs allow)")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (on 127.0.0.1)")
    p.add_argument("--metric", default="eval/return_mean", help="the metric tables, searches and ASHA use")
    p.add_argument("--search", choices=["random", "optuna"], help="sample --trials configs from --space (Ray only)")
    p.add_argument("--trials", type=int, default=0, help="how many configs a search samples")
    p.add_argument("--space", action="append", default=[], metavar="NAME=DIST",
                   help="a searched option: loguniform:LOW:HIGH, uniform:LOW:HIGH, randint:LOW:HIGH or choice:A,B,...")
    p.add_argument("--scheduler", choices=["fifo", "asha"], default="fifo",
                   help="asha: stop the trials that trail at each rung of evaluations early (Ray only)")
    p.add_argument("--grace-steps", type=int, default=0, help="ASHA's first rung in env steps (default: eval_every)")
    p.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA keeps 1/this of the trials per rung")
    return p


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    if args.spec:
        spec = load_spec(args.spec, root=args.root)
        given = [flag for flag, value in (("--agent", args.agent), ("--env", args.env), ("--grid", args.grid),
                                          ("--search", args.search), ("--space", args.space)) if value]
        if given:
            raise SweepError(f"{', '.join(given)} with --spec: put them in the spec file (--set, --seeds and --name "
                             "may change a spec for one sweep, e.g. --name NAME_1m --set total_steps=1000000)")
        if args.name:
            spec.name = check_name(args.name)
        if args.seeds is not None:
            spec.seeds = parse_seeds(args.seeds)
        spec.set.update(parse_assignments(args.set, "--set", multi=False))
        return spec
    if not args.name:
        raise SweepError("Give the sweep a --name (its folder), or a --spec file")
    if args.agent is None and args.env is None:  # --name alone: the sweep already on disk
        return saved_spec(args.name, args.root or "sweeps")
    if not args.agent or not args.env:
        raise SweepError("A new sweep needs --agent and --env (comma-separated lists), or a --spec file")
    return SweepSpec(name=check_name(args.name), agents=_list(args.agent), envs=_list(args.env),
                     seeds=parse_seeds(args.seeds if args.seeds is not None else "0"), grid=parse_assignments(args.grid, "--grid", multi=True),
                     set=parse_assignments(args.set, "--set", multi=False), root=args.root or "sweeps",
                     search=args.search or "", trials=args.trials,
                     space=parse_assignments(args.space, "--space", multi=False))


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def saved_spec(name: str, root: str) -> SweepSpec:
    record = Path(root).expanduser().resolve() / check_name(name) / "spec.json"
    if not record.is_file():
        raise SweepError(f"No sweep '{name}' under {Path(root).resolve()} (no spec.json); start it with --agent, "
                         "--env, ... or --spec")
    data = json.loads(record.read_text())
    spec = SweepSpec(**data["spec"])
    spec.seeds, spec.root = data.get("seeds", spec.seeds), root
    return spec


def gather(spec: SweepSpec, metric: str) -> tuple[str, list[str]]:
    """results.csv, table.md (and curves.png with matplotlib) in the sweep folder, from the run directories; returns
    the text to print and the keys of the failed trials."""
    directory = spec.directory
    rows = [trial_result(t, directory, metric) for t in expand(spec)]
    write_results_csv(rows, directory / "results.csv")
    write_results_json(rows, spec, directory / "results.json", metric)
    table = render_table(summary_table(rows))
    failed = [r for r in rows if r["status"] == "failed"]
    lines = [f"Sweep '{spec.name}' ({directory}): {len(rows)} trials, "
             f"{sum(r['status'] == 'finished' for r in rows)} finished, {len(failed)} failed; metric {metric}", "",
             table]
    lines += [f"  failed: {r['key']}: {r['error']}" for r in failed]
    best = best_command(rows)
    if best:
        lines += ["", best]
    (directory / "table.md").write_text("\n".join(lines) + "\n")
    from rlkit2.sweep_plot import plot_curves

    try:
        plot_curves(rows, directory / "curves.png", metric)
        lines.append(f"\ncurves: {directory / 'curves.png'}")
    except ValueError as e:  # matplotlib missing (MissingExtraError), curves that cannot be averaged: the table stands
        lines.append(f"\n(no curves.png: {e})")
    lines.append(f"results: {directory / 'results.csv'} (with curves: results.json)")
    return "\n".join(lines), [r["key"] for r in failed]


@cli_boundary(lambda: f"{command('sweep')} --help; a trial's options: {command('train')} --agent AGENT --help")
def main_sweep(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = spec_from_args(args)
        spec.check_search()
        trials = expand(spec)
        if args.table:
            if not (spec.directory / "spec.json").is_file():
                raise SweepError(f"No sweep '{spec.name}' under {spec.directory.parent}")
            print(gather(spec, args.metric)[0])
            return 0
        validate_trials(search_probes(spec) if spec.search else trials, spec.directory)
        directory = prepare_directory(spec)
        if spec.search:
            if args.serial:
                raise SweepError("--search needs Ray (drop --serial)")
            from rlkit2.sweep_ray import run_search

            run_search(spec, directory, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                       address=args.address, max_concurrent=args.max_concurrent, dashboard=args.dashboard,
                       metric=args.metric, scheduler=args.scheduler, grace_steps=args.grace_steps,
                       reduction_factor=args.reduction_factor)
        elif args.serial:
            if args.scheduler != "fifo":
                raise SweepError("--scheduler asha needs Ray (drop --serial)")
            run_serial(trials, directory, extra={"threads_update": max(1, int(args.cpus_per_trial))})
        else:
            from rlkit2.sweep_ray import run_on_ray

            run_on_ray(trials, directory, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                       address=args.address, max_concurrent=args.max_concurrent, dashboard=args.dashboard,
                       metric=args.metric, scheduler=args.scheduler, grace_steps=args.grace_steps,
                       reduction_factor=args.reduction_factor)
    except KeyboardInterrupt:
        print("\nsweep interrupted: rerun the same command to resume (finished trials are not rerun)",
              file=sys.stderr)
        print(gather(spec, args.metric)[0])
        return 130
    table, failed = gather(spec, args.metric)
    print(table)
    if failed:  # a script or scheduler running the sweep must see that it did not complete
        print(f"error: {len(failed)} of {len(trials)} trials failed (e.g. {failed[0]}; the errors are in the table "
              "above and in each trial's error.json) — fix the cause and rerun the same command: it retries them",
              file=sys.stderr)
        return 1
    return 0
