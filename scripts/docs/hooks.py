"""MkDocs hook: pages of the documentation site that are built from the repository rather than copied into it.

A page asks for generated content with a directive on a line of its own (an HTML comment, so the raw file stays
readable on GitHub):

    <!-- rlkit2:include README.md "1. Train agents from the command line" [intro] [level=N] [drop_heading] -->
        the section under that heading (up to the next heading of the same or a higher level), from a Markdown
        file given relative to the repository root; ``intro`` stops at its first subheading, ``level=N`` moves
        its heading to level N (subheadings follow), ``drop_heading`` leaves the heading out. Relative links are
        rewritten for the including page. The included file stays the one source of its text.
    <!-- rlkit2:options agents.ppo:OnPolicyConfig [prefix=NAME.] -->
        a table of every option of a config dataclass: type, built-in default, docstring (rlkit2.config's
        option_docs, the same rows as --help); ``prefix`` names a nested config's options as the command line
        does (``prefix=atari.``).
    <!-- rlkit2:presets ppo -->
        what the agent's preset file sets in each section (all envs, each env family, each env id), beside the
        built-in default, and the file itself with its comments.

A directive that cannot be served (a heading that is gone, an unknown class or agent) stops the build with a
message naming the page, so a renamed heading fails CI instead of leaving a hole in the site.
"""

from __future__ import annotations

import importlib
import posixpath
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
DIRECTIVE = re.compile(r"^<!--[ \t]*rlkit2:(\w+)[ \t]+(.*?)[ \t]*-->[ \t]*$", re.MULTILINE)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def on_config(config, **kwargs):
    # Document this checkout's code, whatever rlkit2 is installed in the environment.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return config


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    page_path = Path(config["docs_dir"]).resolve() / page.file.src_uri

    def expand(match: re.Match) -> str:
        kind, argument = match.group(1), match.group(2)
        try:
            if kind == "include":
                return include(argument, page_path, Path(config["docs_dir"]).resolve())
            if kind == "options":
                return options_table(argument)
            if kind == "presets":
                return presets(argument)
            raise ValueError(f"unknown directive 'rlkit2:{kind}' (known: include, options, presets)")
        except Exception as e:  # any failure is the page's: name it
            raise PluginError(f"{page.file.src_uri}: <!-- rlkit2:{kind} {argument} -->: {e}") from e

    return DIRECTIVE.sub(lambda match: f"\n{expand(match)}\n", markdown)  # blank lines: a table ends there


# --- include --------------------------------------------------------------------------------------------------

def include(argument: str, page_path: Path, docs_dir: Path) -> str:
    words = shlex.split(argument)
    if len(words) < 2:
        raise ValueError('expected: include PATH "HEADING" [intro] [level=N] [drop_heading]')
    source, heading, flags = ROOT / words[0], words[1], words[2:]
    level = next((int(f.split("=")[1]) for f in flags if f.startswith("level=")), None)
    unknown = [f for f in flags if f not in ("intro", "drop_heading") and not f.startswith("level=")]
    if unknown:
        raise ValueError(f"unknown flag(s) {unknown}")
    lines = section(source.read_text(encoding="utf-8").splitlines(), heading, intro="intro" in flags)
    own_level = len(HEADING.match(lines[0]).group(1))
    shift = (level - own_level) if level else 0
    lines = lines[1:] if "drop_heading" in flags else lines
    text = "\n".join(shift_headings(lines, shift))
    return rewrite_links(text, source.parent, page_path.parent, docs_dir)


def headings(lines: list[str]):
    """(index, level, title) of every Markdown heading outside fenced code blocks."""
    in_code = False
    for index, line in enumerate(lines):
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and (m := HEADING.match(line)):
            yield index, len(m.group(1)), m.group(2)


def section(lines: list[str], title: str, intro: bool = False) -> list[str]:
    found = list(headings(lines))
    starts = [(i, level) for i, level, t in found if t == title]
    if len(starts) != 1:
        near = [t for _, _, t in found if title.lower() in t.lower()]
        raise ValueError(f"{'no' if not starts else 'more than one'} heading {title!r}"
                         + (f"; similar: {near}" if near else ""))
    start, level = starts[0]
    end = next((i for i, lv, _ in found if i > start and (lv <= level or intro)), len(lines))
    return [line.rstrip() for line in lines[start:end]]


