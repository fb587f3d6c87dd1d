"""Many runs: a sweep over agents x envs x grid values x seeds, where every trial is ``train()``/``resume()`` of
one run directory ``ROOT/NAME/<trial key>/``. The run directories are the truth (DESIGN.md, "Growing past one
machine"): a trial whose run has a final checkpoint is never run again, one with a periodic checkpoint resumes
from it, one without starts afresh -- whatever happened to the process that ran it (Ctrl-C, SIGTERM, kill -9).

This module holds the parts that need no Ray: the spec and its expansion into trials with stable keys, checking
every trial's config before any runs, the trial runner, and gathering results from the run directories (IQM with
a stratified bootstrap CI, Agarwal et al. 2021). ``rlkit2.sweep_ray`` schedules the trials on Ray Tune;
``rlkit2 sweep`` (rlkit2/sweep_cli.py) is the command line.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import time
import tomllib
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rlkit2.cli_errors import command
from rlkit2.config import ConfigError


class SweepError(ValueError):
    """A sweep that cannot start as asked: a bad spec, trials whose configs do not resolve, a changed grid."""


# ------------------------------------------------------------------------------------------------ the spec
def parse_seeds(text: str | int | list) -> list[int]:
    """'0-4' -> [0..4]; '0,2,7'; '0-2,9'; an int or a list of ints as they are."""
    if isinstance(text, int):
        return [text]
    if isinstance(text, list):
        return [int(s) for s in text]
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)-(\d+)", part)
        if match:
            low, high = int(match[1]), int(match[2])
            if high < low:
                raise SweepError(f"Seed range '{part}' runs backwards; write it low-high, e.g. 0-4")
            seeds.extend(range(low, high + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise SweepError(f"Seeds '{text}': expected numbers and ranges, e.g. 0-4 or 0,1,5")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"Seeds '{text}' list a seed twice")
    return seeds


def split_values(text: str) -> list[str]:
    """The values of one grid option: 'a,b,c'; options whose value has commas itself (policy_hidden=64,64) list
    their values with ';' instead: 'policy_hidden=64,64;256,256'."""
    sep = ";" if ";" in text else ","
    values = [v.strip() for v in text.split(sep)]
    if not all(values):
        raise SweepError(f"Values '{text}' have an empty entry")
    return values


def parse_assignments(items: list[str], what: str, multi: bool) -> dict[str, Any]:
    """['lr=1e-3,3e-4', 'rl.entropy_coef=0.01'] -> {'lr': ['1e-3', '3e-4'], ...} (``multi``) or single values."""
    out: dict[str, Any] = {}
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not eq or not name or not value.strip():
            raise SweepError(f"{what} '{item}' must be NAME=VALUE{'[,VALUE...]' if multi else ''}, e.g. "
                             f"{'gae_lambda=0.9,0.95' if multi else 'total_steps=1000000'}")
        if name in out:
            raise SweepError(f"{what} names '{name}' twice")
        out[name] = split_values(value) if multi else value.strip()
    return out


@dataclass
class SweepSpec:
    name: str
    agents: list[str]
    envs: list[str]
    seeds: list[int]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    """Each option's values; every combination is a config."""
    set: dict[str, Any] = field(default_factory=dict)
    """Options given to every trial."""
    root: str = "sweeps"
    search: str = ""
    """'' (a grid), 'random' or 'optuna': sample ``trials`` configs from ``space`` (Ray only)."""
    trials: int = 0
    space: dict[str, str] = field(default_factory=dict)
    """Each searched option's distribution: loguniform:LOW:HIGH, uniform:LOW:HIGH, randint:LOW:HIGH, choice:A,B,..."""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Named configs, each a set of options (and optionally its own ``agent``): an ablation's one-change-each
    variants, or rlkit2 beside a peer library. Crossed with the grid; every variant runs on every env and seed."""
    report: dict[str, Any] = field(default_factory=dict)
    """How scripts/bench/report.py renders the results (baseline variant, extra metric columns, ...)."""

    def identity(self) -> dict[str, Any]:
        """What makes trials of the same name comparable: all but the seeds (a sweep may add seeds later)."""
        out = {"agents": self.agents, "envs": self.envs, "grid": _plain(self.grid), "set": _plain(self.set)}
        if self.variants:
            out["variants"] = _plain(self.variants)
        if self.search:
            out.update(search=self.search, trials=self.trials, space=_plain(self.space))
        return out

    def check_search(self) -> None:
        if not self.search:
            if self.space or self.trials:
                raise SweepError("--space and --trials belong to a search: add --search random (or optuna)")
            return
        if self.search not in ("random", "optuna"):
            raise SweepError(f"--search '{self.search}': allowed values are random, optuna")
        if len(self.agents) != 1 or len(self.envs) != 1 or len(self.seeds) != 1 or self.grid:
            raise SweepError("A search samples configs of one agent on one env with one seed and no --grid; rerun "
                             "the best config over seeds as a grid afterwards")
        if self.trials < 1 or not self.space:
            raise SweepError("A search needs --trials N (N >= 1) and at least one --space NAME=DIST")
        for name, text in self.space.items():
            parse_distribution(name, text)

    @property
    def directory(self) -> Path:
        return Path(self.root).expanduser().resolve() / self.name  # absolute: Ray Tune moves a trial's cwd


def _plain(value: Any) -> Any:
    """Values as strings, so a spec from TOML (0.9) and one from the command line ('0.9') compare equal."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
        raise SweepError(f"Sweep name '{name}' must be letters, digits, '.', '_' or '-' (it names a folder)")
    return name


