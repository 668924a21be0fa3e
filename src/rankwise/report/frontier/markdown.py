"""The budget frontier section (automatic when some arm ran at two adapter sizes or more on a task): per task a
figure of score against adapter parameters, a table of every arm at every budget at its own best learning rate
with its seed-paired difference to uniform at the same budget, and the parameters each arm needs to reach uniform's
score at uniform's largest budget. If no arm beats uniform anywhere, it says so, with the intervals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..aggregate import metric_scale
from ..context import ReportContext
from ..figures import save_figure
from ..stats import ALPHA, BOOTSTRAP
from ..text import (DASH, is_missing, markdown_table, median_std, p_text, plural, short_text, signed, task_name,
                    task_order, thousands)
from .analysis import (SAME_BUDGET, budget_comparisons, frontier_points, frontier_runs, parameters_needed,
                       references, varies_budget)
from .figures import draw_frontier

HEADING = "## Budget frontier: score against adapter size"
EDGE_MARKS = {"highest": " ↑", "lowest": " ↓", "only": " (only)"}


def section(ctx: ReportContext) -> str | None:
    """`rankwise report` section hook: nothing unless some arm varies its budget on some task."""
    frame = frontier_runs(ctx.runs)
    tasks = [t for t in task_order(frame["task"]) if t in varies_budget(frame)] if len(frame) else []
    if not tasks:
        return None
    markdown = frontier_markdown(frame[frame["task"].isin(tasks)], tasks, Path(ctx.out))
    ctx.add_linked_figures(markdown)
    return markdown


def frontier_markdown(frame: pd.DataFrame, tasks: list[str], out: Path) -> str:
    """The section for `frame` (`frontier_runs` rows); figures go to `out`."""
    points, chosen = frontier_points(frame)
    comparisons = budget_comparisons(frame, points, chosen)
    lines = [HEADING, "", intro_text(comparisons), "", *verdict_lines(points, comparisons), ""]
    for task in tasks:
        lines += task_part(frame, points, comparisons, task, out)
    return "\n".join(lines).rstrip() + "\n"


def intro_text(comparisons: pd.DataFrame) -> str:
    """What a point is, how its learning rate was chosen and how it is compared with uniform."""
    text = ("Each *arm* (a configuration without its budget: method, allocation and their settings) is shown at "
            "each budget at its own best learning rate, the one with the best median over seeds, chosen on the dev "
            "set the scores come from (so every point is optimistic by that selection). Adapter parameters are "
            "counted at the final ranks (median over the seeds).")
    if comparisons.empty:
        return text
    tests = int(comparisons["p_t"].notna().sum())
    return text + (f" Δ = arm − uniform at the same budget (the uniform point of the same method, else of another, "
                   f"within {SAME_BUDGET:.0%} of its adapter size), paired by seed: the mean difference, its 95% "
                   f"percentile bootstrap interval ({BOOTSTRAP:,} resamples) and the paired t-test's p after Holm's "
                   f"correction over the {plural(tests, 'test')} of this section (a difference that is the same on "
                   f"every seed has no t-test). An arm beats uniform when the Holm-adjusted p < {ALPHA} and the "
                   "interval excludes 0.")


def verdict_lines(points: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    """The answer first: which arms beat (or lose to) uniform at which budgets; if none beats it, every interval."""
    if comparisons.empty:
        return ["No arm has a uniform point at its budget, so none is compared with uniform."]
    better = comparisons[comparisons["verdict"] == "better"]
    worse = comparisons[comparisons["verdict"] == "worse"]
    if better.empty:
        lines = [f"**No arm beats uniform at any budget**: none of the {len(comparisons)} differences to uniform at "
                 f"the same budget has a Holm-adjusted p < {ALPHA} with a 95% interval excluding 0. The intervals:",
                 "", *[_comparison_line(points, r) for _, r in comparisons.iterrows()]]
        return lines
    lines = ["**Beats uniform at the same budget:**", "", *[_comparison_line(points, r) for _, r in better.iterrows()]]
    if len(worse):
        lines += ["", "**Worse than uniform at the same budget:**", "",
                  *[_comparison_line(points, r) for _, r in worse.iterrows()]]
    rest = len(comparisons) - len(better) - len(worse)
    return lines + ([] if not rest else ["", f"No significant difference in the other {plural(rest, 'comparison')} "
                                             "(intervals in the tables below)."])


def _comparison_line(points: pd.DataFrame, c: pd.Series) -> str:
    """`- STS-B: `LoRA-XS learned` at 192 parameters (1–12, avg 4) − `LoRA-XS uniform` r4: +0.12 (95% CI ...)`."""
    by_point = points.set_index(["task", "point"])
    arm, ref = by_point.loc[(c["task"], c["point"])], by_point.loc[(c["task"], c["reference"])]
    ci = DASH if is_missing(c["ci_low"]) else f"{signed(c['ci_low'])} to {signed(c['ci_high'])}"
    return (f"- {task_name(c['task'])}: `{arm['arm']}` at {thousands(arm['params'])} parameters ({arm['budget']}) "
            f"− `{ref['arm']}` {ref['budget']}: {signed(c['mean_diff'])} (95% CI {ci}, Holm p {p_text(c['p_holm'])}, "
            f"n={c['n']})")


def task_part(frame: pd.DataFrame, points: pd.DataFrame, comparisons: pd.DataFrame, task: str,
              out: Path) -> list[str]:
    """One task: the figure, the table of points, the learning rates at a grid's edge, the parameters needed."""
    part = points[points["task"] == task]
    arms = arm_order(part)
    refs = references(points, task)
    name = f"frontier_{task}.png"
    metric = frame.loc[frame["task"] == task, ["metric", "greater_is_better"]].dropna().iloc[0]
    save_figure(draw_frontier(part, arms, score_label(metric["metric"], bool(metric["greater_is_better"])),
                              f"{task_name(task)}: score against adapter size, each point at its best learning rate",
                              refs[-1] if refs else None), out / name)
    lines = [f"### {task_name(task)}", "", f"![Score against adapter parameters on {task_name(task)}]({name})", "",
             "Lines join each arm's medians over seeds, bars span the seeds (min–max), dots are the seeds; arms are "
             "shifted slightly sideways so that their seeds do not hide each other.", "",
             points_table(part, comparisons, arms), "", edge_text(part), ""]
    if not refs:
        return lines + [f"No uniform arm on {task_name(task)}, so there are no differences to uniform and no "
                        "\"parameters needed\" table.", ""]
    for reference in refs:
        lines += [needed_heading(reference), "", needed_table(points, reference, arms), ""]
    return lines


