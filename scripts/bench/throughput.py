#!/usr/bin/env python
"""Throughput: raw vectorized env steps/s per backend, and PPO training steps/s vs Stable-Baselines3 and Tianshou.

    python scripts/bench/throughput.py [--steps 20480] [--repeats 2] [--out docs/bench/throughput.json]

1. Raw env: random actions (pre-sampled, so sampling is not timed) through envs.make for every backend that
   supports the env: HalfCheetah-v5 x 8 (sync, async, envpool) and ALE/Pong-v5 x 8 (ale, sync).
2. PPO on HalfCheetah-v5 x 8 with identical hyperparameters in rlkit2 and SB3 (2048 transitions per
   iteration, 10 epochs of minibatch 64, separate 64x64 tanh nets, std 1 at init, no observation
   normalization, no lr decay, advantages not recomputed -- SB3's semantics), run alternately in the same
   process so both see the same machine state. For rlkit2 the share of time in env / inference / update is
   reported and collection speed (steps / (env + inference time); and of the whole loop outside the update,
   storage and bookkeeping included) is compared with the raw env rate. envpool runs with and without the
   collection pipeline (--collect_pipeline true / false: envs/pipeline.py); SB3 and sync have none.
   rlkit2 runs both uncompiled and with ``compile_loss`` (torch.compile of the minibatch loss; its MuJoCo
   preset default). Rates are measured after the first iteration for every variant, SB3 included: the
   first iteration is warm-up (and, with compile_loss, the compile), reported as first_iteration_seconds.
   Tianshou 2's PPO runs beside them at the same settings where it is installed (scripts/bench/tianshou_peer.py
   lists what it cannot make identical); without it the script says so and runs the rest.
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

import tianshou_peer  # noqa: E402
from benchlib import ppo_rate, raw_env_rate  # noqa: E402

N_ENVS = 8


COMMON = dict(gamma=0.99, gae_lambda=0.95, clip_eps=0.2, lr=3e-4, epochs=10, minibatch_size=64, num_steps=256,
              entropy_coef=0.0, value_coef=0.5, max_grad_norm=0.5)


def rlkit2_ppo_rate(total_steps: int, backend: str, threads_update: int, compile_loss: bool = False,
                    pipeline: bool = False) -> dict:
    """rlkit2 PPO at SB3's hyperparameters (COMMON and the settings below); episodes keep HalfCheetah's registered
    1000-step limit, as in SB3; the final evaluation is not timed."""
    overrides = {**COMMON, "compile_loss": compile_loss, "policy_hidden": "64,64", "value_hidden": "64,64",
                 "normalize_obs": False, "lr_decay": "none", "recompute_advantages": False, "std_transform": "exp",
                 "init_std": 1.0, "backend": backend, "num_envs": N_ENVS, "collect_pipeline": pipeline,
                 "threads_update": threads_update}
    return ppo_rate("HalfCheetah-v5", total_steps, overrides)


def rlkit2_atari_rate(total_steps: int, threads_update: int, cnn_precision: str = "fp32",
                      collect_pipeline: bool = False, compile_loss: bool = True) -> dict:
    """PPO with the Atari preset (Nature-CNN, 8 envs x 128 steps, 4 epochs of 256) on ALE/Pong-v5, timed from the
    second iteration on (the first is warm-up, as for SB3). ``update_gflops_per_sec``: the forward and backward FLOPs
    of the update's minibatches (scripts/bench/cnn_peak.py) over the update's time."""
    from cnn_peak import nature_cnn_layers, train_flops
    from rlkit2.run import resolve_config, train

    run, cfg = resolve_config("ppo", "ALE/Pong-v5", {
        "total_steps": str(total_steps), "eval_every": "0", "checkpoint_every": "0", "eval_episodes": "1",
        "eval_envs": "1", "threads_update": str(threads_update), "progress": "false", "tensorboard": "false",
        "cnn_precision": cnn_precision, "collect_pipeline": str(collect_pipeline).lower(),
        "compile_loss": str(compile_loss).lower(),
        "runs_dir": "/tmp/rlkit2_bench_runs",
        "atari.max_episode_frames": "2000"})  # short final eval
    from rlkit2.logger import read_progress

    result = train(run, cfg)
    batch = run.num_envs * cfg.num_steps
    rows = [r for r in read_progress(result.run_dir) if "perf/steps_per_sec" in r][1:]
    seconds = sum(batch / r["perf/steps_per_sec"] for r in rows)
    update_seconds = sum(r["perf/share_update"] * batch / r["perf/steps_per_sec"] for r in rows)
    flops = len(rows) * cfg.epochs * batch * train_flops(nature_cnn_layers(actions=6))
    return {"steps_per_sec": len(rows) * batch / seconds, "frames_per_sec": 4 * len(rows) * batch / seconds,
            "share_update": update_seconds / seconds, "update_gflops_per_sec": flops / update_seconds / 1e9}


def sb3_atari_rate(total_steps: int, threads: int) -> dict:
    """SB3 PPO with the rl-baselines3-zoo Atari settings (CnnPolicy: the same Nature-CNN, shared by policy and value;
    8 envs x 128 steps, 4 epochs of 256, lr 2.5e-4, clip 0.1, ent 0.01) on PongNoFrameskip-v4 with SB3's
    AtariWrapper and a 4-frame stack: the same preprocessing as rlkit2's Atari preset (frame skip 4, 84x84 gray,
    noop reset, fire reset, episodic life, reward clipping). Its lr and clip schedules are constant here: their
    cost is nil, and rlkit2's anneal lr on the host too."""
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    torch.set_num_threads(threads)
    venv = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=8, seed=0), n_stack=4)
    model = PPO("CnnPolicy", venv, n_steps=128, n_epochs=4, batch_size=256, learning_rate=2.5e-4, clip_range=0.1,
                ent_coef=0.01, vf_coef=0.5, device="cpu", seed=0, verbose=0)
    out = _sb3_timed_learn(model, total_steps, venv)
    update_seconds = out["steps"] / out["steps_per_sec"] * (1 - out["share_collect"])
    from cnn_peak import nature_cnn_layers, train_flops

    flops = out["steps"] * 4 * train_flops(nature_cnn_layers(actions=6))  # 4 epochs over every step
    return {**out, "update_gflops_per_sec": flops / update_seconds / 1e9}