def load_spec(path: str | Path, root: str | None = None) -> SweepSpec:
    """A sweep spec from a TOML file: name, agent (or a list), env (or a list), seeds ('0-4' or a list), [grid]
    (lists of values) and [set] (single values); see benchmarks/*.toml."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"Spec file '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"Spec file '{path}' is not valid TOML: {e}") from None
    known = {"name", "agent", "env", "seeds", "grid", "set", "root", "description", "variants", "report"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SweepError(f"Spec file '{path}': unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    variants = data.get("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise SweepError(f"Spec file '{path}': each variant is a table of options, e.g. "
                         '[variants."no obs normalization"] normalize_obs = false')
    every_variant_names_agent = bool(variants) and all("agent" in v for v in variants.values())
    for key in ("env", "seeds") if every_variant_names_agent else ("agent", "env", "seeds"):
        if key not in data:
            raise SweepError(f"Spec file '{path}' needs '{key}'")
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    grid = {k.replace("-", "_"): as_list(v) for k, v in data.get("grid", {}).items()}
    return SweepSpec(name=check_name(data.get("name", path.stem)), agents=[str(a) for a in as_list(data.get("agent", []))],
                     envs=[str(e) for e in as_list(data["env"])], seeds=parse_seeds(data["seeds"]), grid=grid,
                     set={k.replace("-", "_"): v for k, v in data.get("set", {}).items()},
                     root=root or data.get("root", "sweeps"),
                     variants={str(name): {k.replace("-", "_"): v for k, v in options.items()}
                               for name, options in variants.items()},
                     report=data.get("report", {}))


def parse_distribution(name: str, text: str) -> tuple[str, list]:
    """'loguniform:1e-5:1e-3' -> ('loguniform', [1e-5, 1e-3]); 'choice:64,128' -> ('choice', ['64', '128'])."""
    kind, _, rest = str(text).partition(":")
    try:
        if kind == "choice" and rest:
            return kind, split_values(rest)
        if kind in ("loguniform", "uniform", "randint"):
            low, high = (float(v) for v in rest.split(":"))
            if not low < high or (kind == "loguniform" and low <= 0):
                raise ValueError
            return kind, [int(low), int(high)] if kind == "randint" else [low, high]
    except (ValueError, SweepError):
        pass
    raise SweepError(f"--space {name}={text}: expected loguniform:LOW:HIGH (0 < LOW < HIGH), uniform:LOW:HIGH, "
                     "randint:LOW:HIGH (HIGH excluded) or choice:A,B,...")


def search_probes(spec: SweepSpec) -> list[Trial]:
    """Trials at every distribution's low and high ends (and each choice), to check a search's options resolve
    before any sample runs."""
    probes = []
    for end in (0, -1):
        params = []
        for name, text in spec.space.items():
            kind, values = parse_distribution(name, text)
            value = values[end] if kind != "randint" else values[0] if end == 0 else values[1] - 1
            params.append((name, value))
        probes.append(make_trial(spec.agents[0], spec.envs[0], tuple(params), spec.seeds[0], spec.set))
    for name, text in spec.space.items():
        kind, values = parse_distribution(name, text)
        if kind == "choice":
            low = dict(probes[0].params)
            probes += [make_trial(spec.agents[0], spec.envs[0], tuple({**low, name: v}.items()), spec.seeds[0],
                                  spec.set) for v in values]
    return probes


def make_trial(agent: str, env: str, params: tuple[tuple[str, Any], ...], seed: int, fixed: dict) -> Trial:
    shown = tuple((k, f"{v:.4g}" if isinstance(v, float) else v) for k, v in params)
    return Trial(trial_key(agent, env, shown, seed), agent, env, seed, shown,
                 {**fixed, **{k: str(v) for k, v in params}, "seed": seed})


# ----------------------------------------------------------------------------------------------- the trials
@dataclass(frozen=True)
class Trial:
    key: str
    agent: str
    env: str
    seed: int
    params: tuple[tuple[str, Any], ...]
    """This trial's grid values, in the grid's order (its config, without the seed)."""
    overrides: dict[str, Any]
    variant: str = ""
    """The spec's named variant this trial runs ('' without variants)."""

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "Trial":
        """The trial a run directory's trial.json describes."""
        return cls(data["key"], data["agent"], data["env"], data["seed"], tuple(tuple(p) for p in data["params"]),
                   data["overrides"], data.get("variant", ""))

    @property
    def config_name(self) -> str:
        """The trials of one config over seeds share this name (the variant and grid values; agent and env apart)."""
        return ", ".join(([self.variant] if self.variant else []) + [f"{k}={v}" for k, v in self.params]) or "default"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", str(text).replace("ALE/", "")).strip("_")


