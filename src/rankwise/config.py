"""Run configuration: one flat dataclass of HF-style fields, its command-line parser, and validation.

This is the one place where errors for bad input live. Every field is a `--flag` of
`rankwise train` and a key of a YAML/JSON config file (`--config run.yaml`); a sweep grid may give
any field as a list. `validate` checks everything that can be checked without loading a model;
checks that need the model (budget feasibility, custom ranks vs. layers) raise `ConfigError`
from the allocation code, still before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import decimal
import difflib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import ConfigError
from .methods import METHODS, get_method

INITS = ("default", "eva")
ALLOCATIONS = ("uniform", "linear_decay", "attention_heavy", "empirical", "custom", "learned", "gradient")
ALPHA_POLICIES = ("constant", "ratio", "rslora")
LR_SCHEDULERS = ("linear_schedule_with_warmup", "constant_schedule", "cosine")
LR_SCHEDULER_ALIASES = {
    "linear": "linear_schedule_with_warmup",
    "constant": "constant_schedule",
    "cosine_schedule_with_warmup": "cosine",
}
ALPHA_SCHEDULERS = ("linear", "exponential", "cosine")
WEIGHT_INITS = ("random", "uniform", "quadratic", "left_skewed")
LEARNED_SCALES = ("rank_average", "rank_max")
BUDGET_MODES = ("capped", "softmax")
EVAL_STRATEGIES = ("epoch", "steps", "no")
SAVE_STRATEGIES = ("epoch", "steps", "best", "no")
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow")
PROBLEM_TYPES = ("auto", "single_label_classification", "regression")
ROUNDINGS = ("budget", "study")
ALPHA_SCHEDULE_SPANS = ("soft", "all")
PROMPT_FORMATS = ("alpaca", "human_assistant")
LOSS_ON = ("response", "all")
INSTRUCT_SPLITS = ("seeded_holdout", "first_n_90_10")

DEFAULT_CLS_LR = 5e-3


def _f(default: Any, help: str, group: str, choices: tuple | None = None, aliases: tuple = ()) -> Any:
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, "aliases": aliases})


@dataclass
class RunConfig:
    """Everything one training run needs. Field names follow transformers' `TrainingArguments` and
    the adaptive LoRA-XS study's flags, so existing command lines read naturally."""

    # --- model and adapter -------------------------------------------------------------------
    model: Optional[str] = _f(None, "Model: `minilm`, `smollm2-135m`, a Hugging Face hub id or a local directory. "
                              "Default: minilm for GLUE, smollm2-135m for alpaca.", "model",
                              aliases=("--model_name_or_path",))
    method: str = _f("loraxs", "Adapter method.", "model", METHODS)
    target_modules: Optional[str] = _f(None, "Comma-separated module-name suffixes, `all-linear` (every linear layer "
                                       "of the transformer blocks) or `every-linear` (the head's too, whose own "
                                       "weights then stay frozen). Default per architecture (BERT/RoBERTa: "
                                       "query,value,attention.output.dense,output.dense).",
                                       "model")
    lora_alpha: float = _f(16.0, "Adapter alpha: the update is scaled by alpha/r (LoRA and LoRA-XS).", "model",
                           aliases=("--alpha",))
    alpha_policy: str = _f("constant", "How alpha follows each matrix's rank: `constant` alpha (scale alpha/r), "
                           "`ratio` (alpha_i = lora_alpha * r_i / rank, so alpha/r is the same everywhere), "
                           "`rslora` (scale alpha/sqrt(r)).", "model", ALPHA_POLICIES)
    lora_dropout: float = _f(0.0, "Dropout on the adapter input (LoRA only).", "model")
    init: str = _f("default", "LoRA initialisation: `default` (PEFT's: A random, B zero) or `eva` (PEFT EVA: A from "
                   "the SVD of each matrix's input activations on training batches, ranks redistributed by explained "
                   "variance before training; the rank sum stays the same).", "model", INITS)
    eva_rho: float = _f(2.0, "`--init eva`: a matrix may get up to eva_rho × its rank (1 = no redistribution).", "model")

    # --- AdaLoRA (--method adalora, through PEFT) -----------------------------------------------
    adalora_init_r: Optional[int] = _f(None, "AdaLoRA: rank every matrix starts at. Default ceil(1.5 × the final "
                                       "average rank).", "adalora")
    adalora_target_r: Optional[int] = _f(None, "AdaLoRA: final average rank (PEFT's target_r: target_r × n rank "
                                         "triplets in all). Default: from --rank_average (or --rank), matched to LoRA's "
                                         "parameter count at that rank.", "adalora")
    adalora_tinit: float = _f(0.1, "AdaLoRA: fraction of the optimiser steps trained before pruning starts "
                              "(PEFT's tinit, in steps).", "adalora")
    adalora_tfinal: float = _f(0.3, "AdaLoRA: fraction of the optimiser steps trained at the final ranks "
                               "(PEFT's tfinal, in steps; at least 1 step).", "adalora")
    adalora_deltaT: int = _f(10, "AdaLoRA: optimiser steps between two rank allocations.", "adalora")
    adalora_beta1: float = _f(0.85, "AdaLoRA: EMA coefficient of the sensitivity.", "adalora")
    adalora_beta2: float = _f(0.85, "AdaLoRA: EMA coefficient of the uncertainty.", "adalora")
    adalora_orth_reg_weight: float = _f(0.5, "AdaLoRA: weight of the orthogonality regulariser of A and B, added to "
                                        "the training loss (not to evaluation losses).", "adalora")

    # --- rank allocation ---------------------------------------------------------------------
    allocation: str = _f("uniform", "How each matrix gets its rank.", "allocation", ALLOCATIONS)
    rank: Optional[int] = _f(None, "Rank for `uniform`; base rank of `empirical`, `--match_budget` and alpha_policy "
                             "`ratio`. Default 25 (loraxs) or 8 (lora).", "allocation", aliases=("--lora_rank", "--r"))
    rank_first: Optional[int] = _f(None, "`linear_decay`: rank at the first layer.", "allocation")
    rank_last: Optional[int] = _f(None, "`linear_decay`: rank at the last layer.", "allocation")
    rank_attention: Optional[int] = _f(None, "`attention_heavy`: rank of attention matrices.", "allocation")
    rank_mlp: Optional[int] = _f(None, "`attention_heavy`: rank of MLP matrices.", "allocation")
    rank_file: Optional[str] = _f(None, "`custom`: JSON/YAML file with `layer_ranks: [...]` (one per layer) or "
                                  "`module_ranks: {regex: rank}`.", "allocation")
    match_budget: bool = _f(False, "Rescale a static strategy's ranks so its adapter has the same number of "
                            "parameters as uniform `--rank` (or `--budget`).", "allocation")
    budget: Optional[int] = _f(None, "Explicit parameter budget for `--match_budget` and `gradient` (default: uniform "
                               "--rank's parameters; `learned` takes its budget from --rank_average or "
                               "--memory_start).", "allocation")
    rank_min: Optional[int] = _f(None, "`learned`, `gradient`: smallest rank a matrix can get. Default 5 (learned), "
                                 "1 (gradient).", "allocation")
    rank_max: Optional[int] = _f(None, "`learned`, `gradient`: largest rank (learned adapters are built at this "
                                 "size). Default 30 (learned), 4 × --rank (gradient).", "allocation")
    allocation_batches: int = _f(4, "`gradient`: training batches whose mean loss gradient decides the ranks "
                                 "(before training: about 2 s for MiniLM on 2 CPU cores, under 2 percent of a 3-epoch "
                                 "run "
                                 "on 2,000 examples; on STS-B and SST-2, 4 batches gave the ranks 8 and 16 did).",
                                 "allocation")
    allocation_head_steps: int = _f(0, "`gradient`: train the task's new classification head alone for this many "
                                    "steps (AdamW at --cls_learning_rate, on the measuring batches) before "
                                    "measuring, so the gradients do not pass through a random head; the head is "
                                    "reset to its initial weights before training (default 0: measure at the "
                                    "head's initialisation).", "allocation")
    gradient_normalize: bool = _f(False, "`gradient`: divide each matrix's gradient energies by their value at its "
                                  "largest rank, so only the spectrum's shape decides (default: raw energies).",
                                  "allocation")
    rank_average: Optional[float] = _f(None, "`learned`: budget as an average rank (budget = sum of each "
                                       "matrix's cost at this rank; n*avg^2 for loraxs). Default: middle of "
                                       "[rank_min, rank_max] unless --memory_start is given. `adalora`: the final "
                                       "adapter gets LoRA's parameter count at this rank (default --rank).",
                                       "allocation")
    memory_start: Optional[float] = _f(None, "`learned`: budget (adapter parameters) at the start.", "allocation")
    memory_end: Optional[float] = _f(None, "`learned`: budget at the end (default: memory_start).", "allocation")
    epochs_memory_start: int = _f(0, "`learned`: epochs the budget stays at memory_start.", "allocation")
    epochs_memory_start_to_end: int = _f(0, "`learned`: epochs over which the budget moves linearly to memory_end.",
                                         "allocation")
    epochs_rank_discrete: Optional[int] = _f(None, "`learned`: final epochs trained with hard ranks. Default 1 "
                                             "(0 for a one-epoch run).", "allocation")
    alpha_min: float = _f(0.5, "`learned`: mask sharpness at the start.", "allocation")
    alpha_max: float = _f(3.0, "`learned`: mask sharpness at the end of the soft phase.", "allocation")
    alpha_scheduler: str = _f("linear", "`learned`: how sharpness moves from alpha_min to alpha_max.", "allocation",
                              ALPHA_SCHEDULERS)
    tau: float = _f(0.0, "`learned`: Gumbel noise scale on the rank distribution (training only).", "allocation")
    rank_allocation_lr: float = _f(1e-2, "`learned`: learning rate of the allocation weights (their weight decay: "
                                   "--rank_allocation_weight_decay).",
                                   "allocation", aliases=("--rank_allocation_learning_rate",))
    rank_allocation_weights_init: str = _f("uniform", "`learned`: initial allocation weights. `uniform` starts "
                                           "every matrix at the same rank (the budget's average), so the "
                                           "allocation moves only where training pushes it; `random` (the "
                                           "adaptive LoRA-XS study's) starts from a random allocation and cost "
                                           "0.7 accuracy points on SST-2 (docs/results/study_ablation).",
                                           "allocation", WEIGHT_INITS)
    budget_mode: str = _f("capped", "`learned`: `capped` keeps every rank in [rank_min, rank_max] and spends the "
                          "whole budget; `softmax` is the study's formula (may exceed rank_max).", "allocation",
                          BUDGET_MODES)
    rounding: str = _f("budget", "`learned`: hard ranks by largest remainder within the budget (`budget`) or "
                       "independent rounding as in the study (`study`).", "allocation", ROUNDINGS)
    rank_annealing: bool = _f(False, "`learned`: freeze the allocation at uniform ranks (the weights do not train): "
                              "adapters train at rank_max under soft masks that shrink to the budget's uniform rank, "
                              "then are truncated to it (rank annealing).", "allocation")
    learned_scale: str = _f("rank_average", "`learned`: update scale of adapters built at rank_max: α/rank_average "
                            "(`rank_average`: one learning rate means the same update size as a uniform adapter at "
                            "the same budget) or α/rank_max (`rank_max`: the adaptive LoRA-XS study's, used by "
                            "`rankwise glue`).", "allocation", LEARNED_SCALES)

    # --- the published studies' settings (issue 22); every default keeps rankwise's own behaviour --------------
    rank_start: Optional[float] = _f(None, "`learned`: budget at the start as an average rank (Σ c_i(rank_start): "
                                     "n·rank_start² for loraxs), held --epochs_memory_start epochs and moved linearly "
                                     "to --rank_average's budget over --epochs_memory_start_to_end epochs (the "
                                     "adaptive LoRA-XS study's initial_bigger_memory runs).", "allocation")
    alpha_schedule_span: str = _f("soft", "`learned`: α moves from alpha_min to alpha_max over the soft phase "
                                  "(`soft`: α_max at the last soft step) or over all steps of the run (`all`: the "
                                  "adaptive LoRA-XS study's scheduler, α(t) at t/total_steps).", "allocation",
                                  ALPHA_SCHEDULE_SPANS)
    rank_allocation_weight_decay: float = _f(0.0, "`learned`: AdamW weight decay of the allocation weights (the "
                                             "adaptive LoRA-XS study's optimiser used torch's 0.01 there too).",
                                             "allocation")
    resample_layer_ranks: bool = _f(False, "`custom`: stretch a `layer_ranks` list of another length to the model's "
                                    "depth (linear interpolation, rounded) instead of refusing it.", "allocation")
    freeze_head: bool = _f(False, "Keep the classification head at its initial weights (LoRA Without Regret "
                           "froze it); by default it trains at --cls_learning_rate.", "training")
    prompt_format: str = _f("alpaca", "alpaca: `alpaca` (the Stanford Alpaca prompt) or `human_assistant` "
                            "(\"Human: {instruction}\\nAssistant: {output}\", the placement study's; the input "
                            "field is left out as it did).", "data", PROMPT_FORMATS)
    loss_on: str = _f("response", "alpaca: loss on the `response` tokens, or on `all` tokens of prompt and "
                      "response (the placement study's labels = input_ids).", "data", LOSS_ON)
    instruct_split: str = _f("seeded_holdout", "alpaca: `seeded_holdout` (--eval_size records of a fixed "
                             "permutation held out) or `first_n_90_10` (the placement study's: the first "
                             "--max_train_samples records, the first nine tenths to train and the rest to evaluate).",
                             "data", INSTRUCT_SPLITS, aliases=("--split",))

    # --- data ----------------------------------------------------------------------------------
    task: Optional[str] = _f(None, "GLUE task (cola, sst2, mrpc, qnli, rte, stsb, qqp, mnli, wnli), `alpaca` "
                             "(instruction tuning), or `text` (your own classification or regression data: "
                             "--train_file or --dataset). Default: `text` when --train_file or --dataset is given "
                             "without a task, else cola.", "data", aliases=("--task_name",))
    data_dir: Optional[str] = _f(None, "Directory with GLUE task folders in the original TSV layout and/or "
                                 "alpaca/alpaca_data.json "
                                 "(default: $RANKWISE_DATA_DIR; else the Hugging Face hub).", "data")
    train_file: Optional[str] = _f(None, "Training data: for `text`, a CSV, TSV, JSON, JSONL or Parquet file of "
                                   "texts and labels; for `alpaca`, Alpaca-format or chat-format (`messages`) JSON/JSONL "
                                   "(GLUE tasks read --data_dir).", "data")
    validation_file: Optional[str] = _f(None, "`text`: evaluation data, in the training file's format (default: "
                                        "--validation_split of the training data).", "data")
    test_file: Optional[str] = _f(None, "`text`: test data, evaluated with every evaluation (metrics `test_*`).",
                                  "data")
    dataset: Optional[str] = _f(None, "`text`: a 🤗 datasets dataset: a local directory of data files, or a hub "
                                "name when the hub is reachable (`ag_news`: the LR-ratio study's draw).", "data")
    dataset_config: Optional[str] = _f(None, "`text`: the --dataset configuration (name) to load.", "data")
    text_column: Optional[str] = _f(None, "`text`: the column with the text (default: the first of text, sentence, "
                                    "sentence1, question, premise, content, review, document).", "data")
    text_pair_column: Optional[str] = _f(None, "`text`: a second text column for sentence pairs (default: sentence2, "
                                         "hypothesis or question2 when the first is sentence1, premise or "
                                         "question1).", "data")
    label_column: Optional[str] = _f(None, "`text`: the label column (default: label).", "data")
    problem_type: str = _f("auto", "`text`: `single_label_classification`, `regression`, or `auto` (float labels "
                           "that are not whole numbers mean regression).", "data", PROBLEM_TYPES)
    validation_split: float = _f(0.1, "`text` without validation data: the fraction of the training data held out "
                                 "for evaluation (a fixed split, the same for every seed).", "data")
    max_seq_length: Optional[int] = _f(None, "Longest input in tokens (default 128 for GLUE, 512 for alpaca).",
                                       "data")
    pad_to_max_length: bool = _f(False, "Pad every batch to --max_seq_length (transformers' run_glue.py flag; the "
                                 "LoRA Without Regret and adaptive LoRA-XS studies padded so) instead of to its "
                                 "longest input: the same logits under the attention mask, more compute.", "data")
    max_train_samples: Optional[int] = _f(None, "Use only the first N training examples.", "data")
    max_eval_samples: Optional[int] = _f(None, "Use only the first N evaluation examples.", "data")
    eval_size: int = _f(200, "alpaca: size of the held-out evaluation split.", "data")
    num_generations: int = _f(4, "alpaca: greedy generations on eval prompts saved to the run directory.", "data")

    # --- training ------------------------------------------------------------------------------
    label: Optional[str] = _f(None, "Name of this configuration in reports and run-directory names (e.g. "
                              "`linear decay 16→4`). Default: derived from the config.", "training")
    output_dir: Optional[str] = _f(None, "Run directory (default: runs/<task>_<method>_<allocation>_seed<seed>).",
                                   "training")
    overwrite_output_dir: bool = _f(False, "Replace a finished run in output_dir.", "training")
    num_train_epochs: int = _f(3, "Training epochs (evaluation after each).", "training", aliases=("--epochs",))
    per_device_train_batch_size: int = _f(32, "Training batch size per device.", "training",
                                          aliases=("--batch_size",))
    per_device_eval_batch_size: int = _f(64, "Evaluation batch size per device.", "training")
    gradient_accumulation_steps: int = _f(1, "Batches per optimiser step.", "training")
    learning_rate: Optional[float] = _f(None, "Learning rate of the adapter (all weights for `full`). Default "
                                        "5e-3 (loraxs), 5e-4 (lora), 5e-5 (full).", "training", aliases=("--lr",))
    cls_learning_rate: Optional[float] = _f(None, "Learning rate of the classification head. Default 5e-3 "
                                            "(loraxs, lora) or learning_rate (full).", "training",
                                            aliases=("--cls_lr",))
    weight_decay: float = _f(0.0, "AdamW weight decay (adapter and head; the allocation weights have "
                             "--rank_allocation_weight_decay).",
                             "training")
    lr_scheduler: str = _f("linear_schedule_with_warmup", "Learning-rate schedule.", "training", LR_SCHEDULERS,
                           aliases=("--lr_scheduler_type",))
    warmup_ratio: float = _f(0.06, "Warm-up fraction for linear_schedule_with_warmup and cosine.", "training")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 disables clipping; the norm is still checked).",
                              "training")
    seed: int = _f(0, "Random seed, 0 to 2^64-1. The same config and seed on CPU give the same metrics at the same "
                   "torch thread count (a sweep worker with 1 thread and a run with 2 can differ in the last digits).",
                   "training")
    logging_steps: int = _f(10, "Write a metrics/allocation line every N optimiser steps.", "training")
    max_bad_steps: int = _f(10, "Consecutive non-finite steps before the run ends as `diverged`.", "training")
    save_model: bool = _f(True, "Save adapter (or full model) weights in the run directory.", "training")
    max_steps: Optional[int] = _f(None, "Train this many optimiser steps instead of --num_train_epochs epochs.",
                                  "training")
    eval_strategy: str = _f("epoch", "When to evaluate: `epoch`, every `steps` (--eval_steps), or `no` (the "
                            "summary then has no metrics).", "training", EVAL_STRATEGIES,
                            aliases=("--evaluation_strategy",))
    eval_steps: Optional[int] = _f(None, "Evaluate every N optimiser steps (with --eval_strategy steps).", "training")
    save_strategy: str = _f("epoch", "When to write a checkpoint (weights, optimiser, schedules, RNG) to resume "
                            "from: `epoch`, every `steps` (--save_steps), `best` or `no`.", "training",
                            SAVE_STRATEGIES)
    save_steps: Optional[int] = _f(None, "Checkpoint every N optimiser steps (with --save_strategy steps).",
                                   "training")
    save_total_limit: Optional[int] = _f(1, "Checkpoints kept while training (the best one too with "
                                         "--load_best_model_at_end).", "training")
    keep_checkpoints: bool = _f(False, "Keep the checkpoints after the run completes (by default they are removed "
                                "then: adapter/ holds the weights).", "training")
    resume_from_checkpoint: Optional[str] = _f(None, "Resume an unfinished run of the same config from a "
                                               "checkpoint: a checkpoint directory, or `true` for the last one in "
                                               "--output_dir.", "training")
    load_best_model_at_end: bool = _f(False, "Save (and export) the weights of the best evaluation, not the last.",
                                      "training")
    metric_for_best_model: Optional[str] = _f(None, "Metric that picks the best evaluation (default: the task's "
                                              "main metric, e.g. matthews_correlation for CoLA).", "training")
    early_stopping_patience: Optional[int] = _f(None, "Stop after N evaluations without improvement (needs "
                                                "--load_best_model_at_end).", "training")
    bf16: bool = _f(False, "bfloat16 mixed precision.", "training")
    fp16: bool = _f(False, "float16 mixed precision (CUDA).", "training")
    tf32: bool = _f(False, "Allow TF32 matmuls (Ampere or newer CUDA GPUs).", "training")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.",
                                      "training")
    dataloader_num_workers: int = _f(0, "Worker processes that load training batches.", "training")
    torch_compile: bool = _f(False, "Compile the model with torch.compile (the rank masks are set outside the "
                             "compiled forward: no recompiles after the first steps of each phase).", "training")
    torch_compile_backend: Optional[str] = _f(None, "torch.compile backend (transformers' flag; default inductor, "
                                              "which needs a C++ compiler on CPU and Triton on a GPU; `eager` or "
                                              "`aot_eager` compile nothing).", "training")
    torch_compile_mode: Optional[str] = _f(None, "torch.compile mode: default, reduce-overhead, max-autotune "
                                           "(transformers' flag).", "training")
    push_to_hub: bool = _f(False, "Upload the run's adapter (or model) to the Hugging Face Hub at the end.",
                           "training")
    hub_model_id: Optional[str] = _f(None, "Hub repository for --push_to_hub (user/name).", "training")
    report_to: str = _f("none", "Also log to `tensorboard` (logs/ in the run directory), `wandb` (offline unless "
                        "WANDB_MODE is set) or `mlflow`.", "training", REPORT_TO)
    quiet: bool = _f(False, "No progress bars.", "training")

    # ------------------------------------------------------------------------------------------
    @property
    def is_instruct(self) -> bool:
        return self.task == "alpaca"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}

