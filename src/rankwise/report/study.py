"""The headline study: does learned allocation beat uniform rank at the same budget? (`report --study`)

Runs are grouped into *arms* (a configuration without its learning rate: the sweep variant's `label`, else
the method and ranks), each run at a few learning rates over the same seeds. Per task and arm the learning
rate with the best median over seeds is kept. Each arm is then compared with the uniform baseline (by
default the fixed-rank arm whose adapter size is closest to the learned arms' budget) seed by seed: the
mean paired difference, its 95% bootstrap interval, a paired t-test and an exact Wilcoxon signed-rank
test, with Holm's correction over every comparison in the report.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ConfigError
from ..methods import trains_adapter
from ..rundir import read_jsonl
from .aggregate import _describe, _g, varying_fields
from . import task_name, task_order
from .plots import _matrices, _save, short_matrix_name
from .tables import DASH, _missing, markdown_table, median_std

LR_FIELDS = ("learning_rate", "cls_learning_rate")
ALPHA = 0.05
BOOTSTRAP = 10_000


def arm_names(runs: pd.DataFrame) -> pd.Series:
    """Each run's arm: its `label`, else its configuration described without the learning rates."""
    varying = [f for f in varying_fields(runs) if f not in LR_FIELDS and f != "task"]

    def name(row) -> str:
        if isinstance(row.get("config_label"), str) and row["config_label"]:
            return row["config_label"]
        head, parts = _describe(row.to_dict(), varying)
        return head + (f" ({', '.join(parts)})" if parts else "")

    return runs.apply(name, axis=1) if len(runs) else pd.Series(dtype=object)


def adapter_params(runs: pd.DataFrame) -> pd.Series:
    """Adapter parameters at the final ranks (what a learned or pruned adapter keeps)."""
    hard = runs.get("params_adapter_at_hard_ranks")
    return hard.fillna(runs["params_adapter"]) if hard is not None else runs["params_adapter"]


