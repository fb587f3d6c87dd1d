#!/usr/bin/env python
"""What the Atari reward model costs on this machine (one thread): one fit epoch of the paper's ensemble (3 members,
16-filter convs, 25-step segments of 84x84x4 frames, train/validation losses included), per comparison, and scoring
one segment with all members (query selection). Random frames: the cost does not depend on the pixels.

    python scripts/bench/pref_reward_cost.py --out docs/bench/pref_reward_cost.json
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


def measure(pairs: int = 256, segment: int = 25, actions: int = 6, seed: int = 0) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = RewardEnsemble((4, 84, 84), actions, members=3, dropout=0.5)
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
    return {"fit_ms_per_comparison": 1e3 * fit / pairs, "score_ms_per_segment": 1e3 * score / pairs,
            "pairs": pairs, "segment": segment, "members": 3, "threads": 1, "seed": seed,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = measure()
    result["command"] = "python scripts/bench/pref_reward_cost.py --out " + str(args.out)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
