"""`fim`: ranks from the diagonal of the empirical Fisher information, before training, under the budget.

The empirical Fisher information of a weight is the mean squared loss gradient over training batches,
F_jk = (1/T) Σ_t (∂ℓ_t/∂W_jk)², and its mean over a matrix's entries is that matrix's sensitivity to the loss,
F_i (the rank_pattern proposed to PEFT as `init_lora_weights="fim"` and to axolotl as `fim_auto_rank`, which neither
adopted). Both proposals make each matrix's rank proportional to F_i. rankwise spends the budget on
E_i(s) = F_i · ln s with the exact solver of `gradient` (energy.solve): maximising Σ F_i ln s_i under Σ c_i(s_i) ≤ M
gives every matrix the share of the budget its sensitivity has, c_i(s_i) = M · F_i / Σ_j F_j, for LoRA's costs
(linear in s: ranks ∝ F_i/(in+out)) and LoRA-XS's (quadratic) alike, in whole ranks within [rank_min, rank_max]
and each matrix's size.

The batches, the head's warm-up and the distributed agreement are those of `gradient` (`allocation_batches`,
`allocation_head_steps`; process 0's scores count). Plain values in (`fisher_scores`, `fisher_energy`); the
strategy class reads the run's options.
"""

from __future__ import annotations

import math
import time

from ..errors import ConfigError
from .base import PlanContext, register
from .energy import GradientAllocation, _agreed, _batch_loss, _only_trainable, warmed_head
from .gradient import MeasuringStrategy


def fisher_scores(model, targets, batches, loss_fn=None) -> list[float]:
    """F_i of every target: the mean over `batches` of each batch's squared loss gradient, averaged over the
    matrix's entries (float64). The model's training mode, requires_grad and .grad are restored."""
    import torch

    weights = [model.get_submodule(t.name).weight for t in targets]
    sums = [torch.zeros((), dtype=torch.float64, device=w.device) for w in weights]
    count = 0
    with _only_trainable(model, weights):
        for batch in batches:
            grads = torch.autograd.grad(_batch_loss(model, batch, loss_fn), weights)
            for i, grad in enumerate(grads):
                sums[i] += grad.double().pow(2).mean()
            count += 1
    if count == 0:
        raise ConfigError("allocation_batches", "no training batch was given to measure on", "Give at least one batch")
    return [float(total) / count for total in sums]


def fisher_energy(scores: list[float], limits: list[int], rank_max: int):
    """(n, rank_max + 1) table E_i(s) = F_i · ln s for 1 ≤ s ≤ limits[i], -inf elsewhere (rank 0 and ranks a matrix
    cannot hold)."""
    import torch

    energy = torch.full((len(scores), rank_max + 1), -math.inf, dtype=torch.float64)
    for i, (score, limit) in enumerate(zip(scores, limits)):
        ranks = torch.arange(1, limit + 1, dtype=torch.float64)
        energy[i, 1:limit + 1] = score * torch.log(ranks)
    return energy


@register
class Fim(MeasuringStrategy):
    name = "fim"
    title = "FIM"
    summary = ("ranks from the diagonal of the empirical Fisher information (mean squared loss gradient per "
               "weight, averaged per matrix) on a few training batches, each matrix's budget share proportional to "
               "it, by the exact solver, before training")
    signal = "the Fisher information"
    energy_name = ""  # F·ln s has no share of a whole to report

    def measure(self, cfg, context: PlanContext, cost, budget: float, solve):
        started = time.perf_counter()
        batches = list(context.batches)
        with warmed_head(context.model, context.head, batches, cfg.allocation_head_steps, cfg.cls_learning_rate,
                         context.loss_fn):
            scores = fisher_scores(context.model, context.targets, batches, context.loss_fn)
        limits = [min(cfg.rank_max, t.in_features, t.out_features) for t in context.targets]
        energy = fisher_energy(scores, limits, cfg.rank_max)
        if context.distributed:
            energy = _agreed(energy)
        ranks, solver = solve(energy, cost, budget, cfg.rank_min)
        return GradientAllocation(ranks, energy, budget, solver, len(batches), time.perf_counter() - started, False,
                                  cfg.allocation_head_steps if context.head else 0)
