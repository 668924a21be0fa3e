"""The rank allocator of learned allocation (the adaptive LoRA-XS study's method, for LoRA-XS, LoRA and DoRA): the
core, on plain values (targets, costs, a schedule); `learned.py` builds it from a run's options.

Trainable weights w (one per target matrix) → continuous ranks s = alloc(w, M(t)) under the
budget → soft keep-probabilities (sharpness α(t)) that mask rank components → hard ranks in the
discrete phase and at every evaluation. The allocator computes all masks once per step, outside
the model's forward.

On a GPU the soft path (every training step of the soft phase) runs on the weights' device with no host
synchronisation, Gumbel noise included (a generator on that device). Hard ranks need rounding on the host: they
are computed once per budget and weights and kept, so the discrete phase and evaluation cost one copy each.
`self.cost` stays on the host for arithmetic there; the differentiable path uses a copy on the device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..adapters.masks import hard_keep, keep_probabilities
from ..targets import TargetMatrix
from .budget import (RankCost, capped_ranks, check_feasible, host_values, round_independently, round_to_budget,
                     softmax_ranks)
from .schedules import AllocationSchedule


def initial_weights(n: int, init: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The study's initialisations of the allocation weights, shape (n,), float32 as the study computes them.

    The bumps are centred on whole matrix indices as in the study: ⌊n/2⌋ (`quadratic`) and ⌊3n/4⌋
    (`left_skewed`, whose left side, the centre included, has σ = 3n/(4√10) and right side σ = n/(4√10))."""
    i = torch.arange(n, dtype=torch.float32)
    if init == "random":
        return torch.randn(n, generator=generator)
    if init == "uniform":
        return torch.zeros(n)
    if init == "quadratic":  # Gaussian bump centred at ⌊n/2⌋
        sigma = n / (2 * math.sqrt(10))
        return torch.exp(-((i - n // 2) ** 2) / (2 * sigma**2))
    if init == "left_skewed":  # peak at ⌊3n/4⌋, wide on the left, narrow on the right
        peak = 3 * n // 4
        left, right = 3 * n / (4 * math.sqrt(10)), n / (4 * math.sqrt(10))
        distance = (i - peak) ** 2
        return torch.where(i <= peak, torch.exp(-distance / (2 * left**2)), torch.exp(-distance / (2 * right**2)))
    raise ValueError(f"unknown allocation weights init {init!r}")


def uniform_rank_weights(cost: RankCost, budget: float, rank_min: int) -> torch.Tensor:
    """Allocation weights under which every matrix gets the same rank at `budget` (shares of the cost above
    rank_min proportional to c_i(s̄) − c_i(rank_min)): zeros when all matrices cost the same (LoRA-XS), log of
    in+out for LoRA (a wider matrix needs more parameters for the same rank)."""
    average = cost.uniform_rank(budget)
    extra = cost.cost(average) - cost.cost(float(rank_min))
    if average <= rank_min + 1e-9 or bool((extra <= 0).any()):
        return torch.zeros(len(cost))
    weights = torch.log(extra)
    return (weights - weights.mean()).to(torch.float32)


class RankAllocator(nn.Module):
    """Holds the allocation weights and turns them into masks for each training step."""

    def __init__(self, targets: list[TargetMatrix], cost: RankCost, rank_min: int, rank_max: int,
                 schedule: AllocationSchedule, weights_init: str = "uniform", budget_mode: str = "capped",
                 rounding: str = "budget", tau: float = 0.0, seed: int = 0,
                 budget_fields: tuple[str, str] = ("memory_start", "memory_end"), frozen: bool = False):
        """`budget_fields`: the options the start and end budgets came from, named if one is infeasible. `frozen`:
        the weights keep their initial value (rank annealing: uniform ranks under shrinking soft masks)."""
        super().__init__()
        self.names = [t.name for t in targets]
        self.cost = cost
        self.rank_min, self.rank_max = rank_min, rank_max
        self.schedule = schedule
        self.budget_mode, self.rounding, self.tau = budget_mode, rounding, tau
        check_feasible(self.cost, schedule.memory_start, rank_min, rank_max, budget_fields[0])
        check_feasible(self.cost, schedule.memory_end, rank_min, rank_max, budget_fields[1])
        self.generator = torch.Generator().manual_seed(seed)  # initial weights; Gumbel noise on the CPU
        weights = uniform_rank_weights(cost, schedule.memory_end, rank_min) if weights_init == "uniform" else \
            initial_weights(len(targets), weights_init, self.generator)
        self.weights = nn.Parameter(weights, requires_grad=not frozen)
        self.step = 0  # the optimiser step the masks are for (set by the trainer before each step)
        self._hard_cache: tuple | None = None
        self._device_cost: RankCost = cost
        self._device_generator: torch.Generator | None = None  # Gumbel noise on an accelerator

    def continuous_ranks(self, budget: float) -> torch.Tensor:
        """s (n,), float64 on the weights' device, differentiable in the weights."""
        if self._device_cost.device != self.weights.device:  # once, after the allocator moved to its device
            self._device_cost = self.cost.to(self.weights.device)
        if self.budget_mode == "softmax":
            return softmax_ranks(self.weights, self._device_cost, budget, self.rank_min)
        return capped_ranks(self.weights, self._device_cost, budget, self.rank_min, self.rank_max)

    def hard_ranks(self, budget: float, continuous: list[float] | None = None) -> list[int]:
        """Rounded ranks at `budget` (on the host: one copy of the continuous ranks, unless given)."""
        if continuous is None:
            with torch.no_grad():
                continuous = host_values(self.continuous_ranks(budget))
        if self.rounding == "study":
            return round_independently(continuous, self.rank_min, self.rank_max)
        return round_to_budget(continuous, self.cost, budget, self.rank_min, self.rank_max)

    def noise_generator(self) -> torch.Generator | None:
        """The generator of the Gumbel noise, on the weights' device: the CPU generator there, else one on the
        accelerator seeded from it once (None on devices without generators, such as `meta`)."""
        device = self.weights.device
        if device.type == "cpu":
            return self.generator
        if device.type == "meta":
            return None
        if self._device_generator is None or self._device_generator.device != device:
            seed = int(torch.randint(2**62, (1,), generator=self.generator))
            self._device_generator = torch.Generator(device=device).manual_seed(seed)
        return self._device_generator

    def noise_state(self) -> torch.Tensor:
        """The noise generator's state, for checkpoints (a CPU byte tensor)."""
        return (self.noise_generator() or self.generator).get_state()

    def load_noise_state(self, state: torch.Tensor) -> None:
        """Restore `noise_state()`. A state saved on another kind of device (a CPU run resumed on a GPU) cannot
        continue its stream there: the noise then starts afresh from the seed."""
        generator = self.noise_generator() or self.generator
        try:
            generator.set_state(state)
        except RuntimeError:
            pass

    def keep(self, step: int, training: bool, noise: bool = True) -> torch.Tensor:
        """Keep-probabilities (n, rank_max) for `step`: soft while training in the soft phase, else hard. `noise`
        False leaves out the Gumbel noise (τ > 0), and so does not draw from the allocator's generator (for logs).

        The soft path runs on the weights' device without host synchronisation. Hard ranks need rounding on the
        host, so they are computed once per (budget, allocation weights) and reused: in the discrete phase the
        weights do not change between steps."""
        budget = self.schedule.memory(step)
        if training and not self.schedule.is_discrete(step):
            s = self.continuous_ranks(budget).to(self.weights.dtype)
            return keep_probabilities(s, self.rank_min, self.rank_max, self.schedule.alpha(step),
                                      self.tau if noise else 0.0, self.noise_generator() if noise else None)
        # The weights change only in the soft phase (the optimiser's fused kernel leaves `_version` alone, loading a
        # checkpoint does not): hard masks are kept per budget, loaded weights and soft step.
        key = (budget, self.weights._version, self.weights.device, None if self.schedule.is_discrete(step) else step)
        if self._hard_cache is None or self._hard_cache[0] != key:
            self._hard_cache = (key, hard_keep(self.hard_ranks(budget), self.rank_max, self.weights.device))
        return self._hard_cache[1]

    def state(self, step: int) -> dict:
        """What allocation.jsonl records for `step`: one copy from the device."""
        budget = self.schedule.memory(step)
        with torch.no_grad():
            s = host_values(self.continuous_ranks(budget))
        hard = self.hard_ranks(budget, s)
        return {
            "step": step,
            "alpha": self.schedule.alpha(step),
            "budget": budget,
            "discrete": self.schedule.is_discrete(step),
            "budget_used": self.cost.host_total(hard),
            "continuous": dict(zip(self.names, [round(x, 4) for x in s])),
            "hard": dict(zip(self.names, hard)),
        }
