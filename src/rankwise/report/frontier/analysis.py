"""The budget frontier's numbers: runs → arms and budget points → each point at its own best learning rate →
seed-paired differences to uniform at the same budget, and the size each arm needs to reach uniform's best.

An *arm* is a configuration without its budget (`BUDGET_FIELDS`), learning rates, seed and label: `LoRA-XS
uniform`, `LoRA-XS learned`, `AdaLoRA`, ... A *point* is an arm at one budget. Learning-rate selection, the paired
comparison and Holm's correction are the headline study's (`report.stats`, `report.study.compare_arms`).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ...methods import allocates_ranks, trains_adapter
from ..aggregate import (IDENTITY_FIELDS, METHOD_NAMES, applicable, describe_config, is_uniform, rank_text,
                         row_strategy, varying_fields)
from ..placement.analysis import size_levels
from ..stats import holm_within, reported_scores, select_learning_rates
from ..study.analysis import LR_FIELDS, adapter_params, mask_inapplicable, paired_rows
from ..text import is_missing

# Fields that set an adapter's size: a point's budget, never part of its arm.
BUDGET_FIELDS = ("rank", "rank_average", "budget", "memory_start", "memory_end", "rank_start", "rank_first",
                 "rank_last", "rank_attention", "rank_mlp", "adalora_target_r")
# Sizes a sweep may scale with the budget (rank_max = 3 × rank_average): part of the budget when one budget fixes
# them, part of the arm when they vary at one budget.
FOLLOWERS = ("rank_min", "rank_max", "adalora_init_r")
ARM_FIELDS = [f for f in IDENTITY_FIELDS if f not in {*BUDGET_FIELDS, *FOLLOWERS, *LR_FIELDS, "label", "task"}]
SAME_BUDGET = 0.1  # a uniform point within 10% of a point's adapter size is "at the same budget"


def _key(columns: pd.DataFrame) -> pd.Series:
    """One string per row: the row's values (a grouping key)."""
    return columns.apply(lambda row: json.dumps(row.tolist(), default=str), axis=1)


