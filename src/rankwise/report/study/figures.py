"""Figures of the headline study (matplotlib Figures; the section writes them with `save_figure`): per-seed
scores at the chosen learning rates, score against learning rate, and the learned ranks by layer and matrix."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd

from ..figures import pyplot
from ..text import short_matrix_name, short_text, task_name
from ..stats import reported_scores


def draw_learned_ranks(grids: dict[str, pd.DataFrame], rank_range: tuple[float, float] | None = None):
    """One heatmap per task: layers (rows) × matrix kinds (columns), mean final rank over seeds."""
    tasks = list(grids)
    titles = {t: "\n".join(textwrap.fill(line, 26) for line in t.split("\n")) for t in tasks}
    lines = max(title.count("\n") + 1 for title in titles.values())
    fig, axes = pyplot().subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 1.8, 3.6 + 0.25 * lines),
                                  squeeze=False)
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
    """One panel per task: each arm's scores at its chosen learning rate on its reporting seeds (dots), median (bar)
    and the baseline's median (dashed)."""
    plt = pyplot()
    picked = chosen[chosen["chosen"]].set_index(["task", "arm"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 1.5, 0.45 * len(arms) + 1.8),
                             squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks):
        metric = runs.loc[runs["task"] == task, "metric"].dropna()
        for k, arm in enumerate(arms):
            if (task, arm) not in picked.index:
                continue
            scores = pd.Series(reported_scores(runs, chosen, task, arm), dtype=float)
            if scores.empty:
                continue
            y = len(arms) - 1 - k
            jitter = np.linspace(-0.15, 0.15, len(scores)) if len(scores) > 1 else np.zeros(len(scores))
            ax.scatter(scores, y + jitter, s=18, color=colours(k % 10), alpha=0.8, zorder=3)
            ax.plot([scores.median()] * 2, [y - 0.3, y + 0.3], color=colours(k % 10), lw=2.5, zorder=4)
            if arm == baseline:
                ax.axvline(scores.median(), color="0.4", ls="--", lw=1, zorder=1)
        ax.set_title(task_name(task))
        name = metric.iloc[0].replace("eval_", "").replace("_", " ") if len(metric) else "score"
        ax.set_xlabel(f"best {name} × 100")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(arms)), list(reversed(arms)))
    fig.suptitle("Scores at each method's chosen learning rate, reporting seeds only\n(dots: seeds; bar: median; "
                 "dashed: baseline median)", y=1.04)
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
        labels.append(short_text(rate) if keep else "")
        last = rate if keep else last
    return labels


def draw_lr_curves(chosen: pd.DataFrame, arms: list[str], tasks: list[str], window: float = 10.0):
    """One panel per task: each arm's median score (± std over seeds) against its learning rate, the chosen
    one ringed. A chosen learning rate at the end of its arm's grid is where the grid may stop short. The y axis
    spans at most `window` points from the task's best median on the worse side (a third of that on the better
    side); a median outside (a collapsed run) is drawn as a triangle on the edge with its value."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks) + 2.5, 3.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks):
        _lr_panel(ax, chosen[chosen["task"] == task], arms, colours, window)
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


def _lr_panel(ax, t: pd.DataFrame, arms: list[str], colours, window: float) -> None:
    """One task's panel of `draw_lr_curves` (`t`: its rows of the learning-rate table)."""
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
