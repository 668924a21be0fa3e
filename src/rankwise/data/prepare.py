"""`prepare_task(cfg)`: the preparation a run's task needs (GLUE or your own data: data/classification.py;
instruction tuning: data/instruct.py). It loads data and model, everything that can fail on bad input, before any
file is written."""

from __future__ import annotations

from .classification import prepare_classification, prepare_text
from .glue import TASKS as GLUE_TASKS
from .instruct import prepare_instruct
from .task import PreparedTask


def prepare_task(cfg) -> PreparedTask:
    if cfg.task in GLUE_TASKS:
        return prepare_classification(cfg)
    if cfg.task == "text":
        return prepare_text(cfg)
    return prepare_instruct(cfg)  # causal-LM instruction tuning
