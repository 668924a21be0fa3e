"""The allocation record of a logging step, mirrored to Weights & Biases (`--report_to wandb`, or `rankwise glue
--wandb_disabled False`).

The adaptive LoRA-XS study's plots read W&B keys `alpha`, `memory` and `rank_allocation_<i>` (matrix i in model
order: the continuous rank in the soft phase, the rounded rank in the discrete phase); rankwise adds every matrix's
continuous and hard rank by name. Transformers' W&B callback logs the metrics; this adds what allocation.jsonl holds.
"""

from __future__ import annotations


def allocation_values(record: dict, step: int) -> dict[str, float]:
    """The W&B values of one allocation.jsonl record (see the module docstring)."""
    values: dict[str, float] = {"train/global_step": step}
    if "alpha" in record:
        values["alpha"] = float(record["alpha"])
    values["memory"] = float(record["budget"])
    values["budget_used"] = float(record["budget_used"])
    discrete = bool(record.get("discrete"))
    continuous, hard = record.get("continuous") or {}, record.get("hard") or {}
    for i, name in enumerate(hard):
        values[f"rank_allocation_{i}"] = float(hard[name] if discrete else continuous.get(name, hard[name]))
        values[f"rank_continuous/{name}"] = float(continuous.get(name, hard[name]))
        values[f"rank_hard/{name}"] = float(hard[name])
    return values


def log_allocation_to_wandb(record: dict, step: int) -> bool:
    """Log `record` to the active W&B run; False (nothing logged) without wandb or an active run."""
    try:
        import wandb
    except ImportError:
        return False
    if getattr(wandb, "run", None) is None:
        return False
    wandb.log(allocation_values(record, step))
    return True
