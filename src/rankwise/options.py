"""How a part of rankwise declares the run options it owns, and how option text becomes values.

Every options dataclass (the model's, the data's, training's, each adapter method's and each allocation strategy's)
declares its fields with `option(...)`: the default, the `--help` text, the `--help` group, the allowed values and
other flag spellings. `rankwise.config` composes them into one `RunConfig` whose fields are the flags of
`rankwise train`, the keys of a config file and of config.json. A leaf module: it imports nothing of rankwise's
but its errors, so the modules that own options never import the configuration back.
"""

from __future__ import annotations

import argparse
import dataclasses
import decimal
from pathlib import Path
from typing import Any

from .errors import ConfigError


def option(default: Any, help: str, group: str, choices: tuple | None = None, aliases: tuple = ()) -> Any:
    """A field of an options dataclass: `group` is its `--help` section (model, allocation, adalora, data,
    training), `choices` its allowed values, `aliases` its other flag spellings (e.g. `--lr`)."""
    return dataclasses.field(default=default, metadata={"help": help, "group": group, "choices": choices,
                                                        "aliases": aliases})


def option_names(*parts: type) -> tuple[str, ...]:
    """The option names the dataclasses `parts` declare, in order."""
    return tuple(f.name for part in parts for f in dataclasses.fields(part))


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got `{text}`")


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got `{text}`") from None


def parse_int(text: str | int | float) -> int:
    """An exact integer from `12`, `1e3` or `2.0` (never through a float: `18446744073709551617` stays itself)."""
    if isinstance(text, bool):
        raise argparse.ArgumentTypeError(f"expected an integer, got `{text}`")
    if isinstance(text, int):
        return text
    try:
        value = decimal.Decimal(str(text).strip())
    except decimal.InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected an integer, got `{text}`") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"expected an integer, got `{text}`")
    if value.adjusted() > 100:
        raise argparse.ArgumentTypeError(f"`{text}` is too large")
    return int(value)


def require(ok: bool, name: str, problem: str, fix: str = "") -> None:
    """ConfigError naming option `name` unless `ok`."""
    if not ok:
        raise ConfigError(name, problem, fix)


def require_file(name: str, path: str | Path, fix: str = "") -> Path:
    """`path` as a Path if it is a file; else ConfigError naming option `name` and saying what is there instead."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(name, f"`{path}` is a directory, not a file", fix or "Give the path of the file itself")
    if not p.is_file():
        raise ConfigError(name, f"file `{path}` does not exist", fix)
    return p


def positive_int(cfg, name: str, required_by: str | None = None) -> None:
    """ConfigError unless option `name` is a positive integer (or missing and not `required_by` a strategy)."""
    value = getattr(cfg, name)
    require(value is not None or required_by is None, name, f"is required by --allocation {required_by}")
    require(value is None or value >= 1, name, f"must be a positive integer, got {value}")
