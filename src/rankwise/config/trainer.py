"""Every other field of transformers' `TrainingArguments` as a flag of `rankwise train`: its transformers name,
default and meaning (`TrainerArguments`, built from the installed transformers, so the flags follow its version).

rankwise's own training options (config/training.py) hold the fields it gives its own default or meaning (batch
sizes, learning rates, strategies, seed, precision, ...). Of the rest, most pass to `TrainingArguments` as given;
the optimiser's (`optim`, `adam_beta1`, `adam_beta2`, `adam_epsilon`) and `warmup_steps` configure rankwise's own
optimiser and schedule, computed as transformers computes them; and a few are refused, each with its reason
(`REFUSED`): options of machinery rankwise replaces (its evaluation, its optimiser's guard, its accelerate set-up) or
does not support (DeepSpeed, FSDP, Liger kernels). A refused flag is still a flag, so its message is the reason,
not "unrecognized argument".
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
from typing import Any

import yaml
from transformers import TrainingArguments

from ..errors import ConfigError
from ..options import option, require

EVALUATION = "rankwise evaluates with the task's own metrics over the whole dev set (--eval_accumulation_steps " \
             "sets how often its per-example values move to the host)"
REFUSED = {
    "optim_args": "rankwise's optimiser is AdamW with its divergence guard (see --optim)",
    "optim_target_modules": "rankwise's optimiser is AdamW with its divergence guard (see --optim)",
    "bf16_full_eval": "evaluation runs in the training precision: with --bf16 the frozen weights are bfloat16",
    "fp16_full_eval": "evaluation runs in the training precision: with --fp16 the frozen weights are float16",
    "use_liger_kernel": "Liger kernels replace the model's layers under rankwise's adapters: not supported",
    "liger_kernel_config": "Liger kernels replace the model's layers under rankwise's adapters: not supported",
    "auto_find_batch_size": "rankwise sizes its schedules from the batch before training; set "
                            "--per_device_train_batch_size",
    "logging_nan_inf_filter": "rankwise's divergence guard skips non-finite steps and logs the mean loss of the steps "
                              "taken (the filter would read every step's loss on the host)",
    "disable_tqdm": "use --quiet",
    "prediction_loss_only": EVALUATION,
    "eval_do_concat_batches": EVALUATION,
    "eval_use_gather_object": EVALUATION,
    "include_for_metrics": EVALUATION,
    "batch_eval_metrics": EVALUATION,
    "hub_token": "a token would be written to config.json; log in with `hf auth login` or set HF_TOKEN",
    "hub_strategy": "rankwise's --push_to_hub uploads the finished run's weights once, at the end",
    "hub_always_push": "rankwise's --push_to_hub uploads the finished run's weights once, at the end",
    "hub_private_repo": "rankwise's --push_to_hub creates the repository; make it private on the Hub",
    "hub_revision": "rankwise's --push_to_hub uploads to the repository's main branch",
    "ignore_data_skip": "rankwise resumes exactly: the resumed run reads the data order of the uninterrupted one",
    "accelerator_config": "rankwise configures accelerate itself (non-blocking copies on a GPU)",
    "parallelism_config": "rankwise runs data parallel only (torchrun, accelerate launch --multi_gpu)",
    "remove_unused_columns": "rankwise's collator builds the model's inputs itself",
    "label_names": "rankwise's tasks name their labels `labels`",
    "ddp_find_unused_parameters": "rankwise leaves the allocation weights out of DDP and averages them itself, so "
                                  "every other parameter is used",
    "fsdp": "not supported: rankwise's masks and checkpoints are tested with data parallelism (DDP) only",
    "fsdp_config": "not supported: rankwise's masks and checkpoints are tested with data parallelism (DDP) only",
    "deepspeed": "not supported: rankwise's masks and checkpoints are tested with data parallelism (DDP) only",
}
# The TrainerArguments that change what a run learns or keeps (its best checkpoint, when the divergence guard reads
# its counters); the others (saving, the Hub, data loading, ...) do not, so they are not part of a configuration's
# identity (runs/naming.py, NOT_IDENTITY).
CHANGES_RESULTS = {"lr_scheduler_kwargs", "warmup_steps", "adam_beta1", "adam_beta2", "adam_epsilon",
                   "average_tokens_across_devices", "label_smoothing_factor", "neftune_noise_alpha", "data_seed",
                   "dataloader_drop_last", "train_sampling_strategy", "length_column_name", "greater_is_better",
                   "eval_delay", "full_determinism", "logging_strategy", "logging_first_step"}
# Fields transformers' Trainer does not read either (its example scripts do): accepted, and what rankwise does.
NOTES = {
    "do_train": "Accepted as transformers accepts it (its Trainer does not read it): `rankwise train` trains.",
    "do_eval": "Accepted as transformers accepts it (its Trainer does not read it): evaluations follow "
               "--eval_strategy.",
}
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch")  # rankwise's guarded AdamW (fused where the device has it)
TRANSFORMERS_DOC = "https://huggingface.co/docs/transformers/main_classes/trainer#transformers.TrainingArguments"


def _flag_type(tp) -> type:
    """The type a flag's text converts to: the field's bool/int/float/str, or str for a union of several or an
    enum (its value's text; dicts and lists are given as JSON or YAML text)."""
    if isinstance(tp, str):
        return str
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else str
    return tp if tp in (bool, int, float, str) else str


def _default(f: dataclasses.Field) -> Any:
    if f.default is dataclasses.MISSING:
        return None  # a factory's list or dict: transformers' own default applies when the flag is not given
    return f.default.value if isinstance(f.default, enum.Enum) else f.default


def trainer_part(owned: set[str]) -> type:
    """The dataclass of TrainingArguments' fields that no rankwise option part holds (`owned`)."""
    fields = []
    for f in dataclasses.fields(TrainingArguments):
        if f.name in owned or not f.init:
            continue
        kind = _flag_type(f.type)
        default = _default(f)
        hint = f"transformers' TrainingArguments.{f.name}"
        help_text = f"Not supported: {REFUSED[f.name]}." if f.name in REFUSED else NOTES.get(f.name) or \
            (f.metadata.get("help") or hint).strip().split("\n")[0]
        fields.append((f.name, typing.Optional[kind] if default is None else kind,
                       option(default, f"{help_text} ({hint})", "transformers")))
    part = dataclasses.make_dataclass("TrainerArguments", fields)
    part.__doc__ = ("The rest of transformers' TrainingArguments, with their names, defaults and meaning "
                    f"({TRANSFORMERS_DOC}).")
    part.__module__ = __name__
    return part


def check_trainer_options(cfg, given) -> None:
    """Refused fields (with their reason), and the values rankwise reads itself. `given(name)`: set by the run."""
    for name, reason in REFUSED.items():
        if hasattr(cfg, name) and given(name):
            raise ConfigError(name, f"is not used by rankwise: {reason}", f"Drop --{name}")
    if cfg.optim not in OPTIMIZERS:
        raise ConfigError("optim", f"`{cfg.optim}`: rankwise trains with AdamW and its divergence guard (a step "
                          "with non-finite gradients is skipped on the device)", f"Use --optim {OPTIMIZERS[0]} "
                          f"(the default; {OPTIMIZERS[1]} is the same AdamW, fused where the device has it)")
    for name in ("adam_beta1", "adam_beta2"):
        value = getattr(cfg, name)
        if not 0 <= value < 1:
            raise ConfigError(name, f"must be in [0, 1), got {value:g}")
    if not cfg.adam_epsilon > 0:
        raise ConfigError("adam_epsilon", f"must be positive, got {cfg.adam_epsilon:g}")
    if cfg.warmup_steps < 0 or (0 < cfg.warmup_steps < 1 and given("warmup_ratio")):
        raise ConfigError("warmup_steps", f"({cfg.warmup_steps:g}) " + ("must be >= 0" if cfg.warmup_steps < 0 else
                          "and --warmup_ratio both give the warm-up as a fraction"), "Give one of them")
    require(not cfg.do_predict, "do_predict", "`rankwise train` does not predict",
            "Run `rankwise predict RUN_DIR --input FILE` on the finished run")
    if cfg.save_only_model and str(cfg.resume_from_checkpoint).lower() not in ("none", "false", "no"):
        raise ConfigError("save_only_model", "writes checkpoints without the optimiser, scheduler and random states "
                          "that --resume_from_checkpoint needs", "Drop --save_only_model to resume")


def warmup_steps(cfg, total_steps: int) -> int:
    """Warm-up steps as transformers computes them: --warmup_steps (a fraction of the steps when below 1), else
    ceil(total steps × --warmup_ratio)."""
    if cfg.warmup_steps > 0:
        return int(cfg.warmup_steps) if cfg.warmup_steps >= 1 else math.ceil(total_steps * cfg.warmup_steps)
    return math.ceil(total_steps * cfg.warmup_ratio)


def passed_options(cfg, part: type) -> dict[str, Any]:
    """The TrainerArguments values a run sets (not their defaults), as TrainingArguments takes them: text given for
    a dict or list field parsed as JSON (or YAML)."""
    declared = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    passed = {}
    for f in dataclasses.fields(part):
        value = getattr(cfg, f.name)
        if value == f.default or f.name in REFUSED or f.name in ("optim", "adam_beta1", "adam_beta2", "adam_epsilon",
                                                                  "warmup_steps"):
            continue
        if isinstance(value, str) and _takes_structure(declared[f.name].type):
            value = _structure(f.name, value)
        passed[f.name] = value
    return passed


def _takes_structure(tp) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return any(typing.get_origin(a) in (dict, list) or a in (dict, list) for a in args)


def _structure(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(name, f"`{text}` is neither JSON nor YAML ({' '.join(str(exc).split())})") from None
