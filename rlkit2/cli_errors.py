"""The one boundary between the command line and the library, shared by the ``rlkit2`` subcommands (train,
evaluate, label, sweep, ...) and their wrappers scripts/train.py, evaluate.py, label.py and sweep.py.

A user's bad input reaches it as a ValueError (ConfigError, EnvCheckError, SweepError, LabelError, UsageError and
the plain ValueErrors that check values), an OSError (a path that is missing or not writable, a port in use) or one
of the entry point's ``extra`` types (CheckpointError): it prints one line, ``error: <what> — <fix>``, and returns
exit code 2, with no traceback. Anything else is a bug, in rlkit2 or in an env's code: its traceback is printed for
the report and the exit code is 1. ``RLKIT2_TRACEBACK=1`` prints the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterator

_OUR_CODE = tuple(str(Path(__file__).resolve().parents[1] / name) + os.sep
                  for name in ("rlkit2", "envs", "agents", "scripts"))


# How the user started the command, so that usage lines and the fixes in messages name what they typed:
# "rlkit2 {}" (the installed command, and what the library's messages say when no command runs),
# "python -m rlkit2 {}", or "python scripts/{}.py" (the wrappers in a checkout).
_command_form = "rlkit2 {}"
SCRIPT_FORM = "python scripts/{}.py"


def command(subcommand: str) -> str:
    """The command that runs ``subcommand`` ('train', 'evaluate', ...), as the user started this one."""
    return _command_form.format(subcommand)


@contextlib.contextmanager
def invoked_as(form: str) -> Iterator[None]:
    """Within: ``command()`` writes commands in ``form`` (one of the forms above)."""
    global _command_form
    before, _command_form = _command_form, form
    try:
        yield
    finally:
        _command_form = before


class UsageError(ValueError):
    """Bad command-line input that a front end finds itself; the message says what is wrong and how to fix it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's own errors (an unknown flag, --episodes x) in the boundary's one-line form, exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} — see: {self.prog} --help\n")


def cli_boundary(help_command: str | Callable[[], str], extra: tuple[type[BaseException], ...] = ()) -> Callable:
    """Decorate ``main(argv) -> exit code``. ``help_command`` (or what it returns, when the command's name is
    known only at run time: ``command()``) is the fix offered for an error whose message came from a third-party
    library (numpy, gymnasium, torch) and so names no fix of its own."""

    def wrap(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt:  # Ctrl-C where the entry point has nothing to save: no traceback
                print("\ninterrupted", file=sys.stderr)
                return 130
            except (ValueError, OSError, *extra) as error:
                if os.environ.get("RLKIT2_TRACEBACK"):
                    traceback.print_exc()
                fix = help_command() if callable(help_command) else help_command
                print(f"error: {describe(error, fix)}", file=sys.stderr)
                return 2
            except Exception as error:  # noqa: BLE001 -- not bad input: a bug, shown in full for the report
                traceback.print_exc()
                print(f"error: internal error ({type(error).__name__}), not a problem with your input — if the "
                      "traceback above ends in your env's code, fix it there; otherwise please report it with the "
                      "traceback and the command", file=sys.stderr)
                return 1

        return run

    return wrap


def describe(error: BaseException, help_command: str) -> str:
    """The error's one line: our messages as written (they carry their fix); a system error on a path with the
    path; a third party's message with where to look."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: '{error.filename}' — check that the path exists and that you may " \
               f"write there"
    message = str(error) or type(error).__name__
    if _raised_by_us(error):
        return message
    return (f"{message} — check the values given ({help_command}); if they look right, rerun with "
            "RLKIT2_TRACEBACK=1 and report the traceback")


def _raised_by_us(error: BaseException) -> bool:
    """Our error classes (ConfigError, EnvCheckError...), or a builtin one raised by our code, e.g. the
    ValueError of an unknown agent name: its message was written for the user."""
    if type(error).__module__.split(".")[0] in ("rlkit2", "envs", "agents"):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(_OUR_CODE)
