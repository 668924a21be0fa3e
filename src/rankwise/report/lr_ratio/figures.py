"""Figures of the LR-ratio study: validation loss against learning rate (one panel per method and α policy, one
curve per rank) and the optimal-LR ratio to full fine-tuning against rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...methods import FULL_FINETUNING
from ..figures import save_figure
from .analysis import METHOD_NAMES, POLICY_NAMES, REFERENCE_RATIO, is_reference


def _panels(points: pd.DataFrame) -> list[tuple[str, str | None]]:
    adapters = points[~points["method"].map(is_reference)]
    keys = set(zip(adapters["method"], adapters["alpha_policy"]))
    policies = list(POLICY_NAMES)
    keys = sorted(keys, key=lambda k: (k[0], policies.index(k[1]) if k[1] in policies else len(policies)))
    return keys or [(FULL_FINETUNING, None)]


def _rank_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.15 + 0.7 * i / max(1, n - 1)) for i in range(n)]


def plot_loss_vs_lr(points: pd.DataFrame, optima: pd.DataFrame, summary: pd.DataFrame, path: Path,
                    title: str) -> Path:
    """Best validation loss (median over seeds, min–max band) against learning rate, one curve per rank,
    full fine-tuning in black, fitted optima (median over seeds) as stars, diverged points as crosses."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = _panels(points)
    fig = Figure(figsize=(max(8.0, 6.4 * len(panels)), 6.0), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    finite = points["best_val_loss"].dropna()
    top = float(finite.max()) if len(finite) else 1.0
    bottom = float(finite.min()) if len(finite) else 0.0
    pad = 0.06 * (top - bottom or 1.0)
    ranks = sorted(int(r) for r in summary.loc[~summary["method"].map(is_reference), "rank"].unique())
    rank_colour = dict(zip(ranks, _rank_colours(len(ranks))))  # one colour per rank in every panel
    for ax, (method, policy) in zip(axes, panels):
        curves = summary[summary["method"].map(is_reference) | ((summary["method"] == method)
                                                                & (summary["alpha_policy"] == policy))]
        for _, curve in curves.iterrows():
            colour = "black" if is_reference(curve["method"]) else rank_colour[int(curve["rank"])]
            _loss_curve(ax, curve, points[points["curve"] == curve["curve"]], optima, colour, top + pad * 0.5)
        ax.set_xscale("log")
        ax.set_ylim(bottom - pad, top + pad)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("best validation loss over epochs (cross-entropy, nats)")
        if is_reference(method):
            ax.set_title(METHOD_NAMES[method])
        else:
            ax.set_title(f"{METHOD_NAMES.get(method, method)}, {POLICY_NAMES.get(policy, policy)}")
        ax.grid(True, which="both", alpha=0.25)
        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], marker="*", ms=12, color="grey", ls="none"),
                    Line2D([], [], marker="x", ms=7, mew=2, color="grey", ls="none")]
        labels += ["fitted optimum (median over seeds)", "diverged (no loss)"]
        ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2,
                  frameon=False)
    fig.suptitle(title + "\nline: median over seeds; band: min–max over seeds; dotted: fitted optimum")
    return save_figure(fig, path)


def _loss_curve(ax, curve: pd.Series, part: pd.DataFrame, optima: pd.DataFrame, colour, diverged_y: float) -> None:
    """One curve of `plot_loss_vs_lr` (`part`: its points): median line, min–max band, diverged learning rates
    as crosses at `diverged_y`, the fitted optimum as a star."""
    by_lr = part.groupby("lr")["best_val_loss"]
    lrs = np.array(sorted(part["lr"].unique()))
    median = np.array([by_lr.get_group(lr).dropna().median() if by_lr.get_group(lr).notna().any()
                       else np.nan for lr in lrs])
    low = np.array([by_lr.get_group(lr).min() for lr in lrs], dtype=float)
    high = np.array([by_lr.get_group(lr).max() for lr in lrs], dtype=float)
    width = 2.2 if is_reference(curve["method"]) else 1.6
    ax.plot(lrs, median, "-o", color=colour, lw=width, ms=3.5, label=curve["label"], zorder=3)
    ax.fill_between(lrs, low, high, color=colour, alpha=0.15, lw=0, zorder=1)
    diverged = part[part["status"] == "diverged"]["lr"].unique()
    if len(diverged):
        ax.plot(diverged, [diverged_y] * len(diverged), "x", color=colour, ms=7, mew=2, clip_on=False, zorder=4)
    opt = optima[optima["curve"] == curve["curve"]].dropna(subset=["optimal_lr"])
    if curve["optimal_lr"] is not None and len(opt):
        ax.plot([curve["optimal_lr"]], [float(opt["loss_at_optimum"].median())], marker="*", ms=15,
                color=colour, mec="white", mew=0.8, zorder=5, ls="none")
        ax.axvline(curve["optimal_lr"], color=colour, ls=":", lw=1, zorder=2)


