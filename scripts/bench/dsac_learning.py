#!/usr/bin/env python
"""Learning benchmark: rlkit2 DSAC-T vs Stable-Baselines3 SAC, same env, budget, seeds and network sizes.

    python scripts/bench/dsac_learning.py --envs HalfCheetah-v5 --seeds 0 1 2 --steps 100000 --jobs 2 \
        --out docs/bench/dsac_learning.jsonl
    python scripts/bench/plot_learning.py docs/bench/dsac_learning.jsonl docs/dsac_learning_curves.png

Protocol (both libraries): one training env (sync backend, so env speed is equal), 3x256 GELU MLPs for the
actor and each critic, Adam 3e-4 for every optimizer, batch 256, replay 1e6, 10k uniform-random warm-up
steps, gamma 0.99, tau 0.005, one gradient update per env step, automatic entropy temperature with target
-dim(A); one torch thread per run. Deterministic evaluation every --eval-every env steps on 5 separate envs
(10 episodes, seeds 10000+), returns on the raw reward. What differs is the algorithm: SAC's MSE critics and
every-step actor/temperature updates vs DSAC-T (agents/dsac.py, its defaults otherwise). Each (library, env,
seed) run appends one JSON line with its evaluation curve.
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

from benchlib import append_record, run_jobs  # noqa: E402

SHARED = {"hidden": [256, 256, 256], "lr": 3e-4, "batch": 256, "buffer": 1_000_000, "learning_starts": 10_000,
          "gamma": 0.99, "tau": 0.005}


def run_rlkit2(env_id: str, seed: int, steps: int, eval_every: int) -> list[tuple[int, float]]:
    from learning import run_rlkit2 as run

    overrides = {"num_envs": 1, "threads_update": 1, "hidden": ",".join(map(str, SHARED["hidden"])),
                 "activation": "gelu", "critic_lr": SHARED["lr"], "policy_lr": SHARED["lr"], "alpha_lr": SHARED["lr"],
                 "batch_size": SHARED["batch"], "buffer_size": SHARED["buffer"],
                 "learning_starts": SHARED["learning_starts"], "gamma": SHARED["gamma"], "tau": SHARED["tau"],
                 "replay_ratio": 1.0}
    return run(env_id, seed, steps, eval_every, overrides, agent="dsac")


def run_sb3(env_id: str, seed: int, steps: int, eval_every: int) -> list[tuple[int, float]]:
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC

    from benchlib import learn_with_evaluation

    torch.set_num_threads(1)
    model = SAC("MlpPolicy", gym.make(env_id), seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": SHARED["hidden"], "activation_fn": torch.nn.GELU},
                learning_rate=SHARED["lr"], batch_size=SHARED["batch"], buffer_size=SHARED["buffer"],
                learning_starts=SHARED["learning_starts"], gamma=SHARED["gamma"], tau=SHARED["tau"],
                train_freq=1, gradient_steps=1, ent_coef="auto")
    return learn_with_evaluation(model, env_id, seed, steps, eval_every)


def single(args: argparse.Namespace) -> None:
    fn = run_rlkit2 if args.lib == "rlkit2" else run_sb3
    start = time.perf_counter()
    curve = fn(args.env, args.seed, args.steps, args.eval_every)
    record = {"lib": args.lib, "algo": "DSAC-T" if args.lib == "rlkit2" else "SAC", "env": args.env,
              "seed": args.seed, "steps": args.steps, "curve": curve, "final": curve[-1][1],
              "seconds": time.perf_counter() - start}
    append_record(args.out, record)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--libs", nargs="+", default=["rlkit2", "sb3"])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one core each)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "dsac_learning.jsonl")
    parser.add_argument("--single", nargs=3, metavar=("LIB", "ENV", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.single:
        args.lib, args.env, args.seed = args.single[0], args.single[1], int(args.single[2])
        return single(args)
    # seed-major order: each seed's pair of runs finishes before the next seed starts
    jobs = [(lib, env, seed) for seed, env, lib in itertools.product(args.seeds, args.envs, args.libs)]
    run_jobs([[sys.executable, __file__, "--single", lib, env, str(seed), "--steps", str(args.steps),
               "--eval-every", str(args.eval_every), "--out", str(args.out)] for lib, env, seed in jobs], args.jobs)


if __name__ == "__main__":
    main()
