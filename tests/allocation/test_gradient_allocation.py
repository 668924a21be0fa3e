"""`--allocation gradient`: energies equal their definitions, the solver equals brute force, and the ranks reach
plan, train, ranks.json and the Python API."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from rankwise.adapters.loraxs import LoraXSLinear
from rankwise.allocation import energy as g
from rankwise.allocation.budget import RankCost
from rankwise.methods import get_method
from rankwise.targets import find_targets


def _energy_table(rows: list[list[float]], width: int) -> torch.Tensor:
    out = torch.full((len(rows), width + 1), -math.inf, dtype=torch.float64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.float64)
    return out


def _brute_force(energy: torch.Tensor, cost: RankCost, budget: float, rank_min: int) -> float:
    choices = [[s for s in range(rank_min, energy.shape[1]) if math.isfinite(energy[i, s])] for i in range(len(energy))]
    best = -math.inf
    for ranks in itertools.product(*choices):
        if cost.total(torch.tensor(ranks, dtype=torch.float64)) <= budget + 1e-9:
            best = max(best, sum(float(energy[i, s]) for i, s in enumerate(ranks)))
    return best


def _value(energy, ranks) -> float:
    return sum(float(energy[i, s]) for i, s in enumerate(ranks))


@pytest.mark.parametrize("case", range(60))
def test_exact_solver_equals_brute_force(case):
    """Random energies (concave or not), LoRA-like linear or LoRA-XS-like quadratic costs, ranks capped per matrix."""
    gen = torch.Generator().manual_seed(case)
    n, width = 4, 5
    rank_min = (case // 2) % 2  # crossed with the cost kind (case % 2)
    lengths = [int(torch.randint(2, width + 2, (1,), generator=gen)) for _ in range(n)]
    steps = [torch.rand(length - 1, generator=gen).tolist() for length in lengths]
    if case % 3 == 0:  # concave: decreasing steps
        steps = [sorted(s, reverse=True) for s in steps]
    energy = _energy_table([[0.0, *itertools.accumulate(s)] for s in steps], width)
    if case % 2:
        cost = RankCost.from_coefficients([(1, 0, 0)] * n)
    else:
        cost = RankCost.from_coefficients([(0, int(torch.randint(1, 4, (1,), generator=gen)) * 6, 0) for _ in range(n)])
    top = cost.total(torch.tensor([length - 1 for length in lengths], dtype=torch.float64))
    floor = cost.total(float(rank_min))
    budget = floor + (top - floor) * float(torch.rand(1, generator=gen))
    ranks, solver = g.solve(energy, cost, budget, rank_min)
    assert solver == "exact"
    assert cost.total(torch.tensor(ranks, dtype=torch.float64)) <= budget + 1e-9
    assert all(rank_min <= r <= length - 1 for r, length in zip(ranks, lengths))
    assert _value(energy, ranks) == pytest.approx(_brute_force(energy, cost, budget, rank_min), abs=1e-12)


def test_greedy_fallback_is_feasible_and_near_optimal(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    n, width = 5, 6
    steps = [sorted(torch.rand(width, generator=gen).tolist(), reverse=True) for _ in range(n)]
    energy = _energy_table([[0.0, *itertools.accumulate(s)] for s in steps], width)
    cost = RankCost.from_coefficients([(0, 7, 0), (0, 11, 0), (0, 7, 0), (0, 13, 0), (0, 11, 0)])
    budget = 7 * 3 + 11 * 2 + 7 * 4 + 13 * 1 + 11 * 3
    monkeypatch.setattr(g, "DP_CELLS_LIMIT", 0)
    ranks, solver = g.solve(energy, cost, budget, 1)
    assert solver == "greedy"
    assert cost.total(torch.tensor(ranks, dtype=torch.float64)) <= budget
    optimum = _brute_force(energy, cost, budget, 1)
    assert optimum - 0.05 * optimum <= _value(energy, ranks) <= optimum + 1e-12


def test_lora_energy_is_the_best_rank_s_approximation():
    grad = torch.randn(12, 7, generator=torch.Generator().manual_seed(1))
    energy = g.lora_energy(grad, 9)
    u, s, vh = torch.linalg.svd(grad.double(), full_matrices=False)
    for rank in range(8):
        approx = u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]
        assert float(energy[rank]) == pytest.approx(float((approx**2).sum()), rel=1e-10, abs=1e-12)
    assert math.isinf(float(energy[8])) and math.isinf(float(energy[9]))  # a 12×7 matrix holds rank 7 at most


@pytest.mark.parametrize("out_features, in_features", [(8, 10), (10, 8)])  # W Wᵀ's eigenvectors; the SVD
def test_loraxs_energy_is_the_squared_gradient_of_r(out_features, in_features):
    """E(s) = ‖∂L/∂R restricted to the top-left s×s block‖² on a real LoraXSLinear, with L = ⟨G, ΔW⟩."""
    gen = torch.Generator().manual_seed(2)
    base = torch.nn.Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.randn(out_features, in_features, generator=gen))
    grad = torch.randn(out_features, in_features, generator=gen, dtype=torch.float64)
    layer = LoraXSLinear(base, rank=6, scale=1.0, seed=0)
    a, b = layer.lora_A.double(), layer.lora_B.double()
    r = torch.zeros(6, 6, dtype=torch.float64, requires_grad=True)
    (grad * (b @ r @ a)).sum().backward()
    energy = g.loraxs_energy(base.weight.detach(), grad, 6)
    for s in range(7):
        assert float(energy[s]) == pytest.approx(float((r.grad[:s, :s] ** 2).sum()), rel=1e-5, abs=1e-9)  # float32 factors


def _tiny_bert(num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32, num_labels=num_labels)
    return BertForSequenceClassification(config)


def _batches(count: int, num_labels: int = 2):
    gen = torch.Generator().manual_seed(3)
    return [{"input_ids": torch.randint(0, 60, (4, 9), generator=gen),
             "attention_mask": torch.ones(4, 9, dtype=torch.long),
             "labels": torch.randint(0, num_labels, (4,), generator=gen)} for _ in range(count)]


def test_target_gradients_equal_autograd_and_leave_the_model_as_it_was():
    model = _tiny_bert()
    model.train()
    targets = find_targets(model, None)
    batches = _batches(3)
    grads = g.target_gradients(model, targets, batches)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    total = sum(model(**b).loss for b in batches) / 3
    total.backward()
    for t, grad in zip(targets, grads):
        assert torch.allclose(grad, model.get_submodule(t.name).weight.grad, atol=1e-7)


@pytest.mark.parametrize("method", ["lora", "loraxs", "dora"])
def test_gradient_allocation_meets_the_budget_and_follows_the_energy(method):
    model = _tiny_bert()
    targets = find_targets(model, None)
    m = get_method(method)
    cost = m.rank_cost(targets)
    budget = cost.total(3.0)
    result = g.gradient_allocation(m, model, targets, _batches(2), cost, budget, rank_min=1, rank_max=8)
    assert cost.total(torch.tensor(result.ranks, dtype=torch.float64)) <= budget + 1e-6
    assert result.solver == "exact" and result.batches == 2
    assert _value(result.energy, result.ranks) >= _value(result.energy, [3] * len(targets)) - 1e-12
    assert result.ranks != [3] * len(targets)  # the gradients of a random head are not uniform
    # the energies are those of the definitions, from autograd's gradients
    grads = g.target_gradients(model, targets, _batches(2))
    expected = g.energy_curves(m, model, targets, grads, 8)
    assert torch.allclose(result.energy, expected, rtol=1e-6, atol=0, equal_nan=True)  # energies are ~1e-10


def test_normalized_energies_end_at_one():
    energy = _energy_table([[0, 2, 3, 3.5], [0, 0.1, 0.15]], 3)
    normalized = g.normalize_energy(energy)
    assert normalized[0, 3] == pytest.approx(1.0) and normalized[1, 2] == pytest.approx(1.0)
    assert normalized[0, 1] == pytest.approx(2 / 3.5) and math.isinf(float(normalized[1, 3]))


# ---------------------------------------------------------------------------------------------
# From the CLI and the API
# ---------------------------------------------------------------------------------------------

def _cfg(model_dir, data_dir, out, **kw):
    from rankwise.config import RunConfig

    values = dict(model=str(model_dir), data_dir=str(data_dir), task="cola", output_dir=str(out), num_train_epochs=1,
                  per_device_train_batch_size=16, logging_steps=2, quiet=True, learning_rate=5e-3,
                  allocation="gradient", rank=3, allocation_batches=2)
    values.update(kw)
    return RunConfig(**values)


@pytest.mark.parametrize("method", ["loraxs", "lora"])
def test_train_uses_the_measured_ranks_and_reloads_them(method, tiny_bert_dir, tiny_glue_dir, tmp_path):
    import json

    from transformers import AutoModelForSequenceClassification

    import rankwise
    from rankwise.config import prepare
    from rankwise.planning import measured_plan
    from rankwise.train import run_training

    cfg = _cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / "run", method=method)
    planned = measured_plan(prepare(_cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / "plan", method=method)))
    summary = run_training(cfg)
    record = json.loads((tmp_path / "run" / "ranks.json").read_text())
    ranks = [row["rank"] for row in record["matrices"]]
    assert ranks == [r.rank for r in planned.rows]  # `rankwise plan` shows what training applies
    assert record["gradient"]["measured"] and record["gradient"]["batches"] == 2
    cost = get_method(method).rank_cost(planned.targets)
    assert cost.total(torch.tensor(ranks, dtype=torch.float64)) <= cost.total(3.0) + 1e-6
    assert len(set(ranks)) > 1  # the gradients of a random head on this data are not uniform
    assert summary["hard_ranks"] == dict(zip([r.name for r in planned.rows], ranks))
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    adapter = rankwise.load_adapter(base, tmp_path / "run" / "adapter")
    assert adapter.ranks == ranks


def test_api_plan_with_batches_gives_a_peft_rank_pattern():
    import rankwise

    model = _tiny_bert()
    without = rankwise.plan(model, method="lora", allocation="gradient", rank=3)
    assert [r.rank for r in without.rows] == [3] * len(without.rows)
    with pytest.raises(rankwise.ConfigError, match="batches"):
        without.lora_config()
    plan = rankwise.plan(model, method="lora", allocation="gradient", rank=3, batches=_batches(2))
    config = plan.lora_config()
    expected = g.gradient_allocation(get_method("lora"), model, plan.targets, _batches(2),
                                     get_method("lora").rank_cost(plan.targets), plan.gradient["budget"], 1, 12)
    assert [config.rank_pattern.get(r.name, config.r) for r in plan.rows] == expected.ranks == [r.rank for r in plan.rows]


@pytest.mark.parametrize("flags, field", [
    (["--match_budget"], "match_budget"),
    (["--rank", "20", "--rank_max", "10"], "rank"),
    (["--allocation_batches", "0"], "allocation_batches"),
    (["--rank_min", "5", "--rank_max", "4"], "rank_min"),
    (["--init", "eva", "--method", "lora"], "init"),
])
def test_bad_gradient_options_are_refused(flags, field, capsys):
    from conftest import run_cli

    assert run_cli("plan", "--model", "minilm", "--task", "sst2", "--allocation", "gradient", *flags) == 2
    assert f"--{field}" in capsys.readouterr().err


def test_gradient_options_without_gradient_allocation_are_refused(capsys):
    from conftest import run_cli

    assert run_cli("plan", "--model", "minilm", "--task", "sst2", "--allocation_batches", "8") == 2
    assert "--allocation_batches: only applies to --allocation gradient" in capsys.readouterr().err


def test_wrap_builds_the_measured_ranks_and_refuses_without_batches():
    import rankwise

    with pytest.raises(rankwise.ConfigError, match="batches: are needed by allocation='gradient'"):
        rankwise.wrap(_tiny_bert(), method="loraxs", allocation="gradient", rank=3)
    with pytest.raises(rankwise.ConfigError, match="batches: are only read by allocation='gradient'"):
        rankwise.wrap(_tiny_bert(), method="loraxs", rank=3, batches=_batches(1))
    model = _tiny_bert()
    planned = rankwise.plan(_tiny_bert(), method="loraxs", allocation="gradient", rank=3, batches=_batches(2))
    wrapped, allocator = rankwise.wrap(model, method="loraxs", allocation="gradient", rank=3, batches=_batches(2))
    assert allocator is None
    assert [m.rank for m in wrapped.rankwise.adapter.modules] == [r.rank for r in planned.rows]
    assert len({r.rank for r in planned.rows}) > 1


def test_a_matrix_too_small_for_rank_min_is_refused_by_the_solver():
    energy = _energy_table([[0, 1], [0, 1, 2, 3]], 3)
    with pytest.raises(ValueError, match="below rank_min 2"):
        g.solve(energy, RankCost.from_coefficients([(1, 0, 0)] * 2), 13, 2)


def test_a_budget_beyond_what_small_matrices_hold_is_refused(capsys, tiny_bert_dir, tiny_glue_dir):
    """The tiny BERT's matrices hold rank 32 at most: rank_max 40 would promise parameters they cannot take."""
    from conftest import run_cli

    code = run_cli("plan", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "cola", "--method", "loraxs",
                   "--allocation", "gradient", "--rank_max", "40", "--budget", str(12 * 33 * 33))
    assert code == 2
    assert "--budget: budget 13,068 is more than the 12 target matrices can hold" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# --allocation_head_steps: measure through a head trained alone first
