"""`adalora`: AdaLoRA through PEFT, the baseline that allocates its own ranks while training.

ΔW = B·diag(E)·A·(α/init_r), every matrix starting at `init_r` rank triplets (A row, E entry, B column). PEFT's
RankAllocator scores triplets by smoothed |w·∂L/∂w| and masks (zeroes E of) the least important ones, with a total
triplet budget that falls cubically from init_r·n to the target between `tinit` and `total_step − tfinal`. PEFT
needs `update_and_allocate(step)` after every optimiser step (it reads the gradients, so before `zero_grad`);
`AdaLoraHooks` does that for the training loop, reads the current ranks (the masks' non-zero counts) and keeps
the orthogonality regulariser out of evaluation losses.

Budget match: a triplet of matrix i costs in_i + out_i + 1 parameters; LoRA at rank ρ spends
M = Σ_i ρ·(in_i + out_i). `--rank_average ρ` sets the final triplet budget to B = round(M / c̄), with
c̄ = mean_i(in_i + out_i + 1) the mean triplet cost, so the final adapter has M parameters when the triplets are
spread like LoRA's (exactly B·c, within c/2 of M, when all targets have the same shape; otherwise
Σ r_i·c_i depends on where AdaLoRA keeps its triplets, and the summary reports that count).

Saved as `rankwise-adalora` (PEFT's own AdaLoRA files, pruned, plus rankwise.json); exported as `peft` or `merged`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import contextlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..adapters.io import META_FILE, adapter_metadata
from ..adapters.lora import peft_heads, peft_quietly
from ..allocation.base import AllocationStrategy, PlanContext, StrategyPlan, register as register_strategy
from ..allocation.options import AverageRank, RankOption
from ..errors import ConfigError, RunDirError
from ..models import named_portably
from ..options import option, require as _require
from ..targets import fan_in_fan_out
from .base import AdapterMethod, AdapterSet, DropoutOption, TrainingHooks, register

if TYPE_CHECKING:
    from ..targets import TargetMatrix

ADAPTER_NAME = "default"
FORMAT = "rankwise-adalora"


def triplet_cost(target: TargetMatrix) -> int:
    """Parameters of one AdaLoRA rank triplet: a row of A (in), an entry of E (1), a column of B (out)."""
    return target.in_features + target.out_features + 1


@dataclass
class AdaLoraBudget:
    init_r: int
    target_triplets: int  # B: total rank triplets left after pruning
    target_r: int  # PEFT's integer target_r (B / n rounded; B itself is what the allocator uses)
    lora_parameters: int | None  # M: LoRA at rank_average (None when --adalora_target_r was given)
    expected_parameters: int  # B · mean triplet cost

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def adalora_budget(cfg, targets: list[TargetMatrix]) -> AdaLoraBudget:
    """The final triplet budget for a resolved config (see the module docstring). Raises ConfigError when it
    leaves nothing to prune or nothing to keep."""
    n = len(targets)
    costs = [triplet_cost(t) for t in targets]
    mean_cost = sum(costs) / n
    if cfg.adalora_target_r is not None:
        triplets, lora_parameters = cfg.adalora_target_r * n, None
    else:
        lora_parameters = round(sum(cfg.rank_average * (t.in_features + t.out_features) for t in targets))
        triplets = round(lora_parameters / mean_cost)
    if triplets < 1:
        raise ConfigError("rank_average", f"({cfg.rank_average:g}) leaves AdaLoRA less than one rank triplet in all",
                          "Raise --rank_average")
    if triplets >= cfg.adalora_init_r * n:
        raise ConfigError("adalora_init_r", f"({cfg.adalora_init_r}) × {n} matrices = {cfg.adalora_init_r * n} "
                          f"triplets is not above the final budget of {triplets}, so nothing would be pruned",
                          f"Use --adalora_init_r {math.ceil(1.5 * triplets / n)} or more")
    return AdaLoraBudget(cfg.adalora_init_r, triplets, max(1, round(triplets / n)), lora_parameters,
                         round(triplets * mean_cost))


def adalora_steps(cfg, total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal) in optimiser steps from their fractions. tfinal ≥ 1, because PEFT fixes the final masks at
    step total_step − tfinal, and the loop's last step is total_step − 1."""
    tinit = int(cfg.adalora_tinit * total_steps)
    tfinal = max(1, int(cfg.adalora_tfinal * total_steps))
    if total_steps - tfinal <= tinit + 1:
        raise ConfigError("adalora_tfinal", f"the run has {total_steps} optimiser steps: tinit {tinit} + tfinal "
                          f"{tfinal} leave no step to prune in", "Train more steps (epochs or examples) or lower "
                          "--adalora_tinit / --adalora_tfinal")
    return tinit, tfinal