# Fields that only mean something for some allocations: sweeps drop them from base/grid where
# they do not apply, names and reports ignore them there.
LEARNED_ONLY = ("rank_average", "memory_start", "memory_end", "epochs_memory_start",
                "epochs_memory_start_to_end", "epochs_rank_discrete", "alpha_min", "alpha_max", "alpha_scheduler",
                "tau", "rank_allocation_lr", "rank_allocation_weights_init", "budget_mode", "rounding", "rank_start",
                "alpha_schedule_span", "rank_allocation_weight_decay", "rank_annealing", "learned_scale")
RANK_RANGE = ("rank_min", "rank_max")  # learned and gradient allocation
GRADIENT_ONLY = ("allocation_batches", "gradient_normalize", "allocation_head_steps")
STATIC_ONLY = {"rank_first": "linear_decay", "rank_last": "linear_decay", "rank_attention": "attention_heavy",
               "rank_mlp": "attention_heavy", "rank_file": "custom", "resample_layer_ranks": "custom"}
BUDGET_MATCHING = ("budget", "match_budget")  # rescale a static strategy (LoRA-XS or LoRA adapters) to a budget
LEARNED_ONLY_SET = set(LEARNED_ONLY)
# Which methods read --lora_dropout is the methods' to say (LoRA-XS has none). `full` ignores every adapter option:
# lora_dropout, like lora_alpha and alpha_policy, is left applying there, as an LR sweep passes its shared
# options to its full fine-tuning reference runs.
# Data options read only by instruction tuning (`alpaca`); GLUE tasks read --data_dir (or the hub).
INSTRUCT_ONLY = ("eval_size", "num_generations", "prompt_format", "loss_on", "instruct_split")
# Data options of your own data (`text`); --train_file serves `text` and `alpaca`.
TEXT_ONLY = ("validation_file", "test_file", "dataset", "dataset_config", "text_column", "text_pair_column",
             "label_column", "problem_type", "validation_split")