def frontier_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The adapter runs with `arm` (its name), `point` (arm and budget: a key), `budget` (the budget as
    `rank_text` writes it), `uniform` (a fixed uniform rank arm) and `params` (adapter size at the final ranks)."""
    runs = runs[runs["method"].notna() & runs["method"].map(trains_adapter)].copy()
    if runs.empty:
        return runs.assign(arm=[], point=[], budget=[], uniform=[], params=[])
    budget = _key(runs[list(BUDGET_FIELDS)])
    base = _key(pd.DataFrame({f: applicable(runs, f) for f in ARM_FIELDS}))
    followers = _follower_parts(runs, base, budget)
    key = base + followers
    runs["arm"] = key.map(_arm_names(runs, key, followers))
    runs["point"] = runs["arm"] + " @ " + budget
    runs["budget"] = runs.apply(rank_text, axis=1)
    runs["uniform"] = runs.apply(is_uniform, axis=1)
    runs["params"] = adapter_params(runs).astype(float)
    return mask_inapplicable(runs)


def _follower_parts(runs: pd.DataFrame, base: pd.Series, budget: pd.Series) -> pd.Series:
    """Per run, the follower sizes that belong to its arm (` · rank_max 30`, ` · rank_max 3× avg rank`): those
    that take several values at one budget, as values or as multiples of the budget's average rank (rank_average,
    else rank), whichever makes fewer arms."""
    parts = pd.Series("", index=runs.index)
    average = pd.to_numeric(applicable(runs, "rank_average"), errors="coerce").fillna(
        pd.to_numeric(applicable(runs, "rank"), errors="coerce"))
    for field in FOLLOWERS:
        values = pd.to_numeric(applicable(runs, field), errors="coerce")
        ratio = (values / average).round(3)
        for rows in runs.groupby(base, sort=False).groups.values():
            if values[rows].groupby(budget[rows]).nunique().max() <= 1:
                continue  # one value per budget: the budget sets it
            if ratio[rows].notna().all() and ratio[rows].nunique() < values[rows].nunique():
                parts[rows] += f" · {field} " + ratio[rows].map(lambda r: f"{r:g}× avg rank")
            else:
                parts[rows] += f" · {field} " + values[rows].map(lambda v: f"{v:g}")
    return parts


def arm_head(row) -> str:
    """`LoRA-XS uniform`, `LoRA-XS learned`, `LoRA-XS rank annealing`, `LoRA-XS gradient`, `LoRA EVA`,
    `LoRA-XS linear decay (matched budget)`, `AdaLoRA`."""
    method = METHOD_NAMES.get(row.get("method"), str(row.get("method")))
    if allocates_ranks(row.get("method")):
        return method
    strategy = row_strategy(row)
    allocation = strategy.title
    if _true(row.get("rank_annealing")):  # learned allocation frozen at uniform: its own arm, not "learned"
        allocation = "rank annealing"
    if row.get("init") == "eva":
        return f"{method} EVA" + ("" if strategy.baseline else f" {allocation}")
    return f"{method} {allocation}" + (" (matched budget)" if _true(row.get("match_budget")) else "")


def _true(value) -> bool:
    """A boolean config value that is set and true (a field missing from older runs reads as NaN)."""
    return not is_missing(value) and bool(value)


def _arm_names(runs: pd.DataFrame, key: pd.Series, followers: pd.Series) -> dict[str, str]:
    """Arm key → name: the runs' shared `label` when no other arm has it, else `arm_head` with the settings that
    differ between arms and the arm's follower sizes; `#k` tells apart arms that still share a name."""
    firsts = runs.assign(_key=key, _followers=followers).drop_duplicates("_key").set_index("_key")
    labels = runs.groupby(key)["config_label"].agg(lambda s: s.iloc[0] if s.nunique(dropna=False) == 1 else None)
    shared = labels.dropna().value_counts()
    varying = [f for f in varying_fields(firsts) if f in ARM_FIELDS and f != "rank_annealing"]  # in the head
    names = {}
    for k, row in firsts.iterrows():
        label = labels.get(k)
        if isinstance(label, str) and label and shared[label] == 1:
            names[k] = label
            continue
        _, details = describe_config(row.to_dict(), varying)
        details += row["_followers"].split(" · ")[1:]
        names[k] = arm_head(row) + (f" ({', '.join(details)})" if details else "")
    counts = pd.Series(names).value_counts()
    for name in counts[counts > 1].index:
        for n, k in enumerate([k for k in names if names[k] == name], 1):
            names[k] = f"{name} #{n}"
    return names


def varies_budget(frame: pd.DataFrame) -> list[str]:
    """The tasks on which some arm other than a fixed uniform rank has points of at least two adapter sizes (1%
    apart): uniform at several ranks alone is a rank sweep, which the per-task tables show."""
    sizes = frame[~frame["uniform"]].dropna(subset=["params"]).groupby(["task", "arm", "point"])["params"].median()
    tasks = [task for (task, _), s in sizes.groupby(level=["task", "arm"]) if len(set(size_levels(list(s)))) > 1]
    return list(dict.fromkeys(tasks))


