"""Adapter methods behind one handle: `loraxs` (ours), `lora` (PEFT), `adalora` (PEFT, see peft_baselines.py),
`full` (no adapter).

`build_adapter` adapts a model in place (LoRA returns a PEFT wrapper) and returns an `AdapterSet`:
the model to train, the adapted modules in target order, their allocated ranks, and
`set_keep(keep)` through which rank allocation masks rank components.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..targets import TargetMatrix
from .loraxs import LoraXSLinear, adapter_scale, apply_loraxs
from .masks import hard_keep, keep_probabilities, square_masks

if TYPE_CHECKING:
    from .lora import KeepHooks

__all__ = ["AdapterSet", "build_adapter", "alphas_for", "keep_probabilities", "hard_keep", "square_masks",
           "LoraXSLinear", "adapter_scale"]


def alphas_for(ranks: list[int], lora_alpha: float, policy: str, reference_rank: int) -> list[float]:
    """Per-matrix alpha. `constant`/`rslora`: α everywhere. `ratio`: α_i = α·r_i/reference, so every matrix
    has the scale α/reference."""
    if policy == "ratio":
        return [lora_alpha * r / reference_rank for r in ranks]
    return [float(lora_alpha)] * len(ranks)


@dataclass
class AdapterSet:
    method: str
    model: nn.Module  # what to train and call (a PeftModel for lora)
    targets: list[TargetMatrix]
    ranks: list[int]  # allocated size per matrix (rank_max for learned allocation)
    alphas: list[float]
    modules: list[nn.Module] = field(default_factory=list)  # LoraXSLinear or PEFT LoRA layers
    hooks: KeepHooks | None = None

    def set_keep(self, keep: torch.Tensor | None) -> None:
        """Mask rank components: keep (n, r_max) with q_i(k) in [0, 1], or None for all components.
        LoRA-XS gets square masks q_i(max(a, b)); LoRA gets diag(q_i)."""
        if self.method == "loraxs":
            masks = None if keep is None else square_masks(keep)
            for i, module in enumerate(self.modules):
                module.mask = None if masks is None else masks[i, : module.rank, : module.rank]
        elif self.method == "lora":
            for i in range(len(self.modules)):
                self.hooks.keep[i] = None if keep is None else keep[i, : self.ranks[i]]

    def scales(self) -> list[float]:
        """Each adapted matrix's update scale: α/r, α/√r with rsLoRA, per its own rank and alpha."""
        if self.method == "loraxs":
            return [m.scale for m in self.modules]
        if self.method == "lora":
            return [float(m.scaling["default"]) for m in self.modules]
        if self.method == "adalora":  # PEFT's SVDLinear: α / (ranknum + 1e-5), ranknum = init_r
            return [float(m.scaling["default"]) / (float(m.ranknum["default"]) + 1e-5) for m in self.modules]
        return []

    def adapter_parameters(self) -> list[nn.Parameter]:
        if self.method == "loraxs":
            return [m.lora_R for m in self.modules]
        if self.method in ("lora", "adalora"):  # adalora: lora_A, lora_E, lora_B
            return [p for n, p in self.model.named_parameters() if "lora_" in n and p.requires_grad]
        return []

    def num_adapter_parameters(self) -> int:
        """Trainable adapter parameters as allocated (Σ r² for LoRA-XS, Σ r·(in+out) for LoRA)."""
        return sum(p.numel() for p in self.adapter_parameters())


def build_adapter(model: nn.Module, method: str, targets: list[TargetMatrix], ranks: list[int],
                  alphas: list[float], rslora: bool = False, dropout: float = 0.0,
                  head_modules: list[str] = (), task_type: str | None = None, seed: int = 0, init: str = "default",
                  run_config=None, total_steps: int = 0) -> AdapterSet:
    """Adapt `model` in place. Base weights are frozen except for `full`; head modules stay trainable.
    `init="eva"` builds LoRA for PEFT's EVA initialisation (run `peft_baselines.apply_eva` next, with data);
    `adalora` takes its settings from `run_config` and needs the run's optimiser steps (`total_steps`)."""
    names = [t.name for t in targets]
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return AdapterSet(method, model, targets, ranks, alphas)

    for p in model.parameters():
        p.requires_grad_(False)
    if method == "loraxs":
        modules = apply_loraxs(model, names, ranks, alphas, rslora=rslora, seed=seed)
        for head in head_modules:
            for p in model.get_submodule(head).parameters():
                p.requires_grad_(True)
        return AdapterSet(method, model, targets, ranks, alphas, modules)
    if method == "lora":
        from .lora import KeepHooks, apply_lora, lora_config, lora_layers  # PEFT is slow to import

        torch.manual_seed(seed)  # PEFT initialises lora_A with the global generator
        from transformers.pytorch_utils import Conv1D

        conv1d = any(isinstance(model.get_submodule(n), Conv1D) for n in names)  # GPT-2: W stored in×out
        config = lora_config(names, ranks, alphas, rslora, dropout, head_modules, task_type, fan_in_fan_out=conv1d)
        if init == "eva":
            config.init_lora_weights = "eva"
        peft_model = apply_lora(model, config)
        layers = lora_layers(peft_model, names)
        return AdapterSet(method, peft_model, targets, ranks, alphas, layers, KeepHooks(layers))
    if method == "adalora":
        from .peft_baselines import build_adalora

        return build_adalora(model, targets, run_config, total_steps, list(head_modules), task_type, seed=seed)
    raise ValueError(f"unknown method {method!r}")
