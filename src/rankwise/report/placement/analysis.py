"""The layer-wise placement study's numbers: per rank-placement strategy (a configuration, e.g. "linear decay
16→4") the eval loss, perplexity, size and training time over seeds, and each budget-matched strategy against
the uniform configuration of the same adapter size."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..aggregate import group_runs, row_strategy
from ..stats import median_and_std, paired_t_p, welch_p

TASK = "alpaca"
LOSS = "best:eval_loss"
PERPLEXITY = "best:eval_perplexity"


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
            "baseline": row_strategy(group).baseline,
            "match_budget": bool(group.get("match_budget")) if group.get("match_budget") is not None else False,
            "runs": len(members), "completed": len(ok),
            "not_completed": int((members["status"] != "completed").sum()),
            "loss": median_and_std(loss), "perplexity": median_and_std(ppl),
            "losses": dict(zip(ok["seed"].astype(int), loss)),
            "params": float(params.median()) if params.notna().any() else math.nan,
            "percent": float((100 * params / model).median()) if params.notna().any() else math.nan,
            "time": median_and_std(ok["wall_time_s"].to_numpy(dtype=float)),
        })
    stats = pd.DataFrame(rows)
    if stats.empty:
        return stats
    stats["loss_median"] = [s[0] for s in stats["loss"]]
    return stats.sort_values("loss_median", na_position="last", kind="stable").reset_index(drop=True)


def uniform_reference(stats: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """The uniform configuration a budget-matched strategy is compared with: same adapter size (within 1%)."""
    uniform = stats[stats["baseline"] & (stats["completed"] > 0)]
    if uniform.empty or math.isnan(row["params"]):
        return None
    gap = (uniform["params"] - row["params"]).abs() / row["params"]
    return uniform.loc[gap.idxmin()] if gap.min() <= 0.01 else None


def compare_with_uniform(stats: pd.DataFrame) -> list[dict]:
    """Per budget-matched strategy with completed runs: paired per-seed differences in eval loss to uniform at
    the same budget (negative = better than uniform), Welch's t-test and whether the seed ranges separate."""
    out = []
    for _, row in stats.iterrows():
        if row["baseline"] or not row["completed"]:
            continue
        reference = uniform_reference(stats, row)
        if reference is None:
            continue
        seeds = sorted(set(row["losses"]) & set(reference["losses"]))
        diffs = np.array([row["losses"][s] - reference["losses"][s] for s in seeds])
        mine, theirs = np.array(list(row["losses"].values())), np.array(list(reference["losses"].values()))
        p_value = welch_p(mine, theirs)
        paired_p = paired_t_p(diffs)
        enough = min(len(mine), len(theirs)) > 1  # one seed says nothing about seed noise
        out.append({"label": row["label"], "reference": reference["label"], "seeds": seeds, "diffs": diffs,
                    "median_diff": float(np.median(diffs)) if len(diffs) else math.nan,
                    "p_value": p_value, "paired_p": paired_p, "enough_seeds": enough,
                    "consistent": len(diffs) > 1 and bool((diffs > 0).all() or (diffs < 0).all()),
                    "better": enough and bool(mine.max() < theirs.min()),
                    "worse": enough and bool(mine.min() > theirs.max())})
    return out


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
