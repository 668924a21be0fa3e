"""Learned rank allocation end to end on a tiny random BERT: the allocation weights receive gradients and move,
allocation.jsonl records the schedule, evaluation uses hard ranks, and the final hard ranks respect the budget."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rankwise.allocation.allocator import RankAllocator, initial_weights, uniform_rank_weights
from rankwise.methods import get_method
from rankwise.allocation.budget import RankCost
from rankwise.allocation.schedules import AllocationSchedule
from rankwise.adapters import hard_keep
from rankwise.runs.rundir import read_jsonl
from rankwise.targets import TargetMatrix
from rankwise.train import run_training
from conftest import tiny_cfg

LEARNED = dict(allocation="learned", rank_min=2, rank_max=8, rank_average=5, alpha_min=0.5, alpha_max=3.0,
               rank_allocation_lr=0.05, logging_steps=1)


@pytest.mark.parametrize("method", ["loraxs", "lora", "dora"])
def test_learned_run_moves_ranks_within_budget_and_evaluates_hard(method, tiny_bert_dir, tiny_glue_dir, tmp_path):
    import rankwise
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    from rankwise.data import encode_classification, load_glue
    from rankwise.models import load_tokenizer

    out = tmp_path / method
    # No discrete phase: every epoch trains with soft masks, so a hard-rank reload can only reproduce the
    # recorded eval loss if evaluation used hard ranks.
    cfg = tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, method=method, num_train_epochs=2, epochs_rank_discrete=0,
                   **LEARNED)
    summary = run_training(cfg)
    assert summary["status"] == "completed"

    records = read_jsonl(out / "allocation.jsonl")
    steps = summary["steps"]
    assert [r["step"] for r in records][:3] == [0, 1, 2] and records[-1]["step"] == steps
    assert records[0]["alpha"] == pytest.approx(0.5) and records[-2]["alpha"] == pytest.approx(3.0)
    first, last = records[0], records[-1]
    moved = max(abs(last["continuous"][k] - first["continuous"][k]) for k in first["continuous"])
    assert moved > 0.01, "the allocation weights should have moved the continuous ranks"
    targets = [TargetMatrix(**{k: row[k] for k in ("name", "layer", "kind", "in_features", "out_features")})
               for row in json.loads((out / "ranks.json").read_text())["matrices"]]
    cost = get_method(method).rank_cost(targets)
    budget = cost.total(5.0)
    for record in records:
        assert record["budget"] == pytest.approx(budget)
        continuous = torch.tensor([record["continuous"][t.name] for t in targets], dtype=torch.float64)
        assert cost.total(continuous) == pytest.approx(budget, rel=1e-4)  # logged ranks are rounded to 4 decimals
        assert all(2 <= r <= 8 for r in record["hard"].values())
        assert record["budget_used"] <= budget + 1e-6
    assert summary["hard_ranks"] == last["hard"]

    # The allocation weights stepped away from their seeded initialisation.
    saved = load_file(str(out / "adapter" / "allocation_weights.safetensors"))["weights"]
    start = initial_weights(len(targets), "random", torch.Generator().manual_seed(cfg.seed))
    assert not torch.allclose(saved, start)

    # Reloading the adapter applies the final hard ranks; its eval loss equals the recorded last evaluation.
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    adapter = rankwise.load_adapter(base, out / "adapter")
    tok = load_tokenizer(str(tiny_bert_dir))
    batch = DataCollatorWithPadding(tok)(encode_classification(load_glue("cola", str(tiny_glue_dir)).evals["eval"],
                                                               tok, 128, regression=False))
    adapter.model.eval()
    with torch.no_grad():
        loss = adapter.model(**batch).loss.item()
    assert loss == pytest.approx(summary["final"]["eval_loss"], abs=1e-5)


def _allocator(epochs_rank_discrete=1, init="random"):
    targets = [TargetMatrix(f"layer.{i}.attention.q", i, "attention", 64, 64) for i in range(6)]
    schedule = AllocationSchedule(steps_per_epoch=5, num_epochs=4, alpha_min=0.5, alpha_max=3.0,
                                  alpha_scheduler="linear", memory_start=6 * 36.0, memory_end=6 * 36.0,
                                  epochs_rank_discrete=epochs_rank_discrete)
    return RankAllocator(targets, get_method("loraxs").rank_cost(targets), 2, 10, schedule, weights_init=init, seed=0)


def test_keep_is_soft_while_training_and_hard_for_evaluation_and_discrete_phase():
    allocator = _allocator()
    soft = allocator.keep(3, training=True)
    assert ((soft > 1e-4) & (soft < 1 - 1e-4)).any(), "soft phase masks are fractional"
    hard = allocator.hard_ranks(allocator.schedule.memory(3))
    assert torch.equal(allocator.keep(3, training=False), hard_keep(hard, 10))  # evaluation: hard
    assert torch.equal(allocator.keep(15, training=True), hard_keep(allocator.hard_ranks(6 * 36.0), 10))  # discrete


def test_one_optimizer_step_changes_the_allocation_weights():
    allocator = _allocator(init="uniform")  # every matrix at rank 6: none clamped, all receive gradient
    before = allocator.weights.detach().clone()
    keep = allocator.keep(0, training=True)
    # A loss that prefers more rank on matrix 0: its weight must rise, the others fall (softmax shares).
    loss = -(keep[0].sum() - keep[1:].sum(dim=1).mean())
    loss.backward()
    assert allocator.weights.grad is not None and allocator.weights.grad.abs().sum() > 0
    torch.optim.AdamW([allocator.weights], lr=0.1, weight_decay=0.0).step()
    delta = allocator.weights.detach() - before
    assert delta[0] > 0 and (delta[1:] < 0).all()


@pytest.mark.parametrize("init", ["uniform", "quadratic", "left_skewed"])
def test_initialisations_have_their_shape(init):
    w = initial_weights(40, init)
    if init == "uniform":
        assert torch.equal(w, torch.zeros(40))
    elif init == "quadratic":
        assert int(w.argmax()) == 20 and w[10] == pytest.approx(float(w[30]), abs=1e-6)
    else:
        assert int(w.argmax()) == 30 and w[30 - 8] > w[30 + 8]  # wider on the left


@pytest.mark.parametrize("budget_mode", ["capped", "softmax"])
def test_the_per_step_soft_allocation_path_never_waits_for_the_host(budget_mode):
    """On a GPU every .item(), bool(tensor) or .tolist() in the per-step path stalls the step. On the meta device
    each of them raises, so the soft path (ranks under the budget, keep probabilities, LoRA-XS masks) running
    there shows it has none; the hard path, which rounds on the host, raises there (so the check can fail)."""
    from rankwise.adapters.masks import square_masks

    allocator = _allocator()
    allocator.budget_mode = budget_mode
    reference = allocator.keep(3, training=True)
    allocator.to("meta")  # its costs follow the weights to their device
    keep = allocator.keep(3, training=True)
    masks = square_masks(keep)
    assert keep.device.type == "meta" and keep.shape == reference.shape and masks.shape == (6, 10, 10)
    with pytest.raises((RuntimeError, NotImplementedError)):
        allocator.keep(3, training=False)


def test_hard_masks_are_computed_once_per_budget_and_weights():
    allocator = _allocator()
    first = allocator.keep(15, training=True)  # discrete phase
    assert allocator.keep(16, training=True) is first  # same budget, same weights: reused
    with torch.no_grad():
        allocator.weights.add_(torch.linspace(-3, 3, 6))  # an optimiser step would change them in place
    again = allocator.keep(16, training=True)
    assert again is not first and torch.equal(again, hard_keep(allocator.hard_ranks(6 * 36.0), 10))


def _mixed_targets() -> list[TargetMatrix]:
    """Matrices of different widths: LoRA's cost per rank differs (in+out), LoRA-XS's does not."""
    return [TargetMatrix(f"m{i}", i, "attention" if i % 2 else "mlp", *shape)
            for i, shape in enumerate([(32, 32), (32, 64), (64, 32), (32, 32), (48, 16)])]


@pytest.mark.parametrize("method", ["lora", "loraxs", "dora"])
def test_uniform_weights_give_every_matrix_the_same_rank(method):
    """`uniform` init means the same rank everywhere for any cost (for LoRA, equal weights gave equal *parameters*:
    the narrow matrices got the larger ranks)."""
    targets = _mixed_targets()
    cost = get_method(method).rank_cost(targets)
    for average in (3.0, 4.5, 6.0):
        budget = cost.total(average)
        schedule = AllocationSchedule(steps_per_epoch=4, num_epochs=2, alpha_min=0.5, alpha_max=3.0, alpha_scheduler="linear",
                                      memory_start=budget, memory_end=budget)
        allocator = RankAllocator(targets, cost, 2, 8, schedule, weights_init="uniform")
        assert allocator.continuous_ranks(budget).tolist() == pytest.approx([average] * len(targets), abs=1e-6)


def test_rank_annealing_keeps_the_allocation_and_trains_wide(tiny_bert_dir, tiny_glue_dir, tmp_path):
    out = tmp_path / "anneal"
    options = {k: v for k, v in LEARNED.items() if k != "rank_allocation_lr"}  # the weights do not train
    summary = run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, method="lora", num_train_epochs=2,
                                    rank_annealing=True, **options))
    assert summary["status"] == "completed"
    assert summary["trainable_parameters"]["allocation"] == 0  # the weights are stored, but not trained
    records = read_jsonl(out / "allocation.jsonl")
    assert all(set(r["hard"].values()) == {5} for r in records)  # rank_average everywhere, every step
    first, last = records[0]["continuous"], records[-1]["continuous"]
    assert first == last and set(first.values()) == {5.0}
    weights = load_file(str(out / "adapter" / "allocation_weights.safetensors"))["weights"]
    rows = json.loads((out / "ranks.json").read_text())["matrices"]
    cost = get_method("lora").rank_cost([TargetMatrix(r["name"], r["layer"], r["kind"], r["in_features"],
                                                      r["out_features"]) for r in rows])
    assert torch.equal(weights, uniform_rank_weights(cost, cost.total(5.0), 2))  # never moved
    # the soft masks shrink: keep-probabilities of the components above the average fall as α rises
    from rankwise.adapters.masks import keep_probabilities

    soft = [r for r in records if not r["discrete"]]
    keep = [keep_probabilities(torch.tensor([5.0]), 2, 8, r["alpha"])[0, 5:].sum() for r in (soft[0], soft[-1])]
    assert soft[0]["alpha"] < soft[-1]["alpha"] and keep[1] < keep[0] - 0.1


@pytest.mark.parametrize("scale, expected", [("rank_average", 1 / 5), ("rank_max", 1 / 8)])
def test_learned_scale_sets_the_update_scale(scale, expected, tiny_bert_dir, tiny_glue_dir, tmp_path):
    """α/rank_average (default): at one learning rate a learned adapter moves as a uniform one of the same budget."""
    from rankwise.train import setup_run

    setup = setup_run(tiny_cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / scale, method="loraxs", lora_alpha=1.0,
                               learned_scale=scale, **LEARNED))
    assert setup.adapter.scales() == pytest.approx([expected] * len(setup.plan.rows))
    uniform = setup_run(tiny_cfg(tiny_bert_dir, tiny_glue_dir, tmp_path / "uniform", method="loraxs", lora_alpha=1.0,
                                 rank=5))
    assert uniform.adapter.scales() == pytest.approx([1 / 5] * len(uniform.plan.rows))


def test_a_run_from_before_the_scale_default_changed_is_not_taken_for_a_new_one():
    """An older config.json has no `learned_scale`: its runs had α/rank_max, which differs from today's default."""
    from rankwise.config import RunConfig, resolve_defaults
    from rankwise.runs.state import stored_config_conflicts

    cfg = resolve_defaults(RunConfig(method="loraxs", **LEARNED))
    old = {k: v for k, v in json.loads(json.dumps(cfg.to_dict(), default=str)).items() if k != "learned_scale"}
    assert stored_config_conflicts(old, cfg) == ["learned_scale: 'rank_max' there, 'rank_average' here"]
    cfg.learned_scale = "rank_max"
    assert stored_config_conflicts(old, cfg) == []