@dataclass
class AdaLoraOptions:
    """AdaLoRA's knobs (PEFT's AdaLoraConfig; its budget: --rank_average or --adalora_target_r)."""

    adalora_init_r: Optional[int] = option(None, "AdaLoRA: rank every matrix starts at. Default ceil(1.5 × the final "
                                          "average rank).", "adalora")
    adalora_target_r: Optional[int] = option(None, "AdaLoRA: final average rank (PEFT's target_r: target_r × n rank "
                                            "triplets in all). Default: from --rank_average (or --rank), matched to LoRA's "
                                            "parameter count at that rank.", "adalora")
    adalora_tinit: float = option(0.1, "AdaLoRA: fraction of the optimiser steps trained before pruning starts "
                                 "(PEFT's tinit, in steps).", "adalora")
    adalora_tfinal: float = option(0.3, "AdaLoRA: fraction of the optimiser steps trained at the final ranks "
                                  "(PEFT's tfinal, in steps; at least 1 step).", "adalora")
    adalora_deltaT: int = option(10, "AdaLoRA: optimiser steps between two rank allocations.", "adalora")
    adalora_beta1: float = option(0.85, "AdaLoRA: EMA coefficient of the sensitivity.", "adalora")
    adalora_beta2: float = option(0.85, "AdaLoRA: EMA coefficient of the uncertainty.", "adalora")
    adalora_orth_reg_weight: float = option(0.5, "AdaLoRA: weight of the orthogonality regulariser of A and B, added to "
                                           "the training loss (not to evaluation losses).", "adalora")


@register_strategy
class AdaLoraPruning(AllocationStrategy):
    """AdaLoRA's own allocation: every matrix starts at init_r triplets, and PEFT prunes them to the final budget
    while training (the method's hooks run it)."""

    name = "adalora"
    title = "AdaLoRA pruning"
    summary = "AdaLoRA's own: init_r triplets everywhere, pruned to the budget while training"
    options = (RankOption, AverageRank)
    selectable = False

    def plan(self, cfg, context: PlanContext) -> StrategyPlan:
        targets = context.targets
        rank_limit = min(min(t.in_features, t.out_features) for t in targets)
        if cfg.adalora_init_r > rank_limit:
            raise ConfigError("adalora_init_r", f"({cfg.adalora_init_r}; unless given, 1.5 × the final average rank "
                              f"from --rank_average or --adalora_target_r) exceeds the smallest target matrix "
                              f"dimension ({rank_limit})", f"Use --adalora_init_r {rank_limit} or less, or a smaller "
                              "final average rank")
        budget = {**adalora_budget(cfg, targets).to_dict(), "rank_average": cfg.rank_average}
        return StrategyPlan([cfg.adalora_init_r] * len(targets), budget=budget)

    def name_parts(self, cfg):
        """Ranks are AdaLoRA's own: name its budget and starting rank."""
        used = {"allocation", "adalora_init_r"}
        if cfg.adalora_target_r is not None:
            parts = [f"target{cfg.adalora_target_r}"]
            used.add("adalora_target_r")
        else:
            parts = [f"avg{cfg.rank_average:g}"]
            used.add("rank_average")
        return parts + [f"init{cfg.adalora_init_r}"], used

    def describe(self, row: dict, text) -> str:
        """AdaLoRA's budget: LoRA's parameters at rank_average, or PEFT's target_r."""
        target = row.get("adalora_target_r")
        return f"target_r {text(target)}" if target is not None and target == target else \
            f"avg {text(row['rank_average'])}"

    def budget_line(self, plan) -> str | None:
        b = plan.budget
        if not b:
            return None
        lora = (f" (LoRA at rank {b['rank_average']:g}: {b['lora_parameters']:,})"
                if b.get("lora_parameters") is not None else "")
        return (f"adalora: adapters allocated at init_r {b['init_r']} ({len(plan.rows) * b['init_r']} rank "
                f"triplets); pruned during training to {b['target_triplets']} triplets ≈ "
                f"{b['expected_parameters']:,} parameters{lora}")


