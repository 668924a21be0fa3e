"""The LR-ratio study's numbers: run directories → LR-curve points → the optimal learning rate per curve and
seed → per curve, the median optimum and its ratio to full fine-tuning's.

A *curve* is one (method, rank, α, α policy, head-LR mode) within a *study* (runs that agree on every other
setting: task, model, epochs, data sizes, ...), swept over learning rates, once per seed. For each curve and
seed the validation loss of a run is its best over epochs. The optimum is the vertex of the parabola in
log10(lr) through the grid minimum and its two neighbours; at the edge of the grid, or when those three
points are not convex, the grid minimum itself is used and a warning says so. Diverged runs have no loss
(they are left out, never NaN). Over seeds: the median optimum (in log space) and its range; the ratio to
full fine-tuning per seed (where the same seed has both) and as a ratio of medians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...config import config_from_dict
from ...lr_curves import adapter_scale, curve_identity, format_lr, head_lr_mode, identity_id
from ...allocation import strategy_for
from ...methods import get_method, titles, trains_adapter
from ...runs.rundir import read_json, read_summary
from ..aggregate import eval_records, find_run_dirs
from ..stats import log_median, parabola_vertex

METHOD_NAMES = titles()
POLICY_NAMES = {"constant": "constant α (scale α/r)", "ratio": "constant α/r", "rslora": "rsLoRA (scale α/√r)"}
# Fields that tell curves of one study apart (everything else must agree for two runs to be compared).
CURVE_FIELDS = ("method", "rank", "lora_alpha", "alpha_policy", "lora_dropout", "target_modules", "seed", "head_lr")
REFERENCE_RATIO = 10.0  # LoRA Without Regret's finding


def is_reference(method) -> bool:
    """Whether runs of `method` are the ratio's reference: full fine-tuning, the method without adapters."""
    return not trains_adapter(method)


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
    vertex = parabola_vertex(x[i - 1:i + 2], y[i - 1:i + 2])
    if vertex is None:
        return Optimum(grid_lr, grid_loss, grid_lr, grid_loss, "grid: not convex",
                       f"the losses around the minimum at {format_lr(grid_lr, 3)} are not convex in log10(lr); the "
                       "optimum is that grid point")
    log_lr, loss = vertex
    return Optimum(float(10 ** log_lr), float(loss), grid_lr, grid_loss, "fit")


# ---------------------------------------------------------------------------------------------
# Run directories → points → optima
# ---------------------------------------------------------------------------------------------

def best_val_loss(run_dir: Path) -> float | None:
    """The lowest finite `eval_loss` of a run's evaluations (None without one)."""
    losses = [r.get("eval_loss") for r in eval_records(run_dir)]
    losses = [v for v in losses if v is not None and math.isfinite(v)]
    return min(losses) if losses else None


def load_points(run_dirs: list[str | Path], warn=None) -> pd.DataFrame:
    """One row per finished run (completed or diverged) under `run_dirs`: study, curve, seed, lr,
    best_val_loss (None for a diverged run), status and what describes its curve."""
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
        if not strategy_for(get_method(cfg.method), cfg.allocation).same_rank_everywhere or cfg.learning_rate is None:
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
            "best_val_loss": best_val_loss(run_dir) if summary["status"] == "completed" else None,
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
                     "optimal_lr": log_median(found["optimal_lr"]),
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
                table.at[index, "ratio"] = log_median(list(paired.values()))
                table.at[index, "ratio_min"] = min(paired.values())
                table.at[index, "ratio_max"] = max(paired.values())
            if row["optimal_lr"] is not None and reference["optimal_lr"] is not None:
                table.at[index, "ratio_of_medians"] = row["optimal_lr"] / reference["optimal_lr"]
    return table
