"""Adapter methods: one class per method, one module each, and the registry every other module asks.

    loraxs.py   LoRA-XS (rankwise's own layer)        lora.py     LoRA through PEFT, with EVA as its init
    adalora.py  AdaLoRA through PEFT                  dora.py     DoRA through PEFT (LoRA with use_dora)
    full.py     full fine-tuning

`get_method(name)` returns the method object (see base.py for what it answers); `build_adapter` puts a method's
adapters on a model; `load_adapter` / `attach_tensors` put saved ones back, after checking the base model. Adding a
method is one module with a `@register`ed subclass of `AdapterMethod`, plus its import line below.
"""

from __future__ import annotations

from pathlib import Path

from ..adapters.io import COMPACT_FORMAT, WEIGHTS_FILE, check_fits, read_adapter_metadata
from ..adapters.masks import hard_keep
from ..errors import ConfigError, RunDirError
from .base import AdapterMethod, AdapterSet, TrainingHooks, _REGISTRY
from . import loraxs, lora, adalora, dora, full  # noqa: F401  (each registers its method)

METHODS: tuple[str, ...] = tuple(_REGISTRY)
FULL_FINETUNING = "full"  # the method without adapters: the reference of LR-ratio studies


def get_method(name: str) -> AdapterMethod:
    """The registered method called `name`; ConfigError naming the choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError("method", f"unknown value `{name}`", f"Choose one of: {', '.join(METHODS)}") from None


def trains_adapter(name) -> bool:
    """Whether runs of method `name` train adapters (False: full fine-tuning). For columns of run tables."""
    return name not in _REGISTRY or _REGISTRY[name].trains_adapter


def allocates_ranks(name) -> bool:
    """Whether method `name` sets its own ranks while training (AdaLoRA). For columns of run tables."""
    return name in _REGISTRY and _REGISTRY[name].allocates_ranks


def titles(short: bool = False) -> dict[str, str]:
    """Method name -> the name reports print (`short`: for table cells)."""
    return {name: (m.short_title if short else m.title) for name, m in _REGISTRY.items()}


def build_adapter(model, method: str, targets, ranks: list[int], alphas: list[float], rslora: bool = False,
                  dropout: float = 0.0, head_modules: list[str] = (), task_type: str | None = None, seed: int = 0,
                  init: str = "default", run_config=None, total_steps: int = 0) -> AdapterSet:
    """Adapt `model` in place with `method`'s adapters over `targets` at `ranks` and `alphas` (see
    AdapterMethod.build). `init="eva"` builds LoRA for EVA (`AdapterMethod.initialise` runs it, with data);
    `adalora` takes its settings from `run_config` and needs the run's optimiser steps (`total_steps`)."""
    adapter = get_method(method).build(model, targets, ranks, alphas, rslora=rslora, dropout=dropout,
                                       head_modules=list(head_modules), task_type=task_type, seed=seed, init=init,
                                       cfg=run_config, total_steps=total_steps)
    if getattr(run_config, "freeze_head", False):  # --freeze_head: the head keeps its initial weights
        adapters = {id(p) for p in adapter.adapter_parameters()}  # those on the head's layers (every-linear) train
        for name, p in adapter.model.named_parameters():
            if id(p) not in adapters and any(f".{head}." in f".{name}." for head in head_modules):
                p.requires_grad_(False)
    return adapter


def save_adapter(adapter: AdapterSet, directory: str | Path, base_model: str, head_modules: list[str],
                 hard_ranks: list[int], tokenizer=None) -> None:
    """Write `adapter` (as allocated, with its hard ranks in the metadata) into `directory`, in its method's format."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    adapter.method.save(adapter, directory, base_model=base_model, head_modules=list(head_modules),
                        hard_ranks=list(hard_ranks), tokenizer=tokenizer)


def load_adapter(model, directory: str | Path, allow_base_model_mismatch: bool = False) -> AdapterSet:
    """Attach a saved rankwise adapter (a run's `adapter/` or an export) and its head to a freshly loaded base
    `model`. Hard ranks are applied as masks where the adapter is allocated larger. Raises RunDirError when
    the adapter does not fit the model (module names, shapes, head, or base weights); with
    `allow_base_model_mismatch`, other base weights only print a warning."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta = read_adapter_metadata(directory)
    method = get_method(meta["method"])
    if meta["format"] != COMPACT_FORMAT and method.saves_peft_files:
        return method.load(model, directory, meta, check_fits(model, meta, directory, allow_base_model_mismatch))
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise RunDirError(f"adapter {directory}: {WEIGHTS_FILE} is missing")
    return attach_tensors(model, meta, load_file(str(path)), directory, allow_base_model_mismatch)


def attach_tensors(model, meta: dict, tensors: dict, directory: str | Path = "(in memory)",
                   allow_base_model_mismatch: bool = False) -> AdapterSet:
    """Attach a `rankwise-loraxs` or `rankwise-compact` adapter given as metadata and tensors (see
    `adapters.io.compact_metadata` / `compact_tensors`), after checking that it fits `model` (`check_fits`)."""

    targets = check_fits(model, meta, directory, allow_base_model_mismatch)
    method = get_method(meta["method"])
    missing = [f"{t.name}.{part}" for t in targets for part in method.tensor_parts if f"{t.name}.{part}" not in tensors]
    if missing:
        raise RunDirError(f"adapter {directory}: {WEIGHTS_FILE} lacks `{missing[0]}` ({len(missing)} tensors "
                          "missing); the file is incomplete or belongs to another adapter")
    adapter = method.attach(model, targets, tensors, meta, directory)
    hard = meta["hard_ranks"]
    if list(hard) != list(adapter.ranks):
        adapter.set_keep(hard_keep(hard, max(adapter.ranks)))
    return adapter


__all__ = ["AdapterMethod", "AdapterSet", "TrainingHooks", "METHODS", "FULL_FINETUNING", "get_method", "build_adapter", "save_adapter", "trains_adapter", "allocates_ranks", "titles", "load_adapter",
           "attach_tensors"]
