"""plot_learning.py: which records become which curves, and a clear error when the filter matches nothing."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from plot_learning import group_curves  # noqa: E402

RECORDS = [
    {"env": "E", "lib": "agac", "seed": 0, "curve": [[1, 0.0]], "success_curve": [[1, 0.5]]},
    {"env": "E", "lib": "agac", "seed": 1, "curve": [[1, 1.0]], "success_curve": [[1, 1.0]]},
    {"env": "E", "lib": "ppo", "seed": 0, "curve": [[1, 2.0]], "success_curve": [[1, 0.0]]},
    {"env": "F", "lib": "agac, dense count bonus", "seed": 0, "curve": [[1, 3.0]], "success_curve": [[1, 0.0]]},
]


def test_group_curves_filters_by_name_and_picks_the_curve_field():
    everything = group_curves(RECORDS, "lib", None, "curve")
    assert {env: dict(groups) for env, groups in everything.items()} == {
        "E": {"agac": [[[1, 0.0]], [[1, 1.0]]], "ppo": [[[1, 2.0]]]},
        "F": {"agac, dense count bonus": [[[1, 3.0]]]}}
    success = group_curves(RECORDS, "lib", ["agac", "ppo"], "success_curve")
    assert list(success) == ["E"] and success["E"]["agac"] == [[[1, 0.5]], [[1, 1.0]]]


def test_a_filter_that_matches_nothing_is_an_error_naming_it(tmp_path):
    jsonl = tmp_path / "runs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "plot_learning.py"), str(jsonl),
                           str(tmp_path / "out.png"), "--only", "sac"], capture_output=True, text=True)
    assert done.returncode != 0 and "with lib in ['sac']" in done.stderr
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "plot_learning.py"), str(jsonl),
                           str(tmp_path / "out.png"), "--only", "agac", "ppo", "--curve", "success_curve"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and (tmp_path / "out.png").stat().st_size > 1000


def test_a_sweeps_results_plot_one_curve_per_config(tmp_path):
    trials = [{"env": "E", "agent": "ppo", "config": config, "seed": seed, "curve": [[1, v], [2, v + 1]],
               "curves": {"eval/success_rate": [[1, 0.0], [2, 1.0]]}}
              for config, seed, v in (("default", 0, 0.0), ("default", 1, 2.0), ("lr=1e-3", 0, 5.0))]
    trials.append({"env": "E", "agent": "ppo", "config": "lr=1e-4", "seed": 0, "curve": [], "curves": {}})  # pending
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"sweep": "s", "trials": trials}))
    for curve in ("curve", "eval/success_rate"):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "plot_learning.py"), str(results),
                               str(tmp_path / "out.png"), "--curve", curve], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "plot_learning.py"), str(results),
                           str(tmp_path / "out.png"), "--only", "ppo"], capture_output=True, text=True)
    assert done.returncode == 0  # an unnamed config is named by its agent
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "plot_learning.py"), str(results),
                           str(tmp_path / "out.png"), "--only", "lr=1e-4"], capture_output=True, text=True)
    assert done.returncode != 0 and "with config in ['lr=1e-4']" in done.stderr  # a pending trial has no curve
