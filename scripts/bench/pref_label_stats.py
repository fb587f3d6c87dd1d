#!/usr/bin/env python
"""What a finished preference run's reward model makes of its own labels: the share of ties (segments with equal
true returns, e.g. two Pong segments without a point), and how often the final ensemble orders the decisive
(non-tie) pairs as the oracle did, on each member's held-out pairs (those its bootstrap left out) and over all.

Held-out accuracy in the training logs counts a tie as half right whatever the model says, so with many ties it
cannot reach 1 (with 60% ties its ceiling is 0.7); this separates the two.

    python scripts/bench/pref_label_stats.py RUN_DIR [RUN_DIR ...] --out docs/bench/pref_label_stats.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rlkit2 import checkpoint as ckpt  # noqa: E402
from rlkit2.preference import EnsembleTrainer, RewardEnsemble, StackedSegments, has_batch_norm  # noqa: E402
from rlkit2.run import load_run_config  # noqa: E402


def finished_pref_run(run_dir: Path, overrides: dict | None = None):
    """(run config, pref config, path of final.pt) of a finished preference run; a clear exit otherwise."""
    try:
        run, cfg = load_run_config(run_dir, overrides)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    if run.agent != "pref":
        raise SystemExit(f"{run_dir} is a run of agent '{run.agent}', not of --agent pref")
    final = Path(run_dir) / "checkpoints" / "final.pt"
    if not final.is_file():
        raise SystemExit(f"{run_dir} has no checkpoints/final.pt: the run has not finished (resume it with "
                         f"python scripts/train.py --resume {run_dir})")
    return run, cfg, final


def label_stats(run_dir: Path) -> dict:
    run, cfg, final = finished_pref_run(run_dir)
    state = ckpt.load(final, map_location="cpu")["agent_state"]
    c, trainer_state = state["comparisons"], state["trainer"]
    actions = c["act_1"]
    stack = run.atari.frame_stack if c["obs_1"].dim() == 4 and c["obs_1"].dtype == torch.uint8 else 0
    obs_shape = (stack, *c["obs_1"].shape[2:]) if stack else tuple(c["obs_1"].shape[2:])
    model = RewardEnsemble(obs_shape, actions.shape[-1], cfg.members, tuple(cfg.reward_hidden), scale=cfg.reward_scale,
                           precision=cfg.reward_precision, frame_stack=stack > 0,
                           use_actions=cfg.reward_actions,
                           batch_norm=has_batch_norm(state["reward_model"]))  # as saved: older runs have none
    model.load_state_dict(state["reward_model"])
    model.eval()
    trainer = EnsembleTrainer(model)
    obs_1, obs_2 = ((StackedSegments(c[k], stack) if stack else c[k]) for k in ("obs_1", "obs_2"))
    every = np.arange(len(actions))
    r1, r2 = trainer._all_returns(obs_1, c["act_1"], every), trainer._all_returns(obs_2, c["act_2"], every)  # [E, P]
    mu = c["mu"].numpy()
    decisive = mu != 0.5
    right = ((r1 > r2).numpy() == (mu == 1.0)[None])  # [E, P]: member e orders pair p as the oracle did
    ids = c["ids"].numpy()
    counts = dict(zip(trainer_state["ids"].numpy().tolist(), trainer_state["counts"].numpy().T.tolist()))
    held_out = np.array([[counts.get(i, [1] * cfg.members)[e] == 0 for i in ids] for e in range(cfg.members)])
    per_member = [float(right[e, held_out[e] & decisive].mean()) if (held_out[e] & decisive).any() else None
                  for e in range(cfg.members)]
    pooled = right[held_out & decisive[None]]
    ensemble = ((r1.mean(0) > r2.mean(0)).numpy() == (mu == 1.0))[decisive]
    return {"run": Path(run_dir).name, "env": run.env, "labels": int(len(mu)), "tie_share": float(1 - decisive.mean()),
            "heldout_decisive_accuracy": float(pooled.mean()) if len(pooled) else None,
            "heldout_decisive_pairs": int(len(pooled)), "member_heldout_decisive_accuracy": per_member,
            "ensemble_decisive_accuracy_all": float(ensemble.mean()) if len(ensemble) else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    for run_dir in args.run_dirs:
        record = label_stats(run_dir)
        print(json.dumps(record))
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
