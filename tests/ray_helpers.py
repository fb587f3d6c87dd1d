"""Ray for tests, isolated from any other Ray on the machine (a user's running sweep): importable as ``ray_helpers``.

- The tests' Rays keep their files (sessions, sockets, the 'current cluster' record) in a folder of their own,
  ``RAY_TMP``, short because Ray's socket paths live under it, so they never join or see another Ray.
- This process becomes a child subreaper: Ray processes orphaned by a killed driver (GCS, raylet, workers; `ray
  start`'s daemons) are re-parented to it rather than to init, so ``stop_our_ray`` can end exactly the Ray
  processes these tests started -- never `ray stop`, which ends every Ray on the machine.
- ``local_ray``: a module-scoped fixture with a local Ray on 127.0.0.1 inside the test process (rlkit2's own
  ``init_ray``), whose workers can import the tests' env modules.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from conftest import TESTS_DIR, subprocess_env

RAY_TMP = tempfile.mkdtemp(prefix="rk2ray", dir="/tmp")
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def ray_env() -> dict:
    """Environment for a subprocess that starts its own Ray (never one found through RAY_ADDRESS)."""
    env = subprocess_env()
    env.pop("RAY_ADDRESS", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_TMPDIR"] = RAY_TMP
    return env


def stop_our_ray() -> None:
    """SIGKILL every descendant of this process: the Rays these tests started."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])  # the field after the (name)
    ours, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - ours
        ours |= frontier
    for pid in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in ours:  # reap them (this process is their subreaper now)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray in this process for the module's tests (started by rlkit2 as users get it: 127.0.0.1 only)."""
    ray = pytest.importorskip("ray")
    from rlkit2.ray_local import init_ray

    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_TMPDIR", "PYTHONPATH")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_TMPDIR"] = RAY_TMP
    # Ray's workers start from the raylet's environment: the tests' env modules (toy_envs, counter_envs) importable
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR / "envs"), str(TESTS_DIR.parent),
                                                saved["PYTHONPATH"] or ""])
    init_ray(num_cpus=4)
    try:
        yield ray
    finally:
        ray.shutdown()
        stop_our_ray()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(Path(RAY_TMP) / "ray", ignore_errors=True)
