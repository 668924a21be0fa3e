"""Run directories → one table row per run (`load_runs`) → one row per configuration over its seeds
(`group_runs`); configuration labels (`config_labels`, `describe_config`, `rank_text`) and the default
baselines (`resolve_baselines`).

The reported number of a run (`score`) is the study's: the best value over epochs of the task's main
metric (max, or min for losses), × 100 for metrics in [-1, 1] (accuracy, correlations, F1). `final_score`
is the same for the last epoch. Statistics over seeds use completed runs only: a diverged or failed run is
listed by the report, never averaged in. `std` is the sample standard deviation (ddof=1, as
`numpy.std(x, ddof=1)`); it is NaN for a single seed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..allocation import AllocationStrategy, registered, strategy_for
from ..config import FIELDS, applies
from ..errors import ConfigError, RunDirError
from ..methods import METHODS, get_method, titles, trains_adapter
from ..runs.naming import NOT_IDENTITY, with_old_defaults
from ..runs.rundir import SUMMARY, read_json, read_jsonl, read_summary
from .text import is_missing, short_text, value_text

CONFIG_FIELDS = list(FIELDS)
IDENTITY_FIELDS = [f for f in CONFIG_FIELDS if f not in NOT_IDENTITY and f != "seed"]
# options that mean nothing for full fine-tuning (left out of its labels)
ADAPTER_ONLY = {"target_modules", "lora_alpha", "alpha_policy", "lora_dropout", "match_budget", "budget"}
METHOD_NAMES = titles(short=True)
SCHEDULER_NAMES = {"constant_schedule": "constant LR", "linear_schedule_with_warmup": "linear warm-up LR",
                   "cosine": "cosine LR"}


def is_run_dir(path: Path) -> bool:
    """A rankwise run directory (or what is left of one): it holds summary.json, config.json or metrics.jsonl."""
    return (path / SUMMARY).is_file() or (path / "config.json").is_file() or (path / "metrics.jsonl").is_file()


def find_run_dirs(paths: list[str | Path], warn=None) -> list[Path]:
    """Run directories among `paths` and below them (recursively; a run directory's own subfolders and
    hidden folders are not searched). Raises RunDirError for a path that does not exist; a folder that cannot be
    read is skipped (with `warn`)."""
    found: list[Path] = []

    def walk(path: Path) -> None:
        try:
            if is_run_dir(path):
                found.append(path)
                return
            children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as exc:
            if warn is not None:
                warn(f"skipping {path}: it cannot be read ({exc.strerror or exc})")
            return
        for child in children:
            walk(child)

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise RunDirError(f"run directory `{path}` does not exist" if not path.exists()
                              else f"`{path}` is not a directory; give run directories or folders holding them")
        walk(path)
    return list(dict.fromkeys(found))


def metric_scale(metric: str | None, greater_is_better: bool) -> float:
    """×100 for bounded quality metrics (the study's convention); losses and perplexities stay as they are."""
    return 100.0 if greater_is_better and metric and "loss" not in metric and "perplexity" not in metric else 1.0


def config_id(config: dict) -> str:
    """Identity of a configuration over seeds: every result-relevant field that applies to its method and
    allocation, except the seed, so a changed default of a field that does not apply (a gradient option on a
    learned run) does not split one configuration's seeds into two."""
    allocation, method, task = config.get("allocation"), config.get("method"), config.get("task")
    known = allocation is not None and method is not None
    identity = {k: config.get(k) for k in IDENTITY_FIELDS if not known or applies(k, allocation, method, task)}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]


def eval_records(run_dir: Path, untrained: bool = False) -> list[dict]:
    """The evaluation records of a run's metrics.jsonl, in order; the untrained model's (step 0, --eval_on_start)
    only with `untrained` (a curve's start, never a run's best or final score)."""
    return [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl")
            if r.get("type") == "eval" and (untrained or r.get("step", 1) != 0)]


def read_matrices(run_dir: Path) -> list[dict]:
    """Target matrices of a run (name, layer, kind, rank) in model order, from its ranks.json ([] without one)."""
    path = Path(run_dir) / "ranks.json"
    return read_json(path).get("matrices", []) if path.is_file() else []