def _completed(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[(runs["status"] == "completed") & runs["score"].notna()]


def _runs_at(runs: pd.DataFrame, task: str, arm: str, lr: float) -> pd.DataFrame:
    """The completed runs of one arm on one task at one learning rate (its seeds)."""
    ok = _completed(runs)
    return ok[(ok["task"] == task) & (ok["arm"] == arm) & (ok["learning_rate"] == lr)]


def select_learning_rates(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, arm, learning rate): median, std (ddof=1) and n over completed seeds, and `chosen`
    marking the learning rate with the best median of its (task, arm) (ties: the smaller learning rate). Only
    learning rates with as many seeds as the arm's best-covered one compete: a half-finished point's median
    is not comparable, and choosing it would test the arm on fewer seeds."""
    rows = []
    for (task, arm, lr), g in _completed(runs).groupby(["task", "arm", "learning_rate"], sort=True):
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


def _grid_sentence(table: pd.DataFrame) -> str:
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
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP, len(diff)))].mean(axis=1)
    out["ci_low"], out["ci_high"] = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    if diff.std(ddof=1) > 0:
        out["p_t"] = float(stats.ttest_1samp(diff, 0.0).pvalue)
    if np.any(diff != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(diff, method="exact").pvalue)
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (nan stays nan and does not count as a test)."""
    order = [i for i in np.argsort(pvalues) if not _missing(pvalues[i])]
    m, adjusted, running = len(order), [math.nan] * len(pvalues), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict(comparison: dict, greater_is_better: bool) -> str:
    """`better` / `worse` when the Holm-adjusted t-test is significant and the bootstrap interval excludes 0,
    else `no significant difference`."""
    p, lo, hi = comparison.get("p_holm", math.nan), comparison["ci_low"], comparison["ci_high"]
    if _missing(p) or p >= ALPHA or _missing(lo) or lo <= 0 <= hi:
        return "no significant difference"
    better = (comparison["mean_diff"] > 0) == greater_is_better
    return "better" if better else "worse"


def default_baseline(runs: pd.DataFrame) -> str | None:
    """The fixed-rank adapter arm whose adapter size is closest to the learned arms' (median) budget."""
    learned = runs[runs["allocation"] == "learned"]
    uniform = runs[(runs["allocation"] == "uniform") & runs["method"].map(trains_adapter)]
    if uniform.empty:
        return None
    sizes = uniform.groupby("arm")["params"].median()
    if learned.empty:
        return str(sizes.idxmin())
    target = float(learned["params"].median())
    return str((sizes - target).abs().sort_values(kind="stable").index[0])


def compare_arms(runs: pd.DataFrame, chosen: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (task, arm ≠ baseline) at the chosen learning rates: the paired comparison, Holm-adjusted
    over all rows, and the verdict."""
    picked = chosen[chosen["chosen"]]
    rows = []
    for task, per_task in picked.groupby("task", sort=False):
        base = per_task[per_task["arm"] == baseline]
        if base.empty:
            continue
        gib = bool(base["greater_is_better"].iloc[0])

        def scores(arm, lr):
            g = _runs_at(runs, task, arm, lr)
            return dict(zip(g["seed"].astype(int), g["score"].astype(float)))

        base_scores = scores(baseline, base["learning_rate"].iloc[0])
        for _, row in per_task[per_task["arm"] != baseline].iterrows():
            rows.append({"task": task, "arm": row["arm"], "greater_is_better": gib,
                         **paired_comparison(scores(row["arm"], row["learning_rate"]), base_scores, gib)})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"] = holm(table["p_t"].tolist())
    table["verdict"] = [verdict(r, r["greater_is_better"]) for r in table.to_dict("records")]
    return table


def _p(value) -> str:
    if _missing(value):
        return DASH
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def _signed(value) -> str:
    return DASH if _missing(value) else f"{value:+.2f}"


def _arm_order(chosen: pd.DataFrame, runs: pd.DataFrame, baseline: str | None) -> list[str]:
    """Baseline first, then the other arms by adapter size."""
    sizes = runs.groupby("arm")["params"].median().sort_values(kind="stable")
    arms = [a for a in sizes.index if a in set(chosen["arm"])]
    return ([baseline] if baseline in arms else []) + [a for a in arms if a != baseline]


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
        params = runs.loc[runs["arm"] == arm, "params"].median()
        rows.append([arm, DASH if _missing(params) else f"{int(round(params)):,}", *cells])
    return markdown_table(["Method", "Adapter params", *[task_name(t) for t in tasks]], rows,
                          ["l", "r", *["l"] * len(tasks)])


def seed_table(runs: pd.DataFrame, chosen: pd.DataFrame, comparisons: pd.DataFrame, task: str, arms: list[str],
               baseline: str | None) -> str:
    """One task: every arm × learning rate with its per-seed scores; the chosen learning rate in bold with
    its comparison to the baseline."""
    seeds = sorted(_completed(runs).loc[lambda d: d["task"] == task, "seed"].astype(int).unique())
    part = chosen[chosen["task"] == task]
    rows = []
    for arm in arms:
        for _, r in part[part["arm"] == arm].sort_values("learning_rate").iterrows():
            g = _runs_at(runs, task, arm, r["learning_rate"])
            by_seed = dict(zip(g["seed"].astype(int), g["score"]))
            cells = [DASH if s not in by_seed else f"{by_seed[s]:.2f}" for s in seeds]
            stat = median_std(r["median"], r["std"])
            delta = ci = p = verdict_cell = ""
            if r["chosen"]:
                stat = f"**{stat}**"
                c = comparisons[(comparisons["task"] == task) & (comparisons["arm"] == arm)] \
                    if not comparisons.empty else comparisons
                if arm == baseline:
                    verdict_cell = "baseline"
                elif not c.empty:
                    c = c.iloc[0]
                    delta = _signed(c["mean_diff"])
                    ci = DASH if _missing(c["ci_low"]) else f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
                    p = f"{_p(c['p_t'])} / {_p(c['p_holm'])} / {_p(c['p_wilcoxon'])}"
                    verdict_cell = c["verdict"]
            rows.append([arm, _g(float(r["learning_rate"])), *cells, stat, delta, ci, p, verdict_cell])
    header = ["Method", "LR", *[f"seed {s}" for s in seeds], "Median ± Std", "Δ mean", "95% CI",
              "p (t / Holm / Wilcoxon)", "vs baseline"]
    return markdown_table(header, rows, ["l", "r", *["r"] * len(seeds), "l", "r", "l", "l", "l"])


# ---------------------------------------------------------------------------------------------
# Figures


def _matrix_kind(name: str) -> str:
    """The module's role inside its layer: `query`, `value`, `attention.output.dense`, ... (the name after
    the layer index)."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[i + 1:])
    return name


def learned_rank_grid(run_dirs: list[Path]) -> pd.DataFrame | None:
    """Mean final hard rank over `run_dirs` as a layer × matrix-kind table (from each run's ranks.json)."""
    frames = [pd.DataFrame([{"layer": m["layer"], "kind": _matrix_kind(m["name"]), "rank": m["rank"]}
                            for m in matrices]) for matrices in map(_matrices, run_dirs) if matrices]
    if not frames:
        return None
    ranks = pd.concat(frames)
    kinds = list(dict.fromkeys(ranks["kind"]))
    return ranks.groupby(["layer", "kind"])["rank"].mean().unstack("kind")[kinds]


def _allocation_ends(run_dir: Path) -> tuple[dict, dict] | None:
    """(first, last) continuous ranks of a learned run, from its allocation.jsonl."""
    records = read_jsonl(Path(run_dir) / "allocation.jsonl")
    if len(records) < 2:
        return None
    first, last = records[0]["continuous"], records[-1]["continuous"]
    names = [k for k in first if k in last]
    return {k: first[k] for k in names}, {k: last[k] for k in names}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def allocation_diagnostics(run_dirs: list[Path]) -> dict | None:
    """What training did to the allocation, from allocation.jsonl (continuous ranks at the first and last record):

    - `moved`, `moved_max`: mean and max over runs and matrices of |final − initial|;
    - `init_corr`: mean over runs of the correlation between final and initial ranks (near 1: the final
      allocation is mostly the initialisation; NaN when the initialisation is flat, e.g. `uniform`);
    - `agreement`: mean pairwise correlation, across runs (seeds), of the change final − initial (near 0:
      the direction training moved the ranks is seed noise; clearly positive: a reproducible preference);
    - `by_kind`: mean change per matrix kind (query, value, ...), largest gain first;
    - `runs`: how many runs had an allocation log.
    """
    ends = [e for e in (_allocation_ends(d) for d in run_dirs) if e]
    if not ends:
        return None
    names = list(ends[0][0])
    ends = [(f, l) for f, l in ends if list(f) == names]
    firsts = np.array([[f[k] for k in names] for f, _ in ends])
    lasts = np.array([[l[k] for k in names] for _, l in ends])
    change = lasts - firsts
    pairs = [_pearson(change[i], change[j]) for i in range(len(ends)) for j in range(i + 1, len(ends))]
    kinds = pd.Series(change.mean(axis=0), index=[_matrix_kind(k) for k in names]).groupby(level=0).mean()
    return {"moved": float(np.abs(change).mean()), "moved_max": float(np.abs(change).max()),
            "init_corr": float(np.nanmean([_pearson(f, l) for f, l in zip(firsts, lasts)]))
            if any(np.std(f) > 1e-9 for f in firsts) else float("nan"),
            "agreement": float(np.nanmean(pairs)) if pairs and not all(math.isnan(p) for p in pairs) else float("nan"),
            "by_kind": kinds.sort_values(ascending=False).to_dict(), "runs": len(ends)}


def _two(value) -> str:
    return DASH if _missing(value) else f"{value:.2f}"


def draw_learned_ranks(grids: dict[str, pd.DataFrame], rank_range: tuple[float, float] | None = None):
    """One heatmap per task: layers (rows) × matrix kinds (columns), mean final rank over seeds."""
    import matplotlib.pyplot as plt

    tasks = list(grids)
    titles = {t: "\n".join(textwrap.fill(line, 26) for line in t.split("\n")) for t in tasks}
    lines = max(title.count("\n") + 1 for title in titles.values())
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 1.8, 3.6 + 0.25 * lines), squeeze=False)
    lo = min(float(np.nanmin(g.to_numpy())) for g in grids.values())
    hi = max(float(np.nanmax(g.to_numpy())) for g in grids.values())
    if rank_range:
        lo, hi = rank_range
    image = None
    for ax, task in zip(axes[0], tasks):
        grid = grids[task]
        image = ax.imshow(grid.to_numpy(float), cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        ax.set_title(titles[task], fontsize=10)
        ax.set_xticks(range(grid.shape[1]), [short_matrix_name(k) for k in grid.columns], rotation=35, ha="right")
        ax.set_yticks(range(grid.shape[0]), [f"layer {i}" for i in grid.index] if ax is axes[0][0] else [])
        for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if v < lo + 0.6 * (hi - lo) else "black")
    fig.colorbar(image, ax=axes[0].tolist(), label="final rank (mean over seeds)", shrink=0.9)
    fig.suptitle("Learned allocation: where the rank goes", y=1.0 + 0.04 * lines)
    return fig


