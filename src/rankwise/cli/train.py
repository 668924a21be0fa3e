"""`rankwise train | plan | glue | models`: one run, its rank plan, the adaptive LoRA-XS study's command
line, and the embedded models."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

from ..allocation import strategy_for
from ..config import RunConfig, add_config_arguments, config_from_args, config_from_dict, parse_bool, prepare
from ..methods import get_method
from ..errors import ConfigError, ModelError, RankwiseError
from ..naming import run_name
from ..rundir import check_writable_path, write_json_atomic, write_text_atomic


def print_summary(summary: dict, run_dir: str) -> None:
    status = summary.get("status")
    metric = summary.get("main_metric")
    best = (summary.get("best") or {}).get(metric)
    line = f"{status}: {run_dir}"
    if best is not None:
        line += f"  best {metric} {best:.4f} (epoch {summary.get('best_epoch')})"
    weights = summary.get("saved_weights") or {}
    if weights.get("which") == "best" and weights.get("metrics"):
        shown = ", ".join(f"{k} {v:.4f}" for k, v in weights["metrics"].items())
        line += f"\n  weights: best {shown} (step {weights['step']}, epoch {weights['epoch']})"
    if summary.get("message"):
        line += f"\n  {summary['message']}"
    print(line)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one run (HF-style flags, or --config FILE.yaml|json)",
                       usage="rankwise train [--config FILE] [--model MODEL] [--task TASK] [--method METHOD] "
                             "[--allocation STRATEGY] [--output_dir DIR] [options: see --help]",
                       description="Fine-tune a model on a task with LoRA-XS, LoRA or full fine-tuning, "
                                   "with per-matrix ranks from a static strategy or learned under a budget. "
                                   "Writes a run directory (config.json, metrics.jsonl, summary.json, ...).")
    p.add_argument("--config", help="YAML/JSON file of options; flags on the command line override it")
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from ..train import process_state, run_training

    cfg = config_from_args(args)
    summary = run_training(cfg)
    if process_state().is_main_process:  # one line for a run on several processes
        print_summary(summary, cfg.output_dir or _resolved_output_dir(cfg))
    return 0 if summary["status"] == "completed" else 1


def _resolved_output_dir(cfg: RunConfig) -> str:
    from ..train import default_output_dir

    return default_output_dir(prepare(cfg))


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------

def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="show every target matrix's rank and parameters without training",
                       description="Print the rank plan: every target matrix with its layer, kind (attention|mlp), "
                                   "shape, rank and trainable parameters, plus totals and percent of the model. "
                                   "Training applies exactly this plan.")
    p.add_argument("--config", help="YAML/JSON file of options; flags override it")
    p.add_argument("--out", help="also write the plan to this .json or .csv file")
    add_config_arguments(p)
    p.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    from ..planning import build_plan, measured_plan, meta_model

    cfg = prepare(config_from_args(args))
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in (".json", ".csv"):
        raise RankwiseError(f"--out: `{out}` must end in .json or .csv")
    if out is not None and out.is_dir():
        raise RankwiseError(f"--out: `{out}` is a directory; give a file name ending in .json or .csv")
    if out is not None:
        check_writable_path(out, "--out")
    if strategy_for(get_method(cfg.method), cfg.allocation).measures:  # ranks from data: model and a few batches
        plan = measured_plan(cfg)
    else:
        plan, _ = build_plan(cfg, *meta_model(cfg))
    print(plan.to_table())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            write_json_atomic(out, plan.to_dict())
        else:
            write_text_atomic(out, plan.to_csv())
        print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# glue: the adaptive LoRA-XS study's scripts/run_glue_adaptive.py flags
# ---------------------------------------------------------------------------------------------

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


def _add_glue(sub) -> None:
    p = sub.add_parser("glue", help="the adaptive LoRA-XS study's run_glue_adaptive.py command line",
                       description="Runs learned-rank LoRA-XS on a GLUE task with the flags of the adaptive "
                                   "LoRA-XS study's scripts/run_glue_adaptive.py (seeds 0-4 unless --seed), by the "
                                   "study's method exactly: softmax budget, independent rounding, discrete epochs "
                                   "0 unless --epochs_rank_discrete, alpha over all steps, AdamW weight decay 0.01 "
                                   "in every group, a log every 20 steps. rankwise's improvements are opt-in: "
                                   + GLUE_IMPROVEMENTS + ". Add --model and --data_dir for this machine (the study "
                                   "used roberta-large).")
    for flag, (field, kind) in GLUE_FLAGS.items():
        aliases = ["--rank_allocation_learning_rate"] if flag == "rank_allocation_lr" else []
        p.add_argument(f"--{flag}", *aliases, dest=field, type=kind, default=None,
                       help=f"sets {field}" + (f" (default {GLUE_DEFAULTS[field]})" if field in GLUE_DEFAULTS else ""))
    p.add_argument("--seed", type=int, default=None, help="one seed (default: seeds 0-4, one run each)")
    p.add_argument("--wandb_disabled", type=parse_bool, default=True,
                   help="False: also log to W&B (offline unless WANDB_MODE is set; a note if wandb is missing): the "
                        "metrics, and per logged step alpha, memory and every matrix's continuous and hard rank")
    p.add_argument("--output_dir", default="runs/glue", help="parent directory of the runs (default runs/glue); seeds already finished there are skipped")
    p.add_argument("--quiet", type=parse_bool, nargs="?", const=True, default=False)
    p.add_argument("--dry_run", "--dry-run", action="store_true",
                   help="check everything (data, model, budget) and list the runs without training")
    p.set_defaults(func=cmd_glue)


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


def cmd_glue(args) -> int:
    """Errors name the study's flags (`--epoch`, `--lr`, `--target_task`), not the RunConfig fields they set."""
    try:
        return _glue(args)
    except ConfigError as exc:
        raise exc.renamed(GLUE_NAMES) from None


def _glue(args) -> int:
    from ..planning import build_plan, meta_model
    from ..sweep import check_configs, describe_runs, run_sweep

    configs = glue_configs(args)
    check_configs(configs)  # rank plan, budget and data files, on a weightless model, before any run starts
    if args.dry_run:
        plan, _ = build_plan(configs[0], *meta_model(configs[0]))
        print(plan.to_table() if plan.strategy().learned else plan.to_table().splitlines()[-1])
        for (name, state), cfg in zip(describe_runs(configs), configs):
            print(f"would run {cfg.output_dir} (seed {cfg.seed}, {cfg.num_train_epochs} epochs): {state}")
        return 0
    # Seeds run one after another through the sweep runner: finished seeds are skipped on a rerun, a crashed
    # seed is recorded as failed and the others still run.
    records = run_sweep(configs, jobs=1, quiet=args.quiet)
    for record in records:
        if record["status"] in ("failed", "diverged"):
            print(f"{record['status']}: {record['output_dir']}: {record['message']}", file=sys.stderr)
    return 0 if all(r["status"] in ("completed", "skipped") for r in records) else 1


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------

def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the embedded offline models and whether they are installed")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from ..models import EMBEDDED, embedded_path  # transformers

    for name, model in EMBEDDED.items():
        try:
            where = str(embedded_path(name))
        except ModelError:
            where = f"not installed ({model.install})"
        print(f"{name:<14} {model.description}\n{'':<14} {where}")
    return 0


def register(sub) -> None:
    for add in (_add_train, _add_plan, _add_glue, _add_models):
        add(sub)
