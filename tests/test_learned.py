"""Learned rank allocation end to end on a tiny random BERT: the allocation weights receive gradients and move,
allocation.jsonl records the schedule, evaluation uses hard ranks, and the final hard ranks respect the budget."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rankwise.allocation import RankAllocator, initial_weights
from rankwise.methods import get_method
from rankwise.allocation.budget import RankCost
from rankwise.allocation.schedules import AllocationSchedule
from rankwise.adapters import hard_keep
from rankwise.rundir import read_jsonl
from rankwise.targets import TargetMatrix
from rankwise.train import run_training
from test_train import tiny_cfg

LEARNED = dict(allocation="learned", rank_min=2, rank_max=8, rank_average=5, alpha_min=0.5, alpha_max=3.0,
               rank_allocation_lr=0.05, logging_steps=1)


@pytest.mark.parametrize("method", ["loraxs", "lora"])
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
    allocator.cost = RankCost(*(t.to("meta") for t in (allocator.cost.quad, allocator.cost.lin, allocator.cost.const)))
    allocator.to("meta")
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
