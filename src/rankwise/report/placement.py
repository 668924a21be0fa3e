"""The layer-wise placement study's report section: rank-placement strategies on instruction tuning.

`placement_report(run_dirs, out_dir)` reads alpaca runs (any mix of strategies and seeds), groups them by
configuration (its `label`, e.g. "linear decay 16→4") and returns a markdown section with

- the study's table: strategy | eval loss | perplexity | trainable params (M) | % of model | training time,
  median ± std over seeds (completed runs only; diverged and failed runs are counted and listed, never shown
  as numbers);
- the comparison with uniform rank at equal budget: for every budget-matched strategy, the per-seed paired
  difference in eval loss to the uniform configuration with the same adapter size, Welch's t-test, and
  whether the seed ranges separate;
- the published study's figures (PNG, written to out_dir): performance vs parameters, strategy comparison
  bars with seed spread, and the efficiency frontier (eval loss vs parameters and vs training time);
- `placement_runs.csv` in out_dir: one row per run (strategy, seed, status, eval loss, perplexity, size, time).

`section(ctx)` is the same for `rankwise report` (ReportContext), for the alpaca runs among its inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .aggregate import group_runs, load_runs
from .tables import DASH, markdown_table, median_std

TASK = "alpaca"
LOSS = "best:eval_loss"
PERPLEXITY = "best:eval_perplexity"
FIGURES = {"parameters": "placement_performance_vs_parameters.png",
           "bars": "placement_strategy_comparison.png",
           "frontier": "placement_efficiency_frontier.png"}
RUNS_CSV = "placement_runs.csv"
CSV_COLUMNS = {"label": "strategy", "seed": "seed", "status": "status", LOSS: "eval_loss", PERPLEXITY: "perplexity",
               "params_adapter_at_hard_ranks": "trainable_params", "model_parameters": "model_params",
               "wall_time_s": "wall_time_s", "skipped_steps": "skipped_steps", "run_name": "run"}


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------

def _median_std(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    return float(np.median(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def strategy_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (label) over its completed seeds: loss/ppl/params/time medians and stds,
    per-seed losses, run counts. Sorted by median eval loss (best first); configurations with no completed
    run last."""
    groups = group_runs(runs)
    rows = []
    for _, group in groups.iterrows():
        members = runs[runs["label"] == group["label"]]
        ok = members[members["status"] == "completed"].sort_values("seed")
        loss = ok[LOSS].to_numpy(dtype=float) if LOSS in ok else np.array([])
        ppl = ok[PERPLEXITY].to_numpy(dtype=float) if PERPLEXITY in ok else np.array([])
        params = members["params_adapter_at_hard_ranks"].astype(float)
        model = members["model_parameters"].astype(float)
        rows.append({
            "label": group["label"], "allocation": group.get("allocation"), "rank": group.get("rank"),
            "match_budget": bool(group.get("match_budget")) if group.get("match_budget") is not None else False,
            "runs": len(members), "completed": len(ok),
            "not_completed": int((members["status"] != "completed").sum()),
            "loss": _median_std(loss), "perplexity": _median_std(ppl),
            "losses": dict(zip(ok["seed"].astype(int), loss)),
            "params": float(params.median()) if params.notna().any() else math.nan,
            "percent": float((100 * params / model).median()) if params.notna().any() else math.nan,
            "time": _median_std(ok["wall_time_s"].to_numpy(dtype=float)),
        })
    stats = pd.DataFrame(rows)
    if stats.empty:
        return stats
    stats["loss_median"] = [s[0] for s in stats["loss"]]
    return stats.sort_values("loss_median", na_position="last", kind="stable").reset_index(drop=True)


