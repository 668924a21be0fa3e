"""The headline study's section (`report --study`): does learned allocation beat uniform rank at the same budget?

Runs are grouped into *arms* (a configuration without its learning rate: the sweep variant's `label`, else
the method and ranks), each run at a few learning rates over the same seeds. Per task and arm the learning
rate with the best median over seeds is kept. Each arm is then compared with the uniform baseline (by
default the fixed-rank arm whose adapter size is closest to the learned arms' budget) seed by seed: the
mean paired difference, its 95% bootstrap interval, a paired t-test and an exact Wilcoxon signed-rank
test, with Holm's correction over every comparison in the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import ConfigError
from ..context import ReportContext
from ..figures import save_figure
from ..stats import ALPHA, BOOTSTRAP, completed_runs, select_learning_rates
from ..text import (DASH, is_missing, markdown_table, median_std, p_text, short_matrix_name, short_text, signed,
                    task_name, task_order, thousands, two_digits)
from .analysis import (arm_order, compare_arms, default_baseline, learned_allocations, learned_arms, runs_at,
                       with_arms)
from .figures import draw_learned_ranks, draw_lr_curves, draw_scores

HEADING = "## Learned vs uniform rank at the same budget"


def section(ctx: ReportContext) -> str | None:
    """`rankwise report --study` section hook."""
    if not ctx.options.get("study"):
        return None
    text, figures = study_markdown(ctx.runs, ctx.out, ctx.options.get("study_baseline"))
    ctx.figures += figures
    return text


def study_markdown(runs: pd.DataFrame, out: Path, baseline: str | None = None,
                   heading: str = HEADING) -> tuple[str, list[Path]]:
    """The section's markdown and the figures it wrote into `out`."""
    runs = with_arms(runs)
    if baseline is None:
        baseline = default_baseline(runs)
    elif baseline not in set(runs["arm"]):
        raise ConfigError("study_baseline", f"`{baseline}` is not a method of these runs",
                          "Methods: " + "; ".join(f"`{a}`" for a in sorted(set(runs["arm"]))))
    chosen = select_learning_rates(runs)
    if chosen.empty:
        return f"{heading}\n\nNo completed runs.\n", []
    comparisons = compare_arms(runs, chosen, baseline) if baseline else pd.DataFrame()
    tasks = [t for t in task_order(runs["task"]) if t in set(chosen["task"])]
    arms = arm_order(chosen, runs, baseline)
    lines = [heading, "", setup_text(runs), "",
             grid_sentence(chosen) + " Scores: the best dev-set value over epochs × 100 (the adaptive "
             "LoRA-XS study's convention); adapter parameters at the final ranks.",
             "", f"**Baseline**: `{baseline}`" + (" (the fixed-rank arm closest in size to the learned "
                                                 "arms' budget)" if baseline else ""),
             "", "### Summary: median ± std over seeds", "", summary_table(runs, chosen, arms, tasks), ""]
    if not comparisons.empty:
        lines += [_tests_text(comparisons), ""] + _answer(runs, comparisons, tasks, baseline)
    for task in tasks:
        lines += [f"### {task_name(task)}", "", seed_table(runs, chosen, comparisons, task, arms, baseline), ""]
    figure_lines, figures = _figures(runs, chosen, arms, tasks, baseline, Path(out))
    return "\n".join(lines + figure_lines), figures


def setup_text(runs: pd.DataFrame) -> str:
    """The model, training size, epochs and seeds of the runs."""
    def values(field):
        v = runs[field].dropna().unique() if field in runs else []
        return ", ".join(short_text(float(x)) if isinstance(x, (int, float, np.number)) else str(x) for x in sorted(v))

    seeds = sorted(runs["seed"].astype(int).unique())
    return (f"Model `{values('model')}`; training examples per task: {values('max_train_samples') or 'all'}; "
            f"epochs: {values('num_train_epochs')}; seeds: {', '.join(map(str, seeds))}.")


def grid_sentence(table: pd.DataFrame) -> str:
    """How many learning rates each method had, and how the one reported was chosen (`table`: from
    `select_learning_rates`)."""
    sizes = table.groupby(["task", "arm"], sort=False).size()
    if (sizes == 1).all():
        return "Each method ran at one learning rate per task, so no learning rate was selected."
    common = sizes.mode().iloc[0]
    text = (f"Each method ran at {common} learning rate{'s' if common > 1 else ''} per task"
            + ("" if (sizes == common).all() else " (" + "; ".join(
                f"{n} for `{arm}` on {task_name(task)}" for (task, arm), n in sizes.items() if n != common)
               + ")")
            + "; the one with the best median over seeds is used (bold below), on the same dev set the scores come "
            "from, so every number is optimistic by that selection" + (", a little more so where a method had "
                                                                       "more learning rates" if sizes.nunique() > 1
                                                                       else ", equally for every method") + ".")
    full = table.groupby(["task", "arm"])["n"].transform("max")
    partial = table[table["n"] < full]
    if not partial.empty:
        text += (" Learning rates with fewer seeds than their method's others are shown but not chosen: "
                 + "; ".join(f"`{r.arm}` on {task_name(r.task)} at {r.learning_rate:g} (n={r.n})"
                             for r in partial.itertuples()) + ".")
    return text


def _tests_text(comparisons: pd.DataFrame) -> str:
    """How the comparisons were made and when a difference is called significant."""
    n_tests = int(comparisons["p_t"].notna().sum())
    n_seeds = int(comparisons["n"].max())
    return (f"Comparisons are paired by seed: Δ = method − baseline (mean over seeds), 95% percentile "
            f"bootstrap interval of that mean ({BOOTSTRAP:,} resamples), two-sided paired t-test, the "
            f"same p-value after Holm's correction over the {n_tests} comparisons of this report, and "
            f"the exact Wilcoxon signed-rank test (with {n_seeds} paired seeds its smallest possible p is "
            f"{2 / 2 ** n_seeds:.3g}; it is a check on the t-test's normality assumption). A "
            f"difference is called significant when the Holm-adjusted p < {ALPHA} and the interval "
            "excludes 0.")


