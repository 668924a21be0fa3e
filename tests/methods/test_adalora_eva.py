"""AdaLoRA and EVA through PEFT (issue 8) on tiny random BERTs: AdaLoRA really prunes from init_r·n rank triplets to
its budget, the budget matches LoRA's parameter count, the orthogonality regulariser is in the training loss once
and not in evaluation losses, a pruned AdaLoRA checkpoint reloads with plain PEFT to the same logits; EVA
redistributes ranks unequally with the sum kept; both export, name their runs and get report labels."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertModel

from conftest import run_cli, tiny_bert_config
from rankwise.config import RunConfig, prepare
from rankwise.planning import build_plan, meta_model
from rankwise.runs.rundir import read_jsonl
from rankwise.train import setup_run, train

TOL = 1e-5
ADALORA = dict(method="adalora", rank_average=4, adalora_init_r=8, adalora_deltaT=1, num_train_epochs=3,
               learning_rate=1e-2)


def tiny_cfg(model_dir, data_dir, out, **kw):
    values = dict(model=str(model_dir), data_dir=str(data_dir), task="cola", output_dir=str(out), num_train_epochs=2,
                  per_device_train_batch_size=16, logging_steps=1, quiet=True, learning_rate=5e-3)
    values.update(kw)
    return RunConfig(**values)


@torch.no_grad()
def logits(model, batch):
    model.eval()
    return model(**batch).logits.float()


def probe(n=8, length=12):
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(1000, 2000, (n, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[::2, length // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


class Trained:
    def __init__(self, model_dir, data_dir, out, **kw):
        setup = setup_run(tiny_cfg(model_dir, data_dir, out, **kw))
        self.setup = setup
        self.summary = train(setup.cfg, setup)
        assert self.summary["status"] == "completed"
        self.path, self.adapter, self.cfg = out, setup.adapter, setup.cfg
        self.logits = logits(setup.adapter.model, probe())


@pytest.fixture(scope="module")
def adalora_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    return Trained(tiny_bert_dir, tiny_glue_dir, tmp_path_factory.mktemp("runs") / "adalora", **ADALORA)


def base_classifier(model_dir):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)


# ---------------------------------------------------------------------------------------------
# AdaLoRA
# ---------------------------------------------------------------------------------------------

def test_adalora_prunes_from_init_r_to_the_budget(adalora_run):
    run, n = adalora_run, 12
    budget = run.summary["adalora"]
    records = read_jsonl(run.path / "allocation.jsonl")
    used = [r["budget_used"] for r in records]
    assert used[0] == 8 * n == budget["initial_triplets"]  # every matrix starts at init_r
    assert used[-1] == budget["target_triplets"] == sum(run.summary["hard_ranks"].values())
    assert used[-1] < used[0] and all(b <= a for a, b in zip(used, used[1:]))  # it prunes, never regrows
    assert len(set(used)) > 3  # gradually (cubic schedule), not in one jump
    budgets = [r["budget"] for r in records]
    assert budgets[0] == 8 * n and budgets[-1] == budget["target_triplets"]
    assert records[-1]["discrete"] and not records[0]["discrete"]
    for r in records:  # the schema of learned allocation: hard ranks per matrix that add up to budget_used
        assert sum(r["hard"].values()) == r["budget_used"] and r["hard"] == r["continuous"]
    hard = list(run.summary["hard_ranks"].values())
    assert len(set(hard)) > 1  # per-matrix ranks, not a uniform cut
    # The masks really zero the pruned singular values in the live model.
    for layer, rank in zip(run.adapter.modules, hard):
        assert int((layer.lora_E["default"] != 0).sum()) <= rank
    ranks_file = json.loads((run.path / "ranks.json").read_text())
    assert [m["rank"] for m in ranks_file["matrices"]] == hard


def test_adalora_parameter_counts(adalora_run):
    run = adalora_run
    targets = run.setup.plan.targets
    cost = [t.in_features + t.out_features + 1 for t in targets]
    params = run.summary["trainable_parameters"]
    assert params["adapter"] == sum(8 * c for c in cost)  # A, E, B at init_r, as allocated
    assert params["adapter_at_hard_ranks"] == sum(r * c for r, c in zip(run.summary["hard_ranks"].values(), cost))


def test_rank_average_matches_lora_parameter_count(tiny_bert_dir):
    """B = round(M / mean triplet cost) with M = LoRA's parameters at rank ρ; equal shapes make it exact to c/2."""
    from rankwise.methods.adalora import adalora_budget

    for targets_option, rho in (("query,value", 4), ("query,value", 5.5), (None, 8)):
        cfg = prepare(RunConfig(model=str(tiny_bert_dir), method="adalora", rank_average=rho,
                                target_modules=targets_option))
        model, heads = meta_model(cfg)
        plan, _ = build_plan(cfg, model, heads)
        lora_plan, _ = build_plan(prepare(RunConfig(model=str(tiny_bert_dir), method="lora", rank=8,
                                                    target_modules=targets_option)), model, heads)
        targets = plan.targets
        lora_params = sum(rho * (t.in_features + t.out_features) for t in targets)
        mean_cost = sum(t.in_features + t.out_features + 1 for t in targets) / len(targets)
        budget = adalora_budget(cfg, targets)
        assert budget.lora_parameters == round(lora_params)
        assert budget.target_triplets == round(lora_params / mean_cost)
        if rho == 8:
            assert budget.lora_parameters == lora_plan.adapter_parameters  # rankwise's own LoRA count
        if targets_option == "query,value":  # one shape: every final allocation costs exactly B·c
            c = targets[0].in_features + targets[0].out_features + 1
            assert abs(budget.target_triplets * c - lora_params) <= c / 2
        assert plan.budget["target_triplets"] == budget.target_triplets
        assert plan.adapter_parameters == sum(cfg.adalora_init_r * (t.in_features + t.out_features + 1)
                                              for t in targets)


