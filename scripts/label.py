#!/usr/bin/env python
"""Serve the labeling page for a run: ``rlkit2 label`` from a checkout without installing (rlkit2/label_cli.py).

    python scripts/label.py RUN_DIR [--host 127.0.0.1] [--port 8765] [--read_timeout 5] [--max_leases 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from rlkit2.commands import run_script  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return run_script("label", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
