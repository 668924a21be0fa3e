"""The core of the measuring strategies (`gradient.py`, `fim.py`): loss gradients on training batches, the energy a
rank-s adapter can follow, and the exact knapsack that spends a budget on it. Plain values in, ranks out.

Gradient-energy allocation (`--allocation gradient`): per-matrix ranks from data, in seconds, before training.

A few training batches (`--allocation_batches`, default 4) give each target matrix's loss gradient
G_i = ∂L/∂W_i (the mean over the batches; base weights as loaded, the head at its initialisation, or trained alone
for `--allocation_head_steps` steps first and then reset, dropout off).
The energy E_i(s) is how much of that gradient a rank-s adapter of the method can follow, i.e. the squared norm
of the loss gradient restricted to what a rank-s adapter can change:

- LoRA, DoRA: the top-s squared singular values of G_i (the best rank-s approximation of the gradient: what a
  rank-s update can represent; at LoRA's initialisation, B = 0, the first step's gain is not this);
- LoRA-XS: ‖(U_rᵀ G_i V_r Σ_r)[:s, :s]‖², the gradient of its r×r matrix R between the frozen SVD factors of W
  (rankwise's A = Σ_r V_rᵀ, B = U_r; the singular values weight the columns, as they scale R's inputs).
The update scale α/s (constant α) is left out: with `--alpha_policy ratio` every matrix has uniform --rank's scale.

Ranks maximise Σ_i E_i(s_i) subject to Σ_i c_i(s_i) ≤ budget and rank_min ≤ s_i ≤ rank_max (and the matrix's
smaller dimension). `solve` does it exactly by dynamic programming over the budget, counted in units of the
greatest common divisor of the cost steps (LoRA's costs share in+out factors, so the table is small); when that
table would be too large it falls back to greedy steps of largest energy per parameter and says so.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import time
from dataclasses import dataclass
from functools import reduce

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..targets import TargetMatrix, weight_matrix
from .budget import RankCost

DP_CELLS_LIMIT = 300_000_000  # matrices × ranks × budget units the exact solver may visit (a few seconds)
DP_TABLE_LIMIT = 50_000_000  # matrices × budget units of back-pointers it may hold (int16: 100 MB)


@dataclass
class GradientAllocation:
    """The ranks and what decided them (recorded in ranks.json under `gradient`)."""

    ranks: list[int]
    energy: torch.Tensor  # (n, rank_max + 1): E_i(s) for s = 0..rank_max (-inf above a matrix's smaller dimension)
    budget: float
    solver: str  # `exact` (dynamic programming) or `greedy`
    batches: int
    seconds: float
    normalized: bool
    head_steps: int = 0

    @classmethod
    def unmeasured(cls, budget: float, batches: int, normalized: bool) -> "GradientAllocation":
        """A budget checked before any batch was seen (a plan on a weightless model): no ranks yet."""
        return cls([], torch.zeros(0, 1, dtype=torch.float64), budget, "", batches, 0.0, normalized)

    def record(self) -> dict:
        if not self.ranks:
            return {"measured": False, "budget": self.budget, "batches": self.batches, "normalized": self.normalized}
        captured = [float(self.energy[i, r]) for i, r in enumerate(self.ranks)]
        total = [float(self.energy[i][torch.isfinite(self.energy[i])].max()) for i in range(len(self.ranks))]
        return {"measured": True, "budget": self.budget, "solver": self.solver, "batches": self.batches,
                "seconds": round(self.seconds, 3), "normalized": self.normalized, "head_steps": self.head_steps,
                "energy_captured": captured, "energy_at_rank_max": total,
                "energy": [[float(f"{x:.6g}") if math.isfinite(x) else None for x in row]
                           for row in self.energy.tolist()]}


# ---------------------------------------------------------------------------------------------
# Gradients and energies
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _only_trainable(model: nn.Module, params: list[nn.Parameter]):
    """The model in eval mode (dropout off) with only `params` requiring gradients and no .grad anywhere; on exit
    every parameter's requires_grad and .grad and the training mode are as before."""
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    saved_grads = {id(p): p.grad for p in model.parameters()}
    was_training = model.training
    try:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for p in params:
            p.requires_grad_(True)
        model.eval()
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(trainable[id(p)])
            p.grad = saved_grads[id(p)]
        model.train(was_training)