def test_adalora_final_count_on_equal_shapes(tiny_bert_dir, tiny_glue_dir, tmp_path):
    run = Trained(tiny_bert_dir, tiny_glue_dir, tmp_path / "qv", **{**ADALORA, "target_modules": "query,value",
                                                                     "rank_average": 4})
    n, c = 6, 32 + 32 + 1
    target = round(n * 4 * 64 / c)
    assert sum(run.summary["hard_ranks"].values()) == target
    assert run.summary["trainable_parameters"]["adapter_at_hard_ranks"] == target * c
    assert abs(target * c - n * 4 * 64) <= c / 2  # LoRA r=4 on the same matrices: n·4·(in+out)


def test_orthogonal_regulariser_once_in_training_never_in_evaluation(adalora_run):
    from rankwise.methods.adalora import AdaLoraHooks

    run = adalora_run
    model = run.adapter.model
    batch = {**probe(), "labels": torch.tensor([0, 1] * 4)}
    with torch.no_grad():
        model.train()
        total = float(model(**batch).loss)
        logits_ = model(**batch).logits
        task = float(torch.nn.functional.cross_entropy(logits_, batch["labels"]))
        penalties = []
        for name, p in model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and "default" in name:
                cov = p @ p.T if "lora_A" in name else p.T @ p
                penalties.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0])))
        reg = float(torch.stack(penalties).mean())
        weight = run.cfg.adalora_orth_reg_weight
        assert reg > 0.01
        assert total == pytest.approx(task + weight * reg, rel=1e-5)  # added once, by PEFT's forward
        with AdaLoraHooks(run.adapter).evaluating():
            assert float(model(**batch).loss) == pytest.approx(task, rel=1e-6)
        assert model.peft_config["default"].orth_reg_weight == weight  # restored
    evals = [r for r in read_jsonl(run.path / "metrics.jsonl") if r["type"] == "eval"]
    assert evals[-1]["eval_loss"] < 1.0  # a cross-entropy on 2 classes, not CE + regulariser


