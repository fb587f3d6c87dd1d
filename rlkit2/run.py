"""The run loop: ``train(run_config, agent_config) -> results``, a plain function with no global state that
writes only under its run directory (so a sweep can be Ray tasks over configs later, DESIGN.md).

Run directory ``runs/<agent>-<env>-s<seed>-<time>/``:
``config.json`` (resolved config, human-readable), ``tb/`` (TensorBoard), ``progress.csv``,
``checkpoints/`` (``step_*.pt`` latest K, ``best.pt``, ``final.pt``), and ``error.log`` after an env failed
mid-run. ``evaluate`` and ``resume`` need nothing else.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

import envs
from envs import AtariSettings, EnvCheckError, is_atari
from envs.make import MUJOCO_NAMES
from envs.minigrid import is_minigrid
from rlkit2 import checkpoint as ckpt
from rlkit2.agent import Agent, AgentSpec, BuildContext, NonFiniteLossError, available_agents, get_agent_spec
from rlkit2.cli_errors import command
from rlkit2.config import ConfigError, describe, load_preset, override, to_dict
from rlkit2.device import parse_device, resolve_device, set_threads
from rlkit2.evaluation import evaluate, record_video, renderable_env
from rlkit2.logger import Logger, WandbSink, hparams_of
from rlkit2.remote import WorkerError


@dataclass
class RunConfig:
    env: str = "Hopper-v5"
    """Environment: a registered gymnasium id (MuJoCo 'Hopper-v5', Atari 'ALE/Pong-v5', ...) or a
    'package.module:ClassOrFactory' path. From Python, train(..., env_fn=callable) also works."""
    agent: str = "ppo"
    """Agent (and its preset): the list command names them all (rlkit2 list)."""
    seed: int = 0
    """Seed for torch/numpy/python RNGs; training env i gets seed + i, evaluation envs seed + 10000 + i."""
    total_steps: int = 1_000_000
    """Budget in environment steps (agent steps: one Atari step is frame_skip frames)."""
    num_envs: int = 8
    """Parallel training environments (one batched policy forward per step for all of them)."""
    backend: Literal["auto", "sync", "async", "ale", "envpool", "batched"] = "auto"
    """Vector-env backend; auto picks the fastest that supports the env (envs/make.py)."""
    collect_pipeline: bool = False
    """Step the training envs in two halves, each half's env step overlapping the policy's forward pass on the
    other half (envs/pipeline.py); backends envpool, ale and async (sync steps in this process and cannot). Per env the
    rollout is the same as without; the policy runs once per half. Whether it pays depends on free cores:
    measure with scripts/bench/throughput.py (docs/benchmarks.md, "Throughput")."""
    device: str = "auto"
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:1'..."""
    max_episode_steps: int | None = None
    """Override the env's registered time limit (truncation)."""
    env_kwargs: dict = field(default_factory=dict)
    """Keyword arguments for the env constructor (from Python or a preset)."""
    train_env_kwargs: dict = field(default_factory=dict)
    """Extra constructor arguments for the training envs only, over env_kwargs; evaluation keeps the unmodified
    task. E.g. terminate_when_unhealthy=false trains Hopper on fixed-length episodes (the preference agent's
    MuJoCo preset) while every evaluation scores the standard Hopper."""
    atari: AtariSettings = field(default_factory=AtariSettings)
    """Atari preprocessing (used for ALE/ ids only)."""
    eval_every: int = 50_000
    """Deterministic evaluation every this many env steps on separate envs (0: only at the end)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    eval_envs: int = 5
    """Parallel evaluation environments."""
    eval_video: bool = False
    """At every evaluation also record one episode of the evaluated policy to videos/step_<N>.mp4 (sent to --track
    wandb as well); needs an env that renders rgb_array frames (MuJoCo renders headless through EGL)."""
    eval_deterministic: bool = True
    """Evaluate the policy's mode (true) or sample actions (false: MiniGrid, where an argmax policy can loop
    forever in a partially observed room)."""
    checkpoint_every: int = 100_000
    """Save a resumable checkpoint every this many env steps (0: only final/best/interrupt)."""
    keep_checkpoints: int = 3
    """How many periodic checkpoints to keep (0: keep all)."""
    runs_dir: str = "runs"
    """Parent directory of run directories."""
    run_name: str = ""
    """Run directory name; default <agent>-<env>-s<seed>-<time>."""
    threads_collect: int = 1
    """torch intra-op threads while collecting (small batched forwards are fastest on 1 thread)."""
    threads_update: int = 1
    """torch intra-op threads during updates (0: all cores). Measured in docs/benchmarks.md."""
    stop_after_steps: int = 0
    """Stop after this many env steps in this session (checkpoint, exit as 'interrupted'); 0 = off. For
    time-limited jobs: --resume continues the same schedules up to total_steps."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Write TensorBoard event files under tb/ (at the end of a run also tb/hparams/: its options beside its final
    evaluation, for TensorBoard's HParams tab)."""
    track: Literal["none", "wandb"] = "none"
    """Also log to an experiment tracker, as CleanRL's --track: 'wandb' sends Weights & Biases the metrics logged
    to TensorBoard, the config, the final evaluation and evaluation videos (the wandb extra; a resumed run continues
    the same wandb run; WANDB_MODE=offline works without a network)."""
    wandb_project: str = "rlkit2"
    """Weights & Biases project (with --track wandb)."""
    wandb_entity: str = ""
    """Weights & Biases entity, a user or team ('' = your default entity)."""
    wandb_group: str = ""
    """Weights & Biases run group, e.g. the name of a sweep or an ablation ('' = none)."""
    workers: int = 0
    """Remote rollout workers that step the num_envs training envs between them (each num_envs / workers envs and
    an acting copy of the policy, on the CPU); 0 = the envs step in this process. Helps when the env, not the
    update, is the bottleneck (docs/remote_workers.md). Needs the ray extra unless worker_mode is local.
    Agents: ppo, a2c, agac, dsac."""
    worker_mode: Literal["ray", "local"] = "ray"
    """'ray': each worker is a Ray actor (a local Ray on 127.0.0.1, or the cluster in $RAY_ADDRESS); 'local': the
    same workers in this process, one after another (for tests and debugging: same results as 'ray')."""
    worker_timeout: float = 300.0
    """Seconds the learner waits for a worker's answer before it stops the run (a hung worker is an error)."""
    worker_cpus: float = 1.0
    """CPUs Ray reserves for each worker (0: workers share cores with whatever else runs)."""

    def validate(self) -> None:
        for name in ("total_steps", "num_envs", "eval_episodes", "eval_envs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Option '{name}' must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every", "keep_checkpoints", "threads_collect", "threads_update",
                     "stop_after_steps", "workers", "worker_cpus"):
            if getattr(self, name) < 0:
                raise ConfigError(f"Option '{name}' must be >= 0, got {getattr(self, name)}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ConfigError(f"Option 'max_episode_steps' must be >= 1, got {self.max_episode_steps} — or leave it "
                              "unset for the env's own time limit")
        if not 0 <= self.seed < 2**31:  # env i gets seed + i, evaluation envs seed + 10000 + i: all < 2**32
            raise ConfigError(f"Option 'seed' must be in [0, 2**31), got {self.seed}")
        try:
            parse_device(self.device)
        except ValueError as e:
            raise ConfigError(f"Option 'device': {e}") from None
        if self.collect_pipeline and self.num_envs < 2:
            raise ConfigError(f"Option 'collect_pipeline' steps the envs in two halves: it needs num_envs >= 2, got "
                              f"{self.num_envs}. Fix: --num_envs 2 or more, or --collect_pipeline false")
        if self.worker_timeout <= 0:
            raise ConfigError(f"Option 'worker_timeout' must be > 0 (seconds), got {self.worker_timeout}")
        if self.workers > self.num_envs:
            raise ConfigError(f"Option 'workers' ({self.workers}) is larger than 'num_envs' ({self.num_envs}): every "
                              f"worker steps at least one env. Fix: --num_envs {self.workers} or more (each worker "
                              "gets num_envs / workers), or fewer workers")
        _check_run_name(self.run_name)