def _batch_loss(model: nn.Module, batch, loss_fn=None) -> torch.Tensor:
    loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
    if loss is None:
        raise ConfigError("allocation", "the model returned no loss for a training batch: `gradient` needs "
                          "batches with labels", "Give batches that include `labels`")
    return loss


def target_gradients(model: nn.Module, targets: list[TargetMatrix], batches, loss_fn=None) -> list[torch.Tensor]:
    """G_i (out×in, float32) of every target: the mean loss gradient over `batches` (dicts of tensors with labels).
    `loss_fn(model, batch)` gives the loss (default: `model(**batch).loss`). The model's training mode, its
    parameters' requires_grad and their .grad are restored; nothing is stepped."""
    weights = [model.get_submodule(t.name).weight for t in targets]
    sums = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
    count = 0
    with _only_trainable(model, weights):
        for batch in batches:
            grads = torch.autograd.grad(_batch_loss(model, batch, loss_fn), weights)
            for total, grad in zip(sums, grads):
                total += grad.float()
            count += 1
    if count == 0:
        raise ConfigError("allocation_batches", "no training batch was given to measure gradients on",
                          "Give at least one batch")
    modules = [model.get_submodule(t.name) for t in targets]
    return [weight_matrix(module, total / count) for module, total in zip(modules, sums)]


@contextlib.contextmanager
def warmed_head(model: nn.Module, head: list[nn.Parameter], batches, steps: int, lr: float, loss_fn=None):
    """The model with its new head trained alone for `steps` AdamW steps (learning rate `lr`) on `batches`, cycled,
    so measured gradients do not pass through a random head. On exit the head's weights, every parameter's
    requires_grad and .grad and the training mode are as before: training starts from the same initialisation
    as without it. Dropout is off (eval mode), as while measuring; no random number is drawn."""
    if steps == 0 or not head:
        yield
        return
    saved = [p.detach().clone() for p in head]
    try:
        with _only_trainable(model, head):
            optimizer = torch.optim.AdamW(head, lr=lr, weight_decay=0.0)
            for batch in itertools.islice(itertools.cycle(batches), steps):
                loss = _batch_loss(model, batch, loss_fn)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(head, saved):
                p.copy_(value)


def lora_energy(grad: torch.Tensor, rank_max: int) -> torch.Tensor:
    """E(s) for s = 0..rank_max: the top-s squared singular values of G (cumulative)."""
    values = torch.linalg.svdvals(grad.double())[:rank_max] ** 2
    return _cumulative(values, rank_max)


def loraxs_energy(weight: torch.Tensor, grad: torch.Tensor, rank_max: int) -> torch.Tensor:
    """E(s) for s = 0..rank_max: ‖(U_rᵀ G V_r Σ_r)[:s, :s]‖², the squared gradient of LoRA-XS's R at rank s.

    When W (out×in) is not taller than wide, V_r Σ_r = Wᵀ U_r, so the block is U_rᵀ G Wᵀ U_r with U_r the top
    eigenvectors of W Wᵀ (out×out): a third of the SVD's time on MiniLM's matrices, and the same energies (a
    singular vector's sign cancels in the squares). Taller matrices take the SVD."""
    w, g = weight.double(), grad.double()
    r = min(rank_max, *w.shape)
    if w.shape[0] <= w.shape[1]:
        _, vectors = torch.linalg.eigh(w @ w.T)  # ascending eigenvalues σ²
        u = vectors.flip(1)[:, :r]
        block = u.T @ g @ w.T @ u  # ∂L/∂R = Bᵀ G Aᵀ with A = Σ Vᵀ, B = U
    else:
        u, sigma, vh = torch.linalg.svd(w, full_matrices=False)
        block = (u[:, :r].T @ g @ vh[:r].T) * sigma[:r]
    squared = block**2
    cumulative = torch.stack([squared[:s, :s].sum() for s in range(1, r + 1)])
    return _cumulative(torch.diff(cumulative, prepend=cumulative.new_zeros(1)), rank_max)


