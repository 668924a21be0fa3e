"""What every adapter method is to the rest of rankwise: `AdapterMethod` (one subclass per method, one module each)
and `AdapterSet` (a model with that method's adapters attached).

A method answers, for the plan, training, export, naming and reports:

- cost: trainable parameters of a target matrix at rank r (`matrix_parameters`), as the coefficients that budget
  arithmetic uses (`cost_coefficients`: c(r) = quad·r² + lin·r + const for r ≥ 1);
- config: its own defaults (`resolve`), checks (`validate`) and which options it reads (`reads`);
- build: adapters on a model from a plan (`build`), an optional data-driven initialisation (`initialise`);
- training: its trainable adapter parameters, per-matrix update scales, the keep-mask hook of learned
  allocation (`set_keep`; methods without one say so with `supports_learned = False`), and per-step hooks
  (`training_hooks`: after each optimiser step, the record for allocation.jsonl, evaluation context);
- files: save a run's adapter and load it again (`save`, `load`), attach exported tensors (`attach`);
- export: which formats it supports and how it writes them (`export`).

Method modules import torch, transformers and PEFT inside the functions that need them: the registry is read by
config validation and `rankwise --help`, which stay free of those imports (about 4 s with PEFT).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..adapters.adapter_set import AdapterSet
from ..allocation import strategy_for
from ..allocation.budget import RankCost
from ..allocation.energy import lora_energy
from ..errors import ConfigError
from ..options import option

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..targets import TargetMatrix


@dataclass
class DropoutOption:
    """Dropout on an adapter's input: the methods whose layers have it (LoRA's) read it."""

    scope: ClassVar[str] = "LoRA layers"  # who reads it, in messages about runs that would not
    lora_dropout: float = option(0.0, "Dropout on the adapter input (LoRA only).", "model")


class TrainingHooks:
    """Per-step behaviour a method adds to the training loop (AdaLoRA's rank allocation). The default does nothing."""

    def after_optimizer_step(self, step: int, skipped: "torch.Tensor") -> None:
        """Called after every `optimizer.step()` and before `zero_grad()`; `step` counts optimiser steps from 0.
        `skipped` (a 0-dim bool on the device) says the divergence guard skipped this step: read it on the device
        (e.g. `torch.where`), never on the host, so the step does not wait for the GPU."""

    def allocation_record(self, step: int) -> dict | None:
        """The allocation.jsonl record at `step` (the learned-allocation schema), or None."""
        return None

    def final_ranks(self) -> list[int] | None:
        """The ranks the method ended with, or None when the plan's ranks stand."""
        return None

    def evaluating(self):
        """Context for evaluation (e.g. without a training-only regulariser in the loss)."""
        return contextlib.nullcontext()

    def checkpoint_state(self) -> tuple[dict[str, "torch.Tensor"], dict]:
        """What a checkpoint must add for a resumed run to go on as if never interrupted (AdaLoRA's allocator state):
        tensors, saved with the checkpoint's weights, and JSON values. Default: nothing."""
        return {}, {}

    def load_checkpoint_state(self, tensors: dict[str, "torch.Tensor"], values: dict) -> None:
        """Restore what `checkpoint_state` saved (tensors on the CPU)."""


class AdapterMethod:
    """One adapter method. Subclasses set the class attributes and implement what their method does."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # as reports print it
    short_title: ClassVar[str] = ""  # in table cells (the title when empty)
    summary: ClassVar[str] = ""  # one line for --help and the README
    trains_adapter: ClassVar[bool] = True  # False: full fine-tuning (every weight trains, no ranks)
    allocates_ranks: ClassVar[bool] = False  # True: the method sets its own ranks while training (AdaLoRA)
    supports_learned: ClassVar[bool] = True  # learned allocation's keep masks work on it
    options: ClassVar[tuple[type, ...]] = (DropoutOption,)  # the option dataclasses it reads (its own: in its module)
    own_strategy: ClassVar[str | None] = None  # the allocation strategy it brings (AdaLoRA, full), for every run
    default_rank: ClassVar[int] = 8
    default_learning_rate: ClassVar[float] = 5e-4
    inits: ClassVar[tuple[str, ...]] = ("default",)
    export_formats: ClassVar[tuple[str, ...]] = ("merged",)
    weights_dir: ClassVar[str] = "adapter"  # the run directory's folder of weights
    cost_formula: ClassVar[str] = "r*(in+out) per matrix"
    cost_symbol: ClassVar[str] = "Σ r·(in+out)"  # for printed summaries
    stored_parts: ClassVar[str] = "A, B"  # the adapter values an export stores
    lr_range: ClassVar[tuple[float, float] | None] = None  # the LR-ratio study's default grid (lr-sweep), if any
    budget_hint: ClassVar[str] = ""  # for methods that allocate their own ranks: how to set their budget
    saves_peft_files: ClassVar[bool] = False  # a run's adapter/ is PEFT's format (else rankwise tensors)
    tensor_parts: ClassVar[tuple[str, ...]] = ("lora_A", "lora_B")  # per-matrix tensors of rankwise tensor formats
    ranks_beyond_shape: ClassVar[bool] = False  # a head matrix may take a rank above its smaller dimension

    # --- cost -----------------------------------------------------------------------------------
    def cost_coefficients(self, target: TargetMatrix) -> tuple[int, int, int]:
        """(quad, lin, const) with c(r) = quad·r² + lin·r + const for r ≥ 1 (and 0 at r = 0)."""
        return 0, target.in_features + target.out_features, 0

    def matrix_parameters(self, target: TargetMatrix, rank: int) -> int:
        """Trainable parameters of `target` at `rank`."""
        quad, lin, const = self.cost_coefficients(target)
        return quad * rank * rank + lin * rank + (const if rank > 0 else 0)

    def parameters(self, targets: list[TargetMatrix], ranks: list[int]) -> int:
        return sum(self.matrix_parameters(t, r) for t, r in zip(targets, ranks))

    def rank_cost(self, targets: list[TargetMatrix]) -> RankCost:
        """The cost of every target as budget arithmetic uses it (float64 tensors)."""

        return RankCost.from_coefficients([self.cost_coefficients(t) for t in targets])

    # --- config ---------------------------------------------------------------------------------
    def reads(self, option_name: str) -> bool:
        """Whether this method reads run option `option_name` (one of its option dataclasses holds it)."""
        return any(option_name in part.__dataclass_fields__ for part in self.options)

    def own_strategy_refusal(self, option_name: str) -> tuple[str, str]:
        """(problem, fix) for an allocation option given to a run of a method that brings its own strategy."""
        return f"does not apply to --method {self.name}", f"Drop --{option_name}"

    def resolve(self, cfg) -> None:
        """Fill this method's defaults into a config being resolved (in place)."""

    def validate(self, cfg) -> None:
        """Raise ConfigError for settings this method cannot run with."""
        if cfg.init not in self.inits:
            users = [m.name for m in _registered() if cfg.init in m.inits]
            raise ConfigError("init", f"`{cfg.init}` does not apply to --method {self.name}",
                              f"Use --method {' or --method '.join(users)}" if users else "")
        if strategy_for(self, cfg.allocation).learned and not self.supports_learned:
            raise ConfigError("allocation", f"`{cfg.allocation}` needs rank masks, which --method {self.name} does not "
                              "have", self.no_learned_fix())

    def no_learned_fix(self) -> str:
        learned = [m.name for m in _registered() if m.supports_learned and m.own_strategy is None]
        return f"Use a static --allocation, or --method {' or --method '.join(learned)}"

    # --- plan -----------------------------------------------------------------------------------
    def gradient_energy(self, weight: "torch.Tensor", grad: "torch.Tensor", rank_max: int) -> "torch.Tensor":
        """E(s) for s = 0..rank_max: how much of the loss gradient `grad` (out×in) an adapter of rank s on `weight`
        can follow (`--allocation gradient`). LoRA's: the top-s squared singular values of the gradient."""

        return lora_energy(grad, rank_max)

    # --- build and train --------------------------------------------------------------------------
    def build(self, model: "nn.Module", targets: list[TargetMatrix], ranks: list[int], alphas: list[float], *,
              rslora: bool = False, dropout: float = 0.0, head_modules: list[str] = (), task_type: str | None = None,
              seed: int = 0, init: str = "default", cfg=None, total_steps: int = 0) -> AdapterSet:
        """Adapt `model` in place (PEFT methods return a wrapper). Base weights are frozen except for full
        fine-tuning; head modules stay trainable."""
        raise NotImplementedError

    def initialise(self, cfg, task, plan, adapter: AdapterSet) -> tuple[Any, AdapterSet]:
        """A data-driven initialisation before training (EVA); returns the plan and adapter it leaves."""
        return plan, adapter

    def set_keep(self, adapter: AdapterSet, keep) -> None:
        if keep is not None:
            raise ValueError(f"--method {self.name} has no rank masks")

    def scales(self, adapter: AdapterSet) -> list[float]:
        return []

    def adapter_parameters(self, adapter: AdapterSet) -> list:
        return []

    def current_ranks(self, adapter: AdapterSet) -> list[int]:
        """Each matrix's rank as the adapter holds it now (AdaLoRA: the triplets its masks keep)."""
        return list(adapter.ranks)

    def training_hooks(self, adapter: AdapterSet, cfg) -> TrainingHooks:
        return TrainingHooks()

    def allocation_source(self, cfg) -> str | None:
        """What fixed the ranks before training when it was not the plan (logged once at step 0), e.g. `eva`."""
        return None

    # --- files ----------------------------------------------------------------------------------
    def save(self, adapter: AdapterSet, directory: Path, *, base_model: str, head_modules: list[str],
             hard_ranks: list[int], tokenizer=None) -> None:
        """Write a run's weights into `directory` (an empty temporary folder)."""
        raise NotImplementedError

    def load(self, model: "nn.Module", directory: Path, meta: dict, targets: list[TargetMatrix]) -> AdapterSet:
        """A saved run adapter (or PEFT-format export) of this method on a fresh, already checked base `model`."""
        raise NotImplementedError

    def attach(self, model: "nn.Module", targets: list[TargetMatrix], tensors: dict, meta: dict,
               directory) -> AdapterSet:
        """Adapters from rankwise tensors (`compact_tensors`) on a fresh, already checked base `model`."""
        raise ConfigError("format", f"--method {self.name} has no rankwise tensor format")

    def compact_factors(self, adapter: AdapterSet, index: int, rank: int) -> dict[str, "torch.Tensor"]:
        """Matrix `index`'s factors truncated to `rank`, by tensor suffix (`lora_A`, `lora_B`, ...)."""
        raise ConfigError("format", f"`compact` is not a format of --method {self.name}")

    def peft_task_type(self, adapter: AdapterSet) -> str | None:
        """PEFT's task type of the adapter (`SEQ_CLS`, `CAUSAL_LM`), for PEFT-format exports; None without PEFT."""
        return None

    def save_peft_export(self, adapter: AdapterSet, directory: Path, meta: dict) -> None:
        """A standard PEFT adapter at the hard ranks (`rankwise export --format peft`)."""
        raise ConfigError("format", f"`peft` is not a format of --method {self.name}")

    def summary_fields(self, plan, hard_ranks: list[int]) -> dict:
        """Extra summary.json entries of this method."""
        return {}

    def merge(self, adapter: AdapterSet) -> "nn.Module":
        """The plain transformers model with each matrix's ΔW added to its weight."""
        raise NotImplementedError

    # --- export ---------------------------------------------------------------------------------
    # How `rankwise export` writes this method's runs (ship/export.py, export_run): `truncate` cuts the adapter to its
    # hard ranks (compact tensors, rebuilt for peft/merged); `as_trained` keeps the PEFT adapter as the run saved
    # it (already at its final ranks); `model` re-saves a fully fine-tuned model.
    export_style: ClassVar[str] = "truncate"


_REGISTRY: dict[str, AdapterMethod] = {}


def register(method_class: type[AdapterMethod]) -> type[AdapterMethod]:
    """Class decorator: add a method to the registry under its `name`."""
    if not method_class.__dict__.get("short_title"):  # not inherited: DoRA is not "LoRA"
        method_class.short_title = method_class.title
    _REGISTRY[method_class.name] = method_class()
    return method_class


def _registered() -> list[AdapterMethod]:
    return list(_REGISTRY.values())