def _check_run_name(name: str) -> None:
    """A run directory is always runs_dir/run_name: a name that climbs out (../x) or is a path is refused."""
    if name and (name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute()):
        raise ConfigError(f"Option 'run_name' must be a folder name, not a path, got '{name}' — runs are "
                          "written to runs_dir/run_name: choose the parent folder with --runs_dir")


CLASSIC_NAMES = {"CartPole", "Pendulum", "Acrobot", "MountainCar", "MountainCarContinuous", "LunarLander",
                 "LunarLanderContinuous", "BipedalWalker"}


def env_family(env: str) -> str | None:
    """'atari', 'mujoco', 'classic' or 'minigrid' -- selects a preset's per-family section."""
    if is_atari(env):
        return "atari"
    if is_minigrid(env):
        return "minigrid"
    base = env.split("-v")[0] if isinstance(env, str) else ""
    if base in MUJOCO_NAMES:
        return "mujoco"
    if base in CLASSIC_NAMES:
        return "classic"
    return None


def resolve_config(agent: str, env: str, overrides: dict[str, Any] | None = None) -> tuple[RunConfig, Any]:
    """Defaults < the agent's preset < its section for the env family < its section for the env id
    (``[env."Pendulum-v1"]``) < ``overrides`` (CLI or Python).
    Each override name is looked up in the run config and the agent config; unknown names are an error."""
    spec = get_agent_spec(agent)
    preset_run, agent_values = preset_values(spec, env)
    run_values: dict[str, Any] = {"agent": agent, "env": env, **preset_run}
    _route_overrides(spec, overrides, run_values, agent_values)
    return override(RunConfig(), run_values), override(spec.config_cls(), agent_values)


