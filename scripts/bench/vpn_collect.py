#!/usr/bin/env python
"""VPN diagnostics on the Collect domain (envs/collect.py). The learning benchmark (VPN vs the model-free n-step Q
baseline) is the sweep spec benchmarks/vpn_collect.toml:

    python scripts/sweep.py --spec benchmarks/vpn_collect.toml --root ~/rlkit2-sweeps --max-concurrent 2

The floor, the average reward of uniformly random options: ``python scripts/bench/vpn_collect.py random``.
Adam steps per 1,000 options, ours against the official workers': ``python scripts/bench/vpn_collect.py adam-steps``.

Planning cost: decisions/s of greedy planning (encoder + d-step plan + argmax) for d = 1, 3, 5, batched over N
envs, against the model-free forward:

    python scripts/bench/vpn_collect.py planning --envs-per-batch 1 16 64 --out docs/bench/vpn_planning.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


ENVS = {"deterministic": "rlkit2/Collect-v0", "stochastic": "rlkit2/CollectStochastic-v0"}
BRANCHES = {1: (4,), 3: (4, 4, 4), 5: (4, 4, 4, 1, 1)}  # the official VPN(1), VPN(3), VPN(5)


def planning(args: argparse.Namespace) -> None:
    import torch

    import envs
    from agents.vpn import VPNConfig, VPNNet, plan
    from rlkit2.config import override

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = override(VPNConfig(), dict(item.split("=", 1) for item in args.set))
    rows = []
    for n in args.envs_per_batch:
        env = envs.make("rlkit2/Collect-v0", n, seed=0)
        obs, _ = env.reset(seed=0)
        x = torch.as_tensor(obs, device=device)
        net = VPNNet(env.single_observation_space, 4, cfg).to(device)
        for name, fn in [("model-free Q", lambda: net.q_model_free(net.encode(x)))] + [
                (f"VPN d={d} {BRANCHES[d]}", lambda d=d: plan(net.core_all, net.encode(x), BRANCHES[d], cfg.gamma))
                for d in (1, 3, 5)]:
            with torch.inference_mode():
                fn()  # warm-up
                calls, start = 0, time.perf_counter()
                while calls < 3 or time.perf_counter() - start < args.seconds:
                    fn().argmax(1).cpu()
                    calls += 1
                seconds = (time.perf_counter() - start) / calls
            rows.append({"planner": name, "envs": n, "ms_per_call": 1000 * seconds, "decisions_per_sec": n / seconds})
            print(json.dumps(rows[-1]), flush=True)
    out = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} torch thread(s), {device}",
           "torch": torch.__version__, "network": {k: getattr(cfg, k) for k in ("filters", "kernels", "strides", "hidden")},
           "command": "python " + " ".join(sys.argv), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


def random_options(args: argparse.Namespace) -> None:
    """The average reward of uniformly random options on both variants: the floor a learned policy must beat."""
    import envs

    for variant, env_id in ENVS.items():
        env, rng = envs.make(env_id, 64, seed=0), np.random.default_rng(0)
        env.reset(seed=0)
        returns, running = [], np.zeros(64)
        while len(returns) < args.episodes:
            _, reward, terminated, truncated, _ = env.step(rng.integers(0, 4, 64))
            running += reward
            for i in np.flatnonzero(terminated | truncated):
                returns.append(running[i])
                running[i] = 0.0
        print(f"{variant} ({env_id}): random options {np.mean(returns):.2f} +- {np.std(returns) / np.sqrt(len(returns)):.2f} "
              f"(standard error, {len(returns)} episodes)")


def adam_steps(args: argparse.Namespace) -> None:
    """Adam steps per 1,000 options under random options: ours (one step per piece of an env's fixed T-option
    rollout, cut at episode ends) against an official worker's (one step per rollout, which stops at a terminal
    and starts the next episode afresh: ceil(L / T) rollouts for an episode of L options)."""
    import math

    import envs

    T, N = args.num_steps, args.envs
    for variant, env_id in ENVS.items():
        env, rng = envs.make(env_id, N, seed=0), np.random.default_rng(0)
        env.reset(seed=0)
        ends = []
        for _ in range(args.rollouts * T):
            _, _, terminated, truncated, _ = env.step(rng.integers(0, 4, N))
            ends.append(terminated | truncated)
        ends = np.array(ends)  # [rollouts * T, N]
        ours = sum(int((1 + ends[r * T:(r + 1) * T - 1].sum(0)).sum()) for r in range(args.rollouts))
        official = 0
        for n in range(N):  # complete episodes only
            lengths = np.diff(np.concatenate([[-1], np.flatnonzero(ends[:, n])]))
            official += sum(math.ceil(length / T) for length in lengths)
        options_official = sum(int(np.flatnonzero(ends[:, n])[-1]) + 1 for n in range(N) if ends[:, n].any())
        print(f"{variant}: {1000 * ours / ends.size:.1f} Adam steps per 1000 options here, "
              f"{1000 * official / options_official:.1f} for the official workers "
              f"(T = {T}, mean episode {ends.size / ends.sum():.2f} options)")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("planning")
    p.add_argument("--envs-per-batch", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "vpn_planning.json")
    p = sub.add_parser("random")
    p.add_argument("--episodes", type=int, default=10_000)
    p = sub.add_parser("adam-steps")
    p.add_argument("--num-steps", type=int, default=10)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--rollouts", type=int, default=300)
    args = parser.parse_args()
    {"planning": planning, "random": random_options, "adam-steps": adam_steps}[
        args.command](args)


if __name__ == "__main__":
    main()
