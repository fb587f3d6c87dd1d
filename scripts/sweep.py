#!/usr/bin/env python
"""Run many trainings (agents x envs x grid values x seeds) on Ray Tune, resumable: ``rlkit2 sweep`` from a
checkout without installing (rlkit2/sweep_cli.py).

    python scripts/sweep.py --name lam --agent ppo --env Hopper-v5 --seeds 0-4 --grid gae_lambda=0.9,0.95
    python scripts/sweep.py --name lam --table
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from rlkit2.commands import run_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_script("sweep", sys.argv[1:]))
