"""Figures of the per-task part of a report (PNG). `draw_<figure>` builds the matplotlib Figure (None when there
is nothing to draw); `<figure>(..., path)` draws it, writes it to `path` and returns the path (or None)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...methods import allocates_ranks, trains_adapter
from ...runs.rundir import read_json, read_jsonl, read_summary
from ..aggregate import applicable, eval_records, metric_scale, read_matrices, row_strategy
from ..figures import palette, pyplot, save_figure
from ..text import is_missing, short_matrix_name, short_text

KIND_COLOURS = {"attention": "#4C72B0", "mlp": "#DD8452"}
METRIC_NAMES = {"matthews_correlation": "Matthews correlation", "accuracy": "accuracy", "f1": "F1",
                "pearson": "Pearson correlation", "spearmanr": "Spearman correlation", "loss": "loss",
                "perplexity": "perplexity"}


def metric_label(metric: str, greater_is_better: bool = True) -> str:
    """`eval_matthews_correlation` → `Matthews correlation × 100 (validation set)`."""
    base = metric[5:] if metric.startswith("eval_") else metric
    name = METRIC_NAMES.get(base, base.replace("_", " "))
    scale = " × 100" if metric_scale(metric, greater_is_better) == 100 else ""
    return f"{name}{scale} (validation set)"


def _curve(run_dirs: list[str], metric: str, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, and the median / min / max over runs of the metric at each epoch."""
    per_epoch: dict[int, list[float]] = {}
    for run_dir in run_dirs:
        for record in eval_records(Path(run_dir), untrained=True):
            if record.get(metric) is not None:
                per_epoch.setdefault(int(record["epoch"]), []).append(record[metric] * scale)
    epochs = np.array(sorted(per_epoch))
    values = [np.array(per_epoch[e]) for e in epochs]
    return (epochs, np.array([np.median(v) for v in values]), np.array([v.min() for v in values]),
            np.array([v.max() for v in values]))


def eval_curves(runs: pd.DataFrame, groups: pd.DataFrame, path: Path, baseline_labels: list[str],
                top: int = 6, task_title: str = "") -> Path | None:
    """Validation metric per epoch: median over seeds per configuration, band from min to max over seeds.
    Shows the baselines and the `top` best other configurations."""
    return save_figure(draw_eval_curves(runs, groups, baseline_labels, top, task_title), path)


def draw_eval_curves(runs: pd.DataFrame, groups: pd.DataFrame, baseline_labels: list[str], top: int = 6,
                     task_title: str = ""):
    from matplotlib.ticker import MaxNLocator

    ok = runs[runs["status"] == "completed"]
    if ok.empty or ok["epochs_completed"].astype(float).max() < 2:  # one point per run: nothing to follow
        return None
    metric, greater = ok["metric"].iloc[0], bool(ok["greater_is_better"].iloc[0])
    scale = metric_scale(metric, greater)
    others = [label for label in groups["label"] if label not in baseline_labels][:top]
    chosen = [label for label in groups["label"] if label in baseline_labels] + others
    colours = palette()
    fig, ax = pyplot().subplots(figsize=(9, 5.2))
    colour = 0
    for label in chosen:
        dirs = ok.loc[ok["label"] == label, "run_dir"].tolist()
        if not dirs:
            continue
        epochs, median, low, high = _curve(dirs, metric, scale)
        if not len(epochs):
            continue
        is_baseline = label in baseline_labels
        c = "0.35" if is_baseline and len(baseline_labels) == 1 else colours[colour % len(colours)]
        colour += 0 if c == "0.35" else 1
        ax.plot(epochs, median, marker="o", markersize=3.5, lw=1.8, color=c, ls="--" if is_baseline else "-",
                label=f"{label} (n={len(dirs)})" + (" — baseline" if is_baseline else ""))
        ax.fill_between(epochs, low, high, color=c, alpha=0.12, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric_label(metric, greater))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    shown = len(chosen)
    more = len(groups) - shown
    ax.set_title(f"{task_title}{metric_label(metric, greater).split(' (')[0]} per epoch\n"
                 f"line: median over seeds; band: min–max over seeds"
                 + (f"; the {len(others)} best of {len(groups) - len(baseline_labels)} configurations shown"
                    if more > 0 else ""), fontsize=11)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, fontsize=8.5, frameon=False)
    return fig


