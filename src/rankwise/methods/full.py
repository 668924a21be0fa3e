"""`full`: full fine-tuning, the reference of LR-ratio studies. Every weight trains; there are no adapters, ranks
or budgets. A run saves the whole model (`model/`, `save_pretrained` with the tokenizer); its one export is
`merged`, the model itself with the task's label names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

from ..errors import ConfigError
if TYPE_CHECKING:
    from ..targets import TargetMatrix
from .base import AdapterMethod, AdapterSet, register


@register
class Full(AdapterMethod):
    name = "full"
    title = "full fine-tuning"
    short_title = "Full FT"
    summary = "full fine-tuning: every weight trains (the LR-ratio study's reference)"
    trains_adapter = False
    supports_learned = False
    default_rank = 0
    default_learning_rate = 5e-5
    lr_range = (1e-5, 1e-3)
    weights_dir = "model"
    export_style = "model"
    cost_formula = "in*out per matrix"
    cost_symbol = "Σ in·out"

    def cost_coefficients(self, target: TargetMatrix) -> tuple[int, int, int]:
        return 0, 0, target.in_features * target.out_features

    def validate(self, cfg) -> None:
        super().validate(cfg)
        if cfg.allocation != "uniform":
            raise ConfigError("allocation", f"`{cfg.allocation}` needs an adapter, but --method is `full`",
                              "Use --method loraxs or --method lora, or drop --allocation")

    def build(self, model, targets, ranks, alphas, *, rslora=False, dropout=0.0, head_modules=(), task_type=None,
              seed=0, init="default", cfg=None, total_steps=0) -> AdapterSet:
        for p in model.parameters():
            p.requires_grad_(True)
        return AdapterSet(self, model, targets, ranks, alphas)

    def save(self, adapter, directory: Path, *, base_model, head_modules, hard_ranks, tokenizer=None) -> None:
        from ..models import quiet_transformers

        with quiet_transformers():
            adapter.model.save_pretrained(directory)
            if tokenizer is not None:
                tokenizer.save_pretrained(directory)