def test_pruned_adalora_reloads_with_plain_peft_to_the_same_logits(adalora_run, tiny_bert_dir):
    from peft import PeftModel

    run = adalora_run
    config = json.loads((run.path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and config["rank_pattern"]
    reloaded = PeftModel.from_pretrained(base_classifier(tiny_bert_dir), str(run.path / "adapter"))
    shapes = [reloaded.base_model.model.get_submodule(t.name).lora_E["default"].shape[0]
              for t in run.setup.plan.targets]
    assert shapes == list(run.summary["hard_ranks"].values())  # stored pruned: only the kept triplets
    got = logits(reloaded, probe())
    assert torch.allclose(got, run.logits, atol=TOL)
    assert (logits(base_classifier(tiny_bert_dir), probe()) - run.logits).abs().max() > 1e-3  # the adapter matters


def test_adalora_export_peft_and_merged(adalora_run, tiny_bert_dir, tmp_path, capsys):
    from peft import PeftModel

    run = adalora_run
    assert run_cli("export", run.path, "--format", "peft", "--out", tmp_path / "peft") == 0
    record = json.loads((tmp_path / "peft" / "export.json").read_text())
    assert record["verified_max_abs_logit_difference"] <= TOL
    assert record["adapter_parameters"]["after"] == run.summary["trainable_parameters"]["adapter_at_hard_ranks"]
    got = logits(PeftModel.from_pretrained(base_classifier(tiny_bert_dir), str(tmp_path / "peft")), probe())
    assert torch.allclose(got, run.logits, atol=TOL)

    assert run_cli("export", run.path, "--format", "merged", "--out", tmp_path / "merged") == 0
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert torch.allclose(logits(merged, probe()), run.logits, atol=1e-4)

    capsys.readouterr()
    assert run_cli("export", run.path, "--format", "compact", "--out", tmp_path / "compact") == 2
    assert "--format peft" in capsys.readouterr().err and not (tmp_path / "compact").exists()


def test_adalora_evaluate_reproduces_final_metrics(adalora_run, tiny_glue_dir, tmp_path):
    out = tmp_path / "eval.json"
    assert run_cli("evaluate", "--adapter", adalora_run.path, "--data_dir", tiny_glue_dir, "--out", out,
                   "--quiet") == 0
    metrics = json.loads(out.read_text())["metrics"]
    final = adalora_run.summary["final"]
    assert metrics["eval_loss"] == pytest.approx(final["eval_loss"], abs=1e-5)


# ---------------------------------------------------------------------------------------------
# EVA
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def skewed_bert_dir(tmp_path_factory, tiny_bert_dir):
    """A tiny BERT whose matrices see inputs of very different spectra: layer 0's MLP input is nearly rank 1 and
    layer 2's attention context nearly rank 2, so EVA has something to redistribute."""
    from conftest import minilm_tokenizer

    path = tmp_path_factory.mktemp("skewed-bert")
    torch.manual_seed(0)
    model = BertModel(tiny_bert_config())
    with torch.no_grad():
        w = model.encoder.layer[0].intermediate.dense.weight
        w.copy_(torch.outer(torch.randn(w.shape[0]), torch.randn(w.shape[1])) * 0.3)
        v = model.encoder.layer[2].attention.self.value.weight
        u, s, vt = torch.linalg.svd(v)
        v.copy_(u[:, :2] @ torch.diag(s[:2]) @ vt[:2])
    model.save_pretrained(path)
    minilm_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def eva_run(skewed_bert_dir, tiny_glue_dir, tmp_path_factory):
    return Trained(skewed_bert_dir, tiny_glue_dir, tmp_path_factory.mktemp("runs") / "eva", method="lora",
                   init="eva", rank=4, eva_rho=2, num_train_epochs=1)


def test_eva_redistributes_ranks_unequally_with_the_same_sum(eva_run):
    run, n = eva_run, 12
    ranks = list(run.summary["hard_ranks"].values())
    assert sum(ranks) == n * 4
    assert len(set(ranks)) > 1 and max(ranks) <= 2 * 4  # at most eva_rho × r
    names = list(run.summary["hard_ranks"])
    assert run.summary["hard_ranks"][names[3]] < 4  # layer 0's MLP output sees a nearly rank-1 input
    plan = json.loads((run.path / "ranks.json").read_text())
    assert [m["rank"] for m in plan["matrices"]] == ranks and plan["init"] == "eva"
    assert [m["parameters"] for m in plan["matrices"]] == [
        r * (m["in_features"] + m["out_features"]) for r, m in zip(ranks, plan["matrices"])]
    first = read_jsonl(run.path / "allocation.jsonl")[0]
    assert first["source"] == "eva" and list(first["hard"].values()) == ranks and first["budget"] == n * 4
    # The adapter tensors have EVA's ranks (matrices at rank 0 have no adapter).
    for name, rank in run.summary["hard_ranks"].items():
        layer = run.adapter.model.base_model.model.get_submodule(name)
        assert (layer.lora_A["default"].weight.shape[0] if rank else 0) == rank


def test_eva_sets_A_to_the_input_principal_directions(skewed_bert_dir, tiny_glue_dir, tmp_path):
    """Before training, A of a matrix is the top right-singular vectors of its (centred) inputs: rows orthonormal."""
    setup = setup_run(tiny_cfg(skewed_bert_dir, tiny_glue_dir, tmp_path / "x", method="lora", init="eva", rank=4))
    for layer in setup.adapter.modules:
        a = layer.lora_A["default"].weight.detach()
        assert torch.allclose(a @ a.T, torch.eye(a.shape[0]), atol=1e-4)
        assert float(layer.lora_B["default"].weight.detach().abs().max()) == 0.0
    assert not (tmp_path / "x").exists()  # EVA ran during setup: nothing written yet


def test_eva_run_exports_as_peft_with_the_same_logits(eva_run, skewed_bert_dir, tmp_path):
    from peft import PeftModel

    assert run_cli("export", eva_run.path, "--format", "peft", "--out", tmp_path / "peft") == 0
    record = json.loads((tmp_path / "peft" / "export.json").read_text())
    assert record["verified_max_abs_logit_difference"] <= TOL
    got = logits(PeftModel.from_pretrained(base_classifier(skewed_bert_dir), str(tmp_path / "peft")), probe())
    assert torch.allclose(got, eva_run.logits, atol=TOL)


# ---------------------------------------------------------------------------------------------
# Config, names, reports
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, field", [
    (("--method", "adalora", "--allocation", "learned"), "allocation"),
    (("--method", "adalora", "--adalora_init_r", "6", "--rank_average", "8"), "adalora_init_r"),
    (("--method", "adalora", "--adalora_tinit", "0.6", "--adalora_tfinal", "0.5"), "adalora_tfinal"),
    (("--method", "adalora", "--rank_average", "4", "--adalora_target_r", "4"), "adalora_target_r"),
    (("--method", "loraxs", "--init", "eva"), "init"),
    (("--method", "lora", "--init", "eva", "--eva_rho", "0.5"), "eva_rho"),
    (("--method", "adalora", "--num_train_epochs", "1", "--max_train_samples", "16"), "adalora_tfinal"),
])
def test_bad_baseline_options_stop_before_anything_is_written(args, field, tiny_bert_dir, tiny_glue_dir, tmp_path,
                                                              capsys):
    out = tmp_path / "run"
    code = run_cli("train", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--output_dir", out, "--quiet",
                   *args)
    assert code == 2 and f"--{field}" in capsys.readouterr().err
    assert not out.exists()


