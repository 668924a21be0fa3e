"""What the study and frontier sections say the same way: how each learning rate was chosen and kept apart from the
reported numbers, where every chosen learning-rate value sits in its grid, the multiple-comparison families, a
comparison's cells, and the CSV files (`*_comparisons.csv`, `*_learning_rates.csv`) that docs/results prose is
checked against. The numbers come from `report.stats`; this module only writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .stats import ALPHA, MIN_PAIRS, POWER
from .text import DASH, is_missing, markdown_table, p_text, plural, short_text, signed, task_name

EDGE_WORDS = {"lowest": "**lowest**", "highest": "**highest**", "inside": "inside", "only": "one value",
              "varies": "varies at the chosen rate"}


def seeds_text(seeds) -> str:
    """`0, 1`; `2–6` for a run of three or more consecutive seeds; `none`."""
    seeds = sorted(int(s) for s in seeds)
    if not seeds:
        return "none"
    if len(seeds) >= 3 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _arms_list(rows: pd.DataFrame, with_task: bool) -> str:
    return "; ".join(f"`{r.arm}`" + (f" on {task_name(r.task)}" if with_task else "") for r in rows.itertuples())


def selection_text(table: pd.DataFrame, noun: str = "method") -> str:
    """How each arm's learning rate was chosen and which seeds report (`table`: `select_learning_rates`)."""
    arms = table.drop_duplicates(["task", "arm"])
    with_task = arms["task"].nunique() > 1
    parts = ["**Learning rates, and how the reported numbers are kept apart from their choice.**"]
    split = arms[arms["rule"] == "seed split"]
    if len(split):
        held = sorted({s for seeds in split["held_out"] for s in seeds})
        report = sorted({s for seeds in split["report_seeds"] for s in seeds})
        partial = split[split["selection_seeds"].map(len) < split["held_out"].map(len)]
        parts.append(f"A {noun} run at several learning rates is compared on seeds {seeds_text(held)} only (the "
                     "median over those of them every rate completed; ties go to the smaller rate), and everything "
                     f"reported for it (medians, differences, tests) comes from its other seeds at the chosen rate "
                     f"({seeds_text(report)}), never from the seeds that chose it."
                     + (f" Chosen on seed {seeds_text(partial['selection_seeds'].iloc[0])} alone (the only one every "
                        f"rate has): {_arms_list(partial, with_task)}." if len(partial) else ""))
    search = arms[arms["rule"] == "search"]
    if len(search):
        parts.append(f"{_arms_list(search, with_task)}: the rate a `search:` sweep chose on its own seeds "
                     f"({seeds_text(sorted({s for v in search['selection_seeds'] for s in v}))}); its answer seeds "
                     f"({seeds_text(sorted({s for v in search['report_seeds'] for s in v}))}) report.")
    one = arms[arms["rule"] == "one rate"]
    if len(one):
        parts.append(f"Run at one learning rate, so nothing was selected and every seed reports: "
                     f"{_arms_list(one, with_task)}.")
    searching = arms[arms["rule"] == "searching"]
    if len(searching):
        parts.append(f"Still searching (the `search:` sweep has not chosen their rate), so nothing is reported: "
                     f"{_arms_list(searching, with_task)}.")
    none = arms[arms["rule"] == "no common seed"]
    if len(none):
        parts.append(f"No selection seed common to all its rates, so no rate is chosen and nothing is reported: "
                     f"{_arms_list(none, with_task)}.")
    empty = arms[arms["rule"].isin(["seed split", "search"]) & (arms["report_n"] == 0)]
    if len(empty):
        parts.append(f"No seed beyond the selection seeds at the chosen rate, so nothing is reported (the median "
                     f"over the selection seeds, which chose the rate and so flatter it, is shown in parentheses): "
                     f"{_arms_list(empty, with_task)}.")
    return " ".join(parts)


