"""Your own classification or regression data (`--task text`): CSV, TSV, JSON, JSONL or Parquet files, or a 🤗
`datasets` dataset (a local directory of data files, or a hub name when the hub is reachable).

The columns are named by --text_column / --text_pair_column / --label_column (defaults below). Labels are strings
or integers (a classification: the label set is read from the training split and recorded, names kept for exports
and predictions) or floats that are not whole numbers (a regression; --problem_type forces either). Without
validation data, a fixed share of the training data is held out (--validation_split, the same split for every
seed). Every problem (a missing column, an empty file, one class, a NaN target, mixed label types, an empty text
column, a line that does not parse) is one DataError naming the file, the line or column, and the fix.

`ag_news` is the LR-ratio study's setup: its training split cut 90/10 (seed 36), the first 10,000 and 2,000
examples of the two parts as training and validation data, and its test split.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from ..errors import DataError
from .glue import Example

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
TEXT_DEFAULTS = ("text", "sentence", "sentence1", "question", "premise", "content", "review", "document")
PAIR_DEFAULTS = {"sentence1": "sentence2", "premise": "hypothesis", "question1": "question2"}
LABEL_DEFAULT = "label"
SPLIT_SEED = 1234  # the held-out validation split: fixed, so every seed of a sweep sees the same data
AG_NEWS = {"split_seed": 36, "validation_fraction": 0.1, "train": 10_000, "validation": 2_000}


@dataclass
class TextData:
    """Examples per split, the label set and what the data was read from."""

    train: list[Example]
    evals: dict[str, list[Example]]  # "eval": the split that picks the best evaluation
    test: list[Example] | None
    label_names: list[str] | None  # None: regression
    source: str
    columns: dict = field(default_factory=dict)  # text, text_pair, label

    @property
    def regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.label_names)


# ---------------------------------------------------------------------------------------------
# Reading rows
# ---------------------------------------------------------------------------------------------

def read_rows(path: str | Path, option: str = "train_file") -> list[dict]:
    """Rows (one dict per example, with 1-based `__line__`) of a CSV, TSV, JSON, JSONL or Parquet file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"--{option} `{path}` is a directory; give a .csv, .tsv, .json, .jsonl or .parquet file")
    if not path.is_file():
        raise DataError(f"--{option} `{path}` does not exist")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"--{option} `{path}`: unknown format `{path.suffix}`; use .csv, .tsv, .json, .jsonl or "
                        ".parquet")
    if kind == "parquet":
        rows = _parquet_rows(path, option)
    else:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"--{option} `{path}` is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                            f"{exc.start}); save it as UTF-8") from None
        rows = {"csv": _delimited_rows, "tsv": _delimited_rows, "json": _json_rows, "jsonl": _jsonl_rows}[kind](
            text, path, option, "\t" if kind == "tsv" else ",")
    if not rows:
        raise DataError(f"--{option} `{path}` has no examples")
    return rows


