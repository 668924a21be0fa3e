"""`rankwise report`: run directories → report.md, results.csv, configurations.csv and PNG figures.

    aggregate.py   run directories → one row per run (load_runs) → one row per configuration (group_runs)
    tables.py      markdown tables (the adaptive LoRA-XS study's layout for learned allocation)
    plots.py       figures

Study sections (the LR-ratio study, instruction tuning, ...) plug in with `register_section(fn)`: `fn`
gets the `ReportContext` (runs, configurations, output folder, command-line options) and returns
markdown (or None to add nothing); it may write its own figures into `ctx.out`. They are appended after
the core sections, in registration order.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import ConfigError, RunDirError
from ..methods import allocates_ranks, trains_adapter
from ..rundir import check_writable_path
from .aggregate import group_runs, load_runs, rank_text
from .tables import adaptive_table, configurations_table, group_key, groups_table, median_std, not_completed_table

# In the GLUE paper's order, which is the order reports show tasks in.
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "alpaca": "Alpaca"}


def task_order(tasks) -> list[str]:
    """The distinct tasks of `tasks` in GLUE's order (CoLA, SST-2, MRPC, STS-B, …, RTE); others after them, in
    the order they first appear."""
    known = list(TASK_NAMES)
    distinct = list(dict.fromkeys(tasks))
    return sorted(distinct, key=lambda t: (known.index(t) if t in known else len(known), distinct.index(t)))


# Fields shown as columns of the adaptive table; other fields that vary between learned configurations
# split it into one table per value combination (as the study's reports did, e.g. per LR scheduler).
ADAPTIVE_COLUMNS = {"task", "rank_min", "rank_max", "alpha_min", "alpha_max", "rank_allocation_lr", "rank_average",
                    "label"}


@dataclass
class ReportContext:
    runs: pd.DataFrame  # one row per run (load_runs), all tasks
    groups: pd.DataFrame  # one row per configuration over seeds (group_runs), all tasks
    out: Path
    options: dict = field(default_factory=dict)  # command-line options, e.g. {"lr_ratio": True}
    figures: list[Path] = field(default_factory=list)


Section = Callable[[ReportContext], "str | None"]
EXTRA_SECTIONS: list[Section] = []


def study_sections() -> list[Section]:
    """The built-in study sections: layer-wise placement (alpaca runs, automatic), the LR-ratio analysis
    (with `--lr_ratio`) and learned vs uniform at the same budget (with `--study`). Imported here, not at the
    top, because they import this package."""
    from . import lr_ratio, placement, study

    return [placement.section, lr_ratio.section, study.section]


def register_section(section: Section) -> Section:
    """Add a study section to every report (usable as a decorator)."""
    if section not in EXTRA_SECTIONS:
        EXTRA_SECTIONS.append(section)
    return section


def resolve_baselines(groups: pd.DataFrame, baseline: str | None) -> list[str]:
    """Labels of the baseline configurations: those whose label is `baseline`, else those matching it as a
    pandas query (e.g. "allocation == 'uniform' and rank == 25"); by default the fixed-rank (uniform)
    configurations when the report also holds adapters with another allocation."""
    if groups.empty:
        return []
    if baseline:
        if (groups["label"] == baseline).any():
            return [baseline]
        try:
            matched = groups.query(baseline, engine="python")
        except Exception as exc:  # not a label and not a valid query
            raise ConfigError("baseline", f"`{baseline}` is neither a configuration label nor a valid query ({exc})",
                              "Labels: " + "; ".join(f"`{l}`" for l in groups["label"])) from None
        if matched.empty:
            raise ConfigError("baseline", f"`{baseline}` matches no configuration",
                              "Labels: " + "; ".join(f"`{l}`" for l in groups["label"]))
        return matched["label"].tolist()
    adapters = groups[groups["method"].map(trains_adapter)]
    uniform = adapters[(adapters.get("allocation") == "uniform") & ~adapters["method"].map(allocates_ranks)
                       & (adapters["init"].fillna("default") == "default" if "init" in adapters else True)]
    # Fixed-rank runs are the baseline of other allocations; a report of fixed-rank and full fine-tuning runs
    # only (e.g. an LR sweep) has nothing to hold them against.
    return uniform["label"].tolist() if 0 < len(uniform) < len(adapters) else []


def task_name(task: str) -> str:
    """`cola` -> `CoLA`; an unknown task as it is."""
    return TASK_NAMES.get(task, task)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _section_fields(learned: pd.DataFrame) -> list[str]:
    from .aggregate import IDENTITY_FIELDS

    out = []
    for f in IDENTITY_FIELDS:
        if f in ADAPTIVE_COLUMNS or f not in learned:
            continue
        if f in ("memory_start", "memory_end") and learned["rank_average"].notna().all():
            continue
        if learned[f].astype(str).nunique() > 1:
            out.append(f)
    return out


def _fmt(value) -> str:
    from .aggregate import _g

    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else _g(value)


def _median_seed_run(runs: pd.DataFrame, label: str) -> pd.Series | None:
    ok = runs[(runs["label"] == label) & (runs["status"] == "completed")].dropna(subset=["score"])
    if ok.empty:
        return None
    median = ok["score"].median()
    return ok.iloc[(ok["score"] - median).abs().argsort(kind="stable").iloc[0]]


def _schedule_key(row) -> tuple:
    fields = ("alpha_min", "alpha_max", "alpha_scheduler", "memory_start", "memory_end", "epochs_memory_start",
              "epochs_memory_start_to_end", "rank_average", "epochs_rank_discrete", "num_train_epochs",
              "max_train_samples", "per_device_train_batch_size")
    return tuple(str(row.get(f)) for f in fields)


def _schedule_label(row) -> str:
    alpha = f"α {_fmt(row['alpha_min'])}→{_fmt(row['alpha_max'])} ({row['alpha_scheduler']})"
    if row.get("memory_start") is not None and not (isinstance(row["memory_start"], float)
                                                     and math.isnan(row["memory_start"])):
        budget = f"M {row['memory_start']:,.0f}→{row['memory_end']:,.0f}"
    else:
        budget = f"M at rank_average {_fmt(row['rank_average'])}"
    return f"{alpha}; {budget}; {_plural(int(row['num_train_epochs']), 'epoch')}"


def _task_sections(ctx: ReportContext, task: str, prefix: str, heading: str, group_by: list[str] | None,
                   baseline: str | None, top: int) -> list[str]:
    from . import plots

    runs = ctx.runs[ctx.runs["task"] == task]
    groups = ctx.groups[ctx.groups["task"] == task].reset_index(drop=True)
    out = []
    try:
        baseline_labels = resolve_baselines(groups, baseline)
    except ConfigError:  # matched configurations of another task only
        baseline_labels = []
    baselines = {label: float(groups.loc[groups["label"] == label, "median"].iloc[0]) for label in baseline_labels}
    name = task_name(task)
    task_title = f"{name}: " if task else ""

    learned = groups[groups["allocation"] == "learned"]
    if not learned.empty:
        out.append(f"{heading} Learned rank allocation ({_plural(len(learned), 'configuration')})\n")
        out.append("The adaptive LoRA-XS study's table: one row per configuration over its seeds, best first. "
                   "**LR** is the learning rate of the allocation weights (`rank_allocation_lr`), as in the study.")
        splits = _section_fields(learned)
        derived_any = False
        if splits:
            out.append(f"One table per value of {', '.join(f'`{s}`' for s in splits)}, which the table's columns "
                       "do not show.")
            for key, part in learned.groupby(splits, sort=False, dropna=False):
                key = key if isinstance(key, tuple) else (key,)
                title = ", ".join(f"{s} = {_fmt(v)}" for s, v in zip(splits, key))
                table, derived = adaptive_table(part)
                derived_any |= derived
                out.append(f"\n**{title}**\n\n{table}")
        else:
            table, derived_any = adaptive_table(learned)
            out.append("\n" + table)
        if derived_any:
            out.append("\n\\* no `rank_average` (a memory schedule sets the budget): the mean final hard rank over "
                       "the target matrices, median over seeds.")
        out.append("")

    out.append(f"{heading} All configurations\n")
    if baselines:
        described = "; ".join(f"**{label}** ({median_std(*groups.loc[groups['label'] == label, ['median', 'std']].iloc[0])})"
                              for label in baselines)
        out.append(f"Baseline{'s' if len(baselines) > 1 else ''}: {described}. Δ is the difference of medians "
                   "(configuration − baseline).\n")
    out.append(configurations_table(groups, baselines))
    out.append("\nRanks: `r25` uniform rank; `16→4` linear decay; `5–30, avg 20` learned between rank_min and "
               "rank_max at an average rank of 20 (M: a budget schedule). Adapter params: trainable adapter "
               "parameters at the final ranks (classification head not included). LR: the adapter's learning "
               "rate. Time/run: median wall time of one run.\n")

    if group_by:
        from .aggregate import group_runs as _group

        from .aggregate import applicable

        by_group = _group(runs, group_by)
        keyed = groups.copy()
        for b in group_by:
            keyed[b] = applicable(keyed, b)
        best = {}
        for _, g in keyed.iterrows():  # configurations are sorted best first
            best.setdefault(group_key(g.get(b) for b in group_by), g)
        out.append(f"{heading} By {', '.join(f'`{b}`' for b in group_by)}\n")
        out.append(groups_table(by_group, group_by, best) + "\n")

    figure = plots.comparison_boxplot(runs, groups, ctx.out / f"comparison_boxplot{prefix}.png", group_by, baselines,
                                      task_title)
    if figure:
        ctx.figures.append(figure)
        out.append(f"{heading} Comparison over seeds\n\n![Configurations compared over seeds]({figure.name})\n")
    figure = plots.eval_curves(runs, groups, ctx.out / f"eval_curves{prefix}.png", list(baselines), top, task_title)
    if figure:
        ctx.figures.append(figure)
        out.append(f"{heading} Validation metric per epoch\n\n![Validation metric per epoch]({figure.name})\n")

    best_learned = learned[learned["n"] > 0]
    focus = best_learned.iloc[0] if not best_learned.empty else None
    if focus is None:  # no learned runs: AdaLoRA's or EVA's ranks, else the best non-uniform static configuration
        adaptive = groups[(groups["n"] > 0) & (groups["method"].map(allocates_ranks) | (
            groups["init"].fillna("default") == "eva" if "init" in groups else False))]
        static = groups[(groups["n"] > 0) & ~groups["allocation"].isin(["uniform", "learned"])
                        & groups["method"].map(trains_adapter)]
        focus = adaptive.iloc[0] if not adaptive.empty else static.iloc[0] if not static.empty else None
    if focus is not None:
        label = focus["label"]
        dirs = runs.loc[(runs["label"] == label) & (runs["status"] == "completed"), "run_dir"].tolist()
        kind = ("best learned configuration" if focus["allocation"] == "learned" else
                "best AdaLoRA / EVA configuration" if allocates_ranks(focus["method"]) or focus.get("init") == "eva"
                else "best non-uniform configuration")
        out.append(f"{heading} Ranks of the {kind}: {label}\n")
        figure = plots.final_ranks(dirs, ctx.out / f"final_ranks{prefix}.png",
                                   f"{task_title}final hard rank per target matrix — {label}")
        if figure:
            ctx.figures.append(figure)
            out.append(f"![Final ranks per matrix]({figure.name})\n")
        if focus["allocation"] == "learned" or allocates_ranks(focus["method"]):
            run = _median_seed_run(runs, label)
            figure = plots.allocation_heatmap(run["run_dir"], ctx.out / f"allocation_heatmap{prefix}.png",
                                              f"{task_title}ranks over training — {label}, seed {run['seed']} "
                                              f"(the median seed)")
            if figure:
                ctx.figures.append(figure)
                out.append(f"![Allocation over training]({figure.name})\n")
                out.append(f"Rows: the adapted matrices in model order (L = layer); left: the continuous ranks the "
                           f"allocation weights give under the current budget; right: the hard ranks used at "
                           f"evaluation. Run: `{run['run_name']}`.\n" if not allocates_ranks(focus["method"]) else
                           f"Rows: the adapted matrices in model order (L = layer); both panels: the rank triplets "
                           f"AdaLoRA's masks keep. Run: `{run['run_name']}`.\n")

    if not learned.empty:
        entries, seen = [], set()
        for _, g in learned.iterrows():
            run = _median_seed_run(runs, g["label"])
            if run is None or _schedule_key(g) in seen:
                continue
            seen.add(_schedule_key(g))
            entries.append((_schedule_label(g), run["run_dir"]))
        figure = plots.schedules(entries, ctx.out / f"schedules{prefix}.png",
                                 f"{task_title}schedules of the learned configurations (per optimiser step)")
        if figure:
            ctx.figures.append(figure)
            out.append(f"{heading} Alpha and budget schedules\n\n![Alpha and budget schedules]({figure.name})\n")

    bad = runs[runs["status"] != "completed"]
    if not bad.empty:
        out.append(f"{heading} Runs that did not complete ({len(bad)})\n")
        out.append("Listed here and left out of every median, std and figure above.\n")
        out.append(not_completed_table(bad) + "\n")
    return out


def _score_text(runs: pd.DataFrame) -> str:
    """What a score is, per main metric: `the highest value over epochs of eval_x × 100` / `the lowest ...`."""
    from .aggregate import metric_scale

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
    if len(paths) <= 3:
        return ", ".join(f"`{p}`" for p in paths)
    parent = Path(os.path.commonpath([str(p.absolute()) for p in paths]))
    try:
        parent = parent.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"{len(paths)} paths under `{parent}` (listed in results.csv, `run_dir`)"


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

    out = check_writable_path(out, "--out")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out: `{out}` is a file; the report needs a folder. Choose a new or existing folder")
    runs = load_runs(run_dirs, warn=note)
    if runs.empty:
        raise RunDirError(f"no finished runs (run directories with summary.json) under {', '.join(map(str, run_dirs))}")
    from .aggregate import check_fields

    if group_by:
        check_fields(runs, group_by, "group_by")
    groups = group_runs(runs)
    resolve_baselines(groups, baseline)  # raises for a baseline that matches nothing, before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(runs, groups, out, dict(options or {}))

    tasks = task_order(runs["task"])
    models = ", ".join(dict.fromkeys(str(m) for m in runs["model"]))
    statuses = runs["status"].value_counts()
    title = " · ".join(task_name(t) for t in tasks)
    lines = [f"# rankwise report: {title} ({models})\n",
             f"{_plural(len(runs), 'run')} in {_plural(len(groups), 'configuration')} "
             f"({', '.join(f'{n} {s}' for s, n in statuses.items())}), read from " + _sources(run_dirs) + ".\n",
             f"**Median ± Std**: over the seeds of a configuration, of {_score_text(runs)} (the model is evaluated "
             f"after every epoch, with hard ranks). Std is the sample standard deviation (ddof=1, i.e. "
             f"`numpy.std(x, ddof=1)`); `–` for a single seed. Diverged and failed runs are listed separately and "
             f"never enter a statistic. `results.csv` has every run (best and final-epoch values), "
             f"`configurations.csv` every configuration.\n"]
    if warnings:
        lines.append("Skipped: " + "; ".join(warnings) + "\n")
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
        lines += _task_sections(ctx, task, prefix, heading, group_by, baseline, top)

    report = out / "report.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    results = out / "results.csv"
    runs.to_csv(results, index=False)
    configurations = out / "configurations.csv"
    table = groups.copy()
    for column in ("scores", "seeds"):
        table[column] = table[column].map(json.dumps)
    table.to_csv(configurations, index=False)
    return {"report": report, "results": results, "configurations": configurations, "figures": ctx.figures,
            "runs": len(runs), "configurations_count": len(groups), "warnings": warnings}


__all__ = ["build_report", "register_section", "ReportContext", "EXTRA_SECTIONS", "load_runs", "group_runs",
           "resolve_baselines", "rank_text"]
