"""Sweep trials on Ray Tune (the optional ``ray`` extra): each trial is ``rlkit2.sweep.run_trial`` of one run
directory, so what Ray Tune remembers of an experiment never decides what runs -- the run directories do.

Ray is started or joined by rlkit2/ray_local.py (a local Ray on 127.0.0.1, no dashboard unless asked);
``--address``/``RAY_ADDRESS`` joins an existing cluster instead, whose nodes need the same install of rlkit2 and its
envs, and a ``--root`` on storage that every node mounts at the same path.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlkit2 import ray_local
from rlkit2.ray_local import RayStartError
from rlkit2.sweep import (SweepError, SweepSpec, Trial, make_trial, mark_stopped, parse_distribution,
                          read_progress_rows, resolve_trial, run_trial, trial_state)

SERIAL = "run the same trials in this process with --serial"


def import_ray():
    try:
        ray = ray_local.import_ray(SERIAL)
        from ray import tune
    except ImportError:  # Ray without its tune extra
        raise SweepError(f"Ray Tune is not installed. Install the extra: pip install -e '.[ray]' -- or {SERIAL}") from None
    except RayStartError as e:
        raise SweepError(str(e)) from None
    return ray, tune


def init_ray(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False) -> str:
    """Join ``address`` (or $RAY_ADDRESS), else start a local Ray on 127.0.0.1 (rlkit2/ray_local.py)."""
    try:
        return ray_local.init_ray(address, num_cpus, dashboard, instead=SERIAL)
    except RayStartError as e:
        raise SweepError(str(e)) from None


def _trainable(config: dict[str, Any]) -> None:
    """One trial inside a Ray worker: bring its run directory to 'finished', reporting each evaluation."""
    import torch
    from ray import tune

    torch.set_num_threads(config["threads"])
    trial = Trial(**{**config["trial"], "params": tuple(tuple(p) for p in config["trial"]["params"])})

    def report(step: int, metrics: dict) -> None:
        tune.report({**metrics, "env_steps": step})

    run_trial(trial, Path(config["sweep_dir"]), on_eval=report,
              extra={"threads_update": config["threads"], **config.get("extra", {})})


def _search_trainable(config: dict[str, Any]) -> None:
    """One sampled config of a search: its trial (key from the sampled values) run like a grid trial. A trial a
    previous run of the same search finished reports its evaluations again, so the searcher sees them."""
    import torch
    from ray import tune

    torch.set_num_threads(config["threads"])
    trial = _search_trial(config)

    def report(step: int, metrics: dict) -> None:
        tune.report({**metrics, "env_steps": step})

    result = run_trial(trial, Path(config["sweep_dir"]), on_eval=report,
                       extra={"threads_update": config["threads"], **config.get("extra", {})})
    if not result["ran"]:
        for row in read_progress_rows(Path(config["sweep_dir"]) / trial.key):
            if "eval/return_mean" in row:
                report(int(row["step"]), {k: v for k, v in row.items() if k.startswith("eval/")})


def _search_trial(config: dict[str, Any]) -> Trial:
    """The trial of a search's sampled config (its key made from the sampled values)."""
    fixed = config["fixed"]
    params = tuple((name, config["params"][name]) for name in fixed["space_order"])
    return make_trial(fixed["agent"], fixed["env"], params, fixed["seed"], fixed["set"])


def _tune_distribution(tune, name: str, text: str):
    kind, values = parse_distribution(name, text)
    if kind == "choice":
        return tune.choice(values)
    return {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}[kind](*values)


def _trial_key(trial) -> str:
    """A Tune trial's sweep key: a grid trial carries it, a search's is made from the sampled values."""
    return trial.config["trial"]["key"] if "trial" in trial.config else _search_trial(trial.config).key