def _method_fields() -> set[str]:
    """Config fields that some method claims as its own (AdaLoRA's knobs)."""
    return {name for m in METHODS for name in get_method(m).own_fields}


def applies(field: str, allocation: str, method: str, task: str | None = None) -> bool:
    """Whether a config field means anything for a run with this allocation and method (and task, when
    given: without it, task-dependent data options count as applying)."""
    m = _known_method(method)
    said = m.reads(field) if m else None
    if said is not None:
        return said  # the method's own knobs (AdaLoRA's budget is rank_average, issue 8), dropout
    if field in _method_fields() - LEARNED_ONLY_SET:
        return False  # another method's knob
    adapters = m is None or (m.trains_adapter and not m.allocates_ranks)  # ranks set by an allocation
    if field in RANK_RANGE:
        return allocation in ("learned", "gradient") and adapters
    if field in LEARNED_ONLY:
        return allocation == "learned" and adapters
    if field in GRADIENT_ONLY:
        return allocation == "gradient" and adapters
    if field in STATIC_ONLY:
        return allocation == STATIC_ONLY[field] and adapters
    if field == "match_budget":  # gradient allocation always spends its budget
        return allocation not in ("learned", "gradient") and adapters
    if field in BUDGET_MATCHING:
        return allocation != "learned" and adapters
    if field == "rank":  # learned adapters are sized by rank_max
        return allocation != "learned" and (m is None or m.trains_adapter)
    if field in INSTRUCT_ONLY and task is not None:
        return task == "alpaca"
    if field in TEXT_ONLY and task is not None:
        return task == "text"
    if field == "train_file" and task is not None:
        return task in ("alpaca", "text")
    return True