def _cumulative(steps: torch.Tensor, rank_max: int) -> torch.Tensor:
    """[0, e_1, e_1+e_2, ...] padded with -inf up to rank_max (ranks a matrix cannot hold)."""
    energy = torch.full((rank_max + 1,), -math.inf, dtype=torch.float64)
    energy[0] = 0.0
    energy[1:len(steps) + 1] = torch.cumsum(steps.double(), 0)
    return energy


def normalize_energy(energy: torch.Tensor) -> torch.Tensor:
    """Each matrix's curve divided by its value at its largest rank: allocation by the shape of the spectrum only."""
    finite = torch.where(torch.isfinite(energy), energy, torch.zeros_like(energy))
    top = finite.max(dim=1, keepdim=True).values.clamp_min(1e-300)
    return torch.where(torch.isfinite(energy), energy / top, energy)


# ---------------------------------------------------------------------------------------------
# The allocation problem
# ---------------------------------------------------------------------------------------------

def solve(energy: torch.Tensor, cost: RankCost, budget: float, rank_min: int) -> tuple[list[int], str]:
    """Ranks s_i ≥ rank_min maximising Σ E_i(s_i) with Σ c_i(s_i) ≤ budget; `energy` (n, R+1) is -inf at ranks a
    matrix may not take. Returns (ranks, `exact` | `greedy`). Costs must be integers (parameter counts)."""
    steps, allowed = _cost_steps(energy, cost, rank_min)
    spare = budget - cost.total(float(rank_min))
    if spare < -1e-6:
        raise ValueError(f"budget {budget:,.0f} is below every matrix at rank {rank_min}")
    unit = reduce(math.gcd, (int(s) for row in steps for s in row if s > 0), 0)
    if unit == 0:  # no matrix can grow
        return [rank_min] * len(energy), "exact"
    capacity = int(math.floor(spare / unit + 1e-9))
    widest = max(len(row) for row in steps)
    if len(energy) * widest * (capacity + 1) <= DP_CELLS_LIMIT and len(energy) * (capacity + 1) <= DP_TABLE_LIMIT:
        return _solve_exact(energy, steps, unit, capacity, rank_min), "exact"
    return _solve_greedy(energy, steps, allowed, spare, rank_min), "greedy"


def _cost_steps(energy: torch.Tensor, cost: RankCost, rank_min: int) -> tuple[list[list[int]], list[int]]:
    """Per matrix, the extra cost of ranks rank_min..its largest allowed rank over rank_min, and that largest rank."""
    allowed = [int(torch.isfinite(row).nonzero().max()) for row in energy]
    too_small = [i for i, top in enumerate(allowed) if top < rank_min]
    if too_small:
        raise ValueError(f"matrix {too_small[0]} can hold rank {allowed[too_small[0]]} at most, below rank_min "
                         f"{rank_min}")
    table = torch.stack([cost.cost(float(r)) for r in range(rank_min, max(allowed) + 1)], dim=1)  # (n, ranks)
    extra = (table - table[:, :1]).round().long().tolist()
    return [row[:top - rank_min + 1] for row, top in zip(extra, allowed)], allowed


