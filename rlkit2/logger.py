"""Metrics to TensorBoard, ``progress.csv`` and the console, plus phase timers.

Metric names are namespaced like CleanRL's: ``charts/episode_return``, ``losses/policy_loss``,
``eval/return_mean``, ``perf/steps_per_sec``, ``perf/share_env`` ...
"""

from __future__ import annotations

import csv
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


class Logger:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True, console: bool = True,
                 resume_step: int | None = None, resume_rows: int | None = None):
        """``resume_step``: the env step of the checkpoint a resumed run continues from, ``resume_rows``: the rows
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

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": float(step), **{k: float(v) for k, v in metrics.items()}}
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_progress(run_dir: str | Path) -> list[dict[str, float]]:
    with open(Path(run_dir) / "progress.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