def preset_values(spec: AgentSpec, env: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the agent's preset sets for ``env``: (run values, agent values), its sections merged in order."""
    run_values: dict[str, Any] = {}
    agent_values: dict[str, Any] = {}
    if spec.preset is not None:
        preset = load_preset(spec.preset)
        family = env_family(env)
        for section in (preset, preset.get(family, {}) if family else {}, preset.get("env", {}).get(env, {})):
            run_values.update(section.get("run", {}))
            agent_values.update(section.get("agent", {}))
    return run_values, agent_values


def _route_overrides(spec: AgentSpec, overrides: dict[str, Any] | None, run_values: dict[str, Any],
                     agent_values: dict[str, Any]) -> None:
    """Send each override to the run config or the agent config by its (top-level) name."""
    run_fields = set(RunConfig.__dataclass_fields__)
    agent_fields = set(spec.config_cls.__dataclass_fields__)
    for key, value in (overrides or {}).items():
        head = key.replace("-", "_").split(".")[0]
        if head in ("agent", "env"):
            continue  # chosen by resolve_config's arguments / fixed by the run directory
        if head in run_fields:
            run_values[key] = value
        elif head in agent_fields:
            agent_values[key] = value
        else:
            import difflib

            close = difflib.get_close_matches(head, sorted(run_fields | agent_fields), n=3)
            hint = f" Did you mean: {', '.join('--' + c for c in close)}?" if close else ""
            raise ConfigError(f"Unknown option '--{key}' for agent '{spec.name}'.{hint} "
                              f"See: {command('train')} --agent {spec.name} --help")


def help_text(agent: str, env: str = "Hopper-v5") -> str:
    """Every option with the value a run of ``agent`` on ``env`` starts from: the preset's where it sets one
    (marked [preset], with the built-in default when that differs), else the built-in default."""
    spec = get_agent_spec(agent)
    run, agent_config = resolve_config(agent, env)
    preset_run, preset_agent = preset_values(spec, env)
    source = f"the {spec.name} preset ({_shown_path(spec.preset)})" if spec.preset is not None else "no preset"
    return (f"Defaults for --agent {spec.name} --env {env}, from {source}; [preset] marks a value the preset "
            f"sets.\n\nRun options:\n{describe(RunConfig, current=run, marked=_dotted(preset_run))}\n\n"
            f"Agent options ({spec.name}: {spec.description}):\n"
            f"{describe(spec.config_cls, current=agent_config, marked=_dotted(preset_agent))}")


def _shown_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)


def _dotted(values: dict[str, Any], prefix: str = "") -> set[str]:
    """{'atari': {'noop_max': 0}, 'rl.lr': 1} -> {'atari.noop_max', 'rl.lr'}: the option names a preset sets."""
    names: set[str] = set()
    for key, value in values.items():
        name = prefix + key.replace("-", "_")
        names |= _dotted(value, name + ".") if isinstance(value, dict) and value else {name}
    return names


@dataclass
class RunResult:
    run_dir: Path
    status: Literal["finished", "interrupted"]
    env_steps: int
    final_eval: dict | None
    best_return: float | None
    checkpoint: Path | None
    stop_signal: int | None = None  # the signal (SIGINT/SIGTERM) that interrupted the run, if one did


