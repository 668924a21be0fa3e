"""LoRA-XS: a frozen rank-r SVD basis of W with a trainable r×r matrix between its factors.

W = UΣVᵀ (truncated to rank r). Frozen A = Σ_r V_rᵀ (r×in), frozen B = U_r (out×r), trainable
R (r×r, init N(0, 1e-5²)). ΔW = (α/r)·B·R·A. Singular directions are ordered by singular value,
so a rank-s mask keeps the top s.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

R_INIT_STD = 1e-5


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with B·A the best rank-`rank` approximation of `weight` (out×in): A = Σ_r V_rᵀ, B = U_r."""
    u, s, vh = torch.linalg.svd(weight.detach().to(torch.float32), full_matrices=False)
    return (s[:rank, None] * vh[:rank]).contiguous(), u[:, :rank].contiguous()


class LoraXSLinear(nn.Module):
    """Wraps an `nn.Linear` (or GPT-2 `Conv1D`): y = base(x) + scale · x Aᵀ (R ⊙ mask)ᵀ Bᵀ.

    `mask` (r, r) is set once per step by the rank allocator (None = all ranks). Shapes: A (r, in),
    B (out, r), R (r, r); `scale` = α/r (or α/√r with rsLoRA).
    """

    def __init__(self, base: nn.Module, rank: int, scale: float, seed: int | None = None):
        super().__init__()
        self.base = base
        weight = base.weight.T if isinstance(base, Conv1D) else base.weight  # out×in
        rank = min(rank, *weight.shape)
        a, b = svd_factors(weight, rank)
        self.register_buffer("lora_A", a.to(weight.dtype))
        self.register_buffer("lora_B", b.to(weight.dtype))
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.lora_R = nn.Parameter(torch.randn(rank, rank, generator=generator, dtype=weight.dtype) * R_INIT_STD)
        self.rank = rank
        self.scale = scale
        self.mask: torch.Tensor | None = None
        self.merged = False

    def effective_R(self) -> torch.Tensor:
        return self.lora_R if self.mask is None else self.lora_R * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        # (R·A) is r×in: one small matmul per step instead of one per token.
        ra = self.effective_R() @ self.lora_A
        return result + self.scale * ((x @ ra.T) @ self.lora_B.T)

    def delta_weight(self) -> torch.Tensor:
        """ΔW (out×in) at the current mask."""
        return self.scale * self.lora_B @ self.effective_R() @ self.lora_A

    def merge(self) -> None:
        """Add ΔW into the base weight (for export / fast inference)."""
        if self.merged:
            return
        delta = self.delta_weight().detach()
        with torch.no_grad():
            if isinstance(self.base, Conv1D):
                self.base.weight += delta.T.to(self.base.weight.dtype)
            else:
                self.base.weight += delta.to(self.base.weight.dtype)
        self.merged = True


def adapter_scale(alpha: float, rank: int, rslora: bool = False) -> float:
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def apply_loraxs(model: nn.Module, names: list[str], ranks: list[int], alphas: list[float],
                 rslora: bool = False, seed: int = 0) -> list[LoraXSLinear]:
    """Replace each named linear module by a LoraXSLinear of the given rank and alpha; freeze the rest
    of the model's adapted base layers. Returns the new modules in `names` order."""
    modules = []
    for index, (name, rank, alpha) in enumerate(zip(names, ranks, alphas)):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        wrapped = LoraXSLinear(base, rank, adapter_scale(alpha, rank, rslora), seed=seed * 100_003 + index)
        for p in base.parameters():
            p.requires_grad_(False)
        setattr(parent, child, wrapped)
        modules.append(wrapped)
    return modules
