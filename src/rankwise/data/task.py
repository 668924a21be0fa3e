"""A prepared task: what a task hands the trainer (a model with its head, encoded data, a collator and an evaluator),
whatever the task (classification and regression in data/classification.py, instruction tuning in
data/instruct.py; data/prepare.py picks one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from .options import default_max_seq_length
from ..models import check_max_seq_length


@dataclass
class PreparedTask:
    model: nn.Module
    tokenizer: object
    train_features: list[dict]
    eval_sets: dict[str, list[dict]]  # "eval" is the one that picks the best epoch
    collate: Callable
    # (model, {split: DataLoader}, accelerator) -> {"eval_loss": ..., "eval_<metric>": ...}
    evaluate: Callable
    main_metric: str  # key in evaluate's output, e.g. "eval_matthews_correlation"
    greater_is_better: bool
    head_modules: list[str]
    peft_task_type: str | None  # "SEQ_CLS" / "CAUSAL_LM"
    info: dict = field(default_factory=dict)  # recorded in config.json (data source, sizes, ...)
    # Optional: called after training with (model, run_dir) to write extra artifacts (e.g. generations).
    finalize: Callable | None = None

    def shuffled_batches(self, batch_size: int, seed: int):
        """Training batches as plain dicts, shuffled by a generator of their own (the training order is unchanged):
        what EVA and gradient allocation measure on before training."""
        import torch
        from torch.utils.data import DataLoader

        return DataLoader(self.train_features, batch_size=batch_size, shuffle=True,
                          collate_fn=lambda rows: dict(self.collate(rows)),
                          generator=torch.Generator().manual_seed(seed))


def truncate(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def max_seq_length_for(cfg, model) -> int:
    """cfg.max_seq_length checked against the model's positions (ConfigError if a chosen length does not fit;
    the task's default is capped to the model's limit)."""
    return check_max_seq_length(cfg.max_seq_length, model, default_max_seq_length(cfg.task), cfg.model)
