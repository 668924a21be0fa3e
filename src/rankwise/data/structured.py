"""Structured files a user gives (a config file, a sweep file, a rank file): JSON or YAML, read with one message for
whatever is wrong with them (a directory, a missing file, bytes that are not UTF-8, a syntax error), naming the
option that gave the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..options import require_file


def read_structured_file(path: str | Path, field: str) -> tuple[Any, str]:
    """(data, "JSON"|"YAML") from the file given by option `field`: `.json` is read as JSON, `.yaml`/`.yml` as
    YAML, any other suffix as JSON and then as YAML. Raises ConfigError naming the option, the file and what it
    was read as (a directory, a missing file, bytes that are not UTF-8, a syntax error)."""
    p = require_file(field, path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"`{path}` is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start})", "Save it as UTF-8 JSON or YAML") from None
    except OSError as exc:
        raise ConfigError(field, f"cannot read `{path}`: {exc.strerror or exc}") from None
    suffix = p.suffix.lower()
    kinds = ["JSON"] if suffix == ".json" else ["YAML"] if suffix in (".yaml", ".yml") else ["JSON", "YAML"]
    errors = []
    for kind in kinds:
        try:
            return (json.loads(text) if kind == "JSON" else yaml.safe_load(text)), kind
        except json.JSONDecodeError as exc:
            errors.append(f"{exc.msg} at line {exc.lineno}, column {exc.colno}")
        except yaml.YAMLError as exc:
            errors.append(" ".join(str(exc).split()))
    if len(kinds) == 1:
        raise ConfigError(field, f"`{path}` is not valid {kinds[0]} (read as {kinds[0]} because of its "
                          f"`{p.suffix}` suffix): {errors[0]}")
    raise ConfigError(field, f"`{path}` is neither valid JSON ({errors[0]}) nor valid YAML ({errors[1]}); both "
                      f"were tried because its suffix `{p.suffix}` is not .json, .yaml or .yml",
                      "Fix the syntax, and name the file .json or .yaml")