def trial_key(agent: str, env: str, params: tuple[tuple[str, Any], ...], seed: int, variant: str = "") -> str:
    """A stable, readable, filesystem-safe name: ppo-Hopper-v5-gae_lambda=0.9-s3 (a hash when it would be long);
    with a variant: ppo-Hopper-v5-no_obs_normalization-s3."""
    parts = [agent, _safe(env)] + ([_safe(variant)] if variant and variant != agent else []) + [_safe(f"{k}={v}") for k, v in params] \
        + [f"s{seed}"]
    key = "-".join(parts)
    if len(key) > 150:
        import hashlib

        digest = hashlib.sha1(json.dumps([agent, env, variant, list(params)], default=str).encode()).hexdigest()[:10]
        key = f"{agent}-{_safe(env)}-{digest}-s{seed}"
    return key


def expand(spec: SweepSpec) -> list[Trial]:
    """Agents x envs x grid combinations x seeds, seeds innermost (a config's seeds run side by side). A search's
    trials are the ones its run directories hold (trial.json), since they are sampled as it runs."""
    import itertools

    if spec.search:
        found = []
        for record in sorted(spec.directory.glob("*/trial.json")):
            found.append(Trial.from_record(json.loads(record.read_text())))
        return found

    names = list(spec.grid)
    combos = list(itertools.product(*(spec.grid[n] for n in names))) if names else [()]
    # (agent, variant name, the variant's options): a variant that names an agent runs with that agent only
    configs = [(a, "", {}) for a in spec.agents] if not spec.variants else [
        (agent, name, {k: v for k, v in options.items() if k != "agent"})
        for name, options in spec.variants.items()
        for agent in ([str(options["agent"])] if "agent" in options else spec.agents)]
    if not configs:
        raise SweepError("The sweep has no agent: give agent = ... (or an agent in every variant)")
    trials = []
    for agent, variant, variant_options in configs:
        for env in spec.envs:
            for combo in combos:
                params = tuple(zip(names, combo))
                for seed in spec.seeds:
                    overrides = {**spec.set, **variant_options, **dict(params), "seed": seed}
                    trials.append(Trial(trial_key(agent, env, params, seed, variant), agent, env, seed, params,
                                        overrides, variant))
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        raise SweepError("Two trials got the same key (grid values that differ only in characters a folder name "
                         "cannot hold); rename the values")
    return trials


