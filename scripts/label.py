#!/usr/bin/env python
"""Serve the labeling page for a run: two clips side by side, answered with the arrow keys or buttons.

    python scripts/label.py RUN_DIR [--host 127.0.0.1] [--port 8765]

Answers go to RUN_DIR/labels.sqlite (rlkit2/labels.py), which training reads as they arrive; clips are served
from RUN_DIR/clips only. Per-task instructions: RUN_DIR/instructions.txt. See rlkit2/label_server.py.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlkit2.label_server import LabelServer, segment_renderer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default) serves this machine only")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        print(f"error: '{args.run_dir}' is not a run directory", file=sys.stderr)
        return 2
    server = LabelServer(args.run_dir, args.host, args.port, renderer=segment_renderer(args.run_dir))
    print(f"labeling {args.run_dir} at {server.url}  (Ctrl-C to stop)", flush=True)

    def stop(signum, frame):  # also when started with SIGINT ignored (e.g. from a background job)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
