"""Parameter cost of ranks, ranks under a budget, and hard ranks that respect it.

A matrix's cost at rank s is c(s) = quad·s² + lin·s + const: LoRA-XS spends s² (its r×r matrix R),
LoRA spends s·(in+out) (A and B), DoRA s·(in+out) + out (A, B and its magnitude vector). A budget M is a total cost over all target matrices.
Allocation math runs in float64 so a budget is met to ~1e-9 relative. The differentiable path (continuous ranks)
runs on the allocation weights' device with no host synchronisation; rounding to hard ranks runs on the host, on
Python numbers, after one copy (`devices.to_host`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..devices import to_host
from ..errors import ConfigError


@dataclass
class RankCost:
    """Per-matrix cost coefficients: c_i(s) = quad_i·s² + lin_i·s + const_i for s ≥ 1 (const: what a matrix spends
    at any rank, e.g. DoRA's magnitude vector). Tensors of shape (n,), float64. Each adapter method gives its
    coefficients (`rankwise.methods`: `get_method(name).rank_cost(targets)`)."""

    quad: torch.Tensor
    lin: torch.Tensor
    const: torch.Tensor | None = None
    # (quad, lin, const) per matrix as Python floats, for arithmetic on the host whatever device the tensors are on
    coefficients: list[tuple[float, float, float]] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.const is None:
            self.const = torch.zeros_like(self.quad)
        if self.coefficients is None:
            self.coefficients = [tuple(c) for c in to_host(torch.stack([self.quad, self.lin, self.const], 1))]

    @classmethod
    def from_coefficients(cls, coefficients: list[tuple[float, float, float]]) -> "RankCost":
        """From (quad, lin, const) per matrix."""
        quad, lin, const = (torch.tensor([c[k] for c in coefficients], dtype=torch.float64) for k in range(3))
        return cls(quad, lin, const, [tuple(float(x) for x in c) for c in coefficients])

    @property
    def device(self) -> torch.device:
        return self.quad.device

    def to(self, device) -> "RankCost":
        """The same costs on `device` (itself when already there)."""
        if self.quad.device == torch.device(device):
            return self
        return RankCost(self.quad.to(device), self.lin.to(device), self.const.to(device), self.coefficients)

    def __len__(self) -> int:
        return len(self.quad)

    def cost(self, ranks: torch.Tensor | float) -> torch.Tensor:
        s = torch.as_tensor(ranks, dtype=torch.float64)
        return self.quad * s * s + self.lin * s + self.const

    def rank_for_cost(self, cost: torch.Tensor) -> torch.Tensor:
        """Inverse of `cost`, elementwise (cost ≥ const)."""
        cost = (cost.to(torch.float64) - self.const).clamp_min(0.0)
        quadratic = (-self.lin + torch.sqrt(self.lin**2 + 4 * self.quad * cost)) / (2 * self.quad.clamp_min(1e-300))
        linear = cost / self.lin.clamp_min(1e-300)
        return torch.where(self.quad > 0, quadratic, linear)

    def total(self, ranks: torch.Tensor | float) -> float:
        """Σ c_i(s_i) for ranks s (a tensor on the host, or one rank for every matrix)."""
        return float(self.cost(ranks).sum())

    def matrix_cost(self, index: int, rank: float) -> float:
        """c_i(rank) on the host, for matrix `index`."""
        quad, lin, const = self.coefficients[index]
        return quad * rank * rank + lin * rank + const

    def host_total(self, ranks: list[float]) -> float:
        """Σ c_i(s_i) on the host, for one Python number per matrix."""
        return sum(self.matrix_cost(i, r) for i, r in enumerate(ranks))

    def uniform_rank(self, budget: float) -> float:
        """The rank s (real) at which every matrix together costs `budget`: Σ c_i(s) = budget (bisection)."""
        low, high = 0.0, 1.0
        while self.total(high) < budget:
            high *= 2
        for _ in range(100):
            mid = (low + high) / 2
            low, high = (mid, high) if self.total(mid) < budget else (low, mid)
        return (low + high) / 2


def check_feasible(cost: RankCost, budget: float, rank_min: int, rank_max: int, field: str) -> None:
    """Raise ConfigError unless Σc(rank_min) ≤ budget ≤ Σc(rank_max). `field` is the option the budget came
    from (`memory_start`, `memory_end` or `rank_average`), named in the message with its own fix."""
    low, high = cost.total(rank_min), cost.total(rank_max)
    if not (low - 1e-6 <= budget <= high + 1e-6):
        n = len(cost)
        if field in ("rank_average", "rank_start"):
            fix = f"Choose --{field} between --rank_min and --rank_max, or change --rank_min/--rank_max"
        elif field == "budget":
            fix = f"Give --budget between {low:,.0f} and {high:,.0f}, or change --rank_min/--rank_max"
        else:
            fix = (f"Give --{field} between {low:,.0f} and {high:,.0f} (or set the budget with --rank_average), or "
                   "change --rank_min/--rank_max")
        raise ConfigError(field, f"budget {budget:,.0f} is outside what {n} target matrices can hold with ranks in "
                          f"[{rank_min}, {rank_max}]: [{low:,.0f}, {high:,.0f}] parameters", fix)


def softmax_ranks(weights: torch.Tensor, cost: RankCost, budget: float, rank_min: int) -> torch.Tensor:
    """The adaptive LoRA-XS study's formula: c_i(s_i) = c_i(r_min) + (M − Σ_j c_j(r_min))·softmax(w)_i.

    May give s_i > r_max (the mask then saturates and that budget is lost). Differentiable in w.
    """
    cost = cost.to(weights.device)
    base = cost.cost(torch.full((len(cost),), float(rank_min), dtype=torch.float64, device=cost.device))
    shares = torch.softmax(weights.to(torch.float64), dim=0)
    return cost.rank_for_cost(base + (budget - base.sum()) * shares)


def capped_ranks(weights: torch.Tensor, cost: RankCost, budget: float, rank_min: int, rank_max: int) -> torch.Tensor:
    """Softmax shares with water-filling: matrices that would pass r_max are clamped and their surplus is
    shared over the rest, so Σ c_i(s_i) = M exactly with r_min ≤ s_i ≤ r_max. Differentiable in w
    (clamped matrices get no gradient). Vectorised: one sort, no loop over matrices, no host synchronisation.

    Extra cost e_i = min(cap_i, λ·π_i) with cap_i = c_i(r_max) − c_i(r_min); λ solves Σ e_i = E.
    """
    n = len(cost)
    cost = cost.to(weights.device)
    base = cost.cost(torch.full((n,), float(rank_min), dtype=torch.float64, device=cost.device))
    cap = cost.cost(torch.full((n,), float(rank_max), dtype=torch.float64, device=cost.device)) - base
    extra = budget - base.sum()
    shares = torch.softmax(weights.to(torch.float64), dim=0)

    # λ at which matrix i saturates; clamp the k matrices with the smallest thresholds.
    threshold = cap / shares
    order = torch.argsort(threshold.detach())
    cap_sorted, shares_sorted, thr_sorted = cap[order], shares[order], threshold[order]
    capped_before = torch.cat([cap_sorted.new_zeros(1), torch.cumsum(cap_sorted, 0)[:-1]])  # Σ caps of first k
    share_from = torch.flip(torch.cumsum(torch.flip(shares_sorted, [0]), 0), [0])  # Σ shares of k..n-1
    lam = (extra - capped_before) / share_from  # λ if exactly the first k are clamped
    lower = torch.cat([thr_sorted.new_full((1,), -float("inf")), thr_sorted[:-1]])
    valid = (lam.detach() <= thr_sorted.detach() + 1e-12) & (lam.detach() >= lower.detach() - 1e-12)
    # The first valid k, chosen on the device (no host synchronisation in the per-step path): argmax of the 0/1
    # vector is its first 1. If none is valid, the budget fills every matrix to r_max.
    k = torch.argmax(valid.to(torch.int8))
    e_sorted = torch.minimum(cap_sorted, lam.gather(0, k.view(1)) * shares_sorted)  # lam[k] would sync
    e_sorted = torch.where(torch.arange(n, device=k.device) < k, cap_sorted, e_sorted)
    e_sorted = torch.where(valid.any(), e_sorted, cap_sorted)
    e = torch.empty_like(e_sorted).scatter(0, order, e_sorted)
    ranks = cost.rank_for_cost(base + e)
    return ranks.clamp(float(rank_min), float(rank_max))


def host_values(ranks: torch.Tensor | list[float]) -> list[float]:
    """Continuous ranks as Python floats (one device-to-host copy for a tensor)."""
    return [float(x) for x in (to_host(ranks) if isinstance(ranks, torch.Tensor) else ranks)]


def round_to_budget(ranks: torch.Tensor | list[float], cost: RankCost, budget: float, rank_min: int,
                    rank_max: int) -> list[int]:
    """Hard ranks near `ranks` with Σ c_i(r_i) ≤ budget: floor, then add one rank at a time in order of
    largest fractional part while the budget allows (largest remainder). Runs on the host."""
    s = [min(max(x, rank_min), rank_max) for x in host_values(ranks)]
    hard = [min(max(math.floor(x + 1e-9), rank_min), rank_max) for x in s]
    remaining = budget - cost.host_total(hard)
    fraction = [x - h for x, h in zip(s, hard)]
    for i in sorted(range(len(s)), key=lambda i: -fraction[i]):  # stable: ties keep matrix order
        if fraction[i] <= 1e-9 or hard[i] >= rank_max:
            continue
        step = cost.matrix_cost(i, hard[i] + 1) - cost.matrix_cost(i, hard[i])
        if step <= remaining + 1e-9:
            hard[i] += 1
            remaining -= step
    return hard


def round_independently(ranks: torch.Tensor | list[float], rank_min: int, rank_max: int) -> list[int]:
    """The study's rounding: each rank rounded on its own, half to even as torch.round (may exceed the budget)."""
    return [int(min(max(round(x), rank_min), rank_max)) for x in host_values(ranks)]
