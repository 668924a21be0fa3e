"""Baselines from PEFT that users would pick instead of learned allocation: AdaLoRA and EVA.

AdaLoRA (`--method adalora`): ΔW = B·diag(E)·A·(α/init_r), every matrix starting at `init_r` rank triplets
(A row, E entry, B column). PEFT's RankAllocator scores triplets by smoothed |w·∂L/∂w| and masks (zeroes E of)
the least important ones, with a total triplet budget that falls cubically from init_r·n to the target between
`tinit` and `total_step − tfinal`. PEFT needs `update_and_allocate(step)` after every optimiser step (it reads
the gradients, so before `zero_grad`); `AdaLoraTracker` does that for the training loop, reads the current ranks
(the masks' non-zero counts) and keeps the orthogonality regulariser out of evaluation losses.

Budget match: a triplet of matrix i costs in_i + out_i + 1 parameters; LoRA at rank ρ spends
M = Σ_i ρ·(in_i + out_i). `--rank_average ρ` sets the final triplet budget to B = round(M / c̄), with
c̄ = mean_i(in_i + out_i + 1) the mean triplet cost, so the final adapter has M parameters when the triplets are
spread like LoRA's (exactly B·c, within c/2 of M, when all targets have the same shape; otherwise
Σ r_i·c_i depends on where AdaLoRA keeps its triplets, and the summary reports that count).

EVA (`--method lora --init eva`): before training, PEFT's `initialize_lora_eva_weights` runs training batches
through the frozen model, takes an incremental SVD of every target's inputs, sets A to the top right-singular
vectors and redistributes the ranks by explained variance (at most eva_rho × r per matrix; the sum of ranks
stays Σ r_i). A matrix can get rank 0: PEFT then removes its adapter.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ConfigError, RunDirError
from ..targets import TargetMatrix
from . import AdapterSet

ADAPTER_NAME = "default"
ADALORA_FORMAT = "rankwise-adalora"


# ---------------------------------------------------------------------------------------------
# AdaLoRA: budget and schedule
# ---------------------------------------------------------------------------------------------

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


def build_adalora(model: nn.Module, targets: list[TargetMatrix], cfg, total_steps: int, head_modules: list[str],
                  task_type: str | None, seed: int = 0) -> AdapterSet:
    """Wrap `model` in a PEFT AdaLoRA model over exactly `targets` (full module paths)."""
    from peft import AdaLoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    from .lora import peft_quietly

    budget = adalora_budget(cfg, targets)
    tinit, tfinal = adalora_steps(cfg, total_steps)
    names = [t.name for t in targets]
    config = AdaLoraConfig(
        init_r=budget.init_r, target_r=budget.target_r, tinit=tinit, tfinal=tfinal, deltaT=cfg.adalora_deltaT,
        beta1=cfg.adalora_beta1, beta2=cfg.adalora_beta2, orth_reg_weight=cfg.adalora_orth_reg_weight,
        total_step=total_steps, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=list(names), modules_to_save=list(head_modules) or None, task_type=task_type,
        fan_in_fan_out=any(isinstance(model.get_submodule(n), Conv1D) for n in names))
    torch.manual_seed(seed)  # PEFT initialises A and B with the global generator
    with peft_quietly():
        peft_model = get_peft_model(model, config)
    # PEFT's final budget is target_r · n triplets; B need not be a multiple of n, so set it exactly.
    peft_model.base_model.rankallocator.target_bgt = budget.target_triplets
    layers = [peft_model.base_model.model.get_submodule(n) for n in names]
    return AdapterSet("adalora", peft_model, targets, [budget.init_r] * len(targets),
                      [float(cfg.lora_alpha)] * len(targets), layers)


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


class AdaLoraTracker:
    """What the training loop does for AdaLoRA: PEFT's rank allocation after each optimiser step, the allocation
    record for allocation.jsonl, and evaluation without the orthogonality regulariser."""

    def __init__(self, adapter: AdapterSet):
        self.adapter = adapter
        self.tuner = adapter.model.base_model  # the AdaLoraModel
        self.config = adapter.model.peft_config[ADAPTER_NAME]
        self.costs = [triplet_cost(t) for t in adapter.targets]

    def update_and_allocate(self, step: int) -> None:
        """Call after `optimizer.step()` and before `zero_grad()` (PEFT scores triplets from the gradients);
        `step` counts optimiser steps from 0."""
        self.tuner.update_and_allocate(step)

    def ranks(self) -> list[int]:
        return adalora_ranks(self.adapter)

    def parameters_at(self, ranks: list[int]) -> int:
        return sum(r * c for r, c in zip(ranks, self.costs))

    def state(self, step: int) -> dict:
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
    def without_orth_reg(self):
        """PEFT adds the regulariser to `outputs.loss` whenever labels are passed, also in evaluation."""
        weight = self.config.orth_reg_weight
        self.config.orth_reg_weight = 0.0
        try:
            yield
        finally:
            self.config.orth_reg_weight = weight


def save_adalora(adapter: AdapterSet, directory: str | Path, base_model: str, head_modules: list[str],
                 hard_ranks: list[int]) -> None:
    """PEFT's own AdaLoRA files, pruned to the current masks (PEFT saves `rank_pattern` and only the kept
    triplets), plus rankwise.json (metadata, including the base-model fingerprint that loading checks)."""
    from .io import META_FILE, adapter_metadata

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = adapter.model.peft_config[ADAPTER_NAME]
    if config.rank_pattern is None:  # never pruned (too few steps): record that every triplet is kept
        config.rank_pattern = {f"{t.name}.lora_E": [True] * r for t, r in zip(adapter.targets, adapter.ranks)}
    with warnings.catch_warnings():  # a matrix pruned to rank 0 is stored as 0-sized tensors, which PEFT's
        # check for un-gathered DeepSpeed/FSDP shards takes for a broken save
        warnings.filterwarnings("ignore", message=".*tensor\\(s\\) have invalid shape")
        adapter.model.save_pretrained(str(directory))
    meta = {**adapter_metadata(adapter, base_model, head_modules, hard_ranks), "format": ADALORA_FORMAT}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))


def load_adalora(model: nn.Module, directory: str | Path, meta: dict, targets: list[TargetMatrix]) -> AdapterSet:
    """A saved (pruned) AdaLoRA adapter on a fresh base model, ready for inference."""
    from peft import PeftModel

    from .lora import peft_quietly

    try:
        with peft_quietly(), warnings.catch_warnings():  # AdaLoRA's rank_pattern holds masks, which LoRA's check flags
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
    return AdapterSet("adalora", peft_model, targets, ranks, list(meta["alphas"]), layers)


# ---------------------------------------------------------------------------------------------
# EVA
# ---------------------------------------------------------------------------------------------

def eva_loader(features: list[dict], collate, batch_size: int, seed: int) -> DataLoader:
    """Training batches for EVA's SVD, shuffled by their own generator (the training order is unchanged)."""
    return DataLoader(features, batch_size=batch_size, shuffle=True, collate_fn=lambda rows: dict(collate(rows)),
                      generator=torch.Generator().manual_seed(seed))  # EVA wants plain dicts, not BatchEncoding


