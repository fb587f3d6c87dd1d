"""Device choice and CPU thread settings.

On a 2-core CPU, small-network inference is far faster on one intra-op thread (a batch-8 forward of a
2x64 MLP ran ~140x slower with 2 threads than with 1, DESIGN.md), while a large update can gain from
both cores. So collection and update each get their own thread count (``threads_collect``,
``threads_update``), set at the start of each phase.
"""

from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available; use device=auto or cpu")
    return device


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(n: int) -> None:
    """Set torch's intra-op threads (0 = all cores); cheap to call when the count does not change."""
    n = cpu_count() if n <= 0 else n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