# ---------------------------------------------------------------------------------------------
# Resolution and validation
# ---------------------------------------------------------------------------------------------

def default_max_seq_length(task: str) -> int:
    """--max_seq_length when none is given (a model with fewer positions caps it: `models.check_max_seq_length`)."""
    return 512 if task == "alpaca" else 128


def resolve_defaults(cfg: RunConfig) -> RunConfig:
    """Fill method- and task-dependent defaults, returning a new config (the one written to config.json)."""
    c = dataclasses.replace(cfg)
    c.lr_scheduler = LR_SCHEDULER_ALIASES.get(c.lr_scheduler, c.lr_scheduler)
    if c.task is None:  # your own data when you give some, else the GLUE task the README starts with
        c.task = "text" if c.train_file is not None or c.dataset is not None else "cola"
    if c.model is None:
        c.model = "smollm2-135m" if c.is_instruct else "minilm"
    method = _known_method(c.method)  # an unknown one is reported by `validate`, with the choices
    if c.rank is None:
        c.rank = method.default_rank if method else 8
    if c.learning_rate is None:
        c.learning_rate = method.default_learning_rate if method else 1e-3
    if c.cls_learning_rate is None:  # full fine-tuning: the head trains at the model's rate
        c.cls_learning_rate = c.learning_rate if method and not method.trains_adapter else DEFAULT_CLS_LR
    if c.max_seq_length is None:
        c.max_seq_length = default_max_seq_length(c.task)
    if c.torch_compile_backend is not None or c.torch_compile_mode is not None:  # as TrainingArguments does
        c.torch_compile = True
    if c.data_dir is None and os.environ.get("RANKWISE_DATA_DIR"):
        c.data_dir = os.environ["RANKWISE_DATA_DIR"]
    if c.allocation == "learned":
        if c.rank_min is None:
            c.rank_min = 5
        if c.rank_max is None:
            c.rank_max = 30
        if c.memory_start is None and c.rank_average is None:
            c.rank_average = (c.rank_min + c.rank_max) / 2
        if c.memory_start is not None and c.memory_end is None:
            c.memory_end = c.memory_start
        if c.epochs_rank_discrete is None:  # in steps (--max_steps) a schedule in epochs must be asked for
            c.epochs_rank_discrete = 1 if c.num_train_epochs >= 2 and c.max_steps is None else 0
    elif c.epochs_rank_discrete is None:
        c.epochs_rank_discrete = 0
    if c.allocation == "gradient":
        if c.rank_min is None:
            c.rank_min = 1
        if c.rank_max is None:
            c.rank_max = 4 * c.rank
    if method:
        method.resolve(c)
    return c


def _known_method(name: str):
    return get_method(name) if name in METHODS else None


def _require(ok: bool, name: str, problem: str, fix: str = "") -> None:
    if not ok:
        raise ConfigError(name, problem, fix)


