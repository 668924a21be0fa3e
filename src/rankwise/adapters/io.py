"""Saving and loading adapters. Every format carries rankwise metadata (targets with shapes, ranks, scales,
head modules, base model), so `load_adapter(model, directory)` can refuse a base model it does not fit.

- `rankwise-lora` (a `lora` run's `adapter/`, and `rankwise export --format peft`): PEFT's own files
  (adapter_config.json with rank_pattern/alpha_pattern, adapter_model.safetensors, head in modules_to_save),
  loadable with `PeftModel.from_pretrained`, plus `rankwise.json`.
- `rankwise-loraxs` (a `loraxs` run's `adapter/`): `adapter_config.json` and `adapter_model.safetensors` with
  `<module>.lora_A` (r, in), `.lora_B` (out, r), `.lora_R` (r, r) and `head.<module>.<param>` tensors.
- `rankwise-compact` (`rankwise export --format compact`, for `loraxs` and `lora`): the same tensor names
  (no `lora_R` for `lora`) truncated to the hard ranks, and each matrix's trained scale, so ΔW is unchanged.

Run adapters of learned allocation are allocated at rank_max; their metadata records `hard_ranks`, which
loading applies as masks, so the model gives the same outputs as at the end of training.

Every format also records `base_model_fingerprint` (see `base_model_fingerprint`): a digest of the whole base model
(every tensor but the head's), which loading recomputes on the model it is given and compares, so an adapter is
refused on any other base model, not only on one whose adapted matrices have other norms. Adapters written before
the fingerprint existed keep the older check (`base_weight_norms`: the norms of the adapted matrices' base weights).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from .. import __version__
from ..errors import RunDirError
from ..targets import TargetMatrix, find_targets, linear_shape
from . import AdapterSet, hard_keep
from .loraxs import LoraXSLinear

LORA_FORMAT = "rankwise-lora"
LORAXS_FORMAT = "rankwise-loraxs"
COMPACT_FORMAT = "rankwise-compact"
META_FILE = "rankwise.json"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_ADAPTER_NAME = "default"
# Relative difference of a base weight's norm beyond which the model is not the one the adapter was trained on.
BASE_NORM_TOLERANCE = 1e-3
FINGERPRINT_ALGORITHM = "rankwise-sampled-sha256-v1"
FINGERPRINT_SAMPLES = 1024  # values read per tensor: the cost is per tensor, not per parameter
OVERRIDE_HINT = "--allow_base_model_mismatch (Python: allow_base_model_mismatch=True)"


# ---------------------------------------------------------------------------------------------
# Module access (plain models, LoRA-XS wrapped ones and PEFT wrappers alike)
# ---------------------------------------------------------------------------------------------

def inner_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    peft = sys.modules.get("peft")  # not imported: cannot be a PeftModel (and PEFT is slow to import)
    return model.base_model.model if peft is not None and isinstance(model, peft.PeftModel) else model


def head_module(model: nn.Module, name: str) -> nn.Module:
    """The live head module: inside a PEFT wrapper, the trained copy in `modules_to_save`."""
    module = inner_model(model).get_submodule(name)
    copies = getattr(module, "modules_to_save", None)
    return copies[PEFT_ADAPTER_NAME] if copies is not None else module


def base_layer(module: nn.Module) -> nn.Module:
    """The frozen base layer of a target, whether plain, LoRA-XS-wrapped or a PEFT LoRA layer."""
    if isinstance(module, LoraXSLinear):
        return module.base
    return module.base_layer if hasattr(module, "base_layer") else module


def base_weight_norms(model: nn.Module, targets: list[TargetMatrix]) -> list[float]:
    """Frobenius norm of each target's base weight: a fingerprint of the base model an adapter belongs to."""
    root = inner_model(model)
    return [float(base_layer(root.get_submodule(t.name)).weight.detach().float().norm()) for t in targets]


# ---------------------------------------------------------------------------------------------
# Base-model fingerprint
# ---------------------------------------------------------------------------------------------

