"""Predictions keyed by label names for every task (issue 35): `prediction` and the keys of `probabilities` are the
model's label names (GLUE's, e.g. CoLA's unacceptable/acceptable, as the exports' id2label), with the output index
in `label_id`; `.csv` holds the same as a table; GLUE's submission `.tsv` keeps each task's own values (CoLA 0/1,
RTE entailment/not_entailment)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from transformers import DataCollatorWithPadding

import rankwise
from conftest import run_cli
from rankwise.data import GLUE_TASKS, load_glue
from rankwise.models import load_tokenizer
from rankwise.ship.predict import _labels, write_predictions
from rankwise.ship.source import GLUE_LABEL_NAMES


def test_every_glue_classification_task_names_its_labels_and_its_tsv_keeps_glues_values(tmp_path):
    classification = [name for name, task in GLUE_TASKS.items() if not task.is_regression]
    assert sorted(classification) == sorted(GLUE_LABEL_NAMES)  # every classification task has names
    for name in classification:
        labels, regression = _labels(name, model=None)
        assert labels == list(GLUE_LABEL_NAMES[name]) and regression is False
        assert len(labels) == GLUE_TASKS[name].num_labels
        records = [{"index": i, "prediction": labels[i], "label_id": i,
                    "probabilities": {label: float(label == labels[i]) for label in labels}}
                   for i in range(len(labels))]
        write_predictions(tmp_path / f"{name}.tsv", records, name)
        rows = (tmp_path / f"{name}.tsv").read_text().splitlines()
        assert rows[0] == "index\tprediction"
        assert [r.split("\t")[1] for r in rows[1:]] == list(GLUE_TASKS[name].labels)  # the GLUE server's values
    assert GLUE_LABEL_NAMES["cola"] == ("unacceptable", "acceptable") and GLUE_TASKS["cola"].labels == ("0", "1")
    assert _labels("stsb", model=None) == ([], True)

    # STS-B: scores, in every format.
    scores = [{"index": 0, "sentence1": "a", "sentence2": "b", "prediction": 3.25}]
    write_predictions(tmp_path / "stsb.tsv", scores, "stsb")
    write_predictions(tmp_path / "stsb.csv", scores, "stsb")
    assert (tmp_path / "stsb.tsv").read_text() == "index\tprediction\n0\t3.25\n"
    assert pd.read_csv(tmp_path / "stsb.csv").to_dict("records") == scores


@pytest.fixture(scope="module")
def cola_export(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cola")
    assert run_cli("train", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "cola", "--output_dir",
                   root / "run", "--quiet", "--method", "loraxs", "--rank", "4", "--num_train_epochs", "1") == 0
    assert run_cli("export", root / "run", "--format", "merged", "--out", root / "merged") == 0
    return root / "merged"


def test_predict_writes_label_names_in_jsonl_and_csv_and_glue_values_in_tsv(cola_export, tiny_bert_dir,
                                                                            tiny_glue_dir, tmp_path):
    dev = load_glue("cola", str(tiny_glue_dir)).evals["eval"][:20]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"idx": i, "sentence": e.texts[0]}) + "\n" for i, e in enumerate(dev)))
    for suffix in ("jsonl", "csv", "tsv"):
        assert run_cli("predict", "--model", cola_export, "--input", inputs, "--out", tmp_path / f"p.{suffix}",
                       "--quiet") == 0

    # What the model says, computed here from the export itself.
    tokenizer = load_tokenizer(str(cola_export))
    batch = DataCollatorWithPadding(tokenizer)([tokenizer(e.texts[0], truncation=True, max_length=128) for e in dev])
    with torch.no_grad():
        probabilities = torch.softmax(rankwise.load(cola_export)(**batch).logits.float(), -1)
    ids = probabilities.argmax(-1).tolist()
    names = ["unacceptable", "acceptable"]

    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in records] == [names[i] for i in ids]
    assert [r["label_id"] for r in records] == ids
    for record, p in zip(records, probabilities):
        assert list(record["probabilities"]) == names
        assert [record["probabilities"][n] for n in names] == pytest.approx(p.tolist(), abs=1e-5)

    table = pd.read_csv(tmp_path / "p.csv", dtype={"index": str})
    assert list(table.columns) == ["index", "sentence", "prediction", "label_id", "probability_unacceptable",
                                   "probability_acceptable"]
    assert table["prediction"].tolist() == [r["prediction"] for r in records]
    assert table["label_id"].tolist() == ids and table["sentence"].tolist() == [e.texts[0] for e in dev]
    assert table[["probability_unacceptable", "probability_acceptable"]].to_numpy() == pytest.approx(
        probabilities.numpy(), abs=1e-5)

    rows = (tmp_path / "p.tsv").read_text().splitlines()
    assert rows[1:] == [f"{i}\t{label}" for i, label in enumerate(ids)]  # GLUE's submission values: 0/1
