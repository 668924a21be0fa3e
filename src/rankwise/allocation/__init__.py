"""Rank allocation: static strategies, learned allocation under a budget, and their schedules."""

from .budget import RankCost, capped_ranks, round_to_budget, softmax_ranks
from .learned import RankAllocator, initial_weights
from .schedules import AllocationSchedule
from .static import static_ranks

__all__ = ["RankCost", "capped_ranks", "softmax_ranks", "round_to_budget", "RankAllocator", "initial_weights",
           "AllocationSchedule", "static_ranks"]