def _unwrap(module: nn.Module) -> nn.Module:
    """The base module behind an adapter wrapper: LoRA-XS's `base`, a PEFT layer's `base_layer`, or the original
    of a PEFT `modules_to_save` copy. Anything else is returned as it is."""
    while True:
        if isinstance(module, LoraXSLinear):
            module = module.base
        elif isinstance(getattr(module, "base_layer", None), nn.Module):
            module = module.base_layer
        elif isinstance(getattr(module, "original_module", None), nn.Module):
            module = module.original_module
        else:
            return module


def base_model_tensors(model: nn.Module, head_modules: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every parameter and persistent buffer of the base model, in module order. Adapter wrappers
    are seen through (a wrapped layer counts as its frozen base layer, under its own name), so a model yields the
    same names and tensors before and after adapters are attached. `head_modules` and everything under them are
    left out: the head is trained and saved with the adapter. Non-persistent buffers (position ids, rotary
    frequencies) are left out too: they are derived from the config, not part of the checkpoint."""
    skip = set(head_modules)

    def walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
        if prefix in skip:
            return
        module = _unwrap(module)
        dot = f"{prefix}." if prefix else ""
        for name, tensor in module._parameters.items():
            if tensor is not None:
                yield dot + name, tensor
        for name, tensor in module._buffers.items():
            if tensor is not None and name not in module._non_persistent_buffers_set:
                yield dot + name, tensor
        for name, child in module._modules.items():
            if child is not None:
                yield from walk(child, dot + name)

    yield from walk(inner_model(model), "")


def _sample_positions(numel: int) -> torch.Tensor:
    """Flat positions read from a tensor of `numel` elements: all of them up to FINGERPRINT_SAMPLES, else that many
    spread over the whole tensor by the golden-ratio sequence ⌊frac(i·φ)·numel⌋. Fixed for a given size; unlike a
    stride numel/k, it does not fall on the same column of every k-th row of a matrix."""
    if numel <= FINGERPRINT_SAMPLES:
        return torch.arange(numel)
    steps = torch.arange(FINGERPRINT_SAMPLES, dtype=torch.float64) * ((math.sqrt(5.0) - 1.0) / 2.0)
    return (torch.frac(steps) * numel).long().clamp_(max=numel - 1)


def base_model_fingerprint(model: nn.Module, head_modules: list[str]) -> dict:
    """A digest of the base model under `model` (see `base_model_tensors`): SHA-256 over every tensor's name, shape
    and a fixed sample of up to FINGERPRINT_SAMPLES of its values, read as float32 (integers as int64).

    Values are compared, not storage types: the same weights held in float32, bfloat16 or float16 give the same
    digest (a bf16 checkpoint loaded in float32 is the same model), while a lossy cast (float32 weights rounded to
    bf16) changes the values and so the digest. A sign flip, a re-initialised or otherwise replaced tensor, or a
    change of name or shape changes it; a change confined to elements that are not sampled (e.g. one edited
    entry) can go unnoticed. Cost: one gather of ≤ 1024 values per tensor, independent of the tensor's size.
    Returns {"algorithm", "digest", "tensors", "dtypes"} as recorded in adapter metadata."""
    digest = hashlib.sha256()
    count, dtypes = 0, set()
    with torch.no_grad():
        for name, tensor in base_model_tensors(model, head_modules):
            values = tensor.detach().reshape(-1)[_sample_positions(tensor.numel()).to(tensor.device)]
            if tensor.is_floating_point():
                dtypes.add(str(tensor.dtype).removeprefix("torch."))
                kind, data = "float", values.float().cpu().numpy().astype("<f4")
            else:
                kind, data = "int", values.long().cpu().numpy().astype("<i8")
            digest.update(f"{name}|{tuple(tensor.shape)}|{kind}|".encode())
            digest.update(data.tobytes())
            count += 1
    return {"algorithm": FINGERPRINT_ALGORITHM, "digest": digest.hexdigest(), "tensors": count,
            "dtypes": sorted(dtypes)}


def head_shapes(model: nn.Module, head_modules: list[str]) -> dict[str, dict[str, list[int]]]:
    return {h: {k: list(v.shape) for k, v in head_module(model, h).state_dict().items()} for h in head_modules}


def _head_state(model: nn.Module, head_modules: list[str]) -> dict[str, torch.Tensor]:
    return {f"head.{h}.{k}": v.detach().cpu().contiguous()
            for h in head_modules for k, v in head_module(model, h).state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------

def adapter_metadata(adapter: AdapterSet, base_model: str, head_modules: list[str], hard_ranks: list[int]) -> dict:
    return {
        "format": LORAXS_FORMAT if adapter.method == "loraxs" else LORA_FORMAT,
        "method": adapter.method,
        "base_model": base_model,
        "rankwise_version": __version__,
        "targets": [t.to_dict() for t in adapter.targets],
        "ranks": list(adapter.ranks),
        "hard_ranks": list(hard_ranks),
        "alphas": list(adapter.alphas),
        "scales": [m.scale for m in adapter.modules] if adapter.method == "loraxs" else None,
        "head_modules": list(head_modules),
        "head_shapes": head_shapes(adapter.model, head_modules),
        "base_weight_norms": base_weight_norms(adapter.model, adapter.targets),  # what older rankwise checks
        "base_model_fingerprint": base_model_fingerprint(adapter.model, head_modules),
    }


def save_adapter(adapter: AdapterSet, directory: str | Path, base_model: str, head_modules: list[str],
                 hard_ranks: list[int]) -> None:
    """A run's adapter as allocated (rank_max for learned runs), with its hard ranks in the metadata."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = adapter_metadata(adapter, base_model, head_modules, hard_ranks)
    if adapter.method == "lora":
        adapter.model.save_pretrained(str(directory))
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        return
    tensors = {}
    for target, module in zip(adapter.targets, adapter.modules):
        tensors[f"{target.name}.lora_A"] = module.lora_A.detach().cpu().contiguous()
        tensors[f"{target.name}.lora_B"] = module.lora_B.detach().cpu().contiguous()
        tensors[f"{target.name}.lora_R"] = module.lora_R.detach().cpu().contiguous()
    tensors.update(_head_state(adapter.model, head_modules))
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))


