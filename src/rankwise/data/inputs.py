"""Texts to predict on (`rankwise predict --input`): a GLUE TSV file or a JSON Lines file for GLUE tasks; any data
file with the run's text columns for your own data (`text`, data/files.py).

A GLUE TSV names its text columns in a header as the GLUE train/dev files do (or the test files); CoLA's header-less
train/dev files are read by column position. A JSONL file holds one object per line with the task's text fields.
Every line is checked before a model is loaded; a bad one raises DataError naming the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError
from .files import PAIR_DEFAULTS, TEXT_DEFAULTS, read_rows
from .glue import TASKS as GLUE_TASKS


@dataclass
class Inputs:
    ids: list[str]
    texts: list[tuple[str, ...]]
    columns: tuple[str, ...]  # names of the text fields, as written to JSONL output


def read_text_inputs(path: str | Path, training: dict) -> Inputs:
    """Texts of your own data (`--task text`): a CSV, TSV, JSON, JSONL or Parquet file with the text column(s) the
    run was trained on (its --text_column / --text_pair_column, else the same defaults). An `id`, `idx` or `index`
    column is carried to the output."""
    rows = read_rows(path, "input")
    found = [c for c in rows[0] if c != "__line__"]
    text = training.get("text_column") or next((c for c in TEXT_DEFAULTS if c in found), None)
    if text is None or text not in found:
        raise DataError(f"--input `{path}`: no text column " + (f"`{text}`" if text else f"among {', '.join(TEXT_DEFAULTS)}")
                        + f" (the run's); columns found: {', '.join(found)}")
    pair = training.get("text_pair_column") or (PAIR_DEFAULTS.get(text) if PAIR_DEFAULTS.get(text) in found else None)
    if pair is not None and pair not in found:
        raise DataError(f"--input `{path}`: no column `{pair}` (the run's second text column); columns found: "
                        f"{', '.join(found)}")
    columns = tuple(c for c in (text, pair) if c is not None)
    key = next((k for k in ("id", "idx", "index") if k in found), None)
    ids = [str(r[key]) if key else str(i) for i, r in enumerate(rows)]
    return Inputs(ids, [tuple("" if r.get(c) is None else str(r[c]) for c in columns) for r in rows], columns)


def read_inputs(path: str | Path, task_name: str, training: dict | None = None) -> Inputs:
    """Texts to classify from a GLUE TSV file or a JSONL file (see `rankwise predict --help`); for your own data
    (`text`), any data file with the run's text columns (`training`: the run's config)."""
    path = Path(path)
    if task_name == "text":
        return read_text_inputs(path, training or {})
    if task_name not in GLUE_TASKS:
        raise ConfigError("task", f"predict works on GLUE tasks; `{task_name}` is not one",
                          f"Choose one of: {', '.join(GLUE_TASKS)}")
    if path.is_dir():
        raise DataError(f"--input `{path}` is a directory. Give the path of a .tsv or .jsonl file")
    if not path.is_file():
        raise DataError(f"--input `{path}` does not exist")
    task = GLUE_TASKS[task_name]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"--input {path} is not UTF-8 text ({exc})") from None
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise DataError(f"--input {path} is empty")
    if path.suffix.lower() == ".jsonl":
        return _jsonl_inputs(path, lines, task_name, task.hub_text_columns)
    if path.suffix.lower() != ".tsv":
        raise DataError(f"--input {path}: expected a GLUE TSV file (.tsv) or JSON Lines (.jsonl, one object per "
                        "line); see `rankwise predict --help`")
    return _tsv_inputs(path, lines, task_name, task)


def _jsonl_inputs(path: Path, lines: list[str], task_name: str, fields: tuple[str, ...]) -> Inputs:
    ids, texts = [], []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"--input {path}, line {number}: not a JSON object ({exc.msg}). Give one JSON object "
                            f"per line with field(s) {', '.join(fields)}") from None
        if not isinstance(record, dict):
            raise DataError(f"--input {path}, line {number}: expected a JSON object, got {type(record).__name__}")
        missing = [f for f in fields if not isinstance(record.get(f), str)]
        if missing:
            raise DataError(f"--input {path}, line {number}: no text field `{missing[0]}`; {task_name} needs "
                            f"{', '.join(f'`{f}`' for f in fields)} (found {', '.join(record) or 'nothing'})")
        ids.append(str(next((record[k] for k in ("idx", "index", "id") if k in record), number - 1)))
        texts.append(tuple(record[f] for f in fields))
    return Inputs(ids, texts, fields)


def _tsv_inputs(path: Path, lines: list[str], task_name: str, task) -> Inputs:
    """A GLUE TSV file: train/dev files (their text columns, by name or, for CoLA, by position) or test files."""
    fields = task.hub_text_columns
    header = lines[0].split("\t")
    named = [c for c in (task.text_columns if task.has_header else ())]
    for columns in (named, list(fields)):
        if columns and all(c in header for c in columns):
            text_idx, rows, first = [header.index(c) for c in columns], lines[1:], 2
            id_idx = header.index("index") if "index" in header else None
            break
    else:
        if task.has_header:
            raise DataError(f"--input {path}: the header {header} has no text columns for {task_name}: expected "
                            f"{list(task.text_columns)} (GLUE train/dev files) or {list(fields)} (GLUE test files)")
        text_idx, rows, first, id_idx = [int(c) for c in task.text_columns], lines, 1, None  # CoLA train/dev
    needed = max(text_idx) + 1
    ids, texts = [], []
    for number, line in enumerate(rows, start=first):
        cells = line.split("\t")
        if len(cells) < needed:
            raise DataError(f"--input {path}, line {number}: {len(cells)} tab-separated columns, {task_name} needs at "
                            f"least {needed}. Is it a GLUE {task.folder} file?")
        ids.append(cells[id_idx] if id_idx is not None else str(len(ids)))
        texts.append(tuple(cells[i] for i in text_idx))
    return Inputs(ids, texts, fields)

__all__ = ["Inputs", "read_inputs"]
