#!/usr/bin/env python
"""Learning benchmark: rlkit2 PPO (study preset) vs Stable-Baselines3 PPO, same env, budget and seeds.

    python scripts/bench/learning.py --envs Hopper-v5 HalfCheetah-v5 --seeds 0 1 2 --steps 1000000 \
        --eval-every 50000 --jobs 2 --out docs/bench/learning.jsonl
    python scripts/bench/plot_learning.py docs/bench/learning.jsonl docs/learning_curves.png

Protocol (both libraries): 8 training envs, deterministic evaluation every --eval-every env steps on 5
separate envs (10 episodes, seeds 10000+), returns on the raw reward. SB3 runs its library defaults
(MlpPolicy 64x64 tanh, lr 3e-4 constant, clip 0.2, GAE 0.95, 10 epochs, minibatch 64, no normalization) with
n_steps=256 so that it collects the same 2048 transitions per update as rlkit2. rlkit2 runs `--agent ppo`
(the study's recommendations, agents/presets/ppo.toml) on the `sync` backend so env speed is equal.
Each (library, env, seed) run appends one JSON line with its evaluation curve.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from benchlib import append_record, column, run_jobs, train_to_completion  # noqa: E402


def run_rlkit2(env_id: str, seed: int, steps: int, eval_every: int, overrides: dict | None = None,
               agent: str = "ppo") -> list[tuple[int, float]]:
    _, _, rows, _ = train_to_completion(agent, env_id, {
        **(overrides or {}), "seed": seed, "total_steps": steps, "eval_every": eval_every, "eval_episodes": 10,
        "eval_envs": 5, "backend": "sync"})
    return column(rows, "eval/return_mean")


def run_sb3(env_id: str, seed: int, steps: int, eval_every: int) -> list[tuple[int, float]]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from benchlib import learn_with_evaluation

    torch.set_num_threads(1)
    model = PPO("MlpPolicy", make_vec_env(env_id, n_envs=8, seed=seed), n_steps=256, seed=seed, device="cpu", verbose=0)
    return learn_with_evaluation(model, env_id, seed, steps, eval_every)


def single(args: argparse.Namespace) -> None:
    fn = run_rlkit2 if args.lib == "rlkit2" else run_sb3
    start = time.perf_counter()
    curve = fn(args.env, args.seed, args.steps, args.eval_every)
    record = {"lib": args.lib, "env": args.env, "seed": args.seed, "steps": args.steps, "curve": curve,
              "final": curve[-1][1], "seconds": time.perf_counter() - start}
    append_record(args.out, record)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", nargs="+", default=["Hopper-v5", "HalfCheetah-v5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--libs", nargs="+", default=["rlkit2", "sb3"])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--eval-every", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one core each)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "learning.jsonl")
    parser.add_argument("--single", nargs=3, metavar=("LIB", "ENV", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.single:
        args.lib, args.env, args.seed = args.single[0], args.single[1], int(args.single[2])
        return single(args)
    jobs = [(lib, env, seed) for env, seed, lib in itertools.product(args.envs, args.seeds, args.libs)]
    run_jobs([[sys.executable, __file__, "--single", lib, env, str(seed), "--steps", str(args.steps),
               "--eval-every", str(args.eval_every), "--out", str(args.out)] for lib, env, seed in jobs], args.jobs)


if __name__ == "__main__":
    main()