def _run_row(run_dir: Path, summary: dict) -> dict:
    config_file = run_dir / "config.json"
    config = read_json(config_file).get("config") if config_file.is_file() else None
    config = with_old_defaults(config) if config is not None else {}  # fields an older rankwise did not write
    row: dict = {field: config.get(field, summary.get(field)) for field in CONFIG_FIELDS}
    for key in ("task", "method", "allocation", "seed"):
        if row.get(key) is None:
            row[key] = summary.get(key)
    metric = summary.get("main_metric")
    greater = summary.get("greater_is_better", True)
    evals = eval_records(run_dir)
    values = [(r["epoch"], r[metric]) for r in evals if metric and r.get(metric) is not None]
    best_epoch, best = (max if greater else min)(values, key=lambda e: e[1]) if values else (None, None)
    final_epoch, final = values[-1] if values else (None, None)
    scale = metric_scale(metric, greater)
    params = summary.get("trainable_parameters") or {}
    hard = summary.get("hard_ranks") or {}
    row.update({
        "status": summary.get("status"), "message": summary.get("message"),
        "metric": metric, "greater_is_better": greater,
        "score": best * scale if best is not None else np.nan,
        "final_score": final * scale if final is not None else np.nan,
        "best": best if best is not None else np.nan, "final": final if final is not None else np.nan,
        "best_epoch": best_epoch, "final_epoch": final_epoch,
        "epochs_completed": summary.get("epochs_completed"), "steps": summary.get("steps"),
        "skipped_steps": summary.get("skipped_steps"), "wall_time_s": summary.get("wall_time_s"),
        "steps_per_second": summary.get("steps_per_second"),
        "params_adapter": params.get("adapter"), "params_head": params.get("head"),
        "params_allocation": params.get("allocation"),
        "params_adapter_at_hard_ranks": params.get("adapter_at_hard_ranks", params.get("adapter")),
        "model_parameters": summary.get("model_parameters"),
        "mean_hard_rank": float(np.mean(list(hard.values()))) if hard else np.nan,
        "saved_weights": (summary.get("saved_weights") or {}).get("which", "final"),
        "run_name": run_dir.name, "run_dir": str(run_dir), "config_id": config_id(row),
    })
    best_record = next((r for r in evals if r["epoch"] == best_epoch), None)
    final_record = evals[-1] if evals else None
    for prefix, record in (("best", best_record), ("final", final_record)):
        for key, value in (record or {}).items():
            if key.startswith("eval") or key.startswith("test"):
                row[f"{prefix}:{key}"] = value
    return row


def _records_problem(path: Path) -> str | None:
    """Why a run's JSONL record file (metrics.jsonl, allocation.jsonl) cannot be reported, or None: unreadable,
    not UTF-8, a line that is not JSON (corrupt, or cut short), or not a record object (another program's file)."""
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        return f"{path.name} is corrupt: byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8 text"
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            cut = " (cut short)" if number == len(lines) and not data.endswith(b"\n") else ""
            return f"{path.name} line {number} is not JSON{cut}: corrupt or truncated"
        if not isinstance(record, dict) or (path.name == "metrics.jsonl" and "type" not in record):
            return (f"{path.name} line {number} is not a rankwise record (`{line[:40]}`; a record is an "
                    "object" + (' with a "type"' if path.name == "metrics.jsonl" else "") + "): not rankwise's file")
    return None


def _truncated(run_dir: Path, summary: dict) -> str | None:
    """A metrics.jsonl that parses but lacks the final evaluation summary.json records was cut at a line."""
    final = summary.get("final")
    if not isinstance(final, dict) or "step" not in final:
        return None
    if not any(r.get("step") == final["step"] for r in eval_records(run_dir)):
        return (f"metrics.jsonl lacks the final evaluation {SUMMARY} records (step {final['step']}): truncated or "
                "from another run")
    return None


def _unreadable(run_dir: Path) -> str | None:
    """Why a run directory cannot be reported (None when it can): no summary yet, or a file that does not parse
    or has the wrong shape (summary.json, config.json, metrics.jsonl, allocation.jsonl)."""
    if not (run_dir / SUMMARY).is_file():
        return f"no {SUMMARY} (the run is still going or was killed)"
    for name, key in ((SUMMARY, None), ("config.json", "config")):
        path = run_dir / name
        if not path.is_file() and name == "config.json":
            continue
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            return f"{name} cannot be read ({type(exc).__name__}: {exc})"
        if not isinstance(data, dict) or (key is not None and not isinstance(data.get(key, {}), dict)):
            return (f"{name} is not a rankwise {name} (expected a JSON object"
                    + (f" with a `{key}` object" if key else "") + ")")
    for name in ("metrics.jsonl", "allocation.jsonl"):
        problem = _records_problem(run_dir / name)
        if problem:
            return problem
    return _truncated(run_dir, read_json(run_dir / SUMMARY))


