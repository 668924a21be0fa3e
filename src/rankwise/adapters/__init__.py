"""Adapter layers and the tensors around them; the methods that use them are in rankwise/methods/.

    loraxs.py  LoraXSLinear: frozen SVD factors with a trainable r×r matrix between them
    lora.py    PEFT LoRA/DoRA helpers: a LoraConfig over exact module paths, keep-mask hooks on lora_A
    masks.py   soft and hard rank masks, one definition for every method with masks
    io.py      adapter metadata, the base-model fingerprint, head tensors, compact tensors
    adapter_set.py  AdapterSet: a model with one method's adapters, as training, saving and exports handle it
"""

from __future__ import annotations

from .loraxs import LoraXSLinear, adapter_scale, apply_loraxs
from .masks import hard_keep, keep_probabilities, square_masks

__all__ = ["alphas_for", "keep_probabilities", "hard_keep", "square_masks", "LoraXSLinear", "adapter_scale",
           "apply_loraxs"]


def alphas_for(ranks: list[int], lora_alpha: float, policy: str, reference_rank: int) -> list[float]:
    """Per-matrix alpha. `constant`/`rslora`: α everywhere. `ratio`: α_i = α·r_i/reference, so every matrix
    has the scale α/reference."""
    if policy == "ratio":
        return [lora_alpha * r / reference_rank for r in ranks]
    return [float(lora_alpha)] * len(ranks)
