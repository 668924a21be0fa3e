"""A report from a `results.csv` instead of run directories (`rankwise report --from_csv FILE`), and the paths a
report writes: run tables carry no absolute path of the machine that made them.

A results.csv holds every run's config, status and scores (one row per run, `load_runs`'s columns), which is all
the statistics need: medians, selection of learning rates, paired comparisons, the budget frontier. Figures that
need per-step records (metric per epoch, ranks, allocation over training, schedules) cannot be redrawn from it;
sections link the ones an earlier report left in the output folder and say they were kept."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..config import FIELDS
from ..errors import ConfigError
from ..runs.naming import NAME_DEFAULTS
from ..sweep.search import read_records, run_roles
from .aggregate import CONFIG_FIELDS, config_labels

REQUIRED = ("task", "method", "allocation", "seed", "status", "score", "metric", "greater_is_better", "config_id",
            "label", "run_name")
PATH_COLUMNS = ("data_dir", "train_file", "validation_file", "test_file", "rank_file", "dataset", "model", "run_dir",
                "output_dir")
SEARCH_COLUMNS = ("search_role", "search_arm", "search_chosen")
FROM_CSV_NOTE = ("Made from that results.csv (`rankwise report --from_csv`), not from the run directories: every "
                 "statistic is computed again from it; figures that need the runs' per-step records are kept from "
                 "the report made from the run directories, and say so.")


def read_results(path: str | Path) -> pd.DataFrame:
    """The runs of a results.csv written by `rankwise report`, with the columns `load_runs` gives (the configured
    label back in `config_label`). ConfigError naming the option for a missing file or another kind of CSV."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("from_csv", f"`{path}` is not a file" + (" (it is a folder)" if path.is_dir() else ""),
                          "Give the results.csv a report wrote, e.g. docs/results/study_small/results.csv")
    try:
        runs = pd.read_csv(path, low_memory=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError("from_csv", f"`{path}` cannot be read as CSV ({type(exc).__name__}: {exc})",
                          "Give the results.csv a report wrote") from None
    missing = [c for c in REQUIRED if c not in runs]
    if missing:
        raise ConfigError("from_csv", f"`{path}` is not a rankwise results.csv (no column {', '.join(missing)})",
                          "Give the results.csv that `rankwise report` wrote next to its report.md")
    if runs.empty:
        raise ConfigError("from_csv", f"`{path}` has no runs", "Give a results.csv with at least one run")
    for column in CONFIG_FIELDS:  # a field added since the CSV was written: the value its runs were trained with
        if column not in runs:
            runs[column] = NAME_DEFAULTS.get(column, FIELDS[column].default)
    if "saved_weights" not in runs:
        runs["saved_weights"] = "final"
    runs["seed"] = runs["seed"].astype(int)
    runs["greater_is_better"] = runs["greater_is_better"].astype(str).str.lower().eq("true")
    if "config_label" not in runs:
        runs["config_label"] = runs["label"]
    else:  # named again from the configured labels, as `load_runs` names them (the CSV holds an older naming's)
        runs["label"] = config_labels(runs.assign(label=runs["config_label"]))
    return runs.copy()  # one block per dtype again (columns were added one by one)


def with_search_roles(runs: pd.DataFrame, paths) -> pd.DataFrame:
    """`runs` with `search_role` (`search` or `answer`), `search_arm` and `search_chosen` from the `search.json` files
    of `search:` sweeps under `paths` (NaN for runs no search made)."""
    roles = run_roles(read_records(paths))
    runs = runs.copy()
    for column in SEARCH_COLUMNS:
        runs[column] = runs["run_name"].map(lambda name: roles.get(name, {}).get(column))
    return runs


def portable(runs: pd.DataFrame, cwd: Path | None = None) -> pd.DataFrame:
    """`runs` with every absolute path (data directory, run directory, files) written relative to `cwd` (default:
    the current directory), as a command run there would give it, so no table carries a machine's own paths."""
    runs = runs.copy()
    cwd = Path(cwd or Path.cwd())

    def relative(value):
        if isinstance(value, str) and os.path.isabs(value):
            return os.path.relpath(value, cwd)
        return value

    for column in PATH_COLUMNS:
        if column in runs:
            runs[column] = runs[column].map(relative)
    return runs
