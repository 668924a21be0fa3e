"""`rankwise train | plan | glue | models`: one run, its rank plan, the adaptive LoRA-XS study's command
line (its translation to runs: rankwise.studies.glue_compat), and the embedded models."""

from __future__ import annotations

import sys
from pathlib import Path

from ..allocation import strategy_for
from ..config import RunConfig, add_config_arguments, config_from_args, parse_bool, prepare
from ..errors import ConfigError, ModelError, RankwiseError
from ..methods import get_method
from ..runs.rundir import check_writable_path, write_json_atomic, write_text_atomic
from ..studies import glue_compat
from ..studies.glue_compat import GLUE_DEFAULTS, GLUE_FLAGS, GLUE_IMPROVEMENTS, GLUE_NAMES


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


def cmd_glue(args) -> int:
    """Errors name the study's flags (`--epoch`, `--lr`, `--target_task`), not the RunConfig fields they set."""
    try:
        return _glue(args)
    except ConfigError as exc:
        raise exc.renamed(GLUE_NAMES) from None


def _glue(args) -> int:
    configs = glue_compat.checked_glue_configs(args)
    if args.dry_run:
        print("\n".join(glue_compat.dry_run_lines(configs)))
        return 0
    records = glue_compat.run_glue(configs, quiet=args.quiet)
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