def reported_cell(row) -> str:
    """`73.73 ± 1.27 (n=3)`; `(75.34 on the selection seeds)` with nothing held out; `–` with nothing chosen."""
    if row is None or is_missing(row.get("report_median")):
        if row is not None and row.get("chosen") and not is_missing(row.get("selection_median")):
            return f"({row['selection_median']:.2f} on the selection seeds)"
        return DASH
    std = DASH if is_missing(row["report_std"]) else f"{row['report_std']:.2f}"
    return f"{row['report_median']:.2f} ± {std} (n={int(row['report_n'])})"


def edges_text(edges: pd.DataFrame) -> str:
    """Where every chosen learning-rate value sits among the values tried (`stats.lr_edges` rows): a table of the
    fields an arm tried several values of, the edges in bold and named after it, and the fields that had one value."""
    if edges.empty:
        return ""
    with_task = edges["task"].nunique() > 1
    several = edges[edges["tried"].map(len) > 1]
    lines = []
    if len(several):
        rows = [[*([task_name(r.task)] if with_task else []), f"`{r.arm}`", f"`{r.field}`",
                 ", ".join(short_text(v) for v in r.tried), DASH if is_missing(r.chosen) else short_text(r.chosen),
                 EDGE_WORDS.get(r.edge, DASH)] for r in several.itertuples()]
        header = [*(["Task"] if with_task else []), "Arm", "Field", "Values tried", "Chosen", "Where"]
        lines += ["Grid edges, checked for every arm and every learning-rate field (from the runs):", "",
                  markdown_table(header, rows, ["l"] * len(header)), ""]
    edge = several[several["edge"].isin(["lowest", "highest"])]
    if len(edge):
        lines.append("**Chosen at the edge of its grid** (a wider grid may move it, and the arm's numbers may "
                     "understate it): " + "; ".join(
                         f"`{r.arm}`" + (f" on {task_name(r.task)}" if with_task else "")
                         + f" {r.field} {short_text(r.chosen)} ({r.edge} of {len(r.tried)})" for r in edge.itertuples())
                     + ".")
    elif len(several):
        lines.append(f"Every chosen value of a field with several values tried is inside its grid "
                     f"({plural(len(several), 'arm-field pair')}).")
    single = edges[edges["tried"].map(len) == 1]
    for field, rows in single.groupby("field", sort=False):
        values = sorted({v for r in rows.itertuples() for v in r.tried})
        names = "every arm" if len(rows) == len(edges[edges["field"] == field]) else _arms_list(rows, with_task)
        lines.append(f"One value per arm, so not searched: `{field}` "
                     f"({', '.join(short_text(v) for v in values)}) for {names}.")
    return "\n".join(lines).rstrip() + "\n"


def families_text(comparisons: pd.DataFrame) -> str:
    """The section's multiple-comparison families with their sizes, and what is left out of them."""
    if comparisons.empty:
        return ""
    parts = []
    for family, rows in comparisons.groupby("family", sort=False):
        parts.append(f"*{family}*: {plural(int(rows['in_family'].sum()), 'comparison')}")
    text = ("Holm's correction runs within a family, one per question: " + "; ".join(parts) + ".")
    exploratory = comparisons[comparisons["exploratory"]]
    if len(exploratory):
        text += (f" {plural(len(exploratory), 'comparison')} with fewer than {MIN_PAIRS} paired seeds "
                 "are exploratory: shown without an interval or test, outside every family.")
    duplicates = comparisons[comparisons["duplicate_of"].notna()]
    for r in duplicates.itertuples():
        text += (f" `{r.arm}` has the same paired differences as `{r.duplicate_of}` on every seed (the same runs "
                 "under another label), so it is counted once.")
    return text


