"""The adaptive LoRA-XS study's command line (scripts/run_glue_adaptive.py) translated to rankwise: its flags and
the RunConfig fields they set, the study's defaults (its method exactly; rankwise's improvements opt-in), its
fallbacks (rank_max from rank_start or rank_average, a budget schedule for --rank_start), one RunConfig per seed.
`rankwise glue` (rankwise.cli.train) is its argparse layer.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

from ..config import RunConfig, config_from_dict, prepare
from ..runs.naming import run_name
from ..planning import build_plan, meta_model
from ..sweep import check_configs, describe_runs, run_sweep

# study flag -> (RunConfig field, type). Defaults are the study's where it had them.
GLUE_FLAGS = {
    "target_task": ("task", str), "batch_size": ("per_device_train_batch_size", int),
    "epoch": ("num_train_epochs", int), "rank_average": ("rank_average", float), "rank_min": ("rank_min", int),
    "rank_max": ("rank_max", int), "rank_start": ("rank_start", float), "memory_start": ("memory_start", float),
    "memory_end": ("memory_end", float), "epochs_memory_start": ("epochs_memory_start", int),
    "epochs_memory_start_to_end": ("epochs_memory_start_to_end", int),
    "epochs_rank_discrete": ("epochs_rank_discrete", int), "alpha_min": ("alpha_min", float),
    "alpha_max": ("alpha_max", float), "alpha_scheduler": ("alpha_scheduler", str),
    "rank_allocation_lr": ("rank_allocation_lr", float), "lr_scheduler": ("lr_scheduler", str),
    "lr": ("learning_rate", float), "cls_lr": ("cls_learning_rate", float),
    "rank_allocation_weights_init": ("rank_allocation_weights_init", str), "tau": ("tau", float),
    # rankwise's improvements on the study's method, opt-in (each defaults to the study's behaviour here)
    "budget_mode": ("budget_mode", str), "rounding": ("rounding", str),
    "alpha_schedule_span": ("alpha_schedule_span", str), "weight_decay": ("weight_decay", float),
    "rank_allocation_weight_decay": ("rank_allocation_weight_decay", float),
    # rankwise additions: where the model and data are on this machine, and run size
    "model": ("model", str), "data_dir": ("data_dir", str), "method": ("method", str),
    "max_train_samples": ("max_train_samples", int), "max_eval_samples": ("max_eval_samples", int),
    "logging_steps": ("logging_steps", int),
}
# The study's method exactly (its utils/adaptive code): the softmax budget formula (ranks may pass rank_max),
# each rank rounded on its own, no discrete epochs unless asked, α stepped over all epochs × steps, torch AdamW's
# weight decay 0.01 in every parameter group (the allocation weights' too), a log every 20 steps, the update scale
# α/rank_max of adapters built at rank_max.
GLUE_DEFAULTS = {"task": "cola", "model": "roberta-large", "per_device_train_batch_size": 32, "num_train_epochs": 50,
                 "learning_rate": 1e-3, "cls_learning_rate": 5e-3, "alpha_min": 0.5, "alpha_max": 3.0,
                 "rank_allocation_lr": 1e-2, "rank_allocation_weights_init": "random",
                 "lr_scheduler": "linear_schedule_with_warmup", "method": "loraxs",
                 "allocation": "learned", "budget_mode": "softmax", "rounding": "study", "epochs_rank_discrete": 0,
                 "alpha_schedule_span": "all", "weight_decay": 0.01, "rank_allocation_weight_decay": 0.01,
                 "logging_steps": 20, "learned_scale": "rank_max"}
GLUE_NAMES = {field: flag for flag, (field, _) in GLUE_FLAGS.items()}  # RunConfig field -> its flag here
GLUE_SEEDS = (0, 1, 2, 3, 4)
# --rank_start without a schedule: the budget held for this fraction of the epochs, then moved over the next
# fraction (epochs 0-19 at rank_start, 20-39 moving, of 50: the study's last initial_bigger_memory report).
RANK_START_SCHEDULE = (0.4, 0.4)
GLUE_IMPROVEMENTS = ("--budget_mode capped (every rank in [rank_min, rank_max], the whole budget spent), --rounding "
                     "budget (hard ranks within the budget), --alpha_schedule_span soft (alpha_max reached at the last "
                     "soft step), --weight_decay 0 --rank_allocation_weight_decay 0")


def glue_values(args) -> dict:
    """RunConfig values (without the seed) of a study-style command line: GLUE_DEFAULTS, the flags given, and the
    study's fallbacks (rank_max = rank_start, else rank_average; a budget schedule for --rank_start)."""
    values = dict(GLUE_DEFAULTS)
    for field, _ in GLUE_FLAGS.values():
        given = getattr(args, field, None)
        if given is not None:
            values[field] = given
    if values.get("rank_max") is None:  # the study's fallback
        fallback = values.get("rank_start") if values.get("rank_start") is not None else values.get("rank_average")
        if fallback is not None:
            values["rank_max"] = int(math.ceil(fallback))
    if values.get("rank_start") is not None and values.get("epochs_memory_start") is None \
            and values.get("epochs_memory_start_to_end") is None:
        epochs = values["num_train_epochs"]
        hold, move = (int(fraction * epochs) for fraction in RANK_START_SCHEDULE)
        values["epochs_memory_start"], values["epochs_memory_start_to_end"] = hold, max(move, 1)
        print(f"note: --rank_start: the budget stays at rank {values['rank_start']:g}'s for {hold} epochs and moves "
              f"to --rank_average's over the next {max(move, 1)} (the schedule of the study's 50-epoch "
              "initial_bigger_memory report; its 51-epoch runs used --epochs_memory_start 15 "
              "--epochs_memory_start_to_end 10)", file=sys.stderr)
    return values


