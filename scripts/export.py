#!/usr/bin/env python
"""Export a run's policy as one file that loads with torch alone (TorchScript) or onnxruntime (ONNX), with its
spaces in a JSON file beside it (docs/export.md).

    python scripts/export.py runs/ppo-Hopper-v5-s0-... [--checkpoint best] --format torchscript --out policy.pt
    python scripts/export.py RUN_DIR --format onnx --out policy.onnx   # needs: pip install 'rlkit2[onnx]'
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlkit2.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
