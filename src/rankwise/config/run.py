"""RunConfig composed from the option parts (see the package docstring): one flat dataclass whose fields keep the order
config.json and --help always had."""


from __future__ import annotations

import dataclasses
from typing import Any

from ..allocation import registered
from ..data.options import DataArguments, task_options
from ..methods import METHODS, get_method
from .model import ModelArguments
from .trainer import trainer_part
from .training import TrainingOptions

BASE_PARTS = (ModelArguments, DataArguments, TrainingOptions)


def _all_parts() -> list[type]:
    parts = list(BASE_PARTS)
    owners = [get_method(m).options for m in METHODS] + [s.options for s in registered()] + [task_options(None)]
    for group in owners:
        parts += [p for p in group if p not in parts]
    return parts


def _rankwise_names(parts: list[type]) -> set[str]:
    return {f.name for part in parts for f in dataclasses.fields(part)} | {"lr_scheduler_type"}  # an alias of ours


TrainerArguments = trainer_part(_rankwise_names(_all_parts()))
PARTS = [*_all_parts(), TrainerArguments]
BASE_PARTS = (*BASE_PARTS, TrainerArguments)
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


