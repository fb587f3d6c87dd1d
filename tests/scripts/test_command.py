"""The ``rlkit2`` command (rlkit2/commands.py): subcommands, their help, `list`, errors for a wrong command, messages
that name the command the user ran, the scripts/*.py wrappers, and a plug-in agent package installed, trained,
resumed and evaluated through ``python -m rlkit2``."""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env
from rlkit2.cli import resume_command
from rlkit2.cli_errors import SCRIPT_FORM, invoked_as
from rlkit2.commands import MODULE_FORM, SUBCOMMANDS, main, run_script

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["--progress", "false", "--tensorboard", "false"]


def rlkit2(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlkit2", *args], capture_output=True, text=True,
                          env=env or subprocess_env(), timeout=300, **kwargs)


def call(argv: list[str], **kwargs) -> int:
    try:
        return main(argv, **kwargs)
    except SystemExit as stop:  # argparse's own --help
        return stop.code


def test_the_subcommands_are_the_issues_seven():
    assert list(SUBCOMMANDS) == ["train", "evaluate", "label", "sweep", "export", "plot", "list"]


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_each_subcommand_has_help(name, capsys):
    code = call([name, "--help"])
    out, err = capsys.readouterr()
    if name in ("export", "plot") and importlib.util.find_spec(f"rlkit2.{name}") is None:
        assert code == 2 and f"'rlkit2 {name}' is not part of this rlkit2 (it has no module rlkit2.{name})" in err
        return
    assert code == 0, err
    assert f"rlkit2 {name}" in out  # the usage line names the command


def test_help_lists_every_subcommand_with_one_line():
    out = rlkit2("--help")
    assert out.returncode == 0
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert list(lines) == list(SUBCOMMANDS)
    assert out.stdout.startswith("usage: python -m rlkit2 COMMAND")
    from rlkit2 import __version__

    version = rlkit2("--version")
    assert version.returncode == 0 and version.stdout == f"rlkit2 {__version__}\n"


def test_list_prints_agents_presets_and_env_families():
    out = rlkit2("list")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert re.search(r"\n  ppo +PPO with the on-policy study's recommendations\n", text)
    assert re.search(r"\n  dsac +agents/presets/dsac.toml: mujoco, classic\n", text)
    assert re.search(r"\n  ppo +agents/presets/ppo.toml: mujoco, atari, classic, minigrid; env Pendulum-v1\n", text)
    for family, example in (("mujoco", "Hopper-v5"), ("atari", "ALE/Pong-v5"), ("classic", "CartPole-v1"),
                            ("minigrid", "MiniGrid-DoorKey-5x5-v0")):
        assert f"  {family:10s}" in text and example in text


def test_list_families_are_the_run_loops_families():
    from rlkit2.commands import ENV_FAMILIES
    from rlkit2.run import env_family

    for family, text in ENV_FAMILIES.items():
        example = text.split("(e.g. ")[1].split(")")[0]
        assert env_family(example) == family


@pytest.mark.parametrize("args,message", [
    (["trian"], "error: unknown command 'trian'. Did you mean 'train'? The commands: train, evaluate, label, sweep, "
                "export, plot, list — see: python -m rlkit2 --help"),
    ([], "error: no command given — use one of: train, evaluate"),
    (["--agent", "ppo"], "error: unknown option '--agent' before the command — options go after it"),
])
def test_a_wrong_command_is_one_line_and_exit_code_2(args, message):
    out = rlkit2(*args)
    assert out.returncode == 2 and out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr


def test_messages_name_the_command_the_user_ran(tmp_path, capsys):
    bad = ["train", "--agent", "ppo", "--env", "CartPole-v1", "--lr_rate", "3", "--runs_dir", str(tmp_path), *QUIET]
    assert main(bad) == 2
    assert "See: rlkit2 train --agent ppo --help" in capsys.readouterr().err
    assert main(bad, form=MODULE_FORM) == 2
    assert "See: python -m rlkit2 train --agent ppo --help" in capsys.readouterr().err
    assert run_script("train", bad[1:]) == 2
    assert "See: python scripts/train.py --agent ppo --help" in capsys.readouterr().err
    assert call(["evaluate", str(tmp_path), "--episodes", "x"]) == 2
    assert "see: rlkit2 evaluate --help" in capsys.readouterr().err  # argparse's errors too
    run_dir = tmp_path / "a run"
    assert resume_command(run_dir) == f"rlkit2 train --resume '{run_dir}'"
    with invoked_as(SCRIPT_FORM):
        assert resume_command(run_dir) == f"python {ROOT / 'scripts' / 'train.py'} --resume '{run_dir}'"


def test_the_script_wrappers_still_work(tmp_path):
    for script in ("train.py", "evaluate.py", "label.py", "sweep.py"):
        out = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], capture_output=True,
                             text=True, env=subprocess_env(), timeout=120)
        assert out.returncode == 0 and f"python scripts/{script}" in out.stdout, (script, out.stderr)


def test_the_installed_console_script(tmp_path):
    script = shutil.which("rlkit2", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("rlkit2 is not installed in this Python's environment (CI installs it: scripts/setup_env.sh)")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: rlkit2 COMMAND")


@pytest.mark.slow
def test_a_plug_in_package_trains_resumes_and_evaluates(tmp_path):
    """examples/plugin_agent installed (into a folder on PYTHONPATH, as pip would into site-packages) adds
    --agent reinforce; it learns CartPole a bit and goes through rlkit2's train, resume and evaluate."""
    source = shutil.copytree(ROOT / "examples" / "plugin_agent", tmp_path / "src")  # pip builds in place
    site = tmp_path / "site"
    # with setuptools here (the dev extra) the build needs no network
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *offline, "--target",
                              str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    env = subprocess_env()
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    listed = rlkit2("list", env=env)
    assert listed.returncode == 0 and re.search(r"  reinforce +REINFORCE with a batch-mean baseline", listed.stdout)
    assert "rlkit2_reinforce/reinforce.toml: classic" in listed.stdout

    runs = tmp_path / "runs"
    out = rlkit2("train", "--agent", "reinforce", "--env", "CartPole-v1", "--total_steps", "12288", "--eval_every",
                 "0", "--runs_dir", str(runs), "--run_name", "r", "--threads_collect", "1", "--threads_update", "1",
                 *QUIET, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = runs / "r"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent"] == "reinforce" and config["agent_config"]["lr"] == 5e-3  # the plug-in's [classic.agent]
    final = float(out.stdout.split("final evaluation: ")[1].split()[0])
    assert final > 60, out.stdout  # a random policy: ~22; acting by argmax from the start: ~9

    resumed = rlkit2("train", "--resume", str(run_dir), "--total_steps", "13312", *QUIET, env=env, cwd=tmp_path)
    assert resumed.returncode == 0 and "resumed from step 12288" in resumed.stdout, resumed.stderr
    evaluated = rlkit2("evaluate", str(run_dir), "--checkpoint", "final", "--episodes", "4", "--json", env=env)
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["episodes"] == 4 and result["return_mean"] > 60

    wrong = rlkit2("train", "--agent", "reinforce", "--env", "Pendulum-v1", "--runs_dir", str(runs), *QUIET, env=env)
    assert wrong.returncode == 2 and "Agent 'reinforce' needs a Box observation and a Discrete action" in wrong.stderr
