#!/usr/bin/env python
"""What the Atari reward model costs on this machine (one thread), for each precision of its convolutions (fp32,
bf16): one fit epoch of the paper's ensemble (3 members, 16-filter convs, 25-step segments of 84x84x4 frames,
train/validation losses included), per comparison; one minibatch of 32 comparisons (the fixed-budget fit,
``--reward_batches``); scoring one segment with all members (query selection, held-out losses); the reward of one
env step (rollouts, the normalisation refit). Random frames: the cost does not depend on the pixels.

    python scripts/bench/pref_reward_cost.py --out docs/bench/pref_reward_cost.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlkit2.preference import EnsembleTrainer, RewardEnsemble  # noqa: E402


def measure(pairs: int = 256, segment: int = 25, actions: int = 6, seed: int = 0, precision: str = "fp32") -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = RewardEnsemble((4, 84, 84), actions, members=3, dropout=0.5, precision=precision,
                           frame_stack=True)
    trainer = EnsembleTrainer(model, seed=seed)
    obs_1 = torch.randint(0, 255, (pairs, segment, 4, 84, 84), dtype=torch.uint8)
    obs_2 = obs_1.flip(0)
    act = torch.nn.functional.one_hot(torch.randint(0, actions, (pairs, segment)), actions)
    mu = torch.rand(pairs).round()
    ids = np.arange(pairs)
    trainer.fit(obs_1[:32], act[:32], obs_2[:32], act[:32], mu[:32], ids[:32], 1)  # warm-up
    start = time.perf_counter()
    trainer.fit(obs_1, act, obs_2, act, mu, ids, 1)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        trainer.segment_returns(obs_1, act)
    score = time.perf_counter() - start
    batch = min(32, pairs)
    trainer.batch_size = batch
    start = time.perf_counter()
    for _ in range(3):  # the minibatch alone: no held-out losses (eval_pairs=1 scores one pair)
        trainer.fit(obs_1, act, obs_2, act, mu, ids, batches=1, eval_pairs=1)
    minibatch = (time.perf_counter() - start) / 3
    rows_obs, rows_act = obs_1.flatten(0, 1), act.flatten(0, 1)
    start = time.perf_counter()
    model.reward(rows_obs, rows_act)
    per_step = (time.perf_counter() - start) / len(rows_obs)
    return {"precision": precision, "fit_ms_per_comparison": 1e3 * fit / pairs,
            "score_ms_per_segment": 1e3 * score / pairs, "minibatch_ms": 1e3 * minibatch, "minibatch": batch,
            "reward_ms_per_step": 1e3 * per_step,
            "pairs": pairs, "segment": segment, "members": 3, "threads": 1, "seed": seed,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = [measure(precision=precision) for precision in ("fp32", "bf16")]
    for result in results:
        result["command"] = "python scripts/bench/pref_reward_cost.py --out " + str(args.out)
        print(json.dumps(result))
    args.out.write_text("".join(json.dumps(r) + "\n" for r in results))  # one JSON line per precision


if __name__ == "__main__":
    main()
