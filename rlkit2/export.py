"""Export a run's policy as one standalone file: ``rlkit2 export`` and scripts/export.py (docs/export.md).

    rlkit2 export RUN_DIR [--checkpoint best|final|PATH] [--format torchscript|pt2|onnx] [--out FILE]

The file maps raw observations ``[N, ...]``, in the env's own dtype, to env actions ``[N, ...]``: the agent's
observation normalisation, its network, the deterministic action and the rescaling to the env's action bounds.
It is traced from the agent's ``export_module()`` (rlkit2/agent.py), which runs the same code as
``act(obs, deterministic=True)``, so nothing of the math is written twice. TorchScript files load with
``torch.jit.load`` alone, pt2 files (torch.export's ExportedProgram, TorchScript's successor) with
``torch.export.load`` alone, ONNX files with onnxruntime alone; none needs rlkit2. Beside the file, FILE.json
(policy.pt.json) describes its input, output and the env's spaces.

Before anything is written, the traced policy is loaded back and run on observations from the run's env, in
batches of several sizes: it must give the agent's own actions, or the export stops with an error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from envs import VecEnv
from rlkit2 import checkpoint as ckpt
from rlkit2.cli import acting_agent, checkpoint_path, open_run
from rlkit2.cli_errors import ArgumentParser, UsageError, cli_boundary, command
from rlkit2.device import set_threads
from rlkit2.run import make_env, read_run_record

FORMATS = {"torchscript": ".pt", "pt2": ".pt2", "onnx": ".onnx"}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # torch's ONNX exporter needs the first two
CHECK_ENVS, CHECK_STEPS = 4, 8  # the check's observations: CHECK_ENVS envs x (reset + CHECK_STEPS steps)

USAGE = """Export a run's policy as one file that loads with torch alone (TorchScript, pt2) or onnxruntime (ONNX).

    {export} RUN_DIR [--checkpoint best] [--format torchscript] [--out policy.pt]
    {export} RUN_DIR --format pt2 --out policy.pt2
    {export} RUN_DIR --format onnx --out policy.onnx