def plot_ratio_vs_rank(summary: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Optimal-LR ratio (adapter / full fine-tuning) against rank: per-seed ratios as dots, the median with
    its range as error bars, one series per (method, α policy); the 10× reference as a dashed line."""
    from matplotlib.figure import Figure

    rows = summary[~summary["method"].map(is_reference) & summary["ratio"].notna()]
    if rows.empty:
        return None
    fig = Figure(figsize=(6.8, 4.6), dpi=110, layout="constrained")
    ax = fig.subplots()
    all_ratios, flagged = _ratio_series(ax, rows)
    ax.axhline(REFERENCE_RATIO, color="black", ls="--", lw=1.2, label="10× (LoRA Without Regret)")
    ax.axhline(1.0, color="grey", ls=":", lw=1, label="1× (same learning rate)")
    _ratio_axes(ax, rows, all_ratios)
    ax.plot([], [], "o", ms=4, mfc="none", mec="grey", label="one seed (paired with full FT's same seed)")
    if flagged:
        ax.plot([], [], ls="none", marker="$†$", color="grey", label="† an optimum fell back to a grid edge: a bound")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title)
    return save_figure(fig, path)


def _ratio_series(ax, rows: pd.DataFrame) -> tuple[list[float], bool]:
    """One error-bar series per (method, α policy, head LR) with its per-seed ratios as dots; returns every
    per-seed ratio drawn and whether a point is flagged † (an optimum at a grid edge)."""
    series = list(dict.fromkeys(zip(rows["method"], rows["alpha_policy"], rows["head_lr"])))
    markers = "os^Dv"
    offsets = np.linspace(-0.06, 0.06, len(series)) if len(series) > 1 else [0.0]
    all_ratios, flagged = [], False
    for k, (method, policy, head) in enumerate(series):
        part = rows[(rows["method"] == method) & (rows["alpha_policy"] == policy) & (rows["head_lr"] == head)]
        part = part.sort_values("rank")
        shift = 2 ** offsets[k]
        ranks = part["rank"].astype(float).to_numpy() * shift
        ratio = part["ratio"].astype(float).to_numpy()
        # clipped: with one seed the median and the range coincide up to rounding
        low = np.clip(ratio - part["ratio_min"].astype(float).to_numpy(), 0, None)
        high = np.clip(part["ratio_max"].astype(float).to_numpy() - ratio, 0, None)
        name = f"{METHOD_NAMES.get(method, method)}, {POLICY_NAMES.get(policy, policy)}"
        if head != "tied":
            name += f", head LR {float(head):g}"
        line = ax.errorbar(ranks, ratio, yerr=[low, high], fmt=f"-{markers[k % len(markers)]}", capsize=4, lw=1.6,
                           ms=7, label=f"{name}: median over seeds (bars: range)")
        colour = line[0].get_color()
        for rank, seeds, value, fallbacks in zip(ranks, part["seed_ratios"], ratio, part["fallbacks"]):
            values = list((seeds or {}).values())
            all_ratios += values
            ax.plot([rank] * len(values), values, "o", ms=4, mfc="none", mec=colour, alpha=0.8)
            if fallbacks:
                ax.annotate("†", (rank, value), xytext=(6, 4), textcoords="offset points", color=colour,
                            fontsize=12)
                flagged = True
    return all_ratios, flagged


def _ratio_axes(ax, rows: pd.DataFrame, all_ratios: list[float]) -> None:
    """Log axes of `plot_ratio_vs_rank`: ranks as powers of two, ratios as `3×`, `10×`, ..."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log", base=2)
    ranks = sorted(rows["rank"].astype(int).unique())
    ax.set_xticks(ranks)
    ax.set_xticklabels([str(r) for r in ranks])
    ax.set_xlim(ranks[0] / 1.6, ranks[-1] * 1.6)
    ax.set_yscale("log")
    values = all_ratios + [REFERENCE_RATIO, 1.0]
    low, high = min(values) / 1.8, max(values) * 1.8
    ax.set_ylim(low, high)
    ticks = [t for t in (0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000) if low <= t <= high]
    ax.set_yticks(ticks, [f"{t:g}×" for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("adapter rank r (log scale)")
    ax.set_ylabel("optimal LR ÷ full fine-tuning's optimal LR")
    ax.grid(True, which="both", alpha=0.25)