MAX_LORA_ALPHA = 1e6  # far above any LoRA setting (alpha is usually r to 2r); see validate
SEED_LIMIT = 2**64  # torch seeds are unsigned 64-bit; it maps a negative seed s to 2^64 + s


def require_file(name: str, path: str | Path, fix: str = "") -> Path:
    """`path` as a Path if it is a file; else ConfigError naming option `name` and saying what is there instead."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(name, f"`{path}` is a directory, not a file", fix or "Give the path of the file itself")
    if not p.is_file():
        raise ConfigError(name, f"file `{path}` does not exist", fix)
    return p


def user_set(cfg: RunConfig, name: str) -> bool:
    """Whether field `name` holds a value someone chose: neither the field's default nor the value
    `resolve_defaults` fills in for it. So a config resolved twice, or read back from config.json, passes the
    same checks as the one first given."""
    value, default = getattr(cfg, name), FIELDS[name].default
    if value == default:
        return False
    return value != getattr(resolve_defaults(dataclasses.replace(cfg, **{name: default})), name)


def _not_applicable(cfg: RunConfig, name: str) -> tuple[str, str]:
    """(problem, fix) for an option given to a run it does not apply to (see `applies`)."""
    a, m = cfg.allocation, cfg.method
    if name == "train_file" or name in TEXT_ONLY:
        return (f"is not read by GLUE task `{cfg.task}`, which reads --data_dir DIR/<Task>/train.tsv and dev.tsv "
                "(or the Hugging Face hub)",
                f"To train on your own files, drop --task (or use --task text) and give --train_file with "
                f"--text_column/--label_column; else drop --{name}")
    if name in INSTRUCT_ONLY:
        return f"only applies to --task alpaca, not to GLUE task `{cfg.task}`", f"Drop --{name}"
    method = get_method(m)
    owners = [x for x in METHODS if name in get_method(x).own_fields]
    if owners and name not in LEARNED_ONLY_SET:
        methods = " or ".join(f"--method {x}" for x in owners)
        return f"only applies to {methods}, but --method is `{m}`", f"Drop --{name}, or use {methods}"
    if name == "lora_dropout":
        readers = ", ".join(x for x in METHODS if get_method(x).has_dropout and get_method(x).trains_adapter)
        return f"applies to LoRA layers (--method {readers}), but --method is `{m}`", f"Drop --{name}"
    if not method.trains_adapter:
        adapters = " or ".join(f"--method {x}" for x in METHODS if get_method(x).supports_learned)
        return (f"does not apply to --method {m} ({method.title} trains every weight: there are no adapter ranks "
                "or budgets)", f"Drop --{name}, or use {adapters}")
    if method.allocates_ranks:
        return (f"does not apply to --method {m} ({method.title} allocates the ranks itself)",
                f"Drop --{name}; {method.budget_hint}")
    if name in GRADIENT_ONLY:
        return (f"only applies to --allocation gradient, but --allocation is `{a}`",
                f"Drop --{name}, or use --allocation gradient")
    if name == "match_budget" and a == "gradient":
        return ("is not needed by --allocation gradient: it always spends the whole budget (uniform --rank's "
                "parameters, or --budget)", "Drop --match_budget")
    if name in RANK_RANGE:
        return (f"only applies to --allocation learned or gradient, but --allocation is `{a}`",
                f"Drop --{name}, or use --allocation learned or gradient")
    if name in BUDGET_MATCHING:
        return ("is not used by --allocation learned (it rescales a static allocation to a budget)",
                "Set the learned budget with --rank_average (an average rank) or --memory_start (parameters)")
    if name == "rank":
        return ("does not apply to --allocation learned: its adapters are sized by --rank_max and its budget is "
                "--rank_average or --memory_start", "Drop --rank; use --rank_min/--rank_max and --rank_average")
    if name in STATIC_ONLY:
        wanted = STATIC_ONLY[name]
        return (f"only applies to --allocation {wanted}, but --allocation is `{a}`",
                f"Drop --{name}, or use --allocation {wanted}")
    extra = "".join(f" (or --method {x})" for x in METHODS if name in get_method(x).own_fields)
    return (f"only applies to --allocation learned{extra}, but --allocation is `{a}`",
            f"Drop --{name}, or use --allocation learned")


def check_applicable(cfg: RunConfig) -> None:
    """Refuse an option set for a run that would ignore it (another experiment would run than the one asked
    for). Sweeps drop such base/grid options per run before this (`sweep.point_values`)."""
    for name in FIELDS:
        if not applies(name, cfg.allocation, cfg.method, cfg.task) and user_set(cfg, name):
            raise ConfigError(name, *_not_applicable(cfg, name))


def validate(cfg: RunConfig) -> None:
    """Raise `ConfigError` for the first problem found. Call on a resolved config."""
    for name, value in cfg.to_dict().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(name, f"is {value}", "Give a finite number")
        choices = FIELDS[name].metadata.get("choices")
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"Did you mean `{close[0]}`? " if close else ""
            raise ConfigError(name, f"unknown value `{value}`", f"{hint}Choose one of: {', '.join(choices)}")

    from .data import known_tasks  # local import: data pulls in tokenizers etc.

    tasks = known_tasks()
    if cfg.task not in tasks:
        close = difflib.get_close_matches(cfg.task, tasks, n=1)
        hint = f"Did you mean `{close[0]}`? " if close else ""
        raise ConfigError("task", f"unknown task `{cfg.task}`", f"{hint}Choose one of: {', '.join(tasks)}")
    check_applicable(cfg)

    _require(0 <= cfg.seed < SEED_LIMIT, "seed", f"must be in [0, 2^64-1], got {cfg.seed}",
             "Use a non-negative integer below 2^64 = 18446744073709551616 (torch's seed range)")
    _require(cfg.num_train_epochs >= 1, "num_train_epochs", f"must be at least 1, got {cfg.num_train_epochs}")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "logging_steps", "max_bad_steps", "max_seq_length"):
        value = getattr(cfg, name)
        _require(value >= 1, name, f"must be a positive integer, got {value}")
    for name in ("learning_rate", "cls_learning_rate", "rank_allocation_lr"):
        value = getattr(cfg, name)
        _require(value > 0, name, f"must be positive, got {value}")
    _require(0 <= cfg.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {cfg.warmup_ratio}")
    _require(cfg.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {cfg.max_grad_norm}")
    _require(cfg.weight_decay >= 0, "weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    _require(0 <= cfg.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {cfg.lora_dropout}")
    _require(cfg.lora_alpha > 0, "lora_alpha", f"must be positive, got {cfg.lora_alpha}")
    _require(cfg.lora_alpha <= MAX_LORA_ALPHA, "lora_alpha", f"({cfg.lora_alpha:g}) scales the adapter's update by "
             f"alpha/r, up to {cfg.lora_alpha:g} at rank 1: no LoRA setting is near that, and the run would diverge "
             "with a message that can only blame the learning rate", f"Give the alpha you mean (usually r to 2r, "
             f"e.g. 16 or 32; at most {MAX_LORA_ALPHA:g})")
    for name in ("max_train_samples", "max_eval_samples"):
        value = getattr(cfg, name)
        _require(value is None or value >= 1, name, f"must be a positive integer, got {value}")
    if cfg.is_instruct:
        _require(cfg.eval_size >= 1, "eval_size", f"must be a positive integer, got {cfg.eval_size}")
        _require(cfg.num_generations >= 0, "num_generations", f"must be >= 0, got {cfg.num_generations}")
    if cfg.data_dir is not None:
        data_fix = "Point it at a folder holding GLUE task folders (CoLA/, SST-2/, ...) or alpaca/alpaca_data.json"
        source = "data_dir"
        if cfg.data_dir == os.environ.get("RANKWISE_DATA_DIR"):  # filled in from the environment (resolve_defaults)
            source, data_fix = "$RANKWISE_DATA_DIR", data_fix + ", or give --data_dir (or unset the variable)"
        _require(not Path(cfg.data_dir).is_file(), source, f"`{cfg.data_dir}` is a file, not a directory", data_fix)
        _require(Path(cfg.data_dir).is_dir(), source, f"directory `{cfg.data_dir}` does not exist", data_fix)
    if cfg.task == "text":
        _require((cfg.train_file is None) != (cfg.dataset is None), "train_file",
                 "and --dataset both give the training data" if cfg.train_file else
                 "(or --dataset) is required by --task text", "Give one of --train_file FILE and --dataset NAME")
        for name in ("train_file", "validation_file", "test_file"):
            if getattr(cfg, name) is not None:
                require_file(name, getattr(cfg, name), "Give a .csv, .tsv, .json, .jsonl or .parquet file")
        _require(0 < cfg.validation_split < 1, "validation_split", f"must be in (0, 1), got {cfg.validation_split:g}")
    elif cfg.train_file is not None:
        require_file("train_file", cfg.train_file, "Give an Alpaca-format .json or .jsonl file")

    _validate_training(cfg)
    method = get_method(cfg.method)
    method.validate(cfg)  # its init, allocation and own options
    if method.trains_adapter:
        _validate_allocation(cfg)


def task_metrics(task: str) -> tuple[str, ...]:
    """The metrics a task's evaluation reports (without the `eval_` prefix): what --metric_for_best_model may name."""
    from .data import GLUE_TASKS

    if task in GLUE_TASKS:
        return ("loss", *GLUE_TASKS[task].metrics)
    if task == "text":  # classification or regression, decided by the data
        return ("loss", "accuracy", "f1", "macro_f1", "matthews_correlation", "pearson", "spearmanr")
    return ("loss", "perplexity")


