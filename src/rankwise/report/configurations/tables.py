"""Markdown tables of the per-task part of a report. The learned-allocation table has the adaptive LoRA-XS study's
layout exactly: `| Task | Rank Min | Rank Max | Alpha Min | Alpha Max | LR | Rank Avg | Median ± Std |`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..aggregate import METHOD_NAMES, rank_text
from ..stats import MIN_PAIRS, detectable_difference, t_interval
from ..text import DASH, is_missing, markdown_table, median_std, number, short_text, signed, thousands

ADAPTIVE_HEADER = ["Task", "Rank Min", "Rank Max", "Alpha Min", "Alpha Max", "LR", "Rank Avg", "Median ± Std"]


def group_key(values) -> tuple:
    """A hashable key of group values in which every kind of missing value (None, NaN) is None."""
    return tuple(None if is_missing(v) else v for v in values)


def rank_avg_cell(group) -> tuple[str, bool]:
    """(cell, is_derived): the configured rank_average, else the mean final hard rank (memory schedules)."""
    value = group.get("rank_average")
    if not is_missing(value):
        return short_text(float(value)), False
    hard = group.get("mean_hard_rank")
    return (f"{hard:.1f}*", True) if not is_missing(hard) else (DASH, False)


def adaptive_table(groups: pd.DataFrame) -> tuple[str, bool]:
    """The study's table for learned-allocation configurations (rows in the order given: best first).
    Returns (markdown, whether a Rank Avg cell is a derived mean hard rank)."""
    rows, derived = [], False
    for _, g in groups.iterrows():
        avg, is_derived = rank_avg_cell(g)
        derived |= is_derived
        rows.append([str(g.get("task")), number(g.get("rank_min")), number(g.get("rank_max")),
                     number(g.get("alpha_min")), number(g.get("alpha_max")), number(g.get("rank_allocation_lr")),
                     avg, median_std(g["median"], g["std"])])
    return markdown_table(ADAPTIVE_HEADER, rows, ["l", "r", "r", "r", "r", "r", "r", "l"]), derived


def duration(seconds) -> str:
    """`42s`, `3.5 min`, `1.2 h`."""
    if is_missing(seconds):
        return DASH
    if seconds < 90:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def configurations_table(groups: pd.DataFrame, baselines: dict[str, float] | None = None) -> str:
    """Every configuration (learned or not) with its ranks, size, median ± std, final-epoch median and the
    difference of medians to each baseline."""
    baselines = baselines or {}
    header = ["Configuration", "Task", "Method", "Ranks", "LR", "Adapter params", "Median ± Std", "Final (median)",
              "Best epoch", "Seeds", "Time/run"]
    header += [f"Δ vs {name}" for name in baselines]
    rows = []
    for _, g in groups.iterrows():
        lr = number(g.get("learning_rate"))
        row = [str(g["label"]), str(g.get("task")), METHOD_NAMES.get(g.get("method"), str(g.get("method"))),
               rank_text(g), lr, thousands(g.get("params_median")), median_std(g["median"], g["std"]),
               number(g.get("final_median"), ".2f"), number(g.get("best_epoch_median")),
               f"{g['n']}" + (f" (+{g['not_completed']} not completed)" if g["not_completed"] else ""),
               duration(g.get("wall_time_median"))]
        for label in baselines:
            row.append(difference_cell(g, groups.loc[groups["label"] == label].iloc[0]))
        rows.append(row)
    align = ["l", "l", "l", "l", "r", "r", "l", "r", "r", "r", "r"] + ["r"] * len(baselines)
    return markdown_table(header, rows, align)


def difference_cell(config, baseline) -> str:
    """Configuration − baseline: the mean of the differences paired by seed with its 95% t-interval and the smallest
    difference the design detects (80% power, α 0.05 unadjusted), `+1.20 [-0.40, +2.80] (n=5, detectable 1.90)`;
    with fewer than MIN_PAIRS shared seeds the difference of medians, marked exploratory."""
    if config["label"] == baseline["label"]:
        return ""
    mine = dict(zip(config["seeds"], config["scores"]))
    theirs = dict(zip(baseline["seeds"], baseline["scores"]))
    shared = sorted(set(mine) & set(theirs))
    if len(shared) >= MIN_PAIRS:
        diffs = np.array([mine[s] - theirs[s] for s in shared])
        low, high = t_interval(diffs)
        detectable = detectable_difference(len(diffs), float(diffs.std(ddof=1)))
        return (f"{signed(diffs.mean())} [{signed(low)}, {signed(high)}] (n={len(shared)}"
                + ("" if is_missing(detectable) else f", detectable {detectable:.2f}") + ")")
    if is_missing(config["median"]) or is_missing(baseline["median"]):
        return DASH
    return f"{signed(config['median'] - baseline['median'])} (medians; n={len(shared)} paired: exploratory)"


def groups_table(groups: pd.DataFrame, by: list[str], best: dict) -> str:
    """One row per value of the `--group_by` fields: its configurations, runs and median ± std over all its
    completed runs, and its best configuration."""
    header = [*by, "Configurations", "Runs", "Median ± Std (all runs)", "Best configuration", "Its Median ± Std"]
    rows = []
    for _, g in groups.iterrows():
        top = best.get(group_key(g[b] for b in by))
        rows.append([*(number(g[b]) if not is_missing(g[b]) else "– (does not apply)" for b in by), str(g["configs"]),
                     str(g["n"]), median_std(g["median"], g["std"]),
                     top["label"] if top is not None else DASH,
                     median_std(top["median"], top["std"]) if top is not None else DASH])
    return markdown_table(header, rows, ["l"] * len(by) + ["r", "r", "l", "l", "l"])


def not_completed_table(df: pd.DataFrame) -> str:
    """Runs that diverged or failed, with their message (never part of any statistic)."""
    rows = [[str(r["label"]), str(r["seed"]), str(r["status"]), number(r.get("epochs_completed")),
             str(r.get("message") or DASH).replace("\n", " "), f"`{r['run_name']}`"]
            for _, r in df.iterrows()]
    return markdown_table(["Configuration", "Seed", "Status", "Epochs done", "Message", "Run"], rows,
                          ["l", "r", "l", "r", "l", "l"])
