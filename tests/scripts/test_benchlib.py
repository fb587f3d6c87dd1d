"""The benchmark scripts' shared record writer: one JSON line per run, stamped with the commit it ran on."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from benchlib import append_record  # noqa: E402


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
