#!/usr/bin/env python
"""GPU readiness in one run (< 8 minutes on a GPU machine): what the first GPU lent to the project should record.

    python scripts/bench/gpu.py [--out docs/bench/gpu.jsonl]           # on a machine with CUDA
    python scripts/bench/gpu.py --device cpu --smoke --out /tmp/g.jsonl  # the CPU-safe parts, tiny (tests)

Appends one JSON record (benchlib.append_record: the commit is stamped) with:
1. ``cuda_tests``: the device-parametrised tests' result on CUDA (tests/rlkit2/test_devices.py, the replay buffer's
   CUDA tests in tests/rlkit2/test_replay.py): passed / failed / skipped counts, exit code, the last output lines.
2. ``ppo_mujoco``: PPO steps/s on HalfCheetah-v5 x 8 (the MuJoCo preset, envpool if installed) on the device and on
   the CPU, with each phase's share (env / inference / update).
3. ``ppo_atari``: PPO agent steps/s on ALE/Pong-v5 x 8 (the Atari preset, Nature-CNN) on the device and the CPU.
4. ``inference``: one batched policy forward (+ sample + copy of the actions to the host) for N envs, N = 1 ... 512,
   MLP (HalfCheetah sizes) and Nature-CNN: the design's claim is one forward for all envs per step, so the time per
   call should grow far slower than N.
5. ``dsac``: DSAC-T updates/s on HalfCheetah-v5 (3x256, batch 256, one update per env step) on the device and CPU.
6. ``graphs``: the MLP acting forward at N = 8 eager, under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs
   on CUDA), and replayed from a manually captured CUDA graph: whether launch overhead is worth removing.

Without CUDA it refuses in one line (exit 2); ``--device cpu`` runs every part on the CPU only (no CUDA tests,
no compile unless --compile), which is what the tests exercise.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from benchlib import append_record, dsac_rate, ppo_rate  # noqa: E402

CUDA_TESTS = ["tests/rlkit2/test_devices.py", "tests/rlkit2/test_replay.py"]
# sizes: (PPO MuJoCo steps, PPO Atari steps, DSAC steps, inference Ns, timing calls)
FULL = {"mujoco_steps": 3 * 2048, "atari_steps": 3 * 1024, "dsac_steps": 500, "ns": (1, 8, 32, 128, 512),
        "calls": 200}
SMOKE = {"mujoco_steps": 3 * 64, "atari_steps": 0, "dsac_steps": 40, "ns": (1, 8), "calls": 5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the device to measure against the CPU (default: cuda)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "gpu.jsonl")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every part runs, in seconds")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile(mode='reduce-overhead') when --device is cpu (always on CUDA)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the CUDA tests")
    return parser.parse_args(argv)


def refuse_without_device(device: str) -> str | None:
    """One line saying why the run cannot go on, or None."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        return (f"gpu.py: no CUDA device here (torch {torch.__version__}, cuda available: False); run it on a GPU "
                "machine, or --device cpu --smoke for the CPU-safe parts")
    if not device.startswith(("cuda", "cpu")):
        return f"gpu.py: --device must be cuda, cuda:N or cpu, got '{device}'"
    return None


def cuda_tests(timeout: float = 240.0) -> dict:
    """Run the device-parametrised tests' CUDA cases; the summary line's counts."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", *CUDA_TESTS]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
        out, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        out, code = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", out)}
    return {"command": " ".join(cmd[1:]), "exit_code": code, **counts,
            "seconds": round(time.perf_counter() - start, 1), "tail": out.strip().splitlines()[-15:]}


def ppo_on(env_id: str, device: str, total_steps: int, smoke: bool) -> dict:
    """PPO with the env's preset on ``device`` (compile_loss off: the same code on both devices)."""
    overrides = {"device": device, "compile_loss": False}
    if smoke:
        overrides.update({"num_steps": 32, "num_envs": 2, "minibatch_size": 32, "epochs": 1})
    return ppo_rate(env_id, total_steps, overrides)


def inference_latency(device: str, ns: tuple[int, ...], calls: int) -> dict:
    """Microseconds per batched acting call (forward, sample, actions to the host) for N envs at once."""
    import torch

    import gymnasium as gym
    import numpy as np

    from agents.ppo import ActorCritic, OnPolicyConfig

    dev = torch.device(device)
    nets = {
        "mlp": (ActorCritic(OnPolicyConfig(), gym.spaces.Box(-np.inf, np.inf, (17,)), gym.spaces.Box(-1, 1, (6,))),
                lambda n: torch.randn(n, 17, device=dev)),
        "nature_cnn": (ActorCritic(OnPolicyConfig(), gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),
                                   gym.spaces.Discrete(6)),
                       lambda n: torch.randint(0, 255, (n, 4, 84, 84), dtype=torch.uint8, device=dev)),
    }
    out: dict[str, dict] = {}
    for name, (model, make_obs) in nets.items():
        model = model.to(dev).eval()
        rows = {}
        for n in ns:
            obs = make_obs(n)
            with torch.inference_mode():
                for _ in range(3):  # warm-up (cuDNN algorithm choice, allocator)
                    model.distribution(obs).sample().cpu()
                start = time.perf_counter()
                for _ in range(calls):
                    model.distribution(obs).sample().cpu()  # .cpu(): the sync the env needs every step
                us = (time.perf_counter() - start) / calls * 1e6
            rows[str(n)] = {"us_per_call": us, "us_per_env": us / n}
        out[name] = rows
    return out


