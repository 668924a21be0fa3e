"""The budget frontier figure: score against adapter parameters (log scale), one line per arm through its medians
over seeds, min–max bars, the seeds as faint dots, and uniform's score at its largest budget as a dashed line."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from ..figures import palette, pyplot
from ..placement.analysis import size_levels
from ..study.figures import tick_labels
from ..text import thousands

DODGE = 0.035  # decades between neighbouring arms at one budget, so that their seeds do not hide each other
SPREAD = 0.1  # at most this many decades between the first and the last arm (a point stays by its budget)
MARGIN = 1.5  # room beyond the smallest and largest adapter, as a factor


def draw_frontier(points: pd.DataFrame, arms: list[str], ylabel: str, title: str,
                  reference: pd.Series | None = None):
    """One task's frontier. `points`: `frontier_points` rows of the task; `arms`: in legend order; `reference`:
    the uniform point whose median is drawn dashed (None: no line)."""
    fig, ax = pyplot().subplots(figsize=(8.6, 4.8))
    low, high = _window(points)
    dodge = min(DODGE, SPREAD / max(len(arms) - 1, 1))
    colours = arm_colours(arms, reference["arm"] if reference is not None else None)
    for k, (arm, colour) in enumerate(zip(arms, colours)):
        shift = 10 ** (dodge * (k - (len(arms) - 1) / 2))
        _draw_arm(ax, points[points["arm"] == arm].sort_values("params"), shift, colour, arm, (low, high))
    ax.set_ylim(low, high)
    if reference is not None:
        ax.axhline(reference["median"], color="0.45", ls="--", lw=1, zorder=1,
                   label=_wrap(f"reference: {reference['arm']} {reference['budget']}, {reference['median']:.2f}"))
    if points["edge"].isin(["lowest", "highest"]).any():
        ax.plot([], [], ls="none", marker="o", mfc="white", mec="0.3", label="open: best LR at the edge of its grid")
    _log_axis(ax, points.dropna(subset=["params"]))
    ax.set_xlabel("adapter parameters at the final ranks (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    first = [labels.index(_wrap(arm)) for arm in arms if _wrap(arm) in labels]  # arms first, then the notes
    order = first + [i for i in range(len(labels)) if i not in first]
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left", bbox_to_anchor=(1.02, 1.0),
              fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def arm_colours(arms: list[str], baseline: str | None) -> list:
    """One colour per arm, none repeated: the baseline (uniform) black, the others from tab10, or tab20 when
    more than ten arms would otherwise share colours."""
    others = [arm for arm in arms if arm != baseline]
    cycle = palette() if len(others) <= 10 else pyplot().get_cmap("tab20").colors
    picked = iter(cycle[k % len(cycle)] for k in range(len(others)))
    return ["black" if arm == baseline else next(picked) for arm in arms]


def _window(points: pd.DataFrame) -> tuple[float, float]:
    """The y range: every median with room around it, and every seed up to one span of the medians beyond them
    (a collapsed seed further out would squash every line into a band: it is drawn on the edge)."""
    medians = points["median"].to_numpy(float)
    scores = np.concatenate([np.asarray(s, float) for s in points["scores"]])
    span = max(1.0, medians.max() - medians.min())
    pad = 0.2 * span
    low = min(medians.min() - pad, max(scores.min(), medians.min() - span))
    high = max(medians.max() + pad, min(scores.max(), medians.max() + span))
    return low - 0.04 * (high - low), high + 0.04 * (high - low)


def _draw_arm(ax, g: pd.DataFrame, shift: float, colour, arm: str, window: tuple[float, float]) -> None:
    """An arm's medians joined by a line, min–max bars, its seeds as dots (one outside the y range as a triangle
    on the edge, with its value); a best learning rate at the edge of its grid as an open marker."""
    x = g["params"].to_numpy(float) * shift
    low = np.array([min(s) for s in g["scores"]])
    high = np.array([max(s) for s in g["scores"]])
    median = g["median"].to_numpy(float)
    ax.errorbar(x, median, yerr=[median - low, high - median], color=colour, lw=1.6, capsize=3, elinewidth=1,
                zorder=3, label=_wrap(arm))
    for xi, scores in zip(x, g["scores"]):
        ax.scatter([xi] * len(scores), scores, s=10, color=colour, alpha=0.3, lw=0, zorder=2)
        for under, edge in ((True, window[0]), (False, window[1])):
            outside = sorted(v for v in scores if (v < edge if under else v > edge))
            if outside:  # one marker and one label per edge, so that two seeds do not print over each other
                ax.scatter([xi], [edge], marker="v" if under else "^", s=40, color=colour, zorder=5, clip_on=False)
                ax.annotate(", ".join(f"{v:.1f}" for v in outside), (xi, edge), textcoords="offset points",
                            xytext=(4, 3 if under else -9), fontsize=7, color=colour)
    edge = g["edge"].isin(["lowest", "highest"]).to_numpy()
    ax.scatter(x[~edge], median[~edge], s=30, color=colour, zorder=4)
    ax.scatter(x[edge], median[edge], s=30, facecolors="white", edgecolors=colour, linewidths=1.5, zorder=4)


def _log_axis(ax, points: pd.DataFrame) -> None:
    """Log x axis with a tick at each adapter size (sizes within 10% share one, uniform's sizes first), labelled
    `4,800`, with uniform's rank under it when there is one uniform arm; labels that would print over each other
    are left off."""
    ordered = points.sort_values(["uniform", "params"], ascending=[False, True], kind="stable")
    levels = size_levels(ordered["params"].tolist(), 0.1)
    ticks = ordered[[levels.index(level) == i for i, level in enumerate(levels)]].sort_values("params")
    one_uniform = ordered.loc[ordered["uniform"], "arm"].nunique() == 1
    names = [thousands(t.params) + (f"\n{t.budget}" if one_uniform and t.uniform else "") for t in ticks.itertuples()]
    shown = tick_labels(ticks["params"].tolist(), MARGIN)
    ax.set_xscale("log")
    ax.set_xticks(ticks["params"], [name if label else "" for name, label in zip(names, shown)])
    ax.minorticks_off()
    ax.set_xlim(ticks["params"].min() / MARGIN, ticks["params"].max() * MARGIN)


def _wrap(text: str, width: int = 34) -> str:
    return "\n".join(textwrap.wrap(text, width))