class EnvFailedError(EnvCheckError):
    """The env raised, or returned NaN/inf, during training. ``checkpoint``: the state saved when it happened
    (None if none could be saved); ``run_dir``: the run to resume once the env is fixed."""

    def __init__(self, message: str, run_dir: Path | None = None, checkpoint: Path | None = None):
        super().__init__(message)
        self.run_dir, self.checkpoint = run_dir, checkpoint


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves and exits after the current iteration (an agent that waits inside
    an iteration polls the flag through ``BuildContext.stop_requested``). A second SIGINT interrupts immediately.
    ``signal`` keeps the first signal, so the script can exit with 128 + its number."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = self.signal or signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _run_dir_name(run: RunConfig) -> str:
    env = re.sub(r"[^A-Za-z0-9._-]+", "_", run.env.replace("ALE/", ""))
    return f"{run.agent}-{env}-s{run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def _new_run_dir(parent: Path, name: str) -> Path:
    """A directory no other run has: runs started in the same second get a -2, -3... suffix (mkdir is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    for i in itertools.count(1):
        run_dir = parent / (name if i == 1 else f"{name}-{i}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_env(run: RunConfig, num_envs: int, seed: int, env_fn: Callable | None = None,
             render_mode: str | None = None, training: bool = False) -> envs.VecEnv:
    """Training envs (``training``) add ``run.train_env_kwargs``; evaluation envs get ``run.env_kwargs`` only."""
    backend = "sync" if render_mode is not None else run.backend
    kwargs = {**run.env_kwargs, **run.train_env_kwargs} if training else run.env_kwargs
    return envs.make(env_fn or run.env, num_envs, seed=seed, backend=backend, atari=run.atari,
                     max_episode_steps=run.max_episode_steps, env_kwargs=kwargs, render_mode=render_mode,
                     pipeline=run.collect_pipeline and training and num_envs > 1)


def check_workers(spec: AgentSpec, run: RunConfig) -> None:
    if run.workers and not spec.remote_workers:
        supported = ", ".join(name for name, s in available_agents().items()
                              if isinstance(s, AgentSpec) and s.remote_workers)
        raise ConfigError(f"Agent '{run.agent}' does not run with remote workers (--workers {run.workers}); agents "
                          f"that do: {supported}. Fix: --workers 0")


def make_train_env(run: RunConfig, agent_config: Any, env_fn: Callable | None = None):
    """The training envs: a VecEnv in this process, or with ``run.workers`` a ``WorkerGroup`` whose workers build and
    step them (rlkit2/remote.py); the learner then builds one env, only to read the spaces from."""
    if not run.workers:
        return make_env(run, run.num_envs, run.seed, env_fn, training=True)
    check_workers(get_agent_spec(run.agent), run)
    from rlkit2.remote import WorkerGroup, WorkerSpec

    probe = make_env(run, 1, run.seed, env_fn, training=True)
    make_kwargs = {"backend": run.backend, "atari": run.atari, "max_episode_steps": run.max_episode_steps,
                   "env_kwargs": {**run.env_kwargs, **run.train_env_kwargs},
                   "pipeline": run.collect_pipeline}
    worker_spec = WorkerSpec(run.agent, agent_config, env_fn or run.env, make_kwargs, run.threads_collect,
                             run.total_steps)
    return WorkerGroup(worker_spec, probe, run.num_envs, run.workers, run.worker_mode, run.worker_timeout,
                       run.worker_cpus)


def build_agent(spec: AgentSpec, run: RunConfig, agent_config: Any, env: envs.VecEnv,
                training: bool = True, env_seed: int | None = None, run_dir: Path | None = None,
                stop_requested: Callable[[], bool] | None = None) -> Agent:
    device = resolve_device(run.device)
    seed = run.seed if env_seed is None else env_seed
    context = BuildContext(env=env, device=device, total_steps=run.total_steps, seed=seed,
                           threads_collect=run.threads_collect, threads_update=run.threads_update,
                           training=training, run_dir=run_dir, stop_requested=stop_requested or (lambda: False))
    return spec.build(agent_config, context)


def train(run: RunConfig, agent_config: Any = None, *, env_fn: Callable | None = None,
          resume_from: str | Path | None = None, on_eval: Callable[[int, dict], None] | None = None) -> RunResult:
    """Train ``run.agent`` on ``run.env`` for ``run.total_steps`` env steps. ``resume_from``: an existing run
    directory to continue (its latest checkpoint); then ``run``/``agent_config`` are the resolved configs
    (e.g. from ``load_run_config``), possibly with a larger budget. ``on_eval(step, metrics)`` is called after
    every evaluation with its ``eval/...`` metrics (a sweep reports them to its scheduler)."""
    spec = get_agent_spec(run.agent)
    check_workers(spec, run)  # before a run directory is made
    agent_config = agent_config if agent_config is not None else spec.config_cls()
    seed_everything(run.seed)
    set_threads(run.threads_collect)

    run_dir, created = _open_run_dir(run, resume_from)
    checkpoints = ckpt.CheckpointDir(run_dir / "checkpoints", keep=run.keep_checkpoints)
    counters = {"iteration": 0, "best_return": None, "last_eval_step": 0, "last_checkpoint_step": 0,
                "wall_time": 0.0}
    stop = _StopFlag()  # handlers installed around the loop below; the agent may poll it (BuildContext)
    env = eval_env = video_env = logger = None
    try:  # start-up: a failure here closes what was opened and removes a run directory this call created
        checkpoints.remove_stale_tmp()  # left by a checkpoint write that a kill -9 interrupted
        payload_in = path_in = None
        if resume_from is not None:
            path_in = checkpoints.latest()
            if path_in is None:
                raise ckpt.CheckpointError(f"Run directory '{run_dir}' has no checkpoint to resume from.")
            # On the CPU: RNG states must stay CPU tensors; load_state_dict copies the rest to the agent's device.
            payload_in = ckpt.load(path_in, map_location="cpu")
            counters.update(payload_in["run"])

        env = make_train_env(run, agent_config, env_fn)
        eval_env = make_env(run, run.eval_envs, run.seed + 10_000, env_fn)
        video_env = _video_env(run, env_fn) if run.eval_video else None  # a renderer that fails, fails now
        # A resumed session seeds its training envs differently, so it does not replay the first session's
        # initial states (iteration 0 = a fresh run: the plain seed).
        agent = build_agent(spec, run, agent_config, env, env_seed=run.seed + counters["iteration"], run_dir=run_dir,
                            stop_requested=lambda: stop.requested)
        if payload_in is not None:
            restore_agent(agent, payload_in, path_in, run, agent_config, env,
                          fix="restore the run's config.json, or start a new run")
            if hasattr(agent, "load_resume_state"):
                agent.load_resume_state(payload_in.get("resume_state"))
            ckpt.restore_rng(payload_in["rng"])
            env.env_steps = agent.env_steps  # env errors name the run's env step
            print(f"resumed from step {agent.env_steps} (checkpoint {path_in})", flush=True)
        # Written once the checkpoint is known to fit: a refused resume leaves config.json as it was.
        config_record = {"agent": run.agent, "run": to_dict(run), "agent_config": to_dict(agent_config),
                         "env_settings": env.settings, "env_is_callable": env_fn is not None,
                         "source": source_info(agent_device(agent))}
        (run_dir / "config.json").write_text(json.dumps(config_record, indent=2, default=str) + "\n")
        logger = Logger(run_dir, tensorboard=run.tensorboard,
                        resume_step=agent.env_steps if payload_in is not None else None,
                        resume_rows=counters.get("progress_rows") if payload_in is not None else None,
                        sinks=_trackers(run, run_dir, config_record))
    except BaseException:
        for opened in (logger, env, eval_env, video_env):
            if opened is not None:
                opened.close()
        _discard_new_run_dir(run_dir, created)
        raise
    spaces = ckpt.env_spaces(env)
    note = budget_note(agent, run.total_steps)
    if note:
        print(note, flush=True)

    def payload(resumable: bool = True) -> dict:
        """A checkpoint; ``resumable`` ones also carry what only resuming needs (an off-policy agent's replay
        buffer, via the optional ``resume_state()``), which 'best' checkpoints leave out."""
        counters["progress_rows"] = logger.num_rows  # what a resume keeps of progress.csv
        out = ckpt.make_payload(run.agent, config_record, agent.state_dict(), dict(counters), spaces)
        if resumable and hasattr(agent, "resume_state"):
            out["resume_state"] = agent.resume_state()
        return out

    def evaluate_now() -> dict:
        """An evaluation; with --eval_video also a recorded episode of the same policy (videos/, and the sinks)."""
        result = _evaluate(agent, eval_env, run)
        if video_env is not None:
            logger.log_video(agent.env_steps, _record_eval_video(agent, video_env, run, run_dir))
        return result

    progress = _progress_bar(run, agent.env_steps)
    status: Literal["finished", "interrupted"] = "finished"
    final_eval = last_eval = None
    start_wall = time.perf_counter() - counters["wall_time"]
    session_start_steps = agent.env_steps
    try:
        with stop:
            while agent.env_steps < run.total_steps:
                steps_before = agent.env_steps
                iter_start = time.perf_counter()
                stats = agent.train_iteration()
                counters["iteration"] += 1
                counters["wall_time"] = time.perf_counter() - start_wall
                metrics = _perf_metrics(stats, agent.env_steps - steps_before, time.perf_counter() - iter_start)
                if run.eval_every and agent.env_steps - counters["last_eval_step"] >= run.eval_every:
                    result = last_eval = evaluate_now()
                    counters["last_eval_step"] = agent.env_steps
                    metrics.update({f"eval/{k}": v for k, v in result.items() if k != "returns"})
                    if counters["best_return"] is None or result["return_mean"] > counters["best_return"]:
                        counters["best_return"] = result["return_mean"]
                        checkpoints.save_named(payload(resumable=False), "best")
                logger.log(agent.env_steps, metrics)
                if on_eval is not None and "eval/return_mean" in metrics and agent.env_steps < run.total_steps:
                    # (the evaluation at the end of the budget is reported after the final checkpoint: a
                    # scheduler that ends the trial at its report must find the run finished)
                    on_eval(agent.env_steps, {k: v for k, v in metrics.items() if k.startswith("eval/")})
                progress.update(agent.env_steps - steps_before)
                progress.set_postfix_str(_postfix(metrics), refresh=False)
                if run.checkpoint_every and agent.env_steps - counters["last_checkpoint_step"] >= run.checkpoint_every:
                    counters["last_checkpoint_step"] = agent.env_steps
                    checkpoints.save_step(payload(), agent.env_steps)
                session_done = run.stop_after_steps and agent.env_steps - session_start_steps >= run.stop_after_steps
                if stop.requested or session_done:
                    status = "interrupted"
                    break
            if status == "finished":
                # the final weights are evaluated once: not again when the periodic evaluation has just run
                if last_eval is None or counters["last_eval_step"] != agent.env_steps:
                    last_eval = evaluate_now()
                    logger.log(agent.env_steps, {f"eval/{k}": v for k, v in last_eval.items() if k != "returns"})
                final_eval = last_eval
                if counters["best_return"] is None or final_eval["return_mean"] >= counters["best_return"]:
                    counters["best_return"] = final_eval["return_mean"]  # ties go to the final weights
                    checkpoints.save_named(payload(resumable=False), "best")
                path = checkpoints.save_named(payload(), "final")
                logger.log_final(agent.env_steps, hparams_of(config_record), final_eval)
                if on_eval is not None:
                    on_eval(agent.env_steps, {f"eval/{k}": v for k, v in final_eval.items() if k != "returns"})
            else:
                path = checkpoints.save_step(payload(), agent.env_steps)
    except WorkerError as e:  # the agent's state is that of its last complete step: save it, say how to go on
        path = checkpoints.save_step(payload(), agent.env_steps)
        # chained to the env's own traceback where there is one (in-process workers), for debugging
        raise WorkerError(e.index, e.count, e.what + (
            f" -- training stopped at {agent.env_steps} env steps with a resumable checkpoint ({path}); continue "
            f"with: {command('train')} --resume {run_dir}")) from e.__cause__
    except NonFiniteLossError as e:
        logger.log(agent.env_steps, {"errors/nonfinite_loss": 1.0})
        raise NonFiniteLossError(f"{e} Training stopped at {agent.env_steps} env steps; {_kept_checkpoint(checkpoints)} "
                                 "Try a lower learning rate or gradient clipping.") from None
    except EnvCheckError as e:  # the env raised or returned NaN/inf: the agent is intact, so it is saved
        raise _env_failure(e, agent.env_steps, run_dir, checkpoints, payload) from None
    finally:
        progress.close()
        logger.close()
        env.close()
        eval_env.close()
        if video_env is not None:
            video_env.close()
    return RunResult(run_dir=run_dir, status=status, env_steps=agent.env_steps, final_eval=final_eval,
                     best_return=counters["best_return"], checkpoint=path, stop_signal=stop.signal)


def _trackers(run: RunConfig, run_dir: Path, config_record: dict) -> tuple:
    """The logger's extra sinks: --track wandb's."""
    if run.track == "wandb":
        return (WandbSink(run_dir, config_record, run.wandb_project, run.wandb_entity, run.wandb_group),)
    return ()


def _open_run_dir(run: RunConfig, resume_from: str | Path | None) -> tuple[Path, bool]:
    """The run directory, and whether this call created it (only then may a failed start remove it)."""
    if resume_from is not None:
        return Path(resume_from), False
    if not run.run_name:
        return _new_run_dir(Path(run.runs_dir), _run_dir_name(run)), True
    run_dir = Path(run.runs_dir) / run.run_name
    if (run_dir / "checkpoints").exists():
        raise FileExistsError(f"Run directory '{run_dir}' already has checkpoints; resume it with "
                              f"--resume {run_dir}, or choose another --run_name")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, created


def _discard_new_run_dir(run_dir: Path, created: bool) -> None:
    """After a failed start: remove the run directory if this start created it and it holds no checkpoint (so a
    typo does not leave an empty run behind). A directory that existed before (a resume, a sweep's trial
    directory) is never touched."""
    if created and not any((run_dir / "checkpoints").glob("*.pt")):
        shutil.rmtree(run_dir, ignore_errors=True)


def restore_agent(agent: Agent, payload: dict, path: str | Path, run: RunConfig, agent_config: Any,
                  env: envs.VecEnv, fix: str) -> None:
    """Load a checkpoint into ``agent`` after checking that it fits (same agent, spaces and network shapes);
    otherwise CheckpointError '<what is wrong> — <fix>' rather than a KeyError or a size-mismatch traceback."""
    ckpt.check_compatible(payload, path, agent=run.agent, spaces=ckpt.env_spaces(env), agent_state=agent.state_dict(),
                          agent_config=to_dict(agent_config), fix=fix, skip=getattr(agent, "self_checked_state", ()))
    try:
        agent.load_state_dict(payload["agent_state"])
    except (KeyError, RuntimeError) as e:  # what the checks cannot see, e.g. a layer only one side has
        detail = (str(e).strip().splitlines() or [""])[0][:300]
        raise ckpt.CheckpointError(f"checkpoint {path} does not fit this run's agent ({type(e).__name__}: "
                                   f"{detail}) — {fix}") from None


def budget_note(agent: Agent, total_steps: int) -> str | None:
    """A line saying how many env steps the run will take when the agent's budget unit (``budget_unit``: env
    steps it cannot split, and why) does not divide what is left of ``total_steps``; None when it does."""
    unit = getattr(agent, "budget_unit", None)
    left = total_steps - agent.env_steps
    if unit is None or left <= 0 or left % unit[0] == 0:
        return None
    size, why = unit
    end = agent.env_steps + math.ceil(left / size) * size
    return (f"note: this run will take {end} env steps, not total_steps={total_steps}: it advances in whole "
            f"units of {size} env steps ({why}). Set --total_steps to a multiple of {size} to match exactly.")


def _kept_checkpoint(checkpoints: ckpt.CheckpointDir) -> str:
    latest = checkpoints.latest()
    if latest is None:
        return "no checkpoint had been saved yet, so there is nothing to resume."
    return f"the last good checkpoint '{latest}' was kept."


def _env_failure(error: EnvCheckError, env_steps: int, run_dir: Path, checkpoints: ckpt.CheckpointDir,
                 payload: Callable[[], dict]) -> EnvFailedError:
    """The env failed mid-run, before the agent saw the bad step, so the agent's state is intact: keep it as a
    step checkpoint to resume from once the env is fixed (the one saved at this step, if any), and write the
    tracebacks to error.log. Returns the one-line error that says all that."""
    log = run_dir / "error.log"
    env_trace = getattr(error, "env_traceback", "")
    where = "".join(traceback.format_exception(error, chain=False))
    log.write_text(f"{error}\n\nThe env's traceback:\n{env_trace}\nWhere training met it:\n{where}" if env_trace
                   else f"{error}\n\n{where}")
    path = checkpoints.step_path(env_steps)
    try:
        if not path.is_file():
            path = checkpoints.save_step(payload(), env_steps)
        saved = f"the agent's state at env step {env_steps} is saved in {path}"
    except Exception as e:  # noqa: BLE001 -- the env's error is the one to report
        path, saved = None, f"no checkpoint could be saved ({type(e).__name__}: {e})"
    return EnvFailedError(f"{error} — {saved}; the full traceback is in {log}. Fix the env, then resume the run.",
                          run_dir, path)


def source_info(device: torch.device) -> dict[str, str]:
    """What the run was made with: rlkit2's git commit ('+dirty' with uncommitted changes to tracked files;
    'unknown' outside a git checkout), torch, Python and the device. A resumed run records its last session."""
    import platform
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"commit": commit, "torch": str(torch.__version__), "python": platform.python_version(),
            "device": str(device)}  # plain str: weights_only loading refuses torch.__version__ (TorchVersion)


def agent_device(agent: Agent) -> torch.device:
    return getattr(agent, "device", torch.device("cpu"))


def _evaluate(agent: Agent, eval_env: envs.VecEnv, run: RunConfig) -> dict:
    result = evaluate(lambda obs: agent.act(obs, deterministic=run.eval_deterministic), eval_env,
                      run.eval_episodes, agent_device(agent), seed=run.seed + 10_000)
    if env_family(run.env) == "minigrid":  # MiniGrid pays a positive reward only for reaching the goal
        result["success_rate"] = float(np.mean(np.array(result["returns"]) > 0))
    return result


def _video_env(run: RunConfig, env_fn: Callable | None) -> envs.VecEnv:
    """One evaluation env that renders frames (gymnasium's sync backend), for --eval_video."""
    import gymnasium

    os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering
    env = None
    try:
        env = make_env(run, 1, run.seed + 10_000, env_fn, render_mode="rgb_array")
        renderable_env(env, check_frame=True)  # before training, not at the first evaluation
        return env
    except (gymnasium.error.DependencyNotInstalled, ValueError) as e:
        if env is not None:
            env.close()
        raise ConfigError(f"--eval_video: cannot record '{run.env}': {e} — fix that, or train without "
                          "--eval_video") from None


def _record_eval_video(agent: Agent, video_env: envs.VecEnv, run: RunConfig, run_dir: Path) -> Path:
    return record_video(lambda obs: agent.act(obs, deterministic=run.eval_deterministic), video_env,
                        run_dir / "videos" / f"step_{agent.env_steps}.mp4", agent_device(agent),
                        seed=run.seed + 10_000)


def _perf_metrics(stats: dict[str, float], steps: int, seconds: float) -> dict[str, float]:
    metrics = dict(stats)
    metrics["perf/steps_per_sec"] = steps / max(seconds, 1e-9)
    # wait / broadcast: a learner with remote workers waiting for rollouts / putting the acting weights
    phases = {k: metrics.pop(f"time/{k}") for k in ("env", "inference", "update", "wait", "broadcast")
              if f"time/{k}" in metrics}
    for name, value in phases.items():
        metrics[f"perf/share_{name}"] = value / max(seconds, 1e-9)
    return metrics


def _postfix(metrics: dict[str, float]) -> str:
    parts = [f"{metrics['perf/steps_per_sec']:.0f} sps"]
    if "charts/episode_return" in metrics:
        parts.append(f"return {metrics['charts/episode_return']:.1f}")
    if "eval/return_mean" in metrics:
        parts.append(f"eval {metrics['eval/return_mean']:.1f}")
    return ", ".join(parts)


def _progress_bar(run: RunConfig, initial: int):
    from tqdm import tqdm

    return tqdm(total=run.total_steps, initial=initial, disable=not run.progress, unit="step",
                dynamic_ncols=True, smoothing=0.1, desc=f"{run.agent} {run.env}")


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's config.json, checked for what evaluate and resume read from it."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run directory (no config.json) — give the folder that "
                                f"{command('train')} printed as 'run directory'")
    try:
        record = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"'{path}' is damaged (not JSON: {e}) — restore it, or train a new run") from None
    missing = [key for key in ("agent", "run", "agent_config") if not isinstance(record, dict) or key not in record]
    if missing:
        raise ConfigError(f"'{path}' lacks {', '.join(missing)}: not a config.json written by rlkit2's train — "
                          "give a run directory, or restore the file")
    return record


def load_run_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> tuple[RunConfig, Any]:
    """The resolved configs saved in a run directory (for resume and evaluation), with optional overrides."""
    record = read_run_record(run_dir)
    spec = get_agent_spec(record["agent"])
    run_values = dict(record["run"])
    agent_values = dict(record["agent_config"])
    _route_overrides(spec, overrides, run_values, agent_values)
    return override(RunConfig(), run_values), override(spec.config_cls(), agent_values)


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None, env_fn: Callable | None = None,
           on_eval: Callable[[int, dict], None] | None = None) -> RunResult:
    """Continue a run from its latest checkpoint (``overrides`` may raise ``total_steps``)."""
    run, agent_config = load_run_config(run_dir, overrides)
    return train(run, agent_config, env_fn=env_fn, resume_from=run_dir, on_eval=on_eval)