def load_runs(run_dirs: list[str | Path], warn=None) -> pd.DataFrame:
    """One row per run directory found under `run_dirs` (run directories, or folders holding them at any
    depth). Columns: every RunConfig field, status, message, metric, score / final_score (the reported
    numbers), best / final (raw metric), best_epoch, epochs_completed, wall_time_s, params_*, mean_hard_rank,
    run_name, run_dir, config_id, and `best:<eval key>` / `final:<eval key>` for every evaluation value.
    Directories without summary.json (killed or running) or with unreadable files are skipped with a warning."""
    warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr))
    rows = []
    for run_dir in find_run_dirs(run_dirs, warn):
        problem = _unreadable(run_dir)
        if problem:
            warn(f"skipping {run_dir}: {problem}")
            continue
        rows.append(_run_row(run_dir, read_summary(run_dir)))
    outcome = ["status", "message", "metric", "greater_is_better", "score", "final_score", "best", "final",
               "best_epoch", "final_epoch", "epochs_completed", "steps", "skipped_steps", "wall_time_s",
               "steps_per_second", "params_adapter", "params_head", "params_allocation",
               "params_adapter_at_hard_ranks", "model_parameters", "mean_hard_rank", "saved_weights", "run_name",
               "run_dir", "config_id"]
    # greater_is_better is also transformers' option: the column holds the task's direction (the summary's)
    columns = [c for c in CONFIG_FIELDS if c not in outcome] + outcome
    df = pd.DataFrame(rows)
    for column in columns:
        if column not in df:
            df[column] = pd.Series(dtype=object)
    extra = sorted(c for c in df.columns if c not in columns)
    df = df[columns + extra]
    if not df.empty:
        df = df.sort_values(["task", "config_id", "seed"], kind="stable").reset_index(drop=True)
        df["config_label"] = df["label"]  # as configured (a sweep variant's label), before naming
        df["label"] = config_labels(df)
    return df


# ---------------------------------------------------------------------------------------------
# Configuration labels
# ---------------------------------------------------------------------------------------------

def varying_fields(df: pd.DataFrame) -> list[str]:
    """Identity fields whose value differs between the configurations in `df` it applies to (a learned-only
    knob is compared among learned configurations only)."""
    out = []
    for field in IDENTITY_FIELDS:
        if field not in df:
            continue
        mask = [applies(field, a, m) for a, m in zip(df["allocation"], df["method"])]
        if df.loc[mask, field].astype(str).nunique() > 1:
            out.append(field)
    return out


def row_strategy(row) -> AllocationStrategy:
    """The allocation strategy of a results row: its method's own (AdaLoRA, full fine-tuning), else the one it
    names."""
    method, allocation = row.get("method"), row.get("allocation")
    if is_missing(allocation):
        allocation = "uniform"  # the default, in rows written before the field was
    if allocation not in registered_names():
        return AllocationStrategy()  # a row from another program or version: described by its rank, no baseline
    return strategy_for(get_method(method) if method in METHODS else None, allocation)


def registered_names() -> set[str]:
    return {s.name for s in registered()}


def strategy_mask(frame: pd.DataFrame, attribute: str) -> pd.Series:
    """Per row of `frame` (with `method` and `allocation` columns): its strategy's boolean `attribute`."""
    if frame.empty:
        return pd.Series(False, index=frame.index)
    return frame.apply(lambda row: bool(getattr(row_strategy(row), attribute)), axis=1).astype(bool)


def is_uniform(row) -> bool:
    """A fixed uniform rank of a method that trains adapters at the ranks it is given (the reports' baseline)."""
    init = row.get("init")
    return row_strategy(row).baseline and (is_missing(init) or init == "default")


def rank_text(row) -> str:
    """The ranks of a configuration in a few characters, as its strategy describes them: `r25`, `16→4`,
    `att 16 / mlp 8`, `5–30, avg 20`, `1–16, budget r4` (gradient allocation), `full`."""
    return row_strategy(row).describe(row, short_text)