def apply_eva(adapter: AdapterSet, loader: DataLoader, rho: float, use_label_mask: bool,
              show_progress: bool = False) -> AdapterSet:
    """Run PEFT's EVA initialisation on a `lora` AdapterSet built with `init_lora_weights="eva"`. Returns the
    AdapterSet at the new ranks and alphas; matrices whose rank became 0 (adapter removed by PEFT) are left out of
    it (see `eva_ranks` for all matrices)."""
    from peft import EvaConfig, initialize_lora_eva_weights

    from .lora import KeepHooks, lora_layers

    model = adapter.model
    config = model.peft_config[ADAPTER_NAME]
    config.eva_config = EvaConfig(rho=rho, use_label_mask=use_label_mask)
    adapter.hooks.remove()  # EVA replaces lora_A, so the hooks would hang on dead modules

    def forward(model, inputs):
        # Classification labels are one per sequence, not per token: EVA only needs the activations.
        return model(**{k: v for k, v in inputs.items() if use_label_mask or k != "labels"})

    initialize_lora_eva_weights(model, loader, forward_fn=forward, show_progress_bar=show_progress)
    ranks = eva_ranks(model, adapter.targets)
    kept = [i for i, r in enumerate(ranks) if r > 0]
    targets = [adapter.targets[i] for i in kept]
    layers = lora_layers(model, [t.name for t in targets])
    alphas = [float(layer.lora_alpha[ADAPTER_NAME]) for layer in layers]
    return AdapterSet("lora", model, targets, [ranks[i] for i in kept], alphas, layers, KeepHooks(layers))


def eva_ranks(model: nn.Module, targets: list[TargetMatrix]) -> list[int]:
    """Each target's LoRA rank after EVA (0 where PEFT removed the adapter)."""
    from peft.tuners.lora import LoraLayer

    base = model.base_model.model
    ranks = []
    for t in targets:
        module = base.get_submodule(t.name)
        ranks.append(int(module.r[ADAPTER_NAME]) if isinstance(module, LoraLayer) else 0)
    return ranks


__all__ = ["ADALORA_FORMAT", "AdaLoraBudget", "AdaLoraTracker", "adalora_budget", "adalora_steps", "build_adalora",
           "adalora_ranks", "save_adalora", "load_adalora", "triplet_cost", "eva_loader", "apply_eva", "eva_ranks"]
