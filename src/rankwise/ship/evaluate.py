"""`rankwise evaluate`: a source's dev-set metrics, computed by the task's own evaluation exactly as training
evaluates. The source (a run, its adapter, an export, or any model) is resolved and loaded by ship/source.py."""

from __future__ import annotations

import os
from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import RunConfig, prepare
from ..data.prepare import prepare_task
from .source import Source


def evaluate_source(source: Source, task_name: str, data_dir: str | None = None, max_eval_samples: int | None = None,
                    max_seq_length: int | None = None, batch_size: int | None = None, quiet: bool = False) -> dict:
    """The task's dev-set metrics for `source`, computed by the task's own evaluation (as during training).
    Data settings default to those the run was trained with. Returns {"metrics": ..., "settings": ...}."""
    trained = source.training
    data_dir = data_dir or os.environ.get("RANKWISE_DATA_DIR") or (
        trained.get("data_dir") if trained.get("data_dir") and Path(trained["data_dir"]).is_dir() else None)
    cfg = prepare(RunConfig(
        task=task_name, model=source.model_name(), data_dir=data_dir, max_train_samples=1,
        max_eval_samples=max_eval_samples if max_eval_samples is not None else trained.get("max_eval_samples"),
        max_seq_length=max_seq_length or trained.get("max_seq_length"),
        per_device_eval_batch_size=batch_size or trained.get("per_device_eval_batch_size") or 64,
        quiet=quiet, **_data_options(task_name, trained)))
    task = prepare_task(cfg)  # reads the data and loads the base (or full) model
    model, _ = source.load(task_name, model=task.model.eval())
    accelerator = Accelerator()
    model = model.to(accelerator.device)
    loaders = {split: tqdm(accelerator.prepare(DataLoader(features, batch_size=cfg.per_device_eval_batch_size,
                                                          collate_fn=task.collate,
                                                          pin_memory=accelerator.device.type == "cuda")),
                           desc=f"evaluate {split}", disable=quiet, leave=False, dynamic_ncols=True)
               for split, features in task.eval_sets.items()}
    metrics = task.evaluate(model, loaders, accelerator)
    return {"metrics": metrics, "main_metric": task.main_metric,
            "settings": {"task": task_name, "source": str(source.path), "kind": source.kind,
                         "base_model": source.base_model, "data_source": task.info.get("data_source"),
                         "eval_examples": task.info.get("eval_examples"), "max_seq_length": cfg.max_seq_length,
                         "max_eval_samples": cfg.max_eval_samples, "batch_size": cfg.per_device_eval_batch_size}}


__all__ = ["evaluate_source"]


def _data_options(task_name: str, trained: dict) -> dict:
    """The training config's data options the evaluation re-reads: Alpaca's file and split, or your own data's
    files, dataset, columns and split (the same held-out examples as in training)."""
    if task_name != trained.get("task"):
        return {}
    if task_name == "alpaca":
        return {"train_file": trained.get("train_file"), "eval_size": trained.get("eval_size", 200)}
    if task_name == "text":
        names = ("train_file", "validation_file", "test_file", "dataset", "dataset_config", "text_column",
                 "text_pair_column", "label_column", "problem_type", "validation_split")
        return {name: trained[name] for name in names if trained.get(name) is not None}
    return {}
