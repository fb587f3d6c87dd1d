"""Issue 22: no traceback and no silent wrong result for bad input -- checkpoints of another agent or network shape,
an env that returns NaN rewards or raises in step(), a failed start, and what the run says about its budget and
how to resume it. Everything goes through the CLI front ends (rlkit2.cli.main_train / main_evaluate), as a user
meets it: exit code 2, one 'error: ...' line, no traceback."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from faulty_envs import BAD_AFTER, FIXED
from rlkit2 import checkpoint as ckpt
from rlkit2.agent import NonFiniteLossError
from rlkit2.cli import main_evaluate, main_train
from rlkit2.run import resolve_config, train

QUIET = ["--progress", "false", "--tensorboard", "false"]
TINY_PPO = ["--agent", "ppo", "--num_envs", "2", "--num_steps", "32", "--minibatch_size", "32", "--eval_every", "0",
            "--eval_episodes", "1", "--eval_envs", "1"] + QUIET


def train_cli(capsys, args):
    from rlkit2.cli_errors import invoked_as

    with invoked_as("rlkit2 {}"):  # as the installed command (not whatever form another test's thread left set)
        code = main_train(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def run_dir_of(stdout: str) -> Path:
    return Path(re.search(r"^run directory : (.+)$", stdout, re.M).group(1))


def assert_one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def tiny_ppo_run(capsys, tmp_path, name, env="CartPole-v1", *extra):
    code, out, err = train_cli(capsys, TINY_PPO + ["--env", env, "--total_steps", "64", "--runs_dir", str(tmp_path),
                                                   "--run_name", name, *extra])
    assert code == 0, err
    return tmp_path / name


# ----------------------------------------------------------------------- item 1: checkpoints that do not fit
def test_evaluating_another_agents_checkpoint_names_both_agents(tmp_path, capsys):
    ppo_dir = tiny_ppo_run(capsys, tmp_path, "ppo")
    code, _, err = train_cli(capsys, ["--agent", "dsac", "--env", "Pendulum-v1", "--total_steps", "200",
                                      "--learning_starts", "100", "--steps_per_iteration", "100", "--hidden", "16",
                                      "--num_envs", "1", "--eval_every", "0", "--eval_episodes", "1",
                                      "--eval_envs", "1", "--runs_dir", str(tmp_path), "--run_name", "dsac"] + QUIET)
    assert code == 0, err
    dsac_final = tmp_path / "dsac" / "checkpoints" / "final.pt"
    code = main_evaluate([str(ppo_dir), "--checkpoint", str(dsac_final), "--episodes", "1"])
    line = assert_one_line_error(capsys.readouterr().err)
    assert code == 2  # before: KeyError: 'model'
    assert f"checkpoint {dsac_final} was saved by agent 'dsac' but this run is 'ppo' — evaluate it from" in line


def test_evaluating_a_checkpoint_of_another_env_names_both_spaces(tmp_path, capsys):
    cartpole = tiny_ppo_run(capsys, tmp_path, "cartpole")
    acrobot = tiny_ppo_run(capsys, tmp_path, "acrobot", "Acrobot-v1")
    code = main_evaluate([str(cartpole), "--checkpoint", str(acrobot / "checkpoints" / "final.pt"), "--episodes", "1"])
    line = assert_one_line_error(capsys.readouterr().err)
    assert code == 2  # before: a size-mismatch traceback
    assert "was trained on the observation space Box(shape (6,), dtype float32) but this run's env has " \
           "Box(shape (4,), dtype float32) — evaluate it from the run directory that saved it" in line


def edit_config(run_dir: Path, **agent_options) -> None:
    path = run_dir / "config.json"
    record = json.loads(path.read_text())
    record["agent_config"].update(agent_options)
    path.write_text(json.dumps(record))


def test_resume_after_config_json_changed_names_the_parameter_and_the_option(tmp_path, capsys):
    run_dir = tiny_ppo_run(capsys, tmp_path, "r", "CartPole-v1", "--stop_after_steps", "32")
    edit_config(run_dir, policy_hidden=[16, 16])
    before = (run_dir / "config.json").read_text()
    code, _, err = train_cli(capsys, ["--resume", str(run_dir)])
    line = assert_one_line_error(err)
    assert code == 2  # before: RuntimeError: Error(s) in loading state_dict ... size mismatch
    assert f"parameter model.policy_torso.1.0.weight has shape (64, 4) in checkpoint {run_dir}" in line
    assert "but (16, 4) here: the checkpoint was saved with other options than this run's config.json" in line
    assert "policy_hidden=[64, 64] there, [16, 16] here" in line
    assert line.endswith("— restore the run's config.json, or start a new run")
    assert (run_dir / "config.json").read_text() == before  # a refused resume rewrites nothing


def test_checkpoints_without_the_metadata_still_load_and_are_still_checked(tmp_path, capsys):
    """Checkpoints written before the spaces and parameter shapes were recorded: the state dicts are compared."""
    run_dir = tiny_ppo_run(capsys, tmp_path, "old")
    final = run_dir / "checkpoints" / "final.pt"
    payload = ckpt.load(final)
    assert payload["spaces"]["observation"] == {"type": "Box", "shape": [4], "dtype": "float32"}
    assert payload["spaces"]["action"] == {"type": "Discrete", "shape": [], "dtype": "int64", "n": 2}
    assert payload["param_shapes"]["model.policy_head.0.weight"] == [2, 64]
    del payload["spaces"], payload["param_shapes"]
    torch.save(payload, final)
    assert main_evaluate([str(run_dir), "--checkpoint", "final", "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 1
    edit_config(run_dir, policy_hidden=[8])
    assert main_evaluate([str(run_dir), "--checkpoint", "final", "--episodes", "1"]) == 2
    line = assert_one_line_error(capsys.readouterr().err)
    assert "has shape (64, 4) in checkpoint" in line and "but (8, 4) here" in line and "policy_hidden" in line


def test_module_shapes_cover_networks_not_optimizer_state_or_growing_data():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4))
    opt = torch.optim.Adam(net.parameters())
    net(torch.zeros(1, 3)).sum().backward()
    opt.step()
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "comparisons": {"mu": torch.zeros(7)}}
    assert ckpt.module_shapes(state) == {"model.0.weight": [4, 3], "model.0.bias": [4]}


def test_the_preference_agent_still_checks_its_reward_model_itself():
    """A pref checkpoint from before batch norm: the generic shape check leaves the reward model to the agent,
    which evaluates without it (and names the options to resume with); the policy is still checked."""
    from agents.pref import PrefAgent, PrefConfig
    from rlkit2.agent import BuildContext
    from rlkit2.config import override, to_dict
    from rlkit2.run import RunConfig, restore_agent

    env = envs.make("ALE/Pong-v5", num_envs=1, seed=0)
    ctx = BuildContext(env=env, device=torch.device("cpu"), total_steps=1000, seed=0, threads_collect=1,
                       threads_update=1, training=False)
    small = {"pool_steps": 64, "reward_actions": "false", "rl.num_steps": "64", "rl.minibatch_size": "64"}
    old_cfg = override(PrefConfig(), {**small, "reward_batch_norm": "false", "reward_dropout": "0"})
    payload = ckpt.make_payload("pref", {"agent_config": to_dict(old_cfg)}, PrefAgent(old_cfg, ctx).state_dict(), {},
                                ckpt.env_spaces(env))
    run, cfg = RunConfig(agent="pref", env="ALE/Pong-v5"), override(PrefConfig(), small)
    with pytest.warns(UserWarning, match="evaluated without it"):
        restore_agent(PrefAgent(cfg, ctx), payload, "old.pt", run, cfg, env, fix="FIX")
    key = next(k for k in payload["param_shapes"] if k.startswith("rl.model."))
    payload["param_shapes"][key] = [1]  # the policy network is still compared
    with pytest.raises(ckpt.CheckpointError, match=rf"parameter {re.escape(key)} has shape \(1,\) in checkpoint "
                                                   r"old\.pt .* — FIX$"):
        restore_agent(PrefAgent(cfg, ctx), payload, "old.pt", run, cfg, env, fix="FIX")
    env.close()


# ----------------------------------------------------------------------- items 2 and 3: the env fails mid-run
def test_a_nan_reward_is_reported_at_its_step_with_the_env_index():
    venv = envs.make("faulty_envs:NaNRewardEnv", num_envs=2, seed=0, backend="sync")
    for _ in range(BAD_AFTER):
        venv.step(np.zeros(2, np.int64))
    with pytest.raises(envs.EnvCheckError, match=r"Env 'faulty_envs:NaNRewardEnv': step\(\) returned NaN or inf "
                                                 r"rewards in env\(s\) \[1\] \(values \[nan\]\)\. Fix: .* It happened "
                                                 rf"after {2 * BAD_AFTER} env steps\."):
        venv.step(np.zeros(2, np.int64))  # before: no error, the NaN went on into the returns


def test_a_nan_reward_stops_training_naming_the_reward_not_the_loss(tmp_path, capsys):
    code, _, err = train_cli(capsys, TINY_PPO + ["--env", "faulty_envs:NaNRewardEnv", "--total_steps", "256",
                                                 "--runs_dir", str(tmp_path), "--run_name", "nan"])
    line = assert_one_line_error(err)
    assert code == 2  # before: 'Non-finite loss ... Try a lower learning rate' (exit 1)
    assert "returned NaN or inf rewards in env(s) [1]" in line and f"after {2 * BAD_AFTER} env steps" in line
    assert "learning rate" not in line


def test_nonfinite_loss_message_does_not_claim_a_checkpoint_that_does_not_exist(tmp_path):
    run, cfg = resolve_config("ppo", "toy_envs:ExplodingRewardEnv", {
        "progress": "false", "tensorboard": "false", "runs_dir": str(tmp_path), "run_name": "nan", "num_envs": 2,
        "num_steps": 64, "minibatch_size": 64, "epochs": 1, "total_steps": 10_000, "checkpoint_every": 0,
        "eval_every": 0, "normalize_advantages": "false"})
    with pytest.raises(NonFiniteLossError) as caught:
        train(run, cfg)
    assert not list((tmp_path / "nan" / "checkpoints").glob("*.pt"))
    assert "was kept" not in str(caught.value)  # before: 'the last good checkpoint in ... was kept'
    assert "no checkpoint had been saved yet, so there is nothing to resume" in str(caught.value)


def test_an_env_that_raises_stops_with_one_line_a_checkpoint_and_a_resume_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(FIXED, raising=False)
    code, _, err = train_cli(capsys, TINY_PPO + ["--env", "faulty_envs:RaisingEnv", "--total_steps", "256",
                                                 "--checkpoint_every", "0", "--runs_dir", str(tmp_path),
                                                 "--run_name", "bug"])
    line = assert_one_line_error(err)
    assert code == 2  # before: the env's ZeroDivisionError traceback
    run_dir = (tmp_path / "bug").resolve()
    saved = run_dir / "checkpoints" / "step_000000000064.pt"  # one iteration (64 env steps) was complete
    assert line.startswith(f"error: Env 'faulty_envs:RaisingEnv' raised in step() after {2 * BAD_AFTER} env steps "
                           f"(env index 1): ZeroDivisionError: division by zero — the agent's state at env step 64 "
                           f"is saved in {saved}; the full traceback is in {run_dir / 'error.log'}.")
    assert saved.is_file()
    log = (run_dir / "error.log").read_text()
    assert "Traceback" in log and "return 1 / 0" in log  # the env's own traceback, for its author
    command = line.split("Resume with: ", 1)[1]
    # the command as the user ran it: `rlkit2 train` here (called as the library), absolute paths either way
    assert shlex.split(command) == ["rlkit2", "train", "--resume", str(run_dir)]

    monkeypatch.setenv(FIXED, "1")  # the user fixes the env and resumes
    code, out, err = train_cli(capsys, shlex.split(command)[2:])
    assert code == 0, err
    assert f"resumed from step 64 (checkpoint {saved})" in out and "run finished after 256 env steps" in out


def test_an_env_that_raises_in_an_async_worker_is_named_by_its_index(recwarn, monkeypatch):
    monkeypatch.delenv(FIXED, raising=False)
    venv = envs.make("faulty_envs:RaisingEnv", num_envs=2, seed=0, backend="async")
    try:
        for _ in range(BAD_AFTER):
            venv.step(np.zeros(2, np.int64))
        with pytest.raises(envs.EnvStepError, match=rf"raised in step\(\) after {2 * BAD_AFTER} env steps \(env index 1\): "
                                                    r"ZeroDivisionError: division by zero$") as caught:
            venv.step(np.zeros(2, np.int64))
    finally:
        venv.close()
    assert "return 1 / 0" in caught.value.env_traceback  # the worker's traceback came along
    assert not [w for w in recwarn if "Traceback" in str(w.message)]  # gymnasium's copy of it is not printed


# ------------------------------------------------------------------------------------ item 6: a failed start
def test_a_failed_start_leaves_no_run_directory(tmp_path, capsys):
    args = ["--agent", "dsac", "--env", "Pendulum-v1", "--total_steps", "100", "--learning_starts", "100",
            "--runs_dir", str(tmp_path / "runs")] + QUIET
    code, _, err = train_cli(capsys, args)  # the agent refuses to build: it would never update
    assert code == 2 and "DSAC would never update" in err
    assert not list((tmp_path / "runs").iterdir())  # before: an empty dsac-Pendulum-v1-s0-... directory
    code, _, err = train_cli(capsys, args + ["--run_name", "named"])
    assert code == 2 and not (tmp_path / "runs" / "named").exists()
    (tmp_path / "runs" / "mine").mkdir()  # a directory the user (or a sweep) made stays
    (tmp_path / "runs" / "mine" / "notes.txt").write_text("keep")
    code, _, err = train_cli(capsys, args + ["--run_name", "mine"])
    assert code == 2 and (tmp_path / "runs" / "mine" / "notes.txt").read_text() == "keep"


def test_a_failed_resume_removes_nothing(tmp_path, capsys):
    run_dir = tiny_ppo_run(capsys, tmp_path, "r", "CartPole-v1", "--stop_after_steps", "32")
    files = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    edit_config(run_dir, policy_hidden=[16])
    code, _, err = train_cli(capsys, ["--resume", str(run_dir)])
    assert code == 2 and sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == files


# --------------------------------------------------------------- items 7 and 8: what the run says it will do
def test_resume_command_works_from_another_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    code, out, err = train_cli(capsys, TINY_PPO + ["--env", "CartPole-v1", "--total_steps", "128",
                                                   "--stop_after_steps", "64", "--runs_dir", "runs"])
    assert code == 0, err
    command = re.search(r"^resume with   : (.+)$", out, re.M).group(1)
    argv = shlex.split(command)
    assert argv[:3] == ["rlkit2", "train", "--resume"] and Path(argv[3]).is_absolute()
    assert Path(argv[3]) == (tmp_path / "a" / run_dir_of(out)).resolve()  # before: relative to the cwd
    monkeypatch.chdir(tmp_path / "b")
    code, out, err = train_cli(capsys, argv[2:] + ["--stop_after_steps", "0"])
    assert code == 0, err
    assert re.search(r"^resumed from step 64 \(checkpoint .*step_000000000064\.pt\)$", out, re.M)
    assert "run finished after 128 env steps" in out


def test_the_resume_command_of_a_script_run_names_the_script_by_its_absolute_path(tmp_path):
    from rlkit2.cli import resume_command
    from rlkit2.cli_errors import SCRIPT_FORM, invoked_as

    with invoked_as(SCRIPT_FORM):  # python scripts/train.py ...: a checkout that need not be installed
        argv = shlex.split(resume_command(tmp_path / "run"))
    assert argv == ["python", str(Path(__file__).resolve().parents[2] / "scripts" / "train.py"), "--resume",
                    str((tmp_path / "run").resolve())]


@pytest.mark.parametrize("args, steps", [
    (TINY_PPO + ["--env", "CartPole-v1", "--total_steps", "100"], 128),  # iterations of 2 x 32
    (["--agent", "dsac", "--env", "Pendulum-v1", "--total_steps", "301", "--num_envs", "2", "--learning_starts",
      "250", "--hidden", "8", "--eval_every", "0", "--eval_episodes", "1", "--eval_envs", "1"] + QUIET, 302),
])
def test_a_budget_that_rounds_up_says_so_at_the_start(tmp_path, capsys, args, steps):
    code, out, err = train_cli(capsys, args + ["--runs_dir", str(tmp_path)])
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith(f"note: this run will take {steps} env steps, not total_steps=")
    assert f"run finished after {steps} env steps" in out  # what the note said is what happened


def test_a_budget_that_divides_evenly_prints_no_note(tmp_path, capsys):
    code, out, err = train_cli(capsys, TINY_PPO + ["--env", "CartPole-v1", "--total_steps", "128",
                                                   "--runs_dir", str(tmp_path)])
    assert code == 0 and "note:" not in out


def test_evaluate_final_repeats_the_runs_final_evaluation_number_for_number(tmp_path, capsys):
    """evaluate.py's defaults are the run's own evaluation protocol (episodes, envs, seed + 10000)."""
    import csv
    import json

    from rlkit2.cli import main_evaluate, main_train

    assert main_train(["--agent", "ppo", "--env", "Pendulum-v1", "--total_steps", "512", "--num_envs", "2",
                       "--num_steps", "128", "--eval_every", "0", "--eval_episodes", "3", "--eval_envs", "2",
                       "--runs_dir", str(tmp_path), "--run_name", "r", "--progress", "false",
                       "--tensorboard", "false", "--compile_loss", "false"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "r" / "progress.csv")))
    final = [float(r["eval/return_mean"]) for r in rows if r.get("eval/return_mean")][-1]
    capsys.readouterr()
    assert main_evaluate([str(tmp_path / "r"), "--checkpoint", "final", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 3 and result["return_mean"] == final
    assert main_evaluate([str(tmp_path / "r"), "--checkpoint", "final"]) == 0
    assert "env seed 10000 (the run's own evaluation seed)" in capsys.readouterr().out
    assert main_evaluate([str(tmp_path / "r"), "--checkpoint", "final", "--seed", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["return_mean"] != final  # other episodes


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(monkeypatch, capsys):
    import rlkit2.cli as cli

    def interrupted_twice(run, cfg):
        raise KeyboardInterrupt  # what _StopFlag raises on the second SIGINT

    monkeypatch.setattr(cli, "train", interrupted_twice)
    assert cli.main_train(["--agent", "ppo", "--env", "CartPole-v1"]) == 130
    err = capsys.readouterr().err
    assert "second Ctrl-C, without saving" in err and "--resume" in err and "Traceback" not in err