def trained_scales(adapter: AdapterSet) -> list[float]:
    """Each matrix's ΔW scale as trained: α/r or α/√r at the allocated rank (PEFT's `scaling` for LoRA)."""
    if adapter.method == "loraxs":
        return [float(m.scale) for m in adapter.modules]
    return [float(layer.scaling[PEFT_ADAPTER_NAME]) for layer in adapter.modules]


def compact_alphas(scales: list[float], ranks: list[int], rslora: bool) -> list[float]:
    """Per-matrix α that gives each matrix its trained scale at its (hard) rank: α_i/r_i = scale_i, or
    α_i/√r_i = scale_i with rsLoRA. Truncating an adapter allocated at rank_max then leaves ΔW unchanged."""
    return [s * (math.sqrt(r) if rslora else r) for s, r in zip(scales, ranks)]


def compact_tensors(adapter: AdapterSet, hard_ranks: list[int], head_modules: list[str]) -> dict[str, torch.Tensor]:
    """The adapter truncated to `hard_ranks`: A (r, in), B (out, r) and, for LoRA-XS, R (r, r), plus the head.

    Rank components are ordered (LoRA-XS: by singular value; learned LoRA: the mask keeps the first r), so the
    hard-rank mask of training equals keeping the leading r rows of A, columns of B and block of R."""
    tensors = {}
    for target, module, r in zip(adapter.targets, adapter.modules, hard_ranks):
        if adapter.method == "loraxs":
            a, b, rr = module.lora_A, module.lora_B, module.lora_R
            tensors[f"{target.name}.lora_R"] = rr[:r, :r]
        else:
            a = module.lora_A[PEFT_ADAPTER_NAME].weight
            b = module.lora_B[PEFT_ADAPTER_NAME].weight
        tensors[f"{target.name}.lora_A"] = a[:r]
        tensors[f"{target.name}.lora_B"] = b[:, :r]
    tensors.update(_head_state(adapter.model, head_modules))
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def compact_metadata(adapter: AdapterSet, hard_ranks: list[int], base_model: str, head_modules: list[str],
                     rslora: bool = False, task_type: str | None = None, dropout: float = 0.0,
                     fingerprint: dict | None = None) -> dict:
    """`fingerprint`: the base-model fingerprint to record, when known (an export keeps the one of the model the
    run was trained on); computed from `adapter.model` otherwise."""
    scales = trained_scales(adapter)
    return {
        "format": COMPACT_FORMAT,
        "method": adapter.method,
        "base_model": base_model,
        "rankwise_version": __version__,
        "targets": [t.to_dict() for t in adapter.targets],
        "ranks": list(hard_ranks),
        "hard_ranks": list(hard_ranks),
        "scales": scales,
        "alphas": compact_alphas(scales, hard_ranks, rslora),
        "rslora": rslora,
        "head_modules": list(head_modules),
        "head_shapes": head_shapes(adapter.model, head_modules),
        "peft_task_type": task_type,
        "lora_dropout": dropout,
        "base_weight_norms": base_weight_norms(adapter.model, adapter.targets),
        "base_model_fingerprint": fingerprint or base_model_fingerprint(adapter.model, head_modules),
    }