class _Progress:
    """A Tune callback that prints one line per change: trials done / running / failed and the best so far."""

    def __init__(self, total: int, already_done: int, metric: str):
        from ray.tune import Callback

        outer = self

        class Reporter(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                outer.show(trials)

            def on_trial_complete(self, iteration, trials, trial, **info):
                outer.show(trials)

            def on_trial_error(self, iteration, trials, trial, **info):
                outer.show(trials, f"failed: {_trial_key(trial)}")

            def on_trial_result(self, iteration, trials, trial, result, **info):
                value = result.get(outer.metric)
                if value is not None and (outer.best is None or value > outer.best[0]):
                    outer.best = (value, _trial_key(trial), result.get("env_steps"))
                outer.show(trials)

        self.callback = Reporter()
        self.total, self.already_done, self.metric = total, already_done, metric
        self.best: tuple[float, str, int] | None = None
        self._last = ""

    def show(self, trials, note: str = "") -> None:
        status = [t.status for t in trials]
        done = self.already_done + status.count("TERMINATED")
        best = f"; best {self.metric} {self.best[0]:.1f} ({self.best[1]} at {self.best[2]} steps)" if self.best else ""
        line = (f"[sweep] {done}/{self.total} done, {status.count('RUNNING')} running, "
                f"{status.count('ERROR')} failed{best}")
        if line != self._last or note:
            print(line + (f" -- {note}" if note else ""), flush=True)
            self._last = line


def asha(metric: str, max_steps: int, grace_steps: int, reduction_factor: float, sweep_dir: Path):
    """Ray Tune's ASHA on env steps, which also marks the run directory of every trial it stops (mark_stopped):
    a stopped trial has periodic checkpoints, and without the mark a rerun would resume it."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class MarkingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP:
                mark_stopped(sweep_dir / _trial_key(trial), result.get("env_steps"), "ASHA")
            return decision

    return MarkingASHA(time_attr="env_steps", metric=metric, mode="max", max_t=max_steps,
                       grace_period=grace_steps, reduction_factor=reduction_factor)


def _asha_for(probe: Trial, sweep_dir: Path, metric: str, grace_steps: int, reduction_factor: float):
    """ASHA up to the trials' budget, its first rung at ``grace_steps`` or their eval_every (from ``probe``)."""
    run, _ = resolve_trial(probe, sweep_dir)
    return asha(metric, run.total_steps, grace_steps or run.eval_every or run.total_steps, reduction_factor,
                sweep_dir)


def _fit(tune, trainable, space: dict, sweep_dir: Path, progress: "_Progress", cpus_per_trial: float,
         gpus_per_trial: float, **tune_config: Any) -> None:
    """Run the trials on Ray Tune (its experiment state under SWEEP/.ray, never read back by rlkit2)."""
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
        param_space=space,
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir / ".ray"), verbose=0,
                                  callbacks=[progress.callback]),
    )
    start = time.perf_counter()
    try:
        tuner.fit()
    finally:
        print(f"[sweep] Ray Tune ran for {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def run_on_ray(trials: list[Trial], sweep_dir: Path, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
               address: str | None = None, max_concurrent: int = 0, dashboard: bool = False,
               metric: str = "eval/return_mean", extra: dict[str, Any] | None = None, scheduler: str = "fifo",
               grace_steps: int = 0, reduction_factor: float = 3.0) -> None:
    """Run the trials that are not done on Ray Tune: FIFO over the grid, or ASHA early stopping on the periodic
    evaluations (grace period: ``grace_steps``, default the trials' eval_every)."""
    ray, tune = import_ray()
    pending = [t for t in trials if trial_state(sweep_dir / t.key) not in ("finished", "stopped")]
    print(f"[sweep] {len(trials) - len(pending)} of {len(trials)} trials already finished (or stopped early); {len(pending)} to run",
          flush=True)
    if not pending:
        return
    print(f"[sweep] {init_ray(address, dashboard=dashboard)}", flush=True)
    threads = max(1, int(cpus_per_trial))
    space = {"trial": tune.grid_search([{**asdict(t), "params": [list(p) for p in t.params]} for t in pending]),
             "sweep_dir": str(sweep_dir), "threads": threads, "extra": extra or {}}
    progress = _Progress(len(trials), len(trials) - len(pending), metric)
    trial_scheduler = _asha_for(pending[0], sweep_dir, metric, grace_steps, reduction_factor) \
        if scheduler == "asha" else None
    _fit(tune, _trainable, space, sweep_dir, progress, cpus_per_trial, gpus_per_trial,
         max_concurrent_trials=max_concurrent or None, scheduler=trial_scheduler,
         trial_name_creator=_trial_key, trial_dirname_creator=_trial_key)


def run_search(spec: SweepSpec, sweep_dir: Path, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
               address: str | None = None, max_concurrent: int = 0, dashboard: bool = False,
               metric: str = "eval/return_mean", scheduler: str = "fifo", grace_steps: int = 0,
               reduction_factor: float = 3.0) -> None:
    """Sample ``spec.trials`` configs from ``spec.space`` (random, or optuna's TPE), each one trial of one run
    directory. Sampling is seeded by the sweep's seed, so a rerun of a random search draws the same configs and
    finished ones are not trained again."""
    ray, tune = import_ray()
    from ray.tune.search import BasicVariantGenerator

    print(f"[sweep] {init_ray(address, dashboard=dashboard)}", flush=True)
    threads = max(1, int(cpus_per_trial))
    seed = spec.seeds[0]
    fixed = {"agent": spec.agents[0], "env": spec.envs[0], "seed": seed, "set": spec.set,
             "space_order": list(spec.space)}
    space = {"params": {name: _tune_distribution(tune, name, text) for name, text in spec.space.items()},
             "fixed": fixed, "sweep_dir": str(sweep_dir), "threads": threads, "extra": {}}
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=metric, mode="max", seed=seed)
    else:
        search_alg = BasicVariantGenerator(random_state=seed)
    probe = make_trial(fixed["agent"], fixed["env"], (), seed, spec.set)
    trial_scheduler = _asha_for(probe, sweep_dir, metric, grace_steps, reduction_factor) \
        if scheduler == "asha" else None
    _fit(tune, _search_trainable, space, sweep_dir, _Progress(spec.trials, 0, metric), cpus_per_trial,
         gpus_per_trial, num_samples=spec.trials, search_alg=search_alg, scheduler=trial_scheduler,
         max_concurrent_trials=max_concurrent or None)
