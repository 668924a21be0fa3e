"""`rankwise predict`: labels (or STS-B scores) for a file of inputs, from a source resolved and loaded by
ship/source.py. Inputs are read and checked by rankwise/data/inputs.py before the model is loaded.

Predictions name their labels as the model's config does (`id2label`): a GLUE task's names (CoLA's `unacceptable` /
`acceptable`, ...) or your own data's, in `prediction` and as the keys of `probabilities`, with the output index
beside them (`label_id`). Only GLUE's submission file (`.tsv`) writes the task's own label values (CoLA `0`/`1`, RTE
`entailment`/`not_entailment`), as the GLUE server reads them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from ..data import GLUE_TASKS
from ..data.inputs import Inputs
from ..errors import ConfigError
from ..models import check_max_seq_length, load_tokenizer
from ..runs.rundir import check_writable_path, write_text_atomic
from .source import Source, task_head

PREDICTION_SUFFIXES = (".jsonl", ".csv", ".tsv")


def check_prediction_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in PREDICTION_SUFFIXES:
        raise ConfigError("out", f"`{out}` must end in .jsonl (one JSON object per input), .csv (one row per input: "
                          "index, text, prediction, label_id, a probability per label) or .tsv (GLUE submission "
                          "layout: index, prediction)")
    if out.is_dir():
        raise ConfigError("out", f"`{out}` is a directory", "Give a file name ending in .jsonl, .csv or .tsv")
    return check_writable_path(out, "--out")


@torch.no_grad()
def predict(source: Source, task_name: str, inputs: Inputs, max_seq_length: int | None = None,
            batch_size: int | None = None, quiet: bool = False) -> list[dict]:
    """One record per input: `prediction` (label name, or score for regression) and, for classification, its
    output index `label_id` and `probabilities` keyed by label name."""
    tokenizer = load_tokenizer(source.model_name())
    model, _ = source.load(task_name)
    labels, regression = _labels(task_name, model, source)
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
                record["label_id"] = int(row.argmax())
                record["probabilities"] = {label: float(p) for label, p in zip(labels, probabilities)}
            records.append(record)
    return records


def _labels(task_name: str, model, source: Source | None = None) -> tuple[list[str], bool]:
    """(label names, regression): for a GLUE task the names its run recorded, else GLUE's (source.GLUE_LABEL_NAMES,
    as the exports' id2label); for your own data the names the model carries (set from the training labels when it
    was trained, and in every export)."""
    if task_name in GLUE_TASKS:
        head = task_head(task_name, source.data if source is not None else None)
        return list(head.label_names or ()), head.label_names is None
    config = getattr(model, "config", None)
    num_labels = int(getattr(config, "num_labels", 1))
    names = getattr(config, "id2label", None) or {}
    return [str(names.get(i, i)) for i in range(num_labels)], num_labels == 1


def write_predictions(out: Path, records: list[dict], task_name: str | None = None) -> None:
    """`.jsonl`: the records; `.csv`: one row per record (index, the text fields, prediction, label_id and
    `probability_<label>` per label); `.tsv`: `index<TAB>prediction` (the GLUE submission layout: for a GLUE task
    the task's own label values, e.g. CoLA's 0/1, by `label_id`). Atomic."""
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".tsv":
        raw = GLUE_TASKS[task_name].labels if task_name in GLUE_TASKS else None
        body = "index\tprediction\n" + "".join(
            f"{r['index']}\t{raw[r['label_id']] if raw and 'label_id' in r else r['prediction']}\n" for r in records)
    elif suffix == ".csv":
        body = _csv(records)
    else:
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    write_text_atomic(out, body)


def _csv(records: list[dict]) -> str:
    """The records as CSV (pandas.read_csv reads it back): probabilities flattened to `probability_<label>`."""
    rows = []
    for record in records:
        row = {k: v for k, v in record.items() if k != "probabilities"}
        row.update({f"probability_{label}": p for label, p in (record.get("probabilities") or {}).items()})
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


__all__ = ["PREDICTION_SUFFIXES", "check_prediction_out", "predict", "write_predictions"]
