"""What a task hands the trainer: a model with its head, encoded data, a collator and an evaluator.

`prepare_task(cfg)` loads data and model (everything that can fail on bad input) before any file
is written. GLUE tasks are sequence classification/regression; instruction tuning lives in
`data/instruct.py` and plugs in through the same `PreparedTask` (data/task.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorWithPadding

from .data import GLUE_TASKS, compute_metrics, encode_classification, load_glue
from .data.instruct import prepare_instruct
from .data.task import PreparedTask, max_seq_length_for, truncate
from .models import head_modules, load_classifier, load_tokenizer


def example_losses(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """The loss of each example (n,) as sequence-classification models compute it: squared error of the one score
    for regression, cross-entropy otherwise. Their mean is the model's `outputs.loss`."""
    if regression:
        return (logits.squeeze(-1) - labels.to(logits.dtype)) ** 2
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none")


def prepare_classification(cfg) -> PreparedTask:
    task = GLUE_TASKS[cfg.task]
    data = load_glue(cfg.task, cfg.data_dir)
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(cfg.seed)  # the new head's initialisation
    model = load_classifier(cfg.model, task.num_labels, task.is_regression)
    max_length = max_seq_length_for(cfg, model)
    train = encode_classification(truncate(data.train, cfg.max_train_samples), tokenizer, max_length,
                                  task.is_regression)
    evals = {split: encode_classification(truncate(examples, cfg.max_eval_samples), tokenizer, max_length,
                                          task.is_regression)
             for split, examples in data.evals.items()}

    @torch.no_grad()
    def evaluate(model: nn.Module, loaders: dict, accelerator) -> dict[str, float]:
        model.eval()
        out: dict[str, float] = {}
        for split, loader in loaders.items():
            losses, predictions, labels = [], [], []
            for batch in loader:
                logits = model(**batch).logits
                # Per example (the model's loss is a batch mean): the padding duplicates a process adds to an
                # uneven last batch are then dropped by gather_for_metrics, loss included.
                loss = example_losses(logits.float(), batch["labels"], task.is_regression)
                logits, gold, loss = accelerator.gather_for_metrics((logits, batch["labels"], loss))
                losses.append(loss.float().cpu())
                predictions.append(logits.squeeze(-1) if task.is_regression else logits.argmax(-1))
                labels.append(gold)
            preds = torch.cat(predictions).float().cpu().numpy() if task.is_regression else \
                torch.cat(predictions).cpu().numpy()
            gold = torch.cat(labels).cpu().numpy()
            out[f"{split}_loss"] = float(torch.cat(losses).mean())
            for name, value in compute_metrics(cfg.task, preds, gold.astype(np.float64 if task.is_regression
                                                                           else np.int64)).items():
                out[f"{split}_{name}"] = value
        return out

    return PreparedTask(
        model=model, tokenizer=tokenizer, train_features=train, eval_sets=evals,
        collate=DataCollatorWithPadding(tokenizer), evaluate=evaluate,
        main_metric=f"eval_{task.main_metric}", greater_is_better=True,
        head_modules=head_modules(model), peft_task_type="SEQ_CLS",
        info={"data_source": data.source, "train_examples": len(train),
              "eval_examples": {k: len(v) for k, v in evals.items()}, "max_seq_length": max_length})


def prepare_task(cfg) -> PreparedTask:
    if cfg.task in GLUE_TASKS:
        return prepare_classification(cfg)
    return prepare_instruct(cfg)  # causal-LM instruction tuning
