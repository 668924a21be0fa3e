"""The checks of the model, data and training options (each method and strategy checks its own): ConfigError naming
the option, what is wrong and the fix. Called by `config.validate` on a resolved config."""

from __future__ import annotations

import os
from pathlib import Path

from ..data import GLUE_TASKS
from ..options import require, require_file

SEED_LIMIT = 2**64  # torch seeds are unsigned 64-bit; it maps a negative seed s to 2^64 + s
MAX_LORA_ALPHA = 1e6  # far above any LoRA setting (alpha is usually r to 2r)


def validate_model(cfg) -> None:
    require(cfg.lora_alpha > 0, "lora_alpha", f"must be positive, got {cfg.lora_alpha}")
    require(cfg.lora_alpha <= MAX_LORA_ALPHA, "lora_alpha", f"({cfg.lora_alpha:g}) scales the adapter's update by "
            f"alpha/r, up to {cfg.lora_alpha:g} at rank 1: no LoRA setting is near that, and the run would diverge "
            "with a message that can only blame the learning rate", f"Give the alpha you mean (usually r to 2r, "
            f"e.g. 16 or 32; at most {MAX_LORA_ALPHA:g})")
    require(0 <= cfg.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {cfg.lora_dropout}")


def validate_data(cfg) -> None:
    require(cfg.max_seq_length >= 1, "max_seq_length", f"must be a positive integer, got {cfg.max_seq_length}")
    for name in ("max_train_samples", "max_eval_samples"):
        value = getattr(cfg, name)
        require(value is None or value >= 1, name, f"must be a positive integer, got {value}")
    if cfg.is_instruct:
        require(cfg.eval_size >= 1, "eval_size", f"must be a positive integer, got {cfg.eval_size}")
        require(cfg.num_generations >= 0, "num_generations", f"must be >= 0, got {cfg.num_generations}")
    if cfg.data_dir is not None:
        data_fix = "Point it at a folder holding GLUE task folders (CoLA/, SST-2/, ...) or alpaca/alpaca_data.json"
        source = "data_dir"
        if cfg.data_dir == os.environ.get("RANKWISE_DATA_DIR"):  # filled in from the environment (resolve_defaults)
            source, data_fix = "$RANKWISE_DATA_DIR", data_fix + ", or give --data_dir (or unset the variable)"
        require(not Path(cfg.data_dir).is_file(), source, f"`{cfg.data_dir}` is a file, not a directory", data_fix)
        require(Path(cfg.data_dir).is_dir(), source, f"directory `{cfg.data_dir}` does not exist", data_fix)
    if cfg.task == "text":
        require((cfg.train_file is None) != (cfg.dataset is None), "train_file",
                "and --dataset both give the training data" if cfg.train_file else
                "(or --dataset) is required by --task text", "Give one of --train_file FILE and --dataset NAME")
        for name in ("train_file", "validation_file", "test_file"):
            if getattr(cfg, name) is not None:
                require_file(name, getattr(cfg, name), "Give a .csv, .tsv, .json, .jsonl or .parquet file")
        require(0 < cfg.validation_split < 1, "validation_split", f"must be in (0, 1), got {cfg.validation_split:g}")
    elif cfg.train_file is not None:
        require_file("train_file", cfg.train_file, "Give an Alpaca-format .json or .jsonl file")


def validate_training(cfg) -> None:
    require(0 <= cfg.seed < SEED_LIMIT, "seed", f"must be in [0, 2^64-1], got {cfg.seed}",
            "Use a non-negative integer below 2^64 = 18446744073709551616 (torch's seed range)")
    require(cfg.num_train_epochs > 0, "num_train_epochs", f"must be positive, got {cfg.num_train_epochs}")
    require(cfg.save_safetensors, "save_safetensors", "false asks for PyTorch pickles, and rankwise writes "
            "safetensors only (they load without running code)", "Drop --save_safetensors")
    if cfg.label_smoothing_factor:
        require(cfg.task not in GLUE_TASKS or GLUE_TASKS[cfg.task].num_labels > 1, "label_smoothing_factor",
                f"smooths class labels, but task {cfg.task} is a regression", "Drop --label_smoothing_factor")
        require(0 <= cfg.label_smoothing_factor < 1, "label_smoothing_factor",
                f"must be in [0, 1), got {cfg.label_smoothing_factor:g}")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "logging_steps", "max_bad_steps"):
        value = getattr(cfg, name)
        require(value >= 1, name, f"must be a positive integer, got {value}")
    for name in ("learning_rate", "cls_learning_rate"):
        value = getattr(cfg, name)
        require(value > 0, name, f"must be positive, got {value}")
    require(0 <= cfg.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {cfg.warmup_ratio}")
    require(cfg.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {cfg.max_grad_norm}")
    require(cfg.weight_decay >= 0, "weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    _validate_steps(cfg)


def task_metrics(task: str) -> tuple[str, ...]:
    """The metrics a task's evaluation reports (without the `eval_` prefix): what --metric_for_best_model may name."""

    if task in GLUE_TASKS:
        return ("loss", *GLUE_TASKS[task].metrics)
    if task == "text":  # classification or regression, decided by the data
        return ("loss", "accuracy", "f1", "macro_f1", "matthews_correlation", "pearson", "spearmanr")
    return ("loss", "perplexity")


def _validate_steps(cfg) -> None:
    """The Trainer options: strategies and their step counts, best-model selection, precision, max_steps."""
    for name in ("max_steps", "eval_steps", "save_steps", "save_total_limit", "early_stopping_patience"):
        value = getattr(cfg, name)
        require(value is None or value >= 1, name, f"must be a positive integer, got {value}")
    require(cfg.dataloader_num_workers >= 0, "dataloader_num_workers",
            f"must be >= 0, got {cfg.dataloader_num_workers}")
    for kind, strategy, steps in (("eval", cfg.eval_strategy, cfg.eval_steps), ("save", cfg.save_strategy,
                                                                                 cfg.save_steps)):
        require(strategy != "steps" or steps is not None, f"{kind}_steps",
                f"is required by --{kind}_strategy steps", f"Give --{kind}_steps N (optimiser steps)")
        require(steps is None or strategy == "steps", f"{kind}_steps",
                f"only applies to --{kind}_strategy steps, but --{kind}_strategy is `{strategy}`",
                f"Drop --{kind}_steps, or use --{kind}_strategy steps")
    require(not (cfg.bf16 and cfg.fp16), "fp16", "and --bf16 both set the precision", "Give one of them")
    if cfg.metric_for_best_model is not None:
        name = cfg.metric_for_best_model.removeprefix("eval_")
        metrics = task_metrics(cfg.task)
        require(name in metrics, "metric_for_best_model", f"`{cfg.metric_for_best_model}` is not a metric of "
                f"task {cfg.task}", f"Choose one of: {', '.join(metrics)}")
    if cfg.load_best_model_at_end:
        require(cfg.eval_strategy != "no", "load_best_model_at_end", "needs evaluations, but --eval_strategy is "
                "`no`", "Use --eval_strategy epoch or steps")
        require(cfg.save_strategy in (cfg.eval_strategy, "best"), "save_strategy",
                f"(`{cfg.save_strategy}`) must match --eval_strategy (`{cfg.eval_strategy}`) with "
                "--load_best_model_at_end, so the best evaluation has a checkpoint",
                f"Use --save_strategy {cfg.eval_strategy} (or best)")
        if cfg.eval_strategy == "steps" and cfg.save_strategy == "steps":
            require(cfg.save_steps % cfg.eval_steps == 0, "save_steps", f"({cfg.save_steps}) must be a multiple "
                    f"of --eval_steps ({cfg.eval_steps}) with --load_best_model_at_end",
                    f"Use --save_steps {cfg.eval_steps}")
    require(cfg.early_stopping_patience is None or cfg.load_best_model_at_end, "early_stopping_patience",
            "needs --load_best_model_at_end (it stops on the best-model metric)", "Add --load_best_model_at_end")
    require(cfg.save_strategy != "best" or cfg.eval_strategy != "no", "save_strategy",
            "`best` needs evaluations, but --eval_strategy is `no`", "Use --eval_strategy epoch or steps")


