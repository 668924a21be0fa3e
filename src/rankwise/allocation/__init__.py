"""Rank allocation: one class per strategy, one module each (static.py holds the five static ones), and the registry
every other module asks.

    static.py    uniform, linear_decay, attention_heavy, empirical, custom   (decided before training)
    learned.py   learned allocation and rank annealing (allocator.py: the allocator itself)
    gradient.py  ranks from loss-gradient energies of training batches (energy.py: gradients, energies, solver)
    fim.py       ranks from the empirical Fisher information of training batches

The core (budget.py, schedules.py, allocator.py, energy.py, and adapters/masks.py) takes plain values, not a run's
configuration. `get_strategy(name)` returns a strategy object (see base.py for what it answers); `strategy_for(cfg)`
the one a run uses, which is its method's own when the method allocates its ranks itself (AdaLoRA, full
fine-tuning). Adding a strategy is one module with a `@register`ed subclass of `AllocationStrategy`, plus its import
line below.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import _REGISTRY, AllocationStrategy, PlanContext, StrategyPlan, register
from . import static, learned, gradient, fim  # noqa: F401, E402  (each registers its strategies)


def get_strategy(name: str) -> AllocationStrategy:
    """The registered strategy called `name`; ConfigError naming the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError("allocation", f"unknown value `{name}`", f"Choose one of: {', '.join(selectable())}") from None


def selectable() -> tuple[str, ...]:
    """The strategies `--allocation` offers (a method's own strategy is not one of them)."""
    return tuple(name for name, s in _REGISTRY.items() if s.selectable)


def strategy_for(method, allocation: str) -> AllocationStrategy:
    """The strategy a run of `method` (an AdapterMethod, or None when unknown) with `--allocation allocation` uses:
    the method's own (AdaLoRA's pruning, full fine-tuning's full rank), else the one it names."""
    own = getattr(method, "own_strategy", None)
    return get_strategy(own if own else allocation)


def registered() -> list[AllocationStrategy]:
    return list(_REGISTRY.values())


__all__ = ["AllocationStrategy", "PlanContext", "StrategyPlan", "register", "get_strategy", "selectable",
           "strategy_for", "registered"]