# ---------------------------------------------------------------------------------------------

def test_head_steps_measure_through_the_trained_head_and_reset_it():
    """The gradients equal those measured by hand after the same AdamW steps on the head alone; afterwards the
    head, requires_grad, .grad, the training mode and the global RNG are as before."""
    model = _tiny_bert()
    model.train()
    model.bert.embeddings.requires_grad_(False)  # a mixed state to restore: some frozen, a .grad left over
    model.classifier.weight.grad = torch.full_like(model.classifier.weight, 7.0)
    trainable = [p.requires_grad for p in model.parameters()]
    targets = find_targets(model, None)
    head = list(model.classifier.parameters())
    before = [p.detach().clone() for p in head]
    m = get_method("loraxs")
    cost = m.rank_cost(targets)
    rng = torch.get_rng_state()
    warmed = g.gradient_allocation(m, model, targets, _batches(2), cost, cost.total(3.0), 1, 8,
                                   head=head, head_steps=5, head_lr=1e-2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, b) for p, b in zip(head, before))
    assert model.training and [p.requires_grad for p in model.parameters()] == trainable
    assert torch.equal(model.classifier.weight.grad, torch.full_like(model.classifier.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "classifier.weight")
    model.classifier.weight.grad = None
    model.requires_grad_(True)
    assert warmed.head_steps == 5 and warmed.record()["head_steps"] == 5

    by_hand = _tiny_bert()  # the same weights (seeded); its head trained by hand: 5 steps over 2 batches, cycled
    by_hand.eval()
    for p in by_hand.parameters():
        p.requires_grad_(False)
    hand_head = list(by_hand.classifier.parameters())
    for p in hand_head:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(hand_head, lr=1e-2, weight_decay=0.0)
    batches = _batches(2)
    for step in range(5):
        optimizer.zero_grad()
        by_hand(**batches[step % 2]).loss.backward()
        optimizer.step()
    for p in by_hand.parameters():
        p.requires_grad_(True)
    grads = g.target_gradients(by_hand, targets, batches)
    expected = g.energy_curves(m, by_hand, targets, grads, 8)
    assert torch.allclose(warmed.energy, expected, rtol=1e-5, atol=0, equal_nan=True)  # energies are ~1e-10
    cold = g.gradient_allocation(m, model, targets, _batches(2), cost, cost.total(3.0), 1, 8)
    assert not torch.allclose(cold.energy, warmed.energy, rtol=1e-2, atol=0, equal_nan=True)  # the head moved
    assert cold.ranks != warmed.ranks


def test_head_steps_in_training_are_recorded_and_training_starts_from_the_same_head(tiny_bert_dir, tiny_glue_dir,
                                                                                    tmp_path, monkeypatch):
    import json

    from rankwise.config import prepare
    from rankwise.planning import measured_plan
    from rankwise.train import run_training

    cfg = _cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / "run", allocation_head_steps=4, num_train_epochs=1)
    planned = measured_plan(prepare(_cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / "plan", allocation_head_steps=4)))
    cold = measured_plan(prepare(_cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / "cold")))
    assert planned.gradient["head_steps"] == 4 and cold.gradient["head_steps"] == 0
    assert planned.gradient["energy"] != cold.gradient["energy"]
    heads = {}
    import rankwise.train as training

    build = training.build_adapter

    def capture(*args, **kwargs):  # the head as training receives it, once the ranks are measured
        adapter = build(*args, **kwargs)
        heads[len(heads)] = {n: p.detach().clone() for n, p in adapter.model.named_parameters() if "classifier" in n}
        return adapter

    monkeypatch.setattr(training, "build_adapter", capture)
    run_training(cfg)
    run_training(_cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / "cold_run"))
    record = json.loads((tmp_path / "run" / "ranks.json").read_text())
    assert record["gradient"]["head_steps"] == 4
    assert [row["rank"] for row in record["matrices"]] == [r.rank for r in planned.rows]
    assert heads[0].keys() == heads[1].keys() and heads[0]
    assert all(torch.equal(heads[0][n], heads[1][n]) for n in heads[0])  # trained from the same initial head