def _delimited_rows(text: str, path: Path, option: str, delimiter: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise DataError(f"--{option} `{path}`, line 1: {exc}") from None
    rows = []
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataError(f"--{option} `{path}`, line {line}: {len(values)} fields, but the header has "
                                f"{len(header)} ({', '.join(header)}). Quote fields that contain the delimiter")
            rows.append({**dict(zip(header, values)), "__line__": line})
    except csv.Error as exc:
        raise DataError(f"--{option} `{path}`, line {reader.line_num}: {exc}") from None
    return rows


def _json_rows(text: str, path: Path, option: str, _delimiter: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"--{option} `{path}`, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):  # column-oriented
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise DataError(f"--{option} `{path}`: its columns have different lengths ({sorted(lengths)})")
        data = [dict(zip(data, values)) for values in zip(*data.values())]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"--{option} `{path}`: expected a list of objects (one per example) or an object of columns")
    return [{**r, "__line__": i} for i, r in enumerate(data, 1)]


def _jsonl_rows(text: str, path: Path, option: str, _delimiter: str) -> list[dict]:
    rows = []
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"--{option} `{path}`, line {line_number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"--{option} `{path}`, line {line_number}: expected a JSON object per line")
        rows.append({**row, "__line__": line_number})
    return rows


def _parquet_rows(path: Path, option: str) -> list[dict]:
    import pandas as pd  # pyarrow underneath

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's errors have no common base
        raise DataError(f"--{option} `{path}` is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    return [{**r, "__line__": i} for i, r in enumerate(frame.to_dict(orient="records"), 1)]


def _dataset_rows(cfg) -> tuple[dict[str, list[dict]], str, dict[str, list[str]]]:
    """{split: rows} of --dataset, its source, and ClassLabel names by column."""
    try:
        import datasets
    except ImportError:
        raise DataError("--dataset needs the `datasets` package: pip install datasets") from None
    name = cfg.dataset
    path = Path(name).expanduser()
    try:
        if path.is_dir():
            files = {split: [str(p) for p in sorted(path.iterdir()) if p.stem.split("-")[0] == split
                             and p.suffix.lower() in FORMATS]
                     for split in ("train", "validation", "test")}
            files = {k: v for k, v in files.items() if v}
            if not files:
                raise DataError(f"--dataset `{name}` holds no train.*/validation.*/test.* data file (.csv, .json, "
                                ".jsonl, .parquet)")
            suffix = Path(next(iter(files.values()))[0]).suffix.lower()
            builder = {".jsonl": "json", ".json": "json", ".tsv": "csv"}.get(suffix, FORMATS[suffix])
            extra = {"delimiter": "\t"} if suffix == ".tsv" else {}
            loaded = datasets.load_dataset(builder, data_files=files, **extra)
        else:
            loaded = datasets.load_dataset(name, cfg.dataset_config)
    except DataError:
        raise
    except Exception as exc:  # the hub unreachable, a name that does not exist, a broken file
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise DataError(f"--dataset `{name}` cannot be loaded ({first}). Give a local directory of data files "
                        "(train.jsonl, test.jsonl, ...) or a hub name while the hub is reachable") from None
    names = {}
    for column, feature in loaded[next(iter(loaded))].features.items():
        if isinstance(feature, datasets.ClassLabel):
            names[column] = list(feature.names)
    if Path(name).name.lower() in ("ag_news", "ag-news", "fancyzhx/ag_news") and "train" in loaded:
        split = loaded["train"].train_test_split(test_size=AG_NEWS["validation_fraction"], seed=AG_NEWS["split_seed"])
        rows = {"train": split["train"].select(range(min(AG_NEWS["train"], len(split["train"])))),
                "validation": split["test"].select(range(min(AG_NEWS["validation"], len(split["test"])))),
                **({"test": loaded["test"]} if "test" in loaded else {})}
        source = f"{name} (the LR-ratio study's draw: train split cut 90/10 with seed 36, first 10,000 / 2,000)"
    else:
        rows = dict(loaded)
        source = str(name) + (f" ({cfg.dataset_config})" if cfg.dataset_config else "")
    return ({split: [{**r, "__line__": i} for i, r in enumerate(ds, 1)] for split, ds in rows.items()}, source,
            names)


# ---------------------------------------------------------------------------------------------
# Rows -> examples
# ---------------------------------------------------------------------------------------------

def _columns(cfg, rows: list[dict], where: str) -> tuple[str, str | None, str]:
    found = [c for c in rows[0] if c != "__line__"]
    text = cfg.text_column or next((c for c in TEXT_DEFAULTS if c in found), None)
    if text is None or text not in found:
        missing = f"no column `{text}` (--text_column)" if text else \
            f"no text column among the defaults ({', '.join(TEXT_DEFAULTS)})"
        raise DataError(f"{where}: {missing}. Columns found: {', '.join(found)}. Name it with --text_column")
    pair = cfg.text_pair_column or (PAIR_DEFAULTS.get(text) if PAIR_DEFAULTS.get(text) in found else None)
    if pair is not None and pair not in found:
        raise DataError(f"{where}: no column `{pair}` (--text_pair_column). Columns found: {', '.join(found)}")
    label = cfg.label_column or LABEL_DEFAULT
    if label not in found:
        raise DataError(f"{where}: no label column `{label}`" + (" (--label_column)" if cfg.label_column else "")
                        + f". Columns found: {', '.join(found)}. Name it with --label_column")
    return text, pair, label


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _problem(cfg, train: list[dict], label: str, where: str, class_names: list[str] | None) -> str:
    """`single_label_classification` or `regression`, from --problem_type or the training labels."""
    values = [r[label] for r in train]
    if cfg.problem_type != "auto":
        return cfg.problem_type
    if class_names is not None:
        return "single_label_classification"
    numbers = [v for v in values if _is_number(v)]
    texts = [v for v in values if isinstance(v, str)]
    if numbers and texts:
        row = next(r for r in train if isinstance(r[label], str) != isinstance(values[0], str))
        raise DataError(f"{where}, line {row['__line__']}: label `{row[label]}` is "
                        f"{'text' if isinstance(row[label], str) else 'a number'} but the first label "
                        f"(`{values[0]}`) is {'text' if isinstance(values[0], str) else 'a number'}: the "
                        f"`{label}` column mixes label types. Make every label a class name, or every one a number")
    if texts:  # CSV/TSV give strings: numbers written as text count as numbers
        try:
            parsed = [float(v) for v in texts]
        except ValueError:
            return "single_label_classification"
        return "single_label_classification" if all(math.isfinite(x) and x.is_integer() for x in parsed) \
            else "regression"
    return "single_label_classification" if all(float(v).is_integer() for v in numbers if math.isfinite(float(v))) \
        else "regression"


def _label_value(row: dict, label: str, where: str, regression: bool) -> float | str:
    value = row[label]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}, line {row['__line__']}: the label (`{label}`) is empty")
    if not regression:
        if _is_number(value) and float(value).is_integer():
            return str(int(value))
        return str(value).strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}, line {row['__line__']}: `{value}` is not a number, but the task is a regression "
                        f"(--problem_type)") from None
    if not math.isfinite(number):
        raise DataError(f"{where}, line {row['__line__']}: the regression target `{label}` is {value}; every "
                        "target must be a finite number")
    return number


