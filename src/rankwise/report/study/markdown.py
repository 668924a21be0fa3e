"""The headline study's section (`report --study`): does learned allocation beat uniform rank at the same budget?

Runs are grouped into *arms* (a configuration without its learning rate: the sweep variant's `label`, else
the method and ranks), each run at a few learning rates. Per task and arm one learning rate is chosen on the
selection seeds and reported on the others (`stats.select_learning_rates`). Each arm is then compared with the
uniform baseline (by default the fixed-rank arm whose adapter size is closest to the learned arms' budget) seed by
seed on the reporting seeds: the mean paired difference, its 95% t-interval, a paired t-test and an exact Wilcoxon
signed-rank test, Holm's correction within the study's one family, and the smallest difference the design could
detect. `study_comparisons.csv` and `study_learning_rates.csv` hold every number of the section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import ConfigError
from ..context import ReportContext
from ..figures import kept_figure, save_figure
from ..selection import (COMPARISON_HEADER, comparison_cells, comparison_line, edges_text, method_text,
                         reported_cell, selection_text, write_comparisons, write_learning_rates)
from ..stats import completed_runs, lr_edges, select_learning_rates
from ..text import (DASH, markdown_table, short_matrix_name, short_text, signed, task_name, task_order, thousands,
                    two_digits)
from .analysis import (arm_order, compare_arms, default_baseline, learned_allocations, learned_arms, runs_at,
                       with_arms)
from .figures import draw_learned_ranks, draw_lr_curves, draw_scores

HEADING = "## Learned vs uniform rank at the same budget"


def section(ctx: ReportContext) -> str | None:
    """`rankwise report --study` section hook."""
    if not ctx.options.get("study"):
        return None
    text, figures = study_markdown(ctx.runs, ctx.out, ctx.options.get("study_baseline"),
                                   selection_seeds=ctx.options.get("selection_seeds"),
                                   from_csv=bool(ctx.options.get("from_csv")))
    ctx.figures += figures
    return text


def study_markdown(runs: pd.DataFrame, out: Path, baseline: str | None = None, heading: str = HEADING,
                   selection_seeds=None, from_csv: bool = False) -> tuple[str, list[Path]]:
    """The section's markdown and the files it wrote into `out` (figures; study_comparisons.csv and
    study_learning_rates.csv are written too)."""
    runs = with_arms(runs)
    if baseline is None:
        baseline = default_baseline(runs)
    elif baseline not in set(runs["arm"]):
        raise ConfigError("study_baseline", f"`{baseline}` is not a method of these runs",
                          "Methods: " + "; ".join(f"`{a}`" for a in sorted(set(runs["arm"]))))
    chosen = select_learning_rates(runs, selection_seeds)
    if chosen.empty:
        return f"{heading}\n\nNo completed runs.\n", []
    comparisons = compare_arms(runs, chosen, baseline) if baseline else pd.DataFrame()
    edges = lr_edges(runs, chosen)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_comparisons(comparisons, out / "study_comparisons.csv")
    write_learning_rates(chosen, edges, out / "study_learning_rates.csv")
    tasks = [t for t in task_order(runs["task"]) if t in set(chosen["task"])]
    arms = arm_order(chosen, runs, baseline)
    lines = [heading, "", setup_text(runs), "", selection_text(chosen) + " Scores: the best dev-set value over "
             "epochs × 100 (the adaptive LoRA-XS study's convention); adapter parameters at the final ranks.",
             "", f"**Baseline**: `{baseline}`" + (" (the fixed-rank arm closest in size to the learned "
                                                 "arms' budget)" if baseline else ""),
             "", "### Summary: median ± std over the reporting seeds", "", summary_table(runs, chosen, arms, tasks), ""]
    if not comparisons.empty:
        lines += [method_text(comparisons), ""] + _answer(runs, comparisons, tasks, baseline)
    for task in tasks:
        lines += [f"### {task_name(task)}", "", seed_table(runs, chosen, comparisons, task, arms, baseline), ""]
    lines += ["### Learning-rate grids", "", edges_text(edges), ""]
    figure_lines, figures = _figures(runs, chosen, arms, tasks, baseline, out, from_csv)
    return "\n".join(lines + figure_lines), figures


def setup_text(runs: pd.DataFrame) -> str:
    """The model, training size, epochs and seeds of the runs."""
    def values(field):
        v = runs[field].dropna().unique() if field in runs else []
        return ", ".join(short_text(float(x)) if isinstance(x, (int, float, np.number)) else str(x) for x in sorted(v))

    seeds = sorted(runs["seed"].astype(int).unique())
    return (f"Model `{values('model')}`; training examples per task: {values('max_train_samples') or 'all'}; "
            f"epochs: {values('num_train_epochs')}; seeds: {', '.join(map(str, seeds))}.")


def _answer(runs: pd.DataFrame, comparisons: pd.DataFrame, tasks: list[str], baseline: str) -> list[str]:
    """Per task, each learned arm against the baseline in one line (no lines without learned arms)."""
    answer = []
    for task in tasks:
        c = comparisons[comparisons["task"] == task]
        learned = c[c["arm"].isin(learned_arms(runs))]
        for _, r in learned.iterrows():
            answer.append(comparison_line(r, f"`{r['arm']}`", f"`{baseline}`").replace(
                f"- {task_name(task)}:", f"- **{task_name(task)}**:", 1) + ".")
    return ["### The answer, per task", "", *answer, ""] if answer else []


def summary_table(runs: pd.DataFrame, chosen: pd.DataFrame, arms: list[str], tasks: list[str]) -> str:
    """Method × task: median ± std over the reporting seeds at each (task, arm)'s chosen learning rate, and adapter
    size."""
    picked = chosen[chosen["chosen"]].set_index(["task", "arm"])
    rows = []
    for arm in arms:
        cells = [reported_cell(picked.loc[(task, arm)]) if (task, arm) in picked.index else DASH for task in tasks]
        rows.append([arm, thousands(runs.loc[runs["arm"] == arm, "params"].median()), *cells])
    return markdown_table(["Method", "Adapter params", *[task_name(t) for t in tasks]], rows,
                          ["l", "r", *["l"] * len(tasks)])


def seed_table(runs: pd.DataFrame, chosen: pd.DataFrame, comparisons: pd.DataFrame, task: str, arms: list[str],
               baseline: str | None) -> str:
    """One task: every arm × learning rate with its per-seed scores (selection seeds in italics), the median over
    the selection seeds; the chosen rate in bold with its reported median and its comparison to the baseline."""
    seeds = sorted(completed_runs(runs).loc[lambda d: d["task"] == task, "seed"].astype(int).unique())
    part = chosen[chosen["task"] == task]
    rows = []
    for arm in arms:
        for _, r in part[part["arm"] == arm].sort_values("learning_rate").iterrows():
            g = runs_at(runs, task, arm, r["learning_rate"])
            by_seed = dict(zip(g["seed"].astype(int), g["score"]))
            held = set(r["held_out"])
            cells = [DASH if s not in by_seed else (f"*{by_seed[s]:.2f}*" if s in held else f"{by_seed[s]:.2f}")
                     for s in seeds]
            selection = DASH if np.isnan(r["selection_median"]) else f"{r['selection_median']:.2f}"
            lr = short_text(float(r["learning_rate"]))
            if r["chosen"]:
                tail = [f"**{lr}**", *cells, selection, f"**{reported_cell(r)}**",
                        *_comparison_cells(comparisons, task, arm, baseline)]
            else:
                tail = [lr, *cells, selection, "", *[""] * len(COMPARISON_HEADER)]
            rows.append([arm, *tail])
    header = ["Method", "LR", *[f"seed {s}" for s in seeds], "Median on selection seeds", "Reported median ± std",
              *COMPARISON_HEADER]
    return markdown_table(header, rows, ["l", "r", *["r"] * len(seeds), "r", "l", "r", "l", "r", "l", "r", "l"]) + (
        "\n\nItalics: the selection seeds (they chose the learning rate and are never reported); bold: the chosen rate.")


def _comparison_cells(comparisons: pd.DataFrame, task: str, arm: str, baseline: str | None) -> list[str]:
    """The comparison cells of an arm at its chosen learning rate (`baseline` for the baseline)."""
    if arm == baseline:
        return ["", "", "", "", "", "baseline"]
    c = comparisons[(comparisons["task"] == task) & (comparisons["arm"] == arm)] \
        if not comparisons.empty else comparisons
    if c.empty:
        return [""] * len(COMPARISON_HEADER)
    return comparison_cells(c.iloc[0])


def _figures(runs: pd.DataFrame, chosen: pd.DataFrame, arms: list[str], tasks: list[str], baseline: str | None,
             out: Path, from_csv: bool = False) -> tuple[list[str], list[Path]]:
    """Draw the section's figures into `out`: (their markdown lines, their paths). From a results.csv the learned
    ranks and allocation diagnostics (they need ranks.json and allocation.jsonl) are not redrawn; a figure an
    earlier report left is linked and said to be kept."""
    figures = [save_figure(draw_scores(runs, chosen, arms, tasks, baseline), out / "study_scores.png")]
    lines = ["![Per-seed scores on the reporting seeds per method and task](study_scores.png)", ""]
    if (chosen.groupby(["task", "arm"]).size() > 1).any():
        figures.append(save_figure(draw_lr_curves(chosen, arms, tasks), out / "study_learning_rates.png"))
        lines += ["Every learning rate of every method, median over all its seeds (ringed: the rate chosen on the "
                  "selection seeds; a ring at the end of a line is a choice at the edge of its grid):", "",
                  "![Score against learning rate](study_learning_rates.png)", ""]
    allocations = learned_allocations(runs, chosen, tasks)
    grids = {task_name(a["task"]) + (f"\n{a['arm']}" if a["arms_in_task"] > 1 else ""): a["grid"]
             for a in allocations}
    if grids:
        figures.append(save_figure(draw_learned_ranks(grids), out / "study_learned_ranks.png"))
        lines += ["Final ranks of the learned runs (mean over seeds at the chosen learning rate), by layer and "
                  "matrix:", "", "![Learned ranks by layer and matrix](study_learned_ranks.png)", ""]
    elif from_csv and learned_arms(runs):
        lines += kept_figure(out, "study_learned_ranks.png", "Learned ranks by layer and matrix")
        lines += ["What training did to the allocation (allocation.jsonl) is not recomputed from results.csv.", ""]
    diagnostics = [{"task": a["task"], "arm": a["arm"], "lr": a["lr"], **a["diagnostics"]}
                   for a in allocations if a["diagnostics"]]
    if diagnostics:
        lines += [_DIAGNOSTICS_TEXT, "", diagnostics_table(diagnostics), ""]
    return lines, figures


_DIAGNOSTICS_TEXT = (
    "What training did to the allocation (allocation.jsonl, continuous ranks at the first and last step): "
    "**moved** = |final − initial| per matrix (mean / max over matrices and seeds); **corr(final, init)** near 1 "
    "means the final allocation is mostly its (random) initialisation (– for a flat initialisation); **seed "
    "agreement** = mean correlation, over pairs of seeds, of the change final − initial (near 0: the direction is "
    "seed noise; clearly above 0: a reproducible preference); the last column is the mean change per matrix kind.")


def diagnostics_table(diagnostics: list[dict]) -> str:
    """One row per task and learned arm: what training did to its allocation (`allocation_diagnostics`)."""
    return markdown_table(["Task", "Learned method", "LR", "Seeds", "Moved (mean / max)", "corr(final, init)",
                           "Seed agreement", "Change by matrix kind"],
                          [[task_name(d["task"]), d["arm"], short_text(d["lr"]), str(d["runs"]),
                            f"{d['moved']:.2f} / {d['moved_max']:.2f}", two_digits(d["init_corr"]),
                            two_digits(d["agreement"]),
                            ", ".join(f"{short_matrix_name(k)} {signed(v)}" for k, v in d["by_kind"].items())]
                           for d in diagnostics], ["l", "l", "r", "r", "l", "r", "r", "l"])
