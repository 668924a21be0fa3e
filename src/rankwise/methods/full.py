"""`full`: full fine-tuning, the reference of LR-ratio studies. Every weight trains; there are no adapters, ranks
or budgets. A run saves the whole model (`model/`, `save_pretrained` with the tokenizer); its one export is
`merged`, the model itself with the task's label names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

from ..allocation.base import AllocationStrategy, PlanContext, StrategyPlan, register as register_strategy
from ..models import quiet_transformers
from .base import AdapterMethod, AdapterSet, DropoutOption, register

if TYPE_CHECKING:
    from ..targets import TargetMatrix


@register_strategy
class FullRank(AllocationStrategy):
    """Full fine-tuning's own: every matrix trains whole, at its full rank (no budget, no options)."""

    name = "full"
    title = "full"
    summary = "full fine-tuning's own: every weight trains"
    options = ()
    same_rank_everywhere = True
    selectable = False

    def plan(self, cfg, context: PlanContext) -> StrategyPlan:
        return StrategyPlan([min(t.in_features, t.out_features) for t in context.targets])

    def reference_rank(self, cfg) -> int:
        return cfg.rank

    def name_parts(self, cfg):
        return [], set()

    def describe(self, row: dict, text) -> str:
        return "full"


@register
class Full(AdapterMethod):
    name = "full"
    title = "full fine-tuning"
    short_title = "Full FT"
    summary = "full fine-tuning: every weight trains (the LR-ratio study's reference)"
    trains_adapter = False
    supports_learned = False
    options = (DropoutOption,)  # ignored, as lora_alpha is: an LR sweep passes its shared options to its references
    own_strategy = "full"
    default_rank = 0
    default_learning_rate = 5e-5
    lr_range = (1e-5, 1e-3)
    weights_dir = "model"
    export_style = "model"
    cost_formula = "in*out per matrix"
    cost_symbol = "Σ in·out"

    def cost_coefficients(self, target: TargetMatrix) -> tuple[int, int, int]:
        return 0, 0, target.in_features * target.out_features

    def own_strategy_refusal(self, option_name: str) -> tuple[str, str]:
        return (f"does not apply to --method {self.name} ({self.title} trains every weight: there are no adapter "
                "ranks or budgets)", f"Drop --{option_name}, or use --method loraxs, lora or dora")

    def build(self, model, targets, ranks, alphas, *, rslora=False, dropout=0.0, head_modules=(), task_type=None,
              seed=0, init="default", cfg=None, total_steps=0) -> AdapterSet:
        for p in model.parameters():
            p.requires_grad_(True)
        return AdapterSet(self, model, targets, ranks, alphas)

    def save(self, adapter, directory: Path, *, base_model, head_modules, hard_ranks, tokenizer=None) -> None:
        with quiet_transformers():
            adapter.model.save_pretrained(directory)
            if tokenizer is not None:
                tokenizer.save_pretrained(directory)
