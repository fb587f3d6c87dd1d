"""Peer baselines as sweep trials: Stable-Baselines3's PPO and SAC trained beside rlkit2's agents in one sweep spec
(``agent = "sb3_ppo"`` or ``"sb3_sac"``), evaluated with rlkit2's protocol and written in the shape of an rlkit2 run
directory, so that results, tables and plots treat them alike.

A peer trial writes ``trial.json``, ``progress.csv`` (step, eval/return_mean, eval/return_std, perf/steps_per_sec
at every evaluation) and, when it finishes, ``finished.json``. It has no periodic checkpoint: an interrupted peer
trial restarts from scratch on the next run of the sweep (SB3 does not save its optimizer and replay state as one
resumable unit; the peers in this project's benchmarks run for minutes to an hour).

Options a peer takes: the run options below, ``hidden`` (e.g. 256,256,256) and ``activation`` (tanh, relu, gelu,
elu) for both networks, and any keyword of the SB3 class (n_steps, learning_rate, batch_size, ...). Anything else
is an error before the sweep starts. Needs the ``bench`` extra (stable-baselines3).
"""

from __future__ import annotations

import ast
import csv
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from rlkit2.config import ConfigError

PEERS = {"sb3_ppo": "PPO", "sb3_sac": "SAC"}
RUN_OPTIONS = {"seed": 0, "total_steps": 1_000_000, "eval_every": 50_000, "eval_episodes": 10, "eval_envs": 5,
               "num_envs": 1, "threads_update": 1, "backend": "sync", "device": "cpu"}
"""The run options a peer takes, with its defaults; eval_* follow rlkit2's protocol (deterministic episodes on
separate envs seeded 10000+, raw reward)."""
ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "gelu": "GELU", "elu": "ELU"}
FINISHED_MARKER = "finished.json"


def is_peer(agent: str) -> bool:
    return agent in PEERS


def _sb3_class(agent: str):
    try:
        import stable_baselines3
    except ImportError:
        raise ConfigError(f"Agent '{agent}' is Stable-Baselines3's {PEERS[agent]}: install it with "
                          "pip install -e '.[bench]'") from None
    return getattr(stable_baselines3, PEERS[agent])


def _value(text: Any) -> Any:
    """'3e-4' -> 0.0003, 'true' -> True, '256' -> 256, 'auto' -> 'auto' (TOML values pass through)."""
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def resolve_peer(agent: str, overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run options, SB3 keyword arguments) of a peer trial, every option checked: the sweep's dry run."""
    cls = _sb3_class(agent)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "policy", "env", "seed", "device",
                                                                    "verbose", "tensorboard_log", "_init_setup_model"}
    run, kwargs, policy_kwargs = dict(RUN_OPTIONS), {}, {}
    for name, raw in overrides.items():
        if name in ("runs_dir", "run_name", "progress"):
            continue
        value = _value(raw)
        if name in RUN_OPTIONS:
            run[name] = value
        elif name == "hidden":
            policy_kwargs["net_arch"] = [int(v) for v in (value.split(",") if isinstance(value, str) else
                                                          value if isinstance(value, (list, tuple)) else [value])]
        elif name == "activation":
            if str(value) not in ACTIVATIONS:
                raise ConfigError(f"{agent}: activation '{value}': allowed values are {', '.join(ACTIVATIONS)}")
            policy_kwargs["activation_fn"] = str(value)
        elif name in accepted:
            kwargs[name] = value
        else:
            import difflib

            close = difflib.get_close_matches(name, [*RUN_OPTIONS, "hidden", "activation", *accepted], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{agent}: unknown option '{name}'{hint}; a peer takes {', '.join(RUN_OPTIONS)}, hidden, "
                              f"activation and the keywords of stable_baselines3.{PEERS[agent]}")
    if run["backend"] != "sync" or run["device"] != "cpu":
        raise ConfigError(f"{agent} runs on SB3's DummyVecEnv on the CPU: drop backend/device (or set sync/cpu)")
    for name in ("total_steps", "eval_every", "eval_episodes", "eval_envs", "num_envs", "threads_update"):
        if not isinstance(run[name], int) or run[name] < (0 if name == "eval_every" else 1):
            raise ConfigError(f"{agent}: {name} must be a positive integer, got {run[name]!r}")
    if policy_kwargs:
        kwargs["policy_kwargs"] = policy_kwargs
    return run, kwargs