def shift_headings(lines: list[str], shift: int) -> list[str]:
    if not shift:
        return lines
    heading_rows = {index: level for index, level, _ in headings(lines)}
    out = []
    for index, line in enumerate(lines):
        if index in heading_rows:
            new = heading_rows[index] + shift
            if not 1 <= new <= 6:
                raise ValueError(f"heading {line!r} would move to level {new}")
            line = "#" * new + line[heading_rows[index]:]
        out.append(line)
    return out


def rewrite_links(text: str, source_dir: Path, page_dir: Path, docs_dir: Path) -> str:
    """Relative links of the included file, made relative to the including page. A target outside the docs
    folder is not part of the site: it stays as its path in code type."""

    def fix(match: re.Match) -> str:
        opening, target, closing = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):  # a URL, an anchor or a site-absolute path
            return match.group(0)
        path, hash_, anchor = target.partition("#")
        resolved = (source_dir / path).resolve()
        if docs_dir not in resolved.parents and resolved != docs_dir:
            label = opening[opening.index("[") + 1:-2]
            return f"{label} (`{resolved.relative_to(ROOT).as_posix()}`)"
        relative = posixpath.relpath(resolved.as_posix(), page_dir.as_posix())
        return f"{opening}{relative}{hash_}{anchor}{closing}"

    out, in_code = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            in_code = not in_code
        out.append(line if in_code else LINK.sub(fix, line))
    return "\n".join(out)


# --- options and presets ----------------------------------------------------------------------------------------

def load(dotted: str) -> Any:
    module, _, name = dotted.partition(":")
    if not name:
        raise ValueError("expected module:Class, e.g. agents.ppo:OnPolicyConfig")
    return getattr(importlib.import_module(module), name)


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def show(value: Any) -> str:
    """A value as it is written on the command line (and in a preset): true, 64,64, none."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(show(v) for v in value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}" if value else "{}"
    return str(value)


def code(value: str) -> str:
    return f"`{value}`" if value != "" else ""


def options_table(argument: str) -> str:
    from rlkit2.config import option_docs

    words = argument.split()
    prefix = next((w.removeprefix("prefix=") for w in words[1:] if w.startswith("prefix=")), "")
    if len(words) != (2 if prefix else 1):
        raise ValueError("expected: options module:Class [prefix=NAME.]")
    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for option in option_docs(load(words[0]), prefix=prefix):
        rows.append(f"| `--{option.name}` | `{cell(option.type)}` | {code(cell(show(option.default)))} | "
                    f"{cell(option.doc)} |")
    return "\n".join(rows)


def preset_sections(preset: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(column title, {option: value}) for each section of a preset: all envs, each family, each env id."""

    def values(section: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for part in ("run", "agent"):
            merged.update(flatten(section.get(part, {})))
        return merged

    sections = [("all envs", values(preset))]
    for key, section in preset.items():
        if key in ("agent", "run", "env") or not isinstance(section, dict):
            continue
        sections.append((f"{key} envs", values(section)))
    for env_id, section in preset.get("env", {}).items():
        sections.append((env_id, values(section)))
    return [(title, vals) for title, vals in sections if vals]


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'atari': {'noop_max': 0}} -> {'atari.noop_max': 0}: options as --help and the command line name them."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = prefix + key.replace("-", "_")
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def presets(argument: str) -> str:
    from rlkit2.agent import get_agent_spec
    from rlkit2.config import load_preset, option_docs
    from rlkit2.run import RunConfig

    spec = get_agent_spec(argument.strip())
    if spec.preset is None:
        return f"The `{spec.name}` agent has no preset: every option starts at its default."
    preset_file = Path(spec.preset).resolve()
    sections = preset_sections(load_preset(preset_file))
    defaults = {o.name: o.default for o in option_docs(RunConfig) + option_docs(spec.config_cls)}
    names = list(dict.fromkeys(name for _, vals in sections for name in vals))
    header = ["option", "default"] + [title for title, _ in sections]
    rows = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for name in names:
        default = code(cell(show(defaults[name]))) if name in defaults else ""
        values = [code(cell(show(vals[name]))) if name in vals else "" for _, vals in sections]
        rows.append(f"| `--{name}` | {default} | " + " | ".join(values) + " |")
    try:
        shown = preset_file.relative_to(ROOT).as_posix()
    except ValueError:
        shown = preset_file.name
    body = "\n".join("    " + line if line else "" for line in preset_file.read_text().splitlines())
    return (f"`--agent {spec.name}` ({cell(spec.description)}) starts from `{shown}`. An empty cell: that section "
            "leaves the option as the sections before it set it (all envs < env family < env id < command line)."
            "\n\n" + "\n".join(rows) + f'\n\n??? note "{shown}, with its comments"\n\n    ```toml\n{body}\n    ```\n')

