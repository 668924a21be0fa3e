"""Run options that several allocation strategies read (each strategy's own are in its module): the rank of uniform
and of a budget's reference, the budget, the rank range, the budget as an average rank, the measuring batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..options import option


@dataclass
class RankOption:
    """`rank`: every static strategy's base rank, the budget of `--match_budget`, `gradient` and `fim` (uniform
    --rank's parameters), and AdaLoRA's default average rank."""

    rank: Optional[int] = option(None, "Rank for `uniform`; base rank of `empirical`, `--match_budget` and alpha_policy "
                                "`ratio`. Default 25 (loraxs) or 8 (lora).", "allocation", aliases=("--lora_rank", "--r"))


@dataclass
class MatchBudgetOption:
    """Rescale a static strategy to a budget."""

    match_budget: bool = option(False, "Rescale a static strategy's ranks so its adapter has the same number of "
                               "parameters as uniform `--rank` (or `--budget`).", "allocation")


@dataclass
class BudgetOption:
    """A budget in parameters (static strategies with --match_budget, the measuring strategies)."""

    budget: Optional[int] = option(None, "Explicit parameter budget for `--match_budget`, `gradient` and `fim` (default: "
                                  "uniform --rank's parameters; `learned` takes its budget from --rank_average or "
                                  "--memory_start).", "allocation")


@dataclass
class RankRange:
    """The ranks a matrix may get (learned and measuring strategies)."""

    rank_min: Optional[int] = option(None, "`learned`, `gradient`, `fim`: smallest rank a matrix can get. Default 5 "
                                    "(learned), 1 (gradient, fim).", "allocation")
    rank_max: Optional[int] = option(None, "`learned`, `gradient`, `fim`: largest rank (learned adapters are built at "
                                    "this size). Default 30 (learned), 4 × --rank (gradient, fim).", "allocation")


@dataclass
class AverageRank:
    """A budget as an average rank (learned allocation; AdaLoRA's final budget)."""

    rank_average: Optional[float] = option(None, "`learned`: budget as an average rank (budget = sum of each "
                                          "matrix's cost at this rank; n*avg^2 for loraxs). Default: middle of "
                                          "[rank_min, rank_max] unless --memory_start is given. `adalora`: the final "
                                          "adapter gets LoRA's parameter count at this rank (default --rank).",
                                          "allocation")


@dataclass
class MeasuringOptions:
    """The training batches a measuring strategy reads before training, and the head's warm-up."""

    allocation_batches: int = option(4, "`gradient`, `fim`: training batches whose loss gradients decide the ranks "
                                    "(before training: about 2 s for MiniLM on 2 CPU cores, under 2 percent of a "
                                    "3-epoch run on 2,000 examples; on STS-B and SST-2, 4 batches gave the ranks 8 and "
                                    "16 did).", "allocation")
    allocation_head_steps: int = option(0, "`gradient`, `fim`: train the task's new classification head alone for this "
                                       "many "
                                       "steps (AdamW at --cls_learning_rate, on the measuring batches) before "
                                       "measuring, so the gradients do not pass through a random head; the head is "
                                       "reset to its initial weights before training (default 0: measure at the "
                                       "head's initialisation).", "allocation")
