"""`rankwise plan` on the embedded MiniLM: the numbers the foundation issue promises, PEFT's own count for
LoRA, and a custom rank file reflected row by row (its reflection in trained tensors is in train/test_train.py)."""

import csv
import json

import pytest

from conftest import run_cli


def plan_json(tmp_path, *args) -> dict:
    out = tmp_path / "plan.json"
    assert run_cli("plan", "--model", "minilm", "--out", out, *args) == 0
    return json.loads(out.read_text())


def test_minilm_loraxs_rank25_is_24_matrices_and_15000_parameters(tmp_path, capsys):
    plan = plan_json(tmp_path, "--method", "loraxs", "--rank", "25")
    rows = plan["matrices"]
    assert len(rows) == 24 and {r["rank"] for r in rows} == {25}
    assert plan["totals"]["adapter_parameters"] == 15_000
    assert sum(r["kind"] == "attention" for r in rows) == 18  # query, value, attention.output.dense per layer
    table = capsys.readouterr().out
    assert "24 matrices (loraxs, uniform): adapter 15,000 parameters" in table
    assert table.count("bert.encoder.layer.") == 24


def test_minilm_lora_rank8_matches_peft_count(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from rankwise.models import resolve_model

    plan = plan_json(tmp_path, "--method", "lora", "--rank", "8")
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=2)
    # The head rankwise trains for a BERT classifier: classifier + pooler (see models.head_modules).
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["query", "value", "attention.output.dense",
                                                                       "output.dense"], task_type="SEQ_CLS",
                                                  modules_to_save=["classifier", "bert.pooler"]))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    lora_only = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert plan["totals"]["trainable_parameters"] == trainable  # adapter + head, as PEFT counts them
    assert plan["totals"]["adapter_parameters"] == lora_only
    assert plan["totals"]["head_parameters"] == 384 * 384 + 384 + 384 * 2 + 2  # pooler dense + classifier
    # per layer: query, value, attention.output.dense are 384→384, output.dense is 1536→384
    assert plan["totals"]["adapter_parameters"] == 6 * 8 * (3 * (384 + 384) + (1536 + 384)) == 202_752


def test_custom_rank_file_is_reflected_in_every_row(tmp_path):
    rank_file = tmp_path / "ranks.yaml"
    rank_file.write_text("layer_ranks: [2, 4, 6, 8, 10, 12]\nmodule_ranks:\n  'layer\\.5\\.output\\.dense$': 3\n")
    out = tmp_path / "plan.csv"
    assert run_cli("plan", "--model", "minilm", "--method", "loraxs", "--allocation", "custom",
                   "--rank_file", rank_file, "--out", out) == 0
    rows = list(csv.DictReader(out.open()))
    for row in rows:
        expected = 3 if row["name"] == "bert.encoder.layer.5.output.dense" else [2, 4, 6, 8, 10, 12][int(row["layer"])]
        assert int(row["rank"]) == expected and int(row["parameters"]) == expected ** 2


@pytest.mark.parametrize("args,expected", [
    (["--allocation", "custom", "--rank_file", "{ranks}"], "`layer_ranks` in `{ranks}` has 3 entries but the model "
                                                           "has 6 layers"),
    (["--allocation", "learned", "--rank_min", "5", "--rank_max", "30", "--memory_start", "30000",
      "--memory_end", "60000", "--epochs_memory_start", "1", "--epochs_memory_start_to_end", "1"],
     "--memory_start: budget 30,000 is outside what 24 target matrices can hold with ranks in [5, 30]: [600, 21,600]"),
])
def test_model_dependent_errors(tmp_path, capsys, args, expected):
    ranks = tmp_path / "short.json"
    ranks.write_text(json.dumps({"layer_ranks": [4, 4, 4]}))
    args = [a.replace("{ranks}", str(ranks)) for a in args]
    out = tmp_path / "plan.json"
    assert run_cli("plan", "--model", "minilm", "--method", "loraxs", "--out", out, *args) == 2
    assert expected.replace("{ranks}", str(ranks)) in capsys.readouterr().err
    assert not out.exists()
