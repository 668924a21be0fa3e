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


class MaskBank:
    """The rank masks of every adapted matrix in one tensor (n, r_max, r_max), or None for none: setting it is one
    assignment per step whatever the number of matrices, and each layer reads its own slice in its forward."""

    def __init__(self) -> None:
        self.masks: torch.Tensor | None = None


class LoraXSLinear(nn.Module):
    """Wraps an `nn.Linear` (or GPT-2 `Conv1D`): y = base(x) + scale · x Aᵀ (R ⊙ mask)ᵀ Bᵀ.

    `mask` (r, r) is set once per step by the rank allocator (None = all ranks). Shapes: A (r, in),
    B (out, r), R (r, r); `scale` = α/r (or α/√r with rsLoRA).
    """

    def __init__(self, base: nn.Module, rank: int, scale: float, seed: int | None = None,
                 factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.base = base
        weight = base.weight.T if isinstance(base, Conv1D) else base.weight  # out×in
        if factors is None:
            rank = min(rank, *weight.shape)
            a, b = svd_factors(weight, rank)
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            r = torch.randn(rank, rank, generator=generator, dtype=weight.dtype) * R_INIT_STD
        else:  # given (A, B, R), e.g. a saved or exported adapter: no SVD
            a, b, r = factors
            rank = r.shape[0]
        self.register_buffer("lora_A", a.to(weight.device, weight.dtype).contiguous())
        self.register_buffer("lora_B", b.to(weight.device, weight.dtype).contiguous())
        self.lora_R = nn.Parameter(r.detach().to(weight.device, weight.dtype).clone())
        self.rank = rank
        self.scale = scale
        self.mask: torch.Tensor | None = None
        self.mask_bank: MaskBank | None = None  # the masks of all matrices, set once per step (see MaskBank)
        self.mask_index = 0
        self.merged = False

    def current_mask(self) -> torch.Tensor | None:
        if self.mask is not None:
            return self.mask
        bank = self.mask_bank
        if bank is None or bank.masks is None:
            return None
        return bank.masks[self.mask_index, : self.rank, : self.rank]

    def effective_R(self) -> torch.Tensor:
        mask = self.current_mask()
        return self.lora_R if mask is None else self.lora_R * mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        # (R·A) is r×in: one small matmul per step instead of one per token. In x's dtype: a half-precision base
        # outside autocast gets half-precision inputs (inside autocast the matmuls are cast anyway).
        ra = (self.effective_R() @ self.lora_A).to(x.dtype)
        return result + self.scale * ((x @ ra.T) @ self.lora_B.T.to(x.dtype))

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

    @classmethod
    def from_factors(cls, base: nn.Module, lora_A: torch.Tensor, lora_B: torch.Tensor, lora_R: torch.Tensor,
                     scale: float) -> "LoraXSLinear":
        """A layer with given factors A (r, in), B (out, r), R (r, r) and scale, e.g. from an export."""
        r = lora_R.shape[0]
        if lora_R.shape != (r, r) or lora_A.shape[0] != r or lora_B.shape[1] != r:
            raise ValueError(f"LoRA-XS factors do not fit: A {tuple(lora_A.shape)}, B {tuple(lora_B.shape)}, "
                             f"R {tuple(lora_R.shape)}")
        return cls(base, r, scale, factors=(lora_A, lora_B, lora_R))


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
