"""Sweep file → spec → validated run configs (module docstring of the package: the file format).

`load_sweep`/`parse_sweep` check a sweep file and return its spec; `expand` turns a spec into one validated
RunConfig per grid point × variant × seed (a search's, the runs its scores call for); `check_configs` runs the
model and data checks before anything runs; `describe_runs` says where each run stands (`--dry-run`)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..config import FIELDS, RunConfig, config_from_dict, prepare, read_structured_file
from ..data import GLUE_TASKS, load_glue
from ..data.files import load_text_data
from ..data.instruct import alpaca_path, load_alpaca
from ..errors import ConfigError, RankwiseError
from ..models import EMBEDDED
from ..planning import build_plan, check_head_saving, meta_model
from ..runs.naming import run_name
from ..runs.state import check_output_dir, config_conflicts, inspect, run_state
from .points import check_values, default_output_root, point_values, where
from .search import known_runs, parse_search

SPEC_KEYS = ("base", "grid", "variants", "seeds", "output_dir", "description", "search")
RUN_STATES = ("new", "finished", "running", "unfinished", "failed", "corrupt", "foreign", "conflict")  # run_state, describe_runs


def load_sweep(path: str | Path) -> dict:
    """Read and check a sweep file. Returns {"base", "grid", "variants", "seeds", "output_dir",
    "description", "source"}; raises ConfigError naming the key and the fix."""
    data, _ = read_structured_file(path, f"sweep {path}")
    if not isinstance(data, dict) or not data:
        raise ConfigError(where(path), "must hold a mapping (base:, grid:, seeds:, ...)",
                          "See `rankwise sweep --help` for the format")
    return parse_sweep(data, source=str(path))


def parse_sweep(data: dict, source: str = "sweep") -> dict:
    """The spec from an already-parsed mapping (structured or flat form)."""
    base, grid, variants = _sections(dict(data), source)
    base, grid = _grid(base, grid, source)
    _check_variants(variants, source)
    seeds = _seeds(data.get("seeds"), base, grid, source)
    output_dir = data.get("output_dir")
    if output_dir is not None and not isinstance(output_dir, str):
        raise ConfigError(where(source), "`output_dir` must be a path")
    search = None
    if data.get("search") is not None:  # adaptive learning-rate search (sweep/search.py)
        search = parse_search(data["search"], base, grid, variants, seeds, source)
    return {"base": base, "grid": grid, "variants": variants, "seeds": seeds, "output_dir": output_dir,
            "description": data.get("description"), "source": source, "search": search}


def _sections(data: dict, source: str) -> tuple[dict, dict, list]:
    """(base, grid, variants) of the structured form, or the flat form's options as the base."""
    if not any(k in data for k in ("base", "grid", "variants")):
        return {k: v for k, v in data.items() if k not in SPEC_KEYS}, {}, []
    for key in data:
        if key not in SPEC_KEYS:
            if key in FIELDS:
                hint = f"`{key}` is a run option: put it under `base:` (one value) or `grid:` (a list)"
            else:
                close = difflib.get_close_matches(key, SPEC_KEYS, n=1)
                hint = (f"Did you mean `{close[0]}`? " if close else "") + f"Top-level keys: {', '.join(SPEC_KEYS)}"
            raise ConfigError(where(source), f"unknown key `{key}`", hint)
    if data.get("variants") == []:  # an emptied list would silently run the base configuration instead
        raise ConfigError(where(source), "`variants` is an empty list",
                          "List at least one variant, or remove the `variants:` key to run the base and grid "
                          "configurations alone")
    base, grid, variants = data.get("base") or {}, data.get("grid") or {}, data.get("variants") or []
    for name, value in (("base", base), ("grid", grid)):
        if not isinstance(value, dict):
            raise ConfigError(where(source), f"`{name}` must be a mapping of run options")
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ConfigError(where(source), "`variants` must be a list of mappings",
                          'Write e.g. `- {label: "baseline r8", allocation: uniform, rank: 8}`')
    return base, grid, variants


def _grid(base: dict, grid: dict, source: str) -> tuple[dict, dict]:
    """(base, grid) with every base option given as a list moved to the grid, grid values as lists, checked."""
    base, grid = dict(base), dict(grid)
    for key in [k for k, v in base.items() if isinstance(v, list)]:  # any field given as a list expands
        if key in grid:
            raise ConfigError(where(source), f"`{key}` is given as a list in both base and grid", "Keep one")
        grid[key] = base.pop(key)
    grid = {k: (v if isinstance(v, list) else [v]) for k, v in grid.items()}
    for key, values in grid.items():
        if not values:
            raise ConfigError(where(source), f"grid `{key}` is an empty list", "Give at least one value")
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(where(source), f"grid `{key}` repeats a value: {values}", "List each value once")
    if "output_dir" in base or "output_dir" in grid:
        raise ConfigError(where(source), "`output_dir` is the parent directory of the sweep's runs",
                          "Put `output_dir:` at the top level, not under base or grid")
    check_values(base, f"{source} (base)")
    check_values(grid, f"{source} (grid)")
    return base, grid


