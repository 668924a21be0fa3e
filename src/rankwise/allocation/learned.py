"""`learned`: the adaptive LoRA-XS study's learned allocation (generalised to LoRA and DoRA): adapters built at
rank_max, trainable allocation weights turned into ranks under a budget and soft rank masks while training, hard
ranks in the last epochs and at every evaluation. The allocator itself is `allocator.py` (plain values); this
module reads the run's options (rank annealing is one of them: the allocation frozen at uniform ranks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from ..options import option, require
from .allocator import RankAllocator
from .base import AllocationStrategy, PlanContext, StrategyPlan, register
from .options import AverageRank, RankRange
from .schedules import AllocationSchedule

ALPHA_SCHEDULERS = ("linear", "exponential", "cosine")
WEIGHT_INITS = ("random", "uniform", "quadratic", "left_skewed")
LEARNED_SCALES = ("rank_average", "rank_max")
BUDGET_MODES = ("capped", "softmax")
ROUNDINGS = ("budget", "study")
ALPHA_SCHEDULE_SPANS = ("soft", "all")


@dataclass
class LearnedOptions:
    """Learned allocation's schedules, allocation weights and rounding (its budget: AverageRank or memory_start)."""

    memory_start: Optional[float] = option(None, "`learned`: budget (adapter parameters) at the start.", "allocation")
    memory_end: Optional[float] = option(None, "`learned`: budget at the end (default: memory_start).", "allocation")
    epochs_memory_start: int = option(0, "`learned`: epochs the budget stays at memory_start.", "allocation")
    epochs_memory_start_to_end: int = option(0, "`learned`: epochs over which the budget moves linearly to memory_end.",
                                            "allocation")
    epochs_rank_discrete: Optional[int] = option(None, "`learned`: final epochs trained with hard ranks. Default 1 "
                                                "(0 for a one-epoch run).", "allocation")
    alpha_min: float = option(0.5, "`learned`: mask sharpness at the start.", "allocation")
    alpha_max: float = option(3.0, "`learned`: mask sharpness at the end of the soft phase.", "allocation")
    alpha_scheduler: str = option("linear", "`learned`: how sharpness moves from alpha_min to alpha_max.", "allocation",
                                 ALPHA_SCHEDULERS)
    tau: float = option(0.0, "`learned`: Gumbel noise scale on the rank distribution (training only).", "allocation")
    rank_allocation_lr: float = option(1e-2, "`learned`: learning rate of the allocation weights (their weight decay: "
                                      "--rank_allocation_weight_decay).",
                                      "allocation", aliases=("--rank_allocation_learning_rate",))
    rank_allocation_weights_init: str = option("uniform", "`learned`: initial allocation weights. `uniform` starts "
                                              "every matrix at the same rank (the budget's average), so the "
                                              "allocation moves only where training pushes it; `random` (the "
                                              "adaptive LoRA-XS study's) starts from a random allocation and cost "
                                              "0.7 accuracy points on SST-2 (docs/results/study_ablation).",
                                              "allocation", WEIGHT_INITS)
    budget_mode: str = option("capped", "`learned`: `capped` keeps every rank in [rank_min, rank_max] and spends the "
                             "whole budget; `softmax` is the study's formula (may exceed rank_max).", "allocation",
                             BUDGET_MODES)
    rounding: str = option("budget", "`learned`: hard ranks by largest remainder within the budget (`budget`) or "
                          "independent rounding as in the study (`study`).", "allocation", ROUNDINGS)
    rank_annealing: bool = option(False, "`learned`: freeze the allocation at uniform ranks (the weights do not train): "
                                 "adapters train at rank_max under soft masks that shrink to the budget's uniform rank, "
                                 "then are truncated to it (rank annealing).", "allocation")
    learned_scale: str = option("rank_average", "`learned`: update scale of adapters built at rank_max: α/rank_average "
                               "(`rank_average`: one learning rate means the same update size as a uniform adapter at "
                               "the same budget) or α/rank_max (`rank_max`: the adaptive LoRA-XS study's, used by "
                               "`rankwise glue`).", "allocation", LEARNED_SCALES)
    rank_start: Optional[float] = option(None, "`learned`: budget at the start as an average rank (Σ c_i(rank_start): "
                                        "n·rank_start² for loraxs), held --epochs_memory_start epochs and moved linearly "
                                        "to --rank_average's budget over --epochs_memory_start_to_end epochs (the "
                                        "adaptive LoRA-XS study's initial_bigger_memory runs).", "allocation")
    alpha_schedule_span: str = option("soft", "`learned`: α moves from alpha_min to alpha_max over the soft phase "
                                     "(`soft`: α_max at the last soft step) or over all steps of the run (`all`: the "
                                     "adaptive LoRA-XS study's scheduler, α(t) at t/total_steps).", "allocation",
                                     ALPHA_SCHEDULE_SPANS)
    rank_allocation_weight_decay: float = option(0.0, "`learned`: AdamW weight decay of the allocation weights (the "
                                                "adaptive LoRA-XS study's optimiser used torch's 0.01 there too).",
                                                "allocation")


