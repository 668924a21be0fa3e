"""Sequence classification and regression tasks (GLUE's, and your own data's) prepared for training: a model
with a new head, encoded data, a collator and an evaluator (`PreparedTask`, data/task.py; `prepare_task` picks the
preparation a run's task needs)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorWithPadding

from ..devices import HostBatches
from ..models import head_modules, load_classifier, load_tokenizer
from . import encode_classification
from .files import load_text_data, text_main_metric, text_metrics
from .glue import TASKS as GLUE_TASKS
from .glue import compute_metrics, load_glue
from .task import PreparedTask, max_seq_length_for, truncate


def example_losses(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """The loss of each example (n,) as sequence-classification models compute it: squared error of the one score
    for regression, cross-entropy otherwise. Their mean is the model's `outputs.loss`."""
    if regression:
        return (logits.squeeze(-1) - labels.to(logits.dtype)) ** 2
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none")


def prepare_classification(cfg) -> PreparedTask:
    """A GLUE task: its TSV files (or the hub), its labels and metrics."""
    task = GLUE_TASKS[cfg.task]
    data = load_glue(cfg.task, cfg.data_dir)
    return _sequence_classification(
        cfg, data.train, data.evals, num_labels=task.num_labels, label_names=None,  # exports name GLUE's labels
        metrics=lambda preds, gold: compute_metrics(cfg.task, preds, gold), main_metric=task.main_metric,
        info={"data_source": data.source})


def prepare_text(cfg) -> PreparedTask:
    """Your own data (`--task text`): files or a datasets dataset (data/files.py), label names kept."""
    data = load_text_data(cfg)
    evals = dict(data.evals)
    if data.test is not None:
        evals["test"] = data.test
    return _sequence_classification(
        cfg, data.train, evals, num_labels=data.num_labels, label_names=data.label_names,
        metrics=lambda preds, gold: text_metrics(preds, gold, data.num_labels),
        main_metric=text_main_metric(data.num_labels),
        info={"data_source": data.source, "columns": data.columns, "label_names": data.label_names,
              "problem_type": "regression" if data.regression else "single_label_classification",
              "problem_type_reason": data.problem_reason})


def _sequence_classification(cfg, train_examples, eval_examples: dict, num_labels: int, label_names, metrics,
                             main_metric: str, info: dict) -> PreparedTask:
    """A sequence-classification (or regression: num_labels 1) task on `cfg.model` with a new head."""
    regression = num_labels == 1
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(cfg.seed)  # the new head's initialisation
    model = load_classifier(cfg.model, num_labels, regression)
    if label_names is not None:  # pipelines and exports print the names
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {name: i for i, name in enumerate(label_names)}
    max_length = max_seq_length_for(cfg, model)
    train = encode_classification(truncate(train_examples, cfg.max_train_samples), tokenizer, max_length, regression)
    evals = {split: encode_classification(truncate(examples, cfg.max_eval_samples), tokenizer, max_length,
                                          regression)
             for split, examples in eval_examples.items()}

    @torch.no_grad()
    def evaluate(model: nn.Module, loaders: dict, accelerator, accumulation_steps: int | None = None
                 ) -> dict[str, float]:
        model.eval()
        out: dict[str, float] = {}
        for split, loader in loaders.items():
            held = HostBatches(accumulation_steps)
            for batch in loader:
                logits = model(**batch).logits
                # Per example (the model's loss is a batch mean): the padding duplicates a process adds to an
                # uneven last batch are then dropped by gather_for_metrics, loss included.
                loss = example_losses(logits.float(), batch["labels"], regression)
                logits, gold, loss = accelerator.gather_for_metrics((logits, batch["labels"], loss))
                held.add(loss.float(), logits.squeeze(-1).float() if regression else logits.argmax(-1), gold)
            losses, predictions, labels = held.result(3)
            preds, gold = predictions.numpy(), labels.numpy()
            out[f"{split}_loss"] = float(losses.mean())
            for name, value in metrics(preds, gold.astype(np.float64 if regression else np.int64)).items():
                out[f"{split}_{name}"] = value
        return out

    collate = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_length) \
        if cfg.pad_to_max_length else DataCollatorWithPadding(tokenizer)  # --pad_to_max_length, else to the longest
    return PreparedTask(
        model=model, tokenizer=tokenizer, train_features=train, eval_sets=evals, collate=collate, evaluate=evaluate,
        main_metric=f"eval_{main_metric}", greater_is_better=True,
        head_modules=head_modules(model), peft_task_type="SEQ_CLS",
        info={**info, "train_examples": len(train), "eval_examples": {k: len(v) for k, v in evals.items()},
              "max_seq_length": max_length})
