"""The LR-ratio study's analysis: the optimal learning rate of each LR curve and its ratio to full
fine-tuning's ("LoRA Without Regret" finds ≈10×, roughly independent of rank).

A *curve* is one (method, rank, α, α policy, head-LR mode) within a *study* (runs that agree on every other
setting: task, model, epochs, data sizes, ...), swept over learning rates, once per seed. For each curve and
seed the validation loss of a run is its best over epochs. The optimum is the vertex of the parabola in
log10(lr) through the grid minimum and its two neighbours; at the edge of the grid, or when those three
points are not convex, the grid minimum itself is used and a warning says so. Diverged runs have no loss
(they are left out, never NaN). Over seeds: the median optimum (in log space) and its range; the ratio to
full fine-tuning per seed (where the same seed has both) and as a ratio of medians.

`lr_ratio_report(run_dirs, out_dir)` writes `lr_ratio.csv` and two figures into `out_dir` and returns a
markdown section (used by `rankwise report RUNS --lr_ratio --out DIR`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import config_from_dict
from ..lrsweep import adapter_scale, curve_identity, format_lr, head_lr_mode, identity_id
from ..methods import FULL_FINETUNING, titles, trains_adapter
from ..rundir import read_json, read_jsonl, read_summary

METHOD_NAMES = titles()


def is_reference(method) -> bool:
    """Whether runs of `method` are the ratio's reference: full fine-tuning, the method without adapters."""
    return not trains_adapter(method)

POLICY_NAMES = {"constant": "constant α (scale α/r)", "ratio": "constant α/r", "rslora": "rsLoRA (scale α/√r)"}
# Fields that tell curves of one study apart (everything else must agree for two runs to be compared).
CURVE_FIELDS = ("method", "rank", "lora_alpha", "alpha_policy", "lora_dropout", "target_modules", "seed", "head_lr")
REFERENCE_RATIO = 10.0  # LoRA Without Regret's finding


# ---------------------------------------------------------------------------------------------
# The optimum of one LR curve
# ---------------------------------------------------------------------------------------------

@dataclass
class Optimum:
    """Optimal learning rate of one curve: `lr` (fitted vertex or grid point) and the loss there."""

    lr: float | None
    loss: float | None
    grid_lr: float | None  # the grid point with the lowest loss
    grid_loss: float | None
    how: str  # "fit" | "grid: edge" | "grid: not convex" | "grid: one point" | "none"
    warning: str | None = None


def log_quadratic_optimum(lrs: list[float], losses: list[float | None]) -> Optimum:
    """Optimum of loss(lr) from a parabola in x = log10(lr) through the grid minimum and its two neighbours.

    `losses[i]` is None (or NaN) where the run diverged or is missing; such points are left out and the
    neighbours are the nearest points that have a loss. Falls back to the grid minimum, with a warning, when
    it is the lowest or highest learning rate that has a loss (the optimum may lie outside the grid) or when
    the three points are not convex."""
    points = sorted((float(lr), float(loss)) for lr, loss in zip(lrs, losses)
                    if loss is not None and math.isfinite(loss))
    if not points:
        return Optimum(None, None, None, None, "none", "no run of this curve finished with a loss")
    x = np.log10([p[0] for p in points])
    y = np.array([p[1] for p in points])
    i = int(np.argmin(y))
    grid_lr, grid_loss = points[i]
    all_lrs = sorted(float(lr) for lr in lrs)
    if len(points) < 3 or i == 0 or i == len(points) - 1:
        if len(points) == 1:
            return Optimum(grid_lr, grid_loss, grid_lr, grid_loss, "grid: one point",
                           f"only one learning rate ({format_lr(grid_lr, 3)}) has a loss; the optimum is that grid point")
        lowest = i == 0
        beyond = [lr for lr in all_lrs if (lr < grid_lr if lowest else lr > grid_lr)]
        reason = ("the next learning rate" + (" below" if lowest else " above") + " diverged") if beyond else \
            "it is the " + ("lowest" if lowest else "highest") + " learning rate swept"
        fix = f"extend the grid {'down' if lowest else 'up'}" if not beyond else "refine the grid near it"
        return Optimum(grid_lr, grid_loss, grid_lr, grid_loss, "grid: edge",
                       f"minimum at {format_lr(grid_lr, 3)} is at the edge of the finished points ({reason}): the "
                       f"optimum is that grid point and may lie {'lower' if lowest else 'higher'}; {fix}")
    xs, ys = x[i - 1:i + 2], y[i - 1:i + 2]
    a, b, c = np.polyfit(xs, ys, 2)
    if not a > 0:
        return Optimum(grid_lr, grid_loss, grid_lr, grid_loss, "grid: not convex",
                       f"the losses around the minimum at {format_lr(grid_lr, 3)} are not convex in log10(lr); the "
                       "optimum is that grid point")
    vertex = -b / (2 * a)
    return Optimum(float(10 ** vertex), float(c - b * b / (4 * a)), grid_lr, grid_loss, "fit")