def draw_scores(runs: pd.DataFrame, chosen: pd.DataFrame, arms: list[str], tasks: list[str], baseline: str | None):
    """One panel per task: each arm's per-seed scores at its chosen learning rate (dots), median (bar) and
    the baseline's median (dashed)."""
    import matplotlib.pyplot as plt

    picked = chosen[chosen["chosen"]].set_index(["task", "arm"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 1.5, 0.45 * len(arms) + 1.8),
                             squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks):
        metric = runs.loc[runs["task"] == task, "metric"].dropna()
        for k, arm in enumerate(arms):
            if (task, arm) not in picked.index:
                continue
            g = _runs_at(runs, task, arm, picked.loc[(task, arm), "learning_rate"])
            y = len(arms) - 1 - k
            jitter = np.linspace(-0.15, 0.15, len(g)) if len(g) > 1 else np.zeros(len(g))
            ax.scatter(g["score"], y + jitter, s=18, color=colours(k % 10), alpha=0.8, zorder=3)
            ax.plot([g["score"].median()] * 2, [y - 0.3, y + 0.3], color=colours(k % 10), lw=2.5, zorder=4)
            if arm == baseline:
                ax.axvline(g["score"].median(), color="0.4", ls="--", lw=1, zorder=1)
        ax.set_title(task_name(task))
        name = metric.iloc[0].replace("eval_", "").replace("_", " ") if len(metric) else "score"
        ax.set_xlabel(f"best {name} × 100")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(arms)), list(reversed(arms)))
    fig.suptitle("Per-seed scores at each method's chosen learning rate\n(dots: seeds; bar: median; dashed: baseline "
                 "median)", y=1.04)
    fig.tight_layout()
    return fig