def arm_order(part: pd.DataFrame) -> list[str]:
    """Uniform arms first, then the others, each in order of name."""
    firsts = part.drop_duplicates("arm")
    return firsts.sort_values(["uniform", "arm"], ascending=[False, True], kind="stable")["arm"].tolist()


def score_label(metric: str, greater_is_better: bool) -> str:
    """The y axis: `pearson × 100 (best epoch)`, `loss (best epoch)`."""
    name = metric.replace("eval_", "").replace("_", " ")
    return f"{name}{' × 100' if metric_scale(metric, greater_is_better) == 100 else ''} (best epoch)"


def points_table(part: pd.DataFrame, comparisons: pd.DataFrame, arms: list[str]) -> str:
    """Every arm at every budget: size, median ± std, seeds, best learning rate, and Δ to uniform at that budget."""
    found = comparisons.set_index(["task", "point"]) if not comparisons.empty else None
    by_point = part.set_index("point")
    rows = []
    for arm in arms:
        for _, p in part[part["arm"] == arm].sort_values("params").iterrows():
            cells = [arm, p["budget"], thousands(p["params"]), median_std(p["median"], p["std"]), str(p["n"]),
                     short_text(float(p["learning_rate"])) + EDGE_MARKS.get(p["edge"], "")]
            key = (p["task"], p["point"])
            rows.append(cells + _delta_cells(found.loc[key] if found is not None and key in found.index else None,
                                             p, by_point))
    header = ["Method", "Budget", "Adapter params", "Median ± Std", "n", "Best LR", "Δ vs uniform", "95% CI",
              "Holm p", "Verdict"]
    return markdown_table(header, rows, ["l", "l", "r", "l", "r", "r", "r", "l", "r", "l"])


def _delta_cells(c: pd.Series | None, p: pd.Series, by_point: pd.DataFrame) -> list[str]:
    if p["uniform"]:
        return ["", "", "", "uniform"]
    if c is None:
        return [DASH, DASH, DASH, f"no uniform within {SAME_BUDGET:.0%} of its size"]
    ci = DASH if is_missing(c["ci_low"]) else f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
    return [f"{signed(c['mean_diff'])} (vs {by_point.loc[c['reference'], 'budget']})", ci, p_text(c["p_holm"]),
            c["verdict"]]


def edge_text(part: pd.DataFrame) -> str:
    """Which best learning rates are at the edge of their grid (↑ highest, ↓ lowest tried) or were not chosen at
    all (one rate): there the arm's point may be below what a wider grid would give."""
    edge = part[part["edge"].isin(["lowest", "highest"])]
    only = part[part["edge"] == "only"]
    if edge.empty and only.empty:
        return "Every best learning rate is inside its grid."
    text = ""
    if len(edge):
        text = ("**Best learning rate at the edge of its grid** (↑ the highest, ↓ the lowest tried; extend the "
                "grid until the best is inside, or the point may understate the arm): "
                + "; ".join(f"`{r.arm}` {r.budget} at {short_text(float(r.learning_rate))} ({r.edge})"
                            for r in edge.itertuples()) + ".")
    if len(only):
        text += (" " if text else "") + ("One learning rate only, so none was chosen: "
                                         + "; ".join(f"`{r.arm}` {r.budget}" for r in only.itertuples()) + ".")
    return text


def needed_heading(reference: pd.Series) -> str:
    return (f"**Parameters needed to reach `{reference['arm']}` at its largest budget** ({reference['budget']}, "
            f"{thousands(reference['params'])} parameters, median {reference['median']:.2f}): each arm's smallest "
            "budget whose median reaches it.")


def needed_table(points: pd.DataFrame, reference: pd.Series, arms: list[str]) -> str:
    """Per arm: the smallest budget whose median reaches `reference`'s, or `not reached` and the arm's best."""
    needed = parameters_needed(points, reference)
    rows = []
    for arm in arms:
        point, best = needed[arm]["needed"], needed[arm]["best"]
        if point is None:
            rows.append([arm, "not reached", DASH, f"best {best['median']:.2f} ({best['budget']}, "
                                                   f"{thousands(best['params'])} parameters)"])
        else:
            rows.append([arm, thousands(point["params"]), f"{point['params'] / reference['params']:.2f}×",
                         f"{point['median']:.2f} ({point['budget']})"])
    return markdown_table(["Method", "Parameters needed", "× reference", "Median there (budget)"], rows,
                          ["l", "r", "r", "l"])
