"""The report's statistics: numpy, scipy and pandas only (no figures, no text).

What every comparison in a report obeys (DESIGN.md, "Statistics"):

- **Paired by seed, t-intervals.** A difference between two arms is the mean of their per-seed differences on the
  seeds both completed, with its 95% t-interval and a two-sided paired t-test (`scipy.stats.ttest_1samp`); the exact
  Wilcoxon signed-rank p is shown beside it as a check on normality. A percentile bootstrap of a mean over 5 seeds
  covers about 85% instead of 95% (tests/report/test_stats.py simulates it), so reports use none.
- **Exploratory below `MIN_PAIRS`.** With fewer than 3 pairs no interval and no test are given; the row says
  `exploratory` and never enters a multiple-comparison family.
- **Families.** Holm's correction runs within a family, one per question a section asks (`holm_within`); each
  section lists its families with their sizes. A comparison whose paired differences are identical to an earlier
  one's (the same runs under two labels) is counted once.
- **Power.** Every comparison states the smallest mean difference its design could detect: 80% power, its n, its
  observed spread of the paired differences, at Holm's strictest level α/m for a family of m
  (`detectable_difference`, by the noncentral t).
- **One learning-rate rule.** `select_learning_rates`: an arm's learning rates are compared by their median on
  the selection seeds every rate completed (by default seeds 0 and 1; a search's own seeds when the runs come
  from a `search:` sweep, whose choice is kept), and everything reported comes from the other seeds at the
  chosen rate, so the score is kept apart from its selection. An arm run at one rate was not selected: all its
  seeds report. `lr_edges` says where each chosen value sits in the values tried, for every learning-rate field.

Also: `median_and_std` (sample std, ddof=1), `log_median`, `pearson`, `paired_t_p`, `welch_p` (the layer-wise
placement study's), `parabola_vertex` (the LR-ratio study's fit).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .text import is_missing

ALPHA = 0.05  # significance level, and 1 − the intervals' level
POWER = 0.8  # power at which `detectable_difference` is stated
MIN_PAIRS = 3  # fewer paired seeds: exploratory (no interval, no test, no family)
SELECTION_SEEDS = (0, 1)  # seeds that choose an arm's learning rate unless a search says otherwise
LR_LIKE_FIELDS = ("learning_rate", "cls_learning_rate", "rank_allocation_lr")  # grid edges are checked for each


def median_and_std(values: np.ndarray) -> tuple[float, float]:
    """(median, sample std with ddof=1) of the non-NaN values; std is NaN for one value, both for none."""
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    return float(np.median(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def log_median(values) -> float | None:
    """Median in log10 space (the geometric median of positive values); None when every value is missing."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(10 ** np.median(np.log10(values))) if values else None


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN for fewer than 3 points or a (near-)constant side."""
    if len(a) < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def paired_t_p(diff) -> float:
    """Two-sided p-value of the paired t-test, from the paired differences `diff` (the same as
    `scipy.stats.ttest_rel(a, b)` for diff = a − b); NaN for fewer than 2."""
    return float(stats.ttest_1samp(diff, 0.0).pvalue) if len(diff) > 1 else math.nan


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN when a side has fewer than 2 values."""
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue) if min(len(a), len(b)) > 1 else math.nan


# ---------------------------------------------------------------------------------------------
# Paired comparisons
# ---------------------------------------------------------------------------------------------

def t_interval(values, level: float = 1 - ALPHA) -> tuple[float, float]:
    """The t-interval of the mean of `values` (scipy's `ttest_1samp(...).confidence_interval`); a zero spread
    gives the mean twice."""
    values = np.asarray(values, dtype=float)
    if values.std(ddof=1) == 0:
        return float(values.mean()), float(values.mean())
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(level)
    return float(ci.low), float(ci.high)