# ---------------------------------------------------------------------------------------------
# Run directories → points → optima
# ---------------------------------------------------------------------------------------------

def _best_val_loss(run_dir: Path) -> float | None:
    losses = [r.get("eval_loss") for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("type") == "eval"]
    losses = [v for v in losses if v is not None and math.isfinite(v)]
    return min(losses) if losses else None


def load_points(run_dirs: list[str | Path], warn=None) -> pd.DataFrame:
    """One row per finished run (completed or diverged) under `run_dirs`: study, curve, seed, lr,
    best_val_loss (None for a diverged run), status and what describes its curve."""
    from .aggregate import find_run_dirs

    warn = warn or (lambda text: None)
    rows = []
    for run_dir in find_run_dirs(run_dirs):
        summary = read_summary(run_dir)
        if not summary or summary.get("status") not in ("completed", "diverged"):
            continue
        try:
            cfg = config_from_dict(read_json(run_dir / "config.json")["config"], source=str(run_dir / "config.json"))
        except Exception as exc:  # a run from another version, a broken file: not comparable
            warn(f"skipping {run_dir}: its config.json cannot be read ({exc})")
            continue
        if cfg.allocation != "uniform" or cfg.learning_rate is None:
            continue  # learned or non-uniform ranks are not points of an LR curve
        identity = curve_identity(cfg)
        study = {k: v for k, v in identity.items() if k not in CURVE_FIELDS}
        full = is_reference(cfg.method)
        rows.append({
            "study": identity_id(study), "task": cfg.task, "model": cfg.model,
            "curve": identity_id({k: v for k, v in identity.items() if k != "seed"}),
            "method": cfg.method, "rank": None if full else cfg.rank, "alpha": None if full else cfg.lora_alpha,
            "alpha_policy": None if full else cfg.alpha_policy,
            "scale": None if full else adapter_scale(cfg.alpha_policy, cfg.lora_alpha, cfg.rank),
            "head_lr": str(head_lr_mode(cfg)), "seed": cfg.seed, "lr": cfg.learning_rate,
            "best_val_loss": _best_val_loss(run_dir) if summary["status"] == "completed" else None,
            "status": summary["status"], "run_dir": str(run_dir),
            "epochs": cfg.num_train_epochs, "train_samples": cfg.max_train_samples,
        })
    points = pd.DataFrame(rows)
    if not points.empty:
        dup = points.duplicated(["curve", "seed", "lr"], keep="first")
        for _, row in points[dup].iterrows():
            warn(f"{row['run_dir']} repeats curve point (seed {row['seed']}, lr {format_lr(row['lr'])}); "
                 "the first one found is used")
        points = points[~dup].reset_index(drop=True)
        points = _share_with_ratio_families(points)
    return points


def _share_with_ratio_families(points: pd.DataFrame) -> pd.DataFrame:
    """With uniform ranks a constant-α run at rank r is the same experiment as an α/r-fixed run whose α/r
    equals α/r (e.g. r=16, α=32 in both families with --alpha 32 --rank 16), so an α/r-fixed family that
    lacks that rank borrows the constant-α curve there instead of needing the runs twice."""
    ratio = points[points["alpha_policy"] == "ratio"]
    constant = points[points["alpha_policy"] == "constant"]
    borrowed = []
    for (study, method, head, scale), family in ratio.groupby(["study", "method", "head_lr", "scale"]):
        same = constant[(constant["study"] == study) & (constant["method"] == method) & (constant["head_lr"] == head)
                        & np.isclose(constant["scale"].astype(float), scale) & ~constant["rank"].isin(family["rank"])]
        if len(same):
            same = same.copy()
            same["alpha_policy"] = "ratio"
            same["curve"] = same["curve"] + "/ratio"
            same["shared"] = True
            borrowed.append(same)
    return pd.concat([points, *borrowed], ignore_index=True) if borrowed else points