def resolve_trial(trial: Trial, sweep_dir: Path, extra: dict[str, Any] | None = None):
    """The trial's run and agent configs, resolved and validated exactly as train.py would."""
    from rlkit2.run import resolve_config

    overrides = {**trial.overrides, **(extra or {}), "runs_dir": str(sweep_dir), "run_name": trial.key}
    return resolve_config(trial.agent, trial.env, overrides)


def validate_trials(trials: list[Trial], sweep_dir: Path, build: bool = True) -> None:
    """Resolve every trial's config before the first one starts, and (``build``) build each config's envs and
    agent once on the CPU, which checks what only the agent can (a minibatch larger than the batch, an env that
    does not load): a typo is one error, not N failed trials."""
    from envs import EnvCheckError
    from rlkit2.peers import check_peer, is_peer, resolve_peer

    errors: dict[str, list[str]] = {}
    built: dict[tuple, str | None] = {}  # a config's build error (its seeds share it), None when it built
    for trial in trials:
        try:
            peer = is_peer(trial.agent)
            if peer:
                resolve_peer(trial.agent, trial.overrides)
            else:
                run, agent_config = resolve_trial(trial, sweep_dir)
            config = (trial.agent, trial.env, trial.variant, trial.params)
            if build and config not in built:
                built[config] = None
                try:
                    check_peer(trial.agent, trial.env, trial.overrides) if peer else _dry_build(run, agent_config)
                except (ConfigError, EnvCheckError, ValueError, KeyError) as e:
                    built[config] = str(e).strip("'\"")
            if build and built[config]:
                raise ConfigError(built[config])
        except (ConfigError, EnvCheckError, ValueError, KeyError) as e:
            errors.setdefault(str(e).strip("'\""), []).append(trial.key)
    if errors:
        lines = [f"{sum(len(keys) for keys in errors.values())} of {len(trials)} trials cannot start:"]
        for message, keys in errors.items():
            which = "every trial" if len(keys) == len(trials) else f"{len(keys)} trial(s), e.g. {keys[0]}"
            lines.append(f"  {message}  [{which}]")
        raise SweepError("\n".join(lines))


def _dry_build(run, agent_config) -> None:
    """Build the trial's training envs and agent on the CPU (no run directory, nothing written), then drop them."""
    import dataclasses

    from rlkit2.agent import get_agent_spec
    from rlkit2.run import build_agent, make_env

    run = dataclasses.replace(run, device="cpu")
    env = make_env(run, run.num_envs, run.seed, training=True)
    try:
        build_agent(get_agent_spec(run.agent), run, agent_config, env)
    finally:
        env.close()


def prepare_directory(spec: SweepSpec) -> Path:
    """ROOT/NAME with spec.json; an existing sweep of that name must have the same agents, envs, grid and set."""
    directory = spec.directory
    record = directory / "spec.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        old, new = saved.get("identity", {}), spec.identity()
        if old != new:
            diffs = [f"  {key}: was {old.get(key)!r}, now {new.get(key)!r}" for key in new if old.get(key) != new.get(key)]
            raise SweepError(f"Sweep '{spec.name}' in {directory} was started with other settings:\n" + "\n".join(diffs)
                             + "\nUse another --name for the new settings (or delete that folder to start over).")
        seeds = sorted(set(saved.get("seeds", [])) | set(spec.seeds))
    else:
        seeds = spec.seeds
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(record, {"name": spec.name, "identity": spec.identity(), "seeds": seeds, "spec": asdict(spec)})
    return directory


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ running a trial
STOPPED_MARKER = "stopped_early.json"
PEER_FINISHED = "finished.json"  # rlkit2.peers.FINISHED_MARKER: a peer library's trial (no checkpoints) finished


