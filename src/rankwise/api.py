"""The public Python API: the CLI's building blocks for a script of your own (docs/api.md has runnable examples).

    plan(model, ...)           the rank plan of any model: per-matrix ranks, counts, and its peft.LoraConfig
    wrap(model, ...)           LoRA-XS / LoRA / DoRA adapters at planned or learned ranks, on any model
    RankAllocationCallback     learned allocation inside your own transformers.Trainer
    export(model or run, ...)  compact, peft or merged artifacts that load anywhere (optionally pushed to the Hub)
    load(path)                 an export or run as a transformers / PEFT model, ready to use
    model_path(name)           where an embedded model (`minilm`) is, for from_pretrained

Nothing here is a second implementation: keyword arguments become a RunConfig checked by config.py (so bad input
raises the CLI's ConfigError, with its message), plans come from plan.build_plan, adapters from
methods.build_adapter, the allocator is attached as `rankwise train` attaches it (train.attach_allocator), and
exports are written by ship/export.py (a wrapped model is saved as a run's adapter would be, then exported like one).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from .adapters.loraxs import LoraXSLinear
from .allocation import registered, strategy_for
from .allocation.allocator import RankAllocator
from .allocation.learned import build_allocator
from .config import FIELDS, RunConfig, config_from_dict, resolve_defaults, validate
from .errors import ConfigError, ModelError, RankwiseError, argument_error
from .methods import AdapterSet, build_adapter, get_method, load_adapter as attach, save_adapter
from .models import base_model_reference, head_modules, load_tokenizer, resolve_model
from .planning import Plan, build_plan, meta_model
from .ship.export import export_finished, export_run, fine_tuned_config
from .ship.source import FinishedRun, load_base, load_source
from .train import ALLOCATOR_MODULE, attach_allocator

# The options `plan` and `wrap` take: every adapter and allocation option of `rankwise train`, plus what learned
# allocation's schedules are counted in. Training and data options belong to your own Trainer.
_ADAPTER_GROUPS = ("model", "adalora", "allocation")
OPTIONS = tuple(name for name, f in FIELDS.items() if f.metadata["group"] in _ADAPTER_GROUPS
                and name not in ("model", "method", "allocation")) + ("seed", "num_train_epochs", "max_steps")
ALLOCATION_GROUP = "rankwise_allocation"  # the optimiser's parameter group of the allocation weights


def _config(caller: str, method: str, allocation: str, options: dict[str, Any]) -> RunConfig:
    """The resolved, validated RunConfig of a call, as `rankwise train` would resolve the same flags."""
    for name in options:
        if name in OPTIONS:
            continue
        if name in FIELDS:
            raise ConfigError(name, f"is a training or data option of `rankwise train`; rankwise.{caller}() "
                              "builds adapters only", "Give it to your Trainer (TrainingArguments) or data, or "
                              f"drop it (rankwise.api.OPTIONS lists what rankwise.{caller}() takes)")
        close = difflib.get_close_matches(name, OPTIONS, n=1)
        raise ConfigError(name, f"unknown option of rankwise.{caller}()",
                          f"Did you mean `{close[0]}`?" if close else "rankwise.api.OPTIONS lists the options")
    values = {name: os.fspath(v) if isinstance(v, os.PathLike) else v for name, v in options.items()}  # rank_file
    cfg = config_from_dict({"method": method, "allocation": allocation, **values}, source=f"rankwise.{caller}()")
    resolved = resolve_defaults(cfg)
    resolved.data_dir = None  # no data is read here (and $RANKWISE_DATA_DIR is not this call's to check)
    validate(resolved)
    return resolved


@contextlib.contextmanager
def _arguments(argument: str, *arguments: str):
    """Refusals from below (a model that cannot be loaded, a directory that is not a run) as errors of this call's
    arguments: a ConfigError naming `argument` (or the one of `arguments` its message names first), still a
    ModelError / RunDirError / DataError as before."""
    try:
        yield
    except RankwiseError as exc:
        raise argument_error(exc, argument, (argument, *arguments)) from None


def _require_type(name: str, value, kinds: tuple, what: str) -> None:
    """ConfigError naming the argument unless `value` is one of `kinds` (a bool is no int here)."""
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(name, f"must be {what}, got {type(value).__name__} {_short_repr(value)}")


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _batch_list(batches, loss_fn) -> list:
    """`batches` as a list of dicts of tensors (any iterable of them, e.g. a few of a DataLoader's), checked so a
    wrong type is named here rather than deep inside the model's forward."""
    if loss_fn is not None and not callable(loss_fn):
        raise ConfigError("loss_fn", f"must be a function loss_fn(model, batch) -> loss, got {type(loss_fn).__name__}")
    if isinstance(batches, (str, bytes, Mapping, torch.Tensor)) or not isinstance(batches, Iterable):
        raise ConfigError("batches", f"must be a list of batches (dicts of tensors), got {type(batches).__name__} "
                          f"{_short_repr(batches)}", "e.g. batches=[batch for batch, _ in zip(train_loader, range(4))]")
    batches = list(batches)
    if not batches:
        raise ConfigError("batches", "is empty", "Give a few training batches (dicts of tensors with labels)")
    for i, batch in enumerate(batches):
        if not isinstance(batch, Mapping):
            raise ConfigError("batches", f"batch {i} is {_short_repr(batch)} ({type(batch).__name__}), not a dict of "
                              "tensors", "Give batches as a collator makes them: {'input_ids': tensor, ..., 'labels': "
                              "tensor}")
        bad = next((k for k, v in batch.items() if not isinstance(v, torch.Tensor)), None)
        if bad is not None:
            raise ConfigError("batches", f"batch {i}'s `{bad}` is a {type(batch[bad]).__name__}, not a tensor",
                              "Give batches as a collator makes them (return_tensors='pt')")
        if loss_fn is None and "labels" not in batch:  # the model's own loss needs them
            raise ConfigError("batches", f"batch {i} has no `labels`: `gradient` needs batches with labels (the "
                              "model's own loss)", "Give batches with labels, or a loss_fn(model, batch)")
    return batches


def _check_model(model, caller: str, names_allowed: bool = False) -> None:
    """ConfigError unless `model` is a torch model without adapters (or, for `plan`, a model name)."""
    if names_allowed and isinstance(model, (str, os.PathLike)):
        return
    if not isinstance(model, nn.Module):
        wanted = "a torch model or a model name (hub id, directory, `minilm`)" if names_allowed else "a torch model"
        raise ConfigError("model", f"rankwise.{caller}() takes {wanted}, got {type(model).__name__}",
                          "Load one with transformers, e.g. AutoModelForSequenceClassification.from_pretrained(...)")
    peft = sys.modules.get("peft")
    if getattr(model, "rankwise", None) is not None or peft is not None and isinstance(model, peft.PeftModel) \
            or any(isinstance(m, LoraXSLinear) for m in model.modules()):
        raise ConfigError("model", f"already has adapters: rankwise.{caller}() takes the base model",
                          "Pass a freshly loaded model (e.g. from_pretrained), not one from rankwise.wrap or "
                          "peft.get_peft_model")


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------

def plan(model: nn.Module | str, method: str = "lora", allocation: str = "uniform", *, steps_per_epoch: int = 1,
         batches=None, loss_fn=None, **options) -> Plan:
    """The rank plan of `model`: every target matrix with its layer, kind, shape, rank, alpha and parameters.

    `model`: any torch model (only its module names and shapes are read; it is not changed), or a model name
    (hub id, directory, `minilm`), planned on a weightless copy as a 2-label sequence classifier, as `rankwise plan`
    does. `method`: `lora` (default here, for `plan.lora_config()`), `dora`, `loraxs`, `adalora`, `full`.
    `allocation`: `uniform`, `linear_decay`, `attention_heavy`, `empirical`, `custom` (`rank_file=`) or `learned`.
    `options`: the adapter and allocation options of `rankwise train` by name (`rank`, `rank_first`, `rank_last`,
    `match_budget`, `budget`, `rank_min`, `rank_max`, `rank_average`, `target_modules`, `lora_alpha`, ...; see
    OPTIONS). `steps_per_epoch` (with `num_train_epochs`) sizes learned allocation's schedules.
    `allocation="gradient"`: `batches` (a few training batches: dicts of tensors with labels, on the model's
    device) give the loss gradients the ranks follow, in seconds (`loss_fn(model, batch)`, default
    `model(**batch).loss`); without them the plan shows uniform `rank` and `lora_config()` refuses.

    Returns a Plan: `.ranks`, `.rows`, `.totals()`, `.to_frame()`, `.to_json()`, `.lora_config()`. Bad input
    raises ConfigError (a ValueError) with the CLI's message."""
    _check_model(model, "plan", names_allowed=True)
    cfg = _config("plan", method, allocation, options)
    if batches is not None:
        _check_batches(cfg, batches)
        batches = _batch_list(batches, loss_fn)
    steps_per_epoch = _positive("steps_per_epoch", steps_per_epoch)
    with _arguments("model", "batches", "loss_fn"):
        if isinstance(model, nn.Module):
            network, heads = model, head_modules(model)
        else:
            cfg.model = os.fspath(model)
            network, heads = meta_model(cfg)
        result, _ = build_plan(cfg, network, heads, steps_per_epoch, batches, loss_fn)
    return result


def _check_batches(cfg: RunConfig, batches) -> None:
    """`batches` go with a measuring allocation ('gradient', 'fim': `wrap` cannot do without, its adapters are built
    at once)."""
    measuring = [s.name for s in registered() if s.measures]
    readers = " or ".join(f"allocation={name!r}" for name in measuring)
    measures = strategy_for(get_method(cfg.method), cfg.allocation).measures
    if batches is not None and not measures:
        raise ConfigError("batches", f"are only read by {readers}, but allocation is `{cfg.allocation}`",
                          f"Drop batches=, or use {readers}")
    if batches is None and measures:
        raise ConfigError("batches", f"are needed by allocation={cfg.allocation!r}: the ranks come from the loss "
                          "gradients of a few training batches", "Pass batches=[...] (dicts of tensors with labels)")


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# wrap
# ---------------------------------------------------------------------------------------------

@dataclass
class Wrapped:
    """What `wrap` did to a model, kept on it as `model.rankwise`: the plan, the adapters, the allocator (learned
    allocation) and the config they came from. `export` and RankAllocationCallback read it."""

    config: RunConfig
    options: dict  # the keyword arguments given to wrap (the callback re-resolves defaults for the Trainer's run)
    plan: Plan
    adapter: AdapterSet
    allocator: RankAllocator | None
    head_modules: list[str]
    base_model: str | None  # the checkpoint the model was loaded from (`name_or_path`), if it says

    def __repr__(self) -> str:
        return (f"Wrapped(method={self.config.method!r}, allocation={self.config.allocation!r}, "
                f"matrices={len(self.plan.rows)}, base_model={self.base_model!r})")

    def hard_ranks(self) -> list[int]:
        """Each matrix's rank now: the allocator's hard ranks at its current step, else the plan's ranks."""
        if self.allocator is None:
            return list(self.adapter.ranks)
        return self.allocator.hard_ranks(self.allocator.schedule.memory(self.allocator.step))


def wrap(model: nn.Module, method: str = "loraxs", allocation: str = "uniform", *, steps_per_epoch: int = 1,
         batches=None, loss_fn=None, **options) -> tuple[nn.Module, RankAllocator | None]:
    """Put `method`'s adapters on `model` at the ranks `allocation` gives, as `rankwise train` would.

    Returns (model, allocator): the model to train (LoRA-XS adapts `model` in place; LoRA and DoRA return a
    PeftModel around it, as peft.get_peft_model does), with only the adapters and the head trainable; and, for
    `allocation="learned"`, the RankAllocator (else None). The allocator is a submodule of the model (so
    `model.to(device)`, data parallelism and the Trainer's optimiser see its weights) and a forward pre-hook sets
    the rank masks of `allocator.step` before every forward: soft while training in the soft phase, hard in the
    discrete phase and in eval mode. In a transformers.Trainer, add `RankAllocationCallback(allocator)`; in a loop
    of your own, set `allocator.step` to the optimiser step and give `steps_per_epoch` and `num_train_epochs` here.

    `options`: as for `plan` (`rank_min`, `rank_max`, `rank_average`, `alpha_min`, `alpha_max`, `alpha_scheduler`,
    `memory_start`, `epochs_rank_discrete`, `rank_allocation_lr`, `seed`, ...). The plan and state are kept on the
    returned model as `model.rankwise` (see Wrapped). `allocation="gradient"` needs `batches` (and `loss_fn`), as
    for `plan`."""
    _check_model(model, "wrap")
    cfg = _config("wrap", method, allocation, options)
    _check_batches(cfg, batches)
    batches = _batch_list(batches, loss_fn) if batches is not None else None
    adapter_method = get_method(cfg.method)
    if not adapter_method.trains_adapter:
        raise ConfigError("method", f"`{cfg.method}` trains every weight: there are no adapters to wrap",
                          "Train the model as it is, or use method='loraxs', 'lora' or 'dora'")
    if adapter_method.allocates_ranks:
        raise ConfigError("method", f"`{cfg.method}` allocates its ranks in PEFT's own per-step hook, which "
                          "rankwise.wrap does not run", f"Use PEFT's config for it with your Trainer, or "
                          f"`rankwise train --method {cfg.method}`")
    if cfg.init != "default":
        raise ConfigError("init", f"`{cfg.init}` initialises from training batches, which rankwise.wrap does not "
                          "see", f"Wrap with init='default', or use `rankwise train --init {cfg.init}`")
    heads = head_modules(model)
    base_model = getattr(model, "name_or_path", None) or None
    with _arguments("model", "batches", "loss_fn"):
        result, allocator = build_plan(cfg, model, heads, _positive("steps_per_epoch", steps_per_epoch), batches,
                                       loss_fn)
    adapter = build_adapter(model, cfg.method, result.targets, result.allocated_ranks, [r.alpha for r in result.rows],
                            rslora=cfg.alpha_policy == "rslora", dropout=cfg.lora_dropout, head_modules=heads,
                            task_type=result.task_type, seed=cfg.seed, init=cfg.init, run_config=cfg)
    if allocator is not None:
        parameter = next(adapter.model.parameters(), None)
        allocator.to(parameter.device if parameter is not None else "cpu")
        allocator.step = 0
        attach_allocator(adapter, allocator)
    state = Wrapped(cfg, dict(options), result, adapter, allocator, heads, base_model)
    adapter.model.rankwise = state
    if allocator is not None:
        allocator.rankwise = state
    return adapter.model, allocator


def _wrapped(model, caller: str) -> Wrapped:
    state = getattr(model, "rankwise", None)
    if not isinstance(state, Wrapped):
        raise ConfigError("model", f"rankwise.{caller}() takes a model returned by rankwise.wrap (or a run or "
                          "export directory)", "Wrap the base model with rankwise.wrap(model, ...); a PEFT model of "
                          "your own saves with model.save_pretrained(DIR)")
    return state


# ---------------------------------------------------------------------------------------------
# The Trainer callback
# ---------------------------------------------------------------------------------------------

class RankAllocationCallback(TrainerCallback):
    """Learned rank allocation in your own `transformers.Trainer`: `Trainer(..., callbacks=[
    RankAllocationCallback(allocator)])` with the allocator `rankwise.wrap(..., allocation="learned")` returned.

    - At the start of training it fits the schedules (sharpness α, budget, discrete epochs) to the Trainer's run:
      its epochs, its optimiser steps per epoch, its `max_steps`. Options given to `wrap` in epochs
      (`epochs_rank_discrete`, `epochs_memory_start`, ...) count the Trainer's epochs.
    - The allocation weights train in their own optimiser parameter group, as in `rankwise train`: learning rate
      `rank_allocation_lr` following the Trainer's schedule (warm-up and decay), weight decay
      `rank_allocation_weight_decay` (0 by default). The Trainer's default optimiser holds every trainable
      parameter of the model, the allocator's too (it is a submodule); the callback moves those weights into
      their group (`rankwise_allocation`), or adds the group to an optimiser of your own that lacks them.
    - Before every optimiser step it sets `allocator.step` to the Trainer's global step, so the masks follow the
      schedules; after training, the step stays at the last one, so evaluation and export use the final hard ranks.
    On several processes, pass `ddp_find_unused_parameters=True` in TrainingArguments: in the discrete phase the
    allocation weights take no part in the forward."""

    def __init__(self, allocator: RankAllocator):
        if allocator is None:
            raise ConfigError("allocator", "is None: rankwise.wrap returns an allocator only for learned allocation",
                              "Wrap with allocation='learned', or train without this callback (static ranks need "
                              "none)")
        state = getattr(allocator, "rankwise", None)
        if not isinstance(allocator, RankAllocator) or not isinstance(state, Wrapped):
            raise ConfigError("allocator", f"must be the allocator rankwise.wrap returned, got "
                              f"{type(allocator).__name__}", "model, allocator = rankwise.wrap(model, "
                              "allocation='learned', ...)")
        self.allocator, self.state = allocator, state

    def fit_schedule(self, steps_per_epoch: int, num_train_epochs: int, max_steps: int | None = None) -> None:
        """Resize the schedules to a run of `num_train_epochs` epochs of `steps_per_epoch` optimiser steps (or
        `max_steps` steps): the options given to `wrap` resolved again for that run, as `rankwise train` would."""
        steps_per_epoch, num_train_epochs = _positive("steps_per_epoch", steps_per_epoch), \
            _positive("num_train_epochs", num_train_epochs)
        if max_steps is not None:
            _positive("max_steps", max_steps)
        values = {**self.state.options, "num_train_epochs": int(num_train_epochs), "max_steps": max_steps}
        cfg = _config("wrap", self.state.config.method, self.state.config.allocation, values)
        targets = self.state.plan.targets
        fitted = build_allocator(cfg, targets, steps_per_epoch, get_method(cfg.method).rank_cost(targets))
        self.allocator.schedule = fitted.schedule
        self.state.config = cfg

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, train_dataloader=None,
                       **kwargs):
        steps_per_epoch = state.max_steps
        if train_dataloader is not None and hasattr(train_dataloader, "__len__"):
            batches = len(train_dataloader)  # as Trainer counts an epoch's optimiser steps
            steps_per_epoch = max(batches // args.gradient_accumulation_steps
                                  + int(batches % args.gradient_accumulation_steps > 0), 1)
        self.fit_schedule(steps_per_epoch, state.num_train_epochs, args.max_steps if args.max_steps > 0 else None)
        if optimizer is not None:
            self._add_param_group(optimizer, lr_scheduler)
        self.allocator.step = state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        self.allocator.step = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self.allocator.step = state.global_step

    def _add_param_group(self, optimizer, lr_scheduler) -> None:
        """The allocation weights in their own group, scheduled like the first group (as `rankwise train`
        schedules every group): a LambdaLR (the Trainer's linear, cosine and constant schedules) gets the group's
        base lr and the first group's multiplier."""
        weights = self.allocator.weights
        groups = optimizer.param_groups
        if any(g.get("name") == ALLOCATION_GROUP for g in groups):
            return
        for group in groups:
            group["params"] = [p for p in group["params"] if p is not weights]
        cfg = self.state.config
        lr = cfg.rank_allocation_lr
        group = {"params": [weights], "lr": lr, "initial_lr": lr, "name": ALLOCATION_GROUP,
                 "weight_decay": float(cfg.rank_allocation_weight_decay)}
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate may wrap it
        if hasattr(scheduler, "lr_lambdas") and hasattr(scheduler, "base_lrs"):
            scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])
            scheduler.base_lrs.append(lr)
            group["lr"] = lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
        elif lr_scheduler is not None and hasattr(scheduler, "base_lrs"):
            raise ConfigError("lr_scheduler", f"{type(scheduler).__name__} cannot take the allocation weights' "
                              "parameter group", "Use a Trainer schedule built on LambdaLR (linear, cosine, "
                              "constant, ...), or give the allocation weights their group in your own optimizer "
                              f"and scheduler (a group named {ALLOCATION_GROUP!r} is left as it is)")
        optimizer.add_param_group(group)


