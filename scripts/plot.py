#!/usr/bin/env python
"""Learning curves of your runs (the same as `rlkit2 plot`).

    python scripts/plot.py runs/ --out curves.png
    python scripts/plot.py runs/ppo-Hopper-* --metric charts/episode_return --band se --out hopper.pdf
    python scripts/plot.py runs/ --group "lr 3e-4=*lr3e-4*" --group "lr 1e-3=*lr1e-3*" --out lr.png
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from rlkit2.commands import run_script  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_script("plot", sys.argv[1:]))
