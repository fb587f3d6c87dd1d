"""The ``rlkit2`` command: one program with a subcommand per task (``rlkit2 train ...``, ``python -m rlkit2 train
...``; scripts/*.py call the same subcommands from a checkout).

Each subcommand is a ``main(argv) -> exit code`` found by its module path and imported only when it runs, so
``rlkit2 list`` does not import what ``rlkit2 sweep`` needs, and a subcommand whose module this installation lacks
is one clear error, not an ImportError at start-up.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rlkit2 import __version__
from rlkit2.cli_errors import SCRIPT_FORM, ArgumentParser, UsageError, cli_boundary, command, invoked_as


@dataclass(frozen=True)
class Subcommand:
    target: str  # 'module:function', the function taking argv and returning the exit code
    summary: str  # its line in ``rlkit2 --help``


SUBCOMMANDS = {
    "train": Subcommand("rlkit2.cli:main_train", "train an agent on an env, or resume a run "
                                                  "(--agent NAME --env ID --help: every option)"),
    "evaluate": Subcommand("rlkit2.cli:main_evaluate", "score a run's saved policy over N episodes, optionally "
                                                        "recording an mp4"),
    "label": Subcommand("rlkit2.label_cli:main_label", "serve the labeling page of a run that learns from "
                                                        "people's preferences (--agent pref --oracle human)"),
    "sweep": Subcommand("rlkit2.sweep_cli:main_sweep", "many runs (agents x envs x grid values x seeds) on Ray "
                                                        "Tune, resumable, with a results table"),
    "export": Subcommand("rlkit2.export:main", "write a run's policy as one standalone file (TorchScript or ONNX)"),
    "plot": Subcommand("rlkit2.plot:main", "plot learning curves of runs (seeds of a group as mean and band)"),
    "list": Subcommand("rlkit2.commands:main_list", "the agents, their presets per env family, and the env "
                                                     "families"),
}

MODULE_FORM = "python -m rlkit2 {}"
INSTALLED_FORM = "rlkit2 {}"


def main(argv: list[str] | None = None, form: str = INSTALLED_FORM) -> int:
    """The ``rlkit2`` console script (``form``: how the user started it, for usage lines and fixes)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    program = form.format("").rstrip()
    with invoked_as(form):
        if argv[:1] in (["-h"], ["--help"]):
            print(overview(program))
            return 0
        if argv[:1] == ["--version"]:
            print(f"rlkit2 {__version__}")
            return 0
        try:
            subcommand = _chosen(argv[:1], program)
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return _run(subcommand, argv[1:])


def run_script(name: str, argv: list[str]) -> int:
    """scripts/NAME.py: the subcommand, with its usage lines and fixes naming the script."""
    with invoked_as(SCRIPT_FORM):
        return _run(name, argv)


def overview(program: str) -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: {program} COMMAND [options]    ({program} COMMAND --help: the command's options)", "",
             "commands:"]
    lines += [f"  {name:{width}s}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", f"e.g. {program} train --agent ppo --env Hopper-v5; {program} evaluate RUN_DIR",
              "Your own agent as a plug-in package: docs/agent_contract.md"]
    return "\n".join(lines)


def _chosen(first: list[str], program: str) -> str:
    names = ", ".join(SUBCOMMANDS)
    if not first:
        raise UsageError(f"no command given — use one of: {names} (e.g. {program} train --agent ppo --env "
                         f"CartPole-v1; {program} --help says what each does)")
    name = first[0]
    if name in SUBCOMMANDS:
        return name
    if name.startswith("-"):
        raise UsageError(f"unknown option '{name}' before the command — options go after it ({program} train "
                         f"{name} ...); the commands: {names}")
    close = difflib.get_close_matches(name, list(SUBCOMMANDS), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UsageError(f"unknown command '{name}'.{hint} The commands: {names} — see: {program} --help")


def _run(name: str, argv: list[str]) -> int:
    try:
        entry = _load(name)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return entry(argv)


def _load(name: str) -> Callable[[list[str]], int]:
    module_name, _, function = SUBCOMMANDS[name].target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise UsageError(f"'{command(name)}' is not part of this rlkit2 (it has no module {module_name}) — "
                             "update rlkit2 (pip install -U rlkit2, or git pull in a checkout)") from error
        extras = "README, 'Dependencies and why'"
        raise UsageError(f"'{command(name)}' needs the package '{error.name}', which is not installed — pip "
                         f"install {error.name} (or the rlkit2 extra that brings it: {extras})") from error
    return getattr(module, function)


# The env families a preset can have a section for (rlkit2.run.env_family picks one from the env id).
ENV_FAMILIES = {
    "mujoco": "gymnasium's MuJoCo envs: {mujoco} (e.g. Hopper-v5)",
    "atari": "ALE/<Game>-v5 ids from ale-py (e.g. ALE/Pong-v5), DeepMind preprocessing (--atari.* options)",
    "classic": "gymnasium's classic control and Box2D: {classic} (e.g. CartPole-v1)",
    "minigrid": "MiniGrid-* ids from the minigrid package (e.g. MiniGrid-DoorKey-5x5-v0)",
}


@cli_boundary(lambda: f"{command('list')} --help")
def main_list(argv: list[str]) -> int:
    ArgumentParser(prog=command("list"), description="List the agents (plug-ins included), the sections of "
                   "their preset files per env family, and the env families.").parse_args(argv)
    from envs.make import MUJOCO_NAMES
    from rlkit2.agent import AgentSpec, available_agents
    from rlkit2.config import load_preset
    from rlkit2.run import CLASSIC_NAMES

    agents = available_agents()
    width = max(map(len, agents), default=0) + 2
    train = command("train")
    print(f"Agents ({train} --agent NAME; every option of one: {train} --agent NAME --env ID --help):")
    for name, spec in agents.items():
        print(f"  {name:{width}s}{spec.description if isinstance(spec, AgentSpec) else '(cannot be used: see below)'}")
    print("\nPresets (each agent's TOML: [agent]/[run] for every env, then a section per env family or env id; "
          "command-line options win):")
    for name, spec in agents.items():
        if isinstance(spec, AgentSpec):
            print(f"  {name:{width}s}{_preset_line(spec.preset, load_preset)}")
    print("\nEnv families (--env ID; an id of no family, or your own env as --env module:Class, gets a preset's "
          "[agent]/[run] only):")
    names = {"mujoco": ", ".join(sorted(MUJOCO_NAMES)), "classic": ", ".join(sorted(CLASSIC_NAMES))}
    for family, text in ENV_FAMILIES.items():
        print(f"  {family:10s}{text.format(**names)}")
    problems = [spec for spec in agents.values() if not isinstance(spec, AgentSpec)]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def _preset_line(preset: Path | None, load_preset: Callable) -> str:
    if preset is None:
        return "no preset file (the config's defaults)"
    sections = load_preset(preset)
    families = [family for family in ENV_FAMILIES if family in sections]
    envs = sorted(sections.get("env", {}))
    line = f"{_shown(preset)}: " + (", ".join(families) or "no family sections")
    return line + (f"; env {', '.join(envs)}" if envs else "")


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return str(path)
