"""`--allocation fim`: ranks from the empirical Fisher information (mean squared loss gradient per weight, averaged
per matrix) under the budget, with the exact solver. The scores equal their definition, the solver gives every
matrix the budget share its score has, and the strategy works from the CLI, `plan`, sweeps and the Python API."""

import itertools
import json
import math

import pytest
import torch

import rankwise
from conftest import run_cli, tiny_bert_config
from rankwise.allocation.energy import solve
from rankwise.allocation.fim import fisher_energy, fisher_scores
from rankwise.methods import get_method
from rankwise.targets import TargetMatrix, find_targets


def _model_and_batches():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        ids = torch.randint(1000, 2000, (4, 10), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 2})
    return model, batches


def test_scores_are_the_mean_squared_gradient_of_each_matrix():
    model, batches = _model_and_batches()
    targets = find_targets(model)
    scores = fisher_scores(model, targets, batches)
    weights = [model.get_submodule(t.name).weight for t in targets]
    expected = [0.0] * len(targets)
    for batch in batches:  # by hand: one backward per batch
        model.zero_grad()
        model.eval()
        model(**batch).loss.backward()
        for i, w in enumerate(weights):
            expected[i] += float((w.grad.double() ** 2).mean()) / len(batches)
    assert scores == pytest.approx(expected, rel=1e-9)
    assert all(w.grad is not None for w in weights)  # our backward above: fisher_scores left no .grad behind
    assert len(set(scores)) == len(scores) and min(scores) > 0  # every matrix its own sensitivity


def test_energy_is_score_times_log_rank_within_each_matrix():
    energy = fisher_energy([2.0, 0.5], limits=[3, 5], rank_max=5)
    assert energy.shape == (2, 6) and math.isinf(energy[0, 0]) and math.isinf(energy[0, 4])
    assert energy[0, 3] == pytest.approx(2.0 * math.log(3)) and energy[1, 5] == pytest.approx(0.5 * math.log(5))


def test_the_budget_is_shared_in_proportion_to_the_scores():
    """LoRA's costs are linear in the rank, so maximising Σ F_i ln s_i gives c_i(s_i) ∝ F_i: the exact solver's
    integer ranks are the best ones (checked by brute force) and within one rank of the proportional share."""
    targets = [TargetMatrix(f"m{i}", i, "attention", 32, 32) for i in range(4)]
    cost = get_method("lora").rank_cost(targets)
    scores = [4.0, 2.0, 1.0, 1.0]
    budget = cost.total(8.0)  # 4 matrices at rank 8: 32 ranks in all
    energy = fisher_energy(scores, [32] * 4, 32)
    ranks, solver = solve(energy, cost, budget, rank_min=1)
    assert solver == "exact" and cost.host_total(ranks) <= budget
    shares = [32 * s / sum(scores) for s in scores]  # 16, 8, 4, 4 ranks
    assert all(abs(r - share) <= 1 for r, share in zip(ranks, shares)), ranks
    best = max((c for c in itertools.product(range(1, 20), repeat=4) if sum(c) <= 32),
               key=lambda c: sum(s * math.log(r) for s, r in zip(scores, c)))
    assert sum(s * math.log(r) for s, r in zip(scores, ranks)) == pytest.approx(
        sum(s * math.log(r) for s, r in zip(scores, best)))


def test_fim_from_the_cli_plan_and_train(tmp_path, tiny_bert_dir, tiny_glue_dir, capsys):
    common = ["--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "sst2", "--method", "lora",
              "--allocation", "fim", "--rank", "4", "--allocation_batches", "2", "--quiet"]
    plan_file = tmp_path / "plan.json"
    assert run_cli("plan", *common, "--out", plan_file) == 0
    assert "fim: ranks from the Fisher information of 2 training batches" in capsys.readouterr().out
    planned = json.loads(plan_file.read_text())
    ranks = [row["rank"] for row in planned["matrices"]]
    assert planned["gradient"]["measured"] and len(set(ranks)) > 1  # ranks differ by matrix
    assert planned["totals"]["adapter_parameters"] <= planned["gradient"]["budget"]
    out = tmp_path / "run"
    assert run_cli("train", *common, "--max_steps", "2", "--output_dir", out) == 0
    trained = json.loads((out / "ranks.json").read_text())
    assert [row["rank"] for row in trained["matrices"]] == ranks  # training measures what plan measured
    assert out.name == "run" and "fim" in json.loads((out / "config.json").read_text())["config"]["allocation"]


def test_fim_from_the_python_api_and_a_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir):
    from rankwise.config import RunConfig
    from rankwise.runs.naming import run_name
    from rankwise.sweep import expand, parse_sweep

    model, batches = _model_and_batches()
    planned = rankwise.plan(model, "lora", "fim", rank=4, batches=batches)
    assert planned.allocated_ranks == [row.rank for row in planned.rows] and len(set(planned.allocated_ranks)) > 1
    config = planned.lora_config()  # a PEFT rank_pattern, as for gradient allocation
    assert sorted(config.rank_pattern.values()) != [] and config.r in planned.allocated_ranks
    unmeasured = rankwise.plan(model, "lora", "fim", rank=4)  # without batches: the budget checked, not the ranks
    assert not unmeasured.gradient["measured"] and set(unmeasured.allocated_ranks) == {4}
    with pytest.raises(rankwise.ConfigError, match="batches: are needed by allocation='fim'"):
        rankwise.wrap(model, "lora", "fim", rank=4)
    spec = parse_sweep({"base": {"model": str(tiny_bert_dir), "data_dir": str(tiny_glue_dir), "task": "sst2",
                                 "method": "lora", "rank": 4},
                        "grid": {"allocation": ["gradient", "fim"], "rank_max": [8]}, "seeds": [0]})
    configs = expand(spec, str(tmp_path / "runs"), check_resources="local")
    assert [c.allocation for c in configs] == ["gradient", "fim"]
    assert run_name(configs[1]).startswith("sst2_lora_fim_r4_") and RunConfig(allocation="fim").allocation == "fim"