# ---------------------------------------------------------------------------------------------
# export and load
# ---------------------------------------------------------------------------------------------

def export(model: nn.Module | str | os.PathLike, out: str | os.PathLike, format: str = "compact", *,
           tokenizer=None, base_model: str | None = None, overwrite: bool = False, verify: bool = True,
           push_to_hub: str | None = None, allow_base_model_mismatch: bool = False, quiet: bool = False) -> dict:
    """Write `model` at its hard ranks to the directory `out`, as `rankwise export` writes a run.

    `model`: a model returned by `rankwise.wrap` (trained however you like), or a run directory. `format`:
    `compact` (A, B (, R) truncated per matrix; loads with rankwise.load), `peft` (LoRA/DoRA: a PEFT adapter with
    rank_pattern/alpha_pattern; loads with PEFT alone) or `merged` (ΔW added into the weights; loads with
    transformers alone). Every export carries the tokenizer and the fine-tuned model's config (num_labels,
    problem_type, id2label/label2id as `model.config` has them), names its base model portably, and is reloaded
    and checked against the trained logits before it is kept. `tokenizer`: the one to ship (default: the base
    model's). `base_model`: the checkpoint the model came from, when its config does not say (`name_or_path`).
    `push_to_hub`: a hub repository (`user/name`) to upload the export to (the Hub is checked before any work).
    Returns the record written to `out/export.json` (adapter parameters before and after, hard ranks, ...)."""
    _check_export_arguments(out, format, base_model, push_to_hub, overwrite=overwrite, verify=verify, quiet=quiet,
                            allow_base_model_mismatch=allow_base_model_mismatch)
    log = (lambda *_: None) if quiet else print
    if isinstance(model, (str, os.PathLike)):
        with _arguments("model", "out", "format", "push_to_hub"):
            return export_run(model, format, out, overwrite=overwrite, verify=verify, log=log,
                              allow_base_model_mismatch=allow_base_model_mismatch, push_to_hub=push_to_hub)
    with _arguments("model", "out", "format", "tokenizer", "base_model", "push_to_hub"):
        return _export_wrapped(model, out, format, tokenizer, base_model, overwrite, verify, push_to_hub,
                               allow_base_model_mismatch, log)