def tick_labels(rates: list[float], margin: float = 1.3) -> list[str]:
    """Labels for learning rates on a log axis from rates[0] / margin to rates[-1] * margin: a rate closer than
    an eighth of the axis (at least a factor 1.6) to the last labelled one keeps its tick but no label, so
    0.003 and 0.005 or 0.02 and 0.03 do not print over each other."""
    span = math.log10(rates[-1] / rates[0]) + 2 * math.log10(margin)
    min_ratio = 10 ** max(0.2, 0.12 * span)
    labels, last = [], None
    for rate in rates:
        keep = last is None or rate >= last * min_ratio
        labels.append(_g(rate) if keep else "")
        last = rate if keep else last
    return labels


def draw_lr_curves(chosen: pd.DataFrame, arms: list[str], tasks: list[str], window: float = 10.0):
    """One panel per task: each arm's median score (± std over seeds) against its learning rate, the chosen
    one ringed. A chosen learning rate at the end of its arm's grid is where the grid may stop short. The y axis
    spans at most `window` points from the task's best median on the worse side (a third of that on the better
    side); a median outside (a collapsed run) is drawn as a triangle on the edge with its value."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 2.5, 3.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks):
        t = chosen[chosen["task"] == task]
        sign = 1 if t["greater_is_better"].iloc[0] else -1
        best = sign * (sign * t["median"]).max()
        spread = t["std"].fillna(0)
        below, above = (window, window / 3) if sign > 0 else (window / 3, window)  # room on the worse side
        low = max(best - below, (t["median"] - spread).min()) - 0.3
        high = min(best + above, (t["median"] + spread).max()) + 0.3
        written: dict[tuple[float, bool], int] = {}  # values already written at an edge point: stack the next
        for k, arm in enumerate(arms):
            g = t[t["arm"] == arm].sort_values("learning_rate")
            if g.empty:
                continue
            colour = colours(k % 10)
            ax.errorbar(g["learning_rate"], g["median"].clip(low, high), yerr=g["std"].fillna(0), color=colour,
                        marker="o", ms=4, lw=1.5, capsize=2, label=arm)
            for r in g[(g["median"] < low) | (g["median"] > high)].itertuples():
                under = r.median < low
                edge = low if under else high
                ax.scatter([r.learning_rate], [edge], marker="v" if under else "^", s=50, color=colour,
                           zorder=6, clip_on=False)
                n = written.get((r.learning_rate, under), 0)
                written[(r.learning_rate, under)] = n + 1
                ax.annotate(f"{r.median:.1f}", (r.learning_rate, edge), textcoords="offset points",
                            xytext=(5, 4 + 9 * n if under else -10 - 9 * n), fontsize=7, color=colour)
            picked = g[g["chosen"]]
            ax.scatter(picked["learning_rate"], picked["median"], s=90, facecolors="none", edgecolors="black",
                       linewidths=1.2, zorder=5)
        ax.set_ylim(low, high)
        ax.set_xscale("log")
        rates = sorted(t["learning_rate"].unique())
        margin = 1.3  # room beyond the first and last learning rate, as a factor
        ax.set_xticks(rates, tick_labels(rates, margin))
        ax.minorticks_off()
        ax.set_xlim(rates[0] / margin, rates[-1] * margin)
        ax.set_title(task_name(task))
        ax.set_xlabel("adapter learning rate")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("median best score × 100 (± std)")
    handles, labels = [], []
    for ax in axes[0]:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.suptitle(f"Score against learning rate (ringed: the one chosen per method and task; ▼: a median more "
                 f"than {window:g} points from the best, value written)", y=1.02)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The section


def _setup(runs: pd.DataFrame) -> str:
    def values(field):
        v = runs[field].dropna().unique() if field in runs else []
        return ", ".join(_g(float(x)) if isinstance(x, (int, float, np.number)) else str(x) for x in sorted(v))

    seeds = sorted(runs["seed"].astype(int).unique())
    return (f"Model `{values('model')}`; training examples per task: {values('max_train_samples') or 'all'}; "
            f"epochs: {values('num_train_epochs')}; seeds: {', '.join(map(str, seeds))}.")


def study_markdown(runs: pd.DataFrame, out: Path, baseline: str | None = None,
                   heading: str = "## Learned vs uniform rank at the same budget") -> tuple[str, list[Path]]:
    """The section's markdown and the figures it wrote into `out`."""
    runs = runs[runs["method"].notna()].copy()
    runs["arm"] = arm_names(runs)
    runs["params"] = adapter_params(runs)
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
    arms = _arm_order(chosen, runs, baseline)
    n_tests = int(comparisons["p_t"].notna().sum()) if not comparisons.empty else 0
    n_seeds = int(comparisons["n"].max()) if not comparisons.empty else 0

    out_lines = [heading, "", _setup(runs), "",
                 _grid_sentence(chosen) + " Scores: the best dev-set value over epochs × 100 (the adaptive "
                 "LoRA-XS study's convention); adapter parameters at the final ranks.",
                 "", f"**Baseline**: `{baseline}`" + (" (the fixed-rank arm closest in size to the learned "
                                                     "arms' budget)" if baseline else ""),
                 "", "### Summary: median ± std over seeds", "", summary_table(runs, chosen, arms, tasks), ""]
    if not comparisons.empty:
        out_lines += [f"Comparisons are paired by seed: Δ = method − baseline (mean over seeds), 95% percentile "
                      f"bootstrap interval of that mean ({BOOTSTRAP:,} resamples), two-sided paired t-test, the "
                      f"same p-value after Holm's correction over the {n_tests} comparisons of this report, and "
                      f"the exact Wilcoxon signed-rank test (with {n_seeds} paired seeds its smallest possible p is "
                      f"{2 / 2 ** n_seeds:.3g}; it is a check on the t-test's normality assumption). A "
                      f"difference is called significant when the Holm-adjusted p < {ALPHA} and the interval "
                      "excludes 0.", ""]
        answer = []
        for task in tasks:
            c = comparisons[comparisons["task"] == task]
            learned = c[c["arm"].isin(runs.loc[runs["allocation"] == "learned", "arm"])]
            for _, r in learned.iterrows():
                answer.append(f"- **{task_name(task)}**: `{r['arm']}` − `{baseline}` = "
                              f"{_signed(r['mean_diff'])} (95% CI {_signed(r['ci_low'])} to {_signed(r['ci_high'])}, "
                              f"Holm p {_p(r['p_holm'])}, n={r['n']}): **{r['verdict']}**.")
        if answer:
            out_lines += ["### The answer, per task", "", *answer, ""]
    for task in tasks:
        out_lines += [f"### {task_name(task)}", "",
                      seed_table(runs, chosen, comparisons, task, arms, baseline), ""]

    figures = []
    out = Path(out)
    figures.append(_save(draw_scores(runs, chosen, arms, tasks, baseline), out / "study_scores.png"))
    out_lines += ["![Per-seed scores per method and task](study_scores.png)", ""]
    if (chosen.groupby(["task", "arm"]).size() > 1).any():
        figures.append(_save(draw_lr_curves(chosen, arms, tasks), out / "study_learning_rates.png"))
        out_lines += ["Every learning rate of every method (a ringed point at the end of its line is a best learning "
                      "rate at the edge of its grid):", "",
                      "![Score against learning rate](study_learning_rates.png)", ""]
    grids, diagnostics = {}, []
    learned_arms = set(runs.loc[runs["allocation"] == "learned", "arm"])
    for task in tasks:
        picked = chosen[(chosen["task"] == task) & chosen["chosen"] & chosen["arm"].isin(learned_arms)]
        for _, r in picked.iterrows():
            dirs = [Path(d) for d in _runs_at(runs, task, r["arm"], r["learning_rate"])["run_dir"]]
            grid = learned_rank_grid(dirs)
            if grid is None:
                continue
            title = task_name(task) + (f"\n{r['arm']}" if len(picked) > 1 else "")
            grids[title] = grid
            diag = allocation_diagnostics(dirs)
            if diag:
                diagnostics.append({"task": task, "arm": r["arm"], "lr": r["learning_rate"], **diag})
    if grids:
        figures.append(_save(draw_learned_ranks(grids), out / "study_learned_ranks.png"))
        out_lines += ["Final ranks of the learned runs (mean over seeds at the chosen learning rate), by layer and "
                      "matrix:", "", "![Learned ranks by layer and matrix](study_learned_ranks.png)", ""]
    if diagnostics:
        out_lines += ["What training did to the allocation (allocation.jsonl, continuous ranks at the first and last "
                      "step): **moved** = |final − initial| per matrix (mean / max over matrices and seeds); "
                      "**corr(final, init)** near 1 means the final allocation is mostly its (random) "
                      "initialisation (– for a flat initialisation); **seed agreement** = mean correlation, over "
                      "pairs of seeds, of the change final − initial (near 0: the direction is seed noise; "
                      "clearly above 0: a reproducible preference); the last column is the mean change per "
                      "matrix kind.", "",
                      markdown_table(["Task", "Learned method", "LR", "Seeds", "Moved (mean / max)",
                                      "corr(final, init)", "Seed agreement", "Change by matrix kind"],
                                     [[task_name(d["task"]), d["arm"], _g(d["lr"]), str(d["runs"]),
                                       f"{d['moved']:.2f} / {d['moved_max']:.2f}", _two(d["init_corr"]),
                                       _two(d["agreement"]),
                                       ", ".join(f"{short_matrix_name(k)} {_signed(v)}" for k, v in d["by_kind"].items())]
                                      for d in diagnostics], ["l", "l", "r", "r", "l", "r", "r", "l"]), ""]
    return "\n".join(out_lines), figures


def section(ctx) -> str | None:
    """`rankwise report --study` section hook."""
    if not ctx.options.get("study"):
        return None
    text, figures = study_markdown(ctx.runs, ctx.out, ctx.options.get("study_baseline"))
    ctx.figures += figures
    return text


__all__ = ["arm_names", "select_learning_rates", "paired_comparison", "holm", "verdict", "default_baseline",
           "compare_arms", "learned_rank_grid", "allocation_diagnostics", "study_markdown", "section"]