"""


@dataclass
class Exported:
    path: Path  # the policy file
    spec_path: Path  # the JSON beside it
    checked: int  # observations on which the file gave the agent's own actions


@cli_boundary(lambda: f"{command('export')} --help", extra=(ckpt.CheckpointError,))
def main(argv: list[str]) -> int:
    parser = ArgumentParser(prog=command("export"), description=USAGE.format(export=command("export")),
                            allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory that rlkit2 train wrote")
    parser.add_argument("--checkpoint", default=None,
                        help="'best', 'final', or a path; default: best, else final, else the latest step file")
    parser.add_argument("--format", default="torchscript", choices=sorted(FORMATS),
                        help="torchscript (loads with torch.jit.load), pt2 (torch.export.load) or onnx (loads with "
                             "onnxruntime; needs the onnx extra: pip install 'rlkit2[onnx]'); default: torchscript")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="the policy file to write (its spaces go to FILE.json); default: "
                             "RUN_DIR/export/policy-CHECKPOINT.pt (.pt2, .onnx)")
    parser.add_argument("--env", default=None, metavar="ENV",
                        help="the env to check the export on instead of the run's: needed for a run trained with "
                             "train(..., env_fn=...), as 'module:Factory'")
    args = parser.parse_args(argv)
    result = export_policy(args.run_dir, args.out, args.format, args.checkpoint, args.env)
    print(f"policy : {result.path}  ({args.format}; checked: the agent's actions on {result.checked} observations)")
    print(f"spaces : {result.spec_path}")
    return 0


def export_policy(run_dir: str | Path, out: str | Path | None = None, fmt: str = "torchscript",
                  checkpoint: str | None = None, env: str | None = None) -> Exported:
    """Write the deterministic policy of ``run_dir``'s ``checkpoint`` to ``out`` in ``fmt`` (FORMATS) and its
    spaces to ``out`` + .json (``spec_path_for``), after checking that the file acts as the agent does."""
    if fmt not in FORMATS:
        raise UsageError(f"Unknown export format '{fmt}' — use one of: {', '.join(sorted(FORMATS))}")
    run_dir = Path(run_dir)
    run, agent_config = open_run(run_dir, env, "cpu")  # exported files are traced on the CPU
    path = checkpoint_path(run_dir, checkpoint)
    if fmt == "onnx":
        _require_onnx()
    out = Path(out) if out is not None else run_dir / "export" / f"policy-{path.stem}{FORMATS[fmt]}"
    spec_path = spec_path_for(out)
    payload = ckpt.load(path, map_location="cpu")
    set_threads(1)
    vec_env = make_env(run, CHECK_ENVS, run.seed + 10_000)  # the run's evaluation envs
    agent = acting_agent(run, agent_config, vec_env, payload, path, "export", other_env=env is not None)
    try:
        obs = observations(agent, vec_env, run.seed + 10_000)
        spaces = {"observation_space": vec_env.single_observation_space, "action_space": vec_env.single_action_space}
    finally:
        vec_env.close()
    expected = write_policy(agent, run.agent, obs, fmt, out)
    record = read_run_record(run_dir)
    spec = {"format": fmt, "file": out.name,
            "input": {"name": "obs", "dtype": str(obs[0].dtype).removeprefix("torch."),
                      "shape": [None, *obs[0].shape[1:]]},
            "output": {"name": "action", "dtype": str(expected[0].dtype).removeprefix("torch."),
                       "shape": [None, *expected[0].shape[1:]]},
            **{name: describe_space(space) for name, space in spaces.items()},
            # what shaped the observations (Atari preprocessing, a time limit, env_kwargs), not the training vector
            "env": run.env, "env_settings": {k: v for k, v in record.get("env_settings", {}).items()
                                             if k not in ("num_envs", "seed", "backend")},
            "agent": run.agent,
            "checkpoint": {"path": str(path), "env_steps": payload["agent_state"].get("env_steps")},
            "run_dir": str(run_dir), "torch": str(torch.__version__)}
    spec_path.write_text(json.dumps(spec, indent=2, allow_nan=False) + "\n")
    return Exported(out, spec_path, sum(len(batch) for batch in obs))


def write_policy(agent: Any, name: str, obs: list[torch.Tensor], fmt: str, out: Path) -> list[torch.Tensor]:
    """Trace ``agent.export_module()`` (agent ``name``) on ``obs[0]`` and write it to ``out`` in ``fmt``, once the
    written file, loaded back, gives the agent's deterministic actions on every batch of ``obs``; returns those
    actions. A refused export leaves nothing at ``out``."""
    if not hasattr(agent, "export_module"):
        raise UsageError(f"Agent '{name}' cannot be exported: it has no export_module() (the Agent contract in "
                         f"rlkit2/agent.py says what it must return) — evaluate it with {command('evaluate')} instead")
    module = agent.export_module().eval()
    if fmt == "onnx" and any(getattr(part, "bf16", False) for part in module.modules()):
        raise UsageError(f"This '{name}' policy's CNN runs in bfloat16 (cnn_precision bf16), and onnxruntime has no "
                         "bfloat16 convolutions on the CPU — export it with --format torchscript, which keeps the "
                         "bfloat16 autocast")
    expected = _agent_actions(agent, obs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.tmp{out.suffix}")  # renamed into place once checked; pt2 needs the suffix
    try:
        save, run = {"torchscript": (_save_torchscript, _run_torchscript), "pt2": (_save_pt2, _run_pt2),
                     "onnx": (_save_onnx, _run_onnx)}[fmt]
        try:
            with _weights_without_grad(module):  # so that the loaded policy's outputs need no .detach()
                save(module, obs[0], tmp)
        except Exception as error:  # noqa: BLE001 -- the exporter's own error, with the agent and format named
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            raise RuntimeError(f"torch could not export this '{name}' policy to {fmt} ({type(error).__name__}: "
                               f"{first_line}) — try another --format; the traceback above says where") from error
        try:
            actions = run(tmp, obs)
        except Exception as error:  # noqa: BLE001 -- as above: the runtime's error, with what was being run
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            raise RuntimeError(f"the {fmt} file exported from this '{name}' policy does not run "
                               f"({type(error).__name__}: {first_line}) — try another --format") from error
        _check_same_actions(name, fmt, expected, actions)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return expected


def spec_path_for(policy: Path) -> Path:
    """The JSON beside a policy file: its name + .json (policy.pt.json), so a TorchScript and an ONNX export of
    one name do not share it."""
    return policy.with_name(policy.name + ".json")


def describe_space(space: gym.Space) -> dict[str, Any]:
    """A space as JSON: Box dtype, shape, low and high (one number where all are equal; "inf"/"-inf" for infinite
    bounds, which JSON cannot write), Discrete n and start."""
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "dtype": str(space.dtype), "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "dtype": str(space.dtype), "shape": list(space.shape),
                "low": _bound(space.low, space.dtype), "high": _bound(space.high, space.dtype)}
    return {"type": type(space).__name__, "description": str(space)}


def _bound(values: np.ndarray, dtype: np.dtype) -> Any:
    values = np.asarray(values).astype(dtype)
    if values.size and np.all(values == values.flat[0]):
        return _number(values.flat[0])
    return np.array([_number(x) for x in values.flat], dtype=object).reshape(values.shape).tolist()


def _number(x: np.number) -> float | int | str:
    """A bound as written in its own dtype: a float32 4.8 as 4.8, not 4.800000190734863."""
    if np.issubdtype(type(x), np.integer):
        return int(x)
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(str(x))


def _require_onnx() -> None:
    missing = []
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(f"--format onnx needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                         "not installed — install the onnx extra: pip install 'rlkit2[onnx]' (from a checkout: "
                         "pip install -e '.[onnx]'), or export with --format torchscript or pt2 (torch alone)")


@torch.no_grad()  # not inference_mode: an inference tensor as torch.export's example input is refused
def observations(agent: Any, env: VecEnv, seed: int) -> list[torch.Tensor]:
    """Batches of real observations for the trace and the check: the reset states of CHECK_ENVS envs and the
    states after CHECK_STEPS steps of the agent's sampled actions (so the check sees more than start states).
    Batches of 2 (the trace's example: a batch of 1 would let a trace fix the batch size unnoticed), 1 and the
    rest."""
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    for _ in range(CHECK_STEPS):
        obs, *_ = env.step(agent.act(torch.as_tensor(obs), deterministic=False).cpu().numpy())
        seen.append(obs)
    every = torch.as_tensor(np.concatenate(seen))
    return [every[:2], every[2:3], every[3:]]


@torch.inference_mode()
def _agent_actions(agent: Any, obs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [agent.act(batch, deterministic=True).cpu() for batch in obs]


@contextlib.contextmanager
def _quiet():
    """torch's exporters warn about and print their steps (trace warnings, the ONNX exporter's progress): the check
    below is what decides whether the export is right."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export", "torch.fx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


