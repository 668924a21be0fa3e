"""GLUE tasks: local TSV files in the original GLUE layout (else the Hugging Face hub), and metrics.

Local layout: `<data_dir>/<TaskDir>/{train,dev}.tsv` as written by `download_glue_data.py`. Files are
split on tabs with no quote handling (RTE sentences start with `"`), and a UTF-8 BOM is dropped
(MRPC's header has one). MNLI evaluates on dev_matched (and dev_mismatched as a second set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    name: str
    folder: str
    text_columns: tuple[str, ...]  # TSV header names (or 0-based indices as strings for header-less files)
    label_column: str
    labels: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]
    main_metric: str
    has_header: bool = True
    eval_files: dict[str, str] = field(default_factory=lambda: {"eval": "dev.tsv"})
    hub_text_columns: tuple[str, ...] = ()
    hub_eval_splits: dict[str, str] = field(default_factory=lambda: {"eval": "validation"})
    score_range: tuple[float, float] | None = None  # regression: the range every gold score must lie in

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("cola", "CoLA", ("3",), "1", ("0", "1"), ("matthews_correlation", "accuracy"), "matthews_correlation",
                     has_header=False, hub_text_columns=("sentence",)),
    "sst2": GlueTask("sst2", "SST-2", ("sentence",), "label", ("0", "1"), ("accuracy",), "accuracy",
                     hub_text_columns=("sentence",)),
    "mrpc": GlueTask("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("accuracy", "f1"),
                     "accuracy", hub_text_columns=("sentence1", "sentence2")),
    "qnli": GlueTask("qnli", "QNLI", ("question", "sentence"), "label", ("entailment", "not_entailment"),
                     ("accuracy",), "accuracy", hub_text_columns=("question", "sentence")),
    "rte": GlueTask("rte", "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
                    ("accuracy",), "accuracy", hub_text_columns=("sentence1", "sentence2")),
    "stsb": GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, ("pearson", "spearmanr"),
                     "pearson", hub_text_columns=("sentence1", "sentence2"), score_range=(0.0, 5.0)),
    "qqp": GlueTask("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), ("accuracy", "f1"),
                    "accuracy", hub_text_columns=("question1", "question2")),
    "mnli": GlueTask("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
                     ("entailment", "neutral", "contradiction"), ("accuracy",), "accuracy",
                     eval_files={"eval": "dev_matched.tsv", "eval_mismatched": "dev_mismatched.tsv"},
                     hub_text_columns=("premise", "hypothesis"),
                     hub_eval_splits={"eval": "validation_matched", "eval_mismatched": "validation_mismatched"}),
    "wnli": GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), "label", ("0", "1"), ("accuracy",), "accuracy",
                     hub_text_columns=("sentence1", "sentence2")),
}


@dataclass
class Example:
    texts: tuple[str, ...]
    label: float | int


@dataclass
class TaskData:
    train: list[Example]
    evals: dict[str, list[Example]]  # "eval" always; MNLI adds "eval_mismatched"
    source: str


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def read_tsv(path: Path, task: GlueTask) -> list[Example]:
    """Examples from one GLUE TSV file. Raises DataError naming the file and line on any problem (including a
    file with no examples, and STS-B scores that are not finite numbers in [0, 5])."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a GLUE TSV file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); is it a GLUE TSV file?") from None
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty")
    if task.has_header:
        header = lines[0].rstrip("\r").split("\t")
        missing = [c for c in (*task.text_columns, task.label_column) if c not in header]
        if missing:
            raise DataError(f"{path}: header has no column(s) {missing}; found {header}. Expected the original "
                            f"GLUE layout for {task.name}")
        text_idx = [header.index(c) for c in task.text_columns]
        label_idx = header.index(task.label_column)
        width = len(header)
        rows, first_line = lines[1:], 2
    else:
        text_idx = [int(c) for c in task.text_columns]
        label_idx = int(task.label_column)
        width = len(lines[0].split("\t"))
        rows, first_line = lines, 1
    needed = max(*text_idx, label_idx) + 1
    if width < needed:
        raise DataError(f"{path}: rows have {width} tab-separated columns, {task.name} needs at least {needed}")

    examples = []
    for number, line in enumerate(rows, start=first_line):
        cells = line.rstrip("\r").split("\t")
        if len(cells) < needed:
            raise DataError(f"{path}, line {number}: {len(cells)} columns, expected {width}. The file may be "
                            "truncated or not tab-separated")
        raw = cells[label_idx].strip()
        if task.is_regression:
            try:
                label: float | int = float(raw)
            except ValueError:
                raise DataError(f"{path}, line {number}: score `{raw}` is not a number") from None
            low, high = task.score_range or (-math.inf, math.inf)
            if not (math.isfinite(label) and low <= label <= high):
                where = f"in [{low:g}, {high:g}]" if task.score_range else "finite"
                raise DataError(f"{path}, line {number}: score `{raw}` is not a number {where}, as {task.name} "
                                "scores must be")
        else:
            if raw not in task.labels:
                raise DataError(f"{path}, line {number}: label `{raw}` is not one of {list(task.labels)}")
            label = task.labels.index(raw)
        examples.append(Example(tuple(cells[i] for i in text_idx), label))
    if not examples:
        raise DataError(f"{path} has a header but no examples. Give a {task.name} file with at least one row")
    return examples


