#!/usr/bin/env python
"""Throughput: raw vectorized env steps/s per backend, and PPO training steps/s vs Stable-Baselines3.

    python scripts/bench/throughput.py [--steps 20480] [--repeats 2] [--out docs/bench/throughput.json]

1. Raw env: random actions (pre-sampled, so sampling is not timed) through envs.make for every backend that
   supports the env: HalfCheetah-v5 x 8 (sync, async, envpool) and ALE/Pong-v5 x 8 (ale, sync).
2. PPO on HalfCheetah-v5 x 8 with identical hyperparameters in rlkit2 and SB3 (2048 transitions per
   iteration, 10 epochs of minibatch 64, separate 64x64 tanh nets, std 1 at init, no observation
   normalization, no lr decay, advantages not recomputed -- SB3's semantics), run alternately in the same
   process so both see the same machine state. For rlkit2 the share of time in env / inference / update is
   reported and collection speed (steps / (env + inference time)) is compared with the raw env rate.
   rlkit2 runs both uncompiled and with ``compile_loss`` (torch.compile of the minibatch loss; its MuJoCo
   preset default). Rates are measured after the first iteration for every variant, SB3 included: the
   first iteration is warm-up (and, with compile_loss, the compile), reported as first_iteration_seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchlib import raw_env_rate  # noqa: E402

N_ENVS = 8


COMMON = dict(gamma=0.99, gae_lambda=0.95, clip_eps=0.2, lr=3e-4, epochs=10, minibatch_size=64, num_steps=256,
              entropy_coef=0.0, value_coef=0.5, max_grad_norm=0.5)


def rlkit2_ppo_rate(total_steps: int, backend: str, threads_update: int, compile_loss: bool = False) -> dict:
    from rlkit2.run import resolve_config, train

    overrides = {**COMMON, "compile_loss": compile_loss, "policy_hidden": "64,64", "value_hidden": "64,64",
                 "normalize_obs": "false", "lr_decay": "none", "recompute_advantages": "false", "std_transform": "exp", "init_std": 1.0,
                 "total_steps": total_steps, "eval_every": 0, "checkpoint_every": 0, "eval_episodes": 1,
                 "eval_envs": 1, "backend": backend, "num_envs": N_ENVS,
                 "threads_update": threads_update, "progress": "false", "tensorboard": "false",
                 "runs_dir": "/tmp/rlkit2_bench_runs"}
    # Episodes keep HalfCheetah's registered 1000-step limit, as in SB3; the final evaluation is not timed.
    run, cfg = resolve_config("ppo", "HalfCheetah-v5", {k: str(v) for k, v in overrides.items()})
    from rlkit2 import run as run_module

    timings: dict[str, float] = {}
    original = run_module._perf_metrics
    first: list[float] = []

    def capture(stats, steps, seconds):  # accumulate the loop's own per-iteration timing, after the first
        if not first:  # warm-up (and with compile_loss, the compile): reported apart, not in the rate
            first.append(seconds)
            return original(stats, steps, seconds)
        for key in ("time/env", "time/inference", "time/update"):
            timings[key] = timings.get(key, 0.0) + stats.get(key, 0.0)
        timings["steps"] = timings.get("steps", 0) + steps
        timings["seconds"] = timings.get("seconds", 0.0) + seconds
        return original(stats, steps, seconds)

    run_module._perf_metrics = capture
    try:
        train(run, cfg)
    finally:
        run_module._perf_metrics = original
    seconds = timings["seconds"]
    collect = timings["time/env"] + timings["time/inference"]
    return {"steps_per_sec": timings["steps"] / seconds,
            "collect_steps_per_sec": timings["steps"] / collect,
            "share_env": timings["time/env"] / seconds, "share_inference": timings["time/inference"] / seconds,
            "share_update": timings["time/update"] / seconds, "first_iteration_seconds": first[0]}


def rlkit2_atari_rate(total_steps: int, threads_update: int, cnn_precision: str = "fp32") -> dict:
    """PPO with the Atari preset (Nature-CNN, 8 envs x 128 steps, 4 epochs of 256) on ALE/Pong-v5. The first
    iteration (warm-up) is timed too; at 20k+ steps it is a few percent of the total."""
    from rlkit2.run import resolve_config, train

    run, cfg = resolve_config("ppo", "ALE/Pong-v5", {
        "total_steps": str(total_steps), "eval_every": "0", "checkpoint_every": "0", "eval_episodes": "1",
        "eval_envs": "1", "threads_update": str(threads_update), "progress": "false", "tensorboard": "false",
        "cnn_precision": cnn_precision, "runs_dir": "/tmp/rlkit2_bench_runs",
        "atari.max_episode_frames": "2000"})  # short final eval
    from rlkit2.logger import read_progress

    result = train(run, cfg)
    rows = [r for r in read_progress(result.run_dir) if "perf/steps_per_sec" in r]
    steps = sum(1 for _ in rows) * 8 * 128
    seconds = sum(8 * 128 / r["perf/steps_per_sec"] for r in rows)
    return {"steps_per_sec": steps / seconds, "frames_per_sec": 4 * steps / seconds,
            "share_update": sum(r["perf/share_update"] * 8 * 128 / r["perf/steps_per_sec"] for r in rows) / seconds}


def sb3_ppo_rate(total_steps: int, threads: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    venv = make_vec_env("HalfCheetah-v5", n_envs=N_ENVS, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=COMMON["num_steps"], batch_size=COMMON["minibatch_size"],
                n_epochs=COMMON["epochs"], gamma=COMMON["gamma"], gae_lambda=COMMON["gae_lambda"],
                clip_range=COMMON["clip_eps"], learning_rate=COMMON["lr"], ent_coef=0.0, vf_coef=0.5,
                max_grad_norm=0.5, policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]),
                                                      activation_fn=torch.nn.Tanh), device="cpu", seed=0, verbose=0)

    class Timer(BaseCallback):
        def __init__(self):
            super().__init__()
            self.collect = 0.0
            self._t = 0.0
            self.rollouts = 0
            self.start = 0.0  # the second rollout's start: the first iteration is warm-up, as for rlkit2
            self.start_steps = 0

        def _on_rollout_start(self):
            self._t = time.perf_counter()
            self.rollouts += 1
            if self.rollouts == 2:
                self.start, self.start_steps = self._t, self.model.num_timesteps

        def _on_rollout_end(self):
            if self.rollouts >= 2:
                self.collect += time.perf_counter() - self._t

        def _on_step(self):
            return True

    timer = Timer()
    model.learn(total_timesteps=total_steps, callback=timer)
    seconds = time.perf_counter() - timer.start
    steps = model.num_timesteps - timer.start_steps
    venv.close()
    return {"steps_per_sec": steps / seconds, "collect_steps_per_sec": steps / timer.collect,
            "share_collect": timer.collect / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20480, help="PPO env steps per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of each PPO measurement")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/throughput.json"))
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated PPO variants to run (names as printed, e.g. "
                        "'rlkit2 sync t1 compiled,sb3 t1'); default all")
    parser.add_argument("--atari-steps", type=int, default=0, help="also time PPO on Pong for this many steps")
    args = parser.parse_args()
    if args.steps < 3 * 2048:
        parser.error("--steps must cover at least 3 iterations of 2048 steps: the first is not timed")
    torch.set_num_threads(1)
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "torch": torch.__version__, "python": platform.python_version()},
                     "command": " ".join(sys.argv), "raw": {}, "ppo": {}}
    if not args.skip_raw:
        backends = {"HalfCheetah-v5": ["sync", "async", "envpool"], "ALE/Pong-v5": ["ale", "sync"]}
        for env_id, names in backends.items():
            for backend in names:
                try:
                    rate = raw_env_rate(env_id, backend, N_ENVS, seconds=4.0)
                except (ImportError, ValueError) as e:
                    print(f"skip {env_id} {backend}: {e}")
                    continue
                results["raw"][f"{env_id} {backend}"] = rate
                print(f"raw  {env_id:16s} {backend:8s} {rate:9.0f} steps/s", flush=True)

    variants = {"rlkit2 sync t1": lambda: rlkit2_ppo_rate(args.steps, "sync", 1),
                "rlkit2 sync t2": lambda: rlkit2_ppo_rate(args.steps, "sync", 2),
                "rlkit2 envpool t1": lambda: rlkit2_ppo_rate(args.steps, "envpool", 1),
                "rlkit2 sync t1 compiled": lambda: rlkit2_ppo_rate(args.steps, "sync", 1, compile_loss=True),
                "rlkit2 envpool t1 compiled": lambda: rlkit2_ppo_rate(args.steps, "envpool", 1, compile_loss=True),
                "sb3 t1": lambda: sb3_ppo_rate(args.steps, 1),
                "sb3 t2": lambda: sb3_ppo_rate(args.steps, 2)}
    if args.only:
        wanted = [name.strip() for name in args.only.split(",")]
        unknown = [name for name in wanted if name not in variants]
        if unknown:
            parser.error(f"--only: unknown variant(s) {unknown}; choose from {list(variants)}")
        variants = {name: variants[name] for name in wanted}
    for repeat in range(args.repeats):
        for name, fn in variants.items():
            out = fn()
            results["ppo"].setdefault(name, []).append(out)
            print(f"ppo  {name:18s} repeat {repeat}: " + ", ".join(f"{k} {v:.3g}" for k, v in out.items()), flush=True)

    if args.atari_steps:
        for threads in (1, 2):
            out = rlkit2_atari_rate(args.atari_steps, threads)
            results.setdefault("atari_ppo", {})[f"threads_update={threads}"] = out
            print(f"atari PPO Pong threads_update={threads}: " + ", ".join(f"{k} {v:.3g}" for k, v in out.items()),
                  flush=True)

    print("\nsummary (median over repeats)")
    median = {name: float(np.median([r["steps_per_sec"] for r in runs])) for name, runs in results["ppo"].items()}
    best_sb3 = max((v for k, v in median.items() if k.startswith("sb3")), default=float("nan"))
    for name, value in median.items():
        collect = float(np.median([r["collect_steps_per_sec"] for r in results["ppo"][name]]))
        raw_key = "HalfCheetah-v5 envpool" if "envpool" in name else "HalfCheetah-v5 sync"
        raw = results["raw"].get(raw_key)
        raw_txt = f", collection {collect:.0f} steps/s = {collect / raw:.0%} of raw {raw_key}" if raw else ""
        print(f"{name:18s} {value:7.0f} steps/s = {value / best_sb3:.2f}x best SB3{raw_txt}")
    results["median_steps_per_sec"] = median
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
