"""`rankwise lr-sweep`: the LR-ratio study ("LoRA Without Regret") as one command.

Accepts the public reproduction's flags (`--lrs`, `--epochs`, `--rank`, `--alpha`, `--batch_size`, `--seed`,
`--full-finetune`) and sweeps ranks, alpha policies and seeds through the sweep machinery: every point is a
run directory under `--output_dir` named by its config, so an interrupted sweep resumes where it stopped and a
second command (e.g. `--full-finetune`) into the same folder completes the study. Afterwards it writes the
reproduction-schema results files and the ratio analysis. The recipe is rankwise.studies.lr_ratio, the analysis
rankwise.report.lr_ratio; this module is the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import add_config_arguments, parse_bool, parse_float, parse_int
from ..methods import FULL_FINETUNING
from ..studies import lr_ratio
from ..studies.lr_ratio import ADAPTER_METHODS, ALPHA_POLICIES, DEFAULT_LR_RANGES, OWN_FIELDS, POINTS_PER_DECADE, \
    PRESETS
from ..sweep import check_configs, run_sweep

# Not offered: an LR curve has one uniform rank (no allocation strategies) on a classification task.
NOT_OFFERED = ("allocation", "rank_first", "rank_last", "rank_attention", "rank_mlp", "rank_file", "match_budget",
               "budget", "rank_min", "rank_max", "rank_average", "memory_start", "memory_end", "epochs_memory_start",
               "epochs_memory_start_to_end", "epochs_rank_discrete", "alpha_min", "alpha_max", "alpha_scheduler",
               "tau", "rank_allocation_lr", "rank_allocation_weights_init", "budget_mode", "rounding", "train_file",
               "eval_size", "num_generations", "rank_start", "alpha_schedule_span", "rank_allocation_weight_decay",
               "resample_layer_ranks", "prompt_format", "loss_on", "instruct_split")

EXAMPLES = """examples:
  # the reproduction's command line (one LoRA curve, then full fine-tuning into the same folder)
  rankwise lr-sweep --lrs 1e-4 5e-4 1e-3 --epochs 5 --rank 128 --alpha 256 --batch_size 32 --seed 42
  rankwise lr-sweep --lrs 1e-5 5e-5 1e-4 --epochs 5 --batch_size 32 --seed 42 --full-finetune

  # the study in one command: ranks 4/16/64 at constant alpha, full fine-tuning as reference, 2 seeds
  rankwise lr-sweep --task sst2 --ranks 4 16 64 --alpha 32 --include_full --seeds 0 1 \\
      --max_train_samples 1024 --max_eval_samples 500 --epochs 2 --jobs 2 --data_dir ../shared/data

alpha policies (--alpha ALPHA, --rank REF):
  constant  every rank gets alpha = ALPHA (scale alpha/r falls as 1/r; LoRA Without Regret's setting)
  ratio     rank r gets alpha = (ALPHA/REF)*r, so alpha/r = ALPHA/REF at every rank
  rslora    every rank gets alpha = ALPHA, scale alpha/sqrt(r)
With uniform ranks, rank REF gets the same alpha under constant and ratio: after a constant sweep, sweep
`--alpha_policy ratio --ranks 4 64 --rank 16` into the same folder; the report uses the constant r=16 runs
for the ratio family's r=16.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "lr-sweep", help="learning-rate sweep over ranks and seeds vs full fine-tuning (LR-ratio study)",
        description="Sweep the learning rate of LoRA / LoRA-XS over ranks, alpha policies and seeds, and of full "
                    "fine-tuning, each point a resumable run directory. Writes results_<method>_r<rank>_alpha"
                    "<alpha>_<policy>_seed<seed>.json files keyed by learning rate (the public reproduction's "
                    "schema; test_acc is test-split accuracy after training, or dev-set accuracy where the task has no "
                    "labelled test split, e.g. GLUE) and the optimal-LR ratio report; --results_file writes the "
                    "study's own results.json for one curve.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_study_options(p.add_argument_group("study options"))
    _add_running_options(p.add_argument_group("running"))
    add_config_arguments(p, exclude=OWN_FIELDS + NOT_OFFERED)
    for action in p._actions:  # lr-sweep's own default for the head's learning rate
        if action.dest == "cls_learning_rate":
            action.help = ("Fixed learning rate of the classification head. Default: the swept learning rate, in "
                           "every method (the head trains at the same LR as the adapter or the model)")
    p.set_defaults(func=cmd_lr_sweep)


def _add_study_options(study) -> None:
    grids = "; ".join(f"{m}: {lo:g}–{hi:g}" for m, (lo, hi) in DEFAULT_LR_RANGES.items())
    study.add_argument("--task", "--task_name", dest="task", default="sst2",
                       help="GLUE classification task (default sst2)")
    study.add_argument("--model", "--model_name_or_path", dest="model", default="minilm",
                       help="model: minilm (default), a hub id or a local directory")
    study.add_argument("--method", choices=(*ADAPTER_METHODS, FULL_FINETUNING), default="lora",
                       help="adapter to sweep, or full fine-tuning (default lora)")
    study.add_argument("--full-finetune", "--full_finetune", dest="full_finetune", action="store_true",
                       help="sweep full fine-tuning (same as --method full)")
    study.add_argument("--include_full", action="store_true",
                       help="also sweep full fine-tuning (on --full_lrs) as the ratio's reference")
    study.add_argument("--lrs", nargs="+", type=parse_float, metavar="LR",
                       help=f"learning rates (default: {POINTS_PER_DECADE} per decade, {grids})")
    study.add_argument("--full_lrs", nargs="+", type=parse_float, metavar="LR",
                       help="learning rates of the --include_full runs (default: the full fine-tuning grid)")
    study.add_argument("--rank", type=parse_int, default=None,
                       help="one rank (the reproduction's flag); with --ranks, the reference rank REF of "
                            "--alpha_policy ratio (default: the middle of --ranks)")
    study.add_argument("--ranks", nargs="+", type=parse_int, metavar="R", help="ranks to sweep (default: --rank, else 16)")
    study.add_argument("--alpha", "--lora_alpha", dest="alpha", type=parse_float, default=None,
                       help="adapter alpha (default 32); how it varies with rank: --alpha_policy")
    study.add_argument("--alpha_policy", nargs="+", choices=ALPHA_POLICIES, default=["constant"],
                       help="constant (alpha fixed), ratio (alpha/r fixed at ALPHA/REF), rslora (scale alpha/sqrt(r)); "
                            "several sweep each (default constant)")
    study.add_argument("--seed", type=parse_int, default=None, help="one seed (the reproduction's flag)")
    study.add_argument("--seeds", nargs="+", type=parse_int, metavar="S", help="seeds (default: --seed, else 0)")
    study.add_argument("--epochs", "--num_train_epochs", dest="epochs", type=parse_int, default=None,
                       help="training epochs per point (default 3)")
    study.add_argument("--batch_size", "--per_device_train_batch_size", dest="batch_size", type=parse_int, default=None,
                       help="training batch size (default 32)")
    study.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="a published study's regime and grid as defaults (flags given win). lora_without_regret: "
                            + PRESETS["lora_without_regret"].description + "; "
                            + PRESETS["lora_without_regret"].data_hint)
    study.add_argument("--results_file", default=None, metavar="FILE",
                       help="also write the study's own results.json for this sweep's one LR curve: keys the learning "
                            "rate's str() (\"0.0001\"), entries best_val_loss, test_acc, train_losses, val_losses "
                            "(and meta); merged on resume, never overwritten")
    study.add_argument("--data_dir", help="GLUE data directory (default $RANKWISE_DATA_DIR, else the hub)")
    study.add_argument("--max_train_samples", type=parse_int, help="use the first N training examples")
    study.add_argument("--max_eval_samples", type=parse_int, help="use the first N dev examples")
    study.add_argument("--output_dir", help="folder of the run directories and results files "
                                            "(default runs/lr_sweep_<task>_<model>)")
    study.add_argument("--save_model", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                       help="keep each point's adapter/model weights (default false: sweeps need only metrics)")


