"""The rank plan: every target matrix with its layer, kind, shape, rank and trainable parameters.

Training builds its adapters from this same plan, so `rankwise plan` shows exactly what `train`
applies. For learned allocation the adapters are allocated at rank_max and the plan's `rank` is
the hard rank the initial weights give at the starting budget.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .adapters import alphas_for
from .allocation import RankAllocator, static_ranks
from .allocation.learned import budget_bounds
from .config import default_max_seq_length
from .data import GLUE_TASKS
from .errors import ConfigError
from .methods import get_method
from .models import check_max_seq_length, head_modules, hub_kwargs, load_error, quiet_transformers, resolve_model
from .targets import TargetMatrix, find_targets


@dataclass
class PlanRow:
    name: str
    layer: int
    kind: str
    in_features: int
    out_features: int
    rank: int
    alpha: float
    parameters: int  # trainable adapter parameters of this matrix as allocated


@dataclass
class Plan:
    method: str
    allocation: str
    rows: list[PlanRow]
    allocated_ranks: list[int]  # adapter size per matrix (rank_max for learned)
    model_parameters: int  # base model, without adapters
    head_parameters: int
    budget: dict | None = None  # learned: start/end budget and its bounds; adalora: its triplet budget
    init: str = "default"  # `eva`: ranks are redistributed by EVA before training (`eva_done` once they are)
    eva_done: bool = False

    @property
    def adapter_parameters(self) -> int:
        return sum(r.parameters for r in self.rows)

    @property
    def targets(self) -> list[TargetMatrix]:
        return [TargetMatrix(r.name, r.layer, r.kind, r.in_features, r.out_features) for r in self.rows]

    def totals(self) -> dict:
        adapter = self.adapter_parameters
        trainable = adapter + self.head_parameters
        return {"matrices": len(self.rows), "adapter_parameters": adapter, "head_parameters": self.head_parameters,
                "trainable_parameters": trainable, "model_parameters": self.model_parameters,
                "adapter_percent": 100.0 * adapter / self.model_parameters,
                "trainable_percent": 100.0 * trainable / self.model_parameters}

    def to_dict(self) -> dict:
        return {"method": self.method, "allocation": self.allocation, "init": self.init, "totals": self.totals(),
                "budget": self.budget, "matrices": [asdict(r) for r in self.rows]}

    def with_ranks(self, ranks: list[int], alphas: list[float]) -> "Plan":
        """The plan at ranks set after building (EVA): rows, allocated ranks and parameters follow `ranks`."""
        method = get_method(self.method)
        rows = [PlanRow(r.name, r.layer, r.kind, r.in_features, r.out_features, rank, alpha,
                        method.matrix_parameters(t, rank))
                for r, t, rank, alpha in zip(self.rows, self.targets, ranks, alphas)]
        return Plan(self.method, self.allocation, rows, list(ranks), self.model_parameters, self.head_parameters,
                    self.budget, self.init, eva_done=True)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(PlanRow.__dataclass_fields__))
        writer.writeheader()
        for row in self.rows:
            writer.writerow(asdict(row))
        return buffer.getvalue()

    def to_table(self) -> str:
        header = f"{'matrix':<48} {'layer':>5} {'kind':<9} {'shape (out×in)':>15} {'rank':>5} {'params':>10}"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            shape = f"{r.out_features}×{r.in_features}"
            lines.append(f"{r.name:<48} {r.layer:>5} {r.kind:<9} {shape:>15} {r.rank:>5} {r.parameters:>10,}")
        t = self.totals()
        lines.append("-" * len(header))
        lines.append(f"{t['matrices']} matrices ({self.method}, {self.allocation}): "
                     f"adapter {t['adapter_parameters']:,} parameters ({t['adapter_percent']:.4f}% of "
                     f"{t['model_parameters']:,}); head {t['head_parameters']:,}; trainable "
                     f"{t['trainable_parameters']:,} ({t['trainable_percent']:.4f}%)")
        method_line = get_method(self.method).budget_line(self)
        if method_line:
            lines.append(method_line)
        elif self.init == "eva":
            lines.append(f"eva: ranks redistributed from activation SVDs on training batches (sum of ranks "
                         f"{sum(self.allocated_ranks)}, at most eva_rho × the planned rank per matrix)"
                         if self.eva_done else "eva: `rank` is the planned rank; training redistributes ranks over "
                         "the matrices from activation SVDs on training batches (same sum of ranks) before it starts")
        elif self.budget:
            b = self.budget
            lines.append(f"learned: adapters allocated at rank_max {max(self.allocated_ranks)}; budget "
                         f"{b['start']:,.0f} → {b['end']:,.0f} parameters (feasible range "
                         f"[{b['min']:,.0f}, {b['max']:,.0f}]); `rank` = initial hard ranks")
        return "\n".join(lines)


def build_plan(cfg, model: nn.Module, head_modules: list[str], steps_per_epoch: int = 1) -> tuple[Plan, RankAllocator | None]:
    """The plan for a resolved config on `model` (real or on the meta device), and the rank allocator
    for learned allocation. Raises ConfigError for strategy problems (custom file, budget, ranks larger than
    their matrices) and for a --max_seq_length the model's positions cannot hold."""
    check_max_seq_length(cfg.max_seq_length, model, default_max_seq_length(cfg.task), cfg.model)
    model_parameters = sum(p.numel() for p in model.parameters())
    head_parameters = sum(p.numel() for h in head_modules for p in model.get_submodule(h).parameters())
    targets = find_targets(model, cfg.target_modules)
    method = get_method(cfg.method)
    allocator, budget = None, None
    if not method.trains_adapter:  # every weight trains: each matrix at its full rank
        ranks = [min(t.in_features, t.out_features) for t in targets]
        shown = ranks
    elif cfg.allocation == "learned":
        rank_limit = min(min(t.in_features, t.out_features) for t in targets)
        if cfg.rank_max > rank_limit:
            raise ConfigError("rank_max", f"({cfg.rank_max}) exceeds the smallest target matrix dimension "
                              f"({rank_limit})", f"Use --rank_max {rank_limit} or less")
        cost = method.rank_cost(targets)
        allocator = RankAllocator.from_config(cfg, targets, steps_per_epoch, cost)
        ranks = [cfg.rank_max] * len(targets)
        shown = allocator.hard_ranks(allocator.schedule.memory(0))
        start, end = budget_bounds(cfg, cost)
        budget = {"start": start, "end": end, "min": cost.total(cfg.rank_min), "max": cost.total(cfg.rank_max)}
    elif method.allocates_ranks:
        ranks, budget = method.initial_ranks(cfg, targets)
        shown = ranks
    else:
        ranks = static_ranks(cfg, targets, method.rank_cost(targets))  # checks every rank fits its matrix
        shown = ranks
    reference = cfg.rank if cfg.allocation != "learned" else cfg.rank_max
    alphas = alphas_for(ranks, cfg.lora_alpha, cfg.alpha_policy, reference)
    rows = [PlanRow(t.name, t.layer, t.kind, t.in_features, t.out_features, shown_rank, alpha,
                    method.matrix_parameters(t, rank))
            for t, rank, shown_rank, alpha in zip(targets, ranks, shown, alphas)]
    return Plan(cfg.method, cfg.allocation if method.trains_adapter else "none", rows, ranks, model_parameters,
                head_parameters, budget, init=cfg.init), allocator


def meta_model(cfg):
    """The task's model built on the meta device (no weights loaded): enough for a plan, in a second."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model(cfg.model)
    try:
        with quiet_transformers():
            if cfg.task in GLUE_TASKS:
                task = GLUE_TASKS[cfg.task]
                config = AutoConfig.from_pretrained(path, num_labels=task.num_labels, **hub_kwargs(path))
                with torch.device("meta"):
                    model = AutoModelForSequenceClassification.from_config(config)
            else:
                config = AutoConfig.from_pretrained(path, **hub_kwargs(path))
                with torch.device("meta"):
                    model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:
        raise load_error(cfg.model, exc) from None
    return model, head_modules(model)


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2)
