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


# --- bf16: only where the hardware computes it ---------------------------------------------------------------
# A CPU without bf16 arithmetic (no AVX512-BF16 or AMX-BF16 on x86, no BF16 extension on Arm) emulates it, and
# then bf16 is far slower than fp32: PPO on Pong ran 10x slower in bf16 than in fp32 on an AMD EPYC with AVX2 and
# no AVX-512, against 1.9x faster on a Xeon with AVX512-BF16 (docs/benchmarks.md, "PPO on Atari: CNN precision").
# So a bf16 option is refused there rather than silently turned into fp32: bf16 changes nothing but speed (and
# rounding), so its only purpose is gone, and a run's recorded config must say what it computed. The error names
# the CPU and the fix. ALLOW_SLOW_BF16 lets bf16 run anyway (tests exercise the bf16 code path on any CI machine).
ALLOW_SLOW_BF16 = "RLKIT2_ALLOW_SLOW_BF16"
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 flags; Arm's "Features: ... bf16"


def read_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:  # not Linux
        return ""


def cpu_bf16_support(cpuinfo: str | None = None) -> tuple[bool | None, str]:
    """(whether the CPU computes bf16 natively -- None when /proc/cpuinfo cannot tell --, the CPU's name) from
    /proc/cpuinfo (or the given text)."""
    import platform

    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    name = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or platform.processor() \
        or platform.machine() or "unknown CPU"
    flags = fields.get("flags", fields.get("features"))
    if flags is None:
        return None, name
    return any(flag in flags.split() for flag in _BF16_CPU_FLAGS), name


def check_bf16(device: torch.device, option: str, also: str = "", cpuinfo: str | None = None) -> None:
    """Raise ConfigError when ``option`` asks for bf16 on a device without native bf16 (see above); ``also``: the
    option's other spelling, for the fix (e.g. '--rl.cnn_precision fp32 with --agent pref')."""
    if os.environ.get(ALLOW_SLOW_BF16, "") not in ("", "0"):
        return
    from rlkit2.config import ConfigError

    fix = f"Fix: --{option} fp32{f' ({also})' if also else ''} (or set {ALLOW_SLOW_BF16}=1 to run bf16 anyway)"
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"Option '{option}' is bf16, but the GPU ({torch.cuda.get_device_name(device)}) has no "
                              f"native bf16. {fix}")
        return
    if device.type != "cpu":
        return
    native, name = cpu_bf16_support(cpuinfo)
    if native:
        return
    why = ("its bf16 support could not be read (no flags in /proc/cpuinfo)" if native is None else
           "it has no native bf16 arithmetic (no AVX512-BF16 or AMX-BF16 flag in /proc/cpuinfo)")
    raise ConfigError(f"Option '{option}' is bf16, but this CPU ({name}): {why}, so bf16 runs emulated, about 10x "
                      f"slower than fp32 (measured on an AMD EPYC with AVX2). {fix}")
