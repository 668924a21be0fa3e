"""The report's statistics: numpy, scipy and pandas only (no figures, no text).

- over seeds: `median_and_std` (sample std, ddof=1), `log_median`, `pearson`;
- comparisons: `paired_comparison` (mean paired difference, its bootstrap interval, paired t-test, exact
  Wilcoxon signed-rank test), `paired_t_p`, `welch_p`, `holm` (Holm–Bonferroni), `verdict`;
- learning rates: `select_learning_rates` (best median over seeds per task and arm), `parabola_vertex` (the
  vertex of a parabola through three points, used in log10(lr) by the LR-ratio study).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .text import is_missing

ALPHA = 0.05  # significance level of `verdict`
BOOTSTRAP = 10_000  # resamples of the bootstrap interval


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


def bootstrap_mean_ci(values: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of `values`."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_t_p(diff) -> float:
    """Two-sided p-value of the paired t-test, from the paired differences `diff` (the same as
    `scipy.stats.ttest_rel(a, b)` for diff = a − b); NaN for fewer than 2."""
    return float(stats.ttest_1samp(diff, 0.0).pvalue) if len(diff) > 1 else math.nan


def welch_p(a, b) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN when a side has fewer than 2 values."""
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue) if min(len(a), len(b)) > 1 else math.nan


def paired_comparison(arm: dict, baseline: dict, greater_is_better: bool = True, seed: int = 0) -> dict:
    """Seed-paired comparison of two arms (`{seed: score}`) on the seeds both completed.

    Returns n, the mean difference (arm − baseline; positive = arm better when greater is better), its 95%
    percentile bootstrap interval, the paired t-test p-value (nan when every difference is equal) and the
    exact two-sided Wilcoxon signed-rank p-value (nan when every difference is 0)."""
    seeds = sorted(set(arm) & set(baseline))
    diff = np.array([arm[s] - baseline[s] for s in seeds], dtype=float)
    out = {"n": len(seeds), "mean_diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
           "p_t": math.nan, "p_wilcoxon": math.nan}
    if len(diff) == 0:
        return out
    out["mean_diff"] = float(diff.mean())
    if len(diff) < 2:
        return out
    out["ci_low"], out["ci_high"] = bootstrap_mean_ci(diff, seed=seed)
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


def verdict(comparison: dict, greater_is_better: bool) -> str:
    """`better` / `worse` when the Holm-adjusted t-test is significant and the bootstrap interval excludes 0,
    else `no significant difference`."""
    p, lo, hi = comparison.get("p_holm", math.nan), comparison["ci_low"], comparison["ci_high"]
    if is_missing(p) or p >= ALPHA or is_missing(lo) or lo <= 0 <= hi:
        return "no significant difference"
    better = (comparison["mean_diff"] > 0) == greater_is_better
    return "better" if better else "worse"


def completed_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that enter statistics: completed, with a score."""
    return runs[(runs["status"] == "completed") & runs["score"].notna()]


def select_learning_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, arm, learning rate): median, std (ddof=1) and n over completed seeds, and `chosen`
    marking the learning rate with the best median of its (task, arm) (ties: the smaller learning rate). Only
    learning rates with as many seeds as the arm's best-covered one compete: a half-finished point's median
    is not comparable, and choosing it would test the arm on fewer seeds. `runs` needs an `arm` column."""
    rows = []
    for (task, arm, lr), g in completed_runs(runs).groupby(["task", "arm", "learning_rate"], sort=True):
        scores = g["score"].to_numpy(float)
        rows.append({"task": task, "arm": arm, "learning_rate": lr, "n": len(scores),
                     "median": float(np.median(scores)), "std": float(np.std(scores, ddof=1)) if len(scores) > 1
                     else math.nan, "greater_is_better": bool(g["greater_is_better"].iloc[0])})
    table = pd.DataFrame(rows, columns=["task", "arm", "learning_rate", "n", "median", "std", "greater_is_better"])
    table["chosen"] = False
    for _, g in table.groupby(["task", "arm"]):
        g = g[g["n"] == g["n"].max()]
        sign = 1 if g["greater_is_better"].iloc[0] else -1
        best = (sign * g["median"]).max()
        table.loc[g[sign * g["median"] == best].sort_values("learning_rate").index[0], "chosen"] = True
    return table


def parabola_vertex(x, y) -> tuple[float, float] | None:
    """(x, y) of the vertex of the parabola through three points; None when it opens downwards or is flat
    (the points are not convex)."""
    a, b, c = np.polyfit(x, y, 2)
    if not a > 0:
        return None
    return -b / (2 * a), c - b * b / (4 * a)