@pytest.mark.parametrize("args, message", [
    (["--allocation_head_steps", "-1"], "--allocation_head_steps: must be 0 or a positive integer"),
    (["--allocation_head_steps", "4", "--freeze_head"], "--allocation_head_steps: trains the head before measuring"),
])
def test_bad_head_steps_are_refused(args, message, capsys):
    from conftest import run_cli

    assert run_cli("plan", "--model", "minilm", "--task", "sst2", "--allocation", "gradient", *args) == 2
    assert message in capsys.readouterr().err


def test_head_steps_on_a_causal_lm_are_refused():
    """A causal LM keeps its pretrained head: there is no new head to warm up, so the option is an error."""
    from conftest import tiny_llama_config
    from transformers import LlamaForCausalLM

    import rankwise

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=60, num_hidden_layers=1))
    ids = torch.randint(0, 60, (2, 8))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}]
    with pytest.raises(rankwise.ConfigError, match="allocation_head_steps: the model has no newly initialised head"):
        rankwise.plan(model, method="lora", allocation="gradient", rank=2, allocation_head_steps=3, batches=batches)
    plan = rankwise.plan(model, method="lora", allocation="gradient", rank=2, batches=batches)
    assert plan.gradient["measured"] and plan.gradient["head_steps"] == 0


def test_head_steps_on_batches_without_labels_give_the_clear_error():
    import rankwise

    unlabeled = [{k: v for k, v in b.items() if k != "labels"} for b in _batches(2)]
    with pytest.raises(rankwise.ConfigError, match="`gradient` needs batches with labels"):
        rankwise.plan(_tiny_bert(), method="lora", allocation="gradient", rank=2, allocation_head_steps=2,
                      batches=unlabeled)


def test_a_run_from_before_head_steps_existed_is_not_taken_for_a_warmed_one():
    """An older config.json has no `allocation_head_steps`: it measured at the head's initialisation (0 steps)."""
    import json

    from rankwise.config import RunConfig, resolve_defaults
    from rankwise.runs.state import stored_config_conflicts

    cfg = resolve_defaults(RunConfig(task="stsb", allocation="gradient", rank=4, allocation_head_steps=32))
    old = {k: v for k, v in json.loads(json.dumps(cfg.to_dict(), default=str)).items() if k != "allocation_head_steps"}
    assert stored_config_conflicts(old, cfg) == ["allocation_head_steps: 0 there, 32 here"]
    cfg.allocation_head_steps = 0
    assert stored_config_conflicts(old, cfg) == []
