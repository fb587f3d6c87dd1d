#!/usr/bin/env python
"""DSAC's defaults on envs it has no preset for, at small budgets: rlkit2 DSAC-T with its defaults for an unknown
env (warm-up 5% of the budget, alpha = 1 at the start), DSAC-T with the official warm-up and temperature (10k
uniform-random steps, log alpha = 1; the MuJoCo preset's), and Stable-Baselines3 SAC with all its defaults.

    python scripts/bench/dsac_small_envs.py --envs point_mass pendulum --seeds 0 1 2 --steps 10000 \
        --out docs/bench/dsac_small_envs.jsonl

Envs, both given to rlkit2 as a 'module:Class' path, so no preset section applies (a user's own env):
- ``point_mass``: ``PointMass`` below, a 1-D point mass steered to a random target (reward -|x - target| per step,
  200 steps, truncated): small rewards, as many custom envs have;
- ``pendulum``: gymnasium's ``PendulumEnv`` class with a 200-step limit (as Pendulum-v1; the registered id would
  take DSAC's classic-control preset section).

Everything else is each library's default (rlkit2: 3x256 GELU, lr 3e-4, batch 256, one update per env step;
SB3: 2x256 ReLU, lr 3e-4, batch 256, 100 warm-up steps, one update per env step, alpha auto from 1). One training
env, one torch thread, one run at a time. Deterministic evaluation every --eval-every env steps and at the end on 5
separate envs (10 episodes, seeds 10000+), raw reward. Each (variant, env, seed) run appends one JSON line with its
evaluation curve and the command. The official variant at a budget not above 10k is refused (ConfigError) by
rlkit2 now; before, it trained nothing and exited 0.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import shlex
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from benchlib import append_record, column, train_to_completion  # noqa: E402

from rlkit2.peers import learn_with_evaluation  # noqa: E402


class PointMass(gym.Env):
    """A 1-D point mass: observe (x, v, target), push with a force in [-1, 1] (v += 0.1 a, damped by 0.95;
    x += 0.1 v, kept in [-2, 2]); reward -|x - target| each step, 200 steps (truncated). x and the target start
    uniform in [-1, 1], v at 0. Over 50 episodes a uniform-random policy scored -209, holding still -119, and a
    hand-tuned PD controller (a = clip(10 (target - x) - 8 v)) -7."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.v, self.target], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.target = (float(u) for u in self.np_random.uniform(-1.0, 1.0, 2))
        self.v = 0.0
        return self._obs(), {}

    def step(self, action):
        force = float(np.clip(np.asarray(action, np.float32).reshape(-1)[0], -1.0, 1.0))
        self.v = 0.95 * self.v + 0.1 * force
        self.x = float(np.clip(self.x + 0.1 * self.v, -2.0, 2.0))
        return self._obs(), -abs(self.x - self.target), False, False, {}


ENVS = {"point_mass": "dsac_small_envs:PointMass", "pendulum": "gymnasium.envs.classic_control.pendulum:PendulumEnv"}
MAX_EPISODE_STEPS = 200
OFFICIAL = {"learning_starts": 10_000, "log_alpha_init": 1.0}


def run_rlkit2(variant: str, env: str, seed: int, steps: int, eval_every: int) -> dict:
    overrides = {"seed": seed, "total_steps": steps, "eval_every": eval_every, "num_envs": 1, "threads_update": 1,
                 "max_episode_steps": MAX_EPISODE_STEPS, **(OFFICIAL if variant == "dsac_official" else {})}
    from agents.dsac import warmup_steps
    from rlkit2.config import ConfigError

    try:
        _, cfg, rows, seconds = train_to_completion("dsac", ENVS[env], overrides)
    except ConfigError as error:  # the warm-up does not fit the budget: refused, where it used to train nothing
        return {"refused": str(error), "final": untrained_return(overrides, env, seed), "updates": 0,
                "learning_starts": OFFICIAL["learning_starts"], "alpha0": float(np.exp(OFFICIAL["log_alpha_init"]))}
    curve = column(rows, "eval/return_mean")
    updates = column(rows, "charts/updates")
    return {"curve": curve, "final": curve[-1][1], "seconds": seconds, "updates": int(updates[-1][1]),
            "learning_starts": warmup_steps(cfg.learning_starts, steps), "alpha0": float(np.exp(cfg.log_alpha_init))}


def untrained_return(overrides: dict, env: str, seed: int) -> float:
    """What such a run reported before it was refused: it never updated, so its final evaluation was the
    initial policy's (built and evaluated here as the run loop does)."""
    from rlkit2.agent import get_agent_spec
    from rlkit2.run import _evaluate, build_agent, make_env, resolve_config, seed_everything

    run, cfg = resolve_config("dsac", ENVS[env], overrides)
    seed_everything(seed)
    train_env, eval_env = make_env(run, 1, seed, training=True), make_env(run, run.eval_envs, seed + 10_000)
    agent = build_agent(get_agent_spec("dsac"), run, cfg, train_env, training=False)
    result = _evaluate(agent, eval_env, run)["return_mean"]
    train_env.close()
    eval_env.close()
    return result


def run_sb3(env: str, seed: int, steps: int, eval_every: int) -> dict:
    import torch
    from stable_baselines3 import SAC

    module, name = ENVS[env].split(":")
    train_env = gym.wrappers.TimeLimit(getattr(importlib.import_module(module), name)(), MAX_EPISODE_STEPS)
    model = SAC("MlpPolicy", train_env, seed=seed, device="cpu", verbose=0)  # SB3's defaults
    start = time.perf_counter()
    curve = learn_with_evaluation(model, ENVS[env], seed, steps, eval_every, max_episode_steps=MAX_EPISODE_STEPS)
    return {"curve": curve, "final": curve[-1][1], "seconds": time.perf_counter() - start,
            "updates": int(model._n_updates), "learning_starts": model.learning_starts, "alpha0": 1.0}


def single(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    if args.variant == "sb3_sac":
        result = run_sb3(args.env, args.seed, args.steps, args.eval_every)
    else:
        result = run_rlkit2(args.variant, args.env, args.seed, args.steps, args.eval_every)
    record = {"variant": args.variant, "env": args.env, "seed": args.seed, "steps": args.steps, **result,
              "command": args.command}
    append_record(args.out, record)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["dsac_default", "dsac_official", "sb3_sac"],
                        choices=["dsac_default", "dsac_official", "sb3_sac"])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=2_500)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "dsac_small_envs.jsonl")
    parser.add_argument("--single", nargs=3, metavar=("VARIANT", "ENV", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--command", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.single:
        args.variant, args.env, args.seed = args.single[0], args.single[1], int(args.single[2])
        return single(args)
    # one run at a time, each in its own process (a fresh torch and RNG state per run, as before)
    command = "python scripts/bench/dsac_small_envs.py " + shlex.join(sys.argv[1:])
    for s, e, v in itertools.product(args.seeds, args.envs, args.variants):
        subprocess.run([sys.executable, __file__, "--single", v, e, str(s), "--steps", str(args.steps), "--eval-every",
                        str(args.eval_every), "--out", str(args.out), "--command", command], check=True)


if __name__ == "__main__":
    main()
