"""LoRA through PEFT, with per-matrix ranks and alphas (`rank_pattern` / `alpha_pattern`), so a saved
adapter loads with `PeftModel.from_pretrained`. For learned allocation, a forward hook on each
`lora_A` multiplies rank component k by its keep-probability: ΔW = B·diag(q)·A."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from ..targets import adapted_heads

ADAPTER_NAME = "default"
# PeftModel.__init__ calls a transformers method that transformers 5 deprecates: a FutureWarning on every run
# that a user can do nothing about.
PEFT_DEPRECATION_NOISE = ".*is_gradient_checkpointing.*"


@contextmanager
def peft_quietly():
    """Build or load a PeftModel without transformers' deprecation warning about PEFT's own code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PEFT_DEPRECATION_NOISE, category=FutureWarning)
        yield


def lora_config(names: list[str], ranks: list[int], alphas: list[float], rslora: bool, dropout: float,
                head_modules: list[str], task_type: str | None, fan_in_fan_out: bool = False,
                use_dora: bool = False) -> LoraConfig:
    """A LoraConfig that targets exactly `names` (full module paths) with their own rank and alpha.
    Patterns are only written where a matrix differs from the most common rank/alpha.
    `fan_in_fan_out`: the targets store W as in×out (GPT-2's `Conv1D`). `use_dora`: PEFT's DoRA."""
    base_rank = max(set(ranks), key=ranks.count)
    base_alpha = max(set(alphas), key=alphas.count)
    modules_to_save, task_type = peft_heads(names, head_modules, task_type)
    return LoraConfig(
        r=base_rank,
        lora_alpha=base_alpha,
        target_modules=list(names),
        rank_pattern={n: r for n, r in zip(names, ranks) if r != base_rank},
        alpha_pattern={n: a for n, a in zip(names, alphas) if a != base_alpha},
        use_rslora=rslora,
        lora_dropout=dropout,
        modules_to_save=modules_to_save,
        task_type=task_type,
        bias="none",
        fan_in_fan_out=fan_in_fan_out,
        use_dora=use_dora,
    )


def peft_heads(names: list[str], head_modules: list[str], task_type: str | None) -> tuple[list[str] | None, str | None]:
    """PEFT's `modules_to_save` and `task_type` for adapters on `names`. A head module holding one of them
    (`every-linear`) gets adapters instead of a trainable copy: it leaves modules_to_save, and so does the task type,
    whose sequence-classification model would put the classifier back there (replacing its adapter)."""
    adapted = adapted_heads(head_modules, names)
    return [h for h in head_modules if h not in adapted] or None, None if adapted else task_type


def apply_lora(model: nn.Module, config: LoraConfig) -> PeftModel:
    with peft_quietly():
        return get_peft_model(model, config)


def lora_layers(peft_model: PeftModel, names: list[str]) -> list[nn.Module]:
    """The PEFT LoRA layers for `names` (paths in the base model), in order."""
    base = peft_model.base_model.model
    return [base.get_submodule(n) for n in names]


class KeepHooks:
    """Multiplies the output of each layer's `lora_A` (its rank components) by that layer's keep vector: row i of
    `keep` (n, r_max), cut to the layer's rank. Setting `keep` is one assignment per step whatever the number of
    layers; None keeps every component."""

    def __init__(self, layers: list[nn.Module]):
        self.keep: torch.Tensor | None = None
        self.ranks = [int(layer.r[ADAPTER_NAME]) for layer in layers]
        self.handles = [layer.lora_A[ADAPTER_NAME].register_forward_hook(self._hook(i))
                        for i, layer in enumerate(layers)]

    def _hook(self, index: int):
        def hook(_module, _inputs, output):
            keep = self.keep
            return output if keep is None else output * keep[index, : self.ranks[index]]
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
