"""DoRA (`--method dora`, PEFT's LoraConfig(use_dora=True)), the method added through the registry alone: the plan
counts what PEFT trains (magnitude vectors included), budgets match with them, a run trains, reloads, exports as
peft (plain PEFT loads it) and merged (plain transformers), evaluates, reports, and joins a sweep."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification

from conftest import run_cli
from rankwise.config import RunConfig
from rankwise.methods import get_method
from rankwise.runs.rundir import read_jsonl
from rankwise.train import setup_run, train

TOL = 1e-5
TARGETS = ["query", "value", "attention.output.dense", "output.dense"]


def plan_json(tmp_path, model, *args) -> dict:
    out = tmp_path / "plan.json"
    assert run_cli("plan", "--model", model, "--out", out, *args) == 0
    return json.loads(out.read_text())


def peft_dora_counts(model_dir, rank_pattern: dict[str, int], rank: int) -> tuple[int, int]:
    """(adapter parameters, trainable parameters) of PEFT's own DoRA model with rankwise's head."""
    from peft import LoraConfig, get_peft_model

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    peft_model = get_peft_model(model, LoraConfig(r=rank, rank_pattern=rank_pattern, target_modules=TARGETS,
                                                  use_dora=True, task_type="SEQ_CLS",
                                                  modules_to_save=["classifier", "bert.pooler"]))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    adapter = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n and p.requires_grad)
    return adapter, trainable


def test_plan_counts_what_peft_trains_magnitude_vectors_included(tmp_path):
    from rankwise.models import resolve_model

    plan = plan_json(tmp_path, "minilm", "--method", "dora", "--rank", "8")
    adapter, trainable = peft_dora_counts(resolve_model("minilm"), {}, 8)
    assert plan["totals"]["adapter_parameters"] == adapter
    assert plan["totals"]["trainable_parameters"] == trainable
    # per layer: three 384→384 matrices and 1536→384, each r·(in+out) plus a magnitude per output (384)
    assert adapter == 6 * (8 * (3 * 768 + 1920) + 4 * 384) == 211_968


def test_static_strategy_with_match_budget_counts_magnitudes(tmp_path, tiny_bert_dir):
    uniform = plan_json(tmp_path, str(tiny_bert_dir), "--method", "dora", "--rank", "4")
    matched = plan_json(tmp_path, str(tiny_bert_dir), "--method", "dora", "--allocation", "linear_decay",
                        "--rank_first", "8", "--rank_last", "2", "--match_budget", "--rank", "4")
    ranks = [r["rank"] for r in matched["matrices"]]
    assert ranks[0] > ranks[-1]  # the strategy's shape survives the rescaling
    budget = uniform["totals"]["adapter_parameters"]
    assert matched["totals"]["adapter_parameters"] <= budget  # rounding stays within the budget ...
    cheapest = min(t["in_features"] + t["out_features"] for t in matched["matrices"])
    assert budget - matched["totals"]["adapter_parameters"] < 2 * cheapest  # ... and spends it
    pattern = {r["name"]: r["rank"] for r in matched["matrices"]}
    adapter, _ = peft_dora_counts(tiny_bert_dir, pattern, 4)
    assert matched["totals"]["adapter_parameters"] == adapter  # PEFT's count at the same ranks
    cost = get_method("dora").rank_cost([type("T", (), m) for m in matched["matrices"]])
    assert cost.total(torch.tensor(ranks, dtype=torch.float64)) == pytest.approx(adapter, abs=1e-6)


@pytest.fixture(scope="module")
def dora_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dora") / "run"
    cfg = RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="cola", output_dir=str(out),
                    num_train_epochs=2, per_device_train_batch_size=16, logging_steps=2, quiet=True,
                    learning_rate=5e-3, method="dora", allocation="attention_heavy", rank_attention=6, rank_mlp=2)
    setup = setup_run(cfg)
    summary = train(setup.cfg, setup)
    assert summary["status"] == "completed"
    return out, setup, summary


def test_a_dora_run_trains_its_magnitudes_and_reloads_to_the_same_logits(dora_run, tiny_bert_dir, tiny_glue_dir):
    import rankwise
    from conftest import dev_batch, logits

    out, setup, summary = dora_run
    magnitudes = [p for n, p in setup.adapter.model.named_parameters() if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 12 and all(p.requires_grad for p in magnitudes)
    assert summary["trainable_parameters"]["adapter"] == setup.plan.adapter_parameters  # plan = what trained
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["rank_pattern"]
    batch = dev_batch(tiny_bert_dir, tiny_glue_dir)
    trained = logits(setup.adapter.model, batch)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    reloaded = rankwise.load_adapter(base, out / "adapter")
    assert reloaded.method.name == "dora"
    assert torch.allclose(logits(reloaded.model, batch), trained, atol=TOL, rtol=0)


def test_dora_exports_peft_and_merged_that_load_without_rankwise(dora_run, tiny_bert_dir, tiny_glue_dir, tmp_path):
    from conftest import dev_batch, logits

    out, setup, _ = dora_run
    batch = dev_batch(tiny_bert_dir, tiny_glue_dir)
    trained = logits(setup.adapter.model, batch)
    assert run_cli("export", out, "--format", "peft", "--out", tmp_path / "peft") == 0
    assert run_cli("export", out, "--format", "merged", "--out", tmp_path / "merged") == 0
    record = json.loads((tmp_path / "peft" / "export.json").read_text())
    assert record["adapter_parameters"]["counted_as"] == "r*(in+out)+out per matrix"
    assert record["adapter_parameters"]["after"] == setup.plan.adapter_parameters
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert torch.allclose(logits(merged, batch), trained, atol=TOL, rtol=0)
    torch.save(batch, tmp_path / "batch.pt")
    script = (  # plain PEFT in a fresh interpreter: no rankwise import
        "import sys, torch\nfrom peft import PeftModel\nfrom transformers import AutoModelForSequenceClassification\n"
        f"base = AutoModelForSequenceClassification.from_pretrained({str(tiny_bert_dir)!r}, num_labels=2)\n"
        f"model = PeftModel.from_pretrained(base, {str(tmp_path / 'peft')!r}).eval()\n"
        f"batch = torch.load({str(tmp_path / 'batch.pt')!r})\n"
        "with torch.no_grad():\n    torch.save(model(**batch).logits, sys.argv[1])\n"
        "assert 'rankwise' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "peft_logits.pt")], check=True)
    assert torch.allclose(torch.load(tmp_path / "peft_logits.pt"), trained, atol=TOL, rtol=0)


def test_evaluate_reproduces_the_runs_final_metrics(dora_run, tmp_path, capsys):
    out, _, summary = dora_run
    assert run_cli("evaluate", "--adapter", out, "--out", tmp_path / "m.json") == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["eval_loss"] == pytest.approx(summary["final"]["eval_loss"], abs=1e-5)


def test_masked_dora_layer_equals_its_definition():
    """Rank masks on DoRA: the layer computes m ⊙ V x / ‖V‖_c with V = W + s·B·diag(q)·A, the weight norm
    included (PEFT computes it through lora_A's forward, where the mask hook sits)."""
    from transformers import BertConfig, BertForSequenceClassification

    from rankwise.targets import find_targets

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=24))
    targets = find_targets(model, None)
    adapter = get_method("dora").build(model, targets, [6] * len(targets), [6.0] * len(targets))
    layer = adapter.modules[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
        layer.lora_magnitude_vector["default"].weight.mul_(1.3)
    keep = torch.rand(len(targets), 6, generator=torch.Generator().manual_seed(1))
    keep[:, 4:] = 0.0
    adapter.set_keep(keep)
    x = torch.randn(3, 5, 16)
    layer.eval()
    with torch.no_grad():
        out = layer(x)
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        v = layer.base_layer.weight + layer.scaling["default"] * b @ torch.diag(keep[0]) @ a
        m = layer.lora_magnitude_vector["default"].weight
        expected = (x @ v.T) * (m / v.norm(dim=1)) + layer.base_layer.bias
        assert torch.allclose(out, expected, atol=1e-5)
        adapter.set_keep(None)  # unmasked: a different norm and output
        assert not torch.allclose(layer(x), out, atol=1e-3)


def test_dora_refuses_the_compact_format(dora_run, tmp_path, capsys):
    assert run_cli("export", dora_run[0], "--format", "compact", "--out", tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "`compact` needs a `loraxs` run (or `lora` one)" in err and "--format peft" in err


def test_report_names_dora_runs(dora_run, tmp_path):
    from rankwise.report.aggregate import load_runs

    runs = load_runs([dora_run[0]])
    assert runs.loc[0, "method"] == "dora" and runs.loc[0, "label"].startswith("DoRA")
    assert runs.loc[0, "params_adapter"] == dora_run[2]["trainable_parameters"]["adapter"]


def test_a_budget_matched_dora_arm_joins_a_sweep(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    base = {"model": str(tiny_bert_dir), "data_dir": str(tiny_glue_dir), "task": "cola", "num_train_epochs": 1,
            "per_device_train_batch_size": 32, "quiet": True, "rank": 3, "target_modules": "query,value"}
    sweep.write_text(yaml.safe_dump({"base": base, "output_dir": str(tmp_path / "runs"), "variants": [
        {"label": "LoRA r3", "method": "lora"},
        {"label": "DoRA linear decay, LoRA r3's budget", "method": "dora", "allocation": "linear_decay",
         "rank_first": 3, "rank_last": 1, "match_budget": True, "budget": 6 * 3 * (32 + 32)}]}))
    assert run_cli("sweep", sweep) == 0
    runs = sorted((tmp_path / "runs").glob("cola_*"))
    summaries = {json.loads((r / "config.json").read_text())["config"]["method"]: json.loads(
        (r / "summary.json").read_text()) for r in runs}
    assert {m: s["status"] for m, s in summaries.items()} == {"lora": "completed", "dora": "completed"}
    lora, dora = (summaries[m]["trainable_parameters"]["adapter"] for m in ("lora", "dora"))
    assert lora == 1152 and lora - 64 < dora <= lora  # LoRA r3's count, magnitudes included, within one rank step
    assert [r["type"] for r in read_jsonl(runs[0] / "metrics.jsonl")].count("eval") == 1


@pytest.fixture(scope="module")
def learned_dora_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    """Learned allocation on DoRA (random allocation init, so the hard ranks differ): trained at rank_max 8."""
    out = tmp_path_factory.mktemp("learned_dora") / "run"
    cfg = RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="cola", output_dir=str(out),
                    num_train_epochs=2, per_device_train_batch_size=16, logging_steps=2, quiet=True,
                    learning_rate=5e-3, method="dora", allocation="learned", rank_min=2, rank_max=8, rank_average=5,
                    rank_allocation_lr=0.05, rank_allocation_weights_init="random")
    setup = setup_run(cfg)
    summary = train(setup.cfg, setup)
    return out, setup, summary


def test_a_learned_dora_run_exports_at_its_hard_ranks(learned_dora_run, tiny_bert_dir, tiny_glue_dir, tmp_path):
    """Learned allocation on DoRA trains at rank_max under masks: peft and merged exports are cut to the hard ranks
    (A, B and the magnitudes) and give the trained model's logits without rankwise's masks."""
    from peft import PeftModel

    import rankwise
    from conftest import dev_batch, logits

    out, setup, summary = learned_dora_run
    hard = list(summary["hard_ranks"].values())
    assert min(hard) < 8 and len(set(hard)) > 1  # masks cut the adapters, unevenly
    batch = dev_batch(tiny_bert_dir, tiny_glue_dir)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    trained = logits(rankwise.load_adapter(base, out / "adapter").model, batch)  # masks at the hard ranks
    assert run_cli("export", out, "--format", "peft", "--out", tmp_path / "peft") == 0
    assert run_cli("export", out, "--format", "merged", "--out", tmp_path / "merged") == 0
    record = json.loads((tmp_path / "peft" / "export.json").read_text())
    assert list(record["hard_ranks"].values()) == hard
    rows = setup.plan.rows
    assert record["adapter_parameters"]["after"] == sum(r * (t.in_features + t.out_features) + t.out_features
                                                       for r, t in zip(hard, rows))
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    plain = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2),
                                      str(tmp_path / "peft"))
    assert torch.allclose(logits(plain, batch), trained, atol=TOL, rtol=0)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert torch.allclose(logits(merged, batch), trained, atol=TOL, rtol=0)


def test_the_export_check_loads_a_peft_export_with_peft_alone(learned_dora_run, tmp_path, monkeypatch):
    """A learned DoRA run copied as trained (at rank_max, its hard ranks only in rankwise.json) would reload through
    rankwise to the right logits, but not through plain PEFT: the export check refuses it and writes nothing."""
    from rankwise.methods.dora import Dora

    monkeypatch.setattr(Dora, "export_style", "as_trained")  # the mistake this check must catch
    with pytest.raises(RuntimeError, match="export check failed: the reloaded peft export's logits differ"):
        run_cli("export", learned_dora_run[0], "--format", "peft", "--out", tmp_path / "peft")
    assert not (tmp_path / "peft").exists()