def _check_variants(variants: list[dict], source: str) -> None:
    seen = []
    for i, variant in enumerate(variants):
        if any(isinstance(v, list) for v in variant.values()):
            raise ConfigError(where(source), f"variant {i + 1} has a list value",
                              "A variant is one set of overrides; put lists in `grid:`")
        if "seed" in variant or "output_dir" in variant:
            raise ConfigError(where(source), f"variant {i + 1} sets `seed` or `output_dir`",
                              "Give seeds with top-level `seeds:` and the directory with top-level `output_dir:`")
        check_values(variant, f"{source} (variant {i + 1})")
        # A label may name several variants (one arm of a study at several learning rates, say), but two
        # identical variants are a copy-paste slip.
        key = sorted((k, str(v)) for k, v in variant.items())
        if key in seen:
            raise ConfigError(where(source), f"variants {seen.index(key) + 1} and {i + 1} are identical",
                              "Remove one, or change what should differ")
        seen.append(key)


def _seeds(seeds, base: dict, grid: dict, source: str) -> list[int]:
    """`seeds:`, or a `seed` option of the base or grid (taken out of them), else [0]."""
    if "seed" in grid or "seed" in base:
        if seeds is not None:
            raise ConfigError(where(source), "seeds are given twice (`seeds:` and a `seed` option)", "Keep `seeds:`")
        seeds = grid.pop("seed", None) or [base.pop("seed")]
    if seeds is None:
        seeds = [0]
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(where(source), f"`seeds` must be a list of integers, got {seeds!r}", "e.g. seeds: [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(where(source), f"`seeds` repeats a seed: {seeds}", "List each seed once")
    return seeds


def expand(spec: dict, output_dir: str | None = None, check_resources: bool | str = True) -> list[RunConfig]:
    """One validated RunConfig per grid point × variant × seed, with output_dir=<root>/<run name>.

    Every config is resolved and validated (`prepare`); with `check_resources` the model-dependent checks
    (rank plan, budget feasibility, via a weightless model) and the data files are checked too, once per
    distinct model/data. `check_resources="local"` skips checks that would need the network (hub models and
    hub datasets). Identical configs (the same run name) are kept once. Raises before anything runs.
    """
    root = Path(output_dir or spec.get("output_dir") or default_output_root(spec))
    source = spec.get("source", "sweep")
    configs, seen = [], set()
    if spec.get("search"):  # a search's runs depend on its scores: the ones it starts with (sweep/search.py)
        runs = [(values, values.pop("seed")) for values in known_runs(spec)]
    else:
        runs = [(values, seed) for values in point_values(spec) for seed in spec["seeds"]]
    for values, seed in runs:
        cfg = config_from_dict({**values, "seed": seed}, source=source)
        name = run_name(cfg)
        if name in seen:
            continue
        seen.add(name)
        cfg.output_dir = str(root / name)
        try:
            configs.append(prepare(cfg))
        except ConfigError as exc:
            raise ConfigError(exc.field, f"{exc.problem} (in {source}, run {name})", exc.fix) from None
    if check_resources:
        check_configs(configs, allow_network=check_resources != "local")
    return configs


def _is_local_model(name: str) -> bool:
    return name in EMBEDDED or Path(name).expanduser().exists()


def check_configs(configs: list[RunConfig], allow_network: bool = True) -> list[str]:
    """Model-dependent checks (rank plan, budget feasibility) and data files, before any run starts.
    Returns notes about checks that were skipped (network needed and not allowed)."""

    models: dict[tuple, Any] = {}
    data_checked: set[tuple] = set()
    notes: list[str] = []
    for cfg in configs:
        name = Path(cfg.output_dir).name
        try:
            if inspect(cfg.output_dir).kind != "finished":  # finished: skipped, or reported as a conflict
                check_output_dir(cfg)
            key = (cfg.model, cfg.task)
            if key not in models:
                if allow_network or _is_local_model(cfg.model):
                    models[key] = meta_model(cfg)
                else:
                    models[key] = None
                    notes.append(f"model `{cfg.model}` is not on this machine, so its rank plans and budgets are "
                                 "not checked by a dry run (a real sweep checks them before its first run)")
            if models[key] is not None:
                model, heads = models[key]
                check_head_saving(cfg, build_plan(cfg, model, heads)[0])
            data_key = (cfg.task, cfg.data_dir, cfg.train_file, cfg.validation_file, cfg.dataset, cfg.text_column,
                        cfg.label_column)
            if data_key not in data_checked and cfg.task in GLUE_TASKS:
                if cfg.data_dir or allow_network:
                    load_glue(cfg.task, cfg.data_dir)
                else:
                    notes.append(f"task `{cfg.task}` would be read from the Hugging Face hub (no --data_dir or "
                                 "RANKWISE_DATA_DIR): not checked by a dry run")
            elif data_key not in data_checked and cfg.task == "text":  # your own data: read and checked

                if cfg.dataset is not None and not Path(cfg.dataset).expanduser().exists() and not allow_network:
                    notes.append(f"dataset `{cfg.dataset}` would be loaded from the Hugging Face hub: not checked by "
                                 "a dry run")
                else:
                    load_text_data(cfg)
            elif data_key not in data_checked:  # instruction tuning: every record is checked

                load_alpaca(alpaca_path(cfg))
            data_checked.add(data_key)
        except ConfigError as exc:
            raise ConfigError(exc.field, f"{exc.problem} (run {name})", exc.fix) from None
        except RankwiseError as exc:
            raise type(exc)(f"run {name}: {exc}") from None
    return notes


def describe_runs(configs: list[RunConfig]) -> list[tuple[str, str]]:
    """(name, state) for `--dry-run`: new, finished, running, unfinished (killed half-way), failed (rerun) or
    conflict (finished with another config: kept, not run)."""
    states = []
    for c in configs:
        state = run_state(c.output_dir)
        if state == "finished" and config_conflicts(c):
            state = "conflict"
        states.append((Path(c.output_dir).name, state))
    return states
