"""The headline study's numbers: runs → arms → the learning rate chosen per task and arm (on the selection seeds)
→ seed-paired comparisons with the baseline arm on the reporting seeds; and what training did to the learned
allocations.

An *arm* is a configuration without its learning rate: the sweep variant's `label`, else the method and ranks.
The statistics themselves (learning-rate selection, paired comparison, Holm within a family, power) are in
`report.stats`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ...runs.rundir import read_jsonl
from ..aggregate import (applicable, config_id, config_labels, describe_config, rank_text, read_matrices,
                         strategy_mask, varying_fields)
from ..stats import LR_LIKE_FIELDS, completed_runs, holm_within, paired_comparison, pearson, reported_scores

LR_FIELDS = ("learning_rate", "cls_learning_rate")  # an arm is its runs at every value of these


def arm_names(runs: pd.DataFrame) -> pd.Series:
    """Each run's arm: its `label`, else its configuration described without the learning rates."""
    varying = [f for f in varying_fields(runs) if f not in LR_FIELDS and f != "task"]

    def name(row) -> str:
        if isinstance(row.get("config_label"), str) and row["config_label"]:
            return row["config_label"]
        head, parts = describe_config(row.to_dict(), varying)
        return head + (f" ({', '.join(parts)})" if parts else "")

    return runs.apply(name, axis=1) if len(runs) else pd.Series(dtype=object)


def configuration_arms(runs: pd.DataFrame) -> pd.Series:
    """Each run's arm as a configuration without its learning rates: its label when that names one such
    configuration, else the label or description with the settings that tell them apart (`aggregate.config_labels`
    on the configurations with their learning rates left out)."""
    if runs.empty:
        return pd.Series(dtype=object)
    masked = runs.copy()
    for field in LR_FIELDS:
        masked[field] = None
    masked["label"] = masked["config_label"] if "config_label" in masked else None  # as configured, not as shown
    masked["config_id"] = [config_id(row) for row in masked.to_dict("records")]
    names = config_labels(masked)
    numbered = names.str.contains(r" #\d+$", regex=True)  # told apart by a field no description shows: the ranks
    names[numbered] = [re.sub(r" #\d+$", "", name) + f" {rank_text(row)}"
                       for name, row in zip(names[numbered], masked[numbered].to_dict("records"))]
    keys = pd.Series(list(zip(names, masked["config_id"])), index=names.index)
    for name in names[names.duplicated(keep=False)].unique():  # still the same name for different configurations
        ids = list(dict.fromkeys(masked.loc[names == name, "config_id"]))
        if len(ids) > 1:
            names[names == name] = [f"{name} #{ids.index(k[1]) + 1}" for k in keys[names == name]]
    return names


def adapter_params(runs: pd.DataFrame) -> pd.Series:
    """Adapter parameters at the final ranks (what a learned or pruned adapter keeps)."""
    hard = runs.get("params_adapter_at_hard_ranks")
    return hard.fillna(runs["params_adapter"]) if hard is not None else runs["params_adapter"]


