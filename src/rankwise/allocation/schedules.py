"""Per-optimiser-step schedules of learned allocation: mask sharpness α, budget M, and the discrete phase.

Steps are 0-based optimiser steps of the global batch (all processes together); an epoch has `steps_per_epoch`
of them, and the run `num_epochs` epochs or `max_steps` steps.
- α goes from alpha_min (step 0) to alpha_max at the last soft step (the step before the discrete
  phase, or the last step): `linear`, `exponential` (geometric; needs alpha_min > 0) or `cosine`. With
  `alpha_span="all"` it moves over all steps instead, as the adaptive LoRA-XS study's scheduler does: step t has
  progress t / total_steps, so α_max is the value the study's scheduler would reach one step after the run, and
  the discrete phase does not shorten the ramp.
- M is memory_start for `epochs_memory_start` epochs, then moves linearly to memory_end over
  `epochs_memory_start_to_end` epochs, then stays there.
- The last `epochs_rank_discrete` epochs train with hard ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AllocationSchedule:
    steps_per_epoch: int
    num_epochs: float
    alpha_min: float
    alpha_max: float
    alpha_scheduler: str
    memory_start: float
    memory_end: float
    epochs_memory_start: int = 0
    epochs_memory_start_to_end: int = 0
    epochs_rank_discrete: int = 0
    max_steps: int | None = None  # the run's length in steps when --max_steps sets it (else num_epochs epochs)
    alpha_span: str = "soft"  # α ramps over the soft phase (`soft`) or over every step of the run (`all`)

    @property
    def total_steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return math.ceil(self.steps_per_epoch * self.num_epochs)  # a fractional last epoch, as transformers counts it

    @property
    def first_discrete_step(self) -> int:
        return self.total_steps - self.epochs_rank_discrete * self.steps_per_epoch

    def is_discrete(self, step: int) -> bool:
        return step >= self.first_discrete_step

    def progress(self, step: int) -> float:
        """Fraction of α's ramp done at `step`: 0 at step 0, 1 at the last soft step (`soft`); t / total_steps
        (`all`)."""
        if self.alpha_span == "all":
            return min(max(step / max(self.total_steps, 1), 0.0), 1.0)
        last_soft = max(min(self.first_discrete_step, self.total_steps) - 1, 1)
        return min(max(step / last_soft, 0.0), 1.0)

    def alpha(self, step: int) -> float:
        t = self.progress(step)
        lo, hi = self.alpha_min, self.alpha_max
        if self.alpha_scheduler == "linear":
            return lo + (hi - lo) * t
        if self.alpha_scheduler == "exponential":
            return lo * (hi / lo) ** t
        if self.alpha_scheduler == "cosine":
            return lo + (hi - lo) * (1 - math.cos(math.pi * t)) / 2
        raise ValueError(f"unknown alpha scheduler {self.alpha_scheduler!r}")

    def memory(self, step: int) -> float:
        start = self.epochs_memory_start * self.steps_per_epoch
        length = self.epochs_memory_start_to_end * self.steps_per_epoch
        if step < start:
            return self.memory_start
        if length == 0 or step >= start + length:
            return self.memory_end
        return self.memory_start + (self.memory_end - self.memory_start) * (step - start) / length
