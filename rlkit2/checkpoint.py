"""Checkpoints: plain dicts of tensors, numbers and strings (no pickled objects), written atomically and
loaded with ``weights_only=True``.

Layout of a checkpoint file: ``{"format": FORMAT, "version": VERSION, "agent": name, "config": {...},
"agent_state": agent.state_dict(), "run": {counters}, "rng": {...}}``.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "rlkit2-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, or not an rlkit2 checkpoint."""


def save_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """Write to a temp file in the same directory, fsync, then rename: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at '{path}'.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle with disallowed globals, random bytes...
        raise CheckpointError(
            f"'{path}' is not a readable rlkit2 checkpoint (truncated, corrupted, or written by another "
            f"program): {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is a torch file but not an rlkit2 checkpoint (no '{FORMAT}' header).")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"'{path}' has checkpoint version {payload.get('version')}; this rlkit2 reads "
                              f"version {VERSION}.")
    return payload


def make_payload(agent_name: str, config: dict[str, Any], agent_state: dict[str, Any],
                 run_state: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "agent": agent_name, "config": config,
            "agent_state": agent_state, "run": run_state, "rng": rng_state()}


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors/ints (so weights_only loading accepts them)."""
    version, internal, gauss = random.getstate()
    state = {
        "python": torch.tensor(internal, dtype=torch.int64),
        "python_version": version,
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python"].tolist()), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_STEP_FILE = re.compile(r"step_(\d+)\.pt$")


class CheckpointDir:
    """``checkpoints/``: ``step_<n>.pt`` (the latest ``keep`` of them), ``best.pt`` and ``final.pt``."""

    def __init__(self, root: str | Path, keep: int = 3):
        self.root = Path(root)
        self.keep = keep

    def save_step(self, payload: dict[str, Any], step: int) -> Path:
        path = save_atomic(payload, self.root / f"step_{step:012d}.pt")
        for old in self.step_files()[: -self.keep] if self.keep > 0 else []:
            old.unlink(missing_ok=True)
        return path

    def save_named(self, payload: dict[str, Any], name: str) -> Path:
        return save_atomic(payload, self.root / f"{name}.pt")

    def step_files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if _STEP_FILE.search(p.name)),
                      key=lambda p: int(_STEP_FILE.search(p.name).group(1)))

    def latest(self) -> Path | None:
        """The most advanced resumable state (by env steps, not file times, which copies do not keep): the
        highest step file, or final.pt when it is at least as far."""
        steps = self.step_files()
        final = self.root / "final.pt"
        if not final.is_file():
            return steps[-1] if steps else None
        if not steps:
            return final
        final_steps = int(load(final)["agent_state"].get("env_steps", 0))
        newest = int(_STEP_FILE.search(steps[-1].name).group(1))
        return final if final_steps >= newest else steps[-1]

    def for_evaluation(self) -> Path | None:
        for name in ("best.pt", "final.pt"):
            if (self.root / name).is_file():
                return self.root / name
        steps = self.step_files()
        return steps[-1] if steps else None