@register
class AdaLora(AdapterMethod):
    name = "adalora"
    title = "AdaLoRA"
    summary = "PEFT AdaLoRA: starts every matrix at init_r triplets and prunes to a budget while training"
    allocates_ranks = True
    supports_learned = False
    options = (DropoutOption, AdaLoraOptions)
    own_strategy = "adalora"
    default_rank = 8
    default_learning_rate = 5e-4
    saves_peft_files = True
    export_style = "as_trained"
    export_formats = ("peft", "merged")
    cost_formula = "r*(in+out+1) per matrix (AdaLoRA triplets)"
    cost_symbol = "Σ r·(in+out+1)"
    stored_parts = "A, B, E"
    budget_hint = "set AdaLoRA's budget with --rank_average or --adalora_target_r"

    def cost_coefficients(self, target: TargetMatrix) -> tuple[int, int, int]:
        return 0, triplet_cost(target), 0

    def resolve(self, cfg) -> None:
        if cfg.rank_average is None and cfg.adalora_target_r is None:
            cfg.rank_average = float(cfg.rank)
        if cfg.adalora_init_r is None:
            cfg.adalora_init_r = math.ceil(1.5 * (cfg.adalora_target_r or cfg.rank_average))

    def own_strategy_refusal(self, option_name: str) -> tuple[str, str]:
        return (f"does not apply to --method {self.name} ({self.title} allocates the ranks itself)",
                f"Drop --{option_name}; {self.budget_hint}")

    def validate(self, cfg) -> None:
        super().validate(cfg)
        _require(cfg.alpha_policy == "constant", "alpha_policy",
                 f"`{cfg.alpha_policy}` does not apply to AdaLoRA (one scale lora_alpha/init_r for every matrix)",
                 "Drop --alpha_policy")
        _require(cfg.rank_average is None or cfg.adalora_target_r is None, "adalora_target_r",
                 "and --rank_average both set AdaLoRA's budget", "Give one of them")
        _require(cfg.rank_average is None or cfg.rank_average > 0, "rank_average",
                 f"must be positive, got {cfg.rank_average}")
        for name in ("adalora_init_r", "adalora_target_r", "adalora_deltaT"):
            value = getattr(cfg, name)
            _require(value is None or value >= 1, name, f"must be a positive integer, got {value}")
        target = cfg.adalora_target_r if cfg.adalora_target_r is not None else cfg.rank_average
        _require(cfg.adalora_init_r > target, "adalora_init_r",
                 f"({cfg.adalora_init_r}) must exceed the final average rank ({target:g}): AdaLoRA prunes from init_r "
                 "down to it", f"Use --adalora_init_r {math.ceil(1.5 * target)} or more")
        _require(0 <= cfg.adalora_tinit < 1, "adalora_tinit", f"must be a fraction of the steps in [0, 1), got "
                 f"{cfg.adalora_tinit:g}")
        _require(0 < cfg.adalora_tfinal < 1, "adalora_tfinal", f"must be a fraction of the steps in (0, 1), got "
                 f"{cfg.adalora_tfinal:g}")
        _require(cfg.adalora_tinit + cfg.adalora_tfinal < 1, "adalora_tfinal",
                 f"adalora_tinit ({cfg.adalora_tinit:g}) + adalora_tfinal ({cfg.adalora_tfinal:g}) leave no steps to "
                 "prune in", "Make their sum less than 1, e.g. 0.1 and 0.3")
        for name in ("adalora_beta1", "adalora_beta2"):
            value = getattr(cfg, name)
            _require(0 < value < 1, name, f"must be in (0, 1), got {value:g}")
        _require(cfg.adalora_orth_reg_weight >= 0, "adalora_orth_reg_weight",
                 f"must be >= 0, got {cfg.adalora_orth_reg_weight:g}")

    def build(self, model, targets, ranks, alphas, *, rslora=False, dropout=0.0, head_modules=(), task_type=None,
              seed=0, init="default", cfg=None, total_steps=0) -> AdapterSet:
        """Wrap `model` in a PEFT AdaLoRA model over exactly `targets` (full module paths)."""
        import torch
        from peft import AdaLoraConfig, get_peft_model

        for p in model.parameters():
            p.requires_grad_(False)
        budget = adalora_budget(cfg, targets)
        tinit, tfinal = adalora_steps(cfg, total_steps)
        names = [t.name for t in targets]
        modules_to_save, task_type = peft_heads(names, list(head_modules), task_type)
        config = AdaLoraConfig(
            init_r=budget.init_r, target_r=budget.target_r, tinit=tinit, tfinal=tfinal, deltaT=cfg.adalora_deltaT,
            beta1=cfg.adalora_beta1, beta2=cfg.adalora_beta2, orth_reg_weight=cfg.adalora_orth_reg_weight,
            total_step=total_steps, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(names), modules_to_save=modules_to_save, task_type=task_type,
            fan_in_fan_out=fan_in_fan_out(model, names))
        torch.manual_seed(seed)  # PEFT initialises A and B with the global generator
        with peft_quietly():
            peft_model = get_peft_model(model, config)
        # PEFT's final budget is target_r · n triplets; B need not be a multiple of n, so set it exactly.
        peft_model.base_model.rankallocator.target_bgt = budget.target_triplets
        layers = [peft_model.base_model.model.get_submodule(n) for n in names]
        return AdapterSet(self, peft_model, targets, [budget.init_r] * len(targets),
                          [float(cfg.lora_alpha)] * len(targets), layers)

    def summary_fields(self, plan, hard_ranks: list[int]) -> dict:
        return {"adalora": {**plan.budget, "initial_triplets": sum(plan.allocated_ranks),
                            "final_triplets": sum(hard_ranks)}}

    def scales(self, adapter: AdapterSet) -> list[float]:
        """PEFT's SVDLinear: α / (ranknum + 1e-5), ranknum = init_r."""
        return [float(m.scaling[ADAPTER_NAME]) / (float(m.ranknum[ADAPTER_NAME]) + 1e-5) for m in adapter.modules]

    def adapter_parameters(self, adapter: AdapterSet) -> list:
        return [p for n, p in adapter.model.named_parameters() if "lora_" in n and p.requires_grad]  # A, E, B

    def current_ranks(self, adapter: AdapterSet) -> list[int]:
        return adalora_ranks(adapter)

    def training_hooks(self, adapter: AdapterSet, cfg) -> TrainingHooks:
        return AdaLoraHooks(adapter)

    def save(self, adapter, directory: Path, *, base_model, head_modules, hard_ranks, tokenizer=None) -> None:
        """PEFT's own AdaLoRA files, pruned to the current masks (PEFT saves `rank_pattern` and only the kept
        triplets), plus rankwise.json (metadata, including the base-model fingerprint that loading checks)."""

        config = adapter.model.peft_config[ADAPTER_NAME]
        if config.rank_pattern is None:  # never pruned (too few steps): record that every triplet is kept
            config.rank_pattern = {f"{t.name}.lora_E": [True] * r for t, r in zip(adapter.targets, adapter.ranks)}
        # named_portably: PEFT's files name the base by its hub id, not by this machine's path to it (and, the
        # embeddings never being adapted, PEFT need not look that id up)
        with warnings.catch_warnings(), named_portably(adapter.model, base_model):
            # a matrix pruned to rank 0 is stored as 0-sized tensors, which PEFT's check for un-gathered
            # DeepSpeed/FSDP shards takes for a broken save
            warnings.filterwarnings("ignore", message=".*tensor\\(s\\) have invalid shape")
            adapter.model.save_pretrained(str(directory), save_embedding_layers=False)
        meta = {**adapter_metadata(adapter, base_model, head_modules, hard_ranks), "format": FORMAT}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))

    def load(self, model, directory: Path, meta: dict, targets) -> AdapterSet:
        """A saved (pruned) AdaLoRA adapter on a fresh base model, ready for inference."""
        from peft import PeftModel

        try:
            with peft_quietly(), warnings.catch_warnings():  # AdaLoRA's rank_pattern holds masks: LoRA's check flags it
                warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match")
                peft_model = PeftModel.from_pretrained(model, str(directory))
        except (RuntimeError, ValueError) as exc:
            raise RunDirError(f"adapter {directory} does not load onto this model: "
                              f"{str(exc).strip().splitlines()[0][:300]}") from None
        # PEFT's AdaLoraModel.forward reads trainable_adapter_name whenever labels are passed, but inference-mode
        # loading never sets it; evaluation losses must not include the training regulariser anyway.
        peft_model.base_model.trainable_adapter_name = ADAPTER_NAME
        peft_model.peft_config[ADAPTER_NAME].orth_reg_weight = 0.0
        layers = [peft_model.base_model.model.get_submodule(t.name) for t in targets]
        ranks = [int(layer.r[ADAPTER_NAME]) for layer in layers]
        return AdapterSet(self, peft_model, targets, ranks, list(meta["alphas"]), layers)

    def merge(self, adapter: AdapterSet):
        return adapter.model.merge_and_unload()

