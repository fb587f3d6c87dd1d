"""Starting or joining Ray (the optional ``ray`` extra), shared by sweeps (rlkit2/sweep_ray.py) and remote rollout
workers (rlkit2/remote.py).

A local Ray is started on 127.0.0.1 with no dashboard unless asked (``ray.init`` otherwise binds to the machine's
network address), and with ``address="local"``: a Ray of its own, never one that ``ray start`` left running on the
machine. ``address`` or ``RAY_ADDRESS`` joins an existing cluster instead, whose nodes need the same install of
rlkit2 and its envs.
"""

from __future__ import annotations

import os
import sys

LOCALHOST = "127.0.0.1"


class RayStartError(ValueError):
    """Ray is not installed, or the cluster to join does not answer."""


def loopback_only() -> None:
    """Make a local Ray use 127.0.0.1 as its node address, so every server it starts listens on loopback only.
    Ray otherwise takes the machine's network address (it rewrites _node_ip_address="127.0.0.1" to it) and its
    gRPC servers listen there. Ray's own switch for this is the loopback mode it uses on macOS and Windows
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0); set before Ray is imported, and for the processes it starts."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # Ray imported already: the constant was read at import
        constants.ENABLE_RAY_CLUSTER = False


def import_ray(instead: str):
    """``import ray``, or an error that says how to install it and what to do ``instead``."""
    try:
        import ray
    except ImportError:
        raise RayStartError(f"Ray is not installed. Install the extra: pip install -e '.[ray]' (from a checkout) -- "
                            f"or {instead}") from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False,
             instead: str = "run without Ray") -> str:
    """Join ``address`` (or $RAY_ADDRESS), else start a local Ray on 127.0.0.1. Returns what it did."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent anywhere
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        loopback_only()
        # Ray starts workers at nice 15 to keep its own processes responsive; trials and rollout workers are the
        # work here, and at nice 15 they starve next to any other job on the machine.
        os.environ.setdefault("RAY_worker_niceness", "0")
    ray = import_ray(instead)
    if ray.is_initialized():
        return "ray already initialised in this process"
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            raise RayStartError(f"Could not join the Ray cluster at {address} ({type(e).__name__}: {str(e)[:300]}). "
                                "Check that it runs (ray status), and that this machine has the cluster's auth "
                                "token: RAY_AUTH_MODE=token with ~/.ray/auth_token or RAY_AUTH_TOKEN "
                                "(docs/sweeps.md)") from None
        return f"joined the Ray cluster at {address}"
    # address="local": a Ray of its own, even where `ray start` left a cluster running on this machine
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host=LOCALHOST,
             log_to_driver=False, configure_logging=False)
    return f"started a local Ray on {LOCALHOST} with {int(ray.cluster_resources().get('CPU', 0))} CPUs"