def curve_label(row) -> str:
    """`LoRA r=16, α=32 (constant α)`, `full fine-tuning`; the head LR when it is fixed."""
    if is_reference(row["method"]):
        text = METHOD_NAMES[row["method"]]
    else:
        policy = {"constant": "constant α", "ratio": "α/r fixed", "rslora": "rsLoRA"}.get(row["alpha_policy"],
                                                                                     row["alpha_policy"])
        text = f"{METHOD_NAMES.get(row['method'], row['method'])} r={int(row['rank'])}, α={row['alpha']:g} ({policy})"
    if row["head_lr"] != "tied":
        text += f", head LR {float(row['head_lr']):g}"
    shared = row.get("shared")
    if isinstance(shared, (bool, np.bool_)) and shared:
        text += " = the constant-α runs"
    return text


def fit_optima(points: pd.DataFrame) -> pd.DataFrame:
    """One row per (curve, seed): the optimum and how it was found."""
    rows = []
    for (curve, seed), part in points.groupby(["curve", "seed"], sort=False):
        part = part.sort_values("lr")
        optimum = log_quadratic_optimum(part["lr"].tolist(), part["best_val_loss"].tolist())
        first = part.iloc[0]
        rows.append({**{k: first[k] for k in ("study", "task", "model", "curve", "method", "rank", "alpha",
                                              "alpha_policy", "scale", "head_lr")},
                     "label": curve_label(first), "seed": seed, "lrs": len(part),
                     "diverged": int((part["status"] == "diverged").sum()),
                     "optimal_lr": optimum.lr, "loss_at_optimum": optimum.loss, "grid_lr": optimum.grid_lr,
                     "grid_loss": optimum.grid_loss, "how": optimum.how, "warning": optimum.warning})
    return pd.DataFrame(rows)


def _log_median(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(10 ** np.median(np.log10(values))) if values else None


def summarize(optima: pd.DataFrame) -> pd.DataFrame:
    """One row per curve: median optimum over seeds (in log space) and its range, and the ratio to the
    study's full fine-tuning optimum: per seed where seeds pair up (median and range) and of the medians."""
    rows = []
    for curve, part in optima.groupby("curve", sort=False):
        first = part.iloc[0]
        found = part.dropna(subset=["optimal_lr"])
        rows.append({**{k: first[k] for k in ("study", "task", "model", "curve", "method", "rank", "alpha",
                                              "alpha_policy", "scale", "head_lr", "label")},
                     "seeds": sorted(int(s) for s in part["seed"]),
                     "optimal_lr": _log_median(found["optimal_lr"]),
                     "optimal_lr_min": found["optimal_lr"].min() if len(found) else None,
                     "optimal_lr_max": found["optimal_lr"].max() if len(found) else None,
                     "fallbacks": int((part["how"] != "fit").sum())})
    table = pd.DataFrame(rows)
    for column in ("ratio", "ratio_min", "ratio_max", "ratio_of_medians", "paired_seeds", "seed_ratios"):
        table[column] = None
    for study, part in table.groupby("study", sort=False):
        full = part[part["method"].map(is_reference)]
        if full.empty:
            continue
        reference = full[full["head_lr"] == "tied"].iloc[0] if (full["head_lr"] == "tied").any() else full.iloc[0]
        per_seed_full = optima[optima["curve"] == reference["curve"]].set_index("seed")["optimal_lr"]
        for index, row in part.iterrows():
            if is_reference(row["method"]):
                continue
            mine = optima[optima["curve"] == row["curve"]].set_index("seed")["optimal_lr"]
            paired = {int(s): float(mine[s] / per_seed_full[s]) for s in mine.index
                      if s in per_seed_full.index and pd.notna(mine[s]) and pd.notna(per_seed_full[s])}
            table.at[index, "seed_ratios"] = paired
            table.at[index, "paired_seeds"] = len(paired)
            if paired:
                table.at[index, "ratio"] = _log_median(list(paired.values()))
                table.at[index, "ratio_min"] = min(paired.values())
                table.at[index, "ratio_max"] = max(paired.values())
            if row["optimal_lr"] is not None and reference["optimal_lr"] is not None:
                table.at[index, "ratio_of_medians"] = row["optimal_lr"] / reference["optimal_lr"]
    return table


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def _panels(points: pd.DataFrame) -> list[tuple[str, str | None]]:
    adapters = points[~points["method"].map(is_reference)]
    keys = set(zip(adapters["method"], adapters["alpha_policy"]))
    policies = list(POLICY_NAMES)
    keys = sorted(keys, key=lambda k: (k[0], policies.index(k[1]) if k[1] in policies else len(policies)))
    return keys or [(FULL_FINETUNING, None)]


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
            part = points[points["curve"] == curve["curve"]]
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
                ax.plot(diverged, [top + pad * 0.5] * len(diverged), "x", color=colour, ms=7, mew=2,
                        clip_on=False, zorder=4)
            opt = optima[optima["curve"] == curve["curve"]].dropna(subset=["optimal_lr"])
            if curve["optimal_lr"] is not None and len(opt):
                ax.plot([curve["optimal_lr"]], [float(opt["loss_at_optimum"].median())], marker="*", ms=15,
                        color=colour, mec="white", mew=0.8, zorder=5, ls="none")
                ax.axvline(curve["optimal_lr"], color=colour, ls=":", lw=1, zorder=2)
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
    fig.savefig(path)
    return path


def _rank_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.15 + 0.7 * i / max(1, n - 1)) for i in range(n)]


