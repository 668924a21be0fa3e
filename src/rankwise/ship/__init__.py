"""Ship a finished run, and use what was shipped.

    source.py    what --model / --adapter point at (a run, its weights, an export, any model) and loading it
    export.py    `rankwise export`: a run at its hard ranks as a compact, peft or merged artifact
    card.py      the model card (README.md) every export carries: which weights, their metrics, how to load
    evaluate.py  `rankwise evaluate`: a source's dev-set metrics, as training computes them
    predict.py   `rankwise predict`: labels or scores for a file of inputs (read by rankwise/data/inputs.py)
"""

from __future__ import annotations

from .evaluate import evaluate_source
from .export import FORMATS, check_format, check_out, export_run, merge_adapter
from .predict import check_prediction_out, predict, write_predictions
from .source import (EXPORT_FILE, FinishedRun, Source, check_source_fits_task, load_base, load_source,
                     open_finished_run, resolve_task)

__all__ = ["FORMATS", "EXPORT_FILE", "FinishedRun", "open_finished_run", "check_format", "check_out", "export_run",
           "load_base", "merge_adapter", "Source", "load_source", "resolve_task", "check_source_fits_task",
           "evaluate_source", "check_prediction_out", "predict", "write_predictions"]
