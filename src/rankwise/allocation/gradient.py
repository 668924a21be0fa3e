"""`gradient`: ranks from the loss gradients of a few training batches, before training (the energy a rank-s
adapter can follow, spent under the budget by an exact knapsack; the core is `energy.py`). `MeasuringStrategy` is
what every strategy that measures training batches shares (`fim.py` is the other): its options, its budget (uniform
--rank's parameters, or --budget) and its checks, the head's warm-up, and the plan before and after measuring.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..options import option, require
from .base import AllocationStrategy, PlanContext, StrategyPlan, register
from .budget import check_feasible
from .energy import GradientAllocation, gradient_allocation, solve
from .learned import check_rank_range
from .options import BudgetOption, MeasuringOptions, RankOption, RankRange


class MeasuringStrategy(AllocationStrategy):
    """A strategy that sets the ranks from training batches before training, under a budget, with the exact solver.
    Subclasses give `energy(cfg, context, cost)`: the (n, rank_max + 1) table the solver maximises."""

    options = (RankOption, BudgetOption, RankRange, MeasuringOptions)
    measures = True
    signal = ""  # what the plan table says the ranks came from
    energy_name = "gradient energy"  # what the table says a share of is captured (none: no share to report)

    def resolve(self, cfg) -> None:
        if cfg.rank_min is None:
            cfg.rank_min = 1
        if cfg.rank_max is None:
            cfg.rank_max = 4 * cfg.rank

    def why_not(self, option_name: str, cfg) -> tuple[str, str] | None:
        if option_name == "match_budget":
            return (f"is not needed by --allocation {self.name}: it always spends the whole budget (uniform --rank's "
                    "parameters, or --budget)", "Drop --match_budget")
        return None

    def validate(self, cfg, given) -> None:
        require(cfg.rank >= 1, "rank", f"must be a positive integer, got {cfg.rank}")
        require(cfg.budget is None or cfg.budget >= 1, "budget", f"must be a positive integer, got {cfg.budget}")
        check_rank_range(cfg)
        require(cfg.allocation_batches >= 1, "allocation_batches",
                f"must be a positive integer, got {cfg.allocation_batches}")
        require(cfg.allocation_head_steps >= 0, "allocation_head_steps",
                f"must be 0 or a positive integer, got {cfg.allocation_head_steps}")
        require(not (cfg.allocation_head_steps and cfg.freeze_head), "allocation_head_steps",
                "trains the head before measuring, but --freeze_head keeps it at its initialisation during training, "
                "so the ranks would follow a head the run never has", "Drop --allocation_head_steps or --freeze_head")
        require(cfg.budget is not None or cfg.rank_min <= cfg.rank <= cfg.rank_max, "rank",
                f"({cfg.rank}) sets the budget to uniform rank {cfg.rank}'s parameters, which ranks in [rank_min, "
                f"rank_max] = [{cfg.rank_min}, {cfg.rank_max}] cannot spend", "Choose --rank between --rank_min and "
                "--rank_max (or give the budget in parameters with --budget)")

    def plan(self, cfg, context: PlanContext) -> StrategyPlan:
        """Without batches only the budget is checked, and the plan shows uniform --rank until training measures."""

        targets, cost = context.targets, context.cost
        field = "budget" if cfg.budget is not None else "rank"
        budget = float(cfg.budget) if cfg.budget is not None else cost.total(float(cfg.rank))
        limits = [min(cfg.rank_max, t.in_features, t.out_features) for t in targets]
        if cfg.rank_min > min(limits):
            raise ConfigError("rank_min", f"({cfg.rank_min}) exceeds the smallest target matrix dimension "
                              f"({min(limits)})", f"Use --rank_min {min(limits)} or less")
        check_feasible(cost, budget, cfg.rank_min, cfg.rank_max, field)
        most = cost.host_total(limits)  # matrices smaller than rank_max hold less
        if budget > most + 1e-6:
            raise ConfigError(field, f"budget {budget:,.0f} is more than the {len(targets)} target matrices can hold "
                              f"with ranks up to --rank_max {cfg.rank_max} and their own sizes ({most:,.0f} "
                              f"parameters)", f"Lower --{field}, or raise --rank_max")
        if cfg.allocation_head_steps and not context.head:
            raise ConfigError("allocation_head_steps", "the model has no newly initialised head to train before "
                              "measuring (a causal LM keeps its pretrained head; `every-linear` adapts the head's "
                              "layers)", "Drop --allocation_head_steps")
        if context.batches is None:
            record = GradientAllocation.unmeasured(budget, cfg.allocation_batches, self.normalized(cfg))
            return StrategyPlan([cfg.rank] * len(targets), measurement=record.record())
        if any(p.is_meta for p in context.model.parameters()):
            raise ConfigError("allocation", f"`{self.name}` needs the model's weights, but it is on the meta device",
                              "Load the model with its weights (from_pretrained)")
        measured = self.measure(cfg, context, cost, budget, solve)
        return StrategyPlan(measured.ranks, measurement=measured.record())

    def measure(self, cfg, context: PlanContext, cost, budget: float, solve):
        """The GradientAllocation (ranks, energies, solver) from the context's batches."""
        raise NotImplementedError

    def normalized(self, cfg) -> bool:
        return False

    def describe(self, row: dict, text) -> str:
        budget = row.get("budget")
        shown = f"budget {budget:,.0f}" if budget is not None and budget == budget else f"budget r{text(row['rank'])}"
        return f"{text(row['rank_min'])}–{text(row['rank_max'])}, {shown}"

    def name_parts(self, cfg) -> tuple[list[str], set[str]]:
        return [self.name, f"r{cfg.rank}"], {"allocation", "rank"}

    def budget_line(self, plan) -> str | None:
        g = plan.gradient  # the Plan keeps the record under `gradient` (ranks.json)
        if not g["measured"]:
            return (f"{self.name}: `rank` is uniform --rank until training measures {self.signal} of "
                    f"{g['batches']} training batches and spends the budget ({g['budget']:,.0f} parameters) where "
                    "they are largest")
        captured, possible = sum(g["energy_captured"]), sum(g["energy_at_rank_max"])
        head = f" through a head trained {g['head_steps']} steps" if g.get("head_steps") else ""
        share = (f", {100 * captured / possible if possible > 0 else 0:.1f}% of the {self.energy_name} at rank_max "
                 "captured") if self.energy_name else ""
        return (f"{self.name}: ranks from {self.signal} of {g['batches']} training batch"
                f"{'es' if g['batches'] != 1 else ''}{head} ({g['seconds']:.1f} s): budget {g['budget']:,.0f} "
                f"parameters{share} ({g['solver']} solution)")


@dataclass
class GradientOptions:
    """`gradient`'s own option."""

    gradient_normalize: bool = option(False, "`gradient`: divide each matrix's gradient energies by their value at "
                                      "its largest rank, so only the spectrum's shape decides (default: raw "
                                      "energies).", "allocation")


@register
class Gradient(MeasuringStrategy):
    name = "gradient"
    title = "gradient"
    summary = ("ranks from the loss-gradient energy a rank-s adapter can follow on a few training batches, spent "
               "under the budget by an exact knapsack, before training")
    options = (RankOption, BudgetOption, RankRange, MeasuringOptions, GradientOptions)
    signal = "the loss gradients"

    def normalized(self, cfg) -> bool:
        return cfg.gradient_normalize

    def measure(self, cfg, context: PlanContext, cost, budget: float, solve):
        return gradient_allocation(context.method, context.model, context.targets, context.batches, cost, budget,
                                   cfg.rank_min, cfg.rank_max, normalized=cfg.gradient_normalize,
                                   loss_fn=context.loss_fn, distributed=context.distributed, head=context.head,
                                   head_steps=cfg.allocation_head_steps, head_lr=cfg.cls_learning_rate)
