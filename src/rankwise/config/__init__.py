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

from ..data.options import default_max_seq_length
from ..data.structured import read_structured_file
from ..options import parse_bool, parse_float, parse_int, require, require_file
from .checks import MAX_LORA_ALPHA, SEED_LIMIT, task_metrics
from .parse import FIELD_TYPES, add_config_arguments, config_from_args, config_from_dict, load_config_file
from .resolve import (applies, check_applicable, prepare, resolve_defaults, selected_parts, user_set,
                      validate)
from .run import FIELDS, OWNER, PARTS, RunConfig
from .training import DEFAULT_CLS_LR

__all__ = ["RunConfig", "FIELDS", "FIELD_TYPES", "OWNER", "PARTS", "applies", "selected_parts", "check_applicable",
           "user_set", "resolve_defaults", "validate", "prepare", "default_max_seq_length", "task_metrics",
           "config_from_dict", "config_from_args", "add_config_arguments", "load_config_file", "read_structured_file",
           "parse_bool", "parse_int", "parse_float", "require", "require_file", "SEED_LIMIT", "MAX_LORA_ALPHA",
           "DEFAULT_CLS_LR"]
