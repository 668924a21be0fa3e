"""Export and reuse on tiny random BERTs: every format reloads to the trained model's logits (hard ranks, learned
allocation with ranks that differ per matrix), compact LoRA-XS stores exactly Σ r_i² trainable values, a PEFT
export loads with only transformers + peft, evaluate reproduces the run's final metrics, predict writes what
the model says, and bad input is refused with exit status 2 and nothing written."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BertModel

import rankwise
from conftest import dev_batch, logits, run_cli, tiny_bert_config, tiny_cfg, tiny_gpt2_config
from rankwise.data import load_glue
from rankwise.errors import RunDirError
from rankwise.models import load_tokenizer
from rankwise.train import setup_run, train

TOL = 1e-5


class Trained:
    """A finished run plus the logits its in-memory model (at hard ranks) gives on a dev batch."""

    def __init__(self, tiny_bert_dir, tiny_glue_dir, out, **kw):
        setup = setup_run(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, **kw))
        self.summary = train(setup.cfg, setup)
        assert self.summary["status"] == "completed"
        self.path, self.adapter, self.cfg = out, setup.adapter, setup.cfg
        self.batch = dev_batch(tiny_bert_dir, tiny_glue_dir, kw.get("task", "cola"))
        self.logits = logits(setup.adapter.model, self.batch)
        self.hard_ranks = list(self.summary.get("hard_ranks", {}).values())


LEARNED = dict(allocation="learned", rank_min=2, rank_max=8, rank_average=5,
               rank_allocation_weights_init="random")  # ranks that differ per matrix from the first step


@pytest.fixture(scope="module")
def loraxs_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    # A larger learning rate than LoRA's: the tiny model's SVD factors are small, and the adapter must move the
    # logits far more than the 1e-5 tolerance for the comparisons below to mean anything.
    return Trained(tiny_bert_dir, tiny_glue_dir, tmp_path_factory.mktemp("runs") / "loraxs", method="loraxs",
                   **LEARNED, learning_rate=5e-2)


@pytest.fixture(scope="module")
def lora_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    return Trained(tiny_bert_dir, tiny_glue_dir, tmp_path_factory.mktemp("runs") / "lora", method="lora", **LEARNED)


@pytest.fixture(scope="module")
def lora_rslora_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    return Trained(tiny_bert_dir, tiny_glue_dir, tmp_path_factory.mktemp("runs") / "lora_rs", method="lora",
                   alpha_policy="rslora", lora_alpha=8.0, **LEARNED)


def fresh_base(model_dir, num_labels=2):
    torch.manual_seed(123)  # a different random head than training's: the export's head must replace it
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)


def export(run, fmt, out, *extra):
    code = run_cli("export", run.path, "--format", fmt, "--out", out, *extra)
    assert code == 0
    return json.loads((out / "export.json").read_text())


# ---------------------------------------------------------------------------------------------
# Each format reloads to the trained model's logits
# ---------------------------------------------------------------------------------------------

def test_learned_runs_have_ranks_that_differ_per_matrix(loraxs_run, lora_run):
    for run in (loraxs_run, lora_run):
        assert len(set(run.hard_ranks)) > 1, run.hard_ranks
        assert all(2 <= r <= 8 for r in run.hard_ranks)


def adapter_scales(adapter):
    return [m.scale if adapter.method.name == "loraxs" else m.scaling["default"] for m in adapter.modules]


def set_adapter_scales(adapter, scales):
    for module, scale in zip(adapter.modules, scales):
        if adapter.method.name == "loraxs":
            module.scale = scale
        else:
            module.scaling["default"] = scale


def test_the_adapter_and_its_hard_ranks_move_the_logits_far_beyond_the_tolerance(loraxs_run, lora_run):
    """Guards the logit comparisons: exporting without the adapter, or at rank_max instead of the hard ranks,
    would change the logits by orders of magnitude more than TOL."""
    from rankwise.adapters import hard_keep

    for run in (loraxs_run, lora_run):
        adapter = run.adapter
        adapter.set_keep(None)  # every matrix at rank_max
        at_rank_max = logits(adapter.model, run.batch)
        adapter.set_keep(hard_keep(run.hard_ranks, 8))
        scales = adapter_scales(adapter)
        set_adapter_scales(adapter, [0.0] * len(scales))
        without_adapter = logits(adapter.model, run.batch)
        set_adapter_scales(adapter, scales)
        assert torch.equal(logits(adapter.model, run.batch), run.logits)  # restored
        assert (at_rank_max - run.logits).abs().max() > 100 * TOL, run.cfg.method
        assert (without_adapter - run.logits).abs().max() > 100 * TOL, run.cfg.method


def test_compact_loraxs_has_sum_of_hard_rank_squares_and_same_logits(loraxs_run, tiny_bert_dir, tmp_path):
    out = tmp_path / "compact"
    record = export(loraxs_run, "compact", out)
    hard = loraxs_run.hard_ranks
    n = len(hard)

    tensors = load_file(str(out / "adapter_model.safetensors"))
    r_tensors = {k: v for k, v in tensors.items() if k.endswith(".lora_R")}
    assert len(r_tensors) == n
    assert sum(v.numel() for v in r_tensors.values()) == sum(r * r for r in hard)
    assert record["adapter_parameters"]["after"] == sum(r * r for r in hard)
    assert record["adapter_parameters"]["before"] == n * 8 * 8
    targets = json.loads((loraxs_run.path / "ranks.json").read_text())["matrices"]
    for row, r in zip(targets, hard):
        assert tensors[f"{row['name']}.lora_R"].shape == (r, r)
        assert tensors[f"{row['name']}.lora_A"].shape == (r, row["in_features"])
        assert tensors[f"{row['name']}.lora_B"].shape == (row["out_features"], r)

    # The trained R restricted to its hard-rank block, and the scale α/rank_average it was trained with.
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["scales"] == pytest.approx([16.0 / 5] * n) == loraxs_run.adapter.scales()
    for row, module, r in zip(targets, loraxs_run.adapter.modules, hard):
        assert torch.equal(tensors[f"{row['name']}.lora_R"], module.lora_R.detach()[:r, :r])

    adapter = rankwise.load_adapter(fresh_base(tiny_bert_dir), out)
    assert [m.rank for m in adapter.modules] == hard and all(m.mask is None for m in adapter.modules)
    got = logits(adapter.model, loraxs_run.batch)
    assert torch.allclose(got, loraxs_run.logits, atol=TOL, rtol=0)
    assert record["verified_max_abs_logit_difference"] <= TOL


@pytest.mark.parametrize("fixture", ["lora_run", "lora_rslora_run"])
def test_lora_compact_and_peft_keep_the_trained_scale_at_hard_ranks(fixture, request, tiny_bert_dir, tmp_path):
    from peft import PeftModel

    run = request.getfixturevalue(fixture)
    hard = run.hard_ranks
    rslora = run.cfg.alpha_policy == "rslora"
    trained_scale = run.cfg.lora_alpha / (math.sqrt(5) if rslora else 5)  # α/rank_average (α/√ with rsLoRA)
    assert run.adapter.scales() == pytest.approx([trained_scale] * len(hard))

    record = export(run, "compact", tmp_path / "compact")
    assert record["adapter_parameters"]["after"] == sum(
        r * (t["in_features"] + t["out_features"])
        for r, t in zip(hard, json.loads((run.path / "ranks.json").read_text())["matrices"]))
    adapter = rankwise.load_adapter(fresh_base(tiny_bert_dir), tmp_path / "compact")
    assert torch.allclose(logits(adapter.model, run.batch), run.logits, atol=TOL, rtol=0)

    export(run, "peft", tmp_path / "peft")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["use_rslora"] == rslora
    names = list(run.summary["hard_ranks"])
    for name, r in zip(names, hard):
        rank = config["rank_pattern"].get(name, config["r"])
        alpha = config["alpha_pattern"].get(name, config["lora_alpha"])
        assert rank == r
        assert alpha / (math.sqrt(rank) if rslora else rank) == pytest.approx(trained_scale, rel=1e-12)
    model = PeftModel.from_pretrained(fresh_base(tiny_bert_dir), str(tmp_path / "peft"))
    for name, r in zip(names, hard):
        layer = model.base_model.model.get_submodule(name)
        assert layer.lora_A["default"].weight.shape[0] == r and layer.lora_B["default"].weight.shape[1] == r
    assert torch.allclose(logits(model, run.batch), run.logits, atol=TOL, rtol=0)


PEFT_ONLY_SCRIPT = """
import json, sys
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

base = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], num_labels=2)
model = PeftModel.from_pretrained(base, sys.argv[2]).eval()
batch = torch.load(sys.argv[3])
with torch.no_grad():
    logits = model(**batch).logits
print(json.dumps({"logits": logits.tolist(), "rankwise_imported": any(m.split(".")[0] == "rankwise"
                                                                      for m in sys.modules)}))
"""


def test_peft_export_loads_with_only_transformers_and_peft(lora_run, tiny_bert_dir, tmp_path):
    export(lora_run, "peft", tmp_path / "peft")
    script, batch_file = tmp_path / "load_peft.py", tmp_path / "batch.pt"
    script.write_text(PEFT_ONLY_SCRIPT)
    torch.save(lora_run.batch, batch_file)
    done = subprocess.run([sys.executable, str(script), str(tiny_bert_dir), str(tmp_path / "peft"), str(batch_file)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rankwise_imported"] is False
    assert torch.allclose(torch.tensor(result["logits"]), lora_run.logits, atol=TOL, rtol=0)


@pytest.mark.parametrize("fixture", ["loraxs_run", "lora_run"])
def test_merged_export_is_a_plain_transformers_model_with_the_same_logits(fixture, request, tmp_path):
    run = request.getfixturevalue(fixture)
    out = tmp_path / "merged"
    record = export(run, "merged", out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert model.config.id2label == {0: "unacceptable", 1: "acceptable"}  # CoLA's names, not its files' 0/1
    assert model.config.problem_type == "single_label_classification"
    assert torch.allclose(logits(model, run.batch), run.logits, atol=TOL, rtol=0)
    # ΔW went into the weights: an adapted matrix differs from the base checkpoint's by exactly ΔW.
    name = next(iter(run.summary["hard_ranks"]))
    base = BertModel.from_pretrained(run.cfg.model)
    merged_weight = model.get_submodule(name).weight
    base_weight = base.get_submodule(name.removeprefix("bert.")).weight
    module, r = run.adapter.modules[0], run.hard_ranks[0]
    if run.cfg.method == "loraxs":
        expected = module.delta_weight().detach()  # at the hard-rank mask
    else:
        a, b = module.lora_A["default"].weight[:r], module.lora_B["default"].weight[:, :r]
        expected = module.scaling["default"] * b @ a
    assert torch.allclose(merged_weight - base_weight, expected.detach(), atol=1e-6)
    assert (merged_weight - base_weight).abs().max() > 1e-4  # training moved it: the check has teeth
    assert record["adapter_parameters"]["after"] < record["adapter_parameters"]["before"]
    tokenizer = load_tokenizer(str(out))
    assert tokenizer("the cat sat")["input_ids"] == load_tokenizer(run.cfg.model)("the cat sat")["input_ids"]


@pytest.mark.parametrize("method", ["loraxs", "lora"])
def test_gpt2_conv1d_adapters_truncate_and_merge_to_the_same_logits(method):
    """GPT-2 stores weights as Conv1D (in×out): compact truncation and merging must respect that."""
    from transformers import GPT2ForSequenceClassification
    from transformers.pytorch_utils import Conv1D

    from rankwise.adapters import hard_keep
    from rankwise.adapters.io import compact_metadata, compact_tensors
    from rankwise.methods import attach_tensors, build_adapter
    from rankwise.ship import merge_adapter
    from rankwise.targets import find_targets

    config = tiny_gpt2_config(num_labels=2, pad_token_id=0)
    torch.manual_seed(0)
    base_state = GPT2ForSequenceClassification(config).state_dict()

    def fresh():
        model = GPT2ForSequenceClassification(config)
        model.load_state_dict(base_state)
        return model.eval()

    model = fresh()
    targets = find_targets(model)
    n = len(targets)
    adapter = build_adapter(model, method, targets, [6] * n, [16.0] * n, head_modules=["score"],
                            task_type="SEQ_CLS")
    with torch.no_grad():
        for p in adapter.adapter_parameters():
            p.normal_(0, 0.05)
    hard = [1 + i % 6 for i in range(n)]
    adapter.set_keep(hard_keep(hard, 6))
    input_ids = torch.randint(1, 1000, (3, 10), generator=torch.Generator().manual_seed(0))
    input_ids[1:, 6:] = 0
    batch = {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}
    reference = logits(adapter.model, batch)

    meta = compact_metadata(adapter, hard, "tiny-gpt2", ["score"], task_type="SEQ_CLS")
    tensors = compact_tensors(adapter, hard, ["score"])
    assert all(tensors[f"{t.name}.lora_A"].shape == (r, t.in_features) for t, r in zip(targets, hard))
    loaded = attach_tensors(fresh(), meta, tensors)
    assert torch.allclose(logits(loaded.model, batch), reference, atol=TOL, rtol=0)
    merged = merge_adapter(attach_tensors(fresh(), meta, tensors))
    assert isinstance(merged.get_submodule(targets[0].name), Conv1D)
    assert torch.allclose(logits(merged, batch), reference, atol=TOL, rtol=0)
    assert (logits(fresh(), batch) - reference).abs().max() > 100 * TOL


def test_full_run_exports_merged_only(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    run = Trained(tiny_bert_dir, tiny_glue_dir, tmp_path / "full", method="full", num_train_epochs=1,
                  learning_rate=1e-3)
    export(run, "merged", tmp_path / "merged")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert torch.allclose(logits(model, run.batch), run.logits, atol=TOL, rtol=0)
    assert run_cli("export", run.path, "--format", "compact", "--out", tmp_path / "c") == 2
    assert "full fine-tuning run" in capsys.readouterr().err and not (tmp_path / "c").exists()


# ---------------------------------------------------------------------------------------------
# evaluate and predict
# ---------------------------------------------------------------------------------------------

def test_evaluate_reproduces_the_runs_final_metrics_from_every_export(loraxs_run, lora_run, tiny_glue_dir, tmp_path):
    final = {}
    for run in (loraxs_run, lora_run):
        final[run.cfg.method] = run.summary["final"]
        export(run, "compact", tmp_path / f"{run.cfg.method}-compact")
        export(run, "merged", tmp_path / f"{run.cfg.method}-merged")
    export(lora_run, "peft", tmp_path / "lora-peft")
    sources = [("loraxs", "--adapter", tmp_path / "loraxs-compact"), ("loraxs", "--model", tmp_path / "loraxs-merged"),
               ("loraxs", "--adapter", loraxs_run.path), ("loraxs", "--adapter", loraxs_run.path / "adapter"),
               ("lora", "--adapter", tmp_path / "lora-compact"), ("lora", "--adapter", tmp_path / "lora-peft"),
               ("lora", "--model", tmp_path / "lora-merged"), ("lora", "--adapter", lora_run.path)]
    for i, (method, flag, path) in enumerate(sources):
        out = tmp_path / f"eval{i}.json"
        assert run_cli("evaluate", flag, path, "--data_dir", tiny_glue_dir, "--out", out, "--quiet") == 0
        metrics = json.loads(out.read_text())["metrics"]
        assert metrics["eval_matthews_correlation"] == pytest.approx(final[method]["eval_matthews_correlation"],
                                                                     abs=1e-12), (flag, path)
        assert metrics["eval_loss"] == pytest.approx(final[method]["eval_loss"], abs=TOL), (flag, path)


def test_predict_writes_the_models_labels_for_tsv_and_jsonl(loraxs_run, tiny_glue_dir, tmp_path):
    export(loraxs_run, "compact", tmp_path / "compact")
    dev = load_glue("cola", str(tiny_glue_dir)).evals["eval"][:24]
    ids = loraxs_run.logits.argmax(-1).tolist()
    names = ("unacceptable", "acceptable")  # CoLA's label names, as the export's id2label
    expected = [names[i] for i in ids]
    probabilities = torch.softmax(loraxs_run.logits, -1)

    jsonl = tmp_path / "inputs.jsonl"
    jsonl.write_text("".join(json.dumps({"idx": 100 + i, "sentence": e.texts[0]}) + "\n" for i, e in enumerate(dev)))
    assert run_cli("predict", "--adapter", tmp_path / "compact", "--input", jsonl, "--out", tmp_path / "p.jsonl",
                   "--quiet") == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == expected and [r["label_id"] for r in rows] == ids
    assert [r["index"] for r in rows] == [str(100 + i) for i in range(24)]
    assert [r["sentence"] for r in rows] == [e.texts[0] for e in dev]
    for row, p in zip(rows, probabilities):
        assert list(row["probabilities"]) == list(names)
        assert row["probabilities"]["acceptable"] == pytest.approx(float(p[1]), abs=1e-5)

    # The CoLA dev file as it is (header-less GLUE layout), first 24 lines; TSV output in GLUE's layout.
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("\n".join((tiny_glue_dir / "CoLA" / "dev.tsv").read_text().splitlines()[:24]) + "\n")
    assert run_cli("predict", "--adapter", tmp_path / "compact", "--input", tsv, "--out", tmp_path / "p.tsv",
                   "--quiet") == 0
    lines = (tmp_path / "p.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction"  # GLUE's submission layout keeps CoLA's 0/1
    assert [line.split("\t") for line in lines[1:]] == [[str(i), str(label)] for i, label in enumerate(ids)]


def test_predict_stsb_writes_scores_from_a_test_style_tsv(tiny_bert_dir, tiny_glue_dir, tmp_path):
    run = Trained(tiny_bert_dir, tiny_glue_dir, tmp_path / "stsb", task="stsb", method="loraxs", rank=4,
                  num_train_epochs=1)
    export(run, "merged", tmp_path / "merged")
    dev = load_glue("stsb", str(tiny_glue_dir)).evals["eval"][:24]
    tsv = tmp_path / "test.tsv"  # the GLUE test layout: index and the two sentences, no score
    tsv.write_text("index\tsentence1\tsentence2\n" + "".join(f"{i}\t{e.texts[0]}\t{e.texts[1]}\n"
                                                             for i, e in enumerate(dev)))
    assert run_cli("predict", "--model", tmp_path / "merged", "--input", tsv, "--out", tmp_path / "p.jsonl",
                   "--quiet") == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == pytest.approx(run.logits[:, 0].tolist(), abs=TOL)
    assert "probabilities" not in rows[0]


# ---------------------------------------------------------------------------------------------
# Refusals: exit status 2, one message, nothing written
# ---------------------------------------------------------------------------------------------

def copy_run(run, tmp_path, name):
    copy = tmp_path / name
    shutil.copytree(run.path, copy)
    return copy


def refused(capsys, *args):
    code = run_cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    return err


def test_export_refuses_runs_that_did_not_complete(loraxs_run, tmp_path, capsys):
    killed = copy_run(loraxs_run, tmp_path, "killed")
    (killed / "summary.json").unlink()
    err = refused(capsys, "export", killed, "--format", "compact", "--out", tmp_path / "out")
    assert "did not finish" in err and "no summary.json" in err

    diverged = copy_run(loraxs_run, tmp_path, "diverged")
    summary = json.loads((diverged / "summary.json").read_text())
    summary.update(status="diverged", message="loss was non-finite")
    (diverged / "summary.json").write_text(json.dumps(summary))
    err = refused(capsys, "export", diverged, "--format", "merged", "--out", tmp_path / "out")
    assert "status `diverged`" in err and "loss was non-finite" in err

    err = refused(capsys, "export", tmp_path / "nowhere", "--format", "compact", "--out", tmp_path / "out")
    assert "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_export_refuses_peft_for_loraxs_and_existing_out(loraxs_run, tmp_path, capsys):
    err = refused(capsys, "export", loraxs_run.path, "--format", "peft", "--out", tmp_path / "out")
    assert "--format: `peft` needs a `lora` run" in err and "--format compact" in err
    assert not (tmp_path / "out").exists()

    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for flags in ((), ("--overwrite",)):  # files rankwise did not write are never replaced
        err = refused(capsys, "export", loraxs_run.path, "--format", "compact", "--out", out, *flags)
        assert "not a rankwise export" in err and "notes.txt" in err
        assert [p.name for p in out.iterdir()] == ["notes.txt"]

    out = tmp_path / "exported"
    export(loraxs_run, "compact", out)
    first = (out / "export.json").read_text()
    err = refused(capsys, "export", loraxs_run.path, "--format", "merged", "--out", out)
    assert "already holds an export" in err and "--overwrite" in err and (out / "export.json").read_text() == first
    export(loraxs_run, "merged", out, "--overwrite")
    assert json.loads((out / "export.json").read_text())["format"] == "merged"
    assert not (out / "adapter_model.safetensors").exists() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left

    for inside in (loraxs_run.path, loraxs_run.path / "adapter", loraxs_run.path / "adapter" / "x", tmp_path.parent):
        err = refused(capsys, "export", loraxs_run.path, "--format", "compact", "--out", inside, "--overwrite")
        assert "which the export reads" in err
    assert (loraxs_run.path / "summary.json").is_file() and not (loraxs_run.path / "adapter" / "x").exists()


def test_failed_export_leaves_nothing(loraxs_run, tmp_path, monkeypatch):
    from rankwise.ship import export as export_module

    def broken(directory, meta, tensors):
        (directory / "adapter_model.safetensors").write_text("half written")
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "save_compact", broken)
    with pytest.raises(OSError, match="disk full"):
        export_module.export_run(loraxs_run.path, "compact", tmp_path / "out", log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_adapter_refuses_a_base_model_it_was_not_trained_on(loraxs_run, lora_run, tiny_glue_dir, tmp_path, capsys):
    from transformers import GPT2ForSequenceClassification

    export(loraxs_run, "compact", tmp_path / "compact")
    export(lora_run, "peft", tmp_path / "peft")
    wider = tmp_path / "wider-bert"  # same module names, other shapes
    BertModel(tiny_bert_config(hidden_size=48, intermediate_size=96)).save_pretrained(wider)
    load_tokenizer(loraxs_run.cfg.model).save_pretrained(wider)
    for adapter in (tmp_path / "compact", tmp_path / "peft", loraxs_run.path / "adapter"):
        out = tmp_path / "eval.json"
        err = refused(capsys, "evaluate", "--adapter", adapter, "--base_model", wider, "--data_dir", tiny_glue_dir,
                      "--out", out)
        assert "in the adapter but" in err and "it was trained on" in err
        assert not out.exists()

    gpt2 = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=2))  # other module names
    with pytest.raises(RunDirError, match="which this model does not have"):
        rankwise.load_adapter(gpt2, tmp_path / "compact")

    for adapter in (tmp_path / "compact", loraxs_run.path / "adapter", tmp_path / "peft"):
        torch.manual_seed(7)  # same architecture and shapes, other weights: the LoRA-XS basis would not fit
        other = AutoModelForSequenceClassification.from_config(tiny_bert_config(num_labels=2))
        with pytest.raises(RunDirError, match="differs from the one the adapter was trained on"):
            rankwise.load_adapter(other, adapter)

    err = refused(capsys, "evaluate", "--adapter", tmp_path / "compact", "--task", "stsb", "--data_dir",
                  tiny_glue_dir)
    assert "--task" in err and "cola" in err


def test_predict_refuses_bad_input_before_loading(loraxs_run, tmp_path, capsys):
    bad = tmp_path / "in.jsonl"
    bad.write_text(json.dumps({"sentence": "the cat sat"}) + "\n" + json.dumps({"text": "no field"}) + "\n")
    err = refused(capsys, "predict", "--adapter", loraxs_run.path, "--input", bad, "--out", tmp_path / "p.jsonl")
    assert "line 2" in err and "`sentence`" in err and not (tmp_path / "p.jsonl").exists()

    err = refused(capsys, "predict", "--adapter", loraxs_run.path, "--input", bad, "--out", tmp_path / "p.txt")
    assert ".jsonl" in err and ".csv" in err and ".tsv" in err and not (tmp_path / "p.txt").exists()

    err = refused(capsys, "predict", "--model", loraxs_run.path / "adapter", "--input", bad, "--out",
                  tmp_path / "p.jsonl")
    assert "is an adapter" in err and "--adapter" in err

    (tmp_path / "afile").write_text("x")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"sentence": "the cat sat"}) + "\n")
    err = refused(capsys, "predict", "--adapter", loraxs_run.path, "--input", good, "--out", tmp_path / "afile" / "p.jsonl")
    assert "`" + str(tmp_path / "afile") + "` is a file" in err
    err = refused(capsys, "evaluate", "--adapter", loraxs_run.path, "--out", tmp_path / "afile" / "m.json")
    assert "`" + str(tmp_path / "afile") + "` is a file" in err
    err = refused(capsys, "export", loraxs_run.path, "--format", "compact", "--out", tmp_path / "afile" / "e")
    assert "`" + str(tmp_path / "afile") + "` is a file" in err
    assert (tmp_path / "afile").read_text() == "x"
