"""`rankwise predict`: labels (or STS-B scores) for a file of inputs, from a source resolved and loaded by
ship/source.py. Inputs are read and checked by rankwise/data/inputs.py before the model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from ..data import GLUE_TASKS
from ..data.inputs import Inputs
from ..errors import ConfigError
from ..models import check_max_seq_length, load_tokenizer
from ..rundir import check_writable_path, write_text_atomic
from .source import Source

PREDICTION_SUFFIXES = (".jsonl", ".tsv")


def check_prediction_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in PREDICTION_SUFFIXES:
        raise ConfigError("out", f"`{out}` must end in .jsonl (one JSON object per input) or .tsv (GLUE "
                          "submission layout: index, prediction)")
    if out.is_dir():
        raise ConfigError("out", f"`{out}` is a directory", "Give a file name ending in .jsonl or .tsv")
    return check_writable_path(out, "--out")


@torch.no_grad()
def predict(source: Source, task_name: str, inputs: Inputs, max_seq_length: int | None = None,
            batch_size: int | None = None, quiet: bool = False) -> list[dict]:
    """One record per input: `prediction` (label name, or score for regression), and per-label
    `probabilities` for classification."""
    tokenizer = load_tokenizer(source.model_name())
    model, _ = source.load(task_name)
    labels, regression = _labels(task_name, model)
    check_max_seq_length(max_seq_length, model, model_name=source.model_name())  # a chosen length must fit
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = model.to(device)
    collate = DataCollatorWithPadding(tokenizer)
    max_length = max_seq_length or source.training.get("max_seq_length") or 128
    batch_size = batch_size or source.training.get("per_device_eval_batch_size") or 64
    records = []
    for start in tqdm(range(0, len(inputs.texts), batch_size), desc="predict", disable=quiet, leave=False,
                      dynamic_ncols=True):
        chunk = inputs.texts[start:start + batch_size]
        encoded = tokenizer(*[list(column) for column in zip(*chunk)], truncation=True, max_length=max_length)
        batch = collate([{k: encoded[k][i] for k in encoded} for i in range(len(chunk))])
        pinned = device.type == "cuda"  # pinned host memory copies to the GPU without blocking
        logits = model(**{k: (v.pin_memory() if pinned else v).to(device, non_blocking=pinned)
                          for k, v in batch.items()}).logits.float().cpu()
        for offset, row in enumerate(logits):
            index = start + offset
            record = {"index": inputs.ids[index], **dict(zip(inputs.columns, inputs.texts[index]))}
            if regression:
                record["prediction"] = float(row[0])
            else:
                probabilities = torch.softmax(row, dim=-1)
                record["prediction"] = labels[int(row.argmax())]
                record["probabilities"] = {label: float(p) for label, p in zip(labels, probabilities)}
            records.append(record)
    return records


def _labels(task_name: str, model) -> tuple[list[str], bool]:
    """(label names, regression): GLUE's for its tasks; for your own data the names the model carries (set from
    the training labels when it was trained, and in every export)."""
    if task_name in GLUE_TASKS:
        task = GLUE_TASKS[task_name]
        return list(task.labels or ()), task.is_regression
    config = getattr(model, "config", None)
    num_labels = int(getattr(config, "num_labels", 1))
    names = getattr(config, "id2label", None) or {}
    return [str(names.get(i, i)) for i in range(num_labels)], num_labels == 1


def write_predictions(out: Path, records: list[dict]) -> None:
    """`.jsonl`: the records; `.tsv`: `index<TAB>prediction` (the GLUE submission layout). Atomic."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".tsv":
        body = "index\tprediction\n" + "".join(f"{r['index']}\t{r['prediction']}\n" for r in records)
    else:
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_text_atomic(out, body)


__all__ = ["PREDICTION_SUFFIXES", "check_prediction_out", "predict", "write_predictions"]
