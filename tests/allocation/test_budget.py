import pytest
import torch

from rankwise.methods import get_method
from rankwise.allocation.budget import (capped_ranks, check_feasible, round_independently, round_to_budget,
                                        softmax_ranks)
from rankwise.errors import ConfigError
from rankwise.targets import TargetMatrix


def targets(shapes):
    return [TargetMatrix(f"layer.{i}.m", i, "attention", d_in, d_out) for i, (d_in, d_out) in enumerate(shapes)]


SHAPES = [(384, 384), (384, 1536), (1536, 384), (64, 64), (384, 384), (128, 512)]


@pytest.mark.parametrize("method", ["loraxs", "lora"])
def test_capped_meets_budget_exactly_within_bounds(method):
    cost = get_method(method).rank_cost(targets(SHAPES))
    gen = torch.Generator().manual_seed(0)
    rank_min, rank_max = 4, 30
    low, high = cost.total(rank_min), cost.total(rank_max)
    overshoots = 0
    for trial in range(300):
        scale = [0.1, 1.0, 3.0, 10.0][trial % 4]  # large scales concentrate the softmax: the study overshoots
        w = torch.randn(len(SHAPES), generator=gen) * scale
        budget = low + float(torch.rand(1, generator=gen)) * (high - low)
        s = capped_ranks(w, cost, budget, rank_min, rank_max)
        assert abs(cost.total(s) - budget) <= 1e-6 * budget
        assert torch.all(s >= rank_min - 1e-9) and torch.all(s <= rank_max + 1e-9)
        overshoots += bool((softmax_ranks(w, cost, budget, rank_min) > rank_max + 1e-9).any())
    assert overshoots > 20  # the test covers budgets where the study's formula passes rank_max


def test_capped_equals_softmax_when_nothing_saturates():
    cost = get_method("loraxs").rank_cost(targets(SHAPES))
    w = torch.tensor([0.1, -0.2, 0.05, 0.0, 0.3, -0.1])
    budget = cost.total(12.0)
    assert torch.allclose(capped_ranks(w, cost, budget, 5, 30), softmax_ranks(w, cost, budget, 5), atol=1e-9)


def test_capped_full_budget_gives_rank_max_everywhere():
    cost = get_method("lora").rank_cost(targets(SHAPES))
    s = capped_ranks(torch.randn(len(SHAPES)), cost, cost.total(20), 3, 20)
    assert torch.allclose(s, torch.full_like(s, 20.0))


def test_softmax_mode_is_the_study_formula():
    n, rank_min = 5, 5
    cost = get_method("loraxs").rank_cost(targets(SHAPES[:n]))
    w = torch.tensor([0.3, -1.0, 2.0, 0.0, 0.5])
    memory = 3000.0
    study = torch.sqrt(rank_min**2 + (memory - n * rank_min**2) * torch.softmax(w.double(), dim=0))
    assert torch.allclose(softmax_ranks(w, cost, memory, rank_min), study, atol=1e-12)


def test_capped_gradient_reaches_unclamped_weights():
    cost = get_method("loraxs").rank_cost(targets(SHAPES))
    w = torch.tensor([5.0, 0.0, 0.1, -0.3, 0.2, 0.0], requires_grad=True)  # the first saturates
    s = capped_ranks(w, cost, cost.total(12.0), 4, 20)
    assert s[0].item() == pytest.approx(20.0)
    (s * torch.arange(6.0, dtype=torch.float64)).sum().backward()
    assert w.grad[1:].abs().sum() > 0


@pytest.mark.parametrize("method", ["loraxs", "lora"])
def test_budget_rounding_never_exceeds_budget(method):
    cost = get_method(method).rank_cost(targets(SHAPES))
    gen = torch.Generator().manual_seed(3)
    for _ in range(200):
        budget = cost.total(4) + float(torch.rand(1, generator=gen)) * (cost.total(30) - cost.total(4))
        s = capped_ranks(torch.randn(len(SHAPES), generator=gen) * 2, cost, budget, 4, 30)
        hard = round_to_budget(s, cost, budget, 4, 30)
        assert cost.total(torch.tensor(hard, dtype=torch.float64)) <= budget + 1e-9
        assert all(4 <= r <= 30 for r in hard)
        assert all(abs(r - x) < 1 + 1e-9 for r, x in zip(hard, s.tolist()))


def test_budget_rounding_is_largest_remainder():
    cost = get_method("loraxs").rank_cost(targets(SHAPES[:3]))
    s = torch.tensor([10.6, 10.3, 10.9], dtype=torch.float64)
    budget = cost.total(torch.tensor([10.0, 10.0, 10.0])) + 21 + 21  # room for exactly two increments 10→11
    assert round_to_budget(s, cost, budget, 1, 30) == [11, 10, 11]


def test_study_rounding_rounds_each_independently():
    assert round_independently(torch.tensor([4.5001, 7.49, 29.7]), 5, 29) == [5, 7, 29]


def test_infeasible_budget_is_a_config_error():
    cost = get_method("loraxs").rank_cost(targets(SHAPES))
    with pytest.raises(ConfigError, match="memory_start.*outside"):
        check_feasible(cost, 60000, 5, 30, "memory_start")
    check_feasible(cost, cost.total(20), 5, 30, "rank_average")