def describe_config(row, varying: list[str]) -> tuple[str, list[str]]:
    """(head, details): `LoRA-XS learned`, [`α 0.1→5`, `constant LR`] from the fields in `varying`."""
    method = METHOD_NAMES.get(row.get("method"), str(row.get("method")))
    learned = row_strategy(row).learned
    if not trains_adapter(row.get("method")):
        head = method
    elif learned:
        head = f"{method} learned"
    elif row.get("init") == "eva":
        head = f"{method} EVA {rank_text(row)}"
    else:
        head = f"{method} {rank_text(row)}"
    parts = []
    if row.get("init") == "eva" and "eva_rho" in varying:
        parts.append(f"EVA ρ {short_text(row['eva_rho'])}")
    if learned and ("alpha_min" in varying or "alpha_max" in varying):
        parts.append(f"α {short_text(row['alpha_min'])}→{short_text(row['alpha_max'])}")
    if learned and ("rank_min" in varying or "rank_max" in varying):
        parts.append(f"r {short_text(row['rank_min'])}–{short_text(row['rank_max'])}")
    if learned and ("rank_average" in varying or "memory_start" in varying or "memory_end" in varying):
        if not is_missing(row.get("memory_start")):
            parts.append(f"M {short_text(row['memory_start'])}→{short_text(row['memory_end'])}")
        else:
            parts.append(f"avg {short_text(row['rank_average'])}")
    shown = {"method", "allocation", "rank", "rank_first", "rank_last", "rank_attention", "rank_mlp", "rank_file",
             "label", "task", "alpha_min", "alpha_max", "rank_min", "rank_max", "rank_average", "memory_start",
             "memory_end", "init", "eva_rho", "adalora_target_r"}
    for field in varying:
        value = row.get(field)
        if field in shown or not applies(field, row.get("allocation"), row.get("method")):
            continue
        if not trains_adapter(row.get("method")) and field in ADAPTER_ONLY:
            continue
        if field == "cls_learning_rate" and value == row.get("learning_rate"):
            continue  # the head trains at the adapter's rate: `lr` says it
        if field == "lr_scheduler":
            parts.append(SCHEDULER_NAMES.get(value, str(value)))
        elif field == "rank_allocation_lr":
            parts.append(f"alloc-lr {short_text(value)}")
        elif field == "rank_allocation_weights_init":
            parts.append(f"init {value}")
        elif field == "learning_rate":
            parts.append(f"lr {short_text(value)}")
        elif is_missing(value):
            parts.append(f"no {field}")
        else:
            parts.append(f"{field} {short_text(value)}")
    return head, parts


def config_labels(df: pd.DataFrame) -> pd.Series:
    """A readable name per run's configuration: its `label` if set, else built from the method, the ranks and
    the options that differ between the configurations of `df` (e.g. `LoRA-XS learned (α 0.1→5, constant LR)`).
    A label shared by several configurations (a sweep variant crossed with a grid) gets their differences
    appended, so no two configurations share a name."""
    firsts = df.drop_duplicates("config_id").set_index("config_id", drop=False)
    varying = varying_fields(firsts)
    labels = {}
    for cid, row in firsts.iterrows():
        label = row.get("label")
        if isinstance(label, str) and label:
            labels[cid] = label
        else:
            head, parts = describe_config(row.to_dict(), varying)
            labels[cid] = head + (f" ({', '.join(parts)})" if parts else "")
    names = pd.Series(labels)
    for name in names[names.duplicated(keep=False)].unique():
        same = firsts.loc[names[names == name].index]
        among = varying_fields(same)
        ranks = {cid: rank_text(row.to_dict()) for cid, row in same.iterrows()}
        for cid, row in same.iterrows():
            _, parts = describe_config(row.to_dict(), among)
            # the head that the label replaced showed the ranks (a learned allocation's are among the parts)
            ranked = f"{name} {ranks[cid]}" if len(set(ranks.values())) > 1 and not row_strategy(
                row.to_dict()).learned else name
            labels[cid] = f"{ranked} ({', '.join(parts)})" if parts else ranked
    # differences no description shows; the task is a column of every table, so it does not count
    tasks = firsts["task"] if "task" in firsts else pd.Series("", index=firsts.index)
    keys = pd.Series({cid: (labels[cid], tasks[cid]) for cid in labels})
    for key in keys[keys.duplicated(keep=False)].unique():
        for k, cid in enumerate(keys[keys == key].index, 1):
            labels[cid] = f"{key[0]} #{k}"
    return df["config_id"].map(labels)


# ---------------------------------------------------------------------------------------------
# Over seeds
# ---------------------------------------------------------------------------------------------

def check_fields(df: pd.DataFrame, fields: list[str], option: str) -> None:
    for field in fields:
        if field not in df.columns:
            close = difflib.get_close_matches(field, list(df.columns), n=1)
            hint = f"Did you mean `{close[0]}`? " if close else ""
            raise ConfigError(option, f"`{field}` is not a config field or results column",
                              f"{hint}Use run options such as rank_allocation_weights_init, alpha_min, lr_scheduler")


