#!/usr/bin/env python
"""Where one collection step's time goes: PPO with the MuJoCo preset (64x64 policy, 256x256 value, observation
normalization) on HalfCheetah-v5 x 8, ``sync`` backend, 1 thread.

    python scripts/bench/profile_collect.py | tee docs/bench/profile_collect.txt

Microseconds per vectorized step (8 envs), best of 5 repeats of each piece. The env and the acting step are timed
alone (each in a tight loop) and interleaved as the collector runs them (env step, acting step, env step, ...,
each side timed on its own): on one core the two slow each other down (caches and branch predictors shared by two
Python-heavy workloads), which bounds what an in-process (``sync``) collector can reach whatever it does itself.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402
from agents.ppo import OnPolicyAgent  # noqa: E402
from rlkit2.agent import BuildContext  # noqa: E402
from rlkit2.run import resolve_config  # noqa: E402

STEPS = 300


def best_us(fn, n: int = STEPS, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n * 1e6)
    return min(times)


def interleaved_us(env, act, actions: list[np.ndarray], reps: int = 5) -> tuple[float, float]:
    """(env step, acting step) in us, each timed on its own while the two alternate; best of ``reps``."""
    env_times, act_times = [], []
    for _ in range(reps):
        env_s = act_s = 0.0
        obs = env.reset(seed=0)[0]
        for t in range(STEPS):
            start = time.perf_counter()
            act(obs)
            mid = time.perf_counter()
            obs = env.step(actions[t % len(actions)])[0]
            env_s += time.perf_counter() - mid
            act_s += mid - start
        env_times.append(env_s / STEPS * 1e6)
        act_times.append(act_s / STEPS * 1e6)
    return min(env_times), min(act_times)


def main() -> None:
    torch.set_num_threads(1)
    _, cfg = resolve_config("ppo", "HalfCheetah-v5", {"num_steps": "256"})
    env = envs.make("HalfCheetah-v5", 8, seed=0, backend="sync")
    agent = OnPolicyAgent(cfg, BuildContext(env, torch.device("cpu"), 10**6, 0, 1, 1))
    agent.model.eval()
    agent.collector.collect(agent)  # warm-up
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(256)]
    raw_obs = env.reset(seed=0)[0]

    def act(obs: np.ndarray) -> np.ndarray:  # what the collector does to act: normalize (+ stats), policy step
        return agent.step(agent.preprocess(torch.from_numpy(obs), update_stats=True)).env_action.numpy()

    with torch.inference_mode():
        act_us = best_us(lambda: act(raw_obs))
        step_us = best_us(lambda: agent.step(agent.preprocess(torch.from_numpy(raw_obs), update_stats=False)))
        env_us = best_us(lambda: env.step(actions[0]), n=100)
        env_mixed_us, act_mixed_us = interleaved_us(env, act, actions)
    collect_us = min(_timed_collect(agent) for _ in range(3))
    rows = [
        ("VecEnv.step (8 envs), alone", env_us),
        ("acting step (normalize + stats, policy.step), alone", act_us),
        ("  without the statistics update (normalize, policy.step)", step_us),
        ("VecEnv.step, interleaved with the acting step", env_mixed_us),
        ("acting step, interleaved with VecEnv.step", act_mixed_us),
        ("collector, per step (everything)", collect_us),
        ("  the rest (storage, bookkeeping, batched log-probs/values)", collect_us - env_mixed_us - act_mixed_us),
    ]
    for name, us in rows:
        print(f"{name:62s}: {us:7.0f} us")
    print(f"{'collection rate / env-only rate':62s}: {env_us / collect_us:7.0%}")
    print(f"{'bound with a free acting step: env alone / env interleaved':62s}: {env_us / env_mixed_us:7.0%}")


def _timed_collect(agent: OnPolicyAgent) -> float:
    start = time.perf_counter()
    agent.collector.collect(agent)
    return (time.perf_counter() - start) / agent.cfg.num_steps * 1e6


if __name__ == "__main__":
    main()