def load_local(task: GlueTask, data_dir: Path) -> TaskData:
    folder = data_dir / task.folder
    files = {"train": "train.tsv", **task.eval_files}
    directories = [str(folder / name) for name in files.values() if (folder / name).is_dir()]
    if directories:
        raise DataError(f"task {task.name}: {', '.join(directories)} is a directory, not a GLUE TSV file. Put the "
                        f"{task.name} files train.tsv and {', '.join(task.eval_files.values())} under {folder}/")
    missing = [name for name in files.values() if not (folder / name).is_file()]
    if missing:
        present = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
        raise DataError(f"task {task.name}: missing {', '.join(str(folder / m) for m in missing)}. "
                        f"{data_dir} has task folders {present or 'none'}. Put the GLUE files for {task.name} "
                        f"under {folder}/, or omit --data_dir (and unset RANKWISE_DATA_DIR) to download "
                        f"`{HUB_DATASET}` from the Hugging Face hub")
    return TaskData(read_tsv(folder / "train.tsv", task),
                    {split: read_tsv(folder / name, task) for split, name in task.eval_files.items()},
                    source=str(folder))


def load_hub(task: GlueTask) -> TaskData:
    from ..models import hub_unreachable

    try:
        import datasets

        if hub_unreachable():
            raise ConnectionError("the hub cannot be reached from this machine")
        dataset = datasets.load_dataset(HUB_DATASET, task.name)
    except Exception as exc:  # network, missing package, ...: one message with the fix
        raise DataError(f"task {task.name}: no local data given and `{HUB_DATASET}` could not be loaded from the "
                        f"Hugging Face hub ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Download GLUE "
                        "and pass --data_dir DIR (or set RANKWISE_DATA_DIR) with DIR/<Task>/train.tsv, dev.tsv") \
            from None

    def examples(split: str) -> list[Example]:
        rows = dataset[split]
        columns = [rows[c] for c in task.hub_text_columns]
        return [Example(tuple(col[i] for col in columns), label) for i, label in enumerate(rows["label"])]

    return TaskData(examples("train"), {s: examples(hub) for s, hub in task.hub_eval_splits.items()},
                    source=f"hub:{HUB_DATASET}/{task.name}")


def glue_root(data_dir: str | Path) -> Path:
    """The folder holding task folders: `data_dir` itself, or `data_dir/glue` (so one RANKWISE_DATA_DIR can
    hold glue/ and alpaca/)."""
    root = Path(data_dir)
    nested = root / "glue"
    has_tasks = any((root / t.folder).is_dir() for t in TASKS.values())
    return nested if not has_tasks and nested.is_dir() else root


def load_glue(task_name: str, data_dir: str | None) -> TaskData:
    task = TASKS[task_name]
    return load_local(task, glue_root(data_dir)) if data_dir else load_hub(task)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def compute_metrics(task_name: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Task metrics from predictions (class ids, or scores for STS-B) and gold labels."""
    from scipy.stats import pearsonr, spearmanr  # scipy and scikit-learn take a second to import: only when scoring
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    task = TASKS[task_name]
    out: dict[str, float] = {}
    for metric in task.metrics:
        if metric == "matthews_correlation":
            out[metric] = float(matthews_corrcoef(labels, predictions))
        elif metric == "accuracy":
            out[metric] = float(accuracy_score(labels, predictions))
        elif metric == "f1":
            out[metric] = float(f1_score(labels, predictions))
        elif metric == "pearson":
            out[metric] = float(pearsonr(predictions, labels)[0]) if np.std(predictions) > 0 else 0.0
        elif metric == "spearmanr":
            out[metric] = float(spearmanr(predictions, labels)[0]) if np.std(predictions) > 0 else 0.0
    return out
