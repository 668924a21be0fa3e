"""The run configuration: one flat `RunConfig` composed of the option dataclasses its owners declare.

    ModelArguments      config/model.py        the model, its adapter method and allocation strategy
    DataArguments       data/options.py        the task and its data (+ TextDataOptions, InstructDataOptions, ...)
    TrainingOptions     config/training.py     training, checkpoints, evaluation, precision, logging
    each method's       methods/<method>.py    e.g. AdaLoraOptions, EvaOptions, DropoutOption
    each strategy's     allocation/<name>.py   e.g. LearnedOptions, GradientOptions (shared: allocation/options.py)

Every field is a `--flag` of `rankwise train`, a key of a config file and of config.json, as before the parts existed
(its order too). An option applies to a run when a part the run selects holds it: the model, data and training parts
always, the method's parts, the parts of the strategy the run uses (its method's own for AdaLoRA and full
fine-tuning) and the task's data part (`selected_parts`). An option set for a run that would ignore it is refused,
naming who reads it (`check_applicable`); sweeps drop such options per run instead.

`validate` checks everything that can be checked without loading a model (each part's checks live with the part);
checks that need the model (budget feasibility, custom ranks vs. layers) raise ConfigError from the strategies,
still before anything is written. Parsing (flags, config files, exact value types) is `config/parse.py`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from pathlib import Path
from typing import Any

from ..allocation import get_strategy, registered, strategy_for
from ..data.options import DataArguments, task_options
from ..data.structured import read_structured_file
from ..errors import ConfigError
from ..methods import METHODS, get_method
from ..options import parse_bool, parse_float, parse_int, require, require_file
from .model import ModelArguments
from .training import DEFAULT_CLS_LR, LR_SCHEDULER_ALIASES, TrainingOptions

BASE_PARTS = (ModelArguments, DataArguments, TrainingOptions)


def _all_parts() -> list[type]:
    parts = list(BASE_PARTS)
    owners = [get_method(m).options for m in METHODS] + [s.options for s in registered()] + [task_options(None)]
    for group in owners:
        parts += [p for p in group if p not in parts]
    return parts


PARTS = _all_parts()
OWNER: dict[str, type] = {f.name: part for part in PARTS for f in dataclasses.fields(part)}
# The flat field order of config.json and --help from before the parts (new options follow their part's order).
_ORDER = ("model", "method", "target_modules", "lora_alpha", "alpha_policy", "lora_dropout", "init", "eva_rho",
          "adalora_init_r", "adalora_target_r", "adalora_tinit", "adalora_tfinal", "adalora_deltaT", "adalora_beta1",
          "adalora_beta2", "adalora_orth_reg_weight", "allocation", "rank", "rank_first", "rank_last",
          "rank_attention", "rank_mlp", "rank_file", "match_budget", "budget", "rank_min", "rank_max",
          "allocation_batches", "allocation_head_steps", "gradient_normalize", "rank_average", "memory_start",
          "memory_end", "epochs_memory_start", "epochs_memory_start_to_end", "epochs_rank_discrete", "alpha_min",
          "alpha_max", "alpha_scheduler", "tau", "rank_allocation_lr", "rank_allocation_weights_init", "budget_mode",
          "rounding", "rank_annealing", "learned_scale", "rank_start", "alpha_schedule_span",
          "rank_allocation_weight_decay", "resample_layer_ranks", "freeze_head", "prompt_format", "loss_on",
          "instruct_split", "task", "data_dir", "train_file", "validation_file", "test_file", "dataset",
          "dataset_config", "text_column", "text_pair_column", "label_column", "problem_type", "validation_split",
          "max_seq_length", "pad_to_max_length", "max_train_samples", "max_eval_samples", "eval_size",
          "num_generations", "label", "output_dir", "overwrite_output_dir", "num_train_epochs",
          "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate",
          "cls_learning_rate", "weight_decay", "lr_scheduler", "warmup_ratio", "max_grad_norm", "seed",
          "logging_steps", "max_bad_steps", "save_model", "max_steps", "eval_strategy", "eval_steps", "save_strategy",
          "save_steps", "save_total_limit", "keep_checkpoints", "resume_from_checkpoint", "load_best_model_at_end",
          "metric_for_best_model", "early_stopping_patience", "bf16", "fp16", "tf32", "gradient_checkpointing",
          "dataloader_num_workers", "torch_compile", "torch_compile_backend", "torch_compile_mode", "push_to_hub",
          "hub_model_id", "report_to", "quiet")


def _composed_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    declared = {f.name: f for part in PARTS for f in dataclasses.fields(part)}
    order = [n for n in _ORDER if n in declared] + [n for n in declared if n not in _ORDER]
    return [(n, declared[n].type, dataclasses.field(default=declared[n].default, metadata=declared[n].metadata))
            for n in order]


def _is_instruct(self) -> bool:
    return self.task == "alpaca"


def _to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


RunConfig = dataclasses.make_dataclass(
    "RunConfig", _composed_fields(),
    namespace={"is_instruct": property(_is_instruct), "to_dict": _to_dict,
               "__doc__": "Everything one training run needs, flat: the fields of the option parts (see the module "
                          "docstring). Field names follow transformers' `TrainingArguments` and the adaptive LoRA-XS "
                          "study's flags, so existing command lines read naturally."})
RunConfig.__module__ = __name__  # make_dataclass's `module` argument is Python 3.12's
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


# ---------------------------------------------------------------------------------------------
# Which options a run reads
# ---------------------------------------------------------------------------------------------

def _method(name):
    return get_method(name) if name in METHODS else None


def _strategy(method, allocation):
    try:
        return strategy_for(method, allocation)
    except ConfigError:  # an unknown allocation: `validate` reports it with the choices
        return None


def selected_parts(allocation: str, method: str, task: str | None = None) -> set[type]:
    """The option parts a run with this allocation, method and task reads (task None: every data part counts)."""
    m = _method(method)
    strategy = _strategy(m, allocation)
    return {*BASE_PARTS, *(m.options if m else ()), *(strategy.options if strategy else ()), *task_options(task)}


def applies(field: str, allocation: str, method: str, task: str | None = None) -> bool:
    """Whether option `field` means anything for a run with this allocation and method (and task, when given:
    without it, task-dependent data options count as applying)."""
    return OWNER[field] in selected_parts(allocation, method, task)


def _readers(field: str) -> tuple[list[str], list[str]]:
    """(strategies offered as --allocation, methods) that read `field`, directly or through their own strategy."""
    part = OWNER[field]
    strategies = [s.name for s in registered() if s.selectable and part in s.options]
    methods = [m for m in METHODS if part in get_method(m).options or (
        get_method(m).own_strategy and part in get_strategy(get_method(m).own_strategy).options)]
    return strategies, methods


def _or(names: list[str], flag: str) -> str:
    """`--flag a`, `--flag a or b`, `--flag a, b or c`."""
    return f"--{flag} " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1])


def _not_applicable(cfg, name: str) -> tuple[str, str]:
    """(problem, fix) for option `name`, set for a run that would not read it."""
    part = OWNER[name]
    if part in task_options(None):
        return _data_refusal(cfg, name)
    method = get_method(cfg.method)
    if part in [p for m in METHODS for p in get_method(m).options]:
        readers = [m for m in METHODS if part in get_method(m).options and get_method(m).trains_adapter]
        if getattr(part, "scope", None):
            return (f"applies to {part.scope} ({_or(readers, 'method')}), but --method is `{cfg.method}`",
                    f"Drop --{name}")
        return (f"only applies to {_or(readers, 'method')}, but --method is `{cfg.method}`",
                f"Drop --{name}, or use {_or(readers, 'method')}")
    if method.own_strategy:
        return method.own_strategy_refusal(name)
    said = get_strategy(cfg.allocation).why_not(name, cfg)
    if said is not None:
        return said
    strategies, methods = _readers(name)
    extra = "".join(f" (or --method {m})" for m in methods if get_method(m).own_strategy)
    return (f"only applies to {_or(strategies, 'allocation')}{extra}, but --allocation is `{cfg.allocation}`",
            f"Drop --{name}, or use {_or(strategies, 'allocation')}")


def _data_refusal(cfg, name: str) -> tuple[str, str]:
    if OWNER[name].__name__ == "InstructDataOptions":
        return f"only applies to --task alpaca, not to GLUE task `{cfg.task}`", f"Drop --{name}"
    return (f"is not read by GLUE task `{cfg.task}`, which reads --data_dir DIR/<Task>/train.tsv and dev.tsv "
            "(or the Hugging Face hub)", f"To train on your own files, drop --task (or use --task text) and give "
            f"--train_file with --text_column/--label_column; else drop --{name}")


def user_set(cfg, name: str) -> bool:
    """Whether field `name` holds a value someone chose: neither the field's default nor the value
    `resolve_defaults` fills in for it. So a config resolved twice, or read back from config.json, passes the
    same checks as the one first given."""
    value, default = getattr(cfg, name), FIELDS[name].default
    if value == default:
        return False
    return value != getattr(resolve_defaults(dataclasses.replace(cfg, **{name: default})), name)


def check_applicable(cfg) -> None:
    """Refuse an option set for a run that would ignore it (another experiment would run than the one asked
    for). Sweeps drop such base/grid options per run before this (`sweep.point_values`)."""
    method = get_method(cfg.method)
    if method.own_strategy and user_set(cfg, "allocation"):
        raise ConfigError("allocation", *method.own_strategy_refusal("allocation"))
    selected = selected_parts(cfg.allocation, cfg.method, cfg.task)
    for name in FIELDS:
        if OWNER[name] not in selected and user_set(cfg, name):
            raise ConfigError(name, *_not_applicable(cfg, name))


# ---------------------------------------------------------------------------------------------
# Resolution and validation
# ---------------------------------------------------------------------------------------------

def default_max_seq_length(task: str) -> int:
    """--max_seq_length when none is given (a model with fewer positions caps it: `models.check_max_seq_length`)."""
    return 512 if task == "alpaca" else 128


def resolve_defaults(cfg):
    """Fill method-, strategy- and task-dependent defaults, returning a new config (the one written to
    config.json)."""
    c = dataclasses.replace(cfg)
    c.lr_scheduler = LR_SCHEDULER_ALIASES.get(c.lr_scheduler, c.lr_scheduler)
    if c.task is None:  # your own data when you give some, else the GLUE task the README starts with
        c.task = "text" if c.train_file is not None or c.dataset is not None else "cola"
    if c.model is None:
        c.model = "smollm2-135m" if c.is_instruct else "minilm"
    method = _method(c.method)  # an unknown one is reported by `validate`, with the choices
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
    strategy = _strategy(method, c.allocation) if method else None
    if strategy is not None:
        strategy.resolve(c)
    if c.epochs_rank_discrete is None:
        c.epochs_rank_discrete = 0
    if method:
        method.resolve(c)
    return c


def _check_values(cfg) -> None:
    """Every number finite, every choice one of its values."""
    for name, value in cfg.to_dict().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(name, f"is {value}", "Give a finite number")
        choices = FIELDS[name].metadata.get("choices")
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"Did you mean `{close[0]}`? " if close else ""
            raise ConfigError(name, f"unknown value `{value}`", f"{hint}Choose one of: {', '.join(choices)}")


def validate(cfg) -> None:
    """Raise `ConfigError` for the first problem found. Call on a resolved config."""
    from ..data import known_tasks

    _check_values(cfg)
    tasks = known_tasks()
    if cfg.task not in tasks:
        close = difflib.get_close_matches(cfg.task, tasks, n=1)
        hint = f"Did you mean `{close[0]}`? " if close else ""
        raise ConfigError("task", f"unknown task `{cfg.task}`", f"{hint}Choose one of: {', '.join(tasks)}")
    check_applicable(cfg)
    validate_model(cfg)
    validate_data(cfg)
    validate_training(cfg)
    method = get_method(cfg.method)
    method.validate(cfg)  # its init, allocation and own options
    strategy_for(method, cfg.allocation).validate(cfg, lambda name: user_set(cfg, name))


def prepare(cfg):
    """Resolve defaults and validate: the config every command runs with."""
    resolved = resolve_defaults(cfg)
    validate(resolved)
    return resolved


from .checks import MAX_LORA_ALPHA, SEED_LIMIT, task_metrics, validate_data, validate_model, validate_training  # noqa: E402
from .parse import (FIELD_TYPES, add_config_arguments, config_from_args, config_from_dict,  # noqa: E402
                    load_config_file)

__all__ = ["RunConfig", "FIELDS", "FIELD_TYPES", "OWNER", "PARTS", "applies", "selected_parts", "check_applicable",
           "user_set", "resolve_defaults", "validate", "prepare", "default_max_seq_length", "task_metrics",
           "config_from_dict", "config_from_args", "add_config_arguments", "load_config_file", "read_structured_file",
           "parse_bool", "parse_int", "parse_float", "require", "require_file", "SEED_LIMIT", "MAX_LORA_ALPHA",
           "DEFAULT_CLS_LR"]