def with_arms(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the study (those with a method) with two more columns, `arm` and `params` (adapter size), and
    the learning-rate fields that do not apply to a run (a fixed rank's allocation learning rate) as NaN."""
    runs = runs[runs["method"].notna()].copy()
    runs["arm"] = arm_names(runs)
    runs["params"] = adapter_params(runs)
    return mask_inapplicable(runs)


def mask_inapplicable(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with each learning-rate field NaN where it does not apply (so grid edges are checked where it does)."""
    for field in LR_LIKE_FIELDS:
        if field in runs and len(runs):
            runs[field] = pd.to_numeric(applicable(runs, field), errors="coerce")
    return runs


def runs_at(runs: pd.DataFrame, task: str, arm: str, lr: float) -> pd.DataFrame:
    """The completed runs of one arm on one task at one learning rate (its seeds)."""
    ok = completed_runs(runs)
    return ok[(ok["task"] == task) & (ok["arm"] == arm) & (ok["learning_rate"] == lr)]


def learned_arms(runs: pd.DataFrame) -> set:
    """The arms with learned allocation."""
    return set(runs.loc[strategy_mask(runs, "learned"), "arm"])


def default_baseline(runs: pd.DataFrame) -> str | None:
    """The fixed-rank adapter arm whose adapter size is closest to the learned arms' (median) budget."""
    learned = runs[strategy_mask(runs, "learned")]
    uniform = runs[strategy_mask(runs, "baseline")]
    if uniform.empty:
        return None
    sizes = uniform.groupby("arm")["params"].median()
    if learned.empty:
        return str(sizes.idxmin())
    target = float(learned["params"].median())
    return str((sizes - target).abs().sort_values(kind="stable").index[0])


def arm_order(chosen: pd.DataFrame, runs: pd.DataFrame, baseline: str | None) -> list[str]:
    """Baseline first, then the other arms by adapter size."""
    sizes = runs.groupby("arm")["params"].median().sort_values(kind="stable")
    arms = [a for a in sizes.index if a in set(chosen["arm"])]
    return ([baseline] if baseline in arms else []) + [a for a in arms if a != baseline]


def family_name(baseline: str, learned: bool = True) -> str:
    """The study's two questions, each its own multiple-comparison family: does learned allocation differ from the
    baseline (the question the study is for), and does any other method?"""
    return (f"learned allocation vs `{baseline}`, every task" if learned
            else f"the other methods vs `{baseline}`, every task")


def paired_rows(runs: pd.DataFrame, chosen: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (task, arm ≠ baseline) with a chosen learning rate: `task`, `arm`, `reference` (the baseline),
    `greater_is_better` and `stats.paired_comparison` on the seeds both report (`stats.reported_scores`)."""
    picked = chosen[chosen["chosen"]]
    rows = []
    for task, per_task in picked.groupby("task", sort=False):
        base = per_task[per_task["arm"] == baseline]
        if base.empty:
            continue
        gib = bool(base["greater_is_better"].iloc[0])
        base_scores = reported_scores(runs, chosen, task, baseline)
        for _, row in per_task[per_task["arm"] != baseline].iterrows():
            rows.append({"task": task, "arm": row["arm"], "reference": baseline, "greater_is_better": gib,
                         **paired_comparison(reported_scores(runs, chosen, task, row["arm"]), base_scores)})
    return pd.DataFrame(rows)


def compare_arms(runs: pd.DataFrame, chosen: pd.DataFrame, baseline: str, family: str | None = None
                 ) -> pd.DataFrame:
    """`paired_rows` with Holm within `family` (default: `family_name`, learned arms apart from the others), the
    detectable difference and the verdict (`stats.holm_within`)."""
    table = paired_rows(runs, chosen, baseline)
    if table.empty:
        return table
    if family is None:
        learned = learned_arms(runs)
        family = table["arm"].map(lambda arm: family_name(baseline, arm in learned))
    return holm_within(table, family)


# ---------------------------------------------------------------------------------------------
# Learned allocations


def matrix_kind(name: str) -> str:
    """The module's role inside its layer: `query`, `value`, `attention.output.dense`, ... (the name after
    the layer index)."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[i + 1:])
    return name


def learned_rank_grid(run_dirs: list[Path]) -> pd.DataFrame | None:
    """Mean final hard rank over `run_dirs` as a layer × matrix-kind table (from each run's ranks.json)."""
    frames = [pd.DataFrame([{"layer": m["layer"], "kind": matrix_kind(m["name"]), "rank": m["rank"]}
                            for m in matrices]) for matrices in map(read_matrices, run_dirs) if matrices]
    if not frames:
        return None
    ranks = pd.concat(frames)
    kinds = list(dict.fromkeys(ranks["kind"]))
    return ranks.groupby(["layer", "kind"])["rank"].mean().unstack("kind")[kinds]


def _allocation_ends(run_dir: Path) -> tuple[dict, dict] | None:
    """(first, last) continuous ranks of a learned run, from its allocation.jsonl."""
    records = read_jsonl(Path(run_dir) / "allocation.jsonl")
    if len(records) < 2:
        return None
    first, last = records[0]["continuous"], records[-1]["continuous"]
    names = [k for k in first if k in last]
    return {k: first[k] for k in names}, {k: last[k] for k in names}


def allocation_diagnostics(run_dirs: list[Path]) -> dict | None:
    """What training did to the allocation, from allocation.jsonl (continuous ranks at the first and last record):

    - `moved`, `moved_max`: mean and max over runs and matrices of |final − initial|;
    - `init_corr`: mean over runs of the correlation between final and initial ranks (near 1: the final
      allocation is mostly the initialisation; NaN when the initialisation is flat, e.g. `uniform`);
    - `agreement`: mean pairwise correlation, across runs (seeds), of the change final − initial (near 0:
      the direction training moved the ranks is seed noise; clearly positive: a reproducible preference);
    - `by_kind`: mean change per matrix kind (query, value, ...), largest gain first;
    - `runs`: how many runs had an allocation log.
    """
    ends = [e for e in (_allocation_ends(d) for d in run_dirs) if e]
    if not ends:
        return None
    names = list(ends[0][0])
    ends = [(f, l) for f, l in ends if list(f) == names]
    firsts = np.array([[f[k] for k in names] for f, _ in ends])
    lasts = np.array([[l[k] for k in names] for _, l in ends])
    change = lasts - firsts
    pairs = [pearson(change[i], change[j]) for i in range(len(ends)) for j in range(i + 1, len(ends))]
    kinds = pd.Series(change.mean(axis=0), index=[matrix_kind(k) for k in names]).groupby(level=0).mean()
    return {"moved": float(np.abs(change).mean()), "moved_max": float(np.abs(change).max()),
            "init_corr": float(np.nanmean([pearson(f, l) for f, l in zip(firsts, lasts)]))
            if any(np.std(f) > 1e-9 for f in firsts) else float("nan"),
            "agreement": float(np.nanmean(pairs)) if pairs and not all(np.isnan(p) for p in pairs) else float("nan"),
            "by_kind": kinds.sort_values(ascending=False).to_dict(), "runs": len(ends)}


def learned_allocations(runs: pd.DataFrame, chosen: pd.DataFrame, tasks: list[str]) -> list[dict]:
    """Per task and learned arm at its chosen learning rate, where its runs have ranks.json: `task`, `arm`, `lr`,
    `grid` (learned_rank_grid), `diagnostics` (allocation_diagnostics, or None) and `arms_in_task` (how many
    learned arms were chosen on that task)."""
    out = []
    learned = learned_arms(runs)
    for task in tasks:
        picked = chosen[(chosen["task"] == task) & chosen["chosen"] & chosen["arm"].isin(learned)]
        for _, r in picked.iterrows():
            dirs = [Path(d) for d in runs_at(runs, task, r["arm"], r["learning_rate"])["run_dir"]]
            grid = learned_rank_grid(dirs)
            if grid is None:
                continue
            out.append({"task": task, "arm": r["arm"], "lr": r["learning_rate"], "grid": grid,
                        "diagnostics": allocation_diagnostics(dirs), "arms_in_task": len(picked)})
    return out
