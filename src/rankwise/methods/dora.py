"""`dora`: DoRA (weight-decomposed LoRA) through PEFT, `LoraConfig(use_dora=True)`: each adapted weight is
m · (W + ΔW) / ‖W + ΔW‖_c with ΔW = (α/r)·B·A as in LoRA and a trainable magnitude vector m (one value per output
feature, initialised to the column norms of W). Cost r·(in+out) + out per matrix, as PEFT counts it.

Static allocations (and `--match_budget`, which counts the magnitude vectors) work as for LoRA, and so do learned
allocation and rank annealing: LoRA's rank masks multiply the output of `lora_A`, and PEFT computes DoRA's weight
norm ‖W + s·B·A‖_c through that same forward (`get_lora_weight` runs lora_B(lora_A(I))), so the norm is the masked
adapter's, ‖W + s·B·diag(q)·A‖_c (tested against that definition).
Saved in PEFT's format (`rankwise-lora` with `use_dora`), exported as `peft` or `merged` at the hard ranks (A and B
cut as for LoRA, m carried over).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..targets import TargetMatrix
from .base import DropoutOption, register
from .lora import PEFT_ADAPTER_NAME, Lora


@register
class Dora(Lora):
    name = "dora"
    title = "DoRA"
    summary = "PEFT LoraConfig(use_dora=True): LoRA on the direction of W plus a trainable magnitude per output"
    use_dora = True
    inits = ("default",)
    options = (DropoutOption,)
    export_formats = ("peft", "merged")
    cost_formula = "r*(in+out)+out per matrix"
    cost_symbol = "Σ r·(in+out) + out"
    stored_parts = "A, B, m"
    tensor_parts = ("lora_A", "lora_B", "lora_magnitude_vector")

    def cost_coefficients(self, target: TargetMatrix) -> tuple[int, int, int]:
        return 0, target.in_features + target.out_features, target.out_features

    def compact_factors(self, adapter, index: int, rank: int) -> dict:
        """LoRA's A and B cut to `rank`, and the magnitude vector m. With hard 0/1 masks the norm of the cut
        adapter is the masked one, so the cut adapter computes what training evaluated."""
        layer = adapter.modules[index]
        return {**super().compact_factors(adapter, index, rank),
                "lora_magnitude_vector": layer.lora_magnitude_vector[PEFT_ADAPTER_NAME].weight}