def save_compact(directory: str | Path, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": COMPACT_FORMAT})
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def read_adapter_metadata(directory: str | Path) -> dict:
    directory = Path(directory)
    for name in (META_FILE, CONFIG_FILE):
        path = directory / name
        if path.is_file():
            try:
                meta = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise RunDirError(f"{path} is not valid JSON ({exc})") from None
            if str(meta.get("format", "")).startswith("rankwise"):
                return meta
    raise RunDirError(f"{directory} is not a rankwise adapter (no {META_FILE} or rankwise {CONFIG_FILE})")


def check_fits(model: nn.Module, meta: dict, directory: str | Path,
               allow_base_model_mismatch: bool = False) -> list[TargetMatrix]:
    """Raise RunDirError unless `model` is a base model this adapter was trained on: every target module
    exists with the same shape, the head has the same shapes, and the base model is the same (see
    `check_base_model`; with `allow_base_model_mismatch`, a different one only prints a warning)."""
    saved = [TargetMatrix(**t) for t in meta["targets"]]
    trained_on = meta.get("base_model")
    present = {t.name for t in find_targets(model, "all-linear")}
    for t in saved:
        if t.name not in present:
            raise RunDirError(f"adapter {directory} targets `{t.name}`, which this model does not have: it was "
                              f"trained on `{trained_on}`. Load it onto that model (or pass it as --base_model)")
        shape = linear_shape(model.get_submodule(t.name))
        if shape != (t.in_features, t.out_features):
            raise RunDirError(f"adapter {directory}: `{t.name}` is {t.out_features}×{t.in_features} in the adapter "
                              f"but {shape[1]}×{shape[0]} in this model; it was trained on `{trained_on}`")
    for head in meta.get("head_modules") or []:
        try:
            module = model.get_submodule(head)
        except AttributeError:
            raise RunDirError(f"adapter {directory} has a `{head}` head, which this model does not have; it was "
                              f"trained on `{trained_on}`") from None
        own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        saved_head = {k: tuple(v) for k, v in (meta.get("head_shapes") or {}).get(head, {}).items()}
        if saved_head and saved_head != own:
            raise RunDirError(f"adapter {directory}: head `{head}` has shapes {saved_head} but this model's has "
                              f"{own}. The adapter was trained for a task with a different number of labels")
    check_base_model(model, meta, directory, allow_base_model_mismatch, saved)
    return saved


def check_base_model(model: nn.Module, meta: dict, directory: str | Path, allow_base_model_mismatch: bool = False,
                     targets: list[TargetMatrix] | None = None) -> None:
    """Raise RunDirError unless `model` (before or after adapters are attached) is the base model the adapter's
    metadata was written on: same base-model fingerprint, or, for metadata without one (older rankwise), the same
    norms of the adapted matrices' base weights. With `allow_base_model_mismatch`, print a one-line warning to
    stderr instead."""
    trained_on = meta.get("base_model")
    recorded = meta.get("base_model_fingerprint")
    if isinstance(recorded, dict) and recorded.get("algorithm") == FINGERPRINT_ALGORITHM:
        here = base_model_fingerprint(model, meta.get("head_modules") or [])
        if here["digest"] == recorded["digest"]:
            return
        detail = f"base-model fingerprint {here['digest'][:12]} here, {str(recorded.get('digest'))[:12]} recorded"
        if here["tensors"] != recorded.get("tensors"):
            detail += f"; {here['tensors']} tensors here, {recorded.get('tensors')} recorded"
        if recorded.get("dtypes") and here["dtypes"] != recorded["dtypes"]:
            trained_dtype = "/".join(recorded["dtypes"])
            detail += (f"; weights in {'/'.join(here['dtypes'])} here, {trained_dtype} when trained: a cast that "
                       f"rounds the weights changes the model, load it in {trained_dtype}")
    else:  # written before the fingerprint (or by a rankwise with another algorithm): the adapted matrices only
        norms = meta.get("base_weight_norms")
        if not norms:
            return
        targets = targets if targets is not None else [TargetMatrix(**t) for t in meta["targets"]]
        for t, want, got in zip(targets, norms, base_weight_norms(model, targets)):
            if abs(got - want) > BASE_NORM_TOLERANCE * max(abs(want), 1e-12):
                detail = f"the base weight of `{t.name}` has norm {got:.6g}, {want:.6g} when trained"
                break
        else:
            return
    if allow_base_model_mismatch:
        print(f"rankwise: warning: adapter {directory} was trained on another base model (`{trained_on}`; {detail}); "
              "using it anyway, as allowed by --allow_base_model_mismatch", file=sys.stderr)
        return
    raise RunDirError(f"adapter {directory} was trained on another base model: this model differs from the one the "
                      f"adapter was trained on, `{trained_on}` ({detail}). Load it onto `{trained_on}` (pass that "
                      f"model as --base_model if it has moved), or pass {OVERRIDE_HINT} to use it anyway")


def _load_head(model: nn.Module, tensors: dict[str, torch.Tensor], head_modules: list[str], directory) -> None:
    for head in head_modules:
        prefix = f"head.{head}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        module = head_module(model, head)
        own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        if {k: tuple(v.shape) for k, v in state.items()} != own:
            raise RunDirError(f"adapter {directory}: head `{head}` has shapes "
                              f"{ {k: tuple(v.shape) for k, v in state.items()} } but this model's has {own}. The "
                              "adapter was trained for a task with a different number of labels")
        module.load_state_dict(state)


def _attach_loraxs(model: nn.Module, targets: list[TargetMatrix], tensors: dict[str, torch.Tensor],
                   scales: list[float], head_modules: list[str], alphas: list[float], directory) -> AdapterSet:
    """Wrap each target in a LoraXSLinear with the saved factors (no SVD); freeze all but the head."""
    _load_head(model, tensors, head_modules, directory)
    for p in model.parameters():
        p.requires_grad_(False)
    modules = []
    for target, scale in zip(targets, scales):
        base = model.get_submodule(target.name)
        module = LoraXSLinear.from_factors(base, tensors[f"{target.name}.lora_A"], tensors[f"{target.name}.lora_B"],
                                           tensors[f"{target.name}.lora_R"], scale)
        model.set_submodule(target.name, module)
        modules.append(module)
    for head in head_modules:
        for p in model.get_submodule(head).parameters():
            p.requires_grad_(True)
    ranks = [m.rank for m in modules]
    return AdapterSet("loraxs", model, targets, ranks, list(alphas), modules)


def _attach_compact_lora(model: nn.Module, targets: list[TargetMatrix], tensors: dict[str, torch.Tensor],
                         meta: dict, directory) -> AdapterSet:
    """A PEFT LoRA model at the compact ranks, with α chosen so each matrix keeps its trained scale."""
    from .lora import KeepHooks, apply_lora, lora_config, lora_layers

    names = [t.name for t in targets]
    ranks = [int(tensors[f"{n}.lora_A"].shape[0]) for n in names]
    alphas = compact_alphas(meta["scales"], ranks, bool(meta.get("rslora")))
    conv1d = any(isinstance(model.get_submodule(n), Conv1D) for n in names)  # GPT-2: W stored in×out
    config = lora_config(names, ranks, alphas, bool(meta.get("rslora")), float(meta.get("lora_dropout") or 0.0),
                         meta["head_modules"], meta.get("peft_task_type"), fan_in_fan_out=conv1d)
    peft_model = apply_lora(model, config)
    layers = lora_layers(peft_model, names)
    with torch.no_grad():
        for name, layer in zip(names, layers):
            layer.lora_A[PEFT_ADAPTER_NAME].weight.copy_(tensors[f"{name}.lora_A"])
            layer.lora_B[PEFT_ADAPTER_NAME].weight.copy_(tensors[f"{name}.lora_B"])
    _load_head(peft_model, tensors, meta["head_modules"], directory)
    return AdapterSet("lora", peft_model, targets, ranks, alphas, layers, KeepHooks(layers))


def load_adapter(model: nn.Module, directory: str | Path, allow_base_model_mismatch: bool = False) -> AdapterSet:
    """Attach a saved rankwise adapter (a run's `adapter/` or an export) and its head to a freshly loaded base
    `model`. Hard ranks are applied as masks where the adapter is allocated larger. Raises RunDirError when
    the adapter does not fit the model (module names, shapes, head, or base weights); with
    `allow_base_model_mismatch`, other base weights only print a warning."""
    directory = Path(directory)
    meta = read_adapter_metadata(directory)
    if meta["format"] == "rankwise-adalora":  # PEFT AdaLoRA, see peft_baselines.py
        from .peft_baselines import load_adalora

        return load_adalora(model, directory, meta, check_fits(model, meta, directory, allow_base_model_mismatch))
    if meta["format"] == LORA_FORMAT:
        targets = check_fits(model, meta, directory, allow_base_model_mismatch)
        from peft import PeftModel

        from .lora import KeepHooks, lora_layers, peft_quietly

        try:
            with peft_quietly():
                peft_model = PeftModel.from_pretrained(model, str(directory))
        except (RuntimeError, ValueError) as exc:  # e.g. a head of another size
            raise RunDirError(f"adapter {directory} does not load onto this model: "
                              f"{str(exc).strip().splitlines()[0][:300]}") from None
        layers = lora_layers(peft_model, [t.name for t in targets])
        adapter = AdapterSet("lora", peft_model, targets, meta["ranks"], meta["alphas"], layers, KeepHooks(layers))
        if list(meta["hard_ranks"]) != list(adapter.ranks):
            adapter.set_keep(hard_keep(meta["hard_ranks"], max(adapter.ranks)))
        return adapter
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise RunDirError(f"adapter {directory}: {WEIGHTS_FILE} is missing")
    return attach_tensors(model, meta, load_file(str(path)), directory, allow_base_model_mismatch)


def attach_tensors(model: nn.Module, meta: dict, tensors: dict[str, torch.Tensor],
                   directory: str | Path = "(in memory)", allow_base_model_mismatch: bool = False) -> AdapterSet:
    """Attach a `rankwise-loraxs` or `rankwise-compact` adapter given as metadata and tensors (see
    `compact_metadata` / `compact_tensors`), after checking that it fits `model` (see `check_fits`)."""
    targets = check_fits(model, meta, directory, allow_base_model_mismatch)
    parts = ("lora_A", "lora_B", "lora_R") if meta["method"] == "loraxs" else ("lora_A", "lora_B")
    missing = [f"{t.name}.{part}" for t in targets for part in parts if f"{t.name}.{part}" not in tensors]
    if missing:
        raise RunDirError(f"adapter {directory}: {WEIGHTS_FILE} lacks `{missing[0]}` ({len(missing)} tensors "
                          "missing); the file is incomplete or belongs to another adapter")
    if meta["method"] == "loraxs":
        adapter = _attach_loraxs(model, targets, tensors, meta["scales"], meta["head_modules"],
                                 meta.get("alphas") or [], directory)
    else:
        adapter = _attach_compact_lora(model, targets, tensors, meta, directory)
    hard = meta["hard_ranks"]
    if list(hard) != list(adapter.ranks):
        adapter.set_keep(hard_keep(hard, max(adapter.ranks)))
    return adapter


__all__ = ["save_adapter", "load_adapter", "attach_tensors", "read_adapter_metadata", "check_fits", "check_base_model",
           "compact_tensors", "compact_metadata", "save_compact", "compact_alphas", "trained_scales",
           "base_weight_norms", "base_model_fingerprint", "base_model_tensors", "FINGERPRINT_ALGORITHM",
           "head_module", "inner_model", "head_shapes"]
