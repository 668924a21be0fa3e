"""`AdapterSet`: a model with one adapter method's adapters attached, as the rest of rankwise handles it (training,
saving, exporting). The method it names (an `AdapterMethod`, rankwise/methods/) does the work; this layer only needs
what the method answers (`MethodLike`), so adapters/ never imports methods/."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..targets import TargetMatrix


class MethodLike(Protocol):
    """What an AdapterSet asks its method (rankwise.methods.AdapterMethod implements it)."""

    name: str

    def set_keep(self, adapter: "AdapterSet", keep) -> None: ...

    def scales(self, adapter: "AdapterSet") -> list[float]: ...

    def adapter_parameters(self, adapter: "AdapterSet") -> list: ...


@dataclass
class AdapterSet:
    """A model with one method's adapters: the model to train and call (a PeftModel for PEFT methods), the
    adapted matrices in target order, their allocated ranks and alphas, and the adapted modules."""

    method: MethodLike
    model: "nn.Module"
    targets: list[TargetMatrix]
    ranks: list[int]  # allocated size per matrix (rank_max for learned allocation)
    alphas: list[float]
    modules: list = field(default_factory=list)  # LoraXSLinear, or PEFT layers
    hooks: Any = None  # where set_keep puts the masks: LoRA's keep hooks, LoRA-XS's mask bank
    base_record: dict | None = None  # the base model's fingerprint taken before its weights were cast (adapters.io)

    def set_keep(self, keep: "torch.Tensor | None") -> None:
        """Mask rank components: keep (n, r_max) with q_i(k) in [0, 1], or None for all components."""
        self.method.set_keep(self, keep)

    def scales(self) -> list[float]:
        """Each adapted matrix's update scale: α/r, α/√r with rsLoRA, per its own rank and alpha."""
        return self.method.scales(self)

    def adapter_parameters(self) -> list:
        return self.method.adapter_parameters(self)

    def num_adapter_parameters(self) -> int:
        """Trainable adapter parameters as allocated (Σ r² for LoRA-XS, Σ r·(in+out) for LoRA)."""
        return sum(p.numel() for p in self.adapter_parameters())


