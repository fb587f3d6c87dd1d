"""A first run without friction (issue 22): a module:Class env in the current folder, a run trained from a Python
callable evaluated and resumed from the command line, and --help showing what the chosen agent and env will use."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_env
from rlkit2.cli import main_evaluate, main_train
from rlkit2.run import resolve_config, train

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--progress", "false", "--tensorboard", "false"]
TINY = ["--total_steps", "64", "--num_envs", "2", "--num_steps", "16", "--minibatch_size", "32", "--eval_every", "0",
        "--eval_episodes", "1", "--eval_envs", "1", *QUIET]

MY_ENV = '''
import gymnasium as gym
import numpy as np


class MyEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), float(action), self.t >= 5, False, {}
'''


def test_a_module_class_env_in_the_current_folder_trains(tmp_path):
    (tmp_path / "mymodule.py").write_text(MY_ENV)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--agent", "ppo", "--env",
                          "mymodule:MyEnv", "--runs_dir", "runs", *TINY], cwd=tmp_path, capture_output=True,
                         text=True, env=subprocess_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "run finished after 64 env steps" in out.stdout


def test_an_env_module_that_cannot_be_imported_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the folder the env module is looked for in is added
    (tmp_path / "needs_more.py").write_text("import not_installed_package_xyz\n")
    runs = ["--runs_dir", str(tmp_path / "runs")]
    assert main_train(["--agent", "ppo", "--env", "mymodul:MyEnv", *runs, *QUIET]) == 2
    err = capsys.readouterr().err
    assert "cannot import module 'mymodul'" in err and "run from the folder that holds mymodul.py" in err
    assert f"the current directory ({tmp_path}) is searched" in err and "PYTHONPATH=/path/to/folder" in err
    assert main_train(["--agent", "ppo", "--env", "needs_more:MyEnv", *runs, *QUIET]) == 2
    assert "module 'needs_more' imports 'not_installed_package_xyz', which is not installed" in capsys.readouterr().err


def test_a_run_trained_from_a_callable_is_evaluated_and_resumed_with_env(tmp_path, capsys):
    from toy_envs import FixedHorizonEnv

    run, ppo = resolve_config("ppo", "FixedHorizon", {
        "runs_dir": str(tmp_path), "run_name": "from_python", "total_steps": 64, "num_envs": 2, "num_steps": 16,
        "minibatch_size": 32, "eval_every": 0, "eval_episodes": 1, "eval_envs": 1, "progress": False,
        "tensorboard": False})
    run_dir = str(train(run, ppo, env_fn=FixedHorizonEnv).run_dir)
    capsys.readouterr()

    assert main_evaluate([run_dir, "--episodes", "2"]) == 2
    assert "pass it as --env module:Factory" in capsys.readouterr().err
    assert main_evaluate([run_dir, "--env", "toy_envs:make_fixed_horizon", "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 2 and 0 <= result["return_mean"] <= 8  # 8 steps, at most 1 reward each
    assert main_evaluate([run_dir, "--env", "CartPole-v1", "--episodes", "1"]) == 2  # 4 observations, not 2
    err = capsys.readouterr().err
    assert "but this run's env has Box(shape (4,)" in err and "evaluate on the env the run was trained on" in err
    assert "Traceback" not in err

    assert main_train(["--resume", run_dir, "--total_steps", "96"]) == 2
    assert "pass it as --env module:Factory" in capsys.readouterr().err
    assert main_train(["--resume", run_dir, "--env", "toy_envs:FixedHorizonEnv", "--total_steps", "96"]) == 0
    assert "run finished after 96 env steps" in capsys.readouterr().out


def test_help_shows_the_values_of_the_chosen_agent_and_env(capsys):
    assert main_train(["--agent", "ppo", "--env", "Hopper-v5", "--help"]) == 0
    hopper = capsys.readouterr().out
    assert "Defaults for --agent ppo --env Hopper-v5, from the ppo preset (agents/presets/ppo.toml)" in hopper
    assert "--value_hidden INTS (default: (256, 256)) [preset; built-in: (64, 64)]" in hopper
    assert "--compile_loss BOOL (default: True) [preset; built-in: False]" in hopper  # the MuJoCo section
    assert "--gae_lambda FLOAT (default: 0.9) [preset]" in hopper
    assert "--atari.clip_rewards BOOL (default: True)\n" in hopper  # not set by the preset: no mark

    assert main_train(["--agent", "ppo", "--env", "CartPole-v1", "--help"]) == 0
    cartpole = capsys.readouterr().out
    assert "--compile_loss BOOL (default: False)\n" in cartpole  # the classic section does not compile
    assert "--total_steps INT (default: 100000) [preset; built-in: 1000000]" in cartpole
