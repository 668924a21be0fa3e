"""Your own classification or regression data (`--task text`): CSV, TSV, JSON, JSONL or Parquet files, or a 🤗
`datasets` dataset (a local directory of data files, or a hub name when the hub is reachable).

The columns are named by --text_column / --text_pair_column / --label_column (defaults below). Labels are strings
or integers (a classification: the label set is read from the training split and recorded, names kept for exports
and predictions) or floats that are not whole numbers (a regression; --problem_type forces either), and the decision
is recorded with its reason. Labels are checked as pandas reads a column: a label that is empty, null, NaN or one of
read_csv's missing-value strings (NA, n/a, nan, null, ...) is missing, and a list or object is not a label. Without
validation data, a fixed share of the training data is held out (--validation_split, the same split for every
seed). Every problem (a missing column, a column named twice, an empty file, one class, a missing or non-scalar
label, a number column with a stray string, mixed label types, an empty text column, a line that does not parse)
is one DataError naming the file, the line (or record) and value, and the fix. Fields of any size are read.

`ag_news` is the LR-ratio study's setup: its training split cut 90/10 (seed 36), the first 10,000 and 2,000
examples of the two parts as training and validation data, and its test split.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES  # read_csv's default missing-value strings
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
    problem_reason: str = ""  # why it is a classification or a regression

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


def row_unit(path: str | Path | None) -> str:
    """What a row's `__line__` counts: `line` in CSV, TSV and JSONL files, `record` in JSON lists, Parquet files and
    datasets (None)."""
    return "line" if path is not None and FORMATS.get(Path(path).suffix.lower()) in ("csv", "tsv", "jsonl") \
        else "record"


@contextlib.contextmanager
def _any_field_size():
    """Python's csv module refuses fields over 128 KiB by default; pandas has no such limit, nor does rankwise."""
    previous = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _check_header(header: list[str], path: Path, option: str) -> None:
    """A column named twice would be read from one of its columns only: refused, naming both positions."""
    seen: dict[str, int] = {}
    for position, name in enumerate(header, 1):
        if name in seen:
            raise DataError(f"--{option} `{path}`, line 1: columns {seen[name]} and {position} are both named "
                            f"`{name}`, so one of them would be ignored. Rename one (pandas would read them as "
                            f"`{name}` and `{name}.1`)")
        seen[name] = position


def _delimited_rows(text: str, path: Path, option: str, delimiter: str) -> list[dict]:
    with _any_field_size():
        return _read_delimited(text, path, option, delimiter)


def _read_delimited(text: str, path: Path, option: str, delimiter: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise DataError(f"--{option} `{path}`, line 1: {exc}") from None
    _check_header(header, path, option)
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


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple]) -> dict:
    """json's object_pairs_hook: a key given twice in one object (json keeps the last silently) is refused."""
    keys = [k for k, _ in pairs]
    twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if twice is not None:
        raise _DuplicateKey(twice)
    return dict(pairs)


def _duplicate_key_error(where: str, key: str) -> DataError:
    return DataError(f"{where}: the key `{key}` appears twice in one object, so one of its values would be "
                     "ignored. Keep one (or rename the other)")


def _json_rows(text: str, path: Path, option: str, _delimiter: str) -> list[dict]:
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise _duplicate_key_error(f"--{option} `{path}`", exc.args[0]) from None
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
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise _duplicate_key_error(f"--{option} `{path}`, line {line_number}", exc.args[0]) from None
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

def _columns(cfg, rows: list[dict], where) -> tuple[str, str | None, str]:
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


@dataclass(frozen=True)
class _Source:
    """Where a split's rows come from, for messages: `--train_file `x.csv``, and what a row number counts."""

    name: str
    unit: str  # `line` or `record` (see row_unit)

    def __str__(self) -> str:
        return self.name

    def at(self, row: dict) -> str:
        return f"{self.name}, {self.unit} {row['__line__']}"


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _spelled_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def label_kind(value) -> str:
    """How a data library reads one label: `missing` (None, NaN, empty, or one of read_csv's missing-value
    strings such as NA, n/a, nan, null), `nonscalar` (a list, object or array), `boolean`, `number`,
    `number_text` (a string that spells a number, as every CSV field is) or `text`."""
    if not pd.api.types.is_scalar(value):
        return "nonscalar"
    if isinstance(value, str):
        text = value.strip()
        if text in STR_NA_VALUES:
            return "missing"
        return "number_text" if _spelled_number(text) is not None else "text"
    if pd.isna(value):
        return "missing"
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    return "number" if _is_number(value) else "text"


