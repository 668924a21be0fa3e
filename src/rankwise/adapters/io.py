"""What every saved adapter carries, whatever its method: rankwise metadata (targets with shapes, ranks, scales,
head modules, base model), so `rankwise.methods.load_adapter(model, directory)` can refuse a base model it does not
fit; the head's tensors; and the compact format. Each method writes and reads its own files (rankwise/methods/):

- `rankwise-lora` (a `lora` run's `adapter/`, and `rankwise export --format peft`): PEFT's own files
  (adapter_config.json with rank_pattern/alpha_pattern, adapter_model.safetensors, head in modules_to_save),
  loadable with `PeftModel.from_pretrained`, plus `rankwise.json`.
- `rankwise-loraxs` (a `loraxs` run's `adapter/`): `adapter_config.json` and `adapter_model.safetensors` with
  `<module>.lora_A` (r, in), `.lora_B` (out, r), `.lora_R` (r, r) and `head.<module>.<param>` tensors.
- `rankwise-adalora`, and DoRA's `rankwise-lora` with `use_dora`: PEFT's files plus `rankwise.json`.
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
from typing import TYPE_CHECKING, Iterator

import torch
from safetensors.torch import save_file
from torch import nn

from ..version import __version__
from ..errors import RunDirError
from ..models import base_model_reference
from ..targets import EVERY_LINEAR, TargetMatrix, find_targets, linear_shape
from .loraxs import LoraXSLinear

if TYPE_CHECKING:
    from .adapter_set import AdapterSet

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


def head_state(model: nn.Module, head_modules: list[str]) -> dict[str, torch.Tensor]:
    return {f"head.{h}.{k}": v.detach().cpu().contiguous()
            for h in head_modules for k, v in head_module(model, h).state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------

def adapter_metadata(adapter: AdapterSet, base_model: str, head_modules: list[str], hard_ranks: list[int]) -> dict:
    """The metadata of a run's adapter as allocated (rank_max for learned runs); its method adds `format`. The base
    model is named portably (`base_model`, `base_model_name_or_path`: models.base_model_reference)."""
    return {
        "method": adapter.method.name,
        **base_model_reference(base_model),
        "rankwise_version": __version__,
        "targets": [t.to_dict() for t in adapter.targets],
        "ranks": list(adapter.ranks),
        "hard_ranks": list(hard_ranks),
        "alphas": list(adapter.alphas),
        "scales": adapter.scales(),
        "head_modules": list(head_modules),
        "head_shapes": head_shapes(adapter.model, head_modules),
        **(adapter.base_record or base_model_record(adapter, head_modules)),
    }


def base_model_record(adapter: AdapterSet, head_modules: list[str]) -> dict:
    """What an adapter records of its base model: the fingerprint and, for older rankwise, the adapted matrices'
    norms. Taken before training when the frozen weights are then held in half precision (`AdapterSet.base_record`),
    so it names the base model as it is loaded, not the rounded copy training multiplied with."""
    return {"base_weight_norms": base_weight_norms(adapter.model, adapter.targets),  # what older rankwise checks
            "base_model_fingerprint": base_model_fingerprint(adapter.model, head_modules)}


def compact_alphas(scales: list[float], ranks: list[int], rslora: bool) -> list[float]:
    """Per-matrix α that gives each matrix its trained scale at its (hard) rank: α_i/r_i = scale_i, or
    α_i/√r_i = scale_i with rsLoRA. Truncating an adapter allocated at rank_max then leaves ΔW unchanged."""
    return [s * (math.sqrt(r) if rslora else r) for s, r in zip(scales, ranks)]


def compact_tensors(adapter: AdapterSet, hard_ranks: list[int], head_modules: list[str]) -> dict[str, torch.Tensor]:
    """The adapter truncated to `hard_ranks`: A (r, in), B (out, r) and, for LoRA-XS, R (r, r), plus the head.

    Rank components are ordered (LoRA-XS: by singular value; learned LoRA: the mask keeps the first r), so the
    hard-rank mask of training equals keeping the leading r rows of A, columns of B and block of R."""
    tensors = {}
    for index, (target, r) in enumerate(zip(adapter.targets, hard_ranks)):
        for part, tensor in adapter.method.compact_factors(adapter, index, r).items():
            tensors[f"{target.name}.{part}"] = tensor
    tensors.update(head_state(adapter.model, head_modules))
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def compact_metadata(adapter: AdapterSet, hard_ranks: list[int], base_model: str, head_modules: list[str],
                     rslora: bool = False, task_type: str | None = None, dropout: float = 0.0,
                     fingerprint: dict | None = None) -> dict:
    """`fingerprint`: the base-model fingerprint to record, when known (an export keeps the one of the model the
    run was trained on); computed from `adapter.model` otherwise."""
    scales = adapter.scales()
    return {
        "format": COMPACT_FORMAT,
        "method": adapter.method.name,
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
    present = {t.name for t in find_targets(model, EVERY_LINEAR)}
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


def load_head(model: nn.Module, tensors: dict[str, torch.Tensor], head_modules: list[str], directory) -> None:
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


__all__ = ["adapter_metadata", "read_adapter_metadata", "check_fits", "check_base_model", "head_state", "load_head",
           "compact_tensors", "compact_metadata", "save_compact", "compact_alphas",
           "base_weight_norms", "base_model_fingerprint", "base_model_tensors", "FINGERPRINT_ALGORITHM",
           "head_module", "inner_model", "head_shapes"]
