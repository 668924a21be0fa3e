"""End-to-end training on a tiny random BERT with synthetic GLUE files: run directory, determinism,
divergence guard, reload, and ranks that reach the adapter tensors exactly."""

import json

import pytest
import torch

from conftest import run_cli, tiny_cfg
from rankwise.runs.rundir import read_jsonl, read_summary
from rankwise.train import run_training


def test_run_directory_contract(tiny_bert_dir, tiny_glue_dir, tmp_path):
    out = tmp_path / "run"
    summary = run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out))
    assert summary["status"] == "completed"
    assert {p.name for p in out.iterdir()} == {"config.json", "ranks.json", "metrics.jsonl", "summary.json", "adapter"}
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["rank"] == 25 and config["environment"]["torch"] == torch.__version__
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2]
    assert summary["final"]["eval_matthews_correlation"] == evals[-1]["eval_matthews_correlation"]
    assert summary["best"]["eval_matthews_correlation"] == max(e["eval_matthews_correlation"] for e in evals)
    assert summary["steps"] == 2 * 6 and summary["trainable_parameters"]["adapter"] == 12 * 25 * 25
    assert read_summary(out) == json.loads((out / "summary.json").read_text())
    modes = {f.name: f.stat().st_mode & 0o777 for f in out.rglob("*") if f.is_file()}
    assert all(mode & 0o044 == 0o044 for mode in modes.values()), modes  # group/others can read every result


def test_same_seed_same_metrics_and_other_seed_differs(tiny_bert_dir, tiny_glue_dir, tmp_path):
    def metrics(out, seed):
        run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, seed=seed, num_train_epochs=1))
        return [(r.get("loss"), r.get("eval_loss")) for r in read_jsonl(out / "metrics.jsonl")]

    first, second = metrics(tmp_path / "a", 3), metrics(tmp_path / "b", 3)
    assert first == second
    assert metrics(tmp_path / "c", 4) != first


def test_finished_run_is_never_overwritten(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, num_train_epochs=1))
    before = (out / "summary.json").read_text()
    code = run_cli("train", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--output_dir", out, "--quiet")
    assert code == 2 and "already holds a finished run" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before


def test_divergence_guard_skips_nonfinite_steps_and_ends_diverged(tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch):
    """Inject NaN into the classifier's output after the 3rd forward: every later step is non-finite."""
    from rankwise.data import classification as tasks

    original = tasks.load_classifier
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        model = original(*args, **kwargs)

        def hook(_module, _inputs, output):
            calls["n"] += 1
            return output * float("nan") if calls["n"] > 3 and _module.training else output

        model.classifier.register_forward_hook(hook)
        return model

    monkeypatch.setattr(tasks, "load_classifier", poisoned)
    out = tmp_path / "run"
    summary = run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, max_bad_steps=4, num_train_epochs=3))
    assert summary["status"] == "diverged"
    # Steps 4 on are non-finite; the guard's counters are read on logging steps (every 2nd step here), so the 4th
    # bad step in a row (step 7) is seen at step 8, with 5 steps skipped.
    assert summary["skipped_steps"] == 5 and summary["steps"] == 8
    assert "for 5 consecutive steps (up to step 8" in summary["message"]
    assert "learning rate" in summary["message"] and "alpha/r" in summary["message"]
    assert "NaN" not in (out / "summary.json").read_text()
    assert not (out / "adapter").exists()


@pytest.mark.parametrize("method", ["loraxs", "lora"])
def test_custom_ranks_reach_adapter_tensors_and_reload_gives_same_logits(method, tiny_bert_dir, tiny_glue_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    import rankwise
    from rankwise.data import encode_classification, load_glue
    from rankwise.models import load_tokenizer

    rank_file = tmp_path / "ranks.json"
    rank_file.write_text(json.dumps({"layer_ranks": [2, 5, 3], "module_ranks": {r"layer\.1\.output\.dense": 7}}))
    out = tmp_path / method
    summary = run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, method=method, allocation="custom",
                                    rank_file=str(rank_file), num_train_epochs=1))
    expected = {0: 2, 1: 5, 2: 3}
    ranks = json.loads((out / "ranks.json").read_text())["matrices"]
    for row in ranks:
        want = 7 if row["name"].endswith("layer.1.output.dense") else expected[row["layer"]]
        assert row["rank"] == want, row["name"]

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    adapter = rankwise.load_adapter(base, out / "adapter")
    for row, module in zip(ranks, adapter.modules):
        if method == "loraxs":
            assert tuple(module.lora_R.shape) == (row["rank"], row["rank"])
        else:
            assert module.lora_A["default"].weight.shape[0] == row["rank"]
            assert module.lora_B["default"].weight.shape[1] == row["rank"]

    # Same logits as the run's last evaluation: compare eval loss recomputed from the reloaded model.
    data = load_glue("cola", str(tiny_glue_dir))
    tok = load_tokenizer(str(tiny_bert_dir))
    feats = encode_classification(data.evals["eval"], tok, 128, regression=False)
    from transformers import DataCollatorWithPadding

    batch = DataCollatorWithPadding(tok)(feats)
    adapter.model.eval()
    with torch.no_grad():
        loss = adapter.model(**batch).loss.item()
    assert loss == pytest.approx(summary["final"]["eval_loss"], abs=1e-5)
