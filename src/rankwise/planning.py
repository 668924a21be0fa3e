"""The rank plan: every target matrix with its layer, kind, shape, rank and trainable parameters.

Training builds its adapters from this same plan, so `rankwise plan` shows exactly what `train`
applies. For learned allocation the adapters are allocated at rank_max and the plan's `rank` is
the hard rank the initial weights give at the starting budget.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .adapters import alphas_for
from .allocation import PlanContext, strategy_for
from .data import GLUE_TASKS, TEXT_TASK
from .data.files import load_text_data
from .data.options import default_max_seq_length
from .data.prepare import prepare_task
from .errors import ConfigError
from .methods import METHODS, get_method
from .models import check_max_seq_length, head_modules, hub_kwargs, load_error, quiet_transformers, resolve_model
from .targets import TargetMatrix, adapted_heads, fan_in_fan_out, find_targets


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
    gradient: dict | None = None  # a measuring strategy's budget, energies and solver (GradientAllocation.record)
    eva_done: bool = False
    # What a PEFT LoraConfig of this plan needs (`lora_config`): the settings the alphas came from, the head
    # modules trained with the adapter, whether the targets store W as in×out (GPT-2 Conv1D), PEFT's task type.
    lora_alpha: float = 16.0
    alpha_policy: str = "constant"
    lora_dropout: float = 0.0
    head_modules: list[str] = field(default_factory=list)
    fan_in_fan_out: bool = False
    task_type: str | None = None

    def __str__(self) -> str:
        return self.to_table()

    def strategy(self):
        """The allocation strategy that made the ranks (the method's own for AdaLoRA and full fine-tuning)."""
        return strategy_for(get_method(self.method), self.allocation)

    @property
    def adapter_parameters(self) -> int:
        return sum(r.parameters for r in self.rows)

    @property
    def trainable_parameters(self) -> int:
        """Adapter plus head parameters: what `peft.get_peft_model(model, plan.lora_config())` trains."""
        return self.adapter_parameters + self.head_parameters

    @property
    def ranks(self) -> dict[str, int]:
        """Matrix name → rank (learned allocation: the initial hard rank; its adapters are built at rank_max)."""
        return {r.name: r.rank for r in self.rows}

    def to_frame(self):
        """One row per matrix (the columns of `PlanRow`) as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows], columns=list(PlanRow.__dataclass_fields__))

    def to_json(self) -> str:
        """What `rankwise plan --out plan.json` writes: method, allocation, totals, budget and every matrix."""
        return json.dumps(self.to_dict(), indent=2)

    def lora_config(self, lora_alpha: float | None = None, **kwargs):
        """A `peft.LoraConfig` that gives every matrix its planned rank (`rank_pattern`) and alpha (`alpha_pattern`),
        with the head modules in `modules_to_save`: `peft.get_peft_model(model, config)` then trains exactly
        `trainable_parameters`. `lora_alpha` rescales every alpha (the plan's alpha policy stays); other keyword
        arguments are LoraConfig fields (e.g. `lora_dropout`, `task_type`). Plans of LoRA and DoRA with a static
        allocation only: learned allocation needs rankwise's rank masks (`rankwise.wrap`)."""
        method = get_method(self.method)
        build = getattr(method, "peft_lora_config", None)
        if build is None:
            users = [m for m in METHODS if hasattr(get_method(m), "peft_lora_config")]
            raise ConfigError("method", f"`lora_config` builds PEFT LoRA adapters, but this plan is for "
                              f"`{self.method}` ({method.title})", f"Plan with method={' or '.join(map(repr, users))}, "
                              f"or use rankwise.wrap(model, method={self.method!r}, ...)")
        if self.strategy().learned:
            raise ConfigError("allocation", f"`{self.allocation}` ranks change while training through rankwise's rank "
                              "masks, which a PEFT LoraConfig cannot express", "Use rankwise.wrap(model, method="
                              f"{self.method!r}, allocation='learned', ...) with rankwise.RankAllocationCallback, or "
                              "plan a static allocation")
        if self.gradient is not None and not self.gradient["measured"]:
            raise ConfigError("batches", f"`{self.allocation}` sets the ranks from the loss gradients of training "
                              "batches, which this plan was not given", "Plan with batches=[...] (a few training "
                              "batches with labels), then call lora_config()")
        if self.init == "eva" and not self.eva_done:
            raise ConfigError("init", "`eva` sets the ranks from training batches, which a plan does not see",
                              "Plan with init='default', then run peft.initialize_lora_eva_weights yourself")
        if lora_alpha is not None and not (isinstance(lora_alpha, (int, float)) and lora_alpha > 0):
            raise ConfigError("lora_alpha", f"must be a positive number, got {lora_alpha!r}")
        scale = 1.0 if lora_alpha is None else lora_alpha / self.lora_alpha
        config = build([r.name for r in self.rows], self.allocated_ranks, [r.alpha * scale for r in self.rows],
                       rslora=self.alpha_policy == "rslora", dropout=self.lora_dropout,
                       head_modules=self.head_modules, task_type=self.task_type,
                       fan_in_fan_out=self.fan_in_fan_out)
        try:
            return dataclasses.replace(config, **kwargs) if kwargs else config
        except (TypeError, ValueError) as exc:  # an unknown field, or a value LoraConfig refuses
            raise ConfigError("lora_config", f"{str(exc).strip().splitlines()[0]}",
                              "Pass LoraConfig fields only (see peft.LoraConfig)") from None

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
        out = {"method": self.method, "allocation": self.allocation, "init": self.init, "totals": self.totals(),
               "budget": self.budget, "matrices": [asdict(r) for r in self.rows]}
        if self.gradient is not None:
            out["gradient"] = self.gradient
        return out

    def with_ranks(self, ranks: list[int], alphas: list[float]) -> "Plan":
        """The plan at ranks set after building (EVA): rows, allocated ranks and parameters follow `ranks`."""
        method = get_method(self.method)
        rows = [PlanRow(r.name, r.layer, r.kind, r.in_features, r.out_features, rank, alpha,
                        method.matrix_parameters(t, rank))
                for r, t, rank, alpha in zip(self.rows, self.targets, ranks, alphas)]
        return dataclasses.replace(self, rows=rows, allocated_ranks=list(ranks), eva_done=True)

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
        strategy_line = self.strategy().budget_line(self)
        if strategy_line:
            lines.append(strategy_line)
        elif self.init == "eva":
            lines.append(f"eva: ranks redistributed from activation SVDs on training batches (sum of ranks "
                         f"{sum(self.allocated_ranks)}, at most eva_rho × the planned rank per matrix)"
                         if self.eva_done else "eva: `rank` is the planned rank; training redistributes ranks over "
                         "the matrices from activation SVDs on training batches (same sum of ranks) before it starts")
        return "\n".join(lines)


def build_plan(cfg, model: nn.Module, head_modules: list[str], steps_per_epoch: int = 1, batches=None,
               loss_fn=None, distributed: bool = False) -> tuple[Plan, object]:
    """The plan for a resolved config on `model` (real or on the meta device), and the rank allocator for learned
    allocation (else None). `batches` (with `loss_fn(model, batch)`, default `model(**batch).loss`): the training
    batches a measuring strategy (`gradient`, `fim`) reads (the model must have its weights; `distributed`: every
    process of a run measures them and process 0's values count). Raises ConfigError for strategy problems (custom
    file, budget, ranks larger than their matrices) and for a --max_seq_length the model's positions cannot hold."""
    check_max_seq_length(cfg.max_seq_length, model, default_max_seq_length(cfg.task), cfg.model)
    targets = find_targets(model, cfg.target_modules)
    method = get_method(cfg.method)
    strategy = strategy_for(method, cfg.allocation)
    head = trained_head(cfg, model, head_modules, targets)
    context = PlanContext(targets, method, model, list(head_modules), steps_per_epoch, batches, loss_fn, distributed,
                          head)
    result = strategy.plan(cfg, context)
    alphas = alphas_for(result.ranks, cfg.lora_alpha, cfg.alpha_policy, strategy.reference_rank(cfg))
    alphas = strategy.adjust_alphas(alphas, cfg, result)
    rows = [PlanRow(t.name, t.layer, t.kind, t.in_features, t.out_features, shown, alpha,
                    method.matrix_parameters(t, rank))
            for t, rank, shown, alpha in zip(targets, result.ranks, result.shown, alphas)]
    plan = Plan(cfg.method, cfg.allocation if method.trains_adapter else "none", rows, result.ranks,
                sum(p.numel() for p in model.parameters()), sum(p.numel() for p in head), result.budget,
                init=cfg.init, gradient=result.measurement, lora_alpha=cfg.lora_alpha,
                alpha_policy=cfg.alpha_policy, lora_dropout=cfg.lora_dropout, head_modules=list(head_modules),
                fan_in_fan_out=fan_in_fan_out(model, [t.name for t in targets]), task_type=peft_task_type(model))
    return plan, result.allocator


def measuring_batches(cfg, task, device, processes: int = 1) -> list[dict]:
    """The --allocation_batches training batches `gradient` allocation measures on, on `device` (the task's model
    is moved there; training moves it there anyway). Each holds one global batch (per-device batch × processes)
    and every process measures the same ones, so N processes choose the ranks one process would."""
    task.model.to(device)
    loader = task.shuffled_batches(cfg.per_device_train_batch_size * processes, cfg.seed)
    return [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for batch in itertools.islice(loader, cfg.allocation_batches)]


def measured_plan(cfg) -> Plan:
    """The plan of a `gradient` allocation measured as training would measure it: the task's model (with its
    weights) and its first --allocation_batches shuffled training batches, on a GPU when there is one."""

    task = prepare_task(cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plan, _ = build_plan(cfg, task.model, task.head_modules, batches=measuring_batches(cfg, task, device))
    return plan


def peft_task_type(model: nn.Module) -> str | None:
    """PEFT's task type for a transformers model, from its class (`BertForSequenceClassification` → SEQ_CLS)."""
    name = type(model).__name__
    for suffix, task_type in (("ForSequenceClassification", "SEQ_CLS"), ("ForCausalLM", "CAUSAL_LM"),
                              ("ForTokenClassification", "TOKEN_CLS"), ("ForQuestionAnswering", "QUESTION_ANS")):
        if name.endswith(suffix):
            return task_type
    return None


def trained_head(cfg, model: nn.Module, head_modules: list[str], targets: list[TargetMatrix]) -> list[nn.Parameter]:
    """The parameters the task head trains: none with --freeze_head, nor in a head module whose layers hold
    adapters (`every-linear`: PEFT adapts a layer or trains it, not both)."""
    if getattr(cfg, "freeze_head", False):
        return []
    adapted = adapted_heads(head_modules, [t.name for t in targets]) if get_method(cfg.method).trains_adapter else []
    return [p for h in head_modules if h not in adapted for p in model.get_submodule(h).parameters()]


def check_head_saving(cfg, plan: Plan) -> None:
    """ConfigError before training when adapters on the head's layers (`every-linear`) would be saved: the head's
    own weights are newly initialised and frozen, and a PEFT adapter does not hold them, so it would reload onto
    another random head."""
    adapted = adapted_heads(plan.head_modules, [r.name for r in plan.rows])
    if cfg.save_model and adapted and get_method(cfg.method).trains_adapter:
        raise ConfigError("save_model", f"cannot save adapters on the head's layers ({', '.join(adapted)}, "
                          f"from --target_modules {cfg.target_modules}): the saved adapter would not hold the new "
                          "head's frozen weights", "Train with --save_model false (metrics only, as LR sweeps do), "
                          "or use --target_modules all-linear")


def meta_model(cfg):
    """The task's model built on the meta device (no weights loaded): enough for a plan, in a second."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model(cfg.model)
    num_labels = GLUE_TASKS[cfg.task].num_labels if cfg.task in GLUE_TASKS else \
        load_text_data(cfg).num_labels if cfg.task == TEXT_TASK else None  # your own data: its labels decide
    try:
        with quiet_transformers():
            if num_labels is not None:
                config = AutoConfig.from_pretrained(path, num_labels=num_labels, **hub_kwargs(path))
                with torch.device("meta"):
                    model = AutoModelForSequenceClassification.from_config(config)
            else:
                config = AutoConfig.from_pretrained(path, **hub_kwargs(path))
                with torch.device("meta"):
                    model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:
        raise load_error(cfg.model, exc) from None
    return model, head_modules(model)
