#!/usr/bin/env python
"""Learning from synthetic preferences on MuJoCo: PPO on a reward model fitted to 700 and 1400 synthetic labels
vs PPO on the true reward, same PPO settings, budget and seeds; true-return curves.

    python scripts/bench/pref_mujoco.py --envs HalfCheetah-v5 Hopper-v5 --seeds 0 1 2 --steps 500000 --jobs 2 \
        --out docs/bench/pref_mujoco_entropy_batch.jsonl
    python scripts/bench/pref_mujoco.py ... --rl-set entropy_coef=0 --out docs/bench/pref_mujoco.jsonl  # no bonus
    python scripts/bench/plot_learning.py docs/bench/pref_mujoco.jsonl docs/pref_mujoco_curves.png --key variant

Variants: "true reward" is ``--agent ppo`` (its MuJoCo preset); "N labels" is ``--agent pref --labels N`` whose
RL agent is the same PPO preset (agents/presets/pref.toml: 3 members, 30-step segments, absorbing states on envs
that terminate (Hopper: "N labels, absorbing"), 25% of the labels from
the initial policy, then a rate ~ 2e6 / (t + 2e6), 10 candidates per query chosen by ensemble disagreement,
10% random-answer term; the synthetic oracle prefers the higher true return). Evaluation every --eval-every
steps: 10 deterministic episodes on the true reward, separate envs. Each run appends one JSON line.
Every variant trains PPO with the same settings: PPO's preset, plus what the pref preset gives its RL agent on the
env (on MuJoCo the paper's entropy bonus for the non-stationary learned reward, rl.entropy_coef = 0.01), plus each
``--rl-set NAME=VALUE`` (``--rl-set entropy_coef=0`` for the runs without the bonus); the variant's name lists them.
``--set NAME=VALUE`` is a run option for every variant, ``--pref-set NAME=VALUE`` an option of the pref agent.

Atari Pong at a reduced budget on a CPU (docs/benchmarks.md, "Atari Pong with synthetic labels"):

    python scripts/bench/pref_mujoco.py --envs ALE/Pong-v5 --seeds 0 --variants true 1400 --steps 750000 \
        --eval-every 250000 --rl-set cnn_precision=bf16 --set atari.repeat_action_probability=0 \
        --pref-set reward_precision=bf16 --pref-set reward_batches=1 --pref-set reward_batch=16 \
        --pref-set fit_eval_pairs=32 --pref-set normalization_steps=1024 --pref-set pretrain_epochs=10 \
        --out docs/bench/pref_atari.jsonl

The pref preset's Atari section applies to the label variants (the paper's Atari reward model with batch norm and
dropout, 500 labels before RL, a rate ~ 5e6 / (T + 5e6) in frames lowered every 5e6 frames), except for what a
``--pref-set`` replaces: here 10 pretraining epochs instead of its 200.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from benchlib import append_record, column, run_jobs, train_to_completion  # noqa: E402


def name_value(text: str) -> str:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. entropy_coef=0.01), got {text!r}")
    return text


def as_options(items: list[str]) -> dict[str, str]:
    """["NAME=VALUE", ...] (validated by name_value) -> {NAME: VALUE}."""
    return dict(item.split("=", 1) for item in items)


def listed(options: dict[str, str]) -> list[str]:
    """{NAME: VALUE} -> ["NAME=VALUE", ...], as records and variant names show them."""
    return [f"{k}={v}" for k, v in options.items()]


def shared_rl_options(env_id: str, rl_options: list[str]) -> dict[str, str]:
    """The PPO options every variant runs with beyond PPO's own preset: what the pref preset gives its RL agent on
    this env (e.g. the MuJoCo entropy bonus, rl.entropy_coef = 0.01), then each --rl-set NAME=VALUE. The true-reward
    variant gets them too, so that both train PPO with the same settings."""
    from rlkit2.run import resolve_config

    shared = {name: str(value) for name, value in resolve_config("pref", env_id)[1].rl.items()}
    shared.update(as_options(rl_options))
    return shared


def variant_options(variant: str, rl_options: dict[str, str], run_options: dict[str, str] | None = None,
                    pref_options: dict[str, str] | None = None) -> tuple[str, dict]:
    """The agent and the options a variant runs with: "true" is PPO; "N" or "N-OPTION" the pref agent with N
    labels (and a pref option set); each of rl_options goes to PPO and each of run_options to the run in either
    case; pref_options go to the pref agent only."""
    agent = "ppo" if variant == "true" else "pref"
    options: dict = dict(run_options or {})
    labels, _, option = variant.partition("-")  # "1400-absorbing": 1400 labels with --absorbing true
    if agent == "pref":
        options["labels"] = int(labels)
        if option:
            options[option] = True
        options.update(pref_options or {})
    for name, value in rl_options.items():
        options[name if agent == "ppo" else f"rl.{name}"] = value
    return agent, options


def run_one(variant: str, env_id: str, seed: int, steps: int, eval_every: int,
            rl_options: list[str] | None = None, run_options: list[str] | None = None,
            pref_options: list[str] | None = None) -> dict:
    shared = shared_rl_options(env_id, rl_options or [])
    run_set, pref_set = as_options(run_options or []), as_options(pref_options or [])
    agent, options = variant_options(variant, shared, run_set, pref_set)
    run, cfg, rows, seconds = train_to_completion(agent, env_id, {
        "seed": seed, "total_steps": steps, "eval_every": eval_every, "threads_update": 1, **options})
    curve = column(rows, "eval/return_mean")
    corr = [v for _, v in column(rows, "pref/reward_correlation")]
    # the name says which options the run had (the pref preset turns --absorbing on for Hopper-like envs)
    name = "true reward" if agent == "ppo" else f"{options['labels']} labels" + (", absorbing" if cfg.absorbing else "")
    pref_listed = listed(pref_set) if agent == "pref" else []
    name += "".join(f", {item}" for item in listed(shared) + listed(run_set) + pref_listed)
    return {"variant": name, "env": env_id, "seed": seed, "steps": steps, "train_env_kwargs": run.train_env_kwargs,
            "rl_overrides": listed(shared), "run_overrides": listed(run_set), "pref_overrides": pref_listed,
            "curve": curve, "final": curve[-1][1],
            "reward_correlation": float(np.mean(corr[-5:])) if corr else None,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["true", "1400", "700"],
                        help="'true' (PPO on the env reward), a number of synthetic labels, or N-OPTION for N labels "
                             "with a pref option set, e.g. 1400-absorbing")
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--eval-every", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one core each)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "pref_mujoco.jsonl")
    parser.add_argument("--rl-set", action="append", default=[], type=name_value, metavar="NAME=VALUE",
                        help="a PPO option for every variant (PPO's own on the true reward, the RL agent's under the "
                             "learned one), e.g. entropy_coef=0; it is appended to the variant's name")
    parser.add_argument("--set", dest="run_set", action="append", default=[], type=name_value, metavar="NAME=VALUE",
                        help="a run option for every variant, e.g. atari.repeat_action_probability=0")
    parser.add_argument("--pref-set", action="append", default=[], type=name_value, metavar="NAME=VALUE",
                        help="a pref-agent option for the label variants, e.g. reward_batches=1")
    parser.add_argument("--single", nargs=3, metavar=("VARIANT", "ENV", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.single:
        record = run_one(args.single[0], args.single[1], int(args.single[2]), args.steps, args.eval_every, args.rl_set,
                         args.run_set, args.pref_set)
        append_record(args.out, record)
        return
    jobs = [(v, e, s) for s, e, v in itertools.product(args.seeds, args.envs, args.variants)]
    extra = [x for flag, items in (("--rl-set", args.rl_set), ("--set", args.run_set), ("--pref-set", args.pref_set))
             for item in items for x in (flag, item)]
    run_jobs([[sys.executable, __file__, "--single", v, e, str(s), "--steps", str(args.steps), "--eval-every",
               str(args.eval_every), "--out", str(args.out)] + extra for v, e, s in jobs], args.jobs)


if __name__ == "__main__":
    main()