def method_text(comparisons: pd.DataFrame) -> str:
    """How a difference is computed, tested and called significant, and what the power column means."""
    return (f"Δ = arm − reference, the mean of the differences paired by seed (the seeds both report), with its "
            f"{1 - ALPHA:.0%} t-interval and two-sided paired t-test; the exact Wilcoxon signed-rank p beside it checks "
            f"the t-test's normality assumption (with n pairs its smallest possible value is 2/2ⁿ). A difference is "
            f"significant when its Holm-adjusted p < {ALPHA} (its interval then excludes 0). **Detectable**: the "
            f"smallest mean difference this design finds with {POWER:.0%} power (paired t-test at α/m, Holm's "
            f"strictest step, for a family of m; its n; the observed spread of its differences); a "
            f"\"not significant\" with a detectable difference larger than the effects that matter means too few "
            f"seeds to say, not no difference. " + families_text(comparisons))


def interval_text(c) -> str:
    """`[-2.31, +3.29]`; `–` for an exploratory comparison."""
    return DASH if is_missing(c["ci_low"]) else f"[{signed(c['ci_low'])}, {signed(c['ci_high'])}]"


def comparison_cells(c) -> list[str]:
    """Δ, 95% t-interval, n, p (t / Holm / Wilcoxon), detectable difference and verdict of one comparison."""
    p = DASH if c["exploratory"] else f"{p_text(c['p_t'])} / {p_text(c['p_holm'])} / {p_text(c['p_wilcoxon'])}"
    detectable = DASH if is_missing(c["detectable"]) else f"{c['detectable']:.2f}"
    verdict = c["verdict"] + (f" (= `{c['duplicate_of']}`)" if isinstance(c.get("duplicate_of"), str) else "")
    return [signed(c["mean_diff"]), interval_text(c), str(c["n"]), p, detectable, verdict]


COMPARISON_HEADER = ["Δ", "95% t-interval", "n", "p (t / Holm / Wilcoxon)", "Detectable", "Verdict"]


def comparison_line(c, arm_text: str, reference_text: str) -> str:
    """`- STS-B: `learned` − `uniform` r4: +0.36 (95% t-interval −4.1 to +4.8, n=5, Holm p 1.000, detectable 9.8)`."""
    if c["exploratory"]:
        return (f"- {task_name(c['task'])}: {arm_text} − {reference_text}: {signed(c['mean_diff'])} "
                f"(n={c['n']}: exploratory, no interval or test)")
    detectable = DASH if is_missing(c["detectable"]) else f"{c['detectable']:.2f}"
    return (f"- {task_name(c['task'])}: {arm_text} − {reference_text}: {signed(c['mean_diff'])} (95% t-interval "
            f"{signed(c['ci_low'])} to {signed(c['ci_high'])}, n={c['n']}, Holm p {p_text(c['p_holm'])}, detectable "
            f"{detectable}): **{c['verdict']}**")


def write_comparisons(comparisons: pd.DataFrame, path: Path) -> Path | None:
    """`*_comparisons.csv`: one row per comparison (lists as JSON)."""
    if comparisons.empty:
        return None
    columns = ["task", "arm", "reference", "family", "family_size", "in_family", "duplicate_of", "n", "seeds",
               "mean_diff", "sd_diff", "ci_low", "ci_high", "p_t", "p_holm", "p_wilcoxon", "detectable", "verdict",
               "exploratory"]
    extra = [c for c in ("point", "budget", "reference_budget", "params") if c in comparisons]
    table = comparisons[columns + extra].copy()
    table["seeds"] = table["seeds"].map(json.dumps)
    table.to_csv(path, index=False)
    return path


def write_learning_rates(table: pd.DataFrame, edges: pd.DataFrame, path: Path) -> Path | None:
    """`*_learning_rates.csv`: per arm and learning-rate field the values tried, the chosen value, where it sits, the
    rule, the selection and reporting seeds, and the reported median ± std."""
    if edges.empty:
        return None
    arms = table.drop_duplicates(["task", "arm"])[["task", "arm", "selection_seeds", "held_out", "report_seeds",
                                                   "report_n", "report_median", "report_std"]]
    out = edges.merge(arms, on=["task", "arm"], how="left")
    for column in ("tried", "selection_seeds", "held_out", "report_seeds"):
        out[column] = out[column].map(json.dumps)
    out.to_csv(path, index=False)
    return path
