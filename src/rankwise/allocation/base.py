"""What every allocation strategy is to the rest of rankwise: `AllocationStrategy` (one subclass per strategy) and
the `StrategyPlan` it hands the plan.

A strategy answers, for the configuration, the plan, run names and reports:

- options: the option dataclasses it reads (`options`: its own, declared in its module, and shared ones from
  `allocation/options.py`); an option of a part no selected strategy, method or task reads does not apply to a run;
  its defaults (`resolve`), its checks (`validate`), and why it refuses an option it does not read (`why_not`);
- ranks: `plan(cfg, context)` gives each matrix's allocated rank (and, for learned allocation, the allocator);
  the work is done by core functions in this package that take plain values (ranks, costs, budgets), not the run
  configuration;
- names and reports: run-name parts (`name_parts`), the rank description of a report row (`describe`).

Strategy modules stay light to import (torch inside the functions that need it): the registry is read by the
configuration and `rankwise --help`. A method may bring its own strategy (AdaLoRA prunes to its budget, full
fine-tuning trains every weight: `AdapterMethod.own_strategy`), which is registered but not offered as
`--allocation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..targets import TargetMatrix


@dataclass
class PlanContext:
    """What a strategy plans with: plain values, no run configuration. `model` may be on the meta device (a plan
    without weights) unless the strategy measures (`batches` then holds training batches, or None to check the
    budget only)."""

    targets: list[TargetMatrix]
    method: Any  # the AdapterMethod: its rank cost and gradient energies
    model: Any
    head_modules: list[str]
    steps_per_epoch: int = 1
    batches: list | None = None
    loss_fn: Any = None
    distributed: bool = False
    head: list = field(default_factory=list)  # the newly initialised head's parameters (measuring strategies)

    @property
    def cost(self):
        return self.method.rank_cost(self.targets)


@dataclass
class StrategyPlan:
    """A strategy's plan: `ranks` the adapters are built at, `shown` the ranks the plan table shows (learned: the
    hard ranks at the start; a measuring strategy before it measured: uniform --rank), `allocator` (learned), and
    what the plan records about its budget (`budget`) or its measurement (`measurement`)."""

    ranks: list[int]
    shown: list[int] | None = None
    allocator: Any = None
    budget: dict | None = None
    measurement: dict | None = None

    def __post_init__(self) -> None:
        if self.shown is None:
            self.shown = list(self.ranks)


class AllocationStrategy:
    """One allocation strategy. Subclasses set the class attributes and implement what their strategy does."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as reports print it
    summary: ClassVar[str] = ""  # one line for --help and the README
    options: ClassVar[tuple[type, ...]] = ()  # the option dataclasses it reads
    selectable: ClassVar[bool] = True  # offered as --allocation (a method's own strategy is not)
    baseline: ClassVar[bool] = False  # the same rank everywhere: the reports' reference arm
    same_rank_everywhere: ClassVar[bool] = False  # one rank for every matrix (uniform; full fine-tuning's full rank)
    learned: ClassVar[bool] = False  # trains allocation weights: rank masks change while training
    measures: ClassVar[bool] = False  # sets the ranks from training batches before training
    sized_by_rank_max: ClassVar[bool] = False  # adapters built at rank_max (the alpha policy's reference rank)
    names_learning_rate: ClassVar[bool] = True  # run names show the adapter's learning rate (learned: its own)

    def reads(self, option: str) -> bool:
        """Whether the strategy reads run option `option`."""
        return any(option in part.__dataclass_fields__ for part in self.options)

    def resolve(self, cfg) -> None:
        """Fill this strategy's defaults into a config being resolved (in place)."""

    def validate(self, cfg, given) -> None:
        """Raise ConfigError for settings this strategy cannot run with. `given(option)`: whether the run sets
        `option` to a value of its own (not a default)."""

    def why_not(self, option: str, cfg) -> tuple[str, str] | None:
        """(problem, fix) when the run sets `option`, which this strategy does not read, and the strategy has a
        better word for it than the generic "only applies to ..." (e.g. learned allocation's own budget)."""
        return None

    def plan(self, cfg, context: PlanContext) -> StrategyPlan:
        raise NotImplementedError

    def reference_rank(self, cfg) -> int:
        """The rank the alpha policy `ratio` scales from: --rank, or --rank_max for adapters built at rank_max."""
        return cfg.rank_max if self.sized_by_rank_max else cfg.rank

    def adjust_alphas(self, alphas: list[float], cfg, plan: StrategyPlan) -> list[float]:
        """The alphas the plan gives (learned allocation rescales them to its average rank)."""
        return alphas

    def name_parts(self, cfg) -> tuple[list[str], set[str]]:
        """Run-name parts after the method, and the config fields they name exactly."""
        return [self.name], {"allocation"}

    def describe(self, row: dict, text) -> str:
        """The ranks of a report row (a run's resolved config) in a few characters; `text` formats a value."""
        return f"r{text(row['rank'])}"

    def budget_line(self, plan) -> str | None:
        """The plan table's line about this strategy's budget or measurement, if it has one."""
        return None


_REGISTRY: dict[str, AllocationStrategy] = {}


def register(strategy_class: type[AllocationStrategy]) -> type[AllocationStrategy]:
    """Class decorator: add a strategy to the registry under its `name`."""
    _REGISTRY[strategy_class.name] = strategy_class()
    return strategy_class


def missing(value) -> bool:
    """None, or NaN (a report row's empty cell)."""
    return value is None or value != value
