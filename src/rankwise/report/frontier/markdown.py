"""The budget frontier section (automatic when some arm ran at two adapter sizes or more on a task): per task a
figure of score against adapter parameters, a table of every arm at every budget at its own best learning rate
with its seed-paired difference to uniform at the same budget, and the parameters each arm needs to reach uniform's
score at uniform's largest budget. If no arm beats uniform anywhere, it says so, with the intervals.
`frontier_comparisons.csv` and `frontier_learning_rates.csv` hold every number of the section."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..aggregate import metric_scale
from ..context import ReportContext
from ..figures import save_figure
from ..selection import (COMPARISON_HEADER, comparison_cells, comparison_line, edges_text, method_text,
                         reported_cell, selection_text, write_comparisons, write_learning_rates)
from ..stats import ALPHA, lr_edges
from ..text import DASH, markdown_table, plural, short_text, task_name, task_order, thousands
from .analysis import (SAME_BUDGET, budget_comparisons, by_point, frontier_points, frontier_runs, parameters_needed,
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
    markdown = frontier_markdown(frame[frame["task"].isin(tasks)], tasks, Path(ctx.out),
                                 ctx.options.get("selection_seeds"), tests=not ctx.options.get("study"))
    ctx.add_linked_figures(markdown)
    return markdown


STUDY_TESTS = ("The paired tests of these runs are the learned-vs-uniform section's (`--study`): one family per "
               "question, so this section draws the frontier and does not test the same differences again.")


def frontier_markdown(frame: pd.DataFrame, tasks: list[str], out: Path, selection_seeds=None,
                      tests: bool = True) -> str:
    """The section for `frame` (`frontier_runs` rows); figures and CSV files go to `out`. Without `tests` (the study
    section tests the same runs) there are no differences to uniform here."""
    points, chosen = frontier_points(frame, selection_seeds)
    comparisons = budget_comparisons(frame, points, chosen) if tests else pd.DataFrame()
    edges = lr_edges(by_point(frame), chosen)
    edges["arm"] = edges["arm"].map(_point_names(points))
    out.mkdir(parents=True, exist_ok=True)
    names = _point_names(points)
    write_comparisons(comparisons.assign(point=comparisons["point"].map(names),
                                         reference=comparisons["reference"].map(names))
                      if not comparisons.empty else comparisons, out / "frontier_comparisons.csv")
    write_learning_rates(chosen.assign(arm=chosen["arm"].map(_point_names(points))), edges,
                         out / "frontier_learning_rates.csv")
    lines = [HEADING, "", intro_text(comparisons), "", selection_text(chosen.assign(
        arm=chosen["arm"].map(_point_names(points))), noun="point"), ""]
    if not comparisons.empty:
        lines += [method_text(comparisons), ""]
    lines += [*(verdict_lines(points, comparisons) if tests else [STUDY_TESTS]), ""]
    for task in tasks:
        lines += task_part(frame, points, comparisons, edges, task, out)
    return "\n".join(lines).rstrip() + "\n"


def _point_names(points: pd.DataFrame) -> dict[str, str]:
    """Point key → `arm budget` (`uniform r4`), as the section's text names a point."""
    return {p.point: f"{p.arm} {p.budget}" for p in points.itertuples()}


def intro_text(comparisons: pd.DataFrame) -> str:
    """What a point is and how it is compared with uniform."""
    text = ("Each *arm* (a configuration without its budget: method, allocation and their settings) is shown at "
            "each budget (a *point*) at its own learning rate, chosen as below. Adapter parameters are counted at "
            "the final ranks (median over the reported seeds).")
    if comparisons.empty:
        return text
    return text + (f" Δ = arm − uniform at the same budget (the uniform point of the same method, else of another, "
                   f"within {SAME_BUDGET:.0%} of its adapter size), paired by seed on the seeds both report.")