def check_rank_range(cfg) -> None:
    require(cfg.rank_min >= 1, "rank_min", f"must be a positive integer, got {cfg.rank_min}")
    require(cfg.rank_min <= cfg.rank_max, "rank_min", f"({cfg.rank_min}) is greater than --rank_max ({cfg.rank_max})",
            "Swap them or lower --rank_min")


@register
class Learned(AllocationStrategy):
    name = "learned"
    title = "learned"
    summary = ("trainable allocation weights under a budget (--rank_average or --memory_start), soft rank masks "
               "sharpened by an alpha schedule, hard ranks in the last epochs")
    options = (RankRange, AverageRank, LearnedOptions)
    learned = True
    sized_by_rank_max = True
    names_learning_rate = False  # the allocation's learning rate is in the name; the adapter's goes to the hash

    def resolve(self, cfg) -> None:
        if cfg.rank_min is None:
            cfg.rank_min = 5
        if cfg.rank_max is None:
            cfg.rank_max = 30
        if cfg.memory_start is None and cfg.rank_average is None:
            cfg.rank_average = (cfg.rank_min + cfg.rank_max) / 2
        if cfg.memory_start is not None and cfg.memory_end is None:
            cfg.memory_end = cfg.memory_start
        if cfg.epochs_rank_discrete is None:  # in steps (--max_steps) a schedule in epochs must be asked for
            cfg.epochs_rank_discrete = 1 if cfg.num_train_epochs >= 2 and cfg.max_steps is None else 0

    def why_not(self, option_name: str, cfg) -> tuple[str, str] | None:
        if option_name in ("budget", "match_budget"):
            return ("is not used by --allocation learned (it rescales a static allocation to a budget)",
                    "Set the learned budget with --rank_average (an average rank) or --memory_start (parameters)")
        if option_name == "rank":
            return ("does not apply to --allocation learned: its adapters are sized by --rank_max and its budget is "
                    "--rank_average or --memory_start", "Drop --rank; use --rank_min/--rank_max and --rank_average")
        return None

    def validate(self, cfg, given) -> None:
        check_rank_range(cfg)
        self._validate_budget(cfg, given)
        if cfg.rank_annealing:  # the allocation stays where it starts: uniform ranks
            require(cfg.rank_allocation_weights_init == "uniform", "rank_annealing", "keeps the allocation at uniform "
                    f"ranks, but --rank_allocation_weights_init is `{cfg.rank_allocation_weights_init}`",
                    "Drop --rank_allocation_weights_init (uniform is the default), or drop --rank_annealing")
            for name in ("rank_allocation_lr", "rank_allocation_weight_decay", "tau"):
                require(not given(name), name, "does not apply with --rank_annealing: the allocation weights do not "
                        "train", f"Drop --{name}, or drop --rank_annealing to learn the allocation")
        require(cfg.rank_allocation_lr > 0, "rank_allocation_lr", f"must be positive, got {cfg.rank_allocation_lr}")
        require(cfg.rank_allocation_weight_decay >= 0, "rank_allocation_weight_decay",
                f"must be >= 0, got {cfg.rank_allocation_weight_decay}")
        self._validate_schedule(cfg)

    @staticmethod
    def _validate_budget(cfg, given) -> None:
        if cfg.rank_average is not None:
            require(cfg.memory_start is None, "rank_average", "and --memory_start both set the budget",
                    "Give one of them")
            require(cfg.rank_min <= cfg.rank_average <= cfg.rank_max, "rank_average",
                    f"({cfg.rank_average:g}) is outside [rank_min, rank_max] = [{cfg.rank_min}, {cfg.rank_max}]",
                    "Choose an average rank between --rank_min and --rank_max")
        for name in ("memory_start", "memory_end"):
            value = getattr(cfg, name)
            require(value is None or value > 0, name, f"must be positive, got {value}")
        if cfg.rank_start is not None:  # the budget moves from rank_start's to rank_average's
            require(cfg.memory_start is None, "rank_start", "and --memory_start both set the starting budget",
                    "Give one of them")
            require(cfg.rank_min <= cfg.rank_start <= cfg.rank_max, "rank_start",
                    f"({cfg.rank_start:g}) is outside [rank_min, rank_max] = [{cfg.rank_min}, {cfg.rank_max}]",
                    "Choose a starting average rank between --rank_min and --rank_max")
            if cfg.rank_start != cfg.rank_average:
                require(cfg.epochs_memory_start_to_end >= 1, "epochs_memory_start_to_end",
                        f"must be at least 1 when --rank_start ({cfg.rank_start:g}) differs from --rank_average "
                        f"({cfg.rank_average:g})", "Give the number of epochs over which the budget changes")
        if cfg.memory_start is None:  # the budget is rank_average's (from rank_start's, if given)
            for name in ("memory_end",) + (() if cfg.rank_start is not None else ("epochs_memory_start",
                                                                                   "epochs_memory_start_to_end")):
                require(not given(name), name, "is part of the budget schedule from --memory_start to "
                        "--memory_end, but no --memory_start is given: the budget is --rank_average's, constant",
                        f"Give --memory_start (and --memory_end), or drop --{name}")
        if cfg.memory_start is not None and cfg.memory_end != cfg.memory_start:
            require(cfg.epochs_memory_start_to_end >= 1, "epochs_memory_start_to_end",
                    f"must be at least 1 when memory_start ({cfg.memory_start:g}) differs from memory_end "
                    f"({cfg.memory_end:g})", "Give the number of epochs over which the budget changes")

    @staticmethod
    def _validate_schedule(cfg) -> None:
        for name in ("epochs_memory_start", "epochs_memory_start_to_end", "epochs_rank_discrete"):
            value = getattr(cfg, name)
            require(value >= 0, name, f"must be >= 0, got {value}")
        scheduled = cfg.epochs_memory_start + cfg.epochs_memory_start_to_end
        require(scheduled <= cfg.num_train_epochs, "epochs_memory_start_to_end",
                f"the budget schedule needs {scheduled} epochs (epochs_memory_start {cfg.epochs_memory_start} + "
                f"epochs_memory_start_to_end {cfg.epochs_memory_start_to_end}) but the run has "
                f"{cfg.num_train_epochs}", "Shorten the schedule or raise --num_train_epochs")
        if cfg.max_steps is not None:
            for name in ("epochs_memory_start", "epochs_memory_start_to_end"):
                require(not getattr(cfg, name), name, f"({getattr(cfg, name)}) is a budget schedule in epochs, but "
                        f"--max_steps ({cfg.max_steps}) sets the run's length in steps",
                        "Drop --max_steps and give --num_train_epochs, or drop the memory schedule")
        require(cfg.max_steps is not None or cfg.epochs_rank_discrete < cfg.num_train_epochs, "epochs_rank_discrete",
                f"({cfg.epochs_rank_discrete}) leaves no epoch to learn the allocation in a "
                f"{cfg.num_train_epochs}-epoch run", "Lower it or raise --num_train_epochs")
        require(cfg.alpha_min <= cfg.alpha_max, "alpha_min",
                f"({cfg.alpha_min:g}) is greater than --alpha_max ({cfg.alpha_max:g})")
        require(cfg.alpha_min >= 0, "alpha_min", f"must be >= 0, got {cfg.alpha_min:g}")
        if cfg.alpha_scheduler == "exponential":
            require(cfg.alpha_min > 0, "alpha_min", f"must be > 0 with --alpha_scheduler exponential, got "
                    f"{cfg.alpha_min:g}", "Use a small positive value such as 0.01, or --alpha_scheduler linear")
        require(cfg.tau >= 0, "tau", f"must be >= 0, got {cfg.tau:g}")

    def plan(self, cfg, context: PlanContext) -> StrategyPlan:
        targets = context.targets
        rank_limit = min(min(t.in_features, t.out_features) for t in targets)
        if cfg.rank_max > rank_limit:
            raise ConfigError("rank_max", f"({cfg.rank_max}) exceeds the smallest target matrix dimension "
                              f"({rank_limit})", f"Use --rank_max {rank_limit} or less")
        cost = context.cost
        allocator = build_allocator(cfg, targets, context.steps_per_epoch, cost)
        start, end = budget_bounds(cfg, cost)
        budget = {"start": start, "end": end, "min": cost.total(cfg.rank_min), "max": cost.total(cfg.rank_max)}
        return StrategyPlan([cfg.rank_max] * len(targets), allocator.hard_ranks(allocator.schedule.memory(0)),
                            allocator=allocator, budget=budget)

    def adjust_alphas(self, alphas: list[float], cfg, plan: StrategyPlan) -> list[float]:
        """Alphas of adapters built at rank_max rescaled so their update scale is α/r̄ (α/√r̄ with rsLoRA), r̄ the
        uniform rank of the final budget (`--learned_scale rank_average`): at one learning rate a component then
        moves as far as in a uniform adapter of the same budget (with α/rank_max it would move r̄/rank_max as far)."""
        if cfg.learned_scale != "rank_average":
            return alphas
        allocator = plan.allocator
        factor = cfg.rank_max / allocator.cost.uniform_rank(allocator.schedule.memory_end)
        return [a * (math.sqrt(factor) if cfg.alpha_policy == "rslora" else factor) for a in alphas]

    def name_parts(self, cfg) -> tuple[list[str], set[str]]:
        parts = [self.name, f"r{_g(cfg.rank_min)}-{_g(cfg.rank_max)}", f"a{_g(cfg.alpha_min)}-{_g(cfg.alpha_max)}"]
        used = {"allocation", "rank_min", "rank_max", "alpha_min", "alpha_max"}
        if cfg.rank_annealing:  # the allocation does not train: no allocation learning rate to name
            parts.append("anneal")
            used.add("rank_annealing")
        else:
            parts.append(f"lr{_g(cfg.rank_allocation_lr)}")
            used.add("rank_allocation_lr")
        if cfg.memory_start is not None:
            end = cfg.memory_end if cfg.memory_end is not None else cfg.memory_start
            parts.append(f"mem{_g(cfg.memory_start)}-{_g(end)}")
            used |= {"memory_start", "memory_end"}
        elif cfg.rank_average is not None:
            parts.append(f"avg{_g(cfg.rank_average)}")
            used.add("rank_average")
        return parts, used

    def describe(self, row: dict, text) -> str:
        if row.get("memory_start") is not None and row.get("memory_start") == row.get("memory_start"):
            return (f"{text(row['rank_min'])}–{text(row['rank_max'])}, "
                    f"M {row['memory_start']:,.0f}→{row['memory_end']:,.0f}")
        return f"{text(row['rank_min'])}–{text(row['rank_max'])}, avg {text(row['rank_average'])}"

    def budget_line(self, plan) -> str | None:
        b = plan.budget
        return (f"learned: adapters allocated at rank_max {max(plan.allocated_ranks)}; budget {b['start']:,.0f} → "
                f"{b['end']:,.0f} parameters (feasible range [{b['min']:,.0f}, {b['max']:,.0f}]); `rank` = initial "
                "hard ranks") if b else None