def _validate_training(cfg: RunConfig) -> None:
    """The Trainer options: strategies and their step counts, best-model selection, precision, max_steps."""
    for name in ("max_steps", "eval_steps", "save_steps", "save_total_limit", "early_stopping_patience"):
        value = getattr(cfg, name)
        _require(value is None or value >= 1, name, f"must be a positive integer, got {value}")
    _require(cfg.dataloader_num_workers >= 0, "dataloader_num_workers",
             f"must be >= 0, got {cfg.dataloader_num_workers}")
    for kind, strategy, steps in (("eval", cfg.eval_strategy, cfg.eval_steps), ("save", cfg.save_strategy,
                                                                                 cfg.save_steps)):
        _require(strategy != "steps" or steps is not None, f"{kind}_steps",
                 f"is required by --{kind}_strategy steps", f"Give --{kind}_steps N (optimiser steps)")
        _require(steps is None or strategy == "steps", f"{kind}_steps",
                 f"only applies to --{kind}_strategy steps, but --{kind}_strategy is `{strategy}`",
                 f"Drop --{kind}_steps, or use --{kind}_strategy steps")
    _require(not (cfg.bf16 and cfg.fp16), "fp16", "and --bf16 both set the precision", "Give one of them")
    if cfg.metric_for_best_model is not None:
        name = cfg.metric_for_best_model.removeprefix("eval_")
        metrics = task_metrics(cfg.task)
        _require(name in metrics, "metric_for_best_model", f"`{cfg.metric_for_best_model}` is not a metric of "
                 f"task {cfg.task}", f"Choose one of: {', '.join(metrics)}")
    if cfg.load_best_model_at_end:
        _require(cfg.eval_strategy != "no", "load_best_model_at_end", "needs evaluations, but --eval_strategy is "
                 "`no`", "Use --eval_strategy epoch or steps")
        _require(cfg.save_strategy in (cfg.eval_strategy, "best"), "save_strategy",
                 f"(`{cfg.save_strategy}`) must match --eval_strategy (`{cfg.eval_strategy}`) with "
                 "--load_best_model_at_end, so the best evaluation has a checkpoint",
                 f"Use --save_strategy {cfg.eval_strategy} (or best)")
        if cfg.eval_strategy == "steps" and cfg.save_strategy == "steps":
            _require(cfg.save_steps % cfg.eval_steps == 0, "save_steps", f"({cfg.save_steps}) must be a multiple "
                     f"of --eval_steps ({cfg.eval_steps}) with --load_best_model_at_end",
                     f"Use --save_steps {cfg.eval_steps}")
    _require(cfg.early_stopping_patience is None or cfg.load_best_model_at_end, "early_stopping_patience",
             "needs --load_best_model_at_end (it stops on the best-model metric)", "Add --load_best_model_at_end")
    _require(cfg.save_strategy != "best" or cfg.eval_strategy != "no", "save_strategy",
             "`best` needs evaluations, but --eval_strategy is `no`", "Use --eval_strategy epoch or steps")
    if cfg.max_steps is not None and cfg.allocation == "learned":
        for name in ("epochs_memory_start", "epochs_memory_start_to_end"):
            _require(not getattr(cfg, name), name, f"({getattr(cfg, name)}) is a budget schedule in epochs, but "
                     f"--max_steps ({cfg.max_steps}) sets the run's length in steps",
                     "Drop --max_steps and give --num_train_epochs, or drop the memory schedule")


def _positive_rank(cfg: RunConfig, name: str, strategy: str) -> None:
    value = getattr(cfg, name)
    _require(value is not None, name, f"is required by --allocation {strategy}")
    _require(value >= 1, name, f"must be a positive integer, got {value}")


def _validate_rank_range(cfg: RunConfig) -> None:
    _require(cfg.rank_min >= 1, "rank_min", f"must be a positive integer, got {cfg.rank_min}")
    _require(cfg.rank_min <= cfg.rank_max, "rank_min",
             f"({cfg.rank_min}) is greater than --rank_max ({cfg.rank_max})", "Swap them or lower --rank_min")


def _check_patterns(rank_file: str) -> None:
    """A `module_ranks` key must be a regex that says which matrices it means: an empty one matches them all."""
    from .allocation.static import load_rank_file  # reads config's file helpers

    for pattern in (load_rank_file(rank_file).get("module_ranks") or {}):
        _require(isinstance(pattern, str), "rank_file", f"`module_ranks` in `{rank_file}` has the key {pattern!r}, "
                 "not a regex", "Write each key as a quoted regex on module names")
        _require(pattern != "", "rank_file", f"`module_ranks` in `{rank_file}` has an empty pattern, which matches "
                 "every matrix", "Give `default: R` for the matrices no pattern names, or a pattern that says which "
                 "matrices it means")


