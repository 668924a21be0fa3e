"""`build_report`: check the inputs, then write report.md (a header, the study sections, one part per task),
results.csv, configurations.csv and the figures.

Study sections (the LR-ratio study, instruction tuning, ...) plug in with `register_section(fn)`: `fn` gets the
`ReportContext` (runs, configurations, output folder, command-line options) and returns markdown (or None to
add nothing); it may write its own figures into `ctx.out`. They are appended after the built-in study
sections, in registration order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..errors import RunDirError
from ..runs.rundir import check_writable_path
from .aggregate import check_fields, group_runs, is_run_dir, load_runs, metric_scale, resolve_baselines
from .configurations.markdown import task_sections
from .context import ReportContext, Section
from .frontier import section as frontier_section
from .lr_ratio import section as lr_ratio_section
from .placement import section as placement_section
from .results_csv import FROM_CSV_NOTE, portable, read_results, with_search_roles
from .search_section import section as search_section
from .study import section as study_section
from .text import plural, task_name, task_order

EXTRA_SECTIONS: list[Section] = []


def study_sections() -> list[Section]:
    """The built-in study sections: layer-wise placement (alpaca runs, automatic), the LR-ratio analysis
    (with `--lr_ratio`), learned vs uniform at the same budget (with `--study`), the budget frontier (runs that
    vary the adapter budget, automatic) and the learning-rate search (runs of a `search:` sweep, automatic)."""
    return [placement_section, lr_ratio_section, study_section, frontier_section, search_section]


def register_section(section: Section) -> Section:
    """Add a study section to every report (usable as a decorator)."""
    if section not in EXTRA_SECTIONS:
        EXTRA_SECTIONS.append(section)
    return section


def build_report(run_dirs: list[str | Path], out: str | Path, group_by: list[str] | None = None,
                 baseline: str | None = None, top: int = 6, options: dict | None = None,
                 sections: list[Section] | None = None, warn=None) -> dict:
    """Write report.md, results.csv, configurations.csv and the figures into `out`. Checks the inputs
    (runs found, --group_by fields, --baseline) before writing anything. Returns {"report", "results",
    "configurations", "figures", "runs", "configurations_count"}."""
    warnings: list[str] = []

    def note(text: str) -> None:
        warnings.append(text)
        if warn is not None:
            warn(text)

    from_csv = (options or {}).get("from_csv")  # a results.csv instead of run directories (report.results_csv)
    runs, groups, out = _checked_inputs(run_dirs, out, group_by, baseline, note, from_csv)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(runs, groups, out, dict(options or {}))

    tasks = task_order(runs["task"])
    lines = _header(runs, groups, tasks, [from_csv] if from_csv else run_dirs, warnings)
    if from_csv:
        lines.append(FROM_CSV_NOTE + "\n")
    # Study sections (LR-ratio study, instruction tuning, ...; registered with register_section()) answer the
    # question the runs were made for, so they come first; the per-task tables of every configuration follow.
    for section in (sections if sections is not None else [*study_sections(), *EXTRA_SECTIONS]):
        text = section(ctx)
        if text:
            lines.append(text.rstrip() + "\n")
    for task in tasks:
        prefix = f"_{task}" if len(tasks) > 1 else ""
        heading = "###" if len(tasks) > 1 else "##"
        if len(tasks) > 1:
            lines.append(f"## {task_name(task)}\n")
        lines += task_sections(ctx, task, prefix, heading, group_by, baseline, top)

    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    results, configurations = _write_tables(runs, groups, out)
    return {"report": report, "results": results, "configurations": configurations, "figures": ctx.figures,
            "runs": len(runs), "configurations_count": len(groups), "warnings": warnings}


def _checked_inputs(run_dirs, out, group_by, baseline, note, from_csv=None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """(runs, configurations, output folder), or an error before anything is written."""
    out = check_report_dir(out, "--out")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out: `{out}` is a file; the report needs a folder. Choose a new or existing folder")
    # runs from a results.csv, or from run directories with the roles a `search:` sweep gave them
    runs = read_results(from_csv) if from_csv else with_search_roles(load_runs(run_dirs, warn=note), run_dirs)
    if runs.empty:
        raise RunDirError(f"no finished runs (run directories with summary.json) under {', '.join(map(str, run_dirs))}")
    if group_by:
        check_fields(runs, group_by, "group_by")
    groups = group_runs(runs)
    resolve_baselines(groups, baseline)  # raises for a baseline that matches nothing, before anything is written
    return runs, groups, Path(out)


def check_report_dir(out: str | Path, option: str) -> Path:
    """`out` unless it is, or is inside, a run directory: a report there would make `rankwise train` refuse the run
    as holding files it did not write (and mix report files into a run's). Creates nothing."""
    out = check_writable_path(out, option)
    real = Path(os.path.realpath(out))
    for folder in (real, *real.parents):
        if is_run_dir(folder):
            where = "is a run directory" if folder == real else f"is inside the run directory `{folder}`"
            raise RunDirError(f"{option}: `{out}` {where}; a report is never written into a run (rankwise would then "
                              "refuse the run as holding files it did not write). Choose a folder outside it, e.g. "
                              f"`{folder.parent / 'report'}`")
    return out


def _header(runs: pd.DataFrame, groups: pd.DataFrame, tasks: list[str], run_dirs, warnings: list[str]) -> list[str]:
    models = ", ".join(dict.fromkeys(str(m) for m in runs["model"]))
    statuses = runs["status"].value_counts()
    title = " · ".join(task_name(t) for t in tasks)
    lines = [f"# rankwise report: {title} ({models})\n",
             f"{plural(len(runs), 'run')} in {plural(len(groups), 'configuration')} "
             f"({', '.join(f'{n} {s}' for s, n in statuses.items())}), read from " + _sources(run_dirs) + ".\n",
             f"**Median ± Std**: over the seeds of a configuration, of {_score_text(runs)} (the model is evaluated "
             f"after every epoch, with hard ranks). Std is the sample standard deviation (ddof=1, i.e. "
             f"`numpy.std(x, ddof=1)`); `–` for a single seed. Diverged and failed runs are listed separately and "
             f"never enter a statistic. `results.csv` has every run (best and final-epoch values), "
             f"`configurations.csv` every configuration. {_weights_text(runs)}\n"]
    if warnings:
        lines.append("Skipped: " + "; ".join(warnings) + "\n")
    return lines


def _weights_text(runs: pd.DataFrame) -> str:
    """Which epoch's weights the runs saved (and export): the final one, or the best (--load_best_model_at_end)."""
    counts = runs["saved_weights"].fillna("final").value_counts()
    if counts.get("best", 0) == 0:
        return "The runs' saved weights (adapter/, exports) are the final epoch's."
    if counts.get("final", 0) == 0:
        return "The runs' saved weights (adapter/, exports) are their best evaluation's (--load_best_model_at_end)."
    return (f"Saved weights (adapter/, exports): the best evaluation's for {plural(int(counts['best']), 'run')} "
            f"(--load_best_model_at_end), the final epoch's for {plural(int(counts['final']), 'run')} (column "
            "`saved_weights` of results.csv).")


def _score_text(runs: pd.DataFrame) -> str:
    """What a score is, per main metric: `the highest value over epochs of eval_x × 100` / `the lowest ...`."""
    parts = []
    for metric, greater in dict.fromkeys(zip(runs["metric"].dropna(), runs["greater_is_better"].dropna())):
        if metric_scale(metric, bool(greater)) == 100:
            parts.append(f"the highest value over epochs of `{metric}` × 100, as the adaptive LoRA-XS study reports it")
        else:
            parts.append(f"the {'highest' if greater else 'lowest'} value over epochs of `{metric}`")
    return "; ".join(parts) or "the main metric"


def _sources(run_dirs) -> str:
    """`a`, `b` for a few paths; `N paths under `parent`` for many (e.g. a shell glob of run directories)."""
    paths = [Path(p) for p in run_dirs]
    if len(paths) <= 3:  # as given, or relative to here when below it (no machine path in a report)
        return ", ".join(f"`{os.path.relpath(p) if p.is_absolute() and p.is_relative_to(Path.cwd()) else p}`"
                         for p in paths)
    parent = Path(os.path.commonpath([str(p.absolute()) for p in paths]))
    try:
        parent = parent.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{len(paths)} paths under `{parent}` (listed in results.csv, `run_dir`)"


def _write_tables(runs: pd.DataFrame, groups: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """results.csv (one row per run) and configurations.csv (one row per configuration; lists as JSON)."""
    results = out / "results.csv"
    portable(runs).to_csv(results, index=False)  # no absolute path of this machine in a table
    configurations = out / "configurations.csv"
    table = portable(groups)
    for column in ("scores", "seeds"):
        table[column] = table[column].map(json.dumps)
    table.to_csv(configurations, index=False)
    return results, configurations