def sb3_ppo_rate(total_steps: int, threads: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    venv = make_vec_env("HalfCheetah-v5", n_envs=N_ENVS, seed=0)
    model = PPO("MlpPolicy", venv, n_steps=COMMON["num_steps"], batch_size=COMMON["minibatch_size"],
                n_epochs=COMMON["epochs"], gamma=COMMON["gamma"], gae_lambda=COMMON["gae_lambda"],
                clip_range=COMMON["clip_eps"], learning_rate=COMMON["lr"], ent_coef=0.0, vf_coef=0.5,
                max_grad_norm=0.5, policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]),
                                                      activation_fn=torch.nn.Tanh), device="cpu", seed=0, verbose=0)

    return _sb3_timed_learn(model, total_steps, venv)


def _sb3_timed_learn(model, total_steps: int, venv) -> dict:
    """SB3's ``learn`` with the rollouts timed; rates from the second rollout on (the first is warm-up, as for
    rlkit2)."""
    from stable_baselines3.common.callbacks import BaseCallback

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
            "share_collect": timer.collect / seconds, "steps": steps}


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
                "rlkit2 envpool t1 pipelined": lambda: rlkit2_ppo_rate(args.steps, "envpool", 1, pipeline=True),
                "rlkit2 sync t1 compiled": lambda: rlkit2_ppo_rate(args.steps, "sync", 1, compile_loss=True),
                "rlkit2 envpool t1 compiled": lambda: rlkit2_ppo_rate(args.steps, "envpool", 1, compile_loss=True),
                "rlkit2 envpool t1 compiled pipelined": lambda: rlkit2_ppo_rate(args.steps, "envpool", 1,
                                                                                compile_loss=True, pipeline=True),
                "sb3 t1": lambda: sb3_ppo_rate(args.steps, 1),
                "sb3 t2": lambda: sb3_ppo_rate(args.steps, 2)}
    if tianshou_peer.available():
        for threads in (1, 2):
            variants[f"tianshou t{threads}"] = (
                lambda threads=threads: tianshou_peer.ppo_rate(args.steps, threads, N_ENVS, COMMON))
    else:
        print("tianshou is not installed: its PPO is left out (pip install -e '.[bench]' installs it)", flush=True)
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
            print(f"ppo  {name:18s} repeat {repeat}: " + ", ".join(f"{k} {v:.3g}" for k, v in out.items()
                                                            if isinstance(v, float)), flush=True)

    if args.atari_steps:
        for threads in (1, 2):
            out = rlkit2_atari_rate(args.atari_steps, threads)
            results.setdefault("atari_ppo", {})[f"threads_update={threads}"] = out
            print(f"atari PPO Pong threads_update={threads}: " + ", ".join(f"{k} {v:.3g}" for k, v in out.items()),
                  flush=True)

    print("\nsummary (median over repeats)")
    median = {name: float(np.median([r["steps_per_sec"] for r in runs])) for name, runs in results["ppo"].items()}
    best_sb3 = max((v for k, v in median.items() if k.startswith("sb3")), default=float("nan"))
    best_tianshou = max((v for k, v in median.items() if k.startswith("tianshou")), default=None)
    for name, value in median.items():
        collect = float(np.median([r["collect_steps_per_sec"] for r in results["ppo"][name]]))
        wall = float(np.median([r.get("collect_wall_steps_per_sec", np.nan) for r in results["ppo"][name]]))
        raw_key = "HalfCheetah-v5 envpool" if "envpool" in name else "HalfCheetah-v5 sync"
        raw = results["raw"].get(raw_key)
        raw_txt = (f", collection {collect:.0f} steps/s = {collect / raw:.0%} of raw {raw_key} (whole loop "
                   f"{wall / raw:.0%})") if raw else ""
        tianshou_txt = f", {value / best_tianshou:.2f}x best Tianshou" if best_tianshou else ""
        print(f"{name:18s} {value:7.0f} steps/s = {value / best_sb3:.2f}x best SB3{tianshou_txt}{raw_txt}")
    results["median_steps_per_sec"] = median
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