def glue_configs(args) -> list[RunConfig]:
    """One RunConfig per seed from study-style arguments, validated before any run starts."""
    values = glue_values(args)
    values["report_to"] = "none" if args.wandb_disabled else "wandb"
    if values["report_to"] == "wandb" and importlib.util.find_spec("wandb") is None:
        print("note: --wandb_disabled False: wandb is not installed (pip install wandb); metrics go to each run's "
              "metrics.jsonl only", file=sys.stderr)
        values["report_to"] = "none"
    values["quiet"] = args.quiet
    seeds = [args.seed] if args.seed is not None else list(GLUE_SEEDS)
    configs = []
    for seed in seeds:
        cfg = config_from_dict({**values, "seed": seed}, source="arguments")
        cfg.output_dir = str(Path(args.output_dir) / run_name(cfg))
        configs.append(prepare(cfg))
    return configs


def checked_glue_configs(args) -> list[RunConfig]:
    """glue_configs, and the rank plan, budget and data files checked on a weightless model, before any run."""
    configs = glue_configs(args)
    check_configs(configs)
    return configs


def dry_run_lines(configs: list[RunConfig]) -> list[str]:
    """The rank plan (its totals line for a static one) and each seed's run directory with its state."""
    plan, _ = build_plan(configs[0], *meta_model(configs[0]))
    lines = [plan.to_table() if plan.strategy().learned else plan.to_table().splitlines()[-1]]
    lines += [f"would run {cfg.output_dir} (seed {cfg.seed}, {cfg.num_train_epochs} epochs): {state}"
              for (name, state), cfg in zip(describe_runs(configs), configs)]
    return lines


def run_glue(configs: list[RunConfig], quiet: bool = False) -> list[dict]:
    """The sweep runner's records, one per seed. Seeds run one after another through it: finished seeds are
    skipped on a rerun, a crashed seed is recorded as failed and the others still run."""
    return run_sweep(configs, jobs=1, quiet=quiet)