def _check_export_arguments(out, format, base_model, push_to_hub, **flags) -> None:
    _require_type("out", out, (str, os.PathLike), "a directory path")
    _require_type("format", format, (str,), "`compact`, `peft` or `merged`")
    for name, value in (("base_model", base_model), ("push_to_hub", push_to_hub)):
        if value is not None:
            _require_type(name, value, (str, os.PathLike) if name == "base_model" else (str,),
                          "a model name or directory" if name == "base_model" else "a hub repository (user/name)")
    for name, value in flags.items():
        _require_type(name, value, (bool,), "True or False")


def _export_wrapped(model, out, format, tokenizer, base_model, overwrite, verify, push_to_hub,
                    allow_base_model_mismatch, log) -> dict:
    """`export` of a model returned by `wrap`: saved like a run's adapter, then exported like a run."""
    state = _wrapped(model, "export")
    base = base_model or state.base_model
    if not base:
        raise ConfigError("base_model", "the model does not say which checkpoint it was loaded from (its "
                          "config's name_or_path is empty)", "Pass base_model='hub id or directory'")

    reference = base_model_reference(str(base))
    if tokenizer is None:
        try:
            tokenizer = load_tokenizer(reference["base_model"])
        except ModelError as exc:
            raise ConfigError("tokenizer", f"none was given and the base model has none to ship ({exc})",
                              "Pass tokenizer=your_tokenizer") from None
    adapter = state.adapter
    hard_ranks = state.hard_ranks()
    with tempfile.TemporaryDirectory(prefix="rankwise-export-") as tmp, _as_saved(adapter, state.allocator):
        run = WrappedRun(Path(tmp), {**state.config.to_dict(), "model": reference["base_model"], "task": None},
                         {}, {}, model_config=fine_tuned_config(adapter.model))
        run.weights.mkdir()
        save_adapter(adapter, run.weights, base_model=reference["base_model"], head_modules=state.head_modules,
                     hard_ranks=hard_ranks)
        return export_finished(run, format, out, overwrite=overwrite, verify=verify, log=log,
                               allow_base_model_mismatch=allow_base_model_mismatch, push_to_hub=push_to_hub,
                               tokenizer=tokenizer)