def verdict_lines(points: pd.DataFrame, comparisons: pd.DataFrame) -> list[str]:
    """The answer first: which arms beat (or lose to) uniform at which budgets; if none beats it, every interval."""
    if comparisons.empty:
        return ["No arm has a uniform point at its budget, so none is compared with uniform."]
    better = comparisons[comparisons["verdict"] == "better"]
    worse = comparisons[comparisons["verdict"] == "worse"]
    if better.empty:
        tested = int(comparisons["in_family"].sum())
        lines = [f"**No arm beats uniform at any budget**: none of the {plural(tested, 'tested difference')} to "
                 f"uniform at the same budget has a Holm-adjusted p < {ALPHA}"
                 + (f" ({plural(len(comparisons) - tested, 'other')} exploratory or counted once)"
                    if tested < len(comparisons) else "") + ". Read each with its detectable difference: where that "
                 "is larger than the effects that matter, the answer is too few seeds to say, not no difference:",
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
    """`- STS-B: `learned` at 384 parameters (1–12, avg 4) − `uniform` r4: +0.12 (95% t-interval ...)`."""
    by_point = points.set_index(["task", "point"])
    arm, ref = by_point.loc[(c["task"], c["point"])], by_point.loc[(c["task"], c["reference"])]
    line = comparison_line(c, f"`{arm['arm']}` at {thousands(arm['params'])} parameters ({arm['budget']})",
                           f"`{ref['arm']}` {ref['budget']}")
    return line + (f" (the same runs as `{c['duplicate_of']}`)" if isinstance(c.get("duplicate_of"), str) else "")


def task_part(frame: pd.DataFrame, points: pd.DataFrame, comparisons: pd.DataFrame, edges: pd.DataFrame, task: str,
              out: Path) -> list[str]:
    """One task: the figure, the table of points, the grid edges, the parameters needed."""
    part = points[points["task"] == task]
    arms = arm_order(part)
    refs = references(points, task)
    name = f"frontier_{task}.png"
    metric = frame.loc[frame["task"] == task, ["metric", "greater_is_better"]].dropna().iloc[0]
    drawn = part[part["n"] > 0]
    save_figure(draw_frontier(drawn, [a for a in arms if a in set(drawn["arm"])],
                              score_label(metric["metric"], bool(metric["greater_is_better"])),
                              f"{task_name(task)}: score against adapter size, each point at its chosen learning rate "
                              "(reporting seeds)", refs[-1] if refs else None), out / name)
    lines = [f"### {task_name(task)}", "", f"![Score against adapter parameters on {task_name(task)}]({name})", "",
             "Lines join each arm's medians over its reporting seeds, bars span them (min–max), dots are the seeds; "
             "arms are shifted slightly sideways so that their seeds do not hide each other; an open marker is a "
             "learning rate chosen at the edge of its grid."
             + (" Points with nothing reported (no seed beyond the selection seeds) are not drawn."
                if len(drawn) < len(part) else ""), "",
             points_table(part, comparisons, arms), "", edges_text(edges[edges["task"] == task]), ""]
    if not refs:
        return lines + [f"No uniform arm on {task_name(task)}, so there are no differences to uniform and no "
                        "\"parameters needed\" table.", ""]
    for reference in refs:
        lines += [needed_heading(reference), "", needed_table(points, reference,
                                                              [a for a in arms if a in set(drawn["arm"])]), ""]
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
    """Every arm at every budget: size, median ± std over the reporting seeds, the chosen learning rate, and Δ to
    uniform at that budget with its t-interval, p-values, detectable difference and verdict."""
    found = comparisons.set_index(["task", "point"]) if not comparisons.empty else None
    by_point = part.set_index("point")
    rows = []
    for arm in arms:
        for _, p in part[part["arm"] == arm].sort_values("params").iterrows():
            reported = {"report_median": p["median"], "report_std": p["std"], "report_n": p["n"], "chosen": True,
                        "selection_median": p["selection_median"]}
            cells = [arm, p["budget"], thousands(p["params"]), reported_cell(reported),
                     short_text(float(p["learning_rate"])) + EDGE_MARKS.get(p["edge"], "")]
            key = (p["task"], p["point"])
            rows.append(cells + ([] if found is None else _delta_cells(
                found.loc[key] if key in found.index else None, p, by_point)))
    header = ["Method", "Budget", "Adapter params", "Reported median ± std", "LR"]
    header += [] if found is None else ["vs", *COMPARISON_HEADER]
    return (markdown_table(header, rows, ["l", "l", "r", "l", "r", "l", "r", "l", "r", "l", "r", "l"][:len(header)])
            + "\n\nLR: the chosen learning rate (↑ the highest of its grid, ↓ the lowest, (only) the one tried).")


def _delta_cells(c: pd.Series | None, p: pd.Series, by_point: pd.DataFrame) -> list[str]:
    if p["uniform"]:
        return ["", "", "", "", "", "", "uniform"]
    if c is None:
        return ["", *[DASH] * 5, f"no uniform within {SAME_BUDGET:.0%} of its size, or nothing reported"]
    return [by_point.loc[c["reference"], "budget"], *comparison_cells(c)]


def needed_heading(reference: pd.Series) -> str:
    return (f"**Parameters needed to reach `{reference['arm']}` at its largest budget** ({reference['budget']}, "
            f"{thousands(reference['params'])} parameters, median {reference['median']:.2f}): each arm's smallest "
            "budget whose median reaches it.")


def needed_table(points: pd.DataFrame, reference: pd.Series, arms: list[str]) -> str:
    """Per arm: the smallest budget whose median reaches `reference`'s, or `not reached` and the arm's best."""
    needed = parameters_needed(points[points["n"] > 0], reference)
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
