"""The ``train`` and ``evaluate`` commands (``rlkit2 train``, ``rlkit2 evaluate``; scripts/train.py and
scripts/evaluate.py in a checkout), importable for tests."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import VecEnv
from rlkit2 import checkpoint as ckpt
from rlkit2.agent import Agent, NonFiniteLossError, available_agents, get_agent_spec
from rlkit2.cli_errors import SCRIPT_FORM, ArgumentParser, UsageError, cli_boundary, command
from rlkit2.config import parse_cli_overrides
from rlkit2.device import resolve_device, set_threads
from rlkit2.evaluation import evaluate, record_video
from rlkit2.remote import WorkerError
from rlkit2.run import (EnvFailedError, RunConfig, build_agent, help_text, load_run_config, make_env,
                        read_run_record, resolve_config, restore_agent, resume, train)


TRAIN_USAGE = """Train an agent.

    {train} --agent ppo --env Hopper-v5 [--option value ...]
    {train} --agent ppo --env my_pkg.envs:MyEnv --total_steps 200000
    {train} --resume RUN_DIR [--total_steps N]
    {train} --list
"""


@cli_boundary(lambda: f"{command('train')} --agent AGENT --help", extra=(ckpt.CheckpointError,))
def main_train(argv: list[str]) -> int:
    head = ArgumentParser(prog=command("train"), add_help=False, allow_abbrev=False)
    head.add_argument("--agent", default=None)  # None: not given (ppo for a new run, the run's own on --resume)
    head.add_argument("--env", default=None)
    head.add_argument("--resume", default=None)
    head.add_argument("--list", action="store_true")
    head.add_argument("-h", "--help", action="store_true")
    known, rest = head.parse_known_args(argv)
    agent, env = known.agent or "ppo", known.env or "Hopper-v5"
    try:
        if known.list:
            return print_agents()
        if known.help:
            print(TRAIN_USAGE.format(train=command("train")))
            print(help_text(agent, env))
            return 0
        overrides = parse_cli_overrides(rest)
        if known.resume:
            result = resume(known.resume, overrides, env_fn=_resume_env(known))
        else:
            run, agent_config = resolve_config(agent, env, overrides)
            result = train(run, agent_config)
    except EnvFailedError as e:  # the env failed mid-run; the agent was saved where it could be: say how to go on
        resume_hint = f" Resume with: {resume_command(e.run_dir)}" if e.checkpoint is not None else ""
        print(f"error: {e}{resume_hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: the first asks the loop to save at the next safe point
        print("\nerror: stopped at once by a second Ctrl-C, without saving — the run's last checkpoint is kept; "
              "resume from it with --resume RUN_DIR", file=sys.stderr)
        return 130
    except (NonFiniteLossError, WorkerError) as e:  # not bad input (bad input is cli_boundary's)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\nrun {result.status} after {result.env_steps} env steps")
    if result.final_eval:
        e = result.final_eval
        print(f"final evaluation: {e['return_mean']:.2f} +- {e['return_std']:.2f} over {e['episodes']} episodes")
    print(f"run directory : {result.run_dir}")
    print(f"tensorboard   : tensorboard --logdir {result.run_dir / 'tb'}")
    print(f"checkpoint    : {result.checkpoint}")
    labels = human_label_summary(result.run_dir)
    if labels:
        print(labels)
    if result.status == "interrupted":
        print(f"resume with   : {resume_command(result.run_dir)}")
    # A job scheduler must tell an interrupted run from a finished one: 128 + the signal, as a shell reports it
    # (130 SIGINT, 143 SIGTERM). --stop_after_steps is a requested end of the session: 0.
    return 128 + result.stop_signal if result.stop_signal else 0


def print_agents() -> int:
    """Each agent's name and description; an agent that cannot be used (a plug-in that fails to load, a name two
    packages claim) is listed with why, and its error ends the listing (exit code 2)."""
    problems = []
    for name, spec in available_agents().items():
        if isinstance(spec, Exception):
            print(f"{name:10s} (unusable: see the error below)")
            problems.append(spec)
        else:
            print(f"{name:10s} {spec.description}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def human_label_summary(run_dir: Path) -> str | None:
    """For a run labeled by people (--oracle human keeps its label store in the run directory): how many pairs they
    answered, so the end of a run says how much human feedback it had."""
    if not (Path(run_dir) / "labels.sqlite").is_file():
        return None
    from rlkit2.labels import LabelStore

    p = LabelStore(Path(run_dir) / "labels.sqlite").progress()
    return (f"human labels  : {p['answered']} of {p['pairs']} pairs answered ({p['labels']} usable, "
            f"{p['answered'] - p['labels']} \"can't tell\"), {p['waiting']} never answered")


def resume_command(run_dir: Path) -> str:
    """The command that resumes ``run_dir``, with absolute paths so that it works from any directory."""
    run_dir = str(Path(run_dir).resolve())
    if command("train") == SCRIPT_FORM.format("train"):
        script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
        return shlex.join(["python", str(script), "--resume", run_dir])
    return f"{command('train')} --resume {shlex.quote(run_dir)}"


def _resume_env(known: argparse.Namespace) -> str | None:
    """A resumed run keeps its agent and env; only a run trained from a Python callable needs --env (to name it)."""
    record = read_run_record(known.resume)
    if known.agent is not None and known.agent != record["agent"]:
        raise UsageError(f"--agent {known.agent} with --resume: '{known.resume}' is a '{record['agent']}' run and "
                         "resumes as one — drop --agent")
    if record.get("env_is_callable"):
        if known.env is None:
            raise UsageError(_callable_env_message(known.resume))
        return known.env
    if known.env is not None and known.env != record["run"]["env"]:
        raise UsageError(f"--env {known.env} with --resume: '{known.resume}' trains on '{record['run']['env']}' "
                         "and resumes on it — drop --env, or start a new run on the other env")
    return None


def _callable_env_message(run_dir: str | Path) -> str:
    return (f"'{run_dir}' was trained on an env from a Python callable (train(..., env_fn=...)), which its "
            "config.json cannot name — pass it as --env module:Factory (a gymnasium.Env class, or a function "
            "returning one, importable from the current directory or PYTHONPATH)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


@cli_boundary(lambda: f"{command('evaluate')} --help", extra=(ckpt.CheckpointError,))
def main_evaluate(argv: list[str]) -> int:
    parser = ArgumentParser(prog=command("evaluate"), description="Evaluate a saved policy from a run directory.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=_positive_int, default=None,
                        help="default: the run's eval_episodes (10 unless set)")
    parser.add_argument("--checkpoint", default=None,
                        help="'best', 'final', or a path; default: best, else final, else the latest step file")
    parser.add_argument("--video", action="store_true", help="also write an mp4 of one episode")
    parser.add_argument("--video_path", type=Path, default=None)
    parser.add_argument("--envs", type=_positive_int, default=None,
                        help="parallel evaluation envs (default: the run's eval_envs)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the evaluation envs' seed (default: the run's own evaluation seed, seed + 10000, so "
                             "that the final checkpoint scores what the run's final evaluation printed)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--env", default=None, metavar="ENV",
                        help="evaluate on this env instead of the run's: needed for a run trained with "
                             "train(..., env_fn=...), as 'module:Factory' (a gymnasium.Env class or a function "
                             "returning one)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    run, agent_config = open_run(args.run_dir, args.env, args.device)
    path = checkpoint_path(args.run_dir, args.checkpoint)
    payload = ckpt.load(path, map_location=resolve_device(args.device))
    set_threads(1)
    # The run's own evaluation protocol unless told otherwise: the same envs, seeds and episode count as the run
    # loop's evaluations, so evaluating final.pt repeats the run's final evaluation number for number.
    args.episodes = args.episodes or run.eval_episodes
    args.envs = args.envs or run.eval_envs
    args.seed = run.seed + 10_000 if args.seed is None else args.seed
    env = make_env(run, min(args.envs, args.episodes), args.seed)
    agent = acting_agent(run, agent_config, env, payload, path, "evaluate", other_env=args.env is not None)
    device = resolve_device(args.device)
    stochastic = args.stochastic or not run.eval_deterministic  # the run's own evaluation mode by default

    def act(obs: torch.Tensor) -> torch.Tensor:
        return agent.act(obs, deterministic=not stochastic)

    result = evaluate(act, env, args.episodes, device, seed=args.seed)
    env.close()
    if args.json:
        print(json.dumps({"checkpoint": str(path), **result}))
    else:
        print(f"checkpoint: {path}  (trained {payload['agent_state'].get('env_steps', '?')} env steps)")
        print(f"return: {result['return_mean']:.2f} +- {result['return_std']:.2f} over {result['episodes']} "
              f"{'stochastic' if stochastic else 'deterministic'} episodes "
              f"(length {result['length_mean']:.0f}; min {np.min(result['returns']):.1f}, "
              f"max {np.max(result['returns']):.1f}); env seed {args.seed}"
              + (" (the run's own evaluation seed)" if args.seed == run.seed + 10_000 else ""))
    if args.video:
        import gymnasium

        os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering
        try:
            video_env = make_env(run, 1, args.seed, render_mode="rgb_array")
            video = record_video(act, video_env, args.video_path or args.run_dir / "videos" / f"{path.stem}.mp4",
                                 device, seed=args.seed)
            video_env.close()
        except gymnasium.error.DependencyNotInstalled as e:
            raise UsageError(f"cannot render '{run.env}' for video: {e}") from e
        print(f"video: {video}")
    return 0


def open_run(run_dir: Path, env: str | None, device: str) -> tuple[RunConfig, Any]:
    """A run directory's configs for acting (evaluate, export) on ``env``: the run's own env by default; a run
    trained from a Python callable must be given one."""
    run, agent_config = load_run_config(run_dir, {"device": device})
    if env is not None:
        return dataclasses.replace(run, env=env), agent_config
    if read_run_record(run_dir).get("env_is_callable"):
        raise UsageError(_callable_env_message(run_dir))
    return run, agent_config


def acting_agent(run: RunConfig, agent_config: Any, env: VecEnv, payload: dict, path: Path, verb: str,
                 other_env: bool) -> Agent:
    """The run's agent, built for acting in ``env`` and loaded from the checkpoint ``payload`` (read from
    ``path``); a checkpoint that does not fit is a CheckpointError whose fix starts with ``verb``. Closes ``env``
    when it fails."""
    try:
        agent = build_agent(get_agent_spec(run.agent), run, agent_config, env, training=False)
        fix = (f"{verb} on the env the run was trained on" if other_env else
               f"{verb} it from the run directory that saved it (or restore this run's config.json)")
        restore_agent(agent, payload, path, run, agent_config, env, fix=fix)
    except BaseException:
        env.close()
        raise
    return agent


def checkpoint_path(run_dir: Path, which: str | None) -> Path:
    """The checkpoint file that ``--checkpoint which`` names in ``run_dir`` (None: best, else final, else the
    latest step file)."""

    checkpoints = ckpt.CheckpointDir(run_dir / "checkpoints")
    if which is None:
        path = checkpoints.for_evaluation()
        if path is None:
            raise ckpt.CheckpointError(f"'{run_dir}' has no checkpoints yet — a run saves one every "
                                       "checkpoint_every env steps and at its end; wait for it, or resume the run")
        return path
    path = checkpoints.root / f"{which}.pt" if which in ("best", "final") else Path(which)
    if not path.is_file():
        present = sorted(p.name for p in checkpoints.root.glob("*.pt")) if checkpoints.root.is_dir() else []
        raise ckpt.CheckpointError(f"No checkpoint at '{path}' — give --checkpoint best, final or the path of a "
                                   f".pt file; this run has: {', '.join(present) or 'none yet'}")
    return path
