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

import pandas as pd

from ..aggregate import load_runs
from ..context import ReportContext
from ..text import DASH, markdown_table, median_std
from .analysis import LOSS, PERPLEXITY, TASK, compare_with_uniform, strategy_stats
from .figures import write_figures

RUNS_CSV = "placement_runs.csv"
CSV_COLUMNS = {"label": "strategy", "seed": "seed", "status": "status", LOSS: "eval_loss", PERPLEXITY: "perplexity",
               "params_adapter_at_hard_ranks": "trainable_params", "model_parameters": "model_params",
               "wall_time_s": "wall_time_s", "skipped_steps": "skipped_steps", "run_name": "run"}


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
    write_runs_csv(runs, out_dir)
    parts += [f"Every run: [{RUNS_CSV}]({RUNS_CSV}).", ""]
    if (stats["completed"] > 0).any():
        for name, title in write_figures(runs, stats, comparisons, out_dir):
            parts += [f"![{title}]({name})", ""]
    return "\n".join(parts).rstrip() + "\n"


def write_runs_csv(runs: pd.DataFrame, out_dir: Path) -> Path:
    """placement_runs.csv in `out_dir`: one row per run (strategy, seed, status, eval loss, perplexity, size,
    time), written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    per_run = runs.reindex(columns=list(CSV_COLUMNS)).rename(columns=CSV_COLUMNS).sort_values(["strategy", "seed"])
    tmp = out_dir / f".{RUNS_CSV}.tmp"
    per_run.to_csv(tmp, index=False)
    tmp.replace(out_dir / RUNS_CSV)
    return out_dir / RUNS_CSV


def placement_report(run_dirs: list[Path], out_dir: Path) -> str:
    """Markdown section (and figures in out_dir) for the alpaca runs under `run_dirs`."""
    runs = load_runs(run_dirs)
    runs = runs[runs["task"] == TASK] if not runs.empty else runs
    if runs.empty:
        return "## Layer-wise rank placement\n\nNo instruction-tuning (alpaca) runs found.\n"
    return placement_markdown(runs.reset_index(drop=True), Path(out_dir))


def section(ctx: ReportContext) -> str | None:
    """`rankwise report` section (ReportContext): the alpaca runs among the report's inputs, if any."""
    runs = ctx.runs[ctx.runs["task"] == TASK] if not ctx.runs.empty else ctx.runs
    if runs.empty:
        return None
    markdown = placement_markdown(runs.reset_index(drop=True), Path(ctx.out))
    ctx.add_linked_figures(markdown)
    return markdown
