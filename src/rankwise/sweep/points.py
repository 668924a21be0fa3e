"""A sweep spec's run options: each value checked as `rankwise train` would read it, the option dicts of its grid
points × variants, and overrides forced on every run. The leaf of the sweep package (the search reads it)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from ..config import FIELDS, applies, config_from_dict


def where(source: str) -> str:
    return f"sweep {source}"


def check_values(values: dict, source: str) -> None:
    """Every key is a RunConfig field and every value converts (lists: each element)."""
    for key, value in values.items():
        for item in (value if isinstance(value, list) else [value]):
            config_from_dict({key: item}, source=source)


def override(spec: dict, values: dict[str, Any] | None = None, seeds: list[int] | None = None) -> dict:
    """A copy of `spec` with run options forced for every run (command-line `--set`, `--data_dir`)."""
    spec = {**spec, "base": dict(spec["base"]), "grid": dict(spec["grid"]),
            "variants": [dict(v) for v in spec["variants"]]}
    for key, value in (values or {}).items():
        check_values({key: value}, "--set")
        spec["base"][key] = value
        spec["grid"].pop(key, None)
        for variant in spec["variants"]:
            variant.pop(key, None)
    if seeds is not None:
        spec["seeds"] = list(seeds)
    return spec


def default_output_root(spec: dict) -> str:
    stem = Path(spec.get("source") or "sweep").stem
    return str(Path("runs") / stem)


def point_values(spec: dict) -> list[dict]:
    """The option dicts of every grid point × variant (without seed), with inapplicable fields dropped."""
    grid = spec["grid"]
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    variants = spec["variants"] or [{}]
    out = []
    for point in points:
        for variant in variants:
            shared = {**spec["base"], **point}
            allocation = variant.get("allocation", shared.get("allocation", FIELDS["allocation"].default))
            method = variant.get("method", shared.get("method", FIELDS["method"].default))
            task = variant.get("task", shared.get("task", FIELDS["task"].default))
            shared = {k: v for k, v in shared.items() if applies(k, allocation, method, task)}
            out.append({**shared, **variant})
    return out