def plot_ratio_vs_rank(summary: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Optimal-LR ratio (adapter / full fine-tuning) against rank: per-seed ratios as dots, the median with
    its range as error bars, one series per (method, α policy); the 10× reference as a dashed line."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    rows = summary[~summary["method"].map(is_reference) & summary["ratio"].notna()]
    if rows.empty:
        return None
    fig = Figure(figsize=(6.8, 4.6), dpi=110, layout="constrained")
    ax = fig.subplots()
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
    ax.axhline(REFERENCE_RATIO, color="black", ls="--", lw=1.2, label="10× (LoRA Without Regret)")
    ax.axhline(1.0, color="grey", ls=":", lw=1, label="1× (same learning rate)")
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
    ax.plot([], [], "o", ms=4, mfc="none", mec="grey", label="one seed (paired with full FT's same seed)")
    if flagged:
        ax.plot([], [], ls="none", marker="$†$", color="grey", label="† an optimum fell back to a grid edge: a bound")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------------------------
# The report section
# ---------------------------------------------------------------------------------------------

def _lr(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format_lr(float(value), 3)


def _x(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.2f}×"


def _in_curve_order(table: pd.DataFrame) -> pd.DataFrame:
    """Adapter curves by method, α policy and rank, full fine-tuning last; seeds in order."""
    def key(i):
        row = table.loc[i]
        return (is_reference(row["method"]), str(row["method"]), str(row["alpha_policy"]),
                0 if pd.isna(row["rank"]) else int(row["rank"]), int(row["seed"]) if "seed" in row else 0)

    return table.loc[sorted(table.index, key=key)]


def _study_title(part: pd.DataFrame) -> str:
    from . import task_name

    first = part.iloc[0]
    epochs = ", ".join(str(e) for e in sorted(part["epochs"].unique()))
    samples = part["train_samples"].dropna().unique()
    size = f"{int(samples[0]):,} training examples" if len(samples) == 1 else "all training examples"
    return f"{task_name(first['task'])}, {first['model']}, {size}, {epochs} epochs"


def lr_ratio_report(run_dirs: list[Path], out_dir: Path) -> str:
    """Analyse the LR curves among `run_dirs`; write `lr_ratio.csv` and the figures into `out_dir`;
    return the markdown section."""
    out_dir = Path(out_dir)
    notes: list[str] = []
    points = load_points(run_dirs, warn=notes.append)
    lines = ["## Learning-rate ratio: adapters vs full fine-tuning\n"]
    if points.empty:
        return "\n".join(lines + ["No finished uniform-rank runs with a learning rate were found.\n"])
    out_dir.mkdir(parents=True, exist_ok=True)
    optima = fit_optima(points)
    summary = summarize(optima)
    optima.to_csv(out_dir / "lr_ratio.csv", index=False)

    lines.append(
        "For each curve (method, rank, α, α policy) and seed, a run's validation loss is its best over epochs "
        "(on the GLUE dev set). The optimal learning rate is the vertex of the parabola in log10(lr) through "
        "the grid minimum and its two neighbours; when the minimum is at the edge of the grid (or next to a "
        "diverged run), or the three points are not convex, the grid point is used and flagged †. Diverged runs "
        "have no loss and are left out of the fit. **Optimal LR** is the median over seeds (in log space) with "
        "its range. **Ratio** is the adapter's optimum ÷ full fine-tuning's for the same seed, median and range "
        "over seeds; **ratio of medians** divides the two median optima. Per-seed values: `lr_ratio.csv`.\n")
    studies = list(dict.fromkeys(points["study"]))
    for number, study in enumerate(studies, 1):
        part = points[points["study"] == study]
        table = _in_curve_order(summary[summary["study"] == study])
        title = _study_title(part)
        suffix = f"_{number}" if len(studies) > 1 else ""
        lines.append(f"### {title}\n" if len(studies) > 1 else f"Study: {title}.\n")
        lines.append("| Curve | Scale | Seeds | Optimal LR (median) | Range over seeds | Ratio to full FT "
                     "(median) | Ratio range | Ratio of medians |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for _, row in table.iterrows():
            flag = " †" if row["fallbacks"] else ""
            scale = "–" if row["scale"] is None or pd.isna(row["scale"]) else f"{row['scale']:.3g}"
            lines.append(f"| {row['label']} | {scale} | {', '.join(map(str, row['seeds']))} | "
                         f"{_lr(row['optimal_lr'])}{flag} | {_lr(row['optimal_lr_min'])} – {_lr(row['optimal_lr_max'])} | "
                         f"{_x(row['ratio']) if row['method'] != 'full' else '1 (reference)'} | "
                         f"{(_x(row['ratio_min']) + ' – ' + _x(row['ratio_max'])) if row['method'] != 'full' and row['ratio'] is not None else '–'} | "
                         f"{_x(row['ratio_of_medians']) if row['method'] != 'full' else '–'} |")
        if not table["method"].map(is_reference).any():
            lines.append("\nNo full fine-tuning runs in this study, so no ratio: add them with "
                         "`rankwise lr-sweep ... --full-finetune` into the same output directory.")
        lines.append("\nScale: the multiplier of B·A (α/r, or α/√r for rsLoRA). Head LR: the classification head "
                     "trains at the swept learning rate unless the curve says otherwise.\n")

        lines.append("| Curve | Seed | Grid minimum (LR, loss) | Optimum (LR, loss) | How | Diverged LRs |")
        lines.append("|---|---|---|---|---|---|")
        for _, row in _in_curve_order(optima[optima["study"] == study]).iterrows():
            grid = "–" if row["grid_lr"] is None or pd.isna(row["grid_lr"]) else \
                f"{_lr(row['grid_lr'])}, {row['grid_loss']:.4f}"
            best = "–" if row["optimal_lr"] is None or pd.isna(row["optimal_lr"]) else \
                f"{_lr(row['optimal_lr'])}, {row['loss_at_optimum']:.4f}"
            how = row["how"] + (" †" if row["how"] != "fit" else "")
            lines.append(f"| {row['label']} | {row['seed']} | {grid} | {best} | {how} | {row['diverged']} of "
                         f"{row['lrs']} |")

        figure = plot_loss_vs_lr(part, optima[optima["study"] == study], table,
                                 out_dir / f"lr_ratio_loss_vs_lr{suffix}.png",
                                 f"{title}\nvalidation loss vs learning rate")
        lines.append(f"\n![Validation loss against learning rate, one curve per rank]({figure.name})\n")
        figure = plot_ratio_vs_rank(table, out_dir / f"lr_ratio_vs_rank{suffix}.png",
                                    f"{title}\noptimal learning rate relative to full fine-tuning")
        if figure is not None:
            lines.append(f"![Optimal-LR ratio to full fine-tuning against rank]({figure.name})\n")

        warnings = optima[(optima["study"] == study) & optima["warning"].notna()]
        if len(warnings):
            lines.append("Warnings:\n")
            lines += [f"- {row['label']}, seed {row['seed']}: {row['warning']}" for _, row in warnings.iterrows()]
            lines.append("")
    if notes:
        lines.append("Skipped: " + "; ".join(notes) + "\n")
    return "\n".join(lines)


def section(ctx) -> str | None:
    """`rankwise report` section hook (`register_section(section)`): with `--lr_ratio` in the report's
    options, the LR-ratio analysis of the report's runs, figures written beside report.md."""
    if not ctx.options.get("lr_ratio"):
        return None
    text = lr_ratio_report([Path(d) for d in ctx.runs["run_dir"]], ctx.out)
    ctx.figures += sorted(Path(ctx.out).glob("lr_ratio_*.png"))
    return text


__all__ = ["Optimum", "log_quadratic_optimum", "load_points", "fit_optima", "summarize", "lr_ratio_report", "section"]
