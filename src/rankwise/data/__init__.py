"""Tasks and data: GLUE classification/regression (`glue.py`), your own classification/regression data (`files.py`),
instruction tuning (`instruct.py`), the input files of `rankwise predict` (`inputs.py`), the data options of a run
(`options.py`) and the structured files users give (`structured.py`). Light to import: the modules that read data
(pandas, scikit-learn) are imported by who uses them."""

from __future__ import annotations

from typing import Any

from .glue import TASKS as GLUE_TASKS
from .glue import Example, TaskData, compute_metrics, load_glue

INSTRUCT_TASKS: tuple[str, ...] = ("alpaca",)  # data/instruct.py
TEXT_TASK = "text"  # your own classification or regression data: data/files.py


def known_tasks() -> list[str]:
    return [*GLUE_TASKS, *INSTRUCT_TASKS, TEXT_TASK]


def encode_classification(examples: list[Example], tokenizer, max_length: int, regression: bool) -> list[dict[str, Any]]:
    """Tokenize (unpadded; the collator pads each batch to its longest sequence)."""
    if not examples:
        return []
    columns = list(zip(*(e.texts for e in examples)))
    encoded = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length)
    labels = [float(e.label) if regression else int(e.label) for e in examples]
    keys = list(encoded.keys())
    return [{**{k: encoded[k][i] for k in keys}, "labels": labels[i]} for i in range(len(examples))]


__all__ = ["GLUE_TASKS", "Example", "TaskData", "compute_metrics", "load_glue", "known_tasks",
           "encode_classification", "TEXT_TASK"]
