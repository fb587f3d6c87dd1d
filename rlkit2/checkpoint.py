"""Checkpoints: plain dicts of tensors, numbers and strings (no pickled objects), written atomically and
loaded with ``weights_only=True``.

Layout of a checkpoint file: ``{"format": FORMAT, "version": VERSION, "agent": name, "config": {...},
"agent_state": agent.state_dict(), "run": {counters}, "rng": {...}, "spaces": {...}, "param_shapes": {...}}``.
``spaces`` (the env's observation and action spaces) and ``param_shapes`` (every network tensor's shape) say what
the checkpoint holds, so ``check_compatible`` can refuse a checkpoint of another agent or network shape with a
message instead of a KeyError or a size-mismatch traceback. Older checkpoints have neither; their state dicts are
compared directly.
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
    """A checkpoint file is missing, truncated, not an rlkit2 checkpoint, or does not fit the agent loading it."""


_TMP_FILE = re.compile(r"^\..+\.pt\..+\.tmp$")  # what save_atomic writes before its rename


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
                 run_state: dict[str, Any], spaces: dict[str, Any] | None = None) -> dict[str, Any]:
    """``spaces``: ``env_spaces(env)`` of the env the agent acts in."""
    return {"format": FORMAT, "version": VERSION, "agent": agent_name, "config": config,
            "agent_state": agent_state, "run": run_state, "rng": rng_state(), "spaces": spaces,
            "param_shapes": module_shapes(agent_state)}


# ------------------------------------------------------------------------------ what a checkpoint holds
def space_info(space: Any) -> dict[str, Any]:
    """A gymnasium space as plain data (loadable with weights_only): its type, shape, dtype and size."""
    info: dict[str, Any] = {"type": type(space).__name__}
    if getattr(space, "shape", None) is not None:
        info["shape"] = [int(d) for d in space.shape]
    if getattr(space, "dtype", None) is not None:
        info["dtype"] = str(space.dtype)
    if hasattr(space, "n"):
        info["n"] = int(space.n)
    if hasattr(space, "nvec"):
        info["nvec"] = [int(v) for v in np.asarray(space.nvec).ravel()]
    return info


def env_spaces(env: Any) -> dict[str, Any]:
    return {"observation": space_info(env.single_observation_space), "action": space_info(env.single_action_space)}


def module_shapes(state: Any, prefix: str = "") -> dict[str, list[int]]:
    """Shapes of the tensors in the ``nn.Module`` state dicts inside an agent's state, by dotted key
    (``model.policy.0.weight``). Module state dicts are recognized by the ``_metadata`` that ``state_dict()``
    attaches (and ``torch.load`` keeps); other tensors (optimizer moments, which a fresh agent does not have yet,
    or data that grows, such as labelled comparisons) are not the network's shape."""
    shapes: dict[str, list[int]] = {}
    if isinstance(state, dict):
        is_module = hasattr(state, "_metadata")
        for key, value in state.items():
            name = f"{prefix}{key}"
            if is_module and isinstance(value, torch.Tensor):
                shapes[name] = list(value.shape)
            else:
                shapes.update(module_shapes(value, name + "."))
    return shapes


def check_compatible(payload: dict[str, Any], path: str | Path, *, agent: str, spaces: dict[str, Any],
                     agent_state: dict[str, Any], agent_config: dict[str, Any], fix: str,
                     skip: tuple[str, ...] = ()) -> None:
    """Raise CheckpointError unless ``payload`` was saved by the same agent, on the same spaces, with networks of
    the same shapes as the agent here (``agent_state``: its fresh ``state_dict()``; ``agent_config``: its config
    as plain data, to name the options that differ). ``fix``: what to do about it, for the message. ``skip``:
    top-level state keys whose shapes the agent's ``load_state_dict`` checks itself."""
    saved_agent = payload.get("agent")
    if saved_agent != agent:
        raise CheckpointError(f"checkpoint {path} was saved by agent '{saved_agent}' but this run is '{agent}' "
                              f"— {fix}")
    for kind in ("observation", "action"):
        saved = (payload.get("spaces") or {}).get(kind)  # older checkpoints do not say
        if saved is not None and saved != spaces[kind]:
            raise CheckpointError(f"checkpoint {path} was trained on the {kind} space {_space_text(saved)} but "
                                  f"this run's env has {_space_text(spaces[kind])} — {fix}")
    saved_shapes = payload.get("param_shapes") or module_shapes(payload.get("agent_state", {}))
    for key, shape in module_shapes(agent_state).items():
        if key.split(".")[0] in skip:
            continue
        if key in saved_shapes and list(saved_shapes[key]) != shape:
            raise CheckpointError(
                f"parameter {key} has shape {tuple(saved_shapes[key])} in checkpoint {path} but {tuple(shape)} here: "
                f"{_changed_options(payload, agent_config)} — {fix}")


def _space_text(info: dict[str, Any]) -> str:
    details = [f"{k} {tuple(v) if isinstance(v, list) else v}" for k, v in info.items() if k != "type"]
    return f"{info.get('type')}({', '.join(details)})"


def _changed_options(payload: dict[str, Any], agent_config: dict[str, Any]) -> str:
    """Which agent options differ between the checkpoint's config and this run's: the likely cause."""
    saved = (payload.get("config") or {}).get("agent_config") or {}
    changed = [f"{k}={saved.get(k)!r} there, {agent_config.get(k)!r} here" for k in sorted(set(saved) | set(agent_config))
               if k in saved and k in agent_config and saved[k] != agent_config[k]]
    if not changed:
        return "the networks were built differently (same options; another version of the code?)"
    return "the checkpoint was saved with other options than this run's config.json (" + "; ".join(changed) + ")"


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

    def step_path(self, step: int) -> Path:
        return self.root / f"step_{step:012d}.pt"

    def save_step(self, payload: dict[str, Any], step: int) -> Path:
        path = save_atomic(payload, self.step_path(step))
        for old in self.step_files()[: -self.keep] if self.keep > 0 else []:
            old.unlink(missing_ok=True)
        return path

    def remove_stale_tmp(self) -> list[Path]:
        """Delete the temp files of writes that a crash (kill -9, power loss) interrupted before their rename.
        Only files named as ``save_atomic`` names them: nothing else in the directory is touched."""
        if not self.root.is_dir():
            return []
        stale = [p for p in self.root.iterdir() if p.is_file() and _TMP_FILE.match(p.name)]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

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