def check_peer(agent: str, env_id: str, overrides: dict[str, Any]) -> None:
    """Everything a peer trial would do before learning: resolve its options and build the model once."""
    run, kwargs = resolve_peer(agent, overrides)
    model = _build(agent, env_id, run, kwargs)
    model.get_env().close()


def _build(agent: str, env_id: str, run: dict[str, Any], kwargs: dict[str, Any]):
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401 -- registers rlkit2's own env ids with gymnasium

    kwargs = dict(kwargs)
    if "policy_kwargs" in kwargs and "activation_fn" in kwargs["policy_kwargs"]:
        name = kwargs["policy_kwargs"]["activation_fn"]
        kwargs["policy_kwargs"] = {**kwargs["policy_kwargs"], "activation_fn": getattr(torch.nn, ACTIVATIONS[name])}
    try:
        env = make_vec_env(env_id, n_envs=run["num_envs"], seed=run["seed"])
        return _sb3_class(agent)("MlpPolicy", env, seed=run["seed"], device="cpu", verbose=0, **kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(f"{agent} on {env_id}: {e}") from None


def run_peer_trial(agent: str, env_id: str, overrides: dict[str, Any], run_dir: Path,
                   on_eval: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train the peer in ``run_dir`` (which holds trial.json) with periodic evaluations; mark it finished."""
    import torch

    from rlkit2.run import source_info

    run, kwargs = resolve_peer(agent, overrides)
    torch.set_num_threads(run["threads_update"])
    model = _build(agent, env_id, run, kwargs)
    progress = run_dir / "progress.csv"
    columns = ["step", "eval/return_mean", "eval/return_std", "perf/steps_per_sec"]
    start = last_time = time.perf_counter()
    last_step = 0

    def record(step: int, result: dict) -> None:
        nonlocal last_time, last_step
        now = time.perf_counter()
        row = {"step": step, "eval/return_mean": result["return_mean"], "eval/return_std": result["return_std"],
               "perf/steps_per_sec": (step - last_step) / max(now - last_time, 1e-9)}
        last_time, last_step = now, step
        new = not progress.exists()
        with open(progress, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            if new:
                writer.writeheader()
            writer.writerow(row)
        if on_eval is not None:
            on_eval(step, {"eval/return_mean": result["return_mean"], "eval/return_std": result["return_std"]})

    curve = learn_with_evaluation(model, env_id, run["seed"], run["total_steps"], run["eval_every"] or run["total_steps"],
                                  episodes=run["eval_episodes"], eval_envs=run["eval_envs"], on_result=record)
    model.get_env().close()
    marker = {"wall_time": time.perf_counter() - start, "steps": int(model.num_timesteps), "final_eval": curve[-1][1],
              "source": source_info(torch.device("cpu"))}
    tmp = run_dir / f".{FINISHED_MARKER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    os.replace(tmp, run_dir / FINISHED_MARKER)
    return marker


def learn_with_evaluation(model, env_id: str, seed: int, steps: int, eval_every: int, episodes: int = 10,
                          eval_envs: int = 5, max_episode_steps: int | None = None,
                          on_result: Callable[[int, dict], None] | None = None) -> list[tuple[int, float]]:
    """``model.learn(steps)`` with a deterministic evaluation (``episodes`` episodes on ``eval_envs`` separate envs,
    seeds 10000+, raw reward: rlkit2's protocol) every ``eval_every`` env steps and at the end; returns the curve.
    ``max_episode_steps`` sets the evaluation envs' time limit (an env given as 'module:Class' has none of its own)."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    import envs
    from rlkit2.evaluation import evaluate

    eval_env = envs.make(env_id, eval_envs, seed=seed + 10_000, backend="sync", max_episode_steps=max_episode_steps)
    curve: list[tuple[int, float]] = []

    def act(obs):
        return torch.as_tensor(model.predict(obs.numpy(), deterministic=True)[0])

    def score(step: int) -> None:
        result = evaluate(act, eval_env, episodes, torch.device("cpu"), seed=seed + 10_000)
        curve.append((step, result["return_mean"]))
        if on_result is not None:
            on_result(step, result)

    class Eval(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next = eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += eval_every
                score(self.num_timesteps)
            return True

    model.learn(total_timesteps=steps, callback=Eval())
    if not curve or curve[-1][0] != model.num_timesteps:
        score(model.num_timesteps)
    eval_env.close()
    return curve
