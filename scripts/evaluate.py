#!/usr/bin/env python
"""Evaluate a saved policy: ``rlkit2 evaluate`` from a checkout without installing. Mean +- std return over N
deterministic episodes, optionally an mp4.

    python scripts/evaluate.py runs/ppo-Hopper-v5-s0-... [--episodes 10] [--video] [--checkpoint final]
    python scripts/evaluate.py RUN_DIR --env my_envs:make_env   # a run trained with train(..., env_fn=...)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from rlkit2.commands import run_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_script("evaluate", sys.argv[1:]))
