"""Typed dataclass configs: per-field docs, TOML presets, command-line overrides, saved with the run.

A field's documentation is the string literal right under it (read from the source, as in CleanRL's
``Args``); ``describe`` turns it into ``--help``. Overrides are strings (from the command line) or typed
values (from Python); either way an unknown name or an ill-typed value raises ``ConfigError`` naming the
option and what is allowed.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """A config option is unknown or has a bad value."""


RANGES = {  # name -> (test the value must pass, how the error states the range)
    "positive": (lambda v: v > 0, "must be > 0"),
    "non_negative": (lambda v: not v < 0, "must be >= 0"),
    "unit_interval": (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"),
}


def check_ranges(config: Any, **groups: tuple[str, ...]) -> None:
    """Raise ConfigError for the first option outside its range; ``groups`` map a RANGES kind to option names and
    are checked in the order given, e.g. ``check_ranges(cfg, positive=("lr",), unit_interval=("gamma",))``."""
    for kind, names in groups.items():
        test, statement = RANGES[kind]
        for name in names:
            value = getattr(config, name)
            if not test(value):
                raise ConfigError(f"Option '{name}' {statement}, got {value}")


def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} from the string literals that follow each annotated field in ``cls``'s source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def allowed_values(cls: type, name: str) -> tuple | None:
    """The Literal choices of a field, if it has any."""
    hint = _type_hints(cls)[name]
    return get_args(hint) if get_origin(hint) is Literal else None


def convert(value: Any, hint: Any, name: str) -> Any:
    """Convert ``value`` (a CLI string or a Python value) to the field type ``hint``, or raise ConfigError."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        candidate = value
        if isinstance(value, str) and not all(isinstance(a, str) for a in args):
            candidate = _parse_scalar(value)
        if candidate not in args:
            raise ConfigError(f"Option '{name}' got {value!r}; allowed values: {', '.join(map(str, args))}")
        return candidate
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"Option '{name}' got {value!r}")
    if origin in (tuple, list):
        items = value
        if isinstance(value, str):
            text = value.strip().strip("()[]")
            items = [v for v in (p.strip() for p in text.split(",")) if v] if text else []
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"Option '{name}' expects a comma-separated list, got {value!r}")
        elem = args[0] if args else str
        converted = [convert(v, elem, name) for v in items]
        return tuple(converted) if origin is tuple else converted
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"Option '{name}' expects true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"Option '{name}' expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"Option '{name}' expects an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"Option '{name}' expects a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"Option '{name}' expects a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"Option '{name}' expects a mapping — give it key by key (--{name}.KEY VALUE), or set "
                          "it from Python or a preset file")
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return override(hint(), value)
    raise ConfigError(f"Option '{name}' has unsupported type {hint}")


def _parse_scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parse_mapping_value(text: str) -> Any:
    """One value of a mapping option from the command line (--env_kwargs.KEY VALUE): numbers, true/false and
    none become Python values, so that 'false' does not reach a constructor as a (truthy) string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return _parse_scalar(text)


def override(config: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``config`` with ``values`` applied; keys may be dotted (``atari.noop_max``)
    and may use dashes for underscores."""
    hints = _type_hints(type(config))
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for raw_key, value in values.items():
        key = raw_key.replace("-", "_")
        head, _, rest = key.partition(".")
        if head not in hints:
            names = list(hints)
            close = difflib.get_close_matches(head, names, n=3)
            hint = f" Did you mean: {', '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(f"Unknown option '{prefix}{raw_key}'.{hint} Known options: "
                              f"{', '.join(prefix + n for n in names)}")
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif isinstance(value, dict) and (dataclasses.is_dataclass(hints[head]) or
                                          isinstance(getattr(config, head), dict)):
            # merged key by key, later sources winning: a saved {"rl": {...}} then --rl.lr, or a preset's
            # "rl.entropy_coef" then {"rl": {"lr": ...}} from Python, keep every key
            nested.setdefault(head, {}).update(value)
        else:
            changes[head] = convert(value, hints[head], prefix + head)
    for head, sub in nested.items():
        inner = getattr(config, head)
        if isinstance(inner, dict):  # --env_kwargs.size 7: one key of a mapping option (values parsed)
            changes[head] = {**inner, **{k: _parse_mapping_value(v) if isinstance(v, str) else v
                                         for k, v in sub.items()}}
            continue
        if not dataclasses.is_dataclass(inner):
            inner = hints[head]() if dataclasses.is_dataclass(hints[head]) else None
        if inner is None:
            raise ConfigError(f"Option '{prefix}{head}' has no sub-options")
        changes[head] = override(inner, sub, prefix=f"{prefix}{head}.")
    updated = dataclasses.replace(config, **changes)
    validate = getattr(updated, "validate", None)
    if callable(validate):
        validate()
    return updated


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON/TOML-friendly dict (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    return override(cls(), values)


def load_preset(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def parse_cli_overrides(argv: list[str]) -> dict[str, str]:
    """['--lr', '3e-4', '--gae-lambda=0.95', '--atari.noop_max', '0'] -> {'lr': '3e-4', ...}.
    A flag with no value (followed by another flag or nothing) means 'true'."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"Unexpected argument '{token}': options are written --name value")
        name, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                i += 1
            else:
                value = "true"
        out[name.replace("-", "_")] = value
        i += 1
    return out


@dataclasses.dataclass(frozen=True)
class OptionDoc:
    """One option as ``--help`` and the documentation site show it."""

    name: str  # dotted for a nested config: atari.noop_max
    type: str  # as --help writes it: INT, {gae,nstep}, INTS...
    default: Any  # the built-in default
    value: Any  # the value in ``current`` (the default when no instance was given)
    doc: str  # the field's docstring, on one line


def option_docs(cls: type, prefix: str = "", current: Any = None) -> list[OptionDoc]:
    """Every option of dataclass ``cls`` in source order, nested dataclasses flattened to dotted names."""
    docs = field_docs(cls)
    hints = _type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        value = getattr(current, f.name) if current is not None else default
        if dataclasses.is_dataclass(hint):
            options += option_docs(hint, prefix=f"{prefix}{f.name}.", current=value)
        else:
            options.append(OptionDoc(prefix + f.name, _type_name(hint), default, value, docs.get(f.name, "")))
    return options


def describe(cls: type, prefix: str = "", current: Any = None, marked: set[str] | frozenset[str] = frozenset()) -> str:
    """Help text: every option with its type, default and docstring. ``current``: an instance whose values are
    shown as the defaults (a preset's); the options named in ``marked`` (dotted) get "[preset]", and the
    built-in default when it differs."""
    lines = []
    for option in option_docs(cls, prefix, current):
        note = ""
        if option.name in marked or any(m.startswith(option.name + ".") for m in marked):
            note = " [preset]" if option.value == option.default else f" [preset; built-in: {option.default}]"
        lines.append(f"  --{option.name} {option.type} (default: {option.value}){note}")
        if option.doc:
            lines.append(textwrap.fill(option.doc, width=100, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "{" + ",".join(map(str, get_args(hint))) + "}"
    if get_origin(hint) in (types.UnionType, typing.Union):
        return "|".join(_type_name(a) for a in get_args(hint))
    if get_origin(hint) in (tuple, list):
        return "INTS" if get_args(hint) and get_args(hint)[0] is int else "LIST"
    return getattr(hint, "__name__", str(hint)).upper()