def mark_stopped(run_dir: Path, step: int | None, reason: str) -> None:
    """Record that a scheduler ended this trial early, so that a rerun neither resumes nor restarts it."""
    if run_dir.is_dir() and trial_state(run_dir) != "finished":
        _write_json(run_dir / STOPPED_MARKER, {"step": step, "reason": reason, "time": time.time()})



def trial_state(run_dir: Path) -> str:
    """'finished' (a final checkpoint), 'stopped' (ended early by the ASHA scheduler: done, not resumed),
    'resumable' (a periodic checkpoint), 'failed' (its last attempt raised and left no checkpoint to resume) or
    'pending'."""
    checkpoints = run_dir / "checkpoints"
    if (checkpoints / "final.pt").is_file() or (run_dir / PEER_FINISHED).is_file():
        return "finished"
    if (run_dir / STOPPED_MARKER).is_file():
        return "stopped"
    if any(checkpoints.glob("step_*.pt")):
        return "resumable"
    if (run_dir / "error.json").is_file():
        return "failed"
    return "pending"


def run_trial(trial: Trial, sweep_dir: Path, on_eval: Callable[[int, dict], None] | None = None,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Bring one trial's run directory to 'finished': nothing to do, resume, or (re)start from scratch. An
    exception is written to ``error.json`` in the run directory (and raised), so the results table shows it."""
    from rlkit2.peers import is_peer, run_peer_trial
    from rlkit2.run import resume, train

    run_dir = sweep_dir / trial.key
    state = trial_state(run_dir)
    if state in ("finished", "stopped"):
        return {"key": trial.key, "status": state, "ran": False}
    record = {**asdict(trial), "params": [list(p) for p in trial.params]}
    try:
        if is_peer(trial.agent):  # no checkpoints: an unfinished peer trial starts afresh
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            _write_json(run_dir / "trial.json", record)
            run_peer_trial(trial.agent, trial.env, {**trial.overrides, **(extra or {})}, run_dir, on_eval=on_eval)
            return {"key": trial.key, "status": "finished", "ran": True}
        if state == "resumable":
            (run_dir / "error.json").unlink(missing_ok=True)
            result = resume(run_dir, {"progress": False, **(extra or {})}, on_eval=on_eval)
        else:
            if run_dir.exists():  # never checkpointed (or failed before its first checkpoint): start afresh
                shutil.rmtree(run_dir)
            run, agent_config = resolve_trial(trial, sweep_dir, {"progress": False, **(extra or {})})
            run_dir.mkdir(parents=True)
            _write_json(run_dir / "trial.json", record)  # what the trial is, for results gathered from disk
            result = train(run, agent_config, on_eval=on_eval)
    except BaseException as e:  # noqa: BLE001 -- recorded for the table, then raised for the scheduler
        # KeyboardInterrupt: Ctrl-C; SystemExit: Ray Tune ending the trial (ASHA, or the sweep stopping) -- no error
        if not isinstance(e, (KeyboardInterrupt, SystemExit)) and run_dir.exists():
            _write_json(run_dir / "error.json", {"error": f"{type(e).__name__}: {e}",
                                                 "traceback": traceback.format_exc(), "time": time.time()})
        raise
    return {"key": trial.key, "status": result.status, "ran": True}


def run_serial(trials: list[Trial], sweep_dir: Path, report: Callable[[str], None] = print,
               extra: dict[str, Any] | None = None) -> None:
    """Every trial in this process, one after the other (--serial: debugging, or where Ray is not installed)."""
    done = failed = 0
    for i, trial in enumerate(trials, 1):
        state = trial_state(sweep_dir / trial.key)
        if state in ("finished", "stopped"):
            done += 1
            continue
        report(f"[{i}/{len(trials)}] {trial.key} ({'resuming' if state == 'resumable' else 'starting'})")
        try:
            result = run_trial(trial, sweep_dir, extra=extra)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 -- one failed trial does not stop the others
            failed += 1
            report(f"[{i}/{len(trials)}] {trial.key} failed: {type(e).__name__}: {e}")
            continue
        if result["status"] != "finished":  # SIGINT/SIGTERM: the run saved a checkpoint; stop the sweep too
            report(f"[{i}/{len(trials)}] {trial.key} interrupted; rerun the same command to resume")
            raise KeyboardInterrupt
        done += 1
    report(f"{done} of {len(trials)} trials finished, {failed} failed")


# -------------------------------------------------------------------------------------------------- results
def read_progress_rows(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "progress.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def trial_result(trial: Trial, sweep_dir: Path, metric: str = "eval/return_mean") -> dict[str, Any]:
    """One results row from the trial's run directory alone (no Ray, works after a crash)."""
    run_dir = sweep_dir / trial.key
    rows = read_progress_rows(run_dir)
    curve = [(int(r["step"]), r[metric]) for r in rows if metric in r]
    speeds = [r["perf/steps_per_sec"] for r in rows if "perf/steps_per_sec" in r]
    state = trial_state(run_dir)
    source = _final_source(run_dir)
    last: dict[str, float] = {}
    for r in rows:  # the last value of every logged metric
        last.update(r)
    eval_metrics = dict.fromkeys(k for r in rows for k in r if k.startswith("eval/"))
    row: dict[str, Any] = {"key": trial.key, "agent": trial.agent, "env": trial.env, "config": trial.config_name,
                           "variant": trial.variant, **{k: v for k, v in trial.params}, "seed": trial.seed,
                           "status": state, "steps": int(rows[-1]["step"]) if rows else 0,
                           "final": curve[-1][1] if state == "finished" and curve else None,
                           "best": max(v for _, v in curve) if curve else None,
                           "wall_time_s": source.get("wall_time"),
                           "steps_per_sec": float(np.median(speeds)) if speeds else None,
                           "error": None, "commit": source.get("commit"), "curve": curve,
                           "curves": {m: [(int(r["step"]), r[m]) for r in rows if m in r] for m in eval_metrics},
                           "last": last, "overrides": trial.overrides}
    if (run_dir / "error.json").is_file() and state != "finished":
        row["error"] = json.loads((run_dir / "error.json").read_text()).get("error")
        row["status"] = "failed"
    return row


def _final_source(run_dir: Path) -> dict[str, Any]:
    """Training wall time and the commit of the run's last session, from the newest checkpoint (what the run loop
    saves) or a peer's finished.json; {} when there is neither."""
    if (run_dir / PEER_FINISHED).is_file():
        marker = json.loads((run_dir / PEER_FINISHED).read_text())
        return {"wall_time": marker.get("wall_time"), "commit": marker.get("source", {}).get("commit")}
    out: dict[str, Any] = {}
    try:  # config.json: rewritten by every session of the run
        out["commit"] = json.loads((run_dir / "config.json").read_text())["source"]["commit"]
    except (OSError, ValueError, KeyError):
        pass
    checkpoints = run_dir / "checkpoints"
    candidates = [checkpoints / "final.pt"] if (checkpoints / "final.pt").is_file() else \
        sorted(checkpoints.glob("step_*.pt"), key=lambda p: p.stat().st_mtime)[-1:]
    if not candidates:
        return out
    from rlkit2 import checkpoint as ckpt

    try:
        out["wall_time"] = float(ckpt.load(candidates[0])["run"].get("wall_time", math.nan))
    except Exception:  # noqa: BLE001 -- a damaged checkpoint: the table shows no time
        pass
    return out


RESULT_COLUMNS = ["key", "agent", "env", "config", "seed", "status", "steps", "final", "best", "wall_time_s",
                  "steps_per_sec", "error", "commit"]
NOT_IN_CSV = ("curve", "curves", "last", "overrides", "variant")


def write_results_csv(rows: list[dict[str, Any]], path: Path) -> None:
    params = [k for r in rows for k in r if k not in RESULT_COLUMNS and k not in NOT_IN_CSV]
    columns = RESULT_COLUMNS[:4] + list(dict.fromkeys(params)) + RESULT_COLUMNS[4:]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_results_json(rows: list[dict[str, Any]], spec: SweepSpec, path: Path, metric: str) -> None:
    """Every trial's row with its curves, the spec and the metric: what scripts/bench/report.py renders and what a
    benchmark keeps in docs/bench/ (the run directories hold checkpoints and stay out of git)."""
    _write_json(path, {"sweep": spec.name, "metric": metric, "identity": spec.identity(), "seeds": spec.seeds,
                       "report": spec.report, "trials": rows})


def iqm(values: np.ndarray | list[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean(x, 0.25), as rliable computes it)."""
    x = np.sort(np.asarray(values, dtype=float))
    cut = int(0.25 * len(x))
    return float(np.mean(x[cut:len(x) - cut]))


def stratified_bootstrap_ci(scores: dict[str, list[float]], statistic: Callable = iqm, reps: int = 2000,
                            confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile CI of ``statistic`` over all scores, resampling runs with replacement within each task
    (stratum) -- rliable's stratified bootstrap. One task: the plain bootstrap over its seeds."""
    rng = np.random.default_rng(seed)
    strata = [np.asarray(v, dtype=float) for v in scores.values() if len(v)]
    stats = np.empty(reps)
    for i in range(reps):
        stats[i] = statistic(np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata]))
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def summary_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (agent, env, config) over its seeds: final mean +- std, IQM [95% CI], every seed, failures."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["agent"], row["env"], row["config"]), []).append(row)
    out = []
    for (agent, env, config), group in groups.items():
        finals = [r["final"] for r in group if r["final"] is not None]
        entry = {"agent": agent, "env": env, "config": config, "seeds": len(group), "finished": len(finals),
                 "failed": sum(r["status"] == "failed" for r in group),
                 "per_seed": {r["seed"]: (r["final"] if r["final"] is not None else
                                          f"stopped at {r['steps']:,}" if r["status"] == "stopped" else r["status"])
                              for r in group}}
        if finals:
            entry.update(mean=float(np.mean(finals)), std=float(np.std(finals)), iqm=iqm(finals),
                         ci=stratified_bootstrap_ci({env: finals}))
        out.append(entry)
    return out