def budget_bounds(cfg, cost) -> tuple[float, float]:
    """(memory_start, memory_end): explicit memory; Σ c_i(rank_start) moving to Σ c_i(rank_average) (`rank_start`,
    the study's initial_bigger_memory runs); or Σ c_i(rank_average) throughout. `cost`: the method's RankCost."""
    if cfg.memory_start is not None:
        return float(cfg.memory_start), float(cfg.memory_end)
    budget = cost.total(cfg.rank_average)
    if cfg.rank_start is not None:
        return cost.total(cfg.rank_start), budget
    return budget, budget


def build_allocator(cfg, targets, steps_per_epoch: int, cost):
    """The RankAllocator of a resolved learned-allocation config: schedules from its options, budget from
    `budget_bounds`, in the method's `cost`."""

    memory_start, memory_end = budget_bounds(cfg, cost)
    schedule = AllocationSchedule(
        steps_per_epoch=steps_per_epoch, num_epochs=cfg.num_train_epochs,
        alpha_min=cfg.alpha_min, alpha_max=cfg.alpha_max, alpha_scheduler=cfg.alpha_scheduler,
        memory_start=memory_start, memory_end=memory_end,
        epochs_memory_start=cfg.epochs_memory_start, epochs_memory_start_to_end=cfg.epochs_memory_start_to_end,
        epochs_rank_discrete=cfg.epochs_rank_discrete, max_steps=cfg.max_steps,
        alpha_span=cfg.alpha_schedule_span)
    if schedule.first_discrete_step <= 0:
        raise ConfigError("epochs_rank_discrete", f"({cfg.epochs_rank_discrete} epochs of {steps_per_epoch} steps) "
                          f"leaves no step of the {schedule.total_steps}-step run to learn the allocation in",
                          "Lower --epochs_rank_discrete or train longer")
    budget_fields = ("memory_start", "memory_end") if cfg.memory_start is not None else \
        ("rank_start", "rank_average") if cfg.rank_start is not None else ("rank_average",) * 2
    return RankAllocator(targets, cost, cfg.rank_min, cfg.rank_max, schedule, cfg.rank_allocation_weights_init,
                         cfg.budget_mode, cfg.rounding, cfg.tau, seed=cfg.seed, budget_fields=budget_fields,
                         frozen=cfg.rank_annealing)


def _g(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