@contextlib.contextmanager
def _as_saved(adapter: AdapterSet, allocator: RankAllocator | None):
    """The model as a run saves it: without the allocator submodule (its weights are no part of the base model's
    fingerprint), in the train/eval mode it had afterwards."""

    model, training = adapter.model, adapter.model.training
    attached = allocator is not None and model._modules.get(ALLOCATOR_MODULE) is allocator
    if attached:
        del model._modules[ALLOCATOR_MODULE]
    try:
        with torch.no_grad():
            yield
    finally:
        if attached:
            model.add_module(ALLOCATOR_MODULE, allocator)
        model.train(training)


@dataclass
class WrappedRun(FinishedRun):
    """A model wrapped in Python, saved like a run's adapter/ in a temporary directory: what `export` hands
    ship/export.py. Its fresh base models are built with the trained model's own config (head, labels)."""

    model_config: Any = None

    def load_base(self) -> nn.Module:
        return load_base(self.base_model, config=copy.deepcopy(self.model_config))

    @property
    def source_run(self) -> str | None:
        return None

    @property
    def described(self) -> str:
        return "the wrapped model"


def load(path: str | os.PathLike, *, base_model: str | None = None, allow_base_model_mismatch: bool = False
         ) -> nn.Module:
    """The model an export, run directory or run adapter holds, ready to use (eval mode): a transformers model for
    a merged export or a full fine-tuning run, a PeftModel for LoRA/DoRA/AdaLoRA adapters, a transformers model
    with LoRA-XS layers for LoRA-XS. Its base model is the one the export names, found wherever it is here (an
    embedded model by name or hub id, a directory, else the hub); `base_model` overrides it. The tokenizer:
    `AutoTokenizer.from_pretrained(path)` (every export carries it)."""
    _require_type("path", path, (str, os.PathLike), "a directory or model name")
    if base_model is not None:
        _require_type("base_model", base_model, (str, os.PathLike), "a model name or directory")
    _require_type("allow_base_model_mismatch", allow_base_model_mismatch, (bool,), "True or False")
    with _arguments("path", "base_model"):
        return _load(path, None if base_model is None else os.fspath(base_model), allow_base_model_mismatch)


