"""Device choice and CPU thread settings.

On a 2-core CPU, small-network inference is far faster on one intra-op thread (a batch-8 forward of a
2x64 MLP ran ~140x slower with 2 threads than with 1, DESIGN.md), while a large update can gain from
both cores. So collection and update each get their own thread count (``threads_collect``,
``threads_update``), set at the start of each phase.
"""

from __future__ import annotations

import os

import torch


DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICE_HELP = "use auto (CUDA when present, else CPU), cpu, cuda or cuda:N"


def parse_device(name: str) -> torch.device | None:
    """The device a name stands for (None for 'auto'), without asking whether this machine has it: a sweep's
    head node checks its trials' names, then each trial resolves its device where it runs."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(f"Unknown device '{name}' — {DEVICE_HELP}")
    return device


def resolve_device(name: str = "auto") -> torch.device:
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' requested but CUDA is not available — use device auto or cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device '{name}' requested but this machine has {count} GPU(s), cuda:0 to "
                             f"cuda:{count - 1} — use one of them, or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device '{name}' requested but MPS (Apple GPUs) is not available — use auto or cpu")
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