def _examples(rows: list[dict], columns: tuple, where: str, regression: bool, label_index: dict | None,
              class_names: list[str] | None) -> list[Example]:
    text, pair, label = columns
    examples = []
    for row in rows:
        value = _label_value(row, label, where, regression)
        if not regression:
            key = class_names[int(value)] if class_names is not None and value.isdigit() and \
                int(value) < len(class_names) else value
            if key not in label_index:
                raise DataError(f"{where}, line {row['__line__']}: label `{value}` is not among the training "
                                f"labels ({', '.join(label_index)})")
            value = label_index[key]
        texts = tuple("" if row.get(c) is None else str(row[c]) for c in (text, pair) if c is not None)
        examples.append(Example(texts, value))
    if not any(e.texts[0].strip() for e in examples):
        raise DataError(f"{where}: the text column `{text}` is empty in every row")
    return examples


def _split_off(rows: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """(train, held out): a fixed-seed share of the rows, the same for every training seed."""
    order = list(range(len(rows)))
    random.Random(SPLIT_SEED).shuffle(order)
    held = max(1, round(fraction * len(rows)))
    if held >= len(rows):
        raise DataError(f"--validation_split {fraction:g} of {len(rows)} training examples leaves none to train on; "
                        "give --validation_file or a smaller --validation_split")
    return [rows[i] for i in sorted(order[held:])], [rows[i] for i in sorted(order[:held])]


def load_text_data(cfg) -> TextData:
    """The examples of `--task text` from --train_file (with --validation_file / --test_file) or --dataset."""
    class_names = None
    if cfg.dataset is not None:
        splits, source, names = _dataset_rows(cfg)
        if "train" not in splits:
            raise DataError(f"--dataset `{cfg.dataset}` has no `train` split (it has {', '.join(splits)})")
        train, validation, test = splits["train"], splits.get("validation"), splits.get("test")
        where = {"train": f"--dataset {cfg.dataset} (train)", "validation": f"--dataset {cfg.dataset} (validation)",
                 "test": f"--dataset {cfg.dataset} (test)"}
        columns = _columns(cfg, train, where["train"])
        class_names = names.get(columns[2])
    else:
        train = read_rows(cfg.train_file, "train_file")
        validation = read_rows(cfg.validation_file, "validation_file") if cfg.validation_file else None
        test = read_rows(cfg.test_file, "test_file") if cfg.test_file else None
        source = str(cfg.train_file)
        where = {"train": f"--train_file `{cfg.train_file}`", "validation": f"--validation_file `{cfg.validation_file}`",
                 "test": f"--test_file `{cfg.test_file}`"}
        columns = _columns(cfg, train, where["train"])
    for split, rows in (("validation", validation), ("test", test)):
        if rows is not None:
            _columns(cfg, rows, where[split])  # the same columns in every split
    regression = _problem(cfg, train, columns[2], where["train"], class_names) == "regression"  # every row
    held_out = validation is None
    if held_out:
        train, validation = _split_off(train, cfg.validation_split)
    label_names, label_index = None, None
    if not regression:
        if class_names is not None:
            label_names = class_names
        else:
            values = sorted({_label_value(r, columns[2], where["train"], False) for r in train},
                            key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
            if len(values) < 2:
                raise DataError(f"{where['train']}: the label column `{columns[2]}` has one class (`{values[0]}`); "
                                "a classifier needs at least two. Check --label_column")
            label_names = values
        label_index = {name: i for i, name in enumerate(label_names)}
    if held_out:
        where["validation"] = f"{where['train']} (held-out validation)"
    examples = {split: _examples(rows, columns, where[split], regression, label_index, class_names)
                for split, rows in (("train", train), ("validation", validation), ("test", test)) if rows is not None}
    return TextData(train=examples["train"], evals={"eval": examples["validation"]}, test=examples.get("test"),
                    label_names=label_names, source=source + (f"; validation: {cfg.validation_split:g} of it held out "
                                                              f"(seed {SPLIT_SEED})" if held_out else ""),
                    columns={"text": columns[0], "text_pair": columns[1], "label": columns[2]})


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def text_metrics(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    """Classification: accuracy, F1 (binary; macro-F1 with more classes) and Matthews correlation. Regression
    (num_labels 1): Pearson and Spearman correlation."""
    if num_labels == 1:
        if np.std(predictions) == 0:
            return {"pearson": 0.0, "spearmanr": 0.0}
        return {"pearson": float(pearsonr(predictions, labels)[0]), "spearmanr": float(spearmanr(predictions, labels)[0])}
    out = {"accuracy": float(accuracy_score(labels, predictions))}
    if num_labels == 2:
        out["f1"] = float(f1_score(labels, predictions, zero_division=0))
    else:
        out["macro_f1"] = float(f1_score(labels, predictions, average="macro", labels=list(range(num_labels)),
                                         zero_division=0))
    out["matthews_correlation"] = float(matthews_corrcoef(labels, predictions))
    return out


def text_main_metric(num_labels: int) -> str:
    return "pearson" if num_labels == 1 else "accuracy"