def _answer(runs: pd.DataFrame, comparisons: pd.DataFrame, tasks: list[str], baseline: str) -> list[str]:
    """Per task, each learned arm against the baseline in one line (no lines without learned arms)."""
    answer = []
    for task in tasks:
        c = comparisons[comparisons["task"] == task]
        learned = c[c["arm"].isin(learned_arms(runs))]
        for _, r in learned.iterrows():
            answer.append(f"- **{task_name(task)}**: `{r['arm']}` − `{baseline}` = "
                          f"{signed(r['mean_diff'])} (95% CI {signed(r['ci_low'])} to {signed(r['ci_high'])}, "
                          f"Holm p {p_text(r['p_holm'])}, n={r['n']}): **{r['verdict']}**.")
    return ["### The answer, per task", "", *answer, ""] if answer else []


def summary_table(runs: pd.DataFrame, chosen: pd.DataFrame, arms: list[str], tasks: list[str]) -> str:
    """Method × task: median ± std over seeds at each (task, arm)'s chosen learning rate, and adapter size."""
    picked = chosen[chosen["chosen"]].set_index(["task", "arm"])
    rows = []
    for arm in arms:
        cells = []
        for task in tasks:
            if (task, arm) in picked.index:
                r = picked.loc[(task, arm)]
                cells.append(f"{median_std(r['median'], r['std'])} (n={int(r['n'])})")
            else:
                cells.append(DASH)
        rows.append([arm, thousands(runs.loc[runs["arm"] == arm, "params"].median()), *cells])
    return markdown_table(["Method", "Adapter params", *[task_name(t) for t in tasks]], rows,
                          ["l", "r", *["l"] * len(tasks)])


def seed_table(runs: pd.DataFrame, chosen: pd.DataFrame, comparisons: pd.DataFrame, task: str, arms: list[str],
               baseline: str | None) -> str:
    """One task: every arm × learning rate with its per-seed scores; the chosen learning rate in bold with
    its comparison to the baseline."""
    seeds = sorted(completed_runs(runs).loc[lambda d: d["task"] == task, "seed"].astype(int).unique())
    part = chosen[chosen["task"] == task]
    rows = []
    for arm in arms:
        for _, r in part[part["arm"] == arm].sort_values("learning_rate").iterrows():
            g = runs_at(runs, task, arm, r["learning_rate"])
            by_seed = dict(zip(g["seed"].astype(int), g["score"]))
            cells = [DASH if s not in by_seed else f"{by_seed[s]:.2f}" for s in seeds]
            stat = median_std(r["median"], r["std"])
            if r["chosen"]:
                tail = [f"**{stat}**", *_comparison_cells(comparisons, task, arm, baseline)]
            else:
                tail = [stat, "", "", "", ""]
            rows.append([arm, short_text(float(r["learning_rate"])), *cells, *tail])
    header = ["Method", "LR", *[f"seed {s}" for s in seeds], "Median ± Std", "Δ mean", "95% CI",
              "p (t / Holm / Wilcoxon)", "vs baseline"]
    return markdown_table(header, rows, ["l", "r", *["r"] * len(seeds), "l", "r", "l", "l", "l"])


def _comparison_cells(comparisons: pd.DataFrame, task: str, arm: str, baseline: str | None) -> list[str]:
    """Δ mean, 95% CI, p-values and verdict of an arm at its chosen learning rate."""
    if arm == baseline:
        return ["", "", "", "baseline"]
    c = comparisons[(comparisons["task"] == task) & (comparisons["arm"] == arm)] \
        if not comparisons.empty else comparisons
    if c.empty:
        return ["", "", "", ""]
    c = c.iloc[0]
    ci = DASH if is_missing(c["ci_low"]) else f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
    p = f"{p_text(c['p_t'])} / {p_text(c['p_holm'])} / {p_text(c['p_wilcoxon'])}"
    return [signed(c["mean_diff"]), ci, p, c["verdict"]]


def _figures(runs: pd.DataFrame, chosen: pd.DataFrame, arms: list[str], tasks: list[str], baseline: str | None,
             out: Path) -> tuple[list[str], list[Path]]:
    """Draw the section's figures into `out`: (their markdown lines, their paths)."""
    figures = [save_figure(draw_scores(runs, chosen, arms, tasks, baseline), out / "study_scores.png")]
    lines = ["![Per-seed scores per method and task](study_scores.png)", ""]
    if (chosen.groupby(["task", "arm"]).size() > 1).any():
        figures.append(save_figure(draw_lr_curves(chosen, arms, tasks), out / "study_learning_rates.png"))
        lines += ["Every learning rate of every method (a ringed point at the end of its line is a best learning "
                  "rate at the edge of its grid):", "",
                  "![Score against learning rate](study_learning_rates.png)", ""]
    allocations = learned_allocations(runs, chosen, tasks)
    grids = {task_name(a["task"]) + (f"\n{a['arm']}" if a["arms_in_task"] > 1 else ""): a["grid"]
             for a in allocations}
    if grids:
        figures.append(save_figure(draw_learned_ranks(grids), out / "study_learned_ranks.png"))
        lines += ["Final ranks of the learned runs (mean over seeds at the chosen learning rate), by layer and "
                  "matrix:", "", "![Learned ranks by layer and matrix](study_learned_ranks.png)", ""]
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
