#!/usr/bin/env python
"""Train an agent: ``rlkit2 train`` from a checkout without installing (the same options).

    python scripts/train.py --agent ppo --env Hopper-v5 [--field value ...]
    python scripts/train.py --agent ppo --env my_pkg.envs:MyEnv --total_steps 200000
    python scripts/train.py --resume runs/ppo-Hopper-v5-s0-... [--total_steps 2000000]
    python scripts/train.py --agent ppo --env Hopper-v5 --help   # every option, its value here, what it does
    python scripts/train.py --list                    # available agents
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from rlkit2.commands import run_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_script("train", sys.argv[1:]))