def _add_running_options(run) -> None:
    run.add_argument("--jobs", type=parse_int, default=1, help="parallel runs (local worker processes; default 1)")
    run.add_argument("--backend", choices=("local", "ray"), default="local", help="local processes or Ray tasks")
    run.add_argument("--ray_address", help="Ray cluster address (default: a local Ray instance)")
    run.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                     help="list the points (new / finished / unfinished) and results files; run nothing")
    run.add_argument("--report_dir", help="where the LR-ratio report goes (default <output_dir>/lr_ratio_report)")
    run.add_argument("--no_report", action="store_true", help="do not write the LR-ratio report after the sweep")
    run.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_lr_sweep(args) -> int:
    sweep, configs = lr_ratio.lr_sweep_points(args)  # every point validated here, before anything runs or is written
    if not args.no_report:  # checked before any run: the report must not land in a run directory
        from ..report.build import check_report_dir  # pandas: only for a command that writes a report

        check_report_dir(_report_dir(args, sweep), "--report_dir")
    for note in check_configs(configs):  # rank plans and data files, on a weightless model
        print(f"note: {note}", file=sys.stderr)
    print("\n".join(lr_ratio.plan_lines(sweep, configs)))
    if args.dry_run:
        print("\n".join(lr_ratio.dry_run_lines(configs, args.results_file)))
        return 0
    records = []
    try:
        records = run_sweep(configs, jobs=args.jobs, backend=args.backend, ray_address=args.ray_address,
                            quiet=args.quiet)
    finally:  # also after Ctrl-C: record what finished
        for line in lr_ratio.record_results(sweep, configs, args.results_file):
            print(line)
    if not args.no_report:
        _report(sweep.output_dir, _report_dir(args, sweep))
    failed = [r for r in records if r["status"] == "failed"]
    return 1 if failed else 0


def _report_dir(args, sweep) -> str:
    return args.report_dir or str(Path(sweep.output_dir) / "lr_ratio_report")


def _report(run_root: str, report_dir: str) -> None:
    """Write the LR-ratio report for everything in `run_root` (this sweep and earlier ones into it)."""
    from ..report.lr_ratio import lr_ratio_report  # pandas: only for a command that writes a report

    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = lr_ratio_report([Path(run_root)], out)
    path = out / "lr_ratio.md"
    path.write_text(text + "\n")
    in_table = False
    for line in text.splitlines():  # the first table (optima and ratios), for a first look
        in_table = line.startswith("| Curve | Scale") or (in_table and line.startswith("|"))
        if in_table:
            print(line)
        elif line.startswith("| Curve | Seed"):
            break
    print(f"report: {path} (figures and lr_ratio.csv beside it)")
