"""Your own data (`--task text`): CSV, TSV, JSON, JSONL and Parquet files and `datasets` directories, columns by
name, labels as names or numbers (recorded), regression from float targets, a held-out split that is the same for
every seed, the metrics, the LR-ratio study's AG News draw, and every kind of bad file refused before any work."""

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from conftest import run_cli
from rankwise.config import RunConfig, prepare
from rankwise.data.files import SPLIT_SEED, load_text_data, read_rows, text_metrics
from rankwise.runs.rundir import read_jsonl, read_summary

WORDS = "the a cat dog sat ran on mat big small red blue quickly slowly house tree".split()


def rows(n=90, seed=0, regression=False):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        label = round(rng.uniform(0, 5), 3) if regression else ("urgent" if "cat" in text else
                                                                  "billing" if "dog" in text else "other")
        out.append({"id": i, "review": text, "label": label})
    return out


def write(path: Path, records: list[dict]) -> Path:
    kind = path.suffix
    if kind in (".csv", ".tsv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]), delimiter="\t" if kind == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(records)
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif kind == ".json":
        path.write_text(json.dumps({k: [r[k] for r in records] for k in records[0]}))  # column-oriented
    else:
        import pandas as pd

        pd.DataFrame(records).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_examples(suffix, tmp_path):
    records = rows()
    data = load_text_data(prepare(RunConfig(train_file=str(write(tmp_path / f"d{suffix}", records)),
                                            text_column="review")))
    reference = load_text_data(prepare(RunConfig(train_file=str(write(tmp_path / "r.jsonl", records)),
                                                 text_column="review")))
    assert [(e.texts, e.label) for e in data.train] == [(e.texts, e.label) for e in reference.train]
    assert data.label_names == ["billing", "other", "urgent"] and not data.regression
    assert len(data.train) + len(data.evals["eval"]) == 90


def test_the_held_out_split_is_fixed_whatever_the_seed(tmp_path):
    path = write(tmp_path / "d.csv", rows())
    splits = [load_text_data(prepare(RunConfig(train_file=str(path), text_column="review", seed=seed,
                                               validation_split=0.2)))
              for seed in (0, 7)]
    assert [e.texts for e in splits[0].evals["eval"]] == [e.texts for e in splits[1].evals["eval"]]
    assert len(splits[0].evals["eval"]) == 18 and f"seed {SPLIT_SEED}" in splits[0].source


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    gold, predictions = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert text_metrics(predictions, gold, 3) == pytest.approx({
        "accuracy": accuracy_score(gold, predictions), "matthews_correlation": matthews_corrcoef(gold, predictions),
        "macro_f1": f1_score(gold, predictions, average="macro")})
    binary = text_metrics(predictions % 2, gold % 2, 2)
    assert binary["f1"] == pytest.approx(f1_score(gold % 2, predictions % 2)) and "macro_f1" not in binary


def test_a_csv_trains_exports_and_predicts_with_its_label_names(tiny_bert_dir, tmp_path, capsys):
    """The README's "your own data" example, on a tiny model."""
    train = write(tmp_path / "tickets.csv", rows(120))
    test = write(tmp_path / "new_tickets.csv", [{"review": r["review"]} for r in rows(10, seed=5)])
    run = tmp_path / "run"
    assert run_cli("train", "--model", tiny_bert_dir, "--train_file", train, "--text_column", "review",
                   "--method", "lora", "--rank", "4", "--num_train_epochs", "2", "--learning_rate", "1e-2",
                   "--output_dir", run, "--quiet") == 0
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["task"] == "text"
    assert config["data"]["label_names"] == ["billing", "other", "urgent"]
    assert config["data"]["columns"] == {"text": "review", "text_pair": None, "label": "label"}
    evals = [r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "eval"]
    assert {"eval_accuracy", "eval_macro_f1", "eval_matthews_correlation"} <= set(evals[-1])
    assert read_summary(run)["main_metric"] == "eval_accuracy"
    assert run_cli("export", run, "--format", "merged", "--out", tmp_path / "merged") == 0
    assert run_cli("predict", "--model", tmp_path / "merged", "--input", test, "--out", tmp_path / "p.jsonl") == 0
    predictions = read_jsonl(tmp_path / "p.jsonl")
    assert len(predictions) == 10 and all(p["prediction"] in ("billing", "other", "urgent") for p in predictions)
    assert all(set(p["probabilities"]) == {"billing", "other", "urgent"} for p in predictions)
    assert run_cli("predict", "--adapter", run, "--input", test, "--out", tmp_path / "q.jsonl") == 0
    assert [p["prediction"] for p in read_jsonl(tmp_path / "q.jsonl")] == [p["prediction"] for p in predictions]


def test_float_targets_are_a_regression_scored_by_pearson(tiny_bert_dir, tmp_path):
    train = write(tmp_path / "scores.jsonl", rows(80, regression=True))
    valid = write(tmp_path / "valid.jsonl", rows(20, seed=3, regression=True))
    run = tmp_path / "run"
    assert run_cli("train", "--model", tiny_bert_dir, "--train_file", train, "--validation_file", valid,
                   "--text_column", "review", "--num_train_epochs", "1", "--output_dir", run, "--quiet") == 0
    summary, config = read_summary(run), json.loads((run / "config.json").read_text())
    assert config["data"]["problem_type"] == "regression" and config["data"]["label_names"] is None
    assert summary["main_metric"] == "eval_pearson" and "eval_spearmanr" in summary["final"]
    assert config["data"]["eval_examples"] == {"eval": 20}


def test_ag_news_from_local_files_is_the_studys_draw(tiny_bert_dir, tmp_path):
    """`--dataset ag_news` on a directory in the hub's layout (train/test files, text + label): the training split
    cut 90/10 with seed 36 as the LR-ratio study does, its test split kept."""
    import datasets

    root = tmp_path / "ag_news"
    root.mkdir()
    records = [{"text": f"news item {i} " + " ".join(random.Random(i).choice(WORDS) for _ in range(5)),
                "label": i % 4} for i in range(300)]
    write(root / "train.jsonl", records)
    write(root / "test.jsonl", records[:40])
    data = load_text_data(prepare(RunConfig(dataset=str(root))))
    expected = datasets.Dataset.from_list(records).train_test_split(test_size=0.1, seed=36)
    assert [e.texts[0] for e in data.evals["eval"]] == expected["test"]["text"]
    assert [e.texts[0] for e in data.train] == expected["train"]["text"]
    assert len(data.test) == 40 and data.label_names == ["0", "1", "2", "3"]
    assert "seed 36" in data.source


@pytest.mark.parametrize("content,extra,expected", [
    ("id,body,label\n1,hello,a\n2,world,b\n", [], "no text column among the defaults (text, sentence"),
    ("id,body,label\n1,hello,a\n2,world,b\n", ["--text_column", "txt"], "no column `txt` (--text_column). "
                                                                         "Columns found: id, body, label"),
    ("text,category\nhello,a\nworld,b\n", [], "no label column `label`. Columns found: text, category"),
    ("text,label\n", [], "has no examples"),
    ("text,label\nhello,a\nworld,a\nagain,a\n", [], "the label column `label` has one class (`a`)"),
    ("text,label\n,a\n,b\n,a\n,b\n", [], "the text column `text` is empty in every row"),
    ("text,label\nhello,a\nworld,b,c\n", [], "line 3: 3 fields, but the header has 2"),
])
def test_bad_files_are_refused_before_any_work(content, extra, expected, tiny_bert_dir, tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text(content)
    out = tmp_path / "run"
    assert run_cli("train", "--model", tiny_bert_dir, "--train_file", path, *extra, "--output_dir", out) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("lines,expected", [
    (['{"text": "a", "label": 0.5}', '{"text": "b", "label": NaN}', '{"text": "c", "label": 1.5}'],
     "the label (`label`) is missing in 1 of 3 rows: line 2 (`nan`)"),
    (['{"text": "a", "label": 1}', '{"text": "b", "label": "spam"}'], "line 2: label `spam` is text but the first"),
    (['{"text": "a", "label": 1}', '{"text": "b" "label": 2}'], "line 2: not valid JSON"),
])
def test_bad_jsonl_labels_and_lines_name_the_line(lines, expected, tiny_bert_dir, tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert run_cli("train", "--model", tiny_bert_dir, "--train_file", path, "--output_dir", tmp_path / "r") == 2
    assert expected in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_glue_task_with_a_train_file_is_refused_and_read_rows_reports_lines(tmp_path, capsys, tiny_bert_dir):
    path = write(tmp_path / "d.csv", rows(10))
    assert run_cli("train", "--task", "sst2", "--model", tiny_bert_dir, "--train_file", path,
                   "--output_dir", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "--train_file: is not read by GLUE task `sst2`" in err and "drop --task (or use --task text)" in err
    assert [r["__line__"] for r in read_rows(path)][:3] == [2, 3, 4]  # CSV lines count the header


def test_evaluate_reproduces_the_final_metrics_of_an_own_data_run(tiny_bert_dir, tmp_path):
    train = write(tmp_path / "tickets.csv", rows(80))
    run = tmp_path / "run"
    assert run_cli("train", "--model", tiny_bert_dir, "--train_file", train, "--text_column", "review",
                   "--num_train_epochs", "1", "--output_dir", run, "--quiet") == 0
    assert run_cli("evaluate", "--adapter", run, "--out", tmp_path / "m.json") == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    final = read_summary(run)["final"]
    for key in ("eval_loss", "eval_accuracy", "eval_macro_f1"):
        assert metrics[key] == pytest.approx(final[key], abs=1e-5)


def test_plan_of_own_data_sizes_the_head_from_its_labels_and_names_a_bad_file(tiny_bert_dir, tmp_path, capsys):
    path = write(tmp_path / "d.csv", rows(30))
    assert run_cli("plan", "--model", tiny_bert_dir, "--train_file", path, "--text_column", "review",
                   "--out", tmp_path / "plan.json") == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["totals"]["head_parameters"] == 32 * 32 + 32 + 32 * 3 + 3  # pooler + a 3-class classifier
    other = write(tmp_path / "e.csv", [{"body": r["review"], "label": r["label"]} for r in rows(30)])
    assert run_cli("plan", "--model", tiny_bert_dir, "--train_file", other) == 2
    err = capsys.readouterr().err
    assert "no text column among the defaults" in err and "could not load model" not in err


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("template", [True, False])
def test_chat_records_learn_the_assistants_tokens_only(template, tiny_llama_dir, tmp_path):
    """Chat-format JSONL (`messages`, as TRL's SFT datasets): the tokenizer's chat template when it has one (else a
    plain transcript), labels on every assistant reply and nothing else."""
    from rankwise.data.instruct import IGNORE_INDEX, encode_instruct, load_alpaca
    from rankwise.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_llama_dir))
    tokenizer.chat_template = CHATML if template else None
    record = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "name a pet"},
                           {"role": "assistant", "content": "a cat"}, {"role": "user", "content": "another"},
                           {"role": "assistant", "content": "a dog"}]}
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(record) + "\n")
    [example] = load_alpaca(path)
    assert example.instruction == "another" and example.output == "a dog"
    [feature], dropped = encode_instruct([example], tokenizer, 512)
    learned = tokenizer.decode([t for t, label in zip(feature["input_ids"], feature["labels"]) if label != IGNORE_INDEX])
    assert dropped == 0 and "cat" in learned and "dog" in learned
    assert "pet" not in learned and "brief" not in learned and "another" not in learned
    from rankwise.data.instruct import chat_segments

    pieces = chat_segments(example.messages, tokenizer)
    assert [text for text, learned in pieces if learned][0].startswith("a cat")
    if template:  # the pieces put together are exactly the template's rendering of the conversation
        assert "".join(text for text, _ in pieces) == tokenizer.apply_chat_template(record["messages"], tokenize=False)


def test_a_chat_file_trains_an_instruction_run(tiny_llama_dir, tmp_path):
    records = [{"messages": [{"role": "user", "content": f"say {w}"}, {"role": "assistant", "content": w}]}
               for w in WORDS * 4]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    run = tmp_path / "run"
    assert run_cli("train", "--task", "alpaca", "--model", tiny_llama_dir, "--train_file", path, "--method", "lora",
                   "--rank", "2", "--num_train_epochs", "1", "--eval_size", "8", "--num_generations", "1",
                   "--output_dir", run, "--quiet") == 0
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["final"]["eval_tokens"] > 0
    assert len(read_jsonl(run / "generations.jsonl")) == 1