def comparison_boxplot(runs: pd.DataFrame, groups: pd.DataFrame, path: Path, group_by: list[str] | None,
                       baselines: dict[str, float], task_title: str = "") -> Path | None:
    """One horizontal box per configuration (its completed seeds, dots = single seeds), best at the top,
    coloured by the `group_by` value (or by learned / fixed-rank); baselines' medians as dashed lines."""
    return save_figure(draw_comparison_boxplot(runs, groups, group_by, baselines, task_title), path)


def _box_colour_key(ok: pd.DataFrame, group_by: list[str] | None):
    """label → what colours its box: its `group_by` values, else learned / fixed ranks / full fine-tuning."""
    if group_by:
        keyed = ok.copy()
        for f in group_by:
            keyed[f] = applicable(keyed, f)

        def key_of(label):
            row = keyed[keyed["label"] == label].iloc[0]
            values = ["– (does not apply)" if is_missing(row[f]) else short_text(row[f]) for f in group_by]
            return ", ".join(f"{f}={v}" for f, v in zip(group_by, values)) if len(group_by) > 1 else values[0]
    else:
        def key_of(label):
            row = ok[ok["label"] == label].iloc[0]
            return "learned ranks" if row_strategy(row).learned else (
                "full fine-tuning" if not trains_adapter(row["method"]) else "fixed ranks (static strategy)")
    return key_of


def has_rank_bounds(config: dict) -> bool:
    """Whether a run's ranks were chosen within [rank_min, rank_max] (learned, gradient and FIM allocation)."""
    return config.get("rank_min") is not None and row_strategy(config).reads("rank_min")