@contextlib.contextmanager
def _weights_without_grad(module: nn.Module):
    """The module's parameters with requires_grad off (a pt2 file keeps the flag), and back afterwards."""
    params = [param for param in module.parameters() if param.requires_grad]
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def _save_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        # freezing inlines the weights the policy uses and drops the rest (a critic, an adversary)
        torch.jit.save(torch.jit.freeze(traced), str(path))


def _run_torchscript(path: Path, obs: list[torch.Tensor]) -> list[torch.Tensor]:
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return [loaded(batch) for batch in obs]


def _exported_program(module: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export's graph of the policy, for any batch size (what pt2 files hold and the ONNX exporter reads)."""
    return torch.export.export(module, (example,), dynamic_shapes={"obs": {0: torch.export.Dim("batch")}})


def _save_pt2(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with _quiet():
        torch.export.save(_exported_program(module, example), str(path))


def _run_pt2(path: Path, obs: list[torch.Tensor]) -> list[torch.Tensor]:
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        return [loaded(batch) for batch in obs]


def _save_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with _quiet():
        program = torch.onnx.export(_exported_program(module, example), input_names=["obs"],
                                    output_names=["action"], dynamo=True, verbose=False)
        program.save(str(path))


def _run_onnx(path: Path, obs: list[torch.Tensor]) -> list[torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.as_tensor(session.run(None, {"obs": batch.numpy()})[0]) for batch in obs]


def _check_same_actions(agent: str, fmt: str, expected: list[torch.Tensor], actions: list[torch.Tensor]) -> None:
    """The file's actions must be the agent's: discrete ones equal, continuous ones to float rounding (the ONNX
    runtime's kernels sum in another order than torch's)."""
    for want, got in zip(expected, actions):
        same = (want.shape == got.shape and want.dtype == got.dtype and
                (torch.equal(want, got) if not want.is_floating_point() else
                 torch.allclose(want, got, rtol=1e-4, atol=1e-5)))
        if not same:
            detail = (f"shape {tuple(got.shape)} {got.dtype} where the agent gives {tuple(want.shape)} {want.dtype}"
                      if want.shape != got.shape or want.dtype != got.dtype else
                      f"{int((want != got).reshape(len(want), -1).any(1).sum())} of {len(want)} actions differ")
            raise RuntimeError(f"The {fmt} export of this '{agent}' policy does not act as the agent does ({detail} "
                               f"on a batch of {len(want)} observations), so it was not written — please report it; "
                               "another --format may work")
