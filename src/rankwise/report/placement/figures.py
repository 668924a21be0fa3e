"""Figures of the layer-wise placement study (the published study's three): eval loss against adapter size,
the strategies compared (with the paired differences to uniform), and the efficiency frontier (eval loss
against size and against training time)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..figures import pyplot, save_figure
from .analysis import LOSS, pareto_front, size_levels

FIGURES = {"parameters": "placement_performance_vs_parameters.png",
           "bars": "placement_strategy_comparison.png",
           "frontier": "placement_efficiency_frontier.png"}
DPI = 120


def write_figures(runs: pd.DataFrame, stats: pd.DataFrame, comparisons: list[dict],
                  out_dir: Path) -> list[tuple[str, str]]:
    """Draw the three figures into `out_dir`; returns (file name, title) of each one drawn."""
    figures = [(FIGURES["parameters"], draw_performance_vs_parameters(runs, stats), "Performance vs parameters"),
               (FIGURES["bars"], draw_strategy_comparison(runs, stats, comparisons), "Strategy comparison"),
               (FIGURES["frontier"], draw_efficiency_frontier(stats), "Efficiency frontier")]
    return [(name, title) for name, fig, title in figures if save_figure(fig, Path(out_dir) / name, dpi=DPI)]


def _colours(labels: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _per_run(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs["status"] == "completed"].copy()
    ok["params_m"] = ok["params_adapter_at_hard_ranks"].astype(float) / 1e6
    return ok


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
    plt = pyplot()
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
    plt = pyplot()
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


def draw_efficiency_frontier(stats: pd.DataFrame):
    plt = pyplot()
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
