"""`loraxs`: LoRA-XS, a frozen rank-r SVD basis of each weight with a trainable r×r matrix R between its factors
(the layer is adapters/loraxs.py). Cost r² per matrix; rank masks multiply R elementwise by q(max(a, b)).

Saved as `rankwise-loraxs` (a run's adapter/: A, B, R per matrix at the allocated rank plus the head) and exported
as `compact` (truncated to the hard ranks) or `merged`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import json
from pathlib import Path

if TYPE_CHECKING:
    from ..targets import TargetMatrix
from ..adapters.io import CONFIG_FILE, WEIGHTS_FILE, adapter_metadata, head_state, load_head
from ..adapters.loraxs import LoraXSLinear, MaskBank, apply_loraxs
from ..adapters.masks import square_masks
from ..allocation.energy import loraxs_energy
from ..targets import adapted_heads
from .base import AdapterMethod, AdapterSet, register

FORMAT = "rankwise-loraxs"


@register
class LoraXS(AdapterMethod):
    name = "loraxs"
    title = "LoRA-XS"
    summary = "frozen SVD factors A = Σ_r V_rᵀ, B = U_r of each weight, trainable r×r R, ΔW = (α/r)·B·R·A"
    options = ()  # no dropout: LoRA-XS's layer has none
    default_rank = 25
    # LoRA-XS trains only r×r per matrix; on MiniLM/CoLA 1e-3 barely moves it in a few epochs, 5e-3 does (README).
    default_learning_rate = 5e-3
    lr_range = (3.16e-4, 3.16e-2)
    tensor_parts = ("lora_A", "lora_B", "lora_R")
    export_formats = ("compact", "merged")
    cost_formula = "r^2 per matrix"
    cost_symbol = "Σ r²"
    stored_parts = "A, B, R"

    def cost_coefficients(self, target: TargetMatrix) -> tuple[int, int, int]:
        return 1, 0, 0

    def gradient_energy(self, weight, grad, rank_max: int):
        """The squared gradient of R's top-left s×s block (R sits between the frozen SVD factors of `weight`)."""

        return loraxs_energy(weight, grad, rank_max)

    def build(self, model, targets, ranks, alphas, *, rslora=False, dropout=0.0, head_modules=(), task_type=None,
              seed=0, init="default", cfg=None, total_steps=0) -> AdapterSet:
        for p in model.parameters():
            p.requires_grad_(False)
        names = [t.name for t in targets]
        modules = apply_loraxs(model, names, ranks, alphas, rslora=rslora, seed=seed)
        adapted = adapted_heads(head_modules, names)  # every-linear: their R trains, their W stays frozen
        for head in [h for h in head_modules if h not in adapted]:
            for p in model.get_submodule(head).parameters():
                p.requires_grad_(True)
        return AdapterSet(self, model, targets, ranks, alphas, modules)

    def set_keep(self, adapter: AdapterSet, keep) -> None:
        """One assignment per step: every layer reads its slice of the shared mask bank (adapters/loraxs.py)."""

        _mask_bank(adapter).masks = None if keep is None else square_masks(keep)

    def scales(self, adapter: AdapterSet) -> list[float]:
        return [float(m.scale) for m in adapter.modules]

    def adapter_parameters(self, adapter: AdapterSet) -> list:
        return [m.lora_R for m in adapter.modules]

    def save(self, adapter, directory: Path, *, base_model, head_modules, hard_ranks, tokenizer=None) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for target, module in zip(adapter.targets, adapter.modules):
            for part in ("lora_A", "lora_B", "lora_R"):
                tensors[f"{target.name}.{part}"] = getattr(module, part).detach().cpu().contiguous()
        tensors.update(head_state(adapter.model, head_modules))
        save_file(tensors, str(directory / WEIGHTS_FILE))
        meta = {**adapter_metadata(adapter, base_model, head_modules, hard_ranks), "format": FORMAT}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))

    def compact_factors(self, adapter: AdapterSet, index: int, rank: int) -> dict:
        module = adapter.modules[index]
        return {"lora_A": module.lora_A[:rank], "lora_B": module.lora_B[:, :rank],
                "lora_R": module.lora_R[:rank, :rank]}

    def attach(self, model, targets, tensors, meta, directory) -> AdapterSet:
        """Wrap each target in a LoraXSLinear with the saved factors (no SVD); freeze all but the head."""

        load_head(model, tensors, meta["head_modules"], directory)
        for p in model.parameters():
            p.requires_grad_(False)
        modules = []
        for target, scale in zip(targets, meta["scales"]):
            base = model.get_submodule(target.name)
            module = LoraXSLinear.from_factors(base, tensors[f"{target.name}.lora_A"],
                                               tensors[f"{target.name}.lora_B"], tensors[f"{target.name}.lora_R"],
                                               scale)
            model.set_submodule(target.name, module)
            modules.append(module)
        for head in meta["head_modules"]:
            for p in model.get_submodule(head).parameters():
                p.requires_grad_(True)
        return AdapterSet(self, model, targets, [m.rank for m in modules], list(meta.get("alphas") or []), modules)

    def merge(self, adapter: AdapterSet):
        model = adapter.model
        for target, module in zip(adapter.targets, adapter.modules):
            module.merge()
            model.set_submodule(target.name, module.base)
        return model


def _mask_bank(adapter: AdapterSet):
    """The adapter's MaskBank, made and handed to its layers on first use."""

    if adapter.hooks is None:
        adapter.hooks = MaskBank()
        for index, module in enumerate(adapter.modules):
            module.mask_bank, module.mask_index = adapter.hooks, index
    return adapter.hooks