def applicable(df: pd.DataFrame, field: str) -> pd.Series:
    """`df[field]` with None where the field does not apply to the run (e.g. the allocation-weight
    initialisation of a fixed-rank baseline), so such runs form their own group instead of joining a default."""
    if field not in IDENTITY_FIELDS:
        return df[field]
    mask = [applies(field, a, m) for a, m in zip(df["allocation"], df["method"])]
    return df[field].astype(object).where(mask, None)


def group_runs(df: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """One row per group of runs: by configuration (all options but the seed) unless `by` names columns.

    Columns: the group keys, `label` (configurations: their label; else the key values), `runs` (all),
    `n` (completed runs, the ones in the statistics), `not_completed`, `median`, `std` (ddof=1), `mean`,
    `min`, `max`, `scores` (list, in seed order), `final_median`, `best_epoch_median`, `wall_time_median`,
    `params_median`, `mean_hard_rank`, plus every config field whose value is the same for the whole group.
    Sorted best first (descending median for greater-is-better metrics)."""
    if df.empty:
        return pd.DataFrame()
    keys = ["config_id"] if not by else list(by)
    check_fields(df, keys, "group_by")
    if by:
        df = df.copy()
        for field in by:
            df[field] = applicable(df, field)
    rows = []
    for key, group in df.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = group[group["status"] == "completed"].sort_values("seed")
        scores = ok["score"].to_numpy(dtype=float)
        scores = scores[~np.isnan(scores)]
        row = {k: v for k, v in zip(keys, key)}
        for field in CONFIG_FIELDS + ["metric", "greater_is_better"]:
            values = group[field].astype(str).unique()
            if field not in row and len(values) == 1:
                row[field] = group[field].iloc[0]
        row.update({
            "label": group["label"].iloc[0] if not by else ", ".join(
                f"{k}={value_text(v)}" for k, v in zip(keys, key)),
            "configs": group["config_id"].nunique(),
            "runs": len(group), "n": len(scores), "not_completed": int((group["status"] != "completed").sum()),
            "median": float(np.median(scores)) if len(scores) else np.nan,
            "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else np.nan,
            "mean": float(np.mean(scores)) if len(scores) else np.nan,
            "min": float(np.min(scores)) if len(scores) else np.nan,
            "max": float(np.max(scores)) if len(scores) else np.nan,
            "scores": [float(s) for s in scores],
            "seeds": [int(s) for s in ok["seed"]],
            "final_median": float(ok["final_score"].median()) if len(ok) else np.nan,
            "best_epoch_median": float(ok["best_epoch"].astype(float).median()) if len(ok) else np.nan,
            "wall_time_median": float(ok["wall_time_s"].astype(float).median()) if len(ok) else np.nan,
            "params_median": float(ok["params_adapter_at_hard_ranks"].astype(float).median()) if len(ok) else np.nan,
            "mean_hard_rank": float(ok["mean_hard_rank"].astype(float).median()) if len(ok) else np.nan,
        })
        rows.append(row)
    out = pd.DataFrame(rows)
    greater = bool(df["greater_is_better"].dropna().iloc[0]) if df["greater_is_better"].notna().any() else True
    out = out.sort_values("median", ascending=not greater, na_position="last", kind="stable")
    if "task" in out and out["task"].notna().all():  # tasks stay together, best first within each
        out = out.sort_values("task", kind="stable")
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------

def resolve_baselines(groups: pd.DataFrame, baseline: str | None) -> list[str]:
    """Labels of the baseline configurations: those whose label is `baseline`, else those matching it as a
    pandas query (e.g. "allocation == 'uniform' and rank == 25"); by default the fixed-rank (uniform)
    configurations when the report also holds adapters with another allocation."""
    if groups.empty:
        return []
    if baseline:
        if (groups["label"] == baseline).any():
            return [baseline]
        try:
            matched = groups.query(baseline, engine="python")
        except Exception as exc:  # not a label and not a valid query
            raise ConfigError("baseline", f"`{baseline}` is neither a configuration label nor a valid query ({exc})",
                              "Labels: " + "; ".join(f"`{l}`" for l in groups["label"])) from None
        if matched.empty:
            raise ConfigError("baseline", f"`{baseline}` matches no configuration",
                              "Labels: " + "; ".join(f"`{l}`" for l in groups["label"]))
        return matched["label"].tolist()
    adapters = groups[groups["method"].map(trains_adapter)]
    uniform = adapters[adapters.apply(is_uniform, axis=1)] if len(adapters) else adapters
    # Fixed-rank runs are the baseline of other allocations; a report of fixed-rank and full fine-tuning runs
    # only (e.g. an LR sweep) has nothing to hold them against.
    return uniform["label"].tolist() if 0 < len(uniform) < len(adapters) else []
