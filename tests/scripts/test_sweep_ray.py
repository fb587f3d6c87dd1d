"""Sweeps on Ray Tune through scripts/sweep.py, as a user runs them (needs the ``ray`` extra; skipped without it):
a kill -2 and a kill -9 of the driver lose nothing and rerun nothing finished, every socket Ray listens on is on
loopback, Ray and --serial train the same runs, and a one-node cluster started with ``ray start --head`` is joined
through RAY_ADDRESS. Traffic stays on 127.0.0.1."""

import csv
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.tune")

from ray_helpers import RAY_TMP, ray_env, stop_our_ray  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SWEEP = [sys.executable, str(ROOT / "scripts" / "sweep.py")]
TINY = ["--set", "total_steps=2048", "--set", "eval_every=1024", "--set", "eval_episodes=2", "--set", "eval_envs=2",
        "--set", "num_envs=2", "--set", "num_steps=128", "--set", "tensorboard=false", "--set", "checkpoint_every=512"]


# Their Rays are isolated from any other on the machine: own RAY_TMPDIR, a subreaper, stop_our_ray (ray_helpers.py).


@pytest.fixture(autouse=True)
def no_ray_left_behind():
    yield
    stop_our_ray()


@pytest.fixture(autouse=True, scope="module")
def remove_ray_files():
    yield
    import shutil

    shutil.rmtree(Path(RAY_TMP) / "ray", ignore_errors=True)


def listening_sockets() -> set[tuple[str, int]]:
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    sockets = set()
    for line in out.splitlines():
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        sockets.add((host.strip("[]"), int(port)))
    return sockets


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "::ffff:127.0.0.1") or host.startswith("127.")


def finished(directory: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in directory.glob("*/checkpoints/final.pt"))


def sweep_cmd(root: Path, name: str, *extra: str) -> list[str]:
    return [*SWEEP, "--name", name, "--root", str(root), "--agent", "ppo", "--env", "CartPole-v1", "--seeds", "0-1",
            "--grid", "lr=1e-3,3e-4", "--cpus-per-trial", "1", *TINY, *extra]


