"""rlkit2 plot (rlkit2/plot.py) and the curve math it shares with a sweep's curves.png (rlkit2/curves.py): the mean and
band on a common grid by hand, which runs become which line, and one-line errors for bad input."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlkit2.curves import common_grid, mean_and_band
from rlkit2.plot import main

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(parent: Path, name: str, agent: str, env: str, rows: list[dict], trial: dict | None = None) -> Path:
    """A run directory as the run loop writes it: config.json and progress.csv (columns as they first appear)."""
    run_dir = parent / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"agent": agent, "run": {"env": env, "seed": 0},
                                                     "agent_config": {}}))
    if trial is not None:
        (run_dir / "trial.json").write_text(json.dumps(trial))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(run_dir / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return run_dir


def evals(points, metric="eval/return_mean", **extra):
    return [{"step": s, "charts/episode_return": v - 1, metric: v, **extra} for s, v in points]


def plot(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors (rlkit2.cli_errors.ArgumentParser: one line, exit 2)
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------- the math
def test_runs_logged_at_different_steps_are_interpolated_onto_the_range_all_of_them_reached():
    a = [(0, 0.0), (10, 10.0)]
    b = [(0, 2.0), (5, 4.0), (20, 6.0)]  # runs further, logs at other steps
    grid, values = common_grid([a, b])
    assert grid.tolist() == [0, 5, 10]  # every logged step up to 10, where a ends
    np.testing.assert_allclose(values, [[0, 5, 10], [2, 4, 4 + 2 * 5 / 15]])
    with pytest.raises(ValueError, match="share no range"):
        common_grid([[(0, 1.0), (5, 1.0)], [(6, 1.0), (9, 1.0)]])


def test_the_bands_by_hand():
    curves = [[(0, 0.0), (1, 1.0)], [(0, 3.0), (1, 1.0)], [(0, 6.0), (1, 1.0)]]
    x, mean, low, high = mean_and_band(curves, "se")
    assert x.tolist() == [0, 1]
    np.testing.assert_allclose(mean, [3, 1])
    np.testing.assert_allclose(high - mean, [3 / np.sqrt(3), 0])  # sample std 3, over sqrt(n)
    _, _, low, high = mean_and_band(curves, "std")
    np.testing.assert_allclose(high - mean, [np.sqrt(6), 0])  # the runs' std: sqrt(((-3)^2 + 0 + 3^2) / 3)
    _, _, low, high = mean_and_band(curves, "ci")
    assert 0 <= low[0] < 3 < high[0] <= 6 and low[1] == high[1] == 1  # identical values: no width
    np.testing.assert_array_equal(mean_and_band(curves, "ci")[2], low)  # seeded: the same figure every time
    _, mean, low, high = mean_and_band(curves[:1], "ci")
    np.testing.assert_array_equal(low, mean)  # one run: no band
    with pytest.raises(ValueError, match="unknown band 'iqr'"):
        mean_and_band(curves, "iqr")


def test_the_bootstrap_ci_covers_the_mean_of_the_runs_it_resamples():
    rng = np.random.default_rng(1)
    curves = [[(0, v)] for v in rng.normal(10.0, 2.0, size=20)]
    _, mean, low, high = mean_and_band(curves, "ci")
    values = np.array([c[0][1] for c in curves])
    se = values.std(ddof=1) / np.sqrt(len(values))
    # the percentile bootstrap of a mean of 20 is close to the normal interval mean +- 1.96 se
    assert abs((high[0] - low[0]) - 2 * 1.96 * se) < 0.25 * 2 * 1.96 * se
    assert low[0] < mean[0] < high[0]


# ------------------------------------------------------------------------------------------------- the command
@pytest.fixture
def runs(tmp_path):
    parent = tmp_path / "runs"
    make_run(parent, "ppo-Hopper-v5-s0", "ppo", "Hopper-v5", evals([(0, 0.0), (10, 10.0)]))
    make_run(parent, "ppo-Hopper-v5-s1", "ppo", "Hopper-v5", evals([(0, 2.0), (5, 4.0), (20, 6.0)]))
    make_run(parent, "dsac-Hopper-v5-s0", "dsac", "Hopper-v5", evals([(0, 1.0), (10, 3.0)]))
    make_run(parent, "ppo-Ant-v5-s0", "ppo", "Ant-v5", evals([(0, 5.0), (10, 7.0)]))
    return parent


def test_default_groups_are_agent_and_env_with_the_seeds_together(runs, tmp_path, capsys):
    out_png = tmp_path / "curves.png"
    code, out, err = plot(capsys, runs, "--band", "se", "--out", out_png)
    assert code == 0, err
    assert out_png.read_bytes()[:8] == PNG_MAGIC
    # ppo on Hopper: the two seeds on the grid 0, 5, 10: at 10 (10 + 4.667) / 2, +- |10 - 4.667| / 2
    assert out.splitlines()[1:] == ["  Ant-v5 | ppo: 1 run(s), at 10: 7",
                                    "  Hopper-v5 | dsac: 1 run(s), at 10: 3",
                                    "  Hopper-v5 | ppo: 2 run(s), at 10: 7.333 [4.667, 10]"]
    assert "band: ±1 standard error of the mean" in out.splitlines()[0]


def test_groups_by_glob_and_any_logged_metric(runs, tmp_path, capsys):
    code, out, err = plot(capsys, runs / "ppo-Hopper-v5-s0", runs / "ppo-Hopper-v5-s1", runs / "dsac-Hopper-v5-s0",
                          "--group", "on-policy=ppo-*", "--group", "off-policy=*/dsac-*",
                          "--metric", "charts/episode_return", "--band", "std", "--out", tmp_path / "c.pdf")
    assert code == 0, err
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
    assert out.splitlines()[1:] == ["  Hopper-v5 | off-policy: 1 run(s), at 10: 2",
                                    "  Hopper-v5 | on-policy: 2 run(s), at 10: 6.333 [3.667, 9]"]
    code, out, err = plot(capsys, runs, "--group", "ppo=ppo-*", "--out", tmp_path / "c.png")
    assert code == 0 and "left out 1 run(s) that no --group matches: dsac-Hopper-v5-s0" in err


def test_a_sweeps_trials_are_grouped_by_config(tmp_path, capsys):
    sweep = tmp_path / "sweeps" / "lam"
    for lam, seed, value in ((0.9, 0, 1.0), (0.9, 1, 3.0), (0.95, 0, 8.0)):
        key = f"ppo-Hopper-v5-gae_lambda={lam}-s{seed}"
        make_run(sweep, key, "ppo", "Hopper-v5", evals([(0, 0.0), (10, value)]),
                 trial={"key": key, "agent": "ppo", "env": "Hopper-v5", "seed": seed,
                        "params": [["gae_lambda", lam]], "overrides": {}, "variant": ""})
    code, out, err = plot(capsys, sweep, "--band", "se", "--out", tmp_path / "c.png")
    assert code == 0, err
    assert out.splitlines()[1:] == ["  Hopper-v5 | ppo gae_lambda=0.9: 2 run(s), at 10: 2 [1, 3]",
                                    "  Hopper-v5 | ppo gae_lambda=0.95: 1 run(s), at 10: 8"]


def test_a_run_that_has_not_evaluated_yet_is_left_out_with_a_note(runs, tmp_path, capsys):
    make_run(runs, "ppo-Hopper-v5-s2", "ppo", "Hopper-v5", [{"step": 5, "charts/episode_return": 1.0}])
    code, out, err = plot(capsys, runs, "--out", tmp_path / "c.png")
    assert code == 0 and "left out 1 run(s) that have not logged eval/return_mean yet: ppo-Hopper-v5-s2" in err
    assert "Hopper-v5 | ppo: 2 run(s)" in out


def one_line_error(code, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--metric", "eval/return_mea"], "no run logged 'eval/return_mea' (--metric). Did you mean: eval/return_mean? "
                                      "Logged: charts/episode_return, eval/return_mean"),
    (["--x", "wall_time"], "no run logged 'wall_time' (--x)."),
    (["--group", "sac=sac-*"], "--group sac=sac-* matches no run"),
    (["--group", "a=ppo-*", "--group", "b=*-Hopper-*"], "matches --group a and --group b"),
    (["--group", "ppo"], "--group expects NAME=GLOB"),
    (["--out", "curves.xyz"], "--out curves.xyz: the suffix picks the figure's type; use one of: "),
    (["--band", "iqr"], "argument --band: invalid choice: 'iqr'"),
])
def test_bad_input_is_one_line_that_says_what_to_do(runs, tmp_path, capsys, argv, message):
    code, _, err = plot(capsys, runs, *argv)
    assert message in one_line_error(code, err)


def test_a_folder_without_runs_and_a_missing_path_are_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = plot(capsys, tmp_path / "empty")
    assert "'" + str(tmp_path / "empty") + "' holds no run (no progress.csv" in one_line_error(code, err)
    code, _, err = plot(capsys, tmp_path / "nowhere")
    assert "nowhere' is not a directory" in one_line_error(code, err)


def test_without_matplotlib_the_error_gives_the_pip_command(runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, _, err = plot(capsys, runs)
    assert "rlkit2 plot needs matplotlib, which is not installed (the 'plot' extra) — pip install 'rlkit2[plot]'" \
        in one_line_error(code, err)


def test_the_script_wrapper(runs, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot.py"), str(runs), "--out",
                           str(tmp_path / "c.svg")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
