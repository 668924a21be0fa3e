"""The training options of a run: rankwise's own and the `TrainingArguments` flags it passes to transformers'
Trainer, with their usual names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..options import option

# rankwise's three, then transformers' other schedulers (lr_scheduler_type), each with the warm-up it takes;
# reduce_lr_on_plateau and greedy step on evaluation metrics, not on optimiser steps.
LR_SCHEDULERS = ("linear_schedule_with_warmup", "constant_schedule", "cosine", "cosine_with_restarts", "polynomial",
                 "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay")
LR_SCHEDULER_ALIASES = {
    "linear": "linear_schedule_with_warmup",
    "constant": "constant_schedule",
    "cosine_schedule_with_warmup": "cosine",
}
EVAL_STRATEGIES = ("epoch", "steps", "no")
SAVE_STRATEGIES = ("epoch", "steps", "best", "no")
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow", "all")
DEFAULT_CLS_LR = 5e-3
# The TrainingArguments fields whose rankwise default differs from transformers', and why (every other field has
# transformers' default; tests/config/test_trainer_flags.py walks them).
TRANSFORMERS_DEFAULTS_CHANGED = {
    "per_device_train_batch_size": "32, the batch of the studies rankwise re-implements (transformers: 8)",
    "per_device_eval_batch_size": "64: evaluation holds no gradients (transformers: 8)",
    "learning_rate": "the method's own (5e-3 LoRA-XS, 5e-4 LoRA, 5e-5 full; transformers: 5e-5 for all)",
    "max_steps": "unset (transformers writes unset as -1)",
    "tf32": "off unless asked (transformers: None, the same)",
    "gradient_checkpointing": "off unless asked (transformers: None, the same)",
    "logging_steps": "10: short runs get a loss curve (transformers: 500)",
    "eval_strategy": "epoch: studies compare dev metrics per epoch (transformers: no)",
    "save_strategy": "epoch, after each epoch's evaluation, so a run resumes exactly (transformers: steps)",
    "save_steps": "unset: with --save_strategy steps, give it (transformers: 500)",
    "save_total_limit": "1: the last checkpoint, enough to resume (transformers: all)",
    "seed": "0: a study's seeds count from 0 (transformers: 42)",
}


@dataclass
class TrainingOptions:
    """Training: length, batches, learning rates and schedule, checkpoints and evaluation, precision, logging."""

    label: Optional[str] = option(None, "Name of this configuration in reports and run-directory names (e.g. "
                                 "`linear decay 16→4`). Default: derived from the config.", "training")
    output_dir: Optional[str] = option(None, "Run directory (default: runs/<task>_<method>_<allocation>_seed<seed>).",
                                      "training")
    overwrite_output_dir: bool = option(False, "Replace a finished run in output_dir.", "training")
    num_train_epochs: float = option(3, "Training epochs (evaluation after each). A fraction trains that share of the "
                                     "last epoch's steps, as transformers does (ceil(epochs × steps per epoch)).",
                                     "training", aliases=("--epochs",))
    per_device_train_batch_size: int = option(32, "Training batch size per device.", "training",
                                             aliases=("--batch_size",))
    per_device_eval_batch_size: int = option(64, "Evaluation batch size per device.", "training")
    gradient_accumulation_steps: int = option(1, "Batches per optimiser step.", "training")
    learning_rate: Optional[float] = option(None, "Learning rate of the adapter (all weights for `full`). Default "
                                           "5e-3 (loraxs), 5e-4 (lora), 5e-5 (full).", "training", aliases=("--lr",))
    cls_learning_rate: Optional[float] = option(None, "Learning rate of the classification head. Default 5e-3 "
                                               "(loraxs, lora) or learning_rate (full).", "training",
                                               aliases=("--cls_lr",))
    weight_decay: float = option(0.0, "AdamW weight decay (adapter and head; the allocation weights have "
                                "--rank_allocation_weight_decay).",
                                "training")
    lr_scheduler: str = option("linear_schedule_with_warmup", "Learning-rate schedule: rankwise's three (`linear` and "
                              "`constant` are aliases) or transformers' other lr_scheduler_type values (with "
                              "--lr_scheduler_kwargs).", "training", LR_SCHEDULERS, aliases=("--lr_scheduler_type",))
    warmup_ratio: float = option(0.06, "Warm-up fraction of the steps (ceil(steps × ratio) steps, as transformers "
                                "counts them), unless --warmup_steps is given; constant_schedule has none.",
                                "training")
    max_grad_norm: float = option(1.0, "Gradient clipping norm (0 disables clipping; the norm is still checked).",
                                 "training")
    seed: int = option(0, "Random seed, 0 to 2^64-1. The same config and seed on CPU give the same metrics at the same "
                      "torch thread count (a sweep worker with 1 thread and a run with 2 can differ in the last digits).",
                      "training")
    logging_steps: int = option(10, "Write a metrics/allocation line every N optimiser steps.", "training")
    max_bad_steps: int = option(10, "Consecutive non-finite steps before the run ends as `diverged`.", "training")
    save_model: bool = option(True, "Save adapter (or full model) weights in the run directory.", "training")
    max_steps: Optional[int] = option(None, "Train this many optimiser steps instead of --num_train_epochs epochs.",
                                     "training")
    eval_strategy: str = option("epoch", "When to evaluate: `epoch`, every `steps` (--eval_steps), or `no` (the "
                               "summary then has no metrics).", "training", EVAL_STRATEGIES,
                               aliases=("--evaluation_strategy",))
    eval_steps: Optional[int] = option(None, "Evaluate every N optimiser steps (with --eval_strategy steps).", "training")
    save_strategy: str = option("epoch", "When to write a checkpoint (weights, optimiser, schedules, RNG) to resume "
                               "from: `epoch`, every `steps` (--save_steps), `best` or `no`.", "training",
                               SAVE_STRATEGIES)
    save_steps: Optional[int] = option(None, "Checkpoint every N optimiser steps (with --save_strategy steps).",
                                      "training")
    save_total_limit: Optional[int] = option(1, "Checkpoints kept while training (the best one too with "
                                            "--load_best_model_at_end).", "training")
    keep_checkpoints: bool = option(False, "Keep the checkpoints after the run completes (by default they are removed "
                                   "then: adapter/ holds the weights).", "training")
    resume_from_checkpoint: Optional[str] = option(None, "Resume an unfinished run of the same config from a "
                                                  "checkpoint: a checkpoint directory, or `true` for the last one in "
                                                  "--output_dir.", "training")
    load_best_model_at_end: bool = option(False, "Save (and export) the weights of the best evaluation, not the last.",
                                         "training")
    metric_for_best_model: Optional[str] = option(None, "Metric that picks the best evaluation (default: the task's "
                                                 "main metric, e.g. matthews_correlation for CoLA).", "training")
    early_stopping_patience: Optional[int] = option(None, "Stop after N evaluations without improvement (needs "
                                                   "--load_best_model_at_end).", "training")
    bf16: bool = option(False, "bfloat16 mixed precision.", "training")
    fp16: bool = option(False, "float16 mixed precision (CUDA).", "training")
    tf32: bool = option(False, "Allow TF32 matmuls (Ampere or newer CUDA GPUs).", "training")
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass to save memory.",
                                         "training")
    dataloader_num_workers: int = option(0, "Worker processes that load training batches.", "training")
    torch_compile: bool = option(False, "Compile the model with torch.compile (the rank masks are set outside the "
                                "compiled forward: no recompiles after the first steps of each phase).", "training")
    torch_compile_backend: Optional[str] = option(None, "torch.compile backend (transformers' flag; default inductor, "
                                                 "which needs a C++ compiler on CPU and Triton on a GPU; `eager` or "
                                                 "`aot_eager` compile nothing).", "training")
    torch_compile_mode: Optional[str] = option(None, "torch.compile mode: default, reduce-overhead, max-autotune "
                                              "(transformers' flag).", "training")
    push_to_hub: bool = option(False, "Upload the run's adapter (or model) to the Hugging Face Hub at the end.",
                              "training")
    hub_model_id: Optional[str] = option(None, "Hub repository for --push_to_hub (user/name).", "training")
    report_to: str = option("none", "Also log to `tensorboard` (--logging_dir, default logs/ in the run directory), "
                           "`wandb` (offline unless WANDB_MODE is set), `mlflow`, or `all` the installed ones.",
                           "training", REPORT_TO)
    logging_dir: Optional[str] = option(None, "TensorBoard's log directory (default: logs/ in the run directory).",
                                       "training")
    save_safetensors: bool = option(True, "Save weights as safetensors (transformers' flag): rankwise writes nothing "
                                   "else, so false is refused.", "training")
    quiet: bool = option(False, "No progress bars.", "training")
    freeze_head: bool = option(False, "Keep the classification head at its initial weights (LoRA Without Regret "
                              "froze it); by default it trains at --cls_learning_rate.", "training")