def dsac_on(device: str, steps: int, smoke: bool) -> dict:
    """DSAC-T on HalfCheetah-v5 at dsac_speed.py's sizes (3x256, batch 256) on ``device`` (compile_update off, as
    PPO's compile_loss: the same code on both devices)."""
    sizes = {"hidden": "32,32", "batch_size": 16} if smoke else {"hidden": "256,256,256", "batch_size": 256}
    return dsac_rate("HalfCheetah-v5", steps, 64 if smoke else 1000,
                     {"device": device, "compile_update": False, **sizes})


def graphs(device: str, calls: int, compile_too: bool) -> dict:
    """The MLP acting forward at N = 8: eager vs torch.compile(mode='reduce-overhead') vs a captured CUDA graph."""
    import gymnasium as gym
    import numpy as np
    import torch

    from agents.ppo import ActorCritic, OnPolicyConfig

    dev = torch.device(device)
    model = ActorCritic(OnPolicyConfig(), gym.spaces.Box(-np.inf, np.inf, (17,)), gym.spaces.Box(-1, 1, (6,)))
    model = model.to(dev).eval()
    obs = torch.randn(8, 17, device=dev)

    def forward(x):
        return model.distribution(x).mean

    def timed(fn) -> float:
        with torch.inference_mode():
            for _ in range(5):
                fn().cpu()
            start = time.perf_counter()
            for _ in range(calls):
                fn().cpu()
        return (time.perf_counter() - start) / calls * 1e6

    out: dict[str, float | str] = {"eager_us": timed(lambda: forward(obs))}
    if compile_too:
        try:
            compiled = torch.compile(forward, mode="reduce-overhead")
            out["compile_reduce_overhead_us"] = timed(lambda: compiled(obs))
        except Exception as e:  # noqa: BLE001 -- recorded: a compile failure is a finding here
            out["compile_reduce_overhead_error"] = f"{type(e).__name__}: {e}"[:300]
    if dev.type == "cuda":
        static_in = obs.clone()
        stream = torch.cuda.Stream()
        with torch.inference_mode():
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = forward(static_in)

        def replay():
            static_in.copy_(obs)
            graph.replay()
            return static_out

        out["cuda_graph_us"] = timed(replay)
    return out


def machine(device: str) -> dict:
    import torch

    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                     "cuda": torch.version.cuda, "bf16_supported": torch.cuda.is_bf16_supported()})
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    why = refuse_without_device(args.device)
    if why:
        print(why, file=sys.stderr)
        return 2
    import importlib.util

    import torch

    sizes = SMOKE if args.smoke else FULL
    torch.set_num_threads(1)
    started = time.perf_counter()
    devices = [args.device] if args.device == "cpu" else [args.device, "cpu"]
    record: dict = {"device": args.device, "smoke": args.smoke, "machine": machine(args.device),
                    "command": " ".join([Path(__file__).name, *(argv if argv is not None else sys.argv[1:])])}
    parts = {}

    def part(name, fn):
        start = time.perf_counter()
        try:
            parts[name] = fn()
        except Exception as e:  # noqa: BLE001 -- one part failing must not cost the others' numbers
            parts[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
        parts[name + "_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {parts[name]}", flush=True)

    if args.device.startswith("cuda") and not args.skip_tests:
        part("cuda_tests", cuda_tests)
    mujoco = "HalfCheetah-v5"
    part("ppo_mujoco", lambda: {d: ppo_on(mujoco, d, sizes["mujoco_steps"], args.smoke) for d in devices})
    if sizes["atari_steps"] and importlib.util.find_spec("ale_py") is not None:
        part("ppo_atari", lambda: {d: ppo_on("ALE/Pong-v5", d, sizes["atari_steps"], args.smoke) for d in devices})
    part("inference", lambda: {d: inference_latency(d, sizes["ns"], sizes["calls"]) for d in devices})
    part("dsac", lambda: {d: dsac_on(d, sizes["dsac_steps"], args.smoke) for d in devices})
    part("graphs", lambda: graphs(args.device, sizes["calls"], args.compile or args.device != "cpu"))
    record.update(parts)
    record["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    append_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
