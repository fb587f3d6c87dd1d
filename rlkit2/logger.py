"""Metrics to TensorBoard, ``progress.csv``, the console and optional sinks (Weights & Biases: ``WandbSink``), plus
phase timers.

Metric names are namespaced like CleanRL's: ``charts/episode_return``, ``losses/policy_loss``,
``eval/return_mean``, ``perf/steps_per_sec``, ``perf/share_env`` ... At the end of a run, ``log_final`` adds the
final evaluation (``final/return_mean`` ...) next to the run's options: TensorBoard's HParams tab (``tb/hparams/``)
and the sinks' summaries.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

from rlkit2.cli_errors import UsageError
from rlkit2.extras import import_extra


class PhaseTimer:
    """Accumulates wall time per phase (env, inference, update) so the logger can show where time goes."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds

    def pop(self) -> dict[str, float]:
        totals, self.totals = self.totals, {}
        return totals


class Sink(Protocol):
    """Somewhere else the logger sends what it logs (an experiment tracker)."""

    def log(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_final(self, metrics: dict[str, float]) -> None: ...
    def log_video(self, step: int, path: Path) -> None: ...
    def close(self) -> None: ...


class Logger:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True, console: bool = True,
                 resume_step: int | None = None, resume_rows: int | None = None, sinks: tuple[Sink, ...] = ()):
        """``sinks`` get every ``log`` as well (and are closed with the logger). ``resume_step``: the env step of the checkpoint a resumed run continues from, ``resume_rows``: the rows
        progress.csv had when it was saved (older checkpoints lack it). What an interrupted session logged after
        the checkpoint is dropped (from progress.csv and TensorBoard), since training repeats it. The row count is
        exact where the step is not: a final evaluation is logged at the step of the last periodic checkpoint."""
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "progress.csv"
        self.console = console
        self._columns: list[str] = []
        self._rows: list[dict[str, float]] = []
        if self.csv_path.is_file():  # resuming: keep what was logged
            with open(self.csv_path, newline="") as f:
                reader = csv.DictReader(f)
                self._columns = list(reader.fieldnames or [])
                self._rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in reader]
            if resume_rows is not None:
                kept = self._rows[:resume_rows]
            elif resume_step is not None:
                kept = [row for row in self._rows if row["step"] <= resume_step]
            else:
                kept = self._rows
            if len(kept) < len(self._rows):
                self._rows = kept
                self._rewrite()
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # A fresh run purges from 0 too: TensorBoard's Python loader ignores a run's first purge marker
            purge = 0 if resume_step is None else resume_step + 1
            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)
        self.sinks = sinks

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": float(step), **{k: float(v) for k, v in metrics.items()}}
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
        for sink in self.sinks:
            sink.log(step, metrics)
        new_columns = [k for k in row if k not in self._columns]
        self._rows.append(row)
        if new_columns:  # rare: rewrite the file with the wider header
            self._columns += new_columns
            self._rewrite()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)

    def _rewrite(self) -> None:
        """The whole file, atomically (a crash mid-write must not lose the run's history)."""
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(self._rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.csv_path)

    @property
    def num_rows(self) -> int:
        return len(self._rows)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def log_final(self, step: int, hparams: dict[str, Any], final_eval: dict[str, Any]) -> None:
        """The end of a run (again at the end of a resumed one): the final evaluation (``final/<key>``) beside the
        run's options (``hparams``: ``hparams_of(config_record)``), for TensorBoard's HParams tab and the sinks."""
        metrics = {f"final/{k}": float(v) for k, v in final_eval.items() if isinstance(v, (int, float))}
        if self.writer is not None:
            write_hparams(self.run_dir / "tb" / "hparams", hparams, metrics, step)
        for sink in self.sinks:
            sink.log_final(metrics)

    def log_video(self, step: int, path: Path) -> None:
        for sink in self.sinks:
            sink.log_video(step, path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for sink in self.sinks:
            sink.close()


def hparams_of(config_record: dict[str, Any]) -> dict[str, float | str]:
    """A run's config.json as TensorBoard hparams, named as on the command line: the agent, every run and agent
    option (nested ones dotted: ``atari.frame_skip``, ``env_kwargs.size``; lists as the CLI writes them, ``64,64``;
    bools as 'true'/'false', which torch's hparams API would otherwise turn into 1.0/0.0; unset ones left out) and the
    commit the run was made with."""
    flat: dict[str, float | str] = {"agent": config_record["agent"]}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                add(f"{prefix}{key}.", item)
        elif value is None:
            return
        elif isinstance(value, bool):
            flat[prefix[:-1]] = str(value).lower()
        elif isinstance(value, (int, float, str)):
            flat[prefix[:-1]] = value
        elif isinstance(value, (list, tuple)):
            flat[prefix[:-1]] = ",".join(str(v) for v in value)
        else:
            flat[prefix[:-1]] = str(value)

    add("", config_record.get("run", {}))
    add("", config_record.get("agent_config", {}))
    if config_record.get("source", {}).get("commit"):
        flat["commit"] = config_record["source"]["commit"]
    return flat


def write_hparams(directory: Path, hparams: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """One HParams session in ``directory`` (a run of its own beside tb/'s, as torch's ``add_hparams`` makes): the
    options and the final metrics, written as scalars there, where the HParams tab reads their values.

    Rewritten whole at each end of a run: TensorBoard keeps the first session record of a run, so an older file
    would hide a resumed run's new options. Only the session records are written, not an experiment record: with
    one, TensorBoard would take the first run's option names for every run (a PPO run's for a DSAC run); without,
    it collects every run's options and the metrics from the sessions' scalars."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    shutil.rmtree(directory, ignore_errors=True)
    _experiment, session_start, session_end = hparams_summaries(hparams, metrics)
    with SummaryWriter(str(directory)) as writer:
        writer.file_writer.add_summary(session_start, step)
        writer.file_writer.add_summary(session_end, step)
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)


def read_progress(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / "progress.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


class WandbSink:
    """``--track wandb``, as CleanRL's ``--track``: the metrics the logger logs (against ``global_step``, the env
    step, so a resumed run's steps line up), the run's config, its final evaluation (the run summary) and evaluation
    videos, in one Weights & Biases run per run directory. Its id is kept in ``RUN_DIR/wandb_id``, so resuming the
    run continues the same wandb run. wandb's files go under the run directory unless ``WANDB_DIR`` says otherwise;
    ``WANDB_MODE=offline`` needs no network (``wandb sync`` uploads later)."""

    ID_FILE = "wandb_id"

    def __init__(self, run_dir: Path, config: dict[str, Any], project: str, entity: str = "", group: str = ""):
        wandb = import_extra("wandb", "wandb", "--track wandb")
        id_file = Path(run_dir) / self.ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else None  # None: wandb makes one
        self._wandb = wandb
        try:
            self.run = wandb.init(project=project, entity=entity or None, group=group or None, name=Path(run_dir).name,
                                  id=run_id, resume="allow", dir=os.environ.get("WANDB_DIR") or str(run_dir))
        except wandb.errors.Error as e:  # not logged in, no network, a project it may not write to
            raise UsageError(f"--track wandb: wandb could not start this run ({e}) — log in with `wandb login`, or "
                             "run offline with WANDB_MODE=offline and upload later with `wandb sync`") from None
        id_file.write_text(self.run.id + "\n")
        self.run.config.update(config, allow_val_change=True)  # a resumed run may have raised total_steps
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "global_step": step})

    def log_final(self, metrics: dict[str, float]) -> None:
        self.run.summary.update(metrics)

    def log_video(self, step: int, path: Path) -> None:
        self.run.log({"eval/video": self._wandb.Video(str(path), format="mp4"), "global_step": step})

    def close(self) -> None:
        self.run.finish()