def uniform_reference(stats: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """The uniform configuration a budget-matched strategy is compared with: same adapter size (within 1%)."""
    uniform = stats[(stats["allocation"] == "uniform") & (stats["completed"] > 0)]
    if uniform.empty or math.isnan(row["params"]):
        return None
    gap = (uniform["params"] - row["params"]).abs() / row["params"]
    return uniform.loc[gap.idxmin()] if gap.min() <= 0.01 else None


def compare_with_uniform(stats: pd.DataFrame) -> list[dict]:
    """Per budget-matched strategy with completed runs: paired per-seed differences in eval loss to uniform at
    the same budget (negative = better than uniform), Welch's t-test and whether the seed ranges separate."""
    from scipy.stats import ttest_ind, ttest_rel

    out = []
    for _, row in stats.iterrows():
        if row["allocation"] == "uniform" or not row["completed"]:
            continue
        reference = uniform_reference(stats, row)
        if reference is None:
            continue
        seeds = sorted(set(row["losses"]) & set(reference["losses"]))
        diffs = np.array([row["losses"][s] - reference["losses"][s] for s in seeds])
        mine, theirs = np.array(list(row["losses"].values())), np.array(list(reference["losses"].values()))
        p_value = float(ttest_ind(mine, theirs, equal_var=False).pvalue) if min(len(mine), len(theirs)) > 1 \
            else math.nan
        paired_p = float(ttest_rel([row["losses"][s] for s in seeds], [reference["losses"][s] for s in seeds]).pvalue) \
            if len(seeds) > 1 else math.nan
        enough = min(len(mine), len(theirs)) > 1  # one seed says nothing about seed noise
        out.append({"label": row["label"], "reference": reference["label"], "seeds": seeds, "diffs": diffs,
                    "median_diff": float(np.median(diffs)) if len(diffs) else math.nan,
                    "p_value": p_value, "paired_p": paired_p, "enough_seeds": enough,
                    "consistent": len(diffs) > 1 and bool((diffs > 0).all() or (diffs < 0).all()),
                    "better": enough and bool(mine.max() < theirs.min()),
                    "worse": enough and bool(mine.min() > theirs.max())})
    return out


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return DASH
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _time_cell(time: tuple[float, float]) -> str:
    median, std = time
    if math.isnan(median):
        return DASH
    return _duration(median) + ("" if math.isnan(std) else f" ± {_duration(std)}")


def _strategy_cell(row: pd.Series) -> str:
    note = " ‡" if row["match_budget"] else ""
    runs = f" ({row['completed']}/{row['runs']} runs)" if row["not_completed"] else ""
    return f"{row['label']}{note}{runs}"


def results_table(stats: pd.DataFrame) -> str:
    header = ["Strategy", "Eval loss", "Perplexity", "Trainable params (M)", "% of model", "Training time"]
    rows = [[_strategy_cell(r), median_std(*r["loss"], digits=4), median_std(*r["perplexity"], digits=3),
             f"{r['params'] / 1e6:.3f}" if not math.isnan(r["params"]) else DASH,
             f"{r['percent']:.3f}" if not math.isnan(r["percent"]) else DASH, _time_cell(r["time"])]
            for _, r in stats.iterrows()]
    return markdown_table(header, rows, ["l", "r", "r", "r", "r", "r"])


def comparison_text(comparisons: list[dict]) -> str:
    if not comparisons:
        return ""
    header = ["Strategy", "vs", "Δ eval loss per seed", "median Δ", "Welch p", "paired p", "Seed ranges"]
    rows = []
    for c in comparisons:
        per_seed = ", ".join(f"{d:+.4f}" for d in c["diffs"]) or DASH
        verdict = "better, separated" if c["better"] else "worse, separated" if c["worse"] else \
            "overlap" if c["enough_seeds"] else "too few seeds"
        rows.append([c["label"], c["reference"], per_seed, f"{c['median_diff']:+.4f}",
                     f"{c['p_value']:.3f}" if not math.isnan(c["p_value"]) else DASH,
                     f"{c['paired_p']:.3f}" if not math.isnan(c["paired_p"]) else DASH, verdict])
    better = [c["label"] for c in comparisons if c["better"]]
    worse = [c["label"] for c in comparisons if c["worse"]]
    if better:
        verdict = (f"**{', '.join(better)}** beat{'s' if len(better) == 1 else ''} uniform rank at equal budget "
                   "beyond seed noise (every seed better than every uniform seed).")
    else:
        verdict = ("**No strategy beats uniform rank at equal budget beyond seed noise**: each one's seed range "
                   "overlaps uniform's or lies above it (or has fewer than two completed seeds).")
    if worse:
        verdict += f" Worse than uniform beyond seed noise: {', '.join(worse)}."
    paired = [c for c in comparisons if c["consistent"] and not (c["better"] or c["worse"])
              and not math.isnan(c["paired_p"]) and c["paired_p"] < 0.05]
    if paired:
        shifts = ", ".join(f"{c['label']} ({'worse' if c['median_diff'] > 0 else 'better'} on every seed, "
                           f"median Δ {c['median_diff']:+.4f}, paired p {c['paired_p']:.3f})" for c in paired)
        verdict += (f" Paired by seed, some differences have a consistent sign although the seed ranges overlap: "
                    f"{shifts}. Such a shift is real for this data order but smaller than the spread between "
                    "seeds of one configuration.")
    return ("Budget-matched strategies against uniform rank with the same number of trainable parameters "
            "(Δ < 0: lower eval loss than uniform; seeds paired, so each difference shares the data order):\n\n"
            + markdown_table(header, rows, ["l", "l", "l", "r", "r", "r", "l"]) + "\n\n" + verdict)


def not_completed_text(runs: pd.DataFrame) -> str:
    bad = runs[runs["status"] != "completed"]
    if bad.empty:
        return "All runs completed (no diverged or failed run)."
    counts = bad["status"].value_counts()
    lines = [f"{len(bad)} run(s) did not complete ({', '.join(f'{n} {s}' for s, n in counts.items())}); they are "
             "left out of the statistics:", ""]
    for _, r in bad.iterrows():
        message = str(r.get("message") or "").splitlines()[0][:300]
        lines.append(f"- `{r['run_name']}` ({r['label']}, seed {r['seed']}): **{r['status']}**"
                     + (f": {message}" if message else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def _colours(labels: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _per_run(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs["status"] == "completed"].copy()
    ok["params_m"] = ok["params_adapter_at_hard_ranks"].astype(float) / 1e6
    return ok


def size_levels(params: list[float], tolerance: float = 0.01) -> list[int]:
    """Index of each size's level: sizes within `tolerance` (relative) of a level's first size share it."""
    levels: list[float] = []
    out = []
    for value in params:
        match = next((i for i, level in enumerate(levels) if abs(value - level) <= tolerance * level), None)
        if match is None:
            levels.append(value)
            match = len(levels) - 1
        out.append(match)
    return out


def _dodged_sizes(stats: pd.DataFrame) -> dict[str, float]:
    """x position (millions) per label: strategies of (nearly) equal size are spread sideways to stay visible."""
    params = [p / 1e6 for p in stats["params"]]
    levels = size_levels(params)
    width = 0.015 * max(max(params) - min(params), max(params) * 0.2)
    out = {}
    for level in set(levels):
        members = [i for i, lv in enumerate(levels) if lv == level]
        for k, i in enumerate(members):
            out[stats["label"].iloc[i]] = params[i] + (k - (len(members) - 1) / 2) * width
    return out


def draw_performance_vs_parameters(runs: pd.DataFrame, stats: pd.DataFrame):
    import matplotlib.pyplot as plt

    ok = _per_run(runs)
    shown = stats[stats["completed"] > 0].reset_index(drop=True)
    colours = _colours(list(stats["label"]))
    x = _dodged_sizes(shown)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for _, s in shown.iterrows():
        mine = ok[ok["label"] == s["label"]]
        ax.scatter(np.full(len(mine), x[s["label"]]), mine[LOSS], color=colours[s["label"]], alpha=0.35, s=18)
        median, std = s["loss"]
        ax.errorbar(x[s["label"]], median, yerr=0 if math.isnan(std) else std, fmt="o", ms=7, capsize=4,
                    color=colours[s["label"]], label=s["label"] + (" (budget-matched)" if s["match_budget"] else ""))
    ax.set_xlabel("trainable adapter parameters (millions; equal sizes spread sideways)")
    ax.set_ylabel("eval loss (mean token cross-entropy, nats)")
    ax.set_title("Eval loss vs adapter size\n(dots: seeds; markers: median ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def draw_strategy_comparison(runs: pd.DataFrame, stats: pd.DataFrame, comparisons: list[dict]):
    import matplotlib.pyplot as plt

    ok = _per_run(runs)
    shown = stats[stats["completed"] > 0].reset_index(drop=True)
    colours = _colours(list(stats["label"]))
    panels = 2 if comparisons else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.8), squeeze=False)
    ax = axes[0, 0]
    medians = np.array([s["loss"][0] for _, s in shown.iterrows()])
    stds = np.array([0 if math.isnan(s["loss"][1]) else s["loss"][1] for _, s in shown.iterrows()])
    x = np.arange(len(shown))
    ax.bar(x, medians, yerr=stds, capsize=4, color=[colours[label] for label in shown["label"]], alpha=0.75)
    for i, label in enumerate(shown["label"]):
        values = ok[ok["label"] == label][LOSS].to_numpy(dtype=float)
        ax.scatter(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, color="black", s=12,
                   zorder=3)
    spread = np.concatenate([medians - stds, medians + stds, ok[LOSS].to_numpy(dtype=float)])
    low, high = float(np.nanmin(spread)), float(np.nanmax(spread))
    pad = max(high - low, 1e-3) * 0.3
    ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(x, [label.replace(" (", "\n(") for label in shown["label"]], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"eval loss (nats; axis starts at {low - pad:.3f})")
    ax.set_title("Eval loss by strategy\n(bars: median, whiskers: std, dots: seeds; lower is better)")
    ax.grid(axis="y", alpha=0.3)
    if comparisons:
        ax = axes[0, 1]
        x = np.arange(len(comparisons))
        medians = [c["median_diff"] for c in comparisons]
        ax.bar(x, medians, color=[colours[c["label"]] for c in comparisons], alpha=0.75)
        for i, c in enumerate(comparisons):
            ax.scatter(np.full(len(c["diffs"]), i) + np.linspace(-0.15, 0.15, len(c["diffs"])), c["diffs"],
                       color="black", s=12, zorder=3)
        ax.axhline(0, color="grey", lw=1)
        ax.set_xticks(x, [c["label"] for c in comparisons], rotation=30, ha="right", fontsize=8)
        reference = comparisons[0]["reference"] if len({c["reference"] for c in comparisons}) == 1 else "uniform"
        ax.set_ylabel(f"Δ eval loss vs {reference} (nats)")
        ax.set_title(f"Budget-matched strategies minus {reference}, paired by seed\n"
                     "(bars: median, dots: seeds; below 0 = better than uniform)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def pareto_front(points: list[tuple[float, float, str]], tolerance: float = 0.0) -> list[tuple[float, float, str]]:
    """Points (cost, loss, label) that no point beats: none with lower loss at a cost no higher (costs within
    `tolerance`, relative, count as equal). Sorted by cost."""
    levels = size_levels([p[0] for p in points], tolerance) if tolerance else list(range(len(points)))
    best_per_level: dict[int, tuple[float, float, str]] = {}
    for level, point in zip(levels, points):
        if level not in best_per_level or point[1] < best_per_level[level][1]:
            best_per_level[level] = point
    front, best = [], math.inf
    for cost, loss, label in sorted(best_per_level.values(), key=lambda p: (p[0], p[1])):
        if loss < best:
            front.append((cost, loss, label))
            best = loss
    return front


def draw_efficiency_frontier(stats: pd.DataFrame):
    import matplotlib.pyplot as plt

    shown = stats[stats["completed"] > 0].reset_index(drop=True)
    colours = _colours(list(stats["label"]))
    dodged = _dodged_sizes(shown)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, key, xlabel in ((axes[0], "params", "trainable adapter parameters (millions; equal sizes spread sideways)"),
                            (axes[1], "time", "training time per run (minutes, median over seeds)")):
        points = []
        for _, s in shown.iterrows():
            cost = s["params"] / 1e6 if key == "params" else s["time"][0] / 60
            x = dodged[s["label"]] if key == "params" else cost
            median, std = s["loss"]
            ax.errorbar(x, median, yerr=0 if math.isnan(std) else std, fmt="o", ms=7, capsize=4,
                        color=colours[s["label"]], label=s["label"])
            points.append((cost, median, s["label"]))
        # Adapter sizes within 1% are one budget; training times are compared as measured.
        front = pareto_front(points, tolerance=0.01 if key == "params" else 0.0)
        xs = [dodged[p[2]] if key == "params" else p[0] for p in front]
        ax.plot(xs, [p[1] for p in front], color="black", lw=1.2, ls="--", marker="s", ms=10, mfc="none",
                label="efficiency frontier (best loss for its cost)")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("eval loss (nats, median ± std over seeds)")
    axes[0].set_title("Eval loss vs adapter size")
    axes[1].set_title("Eval loss vs training time")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Efficiency frontier of rank-placement strategies")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def _save(fig, path: Path) -> Path:
    from .plots import _save as save_figure

    return save_figure(fig, path, dpi=120)


# ---------------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------------

def _setup_text(runs: pd.DataFrame) -> str:
    first = runs.iloc[0]
    seeds = sorted(int(s) for s in runs["seed"].unique())
    parts = [f"model `{first.get('model')}`", f"method {first.get('method')}",
             f"{len(runs['label'].unique())} strategies × seeds {', '.join(map(str, seeds))} ({len(runs)} runs)"]
    for field, text in (("max_train_samples", "{} training examples"), ("eval_size", "{}-example held-out eval split"),
                        ("num_train_epochs", "{} epoch(s)"), ("learning_rate", "lr {:g}"),
                        ("alpha_policy", "alpha policy `{}`"), ("max_seq_length", "max {} tokens")):
        values = runs[field].dropna().unique() if field in runs else []
        if len(values) == 1:
            parts.append(text.format(values[0]))
    return "Setup: " + ", ".join(parts) + "."


def placement_markdown(runs: pd.DataFrame, out_dir: Path, heading: str = "## Layer-wise rank placement") -> str:
    """The section for `runs` (load_runs rows of alpaca runs); figures go to out_dir."""
    out_dir = Path(out_dir)
    stats = strategy_stats(runs)
    comparisons = compare_with_uniform(stats)
    parts = [heading, "", _setup_text(runs), "",
             "Eval loss is the mean token cross-entropy over the held-out split (response tokens only), perplexity "
             "its exponential; both at the best epoch. Median ± sample std over completed seeds; training time is "
             "wall time per run (training and its evaluations). ‡ = budget-matched (`--match_budget`) to the "
             "uniform configuration of the same size.", "", results_table(stats), ""]
    text = comparison_text(comparisons)
    if text:
        parts += [text, ""]
    parts += [not_completed_text(runs), ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    per_run = runs.reindex(columns=list(CSV_COLUMNS)).rename(columns=CSV_COLUMNS).sort_values(["strategy", "seed"])
    tmp = out_dir / f".{RUNS_CSV}.tmp"
    per_run.to_csv(tmp, index=False)
    tmp.replace(out_dir / RUNS_CSV)
    parts += [f"Every run: [{RUNS_CSV}]({RUNS_CSV}).", ""]
    if (stats["completed"] > 0).any():
        figures = [(FIGURES["parameters"], draw_performance_vs_parameters(runs, stats), "Performance vs parameters"),
                   (FIGURES["bars"], draw_strategy_comparison(runs, stats, comparisons), "Strategy comparison"),
                   (FIGURES["frontier"], draw_efficiency_frontier(stats), "Efficiency frontier")]
        for name, fig, title in figures:
            _save(fig, out_dir / name)
            parts += [f"![{title}]({name})", ""]
    return "\n".join(parts).rstrip() + "\n"


def placement_report(run_dirs: list[Path], out_dir: Path) -> str:
    """Markdown section (and figures in out_dir) for the alpaca runs under `run_dirs`."""
    runs = load_runs(run_dirs)
    runs = runs[runs["task"] == TASK] if not runs.empty else runs
    if runs.empty:
        return "## Layer-wise rank placement\n\nNo instruction-tuning (alpaca) runs found.\n"
    return placement_markdown(runs.reset_index(drop=True), Path(out_dir))


def section(ctx) -> str | None:
    """`rankwise report` section (ReportContext): the alpaca runs among the report's inputs, if any."""
    runs = ctx.runs[ctx.runs["task"] == TASK] if not ctx.runs.empty else ctx.runs
    if runs.empty:
        return None
    markdown = placement_markdown(runs.reset_index(drop=True), Path(ctx.out))
    ctx.figures.extend(Path(ctx.out) / name for name in FIGURES.values() if (Path(ctx.out) / name).is_file())
    return markdown