@pytest.mark.skipif(not Path("/usr/bin/ss").exists() and not Path("/bin/ss").exists(), reason="needs ss (iproute2)")
def test_killed_sweeps_resume_without_rerunning_finished_trials_and_ray_listens_on_loopback_only(tmp_path):
    before = listening_sockets()
    directory = tmp_path / "kill"
    driver = subprocess.Popen(sweep_cmd(tmp_path, "kill", "--max-concurrent", "1"), env=ray_env(), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    new_sockets: set = set()
    deadline = time.time() + 600
    while len(finished(directory)) < 1 and time.time() < deadline and driver.poll() is None:
        new_sockets |= listening_sockets() - before
        time.sleep(0.5)
    assert len(finished(directory)) >= 1, driver.communicate()[0][-3000:]
    assert new_sockets, "no listening socket of Ray's was seen"
    assert all(is_loopback(host) for host, _ in new_sockets), new_sockets
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    out = driver.communicate(timeout=300)[0]
    assert driver.returncode in (0, 130), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    done = finished(directory)
    mtimes = {p: p.stat().st_mtime_ns for key in done for p in (directory / key).rglob("*") if p.is_file()}

    driver = subprocess.Popen(sweep_cmd(tmp_path, "kill", "--max-concurrent", "1"), env=ray_env(), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while len(finished(directory)) < len(done) + 1 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    driver.kill()  # kill -9: no chance to save anything
    driver.wait()
    stop_our_ray()  # the killed driver's Ray, orphaned

    out = subprocess.run(sweep_cmd(tmp_path, "kill"), env=ray_env(), cwd=tmp_path, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert len(finished(directory)) == 4
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # finished before the kills: untouched
    rows = list(csv.DictReader(open(directory / "results.csv")))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    for row in rows:  # the table is each run's own final evaluation
        progress = list(csv.DictReader(open(directory / row["key"] / "progress.csv")))
        final = [float(r["eval/return_mean"]) for r in progress if r.get("eval/return_mean")][-1]
        assert float(row["final"]) == pytest.approx(final)


def test_ray_and_serial_train_the_same_runs(tmp_path):
    common = [*SWEEP, "--root", str(tmp_path), "--agent", "ppo", "--env", "CartPole-v1", "--seeds", "0-1", *TINY]
    for name, extra in (("ray", []), ("serial", ["--serial"])):
        out = subprocess.run([*common, "--name", name, *extra], env=ray_env(), cwd=tmp_path, capture_output=True,
                             text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    finals = {name: [float(r["final"]) for r in csv.DictReader(open(tmp_path / name / "results.csv"))]
              for name in ("ray", "serial")}
    assert finals["ray"] == finals["serial"] and len(finals["ray"]) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_started_with_ray_start_is_joined_through_ray_address(tmp_path):
    port = free_port()
    # a one-node cluster on loopback, workers at normal priority, joined with its auth token (docs/sweeps.md)
    env = {**ray_env(), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_worker_niceness": "0", "RAY_AUTH_MODE": "token"}
    start = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
                            "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    out = subprocess.run([*SWEEP, "--name", "cluster", "--root", str(tmp_path), "--agent", "ppo", "--env",
                          "CartPole-v1", "--seeds", "0", *TINY], env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"},
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"joined the Ray cluster at 127.0.0.1:{port}" in out.stdout
    assert finished(tmp_path / "cluster") == ["ppo-CartPole-v1-s0"]


def test_asha_stops_a_trailing_trial_early_and_a_rerun_leaves_it_stopped(tmp_path):
    """One trial at a time: lr 1e-3 reaches the first rung first and goes on; lr 1e-9 (a random policy) trails it
    at that rung and is stopped there, and marked so that a rerun neither resumes nor restarts it."""
    cmd = [*SWEEP, "--name", "asha", "--root", str(tmp_path), "--agent", "ppo", "--env", "CartPole-v1", "--seeds",
           "0", "--grid", "lr=1e-3,1e-9", "--scheduler", "asha", "--reduction-factor", "2", "--max-concurrent", "1",
           *[w.replace("total_steps=2048", "total_steps=4096") for w in TINY]]
    out = subprocess.run(cmd, env=ray_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = {r["lr"]: r for r in csv.DictReader(open(tmp_path / "asha" / "results.csv"))}
    assert rows["1e-3"]["status"] == "finished" and int(rows["1e-3"]["steps"]) >= 4096
    assert rows["1e-9"]["status"] == "stopped" and int(rows["1e-9"]["steps"]) < 4096
    assert "python scripts/train.py --agent ppo --env CartPole-v1 --seed 0" in out.stdout and "--lr 1e-3" in out.stdout
    again = subprocess.run(cmd, env=ray_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "2 of 2 trials already finished (or stopped early)" in again.stdout, again.stdout[-2000:]


@pytest.mark.parametrize("search", ["random", "optuna"])
def test_a_search_samples_configs_reports_the_best_and_a_rerun_trains_nothing_again(tmp_path, search):
    pytest.importorskip("optuna") if search == "optuna" else None
    cmd = [*SWEEP, "--name", search, "--root", str(tmp_path), "--agent", "ppo", "--env", "CartPole-v1", "--seeds", "3",
           "--search", search, "--trials", "3", "--space", "lr=loguniform:1e-4:1e-2", "--space", "epochs=randint:2:5",
           *TINY]
    out = subprocess.run(cmd, env=ray_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / search / "results.csv")))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"finished"}, rows
    assert all(1e-4 <= float(r["lr"]) <= 1e-2 and 2 <= int(r["epochs"]) <= 4 for r in rows)
    assert "python scripts/train.py --agent ppo --env CartPole-v1 --seed 3" in out.stdout and "--lr " in out.stdout
    if search == "random":  # seeded sampling: the same configs again, all finished, none trained again
        mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / search).glob("*/checkpoints/final.pt")}
        again = subprocess.run(cmd, env=ray_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes and len(mtimes) == 3
        assert len(list(csv.DictReader(open(tmp_path / search / "results.csv")))) == 3
