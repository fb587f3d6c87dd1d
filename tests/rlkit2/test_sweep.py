"""Sweeps without Ray: the spec, trial keys, validation before anything runs, the run directories as the truth,
results gathered from them, IQM and its bootstrap CI. The Ray path: tests/scripts/test_sweep_ray.py."""

import csv
import json
import os

import numpy as np
import pytest

from rlkit2.sweep import (SweepError, SweepSpec, expand, iqm, load_spec, parse_assignments, parse_seeds,
                          prepare_directory, run_serial, split_values, stratified_bootstrap_ci, summary_table,
                          trial_result, trial_state, validate_trials)
from rlkit2.sweep_cli import main_sweep

TINY = {"total_steps": "1024", "eval_every": "512", "eval_episodes": "2", "eval_envs": "2", "tensorboard": "false",
        "num_envs": "2", "num_steps": "128"}


def tiny_spec(tmp_path, name="t", seeds=(0, 1), grid=None, **kw) -> SweepSpec:
    return SweepSpec(name=name, agents=["ppo"], envs=["CartPole-v1"], seeds=list(seeds),
                     grid=grid if grid is not None else {"lr": ["1e-3", "3e-4"]}, set=dict(TINY), root=str(tmp_path),
                     **kw)


def test_seeds_values_and_assignments_parse():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0-2,9") == [0, 1, 2, 9]
    assert parse_seeds([3, 1]) == [3, 1]
    for bad in ("4-0", "a", "1,1"):
        with pytest.raises(SweepError):
            parse_seeds(bad)
    assert split_values("0.9,0.95") == ["0.9", "0.95"]
    assert split_values("64,64;256,256") == ["64,64", "256,256"]
    assert parse_assignments(["gae-lambda=0.9,0.95", "rl.entropy_coef=0.01"], "--grid", multi=True) == {
        "gae_lambda": ["0.9", "0.95"], "rl.entropy_coef": ["0.01"]}
    with pytest.raises(SweepError, match="NAME=VALUE"):
        parse_assignments(["lr"], "--set", multi=False)


def test_expand_gives_every_combination_with_stable_keys(tmp_path):
    spec = SweepSpec(name="x", agents=["ppo"], envs=["Hopper-v5", "ALE/Pong-v5"], seeds=[0, 1],
                     grid={"gae_lambda": ["0.9", "0.95"], "policy_hidden": ["64,64", "32,32"]}, root=str(tmp_path))
    trials = expand(spec)
    assert len(trials) == 2 * 2 * 2 * 2
    assert trials[0].key == "ppo-Hopper-v5-gae_lambda=0.9-policy_hidden=64_64-s0"
    assert trials[1].key.endswith("-s1") and trials[1].config_name == trials[0].config_name
    assert any(t.key.startswith("ppo-Pong-v5-") for t in trials)
    assert [t.key for t in expand(spec)] == [t.key for t in trials]  # stable
    assert trials[0].overrides == {"gae_lambda": "0.9", "policy_hidden": "64,64", "seed": 0}


def test_a_typo_is_one_clear_error_before_any_trial_runs(tmp_path):
    spec = tiny_spec(tmp_path, grid={"gae_lamda": ["0.9", "0.95"]})
    with pytest.raises(SweepError) as info:
        validate_trials(expand(spec), spec.directory)
    message = str(info.value)
    assert "4 of 4 trials cannot start" in message and "gae_lamda" in message and "gae_lambda" in message
    assert message.count("gae_lamda") == 1  # one line for the one mistake, not one per trial
    bad_value = tiny_spec(tmp_path, grid={"clip_eps": ["0.2", "-1"]})
    with pytest.raises(SweepError, match=r"(?s)2 of 4 trials cannot start.*clip_eps"):
        validate_trials(expand(bad_value), bad_value.directory)
    assert not spec.directory.exists()
    too_big = tiny_spec(tmp_path, grid={"minibatch_size": ["64", "512"]})  # only the agent knows its batch
    with pytest.raises(SweepError, match=r"(?s)2 of 4 trials cannot start.*minibatch_size"):
        validate_trials(expand(too_big), too_big.directory)