def detectable_difference(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean paired difference a two-sided paired t-test at level `alpha` on `n` pairs with spread `sd`
    (std of the differences) detects with probability `power`: δ = λ·sd/√n, λ the noncentrality at which the
    noncentral t (n − 1 degrees of freedom) passes the critical value with that probability. NaN for n < 2 or no
    spread."""
    if n < 2 or is_missing(sd) or not sd > 0:
        return math.nan
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(noncentrality: float) -> float:
        lower = stats.nct.cdf(-critical, df, noncentrality)  # negligible, and NaN in scipy's far tail
        return stats.nct.sf(critical, df, noncentrality) + float(np.nan_to_num(lower)) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10) * sd / math.sqrt(n))


def paired_comparison(arm: dict, baseline: dict) -> dict:
    """Seed-paired comparison of two arms (`{seed: score}`) on the seeds both have.

    Returns `n`, `seeds`, `mean_diff` (arm − baseline), `sd_diff` (std of the differences, ddof=1), `diffs` (in seed
    order), `exploratory` (n < MIN_PAIRS), and for n ≥ MIN_PAIRS the 95% t-interval (`ci_low`, `ci_high`), the paired
    t-test's `p_t` (NaN when every difference is equal) and the exact Wilcoxon signed-rank `p_wilcoxon` (NaN when
    every difference is 0); those are NaN for an exploratory comparison."""
    seeds = sorted(set(arm) & set(baseline))
    diff = np.array([arm[s] - baseline[s] for s in seeds], dtype=float)
    out = {"n": len(seeds), "seeds": seeds, "diffs": diff.tolist(), "mean_diff": math.nan, "sd_diff": math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "p_t": math.nan, "p_wilcoxon": math.nan,
           "exploratory": len(seeds) < MIN_PAIRS}
    if len(diff):
        out["mean_diff"] = float(diff.mean())
    if len(diff) > 1:
        out["sd_diff"] = float(diff.std(ddof=1))
    if out["exploratory"]:
        return out
    out["ci_low"], out["ci_high"] = t_interval(diff)
    if diff.std(ddof=1) > 0:
        out["p_t"] = paired_t_p(diff)
    if np.any(diff != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(diff, method="exact").pvalue)
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (nan stays nan and does not count as a test)."""
    order = [i for i in np.argsort(pvalues) if not is_missing(pvalues[i])]
    m, adjusted, running = len(order), [math.nan] * len(pvalues), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def mark_duplicates(table: pd.DataFrame, key: str = "reference") -> pd.Series:
    """Per comparison, the earlier row (its `arm`) with the same `key`, seeds and paired differences: the same runs
    under another label, counted once. None for the first of each."""
    seen: dict = {}
    out = []
    for row in table.to_dict("records"):
        signature = (row.get(key), row.get("task"), tuple(row["seeds"]), tuple(np.round(row["diffs"], 12)))
        out.append(seen.get(signature) if row["n"] else None)
        seen.setdefault(signature, row["arm"])
    return pd.Series(out, index=table.index, dtype=object)


def holm_within(table: pd.DataFrame, family: str | pd.Series, key: str = "reference") -> pd.DataFrame:
    """`table` (rows of `paired_comparison` plus `task`, `arm`, `greater_is_better` and `key`) with `family`, `in_family`
    (not exploratory, not a duplicate, has a t-test), `duplicate_of`, `family_size`, `p_holm` (Holm within the
    family), `detectable` (80% power at α / family size, from the row's n and spread) and `verdict`."""
    table = table.copy()
    table["family"] = family
    table["duplicate_of"] = mark_duplicates(table, key)
    table["in_family"] = ~table["exploratory"] & table["duplicate_of"].isna() & table["p_t"].notna()
    table["family_size"] = table.groupby("family")["in_family"].transform("sum").astype(int)
    table["p_holm"] = math.nan
    for _, rows in table[table["in_family"]].groupby("family"):
        table.loc[rows.index, "p_holm"] = holm(rows["p_t"].tolist())
    table["detectable"] = [detectable_difference(r["n"], r["sd_diff"], ALPHA / max(r["family_size"], 1))
                           if not r["exploratory"] else math.nan for r in table.to_dict("records")]
    table["verdict"] = [verdict(r, r["greater_is_better"]) for r in table.to_dict("records")]
    return table