def best_command(rows: list[dict[str, Any]]) -> str | None:
    """The train command that reproduces the finished trial with the highest final evaluation."""
    from rlkit2.peers import is_peer

    finished = [r for r in rows if r["final"] is not None and not is_peer(r["agent"])]
    if not finished:
        return None
    best = max(finished, key=lambda r: r["final"])
    options = {k: v for k, v in best["overrides"].items() if k != "seed"}
    words = [command("train"), f"--agent {best['agent']}", f"--env {best['env']}", f"--seed {best['seed']}"]
    words += [f"--{k} {shlex.quote(str(v))}" for k, v in options.items()]
    return f"best final {best['final']:.1f} ({best['key']}):\n  " + " ".join(words)


def render_table(summary: list[dict[str, Any]]) -> str:
    """A markdown table of ``summary_table``."""
    lines = ["| agent | env | config | seeds done | final mean ± std | IQM [95% CI] | per seed |",
             "|---|---|---|---|---|---|---|"]
    for e in summary:
        per_seed = ", ".join(f"s{s}: {v:.1f}" if isinstance(v, float) else f"s{s}: {v}"
                             for s, v in sorted(e["per_seed"].items()))
        stats = (f"{e['mean']:.1f} ± {e['std']:.1f}", f"{e['iqm']:.1f} [{e['ci'][0]:.1f}, {e['ci'][1]:.1f}]") \
            if "mean" in e else ("–", "–")
        failed = f" ({e['failed']} failed)" if e["failed"] else ""
        lines.append(f"| {e['agent']} | {e['env']} | {e['config']} | {e['finished']}/{e['seeds']}{failed} | "
                     f"{stats[0]} | {stats[1]} | {per_seed} |")
    return "\n".join(lines)