def test_run_names_and_report_labels(adalora_run, eva_run, tmp_path):
    from rankwise.runs.naming import run_name
    from rankwise.report.aggregate import group_runs, load_runs

    assert run_name(RunConfig(method="adalora", rank_average=8)) == "cola_adalora_avg8_init12_lr0.0005_seed0"
    assert run_name(RunConfig(method="lora", init="eva")) == "cola_lora_uniform_r8_eva2_lr0.0005_seed0"
    assert run_name(RunConfig(method="adalora", adalora_tinit=0.2)) != run_name(RunConfig(method="adalora"))
    runs = load_runs([adalora_run.path, eva_run.path])
    labels = dict(zip(runs["method"] + runs["init"], runs["label"]))
    # Their other settings differ too (model, epochs, lr), which the labels add in brackets.
    assert labels["adaloradefault"].startswith("AdaLoRA avg 4 (") and labels["loraeva"].startswith("LoRA EVA r4 (")
    row = runs[runs["method"] == "adalora"].iloc[0]
    assert row["params_adapter_at_hard_ranks"] == adalora_run.summary["trainable_parameters"]["adapter_at_hard_ranks"]
    assert len(group_runs(runs)) == 2
    assert run_cli("report", adalora_run.path, eva_run.path, "--out", tmp_path / "report") == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "AdaLoRA avg 4" in text and "LoRA EVA r4" in text and (tmp_path / "report" / "final_ranks.png").is_file()
    assert run_cli("report", adalora_run.path, "--out", tmp_path / "ada") == 0
    assert (tmp_path / "ada" / "allocation_heatmap.png").is_file()  # AdaLoRA's ranks over training


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_building_and_reloading_peft_adapters_prints_no_library_deprecation(method, adalora_run, tiny_bert_dir,
                                                                            tiny_glue_dir, tmp_path):
    """PEFT calls a method transformers 5 deprecates; every sweep log used to carry that FutureWarning per run."""
    import warnings

    from rankwise.methods import load_adapter

    kw = ADALORA if method == "adalora" else dict(method="lora", rank=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup_run(tiny_cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / method, **kw))
        load_adapter(base_classifier(tiny_bert_dir), adalora_run.path / "adapter")
    assert not [str(w.message) for w in caught if "checkpointing" in str(w.message)]


def test_an_adalora_matrix_pruned_to_rank_0_saves_without_peft_calling_it_a_broken_shard(adalora_run, tmp_path):
    """PEFT warns that 0-sized LoRA tensors mean DeepSpeed/FSDP shards were not gathered; in AdaLoRA they are a
    matrix pruned to nothing, which the file stores as intended (reloading gives the same logits, above)."""
    import warnings

    from rankwise.methods import save_adapter as save_adalora

    run = adalora_run
    hard = list(run.summary["hard_ranks"].values())
    assert 0 in hard  # the fixture's budget prunes one matrix away, so this exercises the 0-sized case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_adalora(run.adapter, tmp_path / "adapter", str(run.cfg.model), [], hard)
    assert not [str(w.message) for w in caught if "invalid shape" in str(w.message)]
