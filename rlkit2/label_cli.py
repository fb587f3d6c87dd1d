"""The label command (``rlkit2 label``; scripts/label.py in a checkout): serve the labeling page for a run, two
clips side by side, answered with the arrow keys or buttons.

    {label} RUN_DIR [--host 127.0.0.1] [--port 8765] [--read_timeout 5] [--max_leases 5]

Answers go to RUN_DIR/labels.sqlite (rlkit2/labels.py), which training reads as they arrive; clips are served
from RUN_DIR/clips only. Per-task instructions: RUN_DIR/instructions.txt. The server answers only requests
addressed to 127.0.0.1, localhost or --host; when raters reach it by another name (--host 0.0.0.0), name it with
--allowed_host. See rlkit2/label_server.py.
"""

from __future__ import annotations

import argparse
import errno
import signal
from pathlib import Path

from rlkit2.cli_errors import ArgumentParser, UsageError, cli_boundary, command
from rlkit2.label_server import LabelServer, segment_renderer


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects an integer, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535 (0: any free port), got {value}")
    return value


@cli_boundary(lambda: f"{command('label')} --help")
def main_label(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog=command("label"), description=__doc__.format(label=command("label")),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default) serves this machine only")
    parser.add_argument("--port", type=_port, default=8765, help="0: any free port")
    parser.add_argument("--read_timeout", type=float, default=5.0,
                        help="seconds a client may stall mid-request before it is dropped (default 5)")
    parser.add_argument("--max_leases", type=int, default=5,
                        help="unanswered pairs one rater may hold at once (default 5)")
    parser.add_argument("--allowed_host", action="append", default=[], metavar="NAME[:PORT]",
                        help="another name raters reach the server by (repeatable), e.g. this machine's name")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        raise UsageError(f"'{args.run_dir}' is not a run directory — give the folder that {command('train')} "
                         "printed as 'run directory' (a --agent pref --oracle human run)")
    if args.read_timeout <= 0 or args.max_leases < 1:
        raise UsageError(f"--read_timeout must be > 0 and --max_leases >= 1, got {args.read_timeout} and "
                         f"{args.max_leases} — e.g. --read_timeout 5 --max_leases 5 (the defaults)")
    try:
        server = LabelServer(args.run_dir, args.host, args.port, renderer=segment_renderer(args.run_dir),
                             read_timeout=args.read_timeout, max_leases_per_rater=args.max_leases,
                             allowed_hosts=args.allowed_host)
    except OSError as e:
        if e.filename is not None:  # a file under the run directory: the boundary names it
            raise
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: the port is in use — choose another with "
                             "--port N (--port 0: any free port), or stop the server that holds it") from e
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e} — --host must be a name or "
                         "address of this machine: 127.0.0.1 (the default), or 0.0.0.0 for all of them") from e
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