def _rank_pattern_ranks(config, names: list[str]) -> list[int] | None:
    """Ranks from PEFT's rank_pattern (keys end in `.lora_E.default`, or `.lora_E` once saved), else None."""
    pattern = config.rank_pattern
    if not pattern:
        return None
    ranks = []
    for name in names:
        mask = pattern.get(f"{name}.lora_E.{ADAPTER_NAME}", pattern.get(f"{name}.lora_E"))
        if mask is None:
            return None
        ranks.append(int(sum(bool(x) for x in mask)))
    return ranks


def adalora_ranks(adapter: AdapterSet) -> list[int]:
    """Each matrix's current rank: the number of triplets its mask keeps (the allocated size before any masking,
    or for a reloaded pruned adapter)."""
    config = adapter.model.peft_config[ADAPTER_NAME]
    names = [t.name for t in adapter.targets]
    ranks = _rank_pattern_ranks(config, names)
    if ranks is None or any(layer.r[ADAPTER_NAME] < config.init_r for layer in adapter.modules):
        return [int(layer.r[ADAPTER_NAME]) for layer in adapter.modules]  # built at these ranks (a reloaded adapter)
    return ranks


class AdaLoraHooks(TrainingHooks):
    """What the training loop does for AdaLoRA: PEFT's rank allocation after each optimiser step, the allocation
    record for allocation.jsonl, and evaluation without the orthogonality regulariser."""

    def __init__(self, adapter: AdapterSet):
        self.adapter = adapter
        self.tuner = adapter.model.base_model  # the AdaLoraModel
        self.config = adapter.model.peft_config[ADAPTER_NAME]
        self.costs = [triplet_cost(t) for t in adapter.targets]

    def after_optimizer_step(self, step: int, skipped) -> None:
        """PEFT's `update_and_allocate(step)` (it scores triplets from the gradients: call before `zero_grad()`),
        in its parts, so that it costs no host synchronisation between its allocation steps: a step the guard
        skipped leaves the importance averages as they were (decided on the device), and in the final phase the
        kept triplets are masked with masks made once on the device (PEFT rebuilds them from lists every step)."""
        import torch

        config, allocator = self.config, self.tuner.rankallocator
        final = config.total_step - config.tfinal
        if step < final:
            averages = (dict(allocator.exp_avg_ipt), dict(allocator.exp_avg_unc))
            allocator.update_ipt(self.tuner.model)
            for before, after in zip(averages, (allocator.exp_avg_ipt, allocator.exp_avg_unc)):
                for name, value in after.items():
                    old = before.get(name, torch.zeros_like(value))  # PEFT starts the averages at zero
                    after[name] = torch.where(skipped, old, value)
            budget, mask_now = allocator.budget_schedule(step)
            if mask_now:
                config.rank_pattern = allocator.mask_to_budget(self.tuner.model, budget)
        elif step == final:
            self.tuner.update_and_allocate(step)  # fixes the final masks (rank_pattern) and resets the averages
            self._final_masks = None
        else:
            with torch.no_grad():
                for parameter, dropped in self.final_masks():
                    parameter.masked_fill_(dropped, 0.0)

    def final_masks(self) -> list:
        """(lora_E parameter, bool mask of its dropped triplets) per matrix, from PEFT's final rank_pattern: made
        once on the parameters' device."""
        import torch

        if getattr(self, "_final_masks", None) is None:
            pattern = self.config.rank_pattern
            masks = []
            for name, parameter in self.tuner.model.named_parameters():
                if f"lora_E.{ADAPTER_NAME}" in name:
                    keep = pattern.get(name, pattern.get(name.replace(f".{ADAPTER_NAME}", "")))
                    dropped = ~torch.tensor(keep, dtype=torch.bool, device=parameter.device).unsqueeze(-1)
                    masks.append((parameter, dropped))
            self._final_masks = masks
        return self._final_masks

    def ranks(self) -> list[int]:
        return adalora_ranks(self.adapter)

    final_ranks = ranks

    def parameters_at(self, ranks: list[int]) -> int:
        return sum(r * c for r, c in zip(ranks, self.costs))

    def allocation_record(self, step: int) -> dict:
        """allocation.jsonl's record (the learned-allocation schema): `budget` is AdaLoRA's triplet budget at
        `step`, `budget_used` the triplets kept, `continuous` = `hard` = current ranks; `discrete` marks the final
        phase (ranks fixed)."""
        budget, _ = self.tuner.rankallocator.budget_schedule(step)
        ranks = self.ranks()
        names = [t.name for t in self.adapter.targets]
        return {"step": step, "budget": int(budget), "budget_unit": "rank triplets",
                "discrete": step >= self.config.total_step - self.config.tfinal, "budget_used": sum(ranks),
                "adapter_parameters": self.parameters_at(ranks),
                "continuous": dict(zip(names, ranks)), "hard": dict(zip(names, ranks))}

    @contextlib.contextmanager
    def evaluating(self):
        """PEFT adds the regulariser to `outputs.loss` whenever labels are passed, also in evaluation."""
        weight = self.config.orth_reg_weight
        self.config.orth_reg_weight = 0.0
        try:
            yield
        finally:
            self.config.orth_reg_weight = weight

    # --- checkpoints: PEFT's RankAllocator state, by its own names --------------------------------
    IMPORTANCE = ("ipt", "exp_avg_ipt", "exp_avg_unc")  # RankAllocator's per-parameter scores and averages

    def checkpoint_state(self) -> tuple[dict, dict]:
        """PEFT's allocator state, which its masks and later allocations depend on: the config's `rank_pattern`
        (the triplets kept; the final phase re-applies it every step), the importance scores and their averages
        (`ipt`, `exp_avg_ipt`, `exp_avg_unc`, keyed `<name>/<parameter>`) and the budget the cubic schedule runs
        between (`init_bgt`, `target_bgt`; its position is the step, which the Trainer restores)."""
        allocator = self.tuner.rankallocator
        tensors = {f"{kind}/{name}": value for kind in self.IMPORTANCE
                   for name, value in getattr(allocator, kind).items()}
        return tensors, {"rank_pattern": self.config.rank_pattern, "init_bgt": int(allocator.init_bgt),
                         "target_bgt": int(allocator.target_bgt)}

    def load_checkpoint_state(self, tensors: dict, values: dict) -> None:
        allocator = self.tuner.rankallocator
        parameters = dict(self.tuner.model.named_parameters())
        for kind in self.IMPORTANCE:
            prefix = f"{kind}/"
            setattr(allocator, kind, {key[len(prefix):]: value.to(parameters[key[len(prefix):]].device)
                                      for key, value in tensors.items() if key.startswith(prefix)})
        self.config.rank_pattern = values.get("rank_pattern")
        allocator.init_bgt, allocator.target_bgt = values["init_bgt"], values["target_bgt"]
        self._final_masks = None  # made again from the restored rank_pattern