def _validate_allocation(cfg: RunConfig) -> None:
    a = cfg.allocation
    _require(cfg.rank >= 1, "rank", f"must be a positive integer, got {cfg.rank}")
    if a == "linear_decay":
        _positive_rank(cfg, "rank_first", a)
        _positive_rank(cfg, "rank_last", a)
    elif a == "attention_heavy":
        _positive_rank(cfg, "rank_attention", a)
        _positive_rank(cfg, "rank_mlp", a)
    elif a == "custom":
        _require(cfg.rank_file is not None, "rank_file", "is required by --allocation custom",
                 "Give a JSON/YAML file with `layer_ranks` or `module_ranks`")
        require_file("rank_file", cfg.rank_file, "Give a JSON/YAML file with `layer_ranks` or `module_ranks`")
        _check_patterns(cfg.rank_file)
    if cfg.budget is not None:  # static and gradient allocations only (check_applicable)
        _require(cfg.budget >= 1, "budget", f"must be a positive integer, got {cfg.budget}")
        _require(cfg.match_budget or a == "gradient", "budget", "is only used with --match_budget",
                 "Add --match_budget to rescale the ranks to this budget")
    if a == "gradient":
        _validate_rank_range(cfg)
        _require(cfg.allocation_batches >= 1, "allocation_batches",
                 f"must be a positive integer, got {cfg.allocation_batches}")
        _require(cfg.allocation_head_steps >= 0, "allocation_head_steps",
                 f"must be 0 or a positive integer, got {cfg.allocation_head_steps}")
        _require(not (cfg.allocation_head_steps and cfg.freeze_head), "allocation_head_steps",
                 "trains the head before measuring, but --freeze_head keeps it at its initialisation during training, "
                 "so the ranks would follow a head the run never has", "Drop --allocation_head_steps or --freeze_head")
        _require(cfg.budget is not None or cfg.rank_min <= cfg.rank <= cfg.rank_max, "rank",
                 f"({cfg.rank}) sets the budget to uniform rank {cfg.rank}'s parameters, which ranks in [rank_min, "
                 f"rank_max] = [{cfg.rank_min}, {cfg.rank_max}] cannot spend", "Choose --rank between --rank_min and "
                 "--rank_max (or give the budget in parameters with --budget)")
    if a != "learned":
        return

    _validate_rank_range(cfg)
    if cfg.rank_average is not None:
        _require(cfg.memory_start is None, "rank_average", "and --memory_start both set the budget",
                 "Give one of them")
        _require(cfg.rank_min <= cfg.rank_average <= cfg.rank_max, "rank_average",
                 f"({cfg.rank_average:g}) is outside [rank_min, rank_max] = [{cfg.rank_min}, {cfg.rank_max}]",
                 "Choose an average rank between --rank_min and --rank_max")
    for name in ("memory_start", "memory_end"):
        value = getattr(cfg, name)
        _require(value is None or value > 0, name, f"must be positive, got {value}")
    if cfg.rank_start is not None:  # the budget moves from rank_start's to rank_average's
        _require(cfg.memory_start is None, "rank_start", "and --memory_start both set the starting budget",
                 "Give one of them")
        _require(cfg.rank_min <= cfg.rank_start <= cfg.rank_max, "rank_start",
                 f"({cfg.rank_start:g}) is outside [rank_min, rank_max] = [{cfg.rank_min}, {cfg.rank_max}]",
                 "Choose a starting average rank between --rank_min and --rank_max")
        if cfg.rank_start != cfg.rank_average:
            _require(cfg.epochs_memory_start_to_end >= 1, "epochs_memory_start_to_end",
                     f"must be at least 1 when --rank_start ({cfg.rank_start:g}) differs from --rank_average "
                     f"({cfg.rank_average:g})", "Give the number of epochs over which the budget changes")
    if cfg.memory_start is None:  # the budget is rank_average's (from rank_start's, if given)
        for name in ("memory_end",) + (() if cfg.rank_start is not None else ("epochs_memory_start",
                                                                               "epochs_memory_start_to_end")):
            _require(not user_set(cfg, name), name, "is part of the budget schedule from --memory_start to "
                     "--memory_end, but no --memory_start is given: the budget is --rank_average's, constant",
                     f"Give --memory_start (and --memory_end), or drop --{name}")
    if cfg.rank_annealing:  # the allocation stays where it starts: uniform ranks
        _require(cfg.rank_allocation_weights_init == "uniform", "rank_annealing", "keeps the allocation at uniform "
                 f"ranks, but --rank_allocation_weights_init is `{cfg.rank_allocation_weights_init}`",
                 "Drop --rank_allocation_weights_init (uniform is the default), or drop --rank_annealing")
        for name in ("rank_allocation_lr", "rank_allocation_weight_decay", "tau"):
            _require(not user_set(cfg, name), name, "does not apply with --rank_annealing: the allocation weights "
                     "do not train", f"Drop --{name}, or drop --rank_annealing to learn the allocation")
    _require(cfg.rank_allocation_weight_decay >= 0, "rank_allocation_weight_decay",
             f"must be >= 0, got {cfg.rank_allocation_weight_decay}")
    for name in ("epochs_memory_start", "epochs_memory_start_to_end", "epochs_rank_discrete"):
        value = getattr(cfg, name)
        _require(value >= 0, name, f"must be >= 0, got {value}")
    scheduled = cfg.epochs_memory_start + cfg.epochs_memory_start_to_end
    _require(scheduled <= cfg.num_train_epochs, "epochs_memory_start_to_end",
             f"the budget schedule needs {scheduled} epochs (epochs_memory_start {cfg.epochs_memory_start} + "
             f"epochs_memory_start_to_end {cfg.epochs_memory_start_to_end}) but the run has "
             f"{cfg.num_train_epochs}", "Shorten the schedule or raise --num_train_epochs")
    if cfg.memory_start is not None and cfg.memory_end != cfg.memory_start:
        _require(cfg.epochs_memory_start_to_end >= 1, "epochs_memory_start_to_end",
                 f"must be at least 1 when memory_start ({cfg.memory_start:g}) differs from memory_end "
                 f"({cfg.memory_end:g})", "Give the number of epochs over which the budget changes")
    _require(cfg.max_steps is not None or cfg.epochs_rank_discrete < cfg.num_train_epochs, "epochs_rank_discrete",
             f"({cfg.epochs_rank_discrete}) leaves no epoch to learn the allocation in a "
             f"{cfg.num_train_epochs}-epoch run", "Lower it or raise --num_train_epochs")
    _require(cfg.alpha_min <= cfg.alpha_max, "alpha_min",
             f"({cfg.alpha_min:g}) is greater than --alpha_max ({cfg.alpha_max:g})")
    _require(cfg.alpha_min >= 0, "alpha_min", f"must be >= 0, got {cfg.alpha_min:g}")
    if cfg.alpha_scheduler == "exponential":
        _require(cfg.alpha_min > 0, "alpha_min", f"must be > 0 with --alpha_scheduler exponential, got "
                 f"{cfg.alpha_min:g}", "Use a small positive value such as 0.01, or --alpha_scheduler linear")
    _require(cfg.tau >= 0, "tau", f"must be >= 0, got {cfg.tau:g}")


# ---------------------------------------------------------------------------------------------
# Parsing: dataclass fields -> argparse, config files, overrides
# ---------------------------------------------------------------------------------------------

