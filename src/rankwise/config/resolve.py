"""Which options a run reads (`selected_parts`, `applies`, `check_applicable`), its defaults (`resolve_defaults`) and
its checks (`validate`, `prepare`)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os

from ..allocation import get_strategy, registered, strategy_for
from ..data import known_tasks
from ..data.options import default_max_seq_length, task_options
from ..errors import ConfigError
from ..methods import METHODS, get_method
from .checks import validate_data, validate_model, validate_training
from .run import BASE_PARTS, FIELDS, OWNER
from .trainer import check_trainer_options
from .training import DEFAULT_CLS_LR, LR_SCHEDULER_ALIASES


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
    if isinstance(c.num_train_epochs, float) and c.num_train_epochs.is_integer():
        c.num_train_epochs = int(c.num_train_epochs)  # whole epochs stay an integer: run names do not change
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

    _check_values(cfg)
    tasks = known_tasks()
    if cfg.task not in tasks:
        close = difflib.get_close_matches(cfg.task, tasks, n=1)
        hint = f"Did you mean `{close[0]}`? " if close else ""
        raise ConfigError("task", f"unknown task `{cfg.task}`", f"{hint}Choose one of: {', '.join(tasks)}")
    check_applicable(cfg)
    check_trainer_options(cfg, lambda name: user_set(cfg, name))
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