def verdict(comparison: dict, greater_is_better: bool) -> str:
    """`exploratory (n=2)` below MIN_PAIRS; `better` / `worse` when the Holm-adjusted t-test is significant (its
    interval then excludes 0 too); else `not significant`."""
    if comparison.get("exploratory"):
        return f"exploratory (n={comparison['n']})"
    p = comparison.get("p_holm", math.nan)
    if is_missing(p) or p >= ALPHA:
        return "not significant"
    better = (comparison["mean_diff"] > 0) == greater_is_better
    return "better" if better else "worse"


# ---------------------------------------------------------------------------------------------
# Learning rates: one rule everywhere
# ---------------------------------------------------------------------------------------------

def completed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that enter statistics: completed, with a score."""
    return runs[(runs["status"] == "completed") & runs["score"].notna()]


def _best(values: dict[float, float], greater_is_better: bool) -> float:
    """The key with the best value; ties go to the smaller key (learning rate)."""
    sign = 1 if greater_is_better else -1
    return max(sorted(values), key=lambda k: sign * values[k])


def grid_edge(value: float, values: list[float]) -> str:
    """`only`, `lowest`, `highest` or `inside`: where `value` sits among the values tried."""
    if len(values) == 1:
        return "only"
    return "lowest" if value == min(values) else "highest" if value == max(values) else "inside"


def _search_choice(group: pd.DataFrame) -> tuple[float | None, list[int]] | None:
    """(chosen rate, search seeds) when the group's runs come from one `search:` sweep's arm, else None; the rate
    is None while that search has not chosen yet."""
    if "search_role" not in group or not group["search_role"].notna().any():
        return None
    seeds = sorted(int(s) for s in group.loc[group["search_role"] == "search", "seed"].unique())
    chosen = group["search_chosen"].dropna().unique() if "search_chosen" in group else []
    if len(chosen) > 1:
        return None
    return (float(chosen[0]) if len(chosen) else None), seeds


def select_learning_rates(runs: pd.DataFrame, selection_seeds=None) -> pd.DataFrame:
    """One row per (task, arm, learning rate) of the completed runs (`runs` needs an `arm` column).

    Per rate: `n`, `seeds`, `median`, `std` over all its seeds, and `selection_median` over the arm's selection
    seeds. Per arm, on each of its rows: `rule` (`one rate`: nothing was selected, every seed reports; `seed split`:
    the rate with the best median over the selection seeds every rate completed, ties to the smaller rate, and the
    other seeds report; `search`: the rate a `search:` sweep chose on its seeds, its answer seeds report;
    `searching`: a `search:` sweep's arm that has not chosen yet, nothing is reported; `no common seed`: the rates
    share no selection seed, nothing is chosen), `selection_seeds` (those that chose),
    `held_out` (the selection seeds asked for, never reported), `report_seeds`, `report_n`, `report_median`,
    `report_std` (the chosen rate on its reporting seeds), `edge` (where the chosen rate sits among the rates) and
    `chosen` (True on the chosen rate's row). `selection_seeds` defaults to SELECTION_SEEDS."""
    wanted = sorted(SELECTION_SEEDS if selection_seeds is None else selection_seeds)
    columns = ["task", "arm", "learning_rate", "n", "seeds", "median", "std", "greater_is_better",
               "selection_median", "chosen", "rule", "selection_seeds", "held_out", "report_seeds", "report_n",
               "report_median", "report_std", "edge"]
    rows = []
    for (task, arm), group in completed_runs(runs).groupby(["task", "arm"], sort=True):
        greater = bool(group["greater_is_better"].iloc[0])
        by_rate = {float(lr): dict(zip(g["seed"].astype(int), g["score"].astype(float)))
                   for lr, g in group.groupby("learning_rate", sort=True)}
        rates = sorted(by_rate)
        search = _search_choice(group)
        if search is not None and search[0] in by_rate:
            rule, chosen, used, held = "search", search[0], search[1], search[1]
        elif search is not None and search[0] is None:
            rule, chosen, used, held = "searching", None, [], search[1]
        elif len(rates) == 1:
            rule, chosen, used, held = "one rate", rates[0], [], []
        else:
            used = sorted(set(wanted).intersection(*(set(s) for s in by_rate.values())))
            held = wanted
            rule = "seed split" if used else "no common seed"
            chosen = _best({r: float(np.median([by_rate[r][s] for s in used])) for r in rates}, greater) \
                if used else None
        report = {s: v for s, v in by_rate[chosen].items() if s not in held} if chosen is not None else {}
        values = np.array([report[s] for s in sorted(report)], dtype=float)
        report_median, report_std = median_and_std(values) if len(values) else (math.nan, math.nan)
        for rate in rates:
            scores = np.array(list(by_rate[rate].values()))
            on_selection = [by_rate[rate][s] for s in used if s in by_rate[rate]]
            rows.append({"task": task, "arm": arm, "learning_rate": rate, "n": len(scores),
                         "seeds": sorted(by_rate[rate]), "median": float(np.median(scores)),
                         "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else math.nan,
                         "greater_is_better": greater,
                         "selection_median": float(np.median(on_selection)) if on_selection else math.nan,
                         "chosen": rate == chosen, "rule": rule, "selection_seeds": used, "held_out": held,
                         "report_seeds": sorted(report), "report_n": len(report), "report_median": report_median,
                         "report_std": report_std, "edge": grid_edge(chosen, rates) if chosen is not None else None})
    return pd.DataFrame(rows, columns=columns)


def reported_scores(runs: pd.DataFrame, table: pd.DataFrame, task: str, arm: str) -> dict[int, float]:
    """{seed: score} of `arm` on `task` at its chosen rate, on its reporting seeds ({} when nothing was chosen)."""
    picked = table[(table["task"] == task) & (table["arm"] == arm) & table["chosen"]]
    if picked.empty:
        return {}
    row = picked.iloc[0]
    ok = completed_runs(runs)
    g = ok[(ok["task"] == task) & (ok["arm"] == arm) & (ok["learning_rate"] == row["learning_rate"])]
    return {int(s): float(v) for s, v in zip(g["seed"], g["score"]) if int(s) in set(row["report_seeds"])}


def lr_edges(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Every learning-rate field of every arm: one row per (task, arm, field) that applies to the arm (`runs` needs
    `arm`; `table` is `select_learning_rates`'s): `tried` (the values, ascending), `chosen` (the value at the chosen
    learning rate; NaN when none was chosen or it varies there), `edge` (`only`, `lowest`, `highest`, `inside`,
    or `varies` when a field other than learning_rate takes several values at the chosen rate) and `rule`."""
    rows = []
    ok = completed_runs(runs)
    for (task, arm), picked in table.groupby(["task", "arm"], sort=False):
        chosen_row = picked[picked["chosen"]]
        group = ok[(ok["task"] == task) & (ok["arm"] == arm)]
        for field in LR_LIKE_FIELDS:
            if field not in group or group[field].isna().all():
                continue  # does not apply to this arm (a fixed-rank arm has no allocation learning rate)
            tried = sorted(float(v) for v in group[field].dropna().unique())
            if chosen_row.empty:
                value, edge = math.nan, None
            else:
                at = group.loc[group["learning_rate"] == chosen_row["learning_rate"].iloc[0], field].dropna().unique()
                value = float(at[0]) if len(at) == 1 else math.nan
                edge = grid_edge(value, tried) if len(at) == 1 else "varies"
            rows.append({"task": task, "arm": arm, "field": field, "tried": tried, "chosen": value, "edge": edge,
                         "rule": picked["rule"].iloc[0]})
    return pd.DataFrame(rows, columns=["task", "arm", "field", "tried", "chosen", "edge", "rule"])


def parabola_vertex(x, y) -> tuple[float, float] | None:
    """(x, y) of the vertex of the parabola through three points; None when it opens downwards or is flat
    (the points are not convex)."""
    a, b, c = np.polyfit(x, y, 2)
    if not a > 0:
        return None
    return -b / (2 * a), c - b * b / (4 * a)
