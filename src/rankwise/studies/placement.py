"""The layer-wise placement study (adaptive-lora-placement's scripts/train_adaptive.py and
scripts/train_baseline.py), its command-line values mapped onto rankwise: the study's flags and defaults, its
per-layer rank formulas, its --config_file / --custom_ranks, and the one RunConfig a command line asks for.

What the study intended, not what its scripts did: its per-layer ranks are computed with its formulas and applied
(its train_adaptive.py computed them and then trained one uniform rank); attention-heavy gives `attn.c_proj` the
attention rank and `mlp.c_proj` the feed-forward rank (its rank dict keyed both by `c_proj`); `--config_file` and
the README's `--rank` work (its argparse had neither); models of any depth get their own layer count (it assumed
24 layers for DialoGPT, else 12). Its data setup is the default here: the "Human: …\\nAssistant: …" text, loss
on all tokens, the first --dataset_size records split 90/10 in file order. Its trainer settings: AdamW weight
decay 0.01, a linear learning-rate decay without warm-up, gradient clipping at 1.0, a log every 10 steps.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from ..allocation.static import load_rank_file
from ..config import RunConfig, config_from_dict, parse_float, parse_int, prepare, resolve_defaults
from ..errors import ConfigError
from ..runs.naming import run_name
from ..planning import build_plan, meta_model
from ..runs.rundir import write_json_atomic
from ..sweep import check_configs, describe_runs, run_sweep
from ..targets import find_targets, num_layers

STRATEGIES = ("linear_decay", "attention_heavy", "empirical", "custom")
ALPACA_DATASETS = ("tatsu-lab/alpaca", "alpaca")

# The study's flag -> (dest, type, its default). Both scripts share all but the strategy / rank flags.
STUDY_FLAGS = {
    "model_name": (str, "microsoft/DialoGPT-medium"), "dataset_name": (str, "tatsu-lab/alpaca"),
    "dataset_size": (parse_int, 200), "strategy": (str, None), "base_rank": (parse_int, 16),
    "min_rank": (parse_int, 4), "max_rank": (parse_int, 32), "custom_ranks": (str, None),
    "config_file": (str, None), "lora_rank": (parse_int, None), "lora_alpha": (parse_float, 32.0),
    "lora_dropout": (parse_float, 0.1), "learning_rate": (parse_float, 3e-4), "num_epochs": (parse_int, 3),
    "batch_size": (parse_int, 8), "max_length": (parse_int, 512), "gradient_accumulation_steps": (parse_int, 4),
    "seed": (parse_int, 42), "output_dir": (str, "results"), "experiment_name": (str, None),
}
# rankwise options with the study's values as defaults (each can be changed).
RANKWISE_FLAGS = {
    "prompt_format": ("human_assistant", ("alpaca", "human_assistant")), "loss_on": ("all", ("response", "all")),
    "split": ("first_n_90_10", ("seeded_holdout", "first_n_90_10")),
}


# ---------------------------------------------------------------------------------------------
# The study's per-layer rank formulas (train_adaptive.py), as intended
# ---------------------------------------------------------------------------------------------

def linear_decay_ranks(layers: int, base_rank: int, min_rank: int, max_rank: int) -> list[int]:
    """From clamp(base_rank) at the first layer down to min_rank at the last, truncated to integers."""
    start = min(max(base_rank, min_rank), max_rank)
    ranks = []
    for i in range(layers):
        progress = i / (layers - 1) if layers > 1 else 0
        ranks.append(max(min_rank, min(int(start - (start - min_rank) * progress), max_rank)))
    return ranks


def empirical_ranks(layers: int, base_rank: int, min_rank: int, max_rank: int) -> list[int]:
    """0.6·base for layers before 30% of the depth, 1.2·base before 70%, base after (truncated, clamped)."""
    ranks = []
    for i in range(layers):
        position = i / (layers - 1) if layers > 1 else 0
        rank = int(base_rank * 0.6) if position < 0.3 else int(base_rank * 1.2) if position < 0.7 else base_rank
        ranks.append(max(min_rank, min(rank, max_rank)))
    return ranks


def attention_heavy_ranks(base_rank: int, min_rank: int, max_rank: int) -> tuple[int, int]:
    """(attention rank, feed-forward rank): clamp(base_rank), and half of it (at least min_rank)."""
    attention = min(max(base_rank, min_rank), max_rank)
    return attention, max(min_rank, attention // 2)


# ---------------------------------------------------------------------------------------------
# Command line -> RunConfig
# ---------------------------------------------------------------------------------------------

def base_values(args) -> dict:
    """RunConfig values of everything but the allocation."""
    values = {
        "task": "alpaca", "model": args.model_name, "method": "lora", "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout, "learning_rate": args.learning_rate, "num_train_epochs": args.num_epochs,
        "per_device_train_batch_size": args.batch_size, "per_device_eval_batch_size": args.batch_size,
        "max_seq_length": args.max_length, "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "seed": args.seed, "max_train_samples": args.dataset_size if args.dataset_size > 0 else None,
        "prompt_format": args.prompt_format, "loss_on": args.loss_on, "instruct_split": args.split,
        # its Trainer: AdamW weight decay 0.01, linear decay without warm-up, clipping 1.0, a log every 10 steps
        "weight_decay": 0.01, "lr_scheduler": "linear_schedule_with_warmup", "warmup_ratio": 0.0,
        "max_grad_norm": 1.0, "logging_steps": 10, "num_generations": 0, "save_model": args.save_model,
        "quiet": args.quiet, "alpha_policy": "constant",
    }
    if args.dataset_name not in ALPACA_DATASETS and args.train_file is None:
        if not Path(args.dataset_name).is_file():
            raise ConfigError("dataset_name", f"`{args.dataset_name}` is neither the Alpaca dataset (tatsu-lab/alpaca) "
                              "nor an Alpaca-format file", "Give --dataset_name tatsu-lab/alpaca with --data_dir, or a "
                              "JSON/JSONL file of instruction/input/output records")
        values["train_file"] = args.dataset_name
    for name in ("data_dir", "train_file", "max_steps"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return values


def study_layer_ranks(args) -> list[int] | None:
    """The per-layer list a custom strategy gives (--custom_ranks JSON, or --config_file's `layer_ranks`)."""
    if args.custom_ranks is not None and args.config_file is not None:
        raise ConfigError("custom_ranks", "and --config_file both give the custom ranks", "Give one of them")
    if args.custom_ranks is not None:
        try:
            ranks = json.loads(args.custom_ranks)
        except json.JSONDecodeError as exc:
            raise ConfigError("custom_ranks", f"is not JSON ({exc.msg})", "Give a JSON list such as [16, 12, 8]") \
                from None
        if not isinstance(ranks, list):
            raise ConfigError("custom_ranks", f"must be a JSON list of ranks, got {type(ranks).__name__}")
        return ranks
    return None


def _model_layers(values: dict) -> int:
    cfg = prepare(config_from_dict({**values, "allocation": "uniform", "rank": 1}))
    model, _ = meta_model(cfg)
    return num_layers(find_targets(model, cfg.target_modules))


def _layer_ranks_file(output_dir: Path, strategy: str, ranks: list) -> Path:
    """Where a generated strategy file goes: content-addressed, so the same ranks give the same run."""
    digest = hashlib.sha1(json.dumps([strategy, ranks]).encode()).hexdigest()[:8]
    return output_dir / "layer_ranks" / f"{strategy}_{digest}.json"


def placement_names(args) -> dict[str, str]:
    """RunConfig field -> the flag of this command that set it, for messages."""
    rank_file = "config_file" if args.config_file is not None else "custom_ranks" if args.custom_ranks is not None \
        else "strategy"
    rank = "lora_rank" if args.lora_rank is not None else "base_rank"
    return {"model": "model_name", "num_train_epochs": "num_epochs", "per_device_train_batch_size": "batch_size",
            "per_device_eval_batch_size": "batch_size", "max_seq_length": "max_length",
            "max_train_samples": "dataset_size", "instruct_split": "split", "rank_file": rank_file, "rank": rank,
            "rank_attention": "base_rank", "rank_mlp": "base_rank"}


def _check_custom_inputs(args) -> None:
    """--config_file is read and checked whenever it is given, and the custom ranks are refused where no
    --strategy custom would read them."""
    if args.config_file is not None:
        load_rank_file(args.config_file)
    if args.strategy != "custom":
        for name in ("config_file", "custom_ranks"):
            if getattr(args, name) is not None:
                used = f"--strategy is `{args.strategy}`" if args.strategy else \
                    "--lora_rank trains one rank" if args.lora_rank is not None else "no --strategy is given"
                raise ConfigError(name, f"gives custom per-layer ranks, which only --strategy custom reads, but {used}",
                                  f"Add --strategy custom, or drop --{name}")


def placement_config(args) -> tuple[RunConfig, dict | None]:
    """The run's resolved config and, for strategies with a generated per-layer list, the strategy file to write
    ({"path", "content"}; the config already points at it). Everything is checked; nothing is written."""
    _check_custom_inputs(args)
    values = base_values(args)
    if args.lora_rank is not None:  # train_baseline.py
        if args.strategy is not None:
            raise ConfigError("lora_rank", "(train_baseline.py) and --strategy (train_adaptive.py) were both given",
                              "Give --lora_rank for a fixed rank, or --strategy for a per-layer allocation")
        values.update(allocation="uniform", rank=args.lora_rank)
        strategy_file = None
    elif args.strategy is None:
        raise ConfigError("strategy", "is required (train_adaptive.py), or --lora_rank (train_baseline.py)",
                          f"Give --strategy {{{','.join(STRATEGIES)}}} or --lora_rank R")
    elif args.strategy == "attention_heavy":
        attention, mlp = attention_heavy_ranks(args.base_rank, args.min_rank, args.max_rank)
        values.update(allocation="attention_heavy", rank_attention=attention, rank_mlp=mlp)
        strategy_file = None
    elif args.strategy == "custom" and args.config_file is not None and args.custom_ranks is None:
        values.update(allocation="custom", rank_file=args.config_file, rank=args.base_rank,
                      resample_layer_ranks=args.resample_layer_ranks)
        strategy_file = None
    else:
        layers = _model_layers(values)
        if args.strategy == "linear_decay":
            ranks = linear_decay_ranks(layers, args.base_rank, args.min_rank, args.max_rank)
        elif args.strategy == "empirical":
            ranks = empirical_ranks(layers, args.base_rank, args.min_rank, args.max_rank)
        else:
            ranks = study_layer_ranks(args)
            if ranks is None:
                raise ConfigError("custom_ranks", "--strategy custom needs its ranks",
                                  "Give --config_file my_strategy.json ({\"strategy_name\": \"custom\", "
                                  "\"layer_ranks\": [...]}) or --custom_ranks '[16, 12, ...]'")
        content = {"strategy_name": args.strategy, "layer_ranks": ranks}
        path = _layer_ranks_file(Path(args.output_dir), args.strategy, ranks)
        values.update(allocation="custom", rank_file=str(path), rank=args.base_rank,
                      resample_layer_ranks=args.resample_layer_ranks)
        strategy_file = {"path": path, "content": content}
    cfg = _checked(values, strategy_file, args)
    return cfg, strategy_file


def _checked(values: dict, strategy_file: dict | None, args) -> RunConfig:
    """Resolve and check the config (plan, data, ranks) with the strategy file in a temporary place, so bad input
    stops before anything is written."""
    def build(rank_file: str | None, check: bool = True) -> RunConfig:
        cfg = config_from_dict({**values, **({"rank_file": rank_file} if rank_file else {})})
        cfg.output_dir = str(Path(args.output_dir) / (args.experiment_name or run_name(cfg)))
        return prepare(cfg) if check else resolve_defaults(cfg)

    if strategy_file is None:
        cfg = build(None)
        check_configs([cfg])
        return cfg
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "layer_ranks.json"
        trial.write_text(json.dumps(strategy_file["content"]))
        try:
            check_configs([build(str(trial))])
        except ConfigError as exc:  # the generated file is no flag of this command: name the ranks it holds
            ranks = strategy_file["content"]["layer_ranks"]
            label = f"the list {ranks}" if args.custom_ranks is not None else \
                f"the {strategy_file['content']['strategy_name']} ranks {ranks}"
            raise exc.renamed({}, {f"`layer_ranks` in `{trial}`": label, f"`{trial}`": label, str(trial): label}) \
                from None
    path = strategy_file["path"]
    if path.exists():
        try:
            same = json.loads(path.read_text()) == strategy_file["content"]
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            raise ConfigError("output_dir", f"`{path}` exists with other content; it is never overwritten",
                              "Give another --output_dir")
    return build(None, check=False)  # checked above with the same ranks; the file is written before training


# ---------------------------------------------------------------------------------------------
# The run: what a dry run shows, and the run itself
# ---------------------------------------------------------------------------------------------

def dry_run_lines(cfg: RunConfig, strategy_file: dict | None) -> list[str]:
    """The strategy file that would be written, the rank plan and the run directory's state."""
    lines = []
    if strategy_file is not None and not strategy_file["path"].exists():
        lines.append(f"would write {strategy_file['path']}: {json.dumps(strategy_file['content'])}")
        with tempfile.TemporaryDirectory() as tmp:  # the plan, from the ranks the file would hold
            trial = Path(tmp) / "layer_ranks.json"
            trial.write_text(json.dumps(strategy_file["content"]))
            shown = prepare(RunConfig(**{**cfg.to_dict(), "rank_file": str(trial)}))
            lines.append(build_plan(shown, *meta_model(shown))[0].to_table())
    else:
        lines.append(build_plan(prepare(cfg), *meta_model(cfg))[0].to_table())
    ((name, state),) = describe_runs([cfg])
    lines.append(f"would run {cfg.output_dir} ({state})")
    return lines


def run_placement(cfg: RunConfig, strategy_file: dict | None, quiet: bool = False) -> dict:
    """Write the generated strategy file (if any) and train the run, skipped when it has finished; the sweep
    runner's record of it."""
    if strategy_file is not None and not strategy_file["path"].exists():
        strategy_file["path"].parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(strategy_file["path"], strategy_file["content"])
    (record,) = run_sweep([prepare(cfg)], jobs=1, quiet=quiet)
    return record
