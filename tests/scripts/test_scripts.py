"""The three uses through the real scripts: train -> evaluate, custom env by path, video, interrupt + resume,
and the error messages users see for bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]
EVALUATE = [sys.executable, str(ROOT / "scripts" / "evaluate.py")]
QUIET = ["--progress", "false", "--tensorboard", "false"]


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=300, **kwargs)


def run_dir_from(stdout: str) -> Path:
    return Path(next(l.split(":", 1)[1].strip() for l in stdout.splitlines() if l.startswith("run directory")))


def test_train_then_evaluate_custom_env_by_path(tmp_path):
    out = run(TRAIN + ["--agent", "ppo", "--env", "toy_envs:FixedHorizonEnv", "--total_steps", "4096",
                       "--num_envs", "4", "--num_steps", "64", "--eval_every", "2048", "--runs_dir", str(tmp_path),
                       "--tensorboard", "true", "--progress", "false"])
    assert out.returncode == 0, out.stderr
    run_dir = run_dir_from(out.stdout)
    assert (run_dir / "config.json").is_file() and (run_dir / "progress.csv").is_file()
    assert any((run_dir / "tb").iterdir()), "no TensorBoard event file"
    assert {"best.pt", "final.pt"} <= {p.name for p in (run_dir / "checkpoints").iterdir()}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["env"] == "toy_envs:FixedHorizonEnv" and config["agent_config"]["clip_eps"] == 0.25

    ev = run(EVALUATE + [str(run_dir), "--episodes", "4", "--json"])
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["episodes"] == 4 and result["checkpoint"].endswith("best.pt")
    assert 0 <= result["return_mean"] <= 8  # FixedHorizonEnv: at most 1 reward per step, 8 steps


def test_dsac_learns_a_custom_continuous_env_through_the_scripts(tmp_path):
    out = run(TRAIN + ["--agent", "dsac", "--env", "toy_envs:ReachTargetEnv", "--total_steps", "1500",
                       "--learning_starts", "200", "--steps_per_iteration", "250", "--hidden", "32,32",
                       "--critic_lr", "1e-3", "--policy_lr", "1e-3", "--alpha_lr", "3e-3", "--eval_every", "0", "--eval_episodes", "10",
                       "--runs_dir", str(tmp_path)] + QUIET)
    assert out.returncode == 0, out.stderr
    run_dir = run_dir_from(out.stdout)
    ev = run(EVALUATE + [str(run_dir), "--episodes", "10", "--json"])
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert result["episodes"] == 10 and result["return_mean"] > -1.0, result  # random policy: about -6.7


def test_train_and_evaluate_mujoco_with_video(tmp_path):
    out = run(TRAIN + ["--agent", "ppo", "--env", "InvertedPendulum-v5", "--total_steps", "2048", "--eval_every",
                       "0", "--eval_episodes", "2", "--runs_dir", str(tmp_path)] + QUIET)
    assert out.returncode == 0, out.stderr
    assert "final evaluation:" in out.stdout and "tensorboard --logdir" in out.stdout
    run_dir = run_dir_from(out.stdout)
    ev = run(EVALUATE + [str(run_dir), "--episodes", "2", "--video", "--checkpoint", "final"])
    assert ev.returncode == 0, ev.stderr
    assert "deterministic episodes" in ev.stdout
    video = run_dir / "videos" / "final.mp4"
    assert video.is_file() and video.stat().st_size > 1000


@pytest.mark.parametrize("backend", ["sync", "async"])
def test_sigint_saves_and_resume_continues(tmp_path, backend):
    # Ctrl-C reaches the whole process group: async env workers must survive it until the save is done.
    proc = subprocess.Popen(TRAIN + ["--agent", "ppo", "--env", "CartPole-v1", "--total_steps", "10000000",
                                     "--num_envs", "4", "--minibatch_size", "64", "--backend", backend,
                                     "--runs_dir", str(tmp_path), "--run_name", "long"] + QUIET,
                            start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    progress = tmp_path / "long" / "progress.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not progress.is_file() or len(progress.read_text().splitlines()) < 3):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: every process in the group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # 128 + SIGINT: interrupted, not finished (issue 22)
    assert "run interrupted" in stdout and "resume with" in stdout
    steps = [p for p in (tmp_path / "long" / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert len(steps) == 1
    saved_steps = int(steps[0].stem.split("_")[1])
    assert saved_steps > 0

    out = run(TRAIN + ["--resume", str(tmp_path / "long"), "--stop_after_steps", "512"])
    assert out.returncode == 0, out.stderr
    assert f"run interrupted after {saved_steps + 512} env steps" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["--agent", "ppo", "--env", "CartPole-v1", "--lr_rate", "3"], "Unknown option '--lr_rate' for agent 'ppo'"),
    (["--agent", "ppo", "--env", "CartPole-v1", "--batch_mode", "foo"], "allowed values: shuffle_transitions"),
    (["--agent", "ppo", "--env", "CartPole-v1", "--gamma", "2"], "'gamma' must be in (0, 1]"),
    (["--agent", "dqn", "--env", "CartPole-v1"], "Unknown agent 'dqn'. Available agents: a2c, agac, dsac, ppo, pref, vpn"),
    (["--agent", "ppo", "--env", "CartPol-v1"], "Did you mean: CartPole-v1"),
    (["--agent", "ppo", "--env", "toy_envs:NoSuchEnv"], "module 'toy_envs' has no attribute 'NoSuchEnv'"),
    (["--agent", "ppo", "--env", "CartPole-v1", "--backend", "ale"], "backend 'ale' runs Atari ids only"),
    (["--resume", "/nonexistent/run"], "is not a run directory (no config.json)"),
])
def test_train_bad_input_messages(tmp_path, capsys, args, message):
    # In-process: scripts/train.py is a thin wrapper around main_train (its exit code is main_train's).
    from rlkit2.cli import main_train

    assert main_train(args + ["--runs_dir", str(tmp_path)] + QUIET) == 2
    assert message in capsys.readouterr().err


def test_bad_input_through_the_real_script(tmp_path):
    out = run(TRAIN + ["--agent", "ppo", "--env", "CartPole-v1", "--lr_rate", "3"])
    assert out.returncode == 2 and "error: Unknown option '--lr_rate'" in out.stderr
    assert "Traceback" not in out.stderr


def test_evaluate_bad_checkpoint_message(tmp_path):
    out = run(TRAIN + ["--agent", "ppo", "--env", "CartPole-v1", "--total_steps", "256", "--num_steps", "32",
                       "--minibatch_size", "64", "--eval_every", "0", "--eval_episodes", "1", "--runs_dir",
                       str(tmp_path)] + QUIET)
    assert out.returncode == 0, out.stderr
    run_dir = run_dir_from(out.stdout)
    final = run_dir / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[:100])
    ev = run(EVALUATE + [str(run_dir), "--checkpoint", "final"])
    assert ev.returncode == 2 and "not a readable rlkit2 checkpoint" in ev.stderr and "Traceback" not in ev.stderr
    ev = run(EVALUATE + [str(tmp_path / "nothing")])
    assert ev.returncode == 2 and "not a run directory" in ev.stderr


def test_help_and_list():
    out = run(TRAIN + ["--agent", "ppo", "--help"])
    assert out.returncode == 0
    assert "--gae_lambda FLOAT (default: 0.9)" in out.stdout and "GAE lambda (study: 0.9)" in out.stdout
    assert "--atari.frame_stack INT" in out.stdout
    out = run(TRAIN + ["--list"])
    assert "ppo" in out.stdout and "a2c" in out.stdout


def test_label_script_serves_a_run_and_rejects_a_missing_one(tmp_path):
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "label.py"), str(tmp_path / "nope")],
                         capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert bad.returncode == 2 and "is not a run directory" in bad.stderr
    (tmp_path / "run").mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "label.py"), str(tmp_path / "run"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("labeling") and "http://127.0.0.1:" in line
        import urllib.request

        url = line.split(" at ")[1].split()[0]
        lease = urllib.request.Request(url + "/api/next", data=b'{"rater": "ana"}', method="POST",
                                       headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(lease, timeout=10).status == 204  # nothing to label yet
        assert (tmp_path / "run" / "labels.sqlite").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
