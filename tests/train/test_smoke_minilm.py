"""A real MiniLM run on a small slice of the real CoLA files, through the command line, as a user runs it:
the run directory is complete, metrics are finite, and the saved adapter reproduces the recorded eval loss."""

import json

import pytest
import torch

from conftest import run_cli, shared_glue
from rankwise.runs.rundir import read_jsonl, read_summary


@pytest.mark.slow
def test_minilm_loraxs_on_a_slice_of_real_cola(tmp_path):
    from transformers import DataCollatorWithPadding

    import rankwise
    from rankwise.data import encode_classification, load_glue
    from rankwise.models import load_classifier, load_tokenizer

    glue = shared_glue()
    out = tmp_path / "run"
    code = run_cli("train", "--task", "cola", "--model", "minilm", "--method", "loraxs", "--rank", "25",
                   "--data_dir", glue, "--max_train_samples", "96", "--max_eval_samples", "64",
                   "--num_train_epochs", "1", "--logging_steps", "1", "--output_dir", out, "--quiet")
    assert code == 0
    summary = read_summary(out)
    assert summary["status"] == "completed" and summary["steps"] == 3
    assert summary["trainable_parameters"] == {"adapter": 15_000, "head": 148_610, "allocation": 0,
                                               "adapter_at_hard_ranks": 15_000}
    final = summary["final"]
    assert 0.0 < final["eval_loss"] < 5.0 and -1.0 <= final["eval_matthews_correlation"] <= 1.0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "train"] == [1, 2, 3]
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["train_examples"] == 96 and config["data"]["eval_examples"] == {"eval": 64}

    model = load_classifier("minilm", num_labels=2, regression=False)
    adapter = rankwise.load_adapter(model, out / "adapter")
    tokenizer = load_tokenizer("minilm")
    dev = load_glue("cola", str(glue)).evals["eval"][:64]
    batch = DataCollatorWithPadding(tokenizer)(encode_classification(dev, tokenizer, 128, regression=False))
    adapter.model.eval()
    with torch.no_grad():
        loss = adapter.model(**batch).loss.item()
    assert loss == pytest.approx(final["eval_loss"], abs=1e-5)
