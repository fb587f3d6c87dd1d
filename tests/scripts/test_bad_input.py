"""A table of bad inputs through the entry points (train, evaluate, label, sweep, export): each is one line on stderr
naming the problem, exit code 2 and no traceback (issue 22). Most rows call the scripts' main functions (the
scripts are thin wrappers around them); a few run the real scripts in subprocesses."""

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env
from rlkit2.cli import main_evaluate, main_train
from rlkit2.config import to_dict
from rlkit2.export import main as main_export
from rlkit2.run import resolve_config
from rlkit2.sweep_cli import main_sweep

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--progress", "false", "--tensorboard", "false"]
CARTPOLE = ["--agent", "ppo", "--env", "CartPole-v1"]


def _label_main():
    spec = importlib.util.spec_from_file_location("label_script", ROOT / "scripts" / "label.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run_dirs(tmp: Path) -> dict[str, Path]:
    """Run directories that are wrong in one way each (none has a checkpoint)."""
    run, agent_config = resolve_config("ppo", "CartPole-v1")
    record = {"agent": "ppo", "run": to_dict(run), "agent_config": to_dict(agent_config), "env_is_callable": False}
    dirs = {name: tmp / name for name in ("no_checkpoints", "from_callable", "damaged", "not_ours", "empty")}
    for path in dirs.values():
        path.mkdir()
    (tmp / "a_file").write_text("not a folder")
    (dirs["no_checkpoints"] / "config.json").write_text(json.dumps(record))
    (dirs["from_callable"] / "config.json").write_text(json.dumps({**record, "env_is_callable": True}))
    (dirs["damaged"] / "config.json").write_text('{"agent": "ppo", "run": ')
    (dirs["not_ours"] / "config.json").write_text('{"name": "something else"}')
    return dirs


# (entry point, arguments; {tmp} is the test's folder, {NAME} one of _run_dirs, expected part of the message)
TABLE = [
    # train: names and options
    ("train", ["--agent", "dqn", "--env", "CartPole-v1"], "Unknown agent 'dqn'. Available agents: a2c"),
    ("train", [*CARTPOLE, "--lr_rate", "3"], "Unknown option '--lr_rate' for agent 'ppo'. See: rlkit2 train"),
    ("train", [*CARTPOLE, "positional"], "Unexpected argument 'positional': options are written --name value"),
    ("train", ["--agent"], "argument --agent: expected one argument"),
    # train: values
    ("train", [*CARTPOLE, "--total_steps", "abc"], "Option 'total_steps' expects an integer, got 'abc'"),
    ("train", [*CARTPOLE, "--total_steps", "-5"], "Option 'total_steps' must be >= 1, got -5"),
    ("train", [*CARTPOLE, "--lr", "abc"], "Option 'lr' expects a number, got 'abc'"),
    ("train", [*CARTPOLE, "--normalize_obs", "maybe"], "Option 'normalize_obs' expects true/false"),
    ("train", [*CARTPOLE, "--batch_mode", "foo"], "allowed values: shuffle_transitions"),
    ("train", [*CARTPOLE, "--env_kwargs", "3"], "Option 'env_kwargs' expects a mapping — give it key by key"),
    ("train", [*CARTPOLE, "--max_episode_steps", "0"], "Option 'max_episode_steps' must be >= 1"),
    ("train", [*CARTPOLE, "--seed", "-1"], "Option 'seed' must be in [0, 2**31), got -1"),
    ("train", [*CARTPOLE, "--policy_hidden", "0"], "hidden layer widths must be >= 1, got (0,)"),
    ("train", [*CARTPOLE, "--minibatch_size", "100000"], "Option 'minibatch_size' (100000) is larger than the batch"),
    ("train", [*CARTPOLE, "--device", "gpu"], "Option 'device': Unknown device 'gpu' — use auto"),
    ("train", [*CARTPOLE, "--device", "cuda:99"], "device 'cuda:99' requested but"),
    ("train", [*CARTPOLE, "--backend", "ale"], "backend 'ale' runs Atari ids only (ALE/...-v5), not 'CartPole-v1' — use"),
    ("train", [*CARTPOLE, "--run_name", "../../escaped"], "Option 'run_name' must be a folder name, not a path"),
    ("train", [*CARTPOLE, "--run_name", "{tmp}/absolute"], "Option 'run_name' must be a folder name, not a path"),
    ("train", [*CARTPOLE, "--run_name", "a/b"], "Option 'run_name' must be a folder name, not a path"),
    ("train", [*CARTPOLE, "--runs_dir", "{tmp}/a_file/runs"], "Not a directory: '{tmp}/a_file/runs' — check that"),
    # train: envs
    ("train", ["--agent", "ppo", "--env", "CartPol-v1"], "Did you mean: CartPole-v1"),
    ("train", ["--agent", "ppo", "--env", "ALE/Pongg-v5"], "Did you mean: ALE/Pong-v5"),
    ("train", ["--agent", "ppo", "--env", "Hopper-v5", "--env_kwargs.foo", "1"],
     "Env 'Hopper-v5': its constructor takes no argument 'foo'"),
    ("train", ["--agent", "ppo", "--env", "toy_envs:FixedHorizonEnv", "--env_kwargs.size", "3"],
     "Env 'toy_envs:FixedHorizonEnv': its constructor takes no argument 'size' (env_kwargs {'size': 3}). Fix: drop "
     "--env_kwargs.size; it takes: horizon"),
    ("train", ["--agent", "ppo", "--env", "no_such_module_xyz:Env"], "cannot import module 'no_such_module_xyz'"),
    ("train", ["--agent", "ppo", "--env", "toy_envs:NoSuchEnv"], "module 'toy_envs' has no attribute 'NoSuchEnv'"),
    ("train", ["--agent", "ppo", "--env", "os:path"], "'path' is a module, not a class or factory. Fix: name a"),
    ("train", ["--agent", "dsac", "--env", "CartPole-v1"], "DSAC needs continuous (Box) actions"),
    # train --resume
    ("train", ["--resume", "{tmp}/nothing"], "is not a run directory (no config.json) — give the folder"),
    ("train", ["--resume", "{empty}"], "is not a run directory (no config.json)"),
    ("train", ["--resume", "{no_checkpoints}"], "has no checkpoint to resume from"),
    ("train", ["--resume", "{damaged}"], "config.json' is damaged (not JSON"),
    ("train", ["--resume", "{not_ours}"], "lacks agent, run, agent_config"),
    ("train", ["--resume", "{no_checkpoints}", "--env", "Pendulum-v1"], "--env Pendulum-v1 with --resume"),
    ("train", ["--resume", "{no_checkpoints}", "--agent", "dsac"], "--agent dsac with --resume"),
    ("train", ["--resume", "{from_callable}"], "pass it as --env module:Factory"),
    # evaluate
    ("evaluate", ["{tmp}/nothing"], "is not a run directory (no config.json)"),
    ("evaluate", ["{empty}"], "is not a run directory (no config.json)"),
    ("evaluate", ["{no_checkpoints}"], "has no checkpoints yet"),
    ("evaluate", ["{no_checkpoints}", "--checkpoint", "{tmp}/none.pt"], "none.pt' — give --checkpoint best, final"),
    ("evaluate", ["{no_checkpoints}", "--checkpoint", "best"], "this run has: none yet"),
    ("evaluate", ["{damaged}"], "config.json' is damaged"),
    ("evaluate", ["{from_callable}"], "was trained on an env from a Python callable"),
    ("evaluate", ["{no_checkpoints}", "--device", "gpu"], "Unknown device 'gpu'"),
    ("evaluate", ["{no_checkpoints}", "--episodes", "0"], "argument --episodes: must be >= 1, got 0"),
    ("evaluate", ["{no_checkpoints}", "--episodes", "x"], "argument --episodes: expects an integer, got 'x'"),
    ("evaluate", ["{no_checkpoints}", "--envs", "0"], "argument --envs: must be >= 1, got 0"),
    ("evaluate", ["{no_checkpoints}", "--bogus"], "unrecognized arguments: --bogus"),
    # export (tests/scripts/test_export_script.py: an agent that cannot be exported, the onnx extra missing)
    ("export", ["{tmp}/nothing"], "is not a run directory (no config.json)"),
    ("export", ["{no_checkpoints}"], "has no checkpoints yet"),
    ("export", ["{no_checkpoints}", "--checkpoint", "latest"], "latest' — give --checkpoint best, final or the path"),
    ("export", ["{no_checkpoints}", "--format", "tflite"], "argument --format: invalid choice: 'tflite' (choose from"),
    ("export", ["{from_callable}"], "was trained on an env from a Python callable"),
    ("export", ["{damaged}"], "config.json' is damaged"),
    ("export", ["{no_checkpoints}", "--bogus"], "unrecognized arguments: --bogus"),
    # label
    ("label", ["{tmp}/nothing"], "is not a run directory — give the folder"),
    ("label", ["{empty}", "--port", "99999"], "argument --port: must be in 0..65535"),
    ("label", ["{empty}", "--host", "192.0.2.1"], "--host must be a name or address of this machine"),
    ("label", ["{empty}", "--read_timeout", "0"], "--read_timeout must be > 0"),
    # sweep
    ("sweep", ["--name", "s", "--agent", "ppoo", "--env", "CartPole-v1", "--serial"], "Unknown agent 'ppoo'"),
    ("sweep", ["--name", "s", *CARTPOLE, "--grid", "lrr=1,2", "--serial"], "Unknown option '--lrr'"),
    ("sweep", ["--name", "s", *CARTPOLE, "--set", "device=gpu", "--serial"], "Unknown device 'gpu'"),
    ("sweep", ["--name", "s", *CARTPOLE, "--set", "lr", "--serial"], "--set 'lr' must be NAME=VALUE"),
    ("sweep", ["--name", "s", *CARTPOLE, "--seeds", "a-b", "--serial"], "Seeds 'a-b': expected numbers"),
    ("sweep", ["--name", "../s", *CARTPOLE, "--serial"], "(it names a folder)"),
    ("sweep", ["--spec", "{tmp}/none.toml"], "does not exist"),
    ("sweep", ["--name", "nothing", "--table"], "No sweep 'nothing'"),
    ("sweep", ["--bogus"], "unrecognized arguments: --bogus"),
]


def _fill(args: list[str], tmp: Path, dirs: dict[str, Path]) -> list[str]:
    places = {"{tmp}": str(tmp), **{f"{{{name}}}": str(path) for name, path in dirs.items()}}
    out = []
    for arg in args:
        for place, path in places.items():
            arg = arg.replace(place, path)
        out.append(arg)
    return out


@pytest.mark.parametrize("entry,args,message", TABLE, ids=[f"{e}:{' '.join(a)[:60]}" for e, a, _ in TABLE])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, monkeypatch, entry, args, message):
    monkeypatch.chdir(tmp_path)  # anything written by mistake stays in the test's folder
    dirs = _run_dirs(tmp_path)
    args, message = _fill(args, tmp_path, dirs), _fill([message], tmp_path, dirs)[0]
    if entry == "train" and "--resume" not in args:
        args = ["--runs_dir", str(tmp_path / "runs"), *QUIET, *args]  # first: a row's own options win
    if entry == "sweep" and "--spec" not in args:
        args = ["--root", str(tmp_path / "sweeps"), *args]
    main = {"train": main_train, "evaluate": main_evaluate, "label": _label_main(), "sweep": main_sweep,
            "export": main_export}[entry]
    try:
        code = main(args)
    except SystemExit as stop:  # argparse's errors
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("error: ") == 1 and message in err[err.index("error: "):], err  # (a sweep's lists its trials)