def _shown(value) -> str:
    """A value as the user wrote it: JSON for lists and objects, else its text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _check_labels(rows: list[dict], label: str, where: _Source) -> None:
    """Refuse rows whose label is missing (listing them, with their values), not one value, or not finite."""
    missing = [r for r in rows if label_kind(r.get(label)) == "missing"]
    if missing:
        listed = ", ".join(f"{where.unit} {r['__line__']} ({_given(r, label)})" for r in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{where}: the label (`{label}`) is missing in {len(missing)} of {len(rows)} rows: {listed}"
                        f"{more}. Fill in those labels or remove the rows (empty fields, null, NaN and pandas' "
                        "missing-value strings such as NA, n/a and nan count as missing)")
    for row in rows:
        value = row[label]
        kind = label_kind(value)
        if kind == "nonscalar":
            raise DataError(f"{where.at(row)}: label `{_shown(value)}` is a {type(value).__name__}, not one value. "
                            f"A label is one class name or number (write `{_shown(_first(value))}`, not "
                            f"`{_shown(value)}`); multi-label data is not supported")
        number = float(value) if kind == "number" else _spelled_number(value.strip()) if kind == "number_text" \
            else 0.0
        if not math.isfinite(number):
            raise DataError(f"{where.at(row)}: label `{_shown(value)}` is not a finite number. Fix it or remove "
                            "the row")


def _given(row: dict, column: str) -> str:
    return f"`{_shown(row[column])}`" if column in row else f"no `{column}` key"


def _first(value):
    items = list(value.values()) if isinstance(value, dict) else list(value)
    return items[0] if items else "..."


GROUPS = {"number": "a number", "boolean": "true or false", "text": "text", "number_text": "text"}


def _problem(cfg, train: list[dict], label: str, where: _Source, class_names: list[str] | None) -> tuple[str, str]:
    """(`single_label_classification` or `regression`, why), from --problem_type or the training labels. Mixed
    label types, and a number column with a stray text (or a text column with a stray number), are refused."""
    if cfg.problem_type != "auto":
        return cfg.problem_type, f"--problem_type {cfg.problem_type}"
    if class_names is not None:
        return "single_label_classification", f"`{label}` is a ClassLabel feature of the dataset"
    first: dict[str, dict] = {}  # kind -> first row with it
    for row in train:
        first.setdefault(label_kind(row[label]), row)
    groups = {GROUPS[kind]: row for kind, row in sorted(first.items(), key=lambda kv: kv[1]["__line__"])}
    if len(groups) > 1:
        (kind_a, row_a), (kind_b, row_b) = list(groups.items())[:2]
        raise DataError(f"{where.at(row_b)}: label `{_shown(row_b[label])}` is {kind_b} but the first label "
                        f"(`{_shown(row_a[label])}`, {where.unit} {row_a['__line__']}) is {kind_a}: the `{label}` "
                        "column mixes label types. Make every label a class name, or every one a number")
    if "text" in first and "number_text" in first:
        _stray_label(train, label, where)
    if "text" in first or "boolean" in first:
        return "single_label_classification", f"labels such as `{_shown(next(iter(first.values()))[label])}` are " \
                                              "class names"
    fraction = next((r for r in train if not float(str(r[label]).strip()).is_integer()), None)
    if fraction is None:
        return "single_label_classification", ("every label is a whole number, so each is a class (pass "
                                                "--problem_type regression for a numeric target)")
    return "regression", (f"labels such as `{_shown(fraction[label])}` ({where.unit} {fraction['__line__']}) are not "
                          "whole numbers (pass --problem_type single_label_classification to read them as classes)")


def _stray_label(train: list[dict], label: str, where: _Source) -> None:
    numbers = [r for r in train if label_kind(r[label]) == "number_text"]
    texts = [r for r in train if label_kind(r[label]) == "text"]
    stray, others, what = (texts, numbers, "numbers") if len(numbers) >= len(texts) else (numbers, texts, "text")
    row, example = stray[0], others[0]
    is_not = "not a number" if what == "numbers" else "a number"
    rows = ", ".join(f"{where.unit} {r['__line__']}" for r in stray[:5]) + (", ..." if len(stray) > 5 else "")
    raise DataError(f"{where.at(row)}: label `{_shown(row[label])}` is {is_not}, but {len(others)} of the "
                    f"{len(train)} labels of `{label}` are {what} (e.g. `{_shown(example[label])}`, {where.unit} "
                    f"{example['__line__']}); {len(stray)} {'is' if len(stray) == 1 else 'are'} not ({rows}). Fix the stray value(s) or remove their "
                    "rows; to read every label as a class name, pass --problem_type single_label_classification")


def _label_value(row: dict, label: str, where: _Source, regression: bool, reason: str) -> float | str:
    """A checked label (see _check_labels) as a class name or a regression target."""
    value = row[label]
    kind = label_kind(value)
    if not regression:
        if kind in ("number", "number_text"):
            number = float(value) if kind == "number" else float(value.strip())
            return str(int(number)) if number.is_integer() else str(number)
        return str(value).strip()
    if kind not in ("number", "number_text"):
        raise DataError(f"{where.at(row)}: label `{_shown(value)}` is not a number, but the task is a regression "
                        f"({reason})")
    return float(value)


def _text(row: dict, column: str, where: _Source) -> str:
    value = row.get(column)
    if not pd.api.types.is_scalar(value):
        raise DataError(f"{where.at(row)}: the text (`{column}`) is a {type(value).__name__} (`{_shown(value)}`), "
                        "not a text. Give one string per row")
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _examples(rows: list[dict], columns: tuple, where: _Source, regression: bool, label_index: dict | None,
              class_names: list[str] | None, reason: str) -> list[Example]:
    text, pair, label = columns
    _check_labels(rows, label, where)
    examples = []
    for row in rows:
        value = _label_value(row, label, where, regression, reason)
        if not regression:
            key = class_names[int(value)] if class_names is not None and value.isdigit() and \
                int(value) < len(class_names) else value
            if key not in label_index:
                raise DataError(f"{where.at(row)}: label `{value}` is not among the training labels "
                                f"({', '.join(label_index)}; {reason})")
            value = label_index[key]
        examples.append(Example(tuple(_text(row, c, where) for c in (text, pair) if c is not None), value))
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


def _read_splits(cfg) -> tuple[dict, str, dict, list[str] | None]:
    """({split: rows}, source, {split: _Source}, ClassLabel names of the label column or None)."""
    if cfg.dataset is not None:
        splits, source, names = _dataset_rows(cfg)
        if "train" not in splits:
            raise DataError(f"--dataset `{cfg.dataset}` has no `train` split (it has {', '.join(splits)})")
        where = {split: _Source(f"--dataset {cfg.dataset} ({split})", "record") for split in splits}
        label = _columns(cfg, splits["train"], where["train"])[2]
        return splits, source, where, names.get(label)
    splits = {"train": read_rows(cfg.train_file, "train_file")}
    for split, option in (("validation", "validation_file"), ("test", "test_file")):
        if getattr(cfg, option):
            splits[split] = read_rows(getattr(cfg, option), option)
    where = {split: _Source(f"--{option} `{getattr(cfg, option)}`", row_unit(getattr(cfg, option)))
             for split, option in (("train", "train_file"), ("validation", "validation_file"), ("test", "test_file"))
             if split in splits}
    return splits, str(cfg.train_file), where, None


def _label_names(train: list[dict], label: str, where: _Source, reason: str) -> list[str]:
    values = sorted({_label_value(r, label, where, False, reason) for r in train},
                    key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
    if len(values) < 2:
        raise DataError(f"{where}: the label column `{label}` has one class (`{values[0]}`); a classifier needs at "
                        f"least two ({reason}). Check --label_column")
    return values


def load_text_data(cfg) -> TextData:
    """The examples of `--task text` from --train_file (with --validation_file / --test_file) or --dataset."""
    splits, source, where, class_names = _read_splits(cfg)
    columns = _columns(cfg, splits["train"], where["train"])
    for split in ("validation", "test"):
        if splits.get(split) is not None:
            _columns(cfg, splits[split], where[split])  # the same columns in every split
    _check_labels(splits["train"], columns[2], where["train"])
    problem, reason = _problem(cfg, splits["train"], columns[2], where["train"], class_names)  # every row
    regression = problem == "regression"
    train, validation, test = splits["train"], splits.get("validation"), splits.get("test")
    held_out = validation is None
    if held_out:
        train, validation = _split_off(train, cfg.validation_split)
        where["validation"] = _Source(f"{where['train']} (held-out validation)", where["train"].unit)
    label_names, label_index = None, None
    if not regression:
        label_names = class_names if class_names is not None else _label_names(train, columns[2], where["train"],
                                                                               reason)
        label_index = {name: i for i, name in enumerate(label_names)}
    examples = {split: _examples(rows, columns, where[split], regression, label_index, class_names, reason)
                for split, rows in (("train", train), ("validation", validation), ("test", test)) if rows is not None}
    return TextData(train=examples["train"], evals={"eval": examples["validation"]}, test=examples.get("test"),
                    label_names=label_names, source=source + (f"; validation: {cfg.validation_split:g} of it held out "
                                                              f"(seed {SPLIT_SEED})" if held_out else ""),
                    columns={"text": columns[0], "text_pair": columns[1], "label": columns[2]},
                    problem_reason=reason)


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
