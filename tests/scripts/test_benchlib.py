"""The benchmark scripts' shared parts: the record writer (one JSON line per run, stamped with the commit it ran on)
the helper that trains one rlkit2 run to completion and reads its progress rows, and a finished run as a record."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from benchlib import append_record, column, train_to_completion  # noqa: E402
from run_record import run_record  # noqa: E402


def test_append_record_stamps_the_commit_and_prints_no_curves(tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    append_record(out, {"env": "A", "curve": [[0, 1.0]], "success_curve": [[0, 0.0]], "final": 1.0})
    append_record(out, {"env": "B", "curve": [[0, 2.0]], "final": 2.0})
    records = [json.loads(line) for line in out.read_text().splitlines()]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert [r["env"] for r in records] == ["A", "B"] and records[0]["curve"] == [[0, 1.0]]
    assert all(r["commit"].split("+")[0] == head for r in records) and head
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed[0] == {"env": "A", "final": 1.0, "commit": records[0]["commit"]}


def test_column_keeps_the_rows_with_the_first_key():
    rows = [{"step": 10, "loss": 1.0}, {"step": 20.0, "eval/return_mean": 5.0, "eval/success_rate": 0.5},
            {"step": 30, "eval/return_mean": 7.0, "eval/success_rate": 1.0}]
    assert column(rows, "eval/return_mean") == [(20, 5.0), (30, 7.0)]
    assert column(rows, "eval/return_mean", "eval/success_rate") == [(20, 5.0, 0.5), (30, 7.0, 1.0)]
    assert column(rows, "missing") == []


def test_train_to_completion_returns_the_config_and_the_evaluations(tmp_path):
    run, cfg, rows, seconds = train_to_completion("ppo", "CartPole-v1", {
        "runs_dir": str(tmp_path), "seed": 0, "total_steps": 1024, "eval_every": 512, "eval_episodes": 2,
        "num_envs": 2, "num_steps": 64, "minibatch_size": 64, "threads_update": 1})
    assert cfg.num_steps == 64 and run.env == "CartPole-v1" and seconds > 0
    assert [step for step, _ in column(rows, "eval/return_mean")] == [512, 1024]

    # the same run as a record (scripts/bench/run_record.py), and a run that has not finished refused
    run_dir = next(tmp_path.iterdir())
    record = run_record(run_dir, window=256)
    assert record["env"] == "CartPole-v1" and record["steps"] == 1024 and record["config"]["run"]["seed"] == 0
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    assert record["run_commit"].split("+")[0] == head.strip() and record["config"]["source"]["device"] == "cpu"
    assert record["curve"] == column(rows, "eval/return_mean") and record["final"] == record["curve"][-1][1]
    assert record["train_curve"] and all(step % 256 == 0 and ret > 0 for step, ret in record["train_curve"])
    assert record["train_curve"][-1][0] == record["steps"]  # the last window ends with the run, not past it
    assert 0 < record["seconds"] < seconds and record["steps_per_sec"] > 0
    (run_dir / "checkpoints" / "final.pt").unlink()
    with pytest.raises(SystemExit, match="has not finished.*--resume"):
        run_record(run_dir)