def test_a_run_name_never_writes_outside_runs_dir(tmp_path, capsys):
    runs = tmp_path / "deep" / "runs"  # ../../escaped would be tmp_path/escaped
    for name in ("../../escaped", str(tmp_path / "absolute")):
        assert main_train([*CARTPOLE, "--runs_dir", str(runs), "--run_name", name, *QUIET]) == 2
    assert list(tmp_path.iterdir()) == []  # refused before anything is created


def run_script(name: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          env=subprocess_env(), timeout=300, **kwargs)


@pytest.mark.parametrize("script,args,message", [
    ("train.py", [*CARTPOLE, "--device", "gpu"], "Unknown device 'gpu'"),
    ("train.py", ["--agent", "ppo", "--env", "Hopper-v5", "--env_kwargs.foo", "1"], "takes no argument 'foo'"),
    ("evaluate.py", ["nothing"], "is not a run directory"),
    ("export.py", ["nothing", "--format", "onnx"], "is not a run directory"),
    ("sweep.py", ["--name", "s", *CARTPOLE, "--grid", "gae_lamda=0.9", "--serial"], "Unknown option '--gae_lamda'"),
])
def test_bad_input_through_the_real_scripts(tmp_path, script, args, message):
    out = run_script(script, args + (["--runs_dir", "runs", *QUIET] if script == "train.py" else []), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and message in out.stderr, out.stderr


def test_label_on_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_script("label.py", [str(tmp_path), "--port", str(port)])
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use — choose another with --port N" in out.stderr