def draw_comparison_boxplot(runs: pd.DataFrame, groups: pd.DataFrame, group_by: list[str] | None,
                            baselines: dict[str, float], task_title: str = ""):
    ok = runs[runs["status"] == "completed"]
    if ok.empty:
        return None
    metric, greater = ok["metric"].iloc[0], bool(ok["greater_is_better"].iloc[0])
    labels = [label for label in groups["label"] if (ok["label"] == label).any()]
    key_of = _box_colour_key(ok, group_by)
    keys = list(dict.fromkeys(key_of(label) for label in labels))
    plt, cycle = pyplot(), palette()
    colours = {k: cycle[i % len(cycle)] for i, k in enumerate(keys)}
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.42 * len(labels)))
    data = [ok.loc[ok["label"] == label, "score"].dropna().to_numpy() for label in labels]
    positions = np.arange(len(labels))[::-1]
    box = ax.boxplot(data, positions=positions, vert=False, widths=0.6, patch_artist=True, showfliers=False,
                     medianprops={"color": "black", "lw": 1.5})
    for patch, label in zip(box["boxes"], labels):
        patch.set_facecolor(colours[key_of(label)])
        patch.set_alpha(0.55)
    rng = np.random.default_rng(0)
    for values, y in zip(data, positions):
        ax.scatter(values, y + rng.uniform(-0.12, 0.12, len(values)), s=14, color="black", zorder=3)
    ax.set_yticks(positions)
    ax.set_yticklabels([f"{label} (n={len(v)})" for label, v in zip(labels, data)], fontsize=8.5)
    for i, (name, value) in enumerate(baselines.items()):
        if not np.isnan(value):
            ax.axvline(value, color=("0.2", "#B22222", "#6A3D9A", "0.55")[i % 4], ls=(0, (4, 2 + i)), lw=1.3,
                       label=f"median of baseline {name}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k], alpha=0.55) for k in keys]
    legend_title = ", ".join(group_by) if group_by else "allocation"
    first = ax.legend(handles, keys, title=legend_title, fontsize=8, title_fontsize=8.5, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.add_artist(first)
    if baselines:
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)
    ax.set_xlabel(f"best-epoch {metric_label(metric, greater)}")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{task_title}configurations compared over seeds (box: quartiles; dots: single seeds)", fontsize=11)
    return fig


def allocation_heatmap(run_dir: str | Path, path: Path, title: str) -> Path | None:
    """Continuous ranks s and hard ranks per matrix (rows, model order) over training (columns, epochs) of
    one learned run, from its allocation.jsonl."""
    return save_figure(draw_allocation_heatmap(run_dir, title), path)


def draw_allocation_heatmap(run_dir: str | Path, title: str):
    records = read_jsonl(Path(run_dir) / "allocation.jsonl")
    if not records or "continuous" not in records[0]:
        return None
    names = list(records[0]["continuous"])
    layers = {m["name"]: m.get("layer") for m in read_matrices(Path(run_dir))}
    config = read_json(Path(run_dir) / "config.json").get("config", {})
    epochs = np.array([r["epoch"] for r in records], dtype=float)
    soft = np.array([[r["continuous"][n] for r in records] for n in names])
    hard = np.array([[r["hard"][n] for r in records] for n in names])
    vmin, vmax = config.get("rank_min") or soft.min(), config.get("rank_max") or soft.max()
    if allocates_ranks(config.get("method")):  # AdaLoRA: one rank per matrix, the singular values it keeps
        panels = [(hard, "AdaLoRA rank (kept singular values)", "final ranks fixed from here")]
    else:
        panels = [(soft, "continuous rank s", "hard ranks train from here"),
                  (hard, "hard rank (evaluation)", "hard ranks train from here")]
    fig, axes = pyplot().subplots(1, len(panels), figsize=(6.5 * len(panels) - 1, 1.6 + 0.2 * len(names)),
                                  sharey=True, squeeze=False)
    axes = axes[0]
    for ax, (values, name, dashed) in zip(axes, panels):
        mesh = ax.pcolormesh(epochs, np.arange(len(names)), values, shading="nearest", cmap="viridis",
                             vmin=vmin, vmax=vmax)
        discrete = [r["epoch"] for r in records if r.get("discrete")]
        if discrete:
            ax.axvline(discrete[0], color="white", ls="--", lw=1.2)
        ax.set_xlabel("epoch")
        ax.set_title(name + (f"; dashed: {dashed}" if discrete else ""), fontsize=10)
    axes[0].set_yticks(np.arange(len(names)))
    axes[0].set_yticklabels([short_matrix_name(n, layers.get(n)) for n in names], fontsize=7.5)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("target matrix (model order)")
    bar = fig.colorbar(mesh, ax=axes, fraction=0.03, pad=0.02)
    bar.set_label("rank")
    fig.suptitle(title, fontsize=11)
    return fig


def final_ranks(run_dirs: list[str], path: Path, title: str) -> Path | None:
    """Final hard rank per matrix: bar = median over runs (seeds), whiskers = min–max, colour = attention / MLP."""
    return save_figure(draw_final_ranks(run_dirs, title), path)


def draw_final_ranks(run_dirs: list[str], title: str):
    per_run = []
    for run_dir in run_dirs:
        summary = read_summary(run_dir) or {}
        ranks = summary.get("hard_ranks")
        if not ranks:
            ranks = {m["name"]: m["rank"] for m in read_matrices(Path(run_dir))}
        if ranks:
            per_run.append(ranks)
    if not per_run:
        return None
    matrices = read_matrices(Path(run_dirs[0]))
    names = [m["name"] for m in matrices] or list(per_run[0])
    kinds = {m["name"]: m.get("kind", "attention") for m in matrices}
    layers = {m["name"]: m.get("layer") for m in matrices}
    values = np.array([[ranks.get(n, np.nan) for n in names] for ranks in per_run], dtype=float)
    median, low, high = np.nanmedian(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)
    config = read_json(Path(run_dirs[0]) / "config.json").get("config", {})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(names) + 2), 4.6))
    x = np.arange(len(names))
    ax.bar(x, median, color=[KIND_COLOURS.get(kinds.get(n), "0.5") for n in names], width=0.8)
    if len(per_run) > 1:
        ax.errorbar(x, median, yerr=[median - low, high - median], fmt="none", ecolor="black", lw=0.9, capsize=2)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in KIND_COLOURS.values()]
    labels = ["attention matrix", "MLP matrix"]
    if has_rank_bounds(config):
        for value in (config["rank_min"], config["rank_max"]):
            line = ax.axhline(value, color="0.45", ls=":", lw=1.2)
        handles.append(line)
        labels.append(f"rank_min {config['rank_min']} / rank_max {config['rank_max']}")
    mean = float(np.nanmean(median))
    handles.append(ax.axhline(mean, color="black", ls="--", lw=1))
    labels.append(f"mean rank {mean:.1f}")
    ax.set_xticks(x)
    ax.set_xticklabels([short_matrix_name(n, layers.get(n)) for n in names], rotation=90, fontsize=7.5)
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.set_ylabel("final hard rank")
    ax.set_xlabel("target matrix (model order)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title + (f"\nbar: median over {len(per_run)} seeds; whiskers: min–max" if len(per_run) > 1 else ""),
                 fontsize=11)
    return fig


def _final_hard_ranks(run_dirs: list[str]) -> list[dict]:
    """Each run's final hard rank per matrix (summary.json, else ranks.json)."""
    per_run = []
    for run_dir in run_dirs:
        ranks = (read_summary(run_dir) or {}).get("hard_ranks")
        if not ranks:
            ranks = {m["name"]: m["rank"] for m in read_matrices(Path(run_dir))}
        if ranks:
            per_run.append(ranks)
    return per_run