def _solve_exact(energy, steps, unit: int, capacity: int, rank_min: int) -> list[int]:
    """Knapsack over budget units: best[b] = the largest energy gain with at most b units spent so far."""
    best = np.zeros(capacity + 1)
    choices = np.zeros((len(energy), capacity + 1), dtype=np.int16)
    for i, row in enumerate(steps):
        gains = energy[i].numpy()
        new = np.full(capacity + 1, -np.inf)
        for offset, extra in enumerate(row):
            units = extra // unit
            if units > capacity:
                break
            candidate = best[:capacity + 1 - units] + (gains[rank_min + offset] - gains[rank_min])
            better = candidate > new[units:]
            new[units:][better] = candidate[better]
            choices[i, units:][better] = offset
        best = new
    ranks, left = [0] * len(energy), capacity
    for i in reversed(range(len(energy))):
        offset = int(choices[i, left])
        ranks[i] = rank_min + offset
        left -= steps[i][offset] // unit
    return ranks


def _solve_greedy(energy, steps, allowed, spare: float, rank_min: int) -> list[int]:
    """Add one rank at a time to the matrix with the largest energy gain per parameter that still fits."""
    ranks = [rank_min] * len(energy)

    def entry(i: int):
        s = ranks[i]
        if s >= allowed[i]:
            return None
        extra = steps[i][s + 1 - rank_min] - steps[i][s - rank_min]
        gain = float(energy[i, s + 1] - energy[i, s])
        return (-gain / max(extra, 1e-300), i, extra)

    heap = [e for e in (entry(i) for i in range(len(energy))) if e is not None]
    heapq.heapify(heap)
    while heap:
        _, i, extra = heapq.heappop(heap)
        if extra > spare + 1e-9:
            continue  # costs only grow with rank: this matrix is done
        ranks[i] += 1
        spare -= extra
        following = entry(i)
        if following is not None:
            heapq.heappush(heap, following)
    return ranks


# ---------------------------------------------------------------------------------------------
# From a model and batches to ranks
# ---------------------------------------------------------------------------------------------

def energy_curves(method, model: nn.Module, targets: list[TargetMatrix], grads: list[torch.Tensor],
                  rank_max: int) -> torch.Tensor:
    """(n, rank_max + 1) energies of the method's adapters (see the module docstring)."""
    rows = []
    for t, grad in zip(targets, grads):
        weight = weight_matrix(model.get_submodule(t.name)).detach()
        rows.append(method.gradient_energy(weight, grad, min(rank_max, t.in_features, t.out_features)))
    out = torch.full((len(rows), rank_max + 1), -math.inf, dtype=torch.float64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def gradient_allocation(method, model: nn.Module, targets: list[TargetMatrix], batches, cost: RankCost,
                        budget: float, rank_min: int, rank_max: int, normalized: bool = False,
                        loss_fn=None, distributed: bool = False, head: list[nn.Parameter] | None = None,
                        head_steps: int = 0, head_lr: float = 0.0) -> GradientAllocation:
    """Measure gradients on `batches`, turn them into energies and solve for the ranks. `distributed`: every
    process of the run calls this on the same batches, and process 0's energies are used (training).
    `head_steps` > 0: the `head` parameters first train alone that many steps at `head_lr` (see warmed_head)."""
    started = time.perf_counter()
    batches = list(batches)
    with warmed_head(model, head or [], batches, head_steps, head_lr, loss_fn):
        grads = target_gradients(model, targets, batches, loss_fn)
    energy = energy_curves(method, model, targets, grads, rank_max)
    if distributed:
        energy = _agreed(energy)
    if normalized:
        energy = normalize_energy(energy)
    ranks, solver = solve(energy, cost, budget, rank_min)
    return GradientAllocation(ranks, energy, budget, solver, len(batches), time.perf_counter() - started, normalized,
                              head_steps if head else 0)


def _agreed(energy: torch.Tensor) -> torch.Tensor:
    """The energies of process 0 on every process of a distributed run (each process measures the same batches;
    broadcasting rules out a tie broken differently by floating-point noise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return energy
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    shared = energy.to(device)
    dist.broadcast(shared, src=0)
    return shared.cpu()
