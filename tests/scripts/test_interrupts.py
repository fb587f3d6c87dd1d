"""Issue 22 through the real script: an interrupted run exits non-zero (a job scheduler must tell it from a
finished one) and prints a resume command that works from any directory; a run killed with SIGKILL around its
checkpoint writes resumes, and the temp files of interrupted writes are cleaned up."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
LONG_RUN = ["--agent", "ppo", "--env", "CartPole-v1", "--total_steps", "10000000", "--num_envs", "2", "--num_steps",
            "32", "--minibatch_size", "64", "--eval_every", "0", "--eval_episodes", "1", "--eval_envs", "1",
            "--progress", "false", "--tensorboard", "false"]


def start(args, **kwargs):
    return subprocess.Popen(TRAIN + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(), start_new_session=True, **kwargs)


def wait_for(proc, ready, timeout=180):
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the run did not get going"
        time.sleep(0.2)


def step_files(checkpoints: Path) -> list[Path]:
    return sorted(checkpoints.glob("step_*.pt"))


def test_sigterm_exits_143_and_the_printed_resume_command_works_from_anywhere(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc = start(LONG_RUN + ["--runs_dir", "runs", "--run_name", "long"], cwd=tmp_path / "a")
    progress = tmp_path / "a" / "runs" / "long" / "progress.csv"
    wait_for(proc, lambda: progress.is_file() and len(progress.read_text().splitlines()) >= 3)
    proc.send_signal(signal.SIGTERM)  # what a job scheduler sends at the end of a time slot
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr  # before: 0, as if the run had finished
    saved = step_files(tmp_path / "a" / "runs" / "long" / "checkpoints")
    assert len(saved) == 1 and "run interrupted" in stdout
    steps = int(saved[0].stem.split("_")[1])

    command = shlex.split(re.search(r"^resume with   : (.+)$", stdout, re.M).group(1))
    assert command[:2] == ["python", str(ROOT / "scripts" / "train.py")]
    assert command[2:] == ["--resume", str((tmp_path / "a" / "runs" / "long").resolve())]  # before: runs/long
    out = subprocess.run([sys.executable, *command[1:], "--stop_after_steps", "64"], cwd=tmp_path / "b",
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert out.returncode == 0, out.stderr  # a session ended by --stop_after_steps was asked to end there
    assert f"resumed from step {steps} (checkpoint {saved[0].resolve()})" in out.stdout
    assert f"run interrupted after {steps + 64} env steps" in out.stdout


def test_sigkill_around_checkpoint_writes_then_resume_finishes_without_stale_temp_files(tmp_path):
    checkpoints = tmp_path / "k" / "checkpoints"
    proc = start(LONG_RUN + ["--checkpoint_every", "64", "--keep_checkpoints", "2", "--runs_dir", str(tmp_path),
                             "--run_name", "k"])
    try:
        wait_for(proc, lambda: len(step_files(checkpoints)) >= 2)  # writing a checkpoint every iteration
        # What a kill -9 in the middle of save_atomic leaves (planted, so the test does not depend on timing),
        # and files of the user's that only look similar
        (checkpoints / ".step_000000000064.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
        (checkpoints / ".final.pt.x9y8z7.tmp").write_bytes(b"")
        (checkpoints / "notes.tmp").write_text("mine")
        (checkpoints / "step_64.pt.tmp").write_text("mine too")
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    latest = int(step_files(checkpoints)[-1].stem.split("_")[1])

    out = subprocess.run(TRAIN + ["--resume", str(tmp_path / "k"), "--total_steps", str(latest + 128)],
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    names = {p.name for p in checkpoints.iterdir()}
    assert not [n for n in names if n.endswith(".tmp") and n.startswith(".")]  # before: they stayed forever
    assert {"notes.tmp", "step_64.pt.tmp", "final.pt"} <= names
    assert f"resumed from step {latest}" in out.stdout and f"run finished after {latest + 128} env steps" in out.stdout