def by_point(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `arm` set to the point: the study's helpers then treat each budget point as an arm."""
    return frame.assign(arm=frame["point"])


def frontier_points(frame: pd.DataFrame, selection_seeds=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, chosen). `points`: one row per (task, point) with a chosen learning rate: task, arm, point, budget,
    method, uniform, params (median over the reported runs), learning_rate, edge (`lowest` / `highest` of the rates
    tried, `only` for one rate, else `inside`), rule, selection_median, and over the reporting seeds median, std, n,
    scores and seeds (n = 0 when the chosen rate has no seed beyond the selection seeds). `chosen`: the
    `select_learning_rates` table by point."""
    per_point = by_point(frame)
    chosen = select_learning_rates(per_point, selection_seeds)
    rows = []
    for r in chosen[chosen["chosen"]].itertuples():
        reported = reported_scores(per_point, chosen, r.task, r.arm)
        seeds = sorted(reported)
        runs = per_point[(per_point["task"] == r.task) & (per_point["arm"] == r.arm)
                         & (per_point["learning_rate"] == r.learning_rate) & (per_point["status"] == "completed")]
        if seeds:  # the size of what is reported (a learned adapter's final ranks differ a little by seed)
            runs = runs[runs["seed"].isin(seeds)]
        first = runs.iloc[0]
        rows.append({"task": r.task, "arm": frame.loc[runs.index[0], "arm"], "point": r.arm,
                     "budget": first["budget"], "method": first["method"], "uniform": bool(first["uniform"]),
                     "params": float(runs["params"].median()), "learning_rate": r.learning_rate, "edge": r.edge,
                     "rule": r.rule, "median": r.report_median, "std": r.report_std, "n": r.report_n,
                     "selection_median": r.selection_median, "greater_is_better": r.greater_is_better,
                     "scores": [reported[s] for s in seeds], "seeds": seeds})
    points = pd.DataFrame(rows)
    return (points.sort_values(["task", "arm", "params"], kind="stable").reset_index(drop=True) if rows else points,
            chosen)


def uniform_reference(points: pd.DataFrame, point: pd.Series) -> pd.Series | None:
    """The uniform point of `point`'s task at the same budget (adapter size within SAME_BUDGET), the same
    method's first, then the closest; None when there is none."""
    candidates = points[(points["task"] == point["task"]) & points["uniform"] & points["params"].notna()]
    gap = (np.log(candidates["params"] / point["params"])).abs()
    near = candidates[gap <= np.log1p(SAME_BUDGET)].assign(_other=lambda d: d["method"] != point["method"],
                                                            _gap=gap)
    return None if near.empty else near.sort_values(["_other", "_gap"], kind="stable").iloc[0]


def _reference_pairs(points: pd.DataFrame) -> pd.DataFrame:
    """task, reference (uniform point) and point, for every non-uniform point with a uniform point at its budget."""
    pairs = []
    for _, p in points[~points["uniform"]].iterrows():
        u = uniform_reference(points, p)
        if u is not None:
            pairs.append({"task": p["task"], "reference": u["point"], "point": p["point"]})
    return pd.DataFrame(pairs, columns=["task", "reference", "point"])


FAMILY = "every arm vs uniform at the same budget, every task"  # the section's one question


def budget_comparisons(frame: pd.DataFrame, points: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """One row per non-uniform point with a uniform point at its budget: `stats.paired_comparison` of point − uniform
    on the seeds both report, with `arm` (the arm's name), `point`, `reference` (the uniform point), `budget`,
    `reference_budget`, and Holm's correction, duplicates and power within the section's one family (`FAMILY`)."""
    per_point = by_point(frame)
    tables = []
    for (task, reference), group in _reference_pairs(points).groupby(["task", "reference"], sort=False):
        picked = chosen[(chosen["task"] == task) & chosen["arm"].isin([reference, *group["point"]])]
        tables.append(paired_rows(per_point, picked, reference))
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame()
    table = holm_within(pd.concat(tables, ignore_index=True), FAMILY)  # `arm` is the point here
    names = points.drop_duplicates("point").set_index("point")
    return table.rename(columns={"arm": "point"}).assign(
        arm=lambda t: t["point"].map(names["arm"]), budget=lambda t: t["point"].map(names["budget"]),
        reference_budget=lambda t: t["reference"].map(names["budget"]),
        duplicate_of=lambda t: t["duplicate_of"].map(names["arm"]))


def parameters_needed(points: pd.DataFrame, reference: pd.Series) -> dict[str, dict]:
    """Per arm of `reference`'s task: `needed`, its smallest point whose median reaches `reference`'s (None: not
    reached), and `best`, its best point."""
    task = points[points["task"] == reference["task"]]
    sign = 1 if reference["greater_is_better"] else -1
    out = {}
    for arm, g in task.groupby("arm", sort=False):
        g = g.sort_values("params")
        reached = g[sign * g["median"] >= sign * reference["median"]]
        out[arm] = {"needed": reached.iloc[0] if len(reached) else None, "best": g.loc[(sign * g["median"]).idxmax()]}
    return out


def references(points: pd.DataFrame, task: str) -> list[pd.Series]:
    """Each uniform arm's largest point on `task` with reported seeds: the scores the other arms are asked to
    reach."""
    uniform = points[(points["task"] == task) & points["uniform"] & (points["n"] > 0)]
    return [g.loc[g["params"].idxmax()] for _, g in uniform.groupby("arm", sort=False)]