def _load(path, base_model: str | None, allow_base_model_mismatch: bool) -> nn.Module:
    directory = Path(path).expanduser()
    adapter_files = ("rankwise.json", "adapter_config.json")
    is_run = (directory / "summary.json").is_file() or (directory / "config.json").is_file() and \
        any((directory / name).is_dir() for name in ("adapter", "model"))
    if directory.is_dir() and (is_run or any((directory / f).is_file() for f in adapter_files)):
        source = load_source(adapter=str(directory), base_model=base_model,
                             allow_base_model_mismatch=allow_base_model_mismatch)
    else:
        source = load_source(model=str(path))
    model, _ = source.load()
    return model.eval()


def load_adapter(model: nn.Module, directory: str | os.PathLike, allow_base_model_mismatch: bool = False) -> AdapterSet:
    """`rankwise.load_adapter`: a rankwise adapter directory (a run's `adapter/` or an export) attached to a base
    model, refused on another base model unless `allow_base_model_mismatch` (methods.load_adapter)."""

    _require_type("model", model, (nn.Module,), "a torch model (the base model the adapter was trained on)")
    _require_type("directory", directory, (str, os.PathLike), "an adapter directory")
    _require_type("allow_base_model_mismatch", allow_base_model_mismatch, (bool,), "True or False")
    with _arguments("directory", "model"):
        return attach(model, directory, allow_base_model_mismatch=allow_base_model_mismatch)


def model_path(name: str) -> str:
    """A local directory or hub id that `from_pretrained` accepts for `name`: an embedded model (`minilm`, the
    installed all-MiniLM-L6-v2; `smollm2-135m`), a directory, or a hub id (returned as it is)."""
    _require_type("name", name, (str, os.PathLike), "a model name, hub id or directory")
    if not os.fspath(name).strip():
        raise ConfigError("name", "is empty", "Give `minilm`, `smollm2-135m`, a hub id or a directory")
    with _arguments("name"):
        return resolve_model(os.fspath(name))


__all__ = ["plan", "wrap", "Wrapped", "RankAllocationCallback", "export", "load", "load_adapter", "model_path", "Plan", "OPTIONS",
           "ALLOCATION_GROUP"]
