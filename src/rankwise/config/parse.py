"""Options from text: the `--flag`s of `rankwise train` (one per RunConfig field, grouped as in `--help`), config
files (YAML or JSON), and the values of both, checked against each option's type."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

from ..data.structured import read_structured_file
from ..errors import ConfigError
from ..options import parse_bool, parse_float, parse_int
from .run import FIELDS, RunConfig


def _base_type(tp: Any) -> type:
    """`Optional[int]` -> int, `str` -> str."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing))  # annotations are strings under `from __future__ import annotations`
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


FIELD_TYPES = {name: _base_type(f.type) for name, f in FIELDS.items()}


_CONVERTERS = {bool: parse_bool, int: parse_int, float: parse_float, str: str}


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add one `--flag` per RunConfig field, grouped as in `--help`. Defaults are left as None so
    that only flags given on the command line override a `--config` file."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, f in FIELDS.items():
        if name in exclude:
            continue
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(f"{meta['group']} options"))
        kind = FIELD_TYPES[name]
        default_text = "" if f.default is None else f" (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": meta["help"] + default_text,
                                  "type": _CONVERTERS[kind]}
        if kind is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        if meta.get("choices"):
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        group.add_argument(f"--{name}", *meta.get("aliases", ()), **kwargs)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of RunConfig fields (see `read_structured_file` for how it is parsed)."""
    data, kind = read_structured_file(path, "config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"`{path}` (read as {kind}) holds a {type(data).__name__}, not a mapping of "
                          "option names to values", "Write one `option: value` per line (YAML) or a JSON object")
    return data


# Sources whose values come from the command line: text there is converted as argparse would. Every other
# source (a config file, a sweep file) must give each value its exact type.
COMMAND_LINE_SOURCES = ("arguments", "lr-sweep arguments")
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
# YAML 1.1 (PyYAML) reads `1e-3` as text: such text is still a number for a float option.
_NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _is_optional(name: str) -> bool:
    return FIELDS[name].default is None


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _exact_value(name: str, value: Any, source: str) -> Any:
    """`value` if it has field `name`'s type (an int also for a float field), else ConfigError naming the field,
    the value and its type."""
    kind = FIELD_TYPES[name]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    if kind is int and is_number and isinstance(value, int):
        return value
    if kind is float and is_number:
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(name, f"bad value in {source}: {_shown(value)} is too large for a number") from None
    if kind is float and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value)
    type_name = type(value).__name__
    got = "" if value is None else f" ({'an' if type_name[0] in 'aeiou' else 'a'} {type_name})"
    problem = f"bad value in {source}: got {_shown(value)}{got}, but it takes {_TYPE_WORDS[kind]}"
    if kind is str and isinstance(value, (bool, int, float)):
        fix = f'Quote it to mean the text: {name}: "{value}"'
    elif kind is str and name == "target_modules" and isinstance(value, list):
        fix = "Give the module names as one comma-separated string, e.g. target_modules: query,value"
    elif kind is int and isinstance(value, float):
        fix = f"Write a whole number such as {math.floor(value)}" if math.isfinite(value) else "Write a whole number"
    elif isinstance(value, bool):
        fix = f"Write {_TYPE_WORDS[kind]}: true/false is not one"
    elif value is None:
        fix = f"Give {_TYPE_WORDS[kind]}, or leave --{name} out for its default"
    else:
        fix = f"Write {_TYPE_WORDS[kind]}"
    raise ConfigError(name, problem, fix)


def config_from_dict(values: dict[str, Any], source: str = "arguments", exact_types: bool | None = None
                     ) -> RunConfig:
    """Build a RunConfig from a mapping, checking every key. `source` says where the values come from, in
    messages. Values from a file or sweep (`exact_types`; by default, any `source` not in COMMAND_LINE_SOURCES)
    must have the option's exact type: `rank: true` or `label: [a, b]` is an error, not rank 1 or the text
    "['a', 'b']". Command-line values (and a Python caller's, by default) are converted from text as argparse
    does; a list or mapping is never converted."""
    exact = source not in COMMAND_LINE_SOURCES if exact_types is None else exact_types
    kwargs = {}
    for key, value in values.items():
        name = key.lstrip("-")
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f"Did you mean `{close[0]}`?" if close else "See `rankwise train --help` for the options"
            raise ConfigError(name, f"unknown option in {source}", hint)
        if value is None and _is_optional(name):
            kwargs[name] = None
            continue
        kind = FIELD_TYPES[name]
        if exact or value is None or isinstance(value, (list, dict, tuple, set)):
            kwargs[name] = _exact_value(name, value, source)
            continue
        try:
            kwargs[name] = value if isinstance(value, kind) and not (kind is int and isinstance(value, bool)) \
                else _CONVERTERS[kind](value)
        except (argparse.ArgumentTypeError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(name, f"bad value in {source}: {exc}") from None
    return RunConfig(**kwargs)


def config_from_args(namespace: argparse.Namespace) -> RunConfig:
    """Merge `--config FILE` (if any) with the flags given on the command line (flags win)."""
    values: dict[str, Any] = {}
    config_path = getattr(namespace, "config", None)
    if config_path:
        values.update(load_config_file(config_path))
    for name in FIELDS:
        given = getattr(namespace, name, None)
        if given is not None:
            values[name] = given
    return config_from_dict(values, source=f"`{config_path}`" if config_path else "arguments")
