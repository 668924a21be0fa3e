"""Soft and hard rank masks, one definition for both adapter methods.

For continuous ranks s_i and candidate ranks r ∈ {r_min..r_max}:
    p_i(r) = softmax_r(−α·log(1 + (s_i − r)²) + τ·g_r),  g Gumbel noise (training only)
The keep-probability of rank index k (0-based) is q_i(k) = Σ_{r>k} p_i(r), so q = 1 for k < r_min.
LoRA multiplies the rank-k component by q_i(k) (ΔW = B·diag(q)·A); LoRA-XS multiplies R[a, b] by
q_i(max(a, b)). That equals the adaptive LoRA-XS study's Σ_r p(r)·1[:r,:r] at O(r²) per matrix,
for all matrices at once, with no Python loop over ranks.

Every tensor is made on the device of its input, so a training step copies nothing from the host (the GPU never
waits for it): Gumbel noise comes from a generator on that device, index tensors are built there once and kept.
"""

from __future__ import annotations

import torch


def keep_probabilities(ranks: torch.Tensor, rank_min: int, rank_max: int, alpha: float, tau: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Soft keep-probabilities q, shape (n, rank_max), from continuous ranks `ranks` (n,).
    Differentiable in `ranks`."""
    candidates = torch.arange(rank_min, rank_max + 1, dtype=ranks.dtype, device=ranks.device)
    logits = -alpha * torch.log1p((ranks[:, None] - candidates[None, :]) ** 2)  # (n, K)
    if tau > 0:  # the generator must live on the ranks' device (RankAllocator.noise_generator)
        uniform = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        logits = logits + tau * -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))
    p = torch.softmax(logits, dim=1)
    # q(k) for k = r_min-1 .. r_max-1 is the tail sum Σ_{r ≥ k+1} p(r): a reversed cumulative sum.
    tail = torch.flip(torch.cumsum(torch.flip(p, [1]), 1), [1])  # tail[:, j] = Σ_{r ≥ r_min + j} p
    # Columns k < r_min are exactly 1 (tail[:, 0] = Σp is 1 only up to rounding).
    ones = torch.ones(ranks.shape[0], rank_min, dtype=p.dtype, device=p.device)
    return torch.cat([ones, tail[:, 1:]], dim=1)  # columns k = 0..r_max-1


def hard_keep(hard_ranks: torch.Tensor | list[int], rank_max: int, device: torch.device | str | None = None
              ) -> torch.Tensor:
    """0/1 keep mask, shape (n, rank_max): q_i(k) = 1[k < r_i], on `device` (default: the ranks' own)."""
    r = torch.as_tensor(hard_ranks, device=device)
    return (torch.arange(rank_max, device=r.device)[None, :] < r[:, None]).to(torch.float32)


_SQUARE_INDEX: dict[tuple[int, torch.device], torch.Tensor] = {}


def square_index(r: int, device: torch.device) -> torch.Tensor:
    """max(a, b) for a, b < r, shape (r, r), int64 on `device`: built once per size and device."""
    key = (r, torch.device(device))
    if key not in _SQUARE_INDEX:
        steps = torch.arange(r, device=device)
        _SQUARE_INDEX[key] = torch.maximum(steps[:, None], steps[None, :])
    return _SQUARE_INDEX[key]


def square_masks(keep: torch.Tensor) -> torch.Tensor:
    """LoRA-XS masks M_i[a, b] = q_i(max(a, b)), shape (n, r, r), from keep-probabilities (n, r)."""
    return keep[:, square_index(keep.shape[1], keep.device)]
