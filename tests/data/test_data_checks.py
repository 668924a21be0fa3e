"""Labels and columns of your own data (`--task text`) checked as a data library reads them (issue 32): missing,
NaN and empty labels, lists as labels, a column named twice, a number column with a stray text, mixed label types,
each refused before any work with the row, the value and the fix; fields of any size read; the classification or
regression decision recorded with its reason."""

import json
from pathlib import Path

import pytest

from conftest import run_cli
from rankwise.config import RunConfig, prepare
from rankwise.data.files import label_kind, load_text_data
from rankwise.errors import DataError

WORDS = "the cat dog sat ran on a mat big small".split()


def text(i: int) -> str:
    return f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} {WORDS[(7 * i) % 10]}"


def csv_file(path: Path, labels: list, header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{text(i)},{label}\n" for i, label in enumerate(labels)))
    return path


def jsonl_file(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def refused(path: Path, tiny_bert_dir, tmp_path, capsys, *extra) -> str:
    """The message of a `train` refused with exit 2 before anything was written."""
    out = tmp_path / "run"
    assert run_cli("train", "--model", tiny_bert_dir, "--train_file", path, "--output_dir", out, *extra) == 2
    assert not out.exists()
    return capsys.readouterr().err


ZERO_ONE = [i % 2 for i in range(40)]


@pytest.mark.parametrize("name,lines,expected", [
    # JSON's NaN was trained as a third class `nan`
    ("nan", [json.dumps({"text": text(i), "label": v}).replace("999", "NaN") for i, v in
             enumerate(ZERO_ONE[:5] + [999] + ZERO_ONE[6:])],
     "the label (`label`) is missing in 1 of 40 rows: line 6 (`nan`). Fill in those labels or remove the rows"),
    # a label [1] became a class called `[1]`
    ("list", [json.dumps({"text": text(i), "label": [v] if i == 5 else v}) for i, v in enumerate(ZERO_ONE)],
     "line 6: label `[1]` is a list, not one value. A label is one class name or number (write `1`, not `[1]`)"),
    ("null", [json.dumps({"text": text(i), "label": None if i in (2, 7) else v}) for i, v in enumerate(ZERO_ONE)],
     "missing in 2 of 40 rows: line 3 (`None`), line 8 (`None`)"),
    ("nokey", [json.dumps({"text": text(i), **({} if i == 9 else {"label": v})}) for i, v in enumerate(ZERO_ONE)],
     "missing in 1 of 40 rows: line 10 (no `label` key)"),
    ("twice", [json.dumps({"text": text(i), "label": v}) for i, v in enumerate(ZERO_ONE)][:3]
     + ['{"text": "a b", "label": 1, "label": 0}'], "line 4: the key `label` appears twice in one object"),
    ("bool", [json.dumps({"text": text(i), "label": bool(v) if i == 3 else v}) for i, v in enumerate(ZERO_ONE)],
     "line 4: label `True` is true or false but the first label (`0`, line 1) is a number: the `label` column mixes"),
])
def test_bad_jsonl_labels_are_refused_with_the_row_and_value(name, lines, expected, tiny_bert_dir, tmp_path, capsys):
    err = refused(jsonl_file(tmp_path / f"{name}.jsonl", lines), tiny_bert_dir, tmp_path, capsys)
    assert expected in err, err


@pytest.mark.parametrize("name,labels,header,expected", [
    # a header text,text,label trained on the second `text`
    ("dup", ZERO_ONE, "text,text,label", "line 1: columns 1 and 2 are both named `text`, so one of them would be "
                                         "ignored. Rename one"),
    # a score column 0.5 ... 5.5 with one `n/a` was a 7-class classification
    ("score", [0.5 + i % 6 if i != 3 else "n/a" for i in range(40)], "text,label",
     "the label (`label`) is missing in 1 of 40 rows: line 5 (`n/a`)"),
    # one `nan` in a 0/1 column was called "the regression target"
    ("nan01", [v if i != 3 else "nan" for i, v in enumerate(ZERO_ONE)], "text,label", "line 5 (`nan`)"),
    ("empty", [v if i != 7 else "" for i, v in enumerate(ZERO_ONE)], "text,label", "line 9 (``)"),
    ("stray", [0.5 + i % 6 if i != 3 else "abc" for i in range(40)], "text,label",
     "line 5: label `abc` is not a number, but 39 of the 40 labels of `label` are numbers (e.g. `0.5`, line 2); 1 is "
     "not (line 5). Fix the stray value(s) or remove their rows; to read every label as a class name, pass "
     "--problem_type single_label_classification"),
    ("inf", [v if i != 3 else "inf" for i, v in enumerate(ZERO_ONE)], "text,label",
     "line 5: label `inf` is not a finite number"),
])
def test_bad_csv_columns_and_labels_are_refused(name, labels, header, expected, tiny_bert_dir, tmp_path, capsys):
    path = tmp_path / f"{name}.csv"
    path.write_text(header + "\n" + "".join(f"{text(i)},{'x,' if header.count('text') == 2 else ''}{label}\n"
                                            for i, label in enumerate(labels)))
    err = refused(path, tiny_bert_dir, tmp_path, capsys)
    assert expected in err, err


def test_a_stray_label_passes_as_a_class_when_asked(tmp_path):
    path = csv_file(tmp_path / "d.csv", [i % 2 for i in range(39)] + ["other"])
    with pytest.raises(DataError, match="40 labels of `label` are numbers"):
        load_text_data(prepare(RunConfig(train_file=str(path))))
    data = load_text_data(prepare(RunConfig(train_file=str(path), problem_type="single_label_classification")))
    assert data.label_names == ["0", "1", "other"] and data.problem_reason == "--problem_type single_label_classification"


def test_the_classification_or_regression_decision_is_recorded_with_its_reason(tmp_path):
    whole = load_text_data(prepare(RunConfig(train_file=str(csv_file(tmp_path / "w.csv", [i % 6 for i in range(40)])))))
    assert whole.label_names == ["0", "1", "2", "3", "4", "5"]
    assert "every label is a whole number" in whole.problem_reason and "--problem_type regression" in \
        whole.problem_reason
    scores = load_text_data(prepare(RunConfig(train_file=str(csv_file(tmp_path / "s.csv",
                                                                      [0.5 + i % 6 for i in range(40)])))))
    assert scores.regression and scores.problem_reason.startswith("labels such as `0.5` (line 2) are not whole")
    # "1" and "1.0" are one class, as pandas reads a number column
    same = load_text_data(prepare(RunConfig(train_file=str(csv_file(tmp_path / "o.csv", ["1", "1.0", "0"] * 10)))))
    assert same.label_names == ["0", "1"]


def test_the_regression_reason_is_in_the_message_of_a_bad_validation_label(tmp_path):
    train = csv_file(tmp_path / "t.csv", [0.5 + i % 6 for i in range(20)])
    validation = csv_file(tmp_path / "v.csv", [1.5, "high", 2.5])
    with pytest.raises(DataError) as err:
        load_text_data(prepare(RunConfig(train_file=str(train), validation_file=str(validation))))
    assert "line 3: label `high` is not a number, but the task is a regression (labels such as `0.5`" in str(err.value)


def test_a_field_over_pythons_csv_limit_is_read_whole(tmp_path):
    long = "word " * 60_000  # 300 kB, over csv's 128 KiB default field limit
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "".join(f'"{long if i == 2 else text(i)}",{i % 2}\n' for i in range(30)))
    data = load_text_data(prepare(RunConfig(train_file=str(path), validation_file=str(path))))
    assert long in [e.texts[0] for e in data.evals["eval"]]
    import csv

    assert csv.field_size_limit() == 131072  # the module-wide limit is left as it was


def test_json_records_are_counted_as_records_and_texts_must_be_one_string(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": text(i), "label": i % 2} for i in range(9)] + [{"text": "x", "label": {"a": 1}}]))
    with pytest.raises(DataError, match=r"record 10: label `\{\"a\": 1\}` is a dict, not one value"):
        load_text_data(prepare(RunConfig(train_file=str(path))))
    path.write_text(json.dumps([{"text": [text(i)] if i == 4 else text(i), "label": i % 2} for i in range(10)]))
    with pytest.raises(DataError, match=r"record 5: the text \(`text`\) is a list"):
        load_text_data(prepare(RunConfig(train_file=str(path), validation_file=str(path))))


def test_parquet_missing_values_and_arrays_are_read_as_pandas_reads_them(tmp_path):
    import numpy as np
    import pandas as pd

    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": [text(i) for i in range(10)], "label": [1.0, 0.0, np.nan] + [1.0, 0.0] * 3 + [1.0]}) \
        .to_parquet(path)
    with pytest.raises(DataError, match=r"missing in 1 of 10 rows: record 3 \(`nan`\)"):
        load_text_data(prepare(RunConfig(train_file=str(path))))
    assert [label_kind(v) for v in (np.float64("nan"), pd.NA, None, " n/a ", "", np.array([1]), np.int64(3), "3",
                                    "x", np.bool_(True))] == \
        ["missing", "missing", "missing", "missing", "missing", "nonscalar", "number", "number_text", "text", "boolean"]