def test_a_changed_grid_under_an_existing_name_is_refused_but_more_seeds_are_not(tmp_path):
    prepare_directory(tiny_spec(tmp_path))
    prepare_directory(tiny_spec(tmp_path, seeds=(0, 1, 2)))  # adding seeds is fine
    with pytest.raises(SweepError, match=r"grid: was .*'1e-3'.*now .*'1e-4'"):
        prepare_directory(tiny_spec(tmp_path, grid={"lr": ["1e-4"]}))


def test_spec_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text('name = "bench"\nagent = "ppo"\nenv = ["CartPole-v1"]\nseeds = "0-2"\n'
                    '[grid]\nlr = [1e-3, 3e-4]\n[set]\ntotal_steps = 1024\n')
    spec = load_spec(path, root=str(tmp_path))
    assert spec.agents == ["ppo"] and spec.seeds == [0, 1, 2] and spec.grid == {"lr": [1e-3, 3e-4]}
    assert len(expand(spec)) == 6
    (tmp_path / "bad.toml").write_text('agent = "ppo"\nenv = "CartPole-v1"\nseeds = 0\nsteps = 5\n')
    with pytest.raises(SweepError, match="unknown key.*steps"):
        load_spec(tmp_path / "bad.toml")
    with pytest.raises(SweepError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")


def test_iqm_and_bootstrap_by_hand():
    assert iqm([1, 2, 3, 4]) == pytest.approx(2.5)  # the middle two
    assert iqm([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(3.5)  # drops 0, 1 and 6, 100
    assert iqm([5.0]) == 5.0
    low, high = stratified_bootstrap_ci({"a": [1.0, 2.0, 3.0, 4.0, 5.0]}, statistic=np.mean, reps=4000)
    assert 1.5 < low < 3.0 < high < 4.5
    assert stratified_bootstrap_ci({"a": [2.0, 2.0]}) == (2.0, 2.0)
    # stratified: each task keeps its own number of runs in every resample, so the two tasks' mean is exact here
    low, high = stratified_bootstrap_ci({"a": [0.0, 0.0], "b": [10.0, 10.0]}, statistic=np.mean)
    assert low == high == 5.0


def test_serial_sweep_finishes_resumes_and_never_reruns_a_finished_trial(tmp_path):
    spec = tiny_spec(tmp_path)
    trials = expand(spec)
    directory = prepare_directory(spec)
    run_serial(trials[:2], directory, report=lambda _: None)
    assert [trial_state(directory / t.key) for t in trials] == ["finished", "finished", "pending", "pending"]
    mtimes = {p: p.stat().st_mtime_ns for t in trials[:2] for p in (directory / t.key).rglob("*") if p.is_file()}
    # a trial that never checkpointed (a kill before its first checkpoint) starts afresh
    (directory / trials[2].key).mkdir()
    (directory / trials[2].key / "progress.csv").write_text("step,junk\n1,2\n")
    assert main_sweep(["--serial", "--name", "t", "--root", str(tmp_path), "--agent", "ppo", "--env", "CartPole-v1",
                       "--seeds", "0-1", "--grid", "lr=1e-3,3e-4", *sum((["--set", f"{k}={v}"]
                                                                          for k, v in TINY.items()), [])]) == 0
    assert all(trial_state(directory / t.key) == "finished" for t in trials)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # finished runs untouched
    rows = list(csv.DictReader(open(directory / "results.csv")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    for t, row in zip(trials, rows):  # the table is each run's own final evaluation
        progress = list(csv.DictReader(open(directory / t.key / "progress.csv")))
        final = [float(r["eval/return_mean"]) for r in progress if r.get("eval/return_mean")][-1]
        assert float(row["final"]) == pytest.approx(final)
        assert "junk" not in progress[0]
    summary = summary_table([trial_result(t, directory) for t in trials])
    assert [e["finished"] for e in summary] == [2, 2]
    assert "| ppo | CartPole-v1 | lr=1e-3 | 2/2 |" in (directory / "table.md").read_text()
    assert (directory / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # drawn by rlkit2/curves.py


def test_a_failed_trial_is_shown_with_its_error_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    spec = tiny_spec(tmp_path, seeds=(0,))
    trials = expand(spec)
    directory = prepare_directory(spec)
    import rlkit2.run as run_module

    real_train = run_module.train

    def flaky(run, cfg, **kw):
        if cfg.lr == pytest.approx(1e-3):
            (directory / run.run_name).mkdir(parents=True, exist_ok=True)
            raise RuntimeError("the env exploded")
        return real_train(run, cfg, **kw)

    monkeypatch.setattr(run_module, "train", flaky)
    messages = []
    run_serial(trials, directory, report=messages.append)
    rows = [trial_result(t, directory) for t in trials]
    assert [r["status"] for r in rows] == ["failed", "finished"]
    assert rows[0]["error"] == "RuntimeError: the env exploded"
    assert any("failed: RuntimeError: the env exploded" in m for m in messages)
    assert json.loads((directory / trials[0].key / "error.json").read_text())["traceback"]
    assert "(1 failed)" in __import__("rlkit2.sweep", fromlist=["render_table"]).render_table(summary_table(rows))
    # the command line runs the same sweep: the finished trial is not rerun, the failed one is retried and fails
    # again, and the exit code says the sweep did not complete
    assert main_sweep(["--serial", "--name", "t", "--root", str(tmp_path), "--agent", "ppo", "--env", "CartPole-v1",
                       "--grid", "lr=1e-3,3e-4", *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])]) == 1
    assert "error: 1 of 2 trials failed (e.g. ppo-CartPole-v1-lr=1e-3-s0" in capsys.readouterr().err


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main_sweep(["--name", "x", "--root", str(tmp_path), "--agent", "ppo", "--env", "CartPole-v1",
                       "--grid", "gae_lamda=0.9", "--serial"]) == 2
    assert "gae_lamda" in capsys.readouterr().err
    assert main_sweep(["--name", "nothing", "--root", str(tmp_path), "--table"]) == 2
    assert "No sweep 'nothing'" in capsys.readouterr().err
    assert main_sweep(["--name", "../up", "--agent", "ppo", "--env", "CartPole-v1", "--serial"]) == 2
    assert "names a folder" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_without_ray_the_error_says_how_to_install_it_or_run_serially(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as where the extra is missing
    args = ["--name", "noray", "--root", str(tmp_path), "--agent", "ppo", "--env", "CartPole-v1",
            *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])]
    assert main_sweep(args) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[ray]'" in err and "--serial" in err and "Traceback" not in err


def test_the_checked_in_benchmark_specs_resolve(tmp_path):
    from pathlib import Path

    specs = sorted((Path(__file__).resolve().parents[2] / "benchmarks").glob("*.toml"))
    assert specs
    for path in specs:
        spec = load_spec(path, root=str(tmp_path))
        validate_trials(expand(spec), spec.directory, build=False)


def test_on_eval_reports_every_evaluation_and_the_last_only_after_the_final_checkpoint(tmp_path):
    """A scheduler may end a trial at any report (Ray Tune raises SystemExit there): at the report of the last
    evaluation the run must already be finished."""
    from rlkit2.run import resolve_config, train

    run, cfg = resolve_config("ppo", "CartPole-v1", {**TINY, "runs_dir": str(tmp_path), "run_name": "r",
                                                     "progress": "false"})
    reports = []

    def on_eval(step, metrics):
        reports.append((step, sorted(metrics), (tmp_path / "r" / "checkpoints" / "final.pt").is_file()))

    train(run, cfg, on_eval=on_eval)
    assert [step for step, _, _ in reports] == [512, 1024]
    assert all("eval/return_mean" in keys for _, keys, _ in reports)
    assert [final_saved for _, _, final_saved in reports] == [False, True]


def test_search_spaces_parse_and_a_search_is_checked_before_it_starts(tmp_path, capsys):
    from rlkit2.sweep import parse_distribution, search_probes

    assert parse_distribution("lr", "loguniform:1e-5:1e-3") == ("loguniform", [1e-5, 1e-3])
    assert parse_distribution("n", "randint:2:5") == ("randint", [2, 5])
    assert parse_distribution("h", "choice:64,64;32,32") == ("choice", ["64,64", "32,32"])
    for bad in ("loguniform:0:1", "uniform:2:1", "normal:0:1", "choice:", "randint:a:b"):
        with pytest.raises(SweepError, match="expected loguniform"):
            parse_distribution("x", bad)
    spec = SweepSpec(name="s", agents=["ppo"], envs=["CartPole-v1"], seeds=[0], root=str(tmp_path), search="random",
                     trials=2, space={"lr": "loguniform:1e-4:1e-2", "epochs": "randint:2:5"})
    probes = search_probes(spec)
    assert [dict(p.params) for p in probes] == [{"lr": "0.0001", "epochs": 2}, {"lr": "0.01", "epochs": 4}]
    assert probes[0].overrides == {"lr": "0.0001", "epochs": "2", "seed": 0}
    base = ["--name", "s", "--root", str(tmp_path), "--agent", "ppo", "--env", "CartPole-v1", "--search", "random"]
    assert main_sweep([*base, "--trials", "2", "--space", "lr=loguniform:1e-4:1e-2", "--seeds", "0-1"]) == 2
    assert "one seed" in capsys.readouterr().err
    assert main_sweep([*base, "--trials", "2", "--space", "clip_eps=uniform:-1:0.3"]) == 2  # a probe that fails
    assert "clip_eps" in capsys.readouterr().err
    assert main_sweep([*base, "--space", "lr=loguniform:1e-4:1e-2"]) == 2
    assert "--trials N" in capsys.readouterr().err


# ------------------------------------------------------------------------- variants, and a peer library as a trial
def _variants_spec(tmp_path):
    path = tmp_path / "peers.toml"
    path.write_text('name = "peers"\nenv = "CartPole-v1"\nseeds = "0-1"\n'
                    '[set]\ntotal_steps = 1024\neval_every = 512\neval_episodes = 2\neval_envs = 2\nnum_envs = 2\n'
                    '[variants.rlkit2]\nagent = "ppo"\nnum_steps = 128\ntensorboard = false\n'
                    '[variants.sb3]\nagent = "sb3_ppo"\nn_steps = 64\n'
                    '[report]\nbaseline = "rlkit2"\n')
    return load_spec(path, root=str(tmp_path))


def test_variants_name_their_configs_and_may_bring_their_own_agent(tmp_path):
    spec = _variants_spec(tmp_path)
    trials = expand(spec)
    assert [t.key for t in trials] == ["ppo-CartPole-v1-rlkit2-s0", "ppo-CartPole-v1-rlkit2-s1",
                                       "sb3_ppo-CartPole-v1-sb3-s0", "sb3_ppo-CartPole-v1-sb3-s1"]
    assert [t.config_name for t in trials] == ["rlkit2", "rlkit2", "sb3", "sb3"]
    assert trials[2].overrides == {"total_steps": 1024, "eval_every": 512, "eval_episodes": 2, "eval_envs": 2,
                                   "num_envs": 2, "n_steps": 64, "seed": 0}  # no 'agent' among the options
    # variants cross the grid; a variant without an agent runs with each of the spec's agents
    both = SweepSpec(name="v", agents=["ppo", "a2c"], envs=["CartPole-v1"], seeds=[0], grid={"lr": ["1e-3", "3e-4"]},
                     variants={"plain": {}, "no norm": {"normalize_obs": "false"}}, root=str(tmp_path))
    keys = [t.key for t in expand(both)]
    assert len(keys) == 2 * 2 * 2 and "a2c-CartPole-v1-no_norm-lr=3e-4-s0" in keys
    assert next(t for t in expand(both) if t.key == "a2c-CartPole-v1-no_norm-lr=3e-4-s0").config_name == \
        "no norm, lr=3e-4"
    prepare_directory(spec)
    changed = _variants_spec(tmp_path)
    changed.variants["sb3"]["n_steps"] = 32
    with pytest.raises(SweepError, match="variants: was"):
        prepare_directory(changed)


def test_a_peer_option_typo_is_caught_before_the_sweep_starts(tmp_path):
    spec = SweepSpec(name="p", agents=["sb3_ppo"], envs=["CartPole-v1"], seeds=[0], set={"n_step": "64"},
                     root=str(tmp_path))
    with pytest.raises(SweepError, match=r"unknown option 'n_step' \(did you mean 'n_steps'\?\)"):
        validate_trials(expand(spec), spec.directory)
    spec.set = {"n_steps": "64", "backend": "envpool"}
    with pytest.raises(SweepError, match="DummyVecEnv on the CPU"):
        validate_trials(expand(spec), spec.directory)


def test_a_peer_runs_beside_rlkit2_and_the_results_hold_both(tmp_path):
    pytest.importorskip("stable_baselines3")
    spec = _variants_spec(tmp_path)
    trials = expand(spec)
    validate_trials(trials, spec.directory)
    directory = prepare_directory(spec)
    run_serial(trials, directory, report=lambda _: None)
    assert all(trial_state(directory / t.key) == "finished" for t in trials)
    peer_dir = directory / "sb3_ppo-CartPole-v1-sb3-s0"
    progress = list(csv.DictReader(open(peer_dir / "progress.csv")))
    assert [int(float(r["step"])) for r in progress] == [512, 1024]  # rlkit2's evaluation schedule
    assert json.loads((peer_dir / "trial.json").read_text())["agent"] == "sb3_ppo"
    mtimes = {p: p.stat().st_mtime_ns for p in peer_dir.rglob("*")}
    run_serial(trials, directory, report=lambda _: None)  # finished: not rerun
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    assert main_sweep(["--spec", str(tmp_path / "peers.toml"), "--root", str(tmp_path), "--table"]) == 0
    data = json.loads((directory / "results.json").read_text())
    assert data["report"] == {"baseline": "rlkit2"} and len(data["trials"]) == 4
    peer = next(t for t in data["trials"] if t["key"] == "sb3_ppo-CartPole-v1-sb3-s0")
    assert peer["final"] == pytest.approx(float(progress[-1]["eval/return_mean"]))
    assert peer["curves"]["eval/return_mean"] == [[512, pytest.approx(float(progress[0]["eval/return_mean"]))],
                                                  [1024, pytest.approx(peer["final"])]]
    assert peer["wall_time_s"] > 0 and peer["commit"]
    ours = next(t for t in data["trials"] if t["key"] == "ppo-CartPole-v1-rlkit2-s0")
    assert ours["variant"] == "rlkit2" and "charts/action_std" not in ours["last"] and "eval/return_mean" in ours["last"]
    # the best train.py command is never a peer's
    assert "--agent ppo" in (directory / "table.md").read_text().split("best final")[1]


def test_a_spec_takes_set_seeds_and_name_from_the_command_line_and_refuses_the_rest(tmp_path, capsys):
    from rlkit2.sweep_cli import build_parser, spec_from_args

    path = tmp_path / "s.toml"
    path.write_text('name = "s"\nagent = "ppo"\nenv = "CartPole-v1"\nseeds = "0-2"\n[set]\ntotal_steps = 1024\n')
    spec = spec_from_args(build_parser().parse_args(["--spec", str(path), "--name", "s_long", "--seeds", "5",
                                                     "--set", "total_steps=4096", "--set", "lr=1e-3"]))
    assert (spec.name, spec.seeds, spec.set) == ("s_long", [5], {"total_steps": "4096", "lr": "1e-3"})
    assert spec_from_args(build_parser().parse_args(["--spec", str(path)])).seeds == [0, 1, 2]
    assert main_sweep(["--spec", str(path), "--grid", "lr=1e-3,1e-4", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --grid with --spec: put them in the spec file") and "Traceback" not in err
