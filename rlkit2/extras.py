"""Optional dependencies (pyproject's extras): importing one that is not installed is a one-line user error that
gives the pip command, not an ImportError traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from rlkit2.cli_errors import UsageError


class MissingExtraError(UsageError):
    """An optional dependency is not installed; the message names the extra and the command that installs it."""


def import_extra(module: str, extra: str, needed_for: str) -> ModuleType:
    """``module``, or MissingExtraError: '<needed_for> needs <module> (the '<extra>' extra): pip install ...'."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{needed_for} needs {module.split('.')[0]}, which is not installed (the '{extra}' extra) — "
            f"pip install 'rlkit2[{extra}]' (from a checkout: pip install -e '.[{extra}]')") from e