def _base_type(tp: Any) -> type:
    """`Optional[int]` -> int, `str` -> str."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing))  # annotations are strings under `from __future__ import annotations`
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


FIELD_TYPES = {name: _base_type(f.type) for name, f in FIELDS.items()}


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got `{text}`")


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got `{text}`") from None


def parse_int(text: str | int | float) -> int:
    """An exact integer from `12`, `1e3` or `2.0` (never through a float: `18446744073709551617` stays itself)."""
    if isinstance(text, bool):
        raise argparse.ArgumentTypeError(f"expected an integer, got `{text}`")
    if isinstance(text, int):
        return text
    try:
        value = decimal.Decimal(str(text).strip())
    except decimal.InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected an integer, got `{text}`") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"expected an integer, got `{text}`")
    if value.adjusted() > 100:
        raise argparse.ArgumentTypeError(f"`{text}` is too large")
    return int(value)


_CONVERTERS = {bool: parse_bool, int: parse_int, float: parse_float, str: str}


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """Add one `--flag` per RunConfig field, grouped as in `--help`. Defaults are left as None so
    that only flags given on the command line override a `--config` file."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, f in FIELDS.items():
        if name in exclude:
            continue
        meta = f.metadata
        group = groups.setdefault(meta["group"], parser.add_argument_group(f"{meta['group']} options"))
        kind = FIELD_TYPES[name]
        default_text = "" if f.default is None else f" (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": meta["help"] + default_text,
                                  "type": _CONVERTERS[kind]}
        if kind is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        if meta.get("choices"):
            kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
        group.add_argument(f"--{name}", *meta.get("aliases", ()), **kwargs)


def read_structured_file(path: str | Path, field: str) -> tuple[Any, str]:
    """(data, "JSON"|"YAML") from the file given by option `field`: `.json` is read as JSON, `.yaml`/`.yml` as
    YAML, any other suffix as JSON and then as YAML. Raises ConfigError naming the option, the file and what it
    was read as (a directory, a missing file, bytes that are not UTF-8, a syntax error)."""
    p = require_file(field, path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"`{path}` is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start})", "Save it as UTF-8 JSON or YAML") from None
    except OSError as exc:
        raise ConfigError(field, f"cannot read `{path}`: {exc.strerror or exc}") from None
    suffix = p.suffix.lower()
    kinds = ["JSON"] if suffix == ".json" else ["YAML"] if suffix in (".yaml", ".yml") else ["JSON", "YAML"]
    errors = []
    for kind in kinds:
        try:
            return (json.loads(text) if kind == "JSON" else yaml.safe_load(text)), kind
        except json.JSONDecodeError as exc:
            errors.append(f"{exc.msg} at line {exc.lineno}, column {exc.colno}")
        except yaml.YAMLError as exc:
            errors.append(" ".join(str(exc).split()))
    if len(kinds) == 1:
        raise ConfigError(field, f"`{path}` is not valid {kinds[0]} (read as {kinds[0]} because of its "
                          f"`{p.suffix}` suffix): {errors[0]}")
    raise ConfigError(field, f"`{path}` is neither valid JSON ({errors[0]}) nor valid YAML ({errors[1]}); both "
                      f"were tried because its suffix `{p.suffix}` is not .json, .yaml or .yml",
                      "Fix the syntax, and name the file .json or .yaml")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of RunConfig fields (see `read_structured_file` for how it is parsed)."""
    data, kind = read_structured_file(path, "config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"`{path}` (read as {kind}) holds a {type(data).__name__}, not a mapping of "
                          "option names to values", "Write one `option: value` per line (YAML) or a JSON object")
    return data


# Sources whose values come from the command line: text there is converted as argparse would. Every other
# source (a config file, a sweep file) must give each value its exact type.
COMMAND_LINE_SOURCES = ("arguments", "lr-sweep arguments")
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
# YAML 1.1 (PyYAML) reads `1e-3` as text: such text is still a number for a float option.
_NUMBER_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _is_optional(name: str) -> bool:
    return FIELDS[name].default is None


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _exact_value(name: str, value: Any, source: str) -> Any:
    """`value` if it has field `name`'s type (an int also for a float field), else ConfigError naming the field,
    the value and its type."""
    kind = FIELD_TYPES[name]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    if kind is int and is_number and isinstance(value, int):
        return value
    if kind is float and is_number:
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(name, f"bad value in {source}: {_shown(value)} is too large for a number") from None
    if kind is float and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return float(value)
    type_name = type(value).__name__
    got = "" if value is None else f" ({'an' if type_name[0] in 'aeiou' else 'a'} {type_name})"
    problem = f"bad value in {source}: got {_shown(value)}{got}, but it takes {_TYPE_WORDS[kind]}"
    if kind is str and isinstance(value, (bool, int, float)):
        fix = f'Quote it to mean the text: {name}: "{value}"'
    elif kind is str and name == "target_modules" and isinstance(value, list):
        fix = "Give the module names as one comma-separated string, e.g. target_modules: query,value"
    elif kind is int and isinstance(value, float):
        fix = f"Write a whole number such as {math.floor(value)}" if math.isfinite(value) else "Write a whole number"
    elif isinstance(value, bool):
        fix = f"Write {_TYPE_WORDS[kind]}: true/false is not one"
    elif value is None:
        fix = f"Give {_TYPE_WORDS[kind]}, or leave --{name} out for its default"
    else:
        fix = f"Write {_TYPE_WORDS[kind]}"
    raise ConfigError(name, problem, fix)


def config_from_dict(values: dict[str, Any], source: str = "arguments", exact_types: bool | None = None
                     ) -> RunConfig:
    """Build a RunConfig from a mapping, checking every key. `source` says where the values come from, in
    messages. Values from a file or sweep (`exact_types`; by default, any `source` not in COMMAND_LINE_SOURCES)
    must have the option's exact type: `rank: true` or `label: [a, b]` is an error, not rank 1 or the text
    "['a', 'b']". Command-line values (and a Python caller's, by default) are converted from text as argparse
    does; a list or mapping is never converted."""
    exact = source not in COMMAND_LINE_SOURCES if exact_types is None else exact_types
    kwargs = {}
    for key, value in values.items():
        name = key.lstrip("-")
        if name not in FIELDS:
            close = difflib.get_close_matches(name, FIELDS, n=1)
            hint = f"Did you mean `{close[0]}`?" if close else "See `rankwise train --help` for the options"
            raise ConfigError(name, f"unknown option in {source}", hint)
        if value is None and _is_optional(name):
            kwargs[name] = None
            continue
        kind = FIELD_TYPES[name]
        if exact or value is None or isinstance(value, (list, dict, tuple, set)):
            kwargs[name] = _exact_value(name, value, source)
            continue
        try:
            kwargs[name] = value if isinstance(value, kind) and not (kind is int and isinstance(value, bool)) \
                else _CONVERTERS[kind](value)
        except (argparse.ArgumentTypeError, TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(name, f"bad value in {source}: {exc}") from None
    return RunConfig(**kwargs)


def config_from_args(namespace: argparse.Namespace) -> RunConfig:
    """Merge `--config FILE` (if any) with the flags given on the command line (flags win)."""
    values: dict[str, Any] = {}
    config_path = getattr(namespace, "config", None)
    if config_path:
        values.update(load_config_file(config_path))
    for name in FIELDS:
        given = getattr(namespace, name, None)
        if given is not None:
            values[name] = given
    return config_from_dict(values, source=f"`{config_path}`" if config_path else "arguments")


def prepare(cfg: RunConfig) -> RunConfig:
    """Resolve defaults and validate: the config every command runs with."""
    resolved = resolve_defaults(cfg)
    validate(resolved)
    return resolved