def ranks_by_layer_values(run_dirs: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """Component type (`query`, `value`, `attn out`, `ffn out`, ...: the matrix's name without its layer) →
    (layers, median final hard rank over runs at each layer), components in model order."""
    per_run = _final_hard_ranks(run_dirs)
    matrices = [m for m in read_matrices(Path(run_dirs[0])) if m.get("layer") is not None] if run_dirs else []
    if not per_run or not matrices:
        return {}
    cells: dict[str, dict[int, list[float]]] = {}
    for m in matrices:
        values = [ranks[m["name"]] for ranks in per_run if ranks.get(m["name"]) is not None]
        if values:
            cells.setdefault(short_matrix_name(m["name"]), {}).setdefault(int(m["layer"]), []).extend(values)
    return {component: (sorted(by_layer), [float(np.median(by_layer[layer])) for layer in sorted(by_layer)])
            for component, by_layer in cells.items()}


def ranks_by_layer(run_dirs: list[str], path: Path, title: str) -> Path | None:
    """Final hard rank against layer, one line per component type (the adaptive LoRA-XS study's rank-vs-layer
    plot): median over runs (seeds)."""
    return save_figure(draw_ranks_by_layer(run_dirs, title), path)


def draw_ranks_by_layer(run_dirs: list[str], title: str):
    from matplotlib.ticker import MaxNLocator

    lines = ranks_by_layer_values(run_dirs)
    if not lines:
        return None
    config = read_json(Path(run_dirs[0]) / "config.json").get("config", {})
    colours, markers = palette(), "osD^vP*X<>"
    fig, ax = pyplot().subplots(figsize=(9, 4.8))
    for i, (component, (layers, ranks)) in enumerate(lines.items()):
        ax.plot(layers, ranks, marker=markers[i % len(markers)], markersize=4.5, lw=1.7,
                color=colours[i % len(colours)], label=component)
    if has_rank_bounds(config):
        for value in (config["rank_min"], config["rank_max"]):
            ax.axhline(value, color="0.45", ls=":", lw=1.1, label="_rank bound")
    ax.set_xlabel("layer")
    ax.set_ylabel("final hard rank")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(title="component", fontsize=8.5, title_fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)
    runs = len(_final_hard_ranks(run_dirs))
    bounds = (f"; dotted: rank_min {config['rank_min']} / rank_max {config['rank_max']}"
              if has_rank_bounds(config) else "")
    ax.set_title(f"{title}\n" + (f"median over {runs} seeds" if runs > 1 else "one run") + bounds, fontsize=11)
    return fig


def schedules(entries: list[tuple[str, str]], path: Path, title: str = "") -> Path | None:
    """Mask sharpness α and the budget M per epoch, one line per distinct schedule. `entries`: (legend label,
    run directory) pairs, one run per schedule."""
    return save_figure(draw_schedules(entries, title), path)


def draw_schedules(entries: list[tuple[str, str]], title: str = ""):
    from matplotlib.ticker import FuncFormatter

    curves = []
    for label, run_dir in entries:
        records = read_jsonl(Path(run_dir) / "allocation.jsonl")
        if records and "alpha" in records[0]:
            curves.append((label, records))
    if not curves:
        return None
    colours = palette()
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(12, 4.6))
    for i, (label, records) in enumerate(curves):
        epochs = [r["epoch"] for r in records]
        colour = colours[i % len(colours)]
        style = ["-", "--", "-.", ":"][i % 4]
        left.plot(epochs, [r["alpha"] for r in records], color=colour, ls=style, lw=1.8, label=label)
        right.plot(epochs, [r["budget"] for r in records], color=colour, ls=style, lw=1.8, label=label)
        discrete = [r["epoch"] for r in records if r.get("discrete")]
        if discrete:
            for ax in (left, right):
                ax.axvline(discrete[0], color=colour, ls=":", lw=0.8)
    left.set_ylabel("mask sharpness α")
    left.set_title("α (soft-mask sharpness)", fontsize=10)
    right.set_ylabel("budget M (adapter parameters)")
    right.set_title("budget M; dotted: hard ranks from here", fontsize=10)
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, -0.02 - 0.045 * len(labels)), ncol=1,
               fontsize=8.5, frameon=False)
    fig.suptitle(title or "Learned-allocation schedules", fontsize=11)
    return fig
