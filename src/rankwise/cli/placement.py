"""`rankwise placement`: the layer-wise placement study's command lines (adaptive-lora-placement's
scripts/train_adaptive.py and scripts/train_baseline.py), their flags as written. The recipe (rank formulas,
--config_file, the RunConfig, what the study intended where its scripts differ) is rankwise.studies.placement.
"""

from __future__ import annotations

import argparse
import sys

from ..config import parse_bool, parse_int
from ..errors import ConfigError
from ..studies import placement
from ..studies.placement import RANKWISE_FLAGS, STRATEGIES, STUDY_FLAGS

EXAMPLES = """examples (the study's commands, then what this machine needs):
  rankwise placement --lora_rank 16 --dataset_size 200 --num_epochs 3 --batch_size 8 --learning_rate 3e-4 \\
      --seed 42 --experiment_name baseline_rank16_official --data_dir ../shared/data
  rankwise placement --strategy linear_decay --base_rank 16 --min_rank 4 --max_rank 32 --dataset_size 200 \\
      --num_epochs 3 --experiment_name adaptive_linear_decay_official --data_dir ../shared/data
  rankwise placement --strategy custom --config_file my_strategy.json --data_dir ../shared/data
  rankwise placement --strategy custom --config_file my_strategy.json --resample_layer_ranks --model_name smollm2-135m
"""


def register(sub) -> None:
    p = sub.add_parser("placement", help="the layer-wise placement study's train_adaptive.py / train_baseline.py "
                                         "command lines",
                       description="Trains LoRA on Alpaca with the layer-wise placement study's flags "
                                   "(adaptive-lora-placement: scripts/train_adaptive.py --strategy ..., "
                                   "scripts/train_baseline.py --lora_rank ...), the per-layer ranks applied as the "
                                   "study intended. The run directory is <output_dir>/<experiment_name>.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    study = p.add_argument_group("the study's flags")
    for flag, (kind, default) in STUDY_FLAGS.items():
        aliases = ["--rank"] if flag == "lora_rank" else []  # the study's README: train_baseline.py --rank 8
        extra = {"choices": STRATEGIES} if flag == "strategy" else {}
        study.add_argument(f"--{flag}", *aliases, dest=flag, type=kind, default=default, **extra,
                           help=f"(default {default})" if default is not None else None)
    study.add_argument("--save_model", action="store_true", help="keep the adapter (the study's default: not saved)")
    mine = p.add_argument_group("rankwise options")
    for flag, (default, choices) in RANKWISE_FLAGS.items():
        mine.add_argument(f"--{flag}", choices=choices, default=default, help=f"(default {default}: the study's)")
    mine.add_argument("--resample_layer_ranks", type=parse_bool, nargs="?", const=True, default=False, metavar="BOOL",
                      help="stretch a custom layer_ranks list of another length to the model's depth")
    mine.add_argument("--data_dir", help="directory holding alpaca/alpaca_data.json (default $RANKWISE_DATA_DIR)")
    mine.add_argument("--train_file", help="an Alpaca-format JSON/JSONL file instead of --dataset_name")
    mine.add_argument("--max_steps", type=parse_int, help="train this many optimiser steps (a quick check)")
    mine.add_argument("--quiet", action="store_true", help="no progress bars")
    mine.add_argument("--dry_run", "--dry-run", action="store_true",
                      help="check everything and print the rank plan; write and train nothing")
    p.set_defaults(func=cmd_placement)


def cmd_placement(args) -> int:
    """Errors name this command's flags (`--config_file`, `--num_epochs`, ...), not the RunConfig fields."""
    try:
        return _placement(args)
    except ConfigError as exc:
        raise exc.renamed(placement.placement_names(args)) from None


def _placement(args) -> int:
    cfg, strategy_file = placement.placement_config(args)
    if args.dry_run:
        print("\n".join(placement.dry_run_lines(cfg, strategy_file)))
        return 0
    record = placement.run_placement(cfg, strategy_file, quiet=args.quiet)
    if record["status"] in ("failed", "diverged"):
        print(f"{record['status']}: {record['output_dir']}: {record['message']}", file=sys.stderr)
    return 0 if record["status"] in ("completed", "skipped") else 1
