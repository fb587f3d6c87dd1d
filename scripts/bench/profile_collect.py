#!/usr/bin/env python
"""Where one collection step's time goes (PPO, HalfCheetah-v5 x 8, sync backend, 1 thread).

    python scripts/bench/profile_collect.py | tee docs/bench/profile_collect.txt

Best of 5 repeats of each piece, in microseconds per vectorized step (8 envs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

import envs  # noqa: E402
from agents.ppo import OnPolicyAgent, OnPolicyConfig  # noqa: E402
from rlkit2.agent import BuildContext  # noqa: E402


def best_us(fn, n: int = 300, reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n * 1e6)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    env = envs.make("HalfCheetah-v5", 8, seed=0, backend="sync")
    agent = OnPolicyAgent(OnPolicyConfig(normalize_obs=False, num_steps=256),
                          BuildContext(env, torch.device("cpu"), 10**6, 0, 1, 1))
    agent.collector.collect(agent)  # warm-up
    raw_obs = env.reset(seed=0)[0]
    obs = agent.preprocess(torch.as_tensor(raw_obs), update_stats=False)
    action = env.action_space.sample()
    with torch.inference_mode():
        policy_us = best_us(lambda: agent.step(obs))
        forward_us = best_us(lambda: agent.model(obs))
    env_us = best_us(lambda: env.step(action), n=100)
    collect_us = min(_timed_collect(agent) for _ in range(3))
    print(f"policy networks (64x64 policy, 64x64 value) forward : {forward_us:7.0f} us")
    print(f"policy.step (policy forward + sample + rescale)    : {policy_us:7.0f} us")
    print(f"VecEnv.step (8 envs)                               : {env_us:7.0f} us")
    print(f"collector, per step (everything)                   : {collect_us:7.0f} us")
    print(f"  the rest (storage, batched log-probs and values) : {collect_us - policy_us - env_us:7.0f} us")
    print(f"collection rate / env-only rate                    : {env_us / collect_us:7.0%}")


def _timed_collect(agent: OnPolicyAgent) -> float:
    start = time.perf_counter()
    agent.collector.collect(agent)
    return (time.perf_counter() - start) / agent.cfg.num_steps * 1e6


if __name__ == "__main__":
    main()
