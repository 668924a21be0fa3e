"""Saving and loading adapters.

- `lora`: PEFT's own files (adapter_config.json with rank_pattern/alpha_pattern, adapter_model.safetensors,
  head in modules_to_save), loadable with `PeftModel.from_pretrained`, plus `rankwise.json`.
- `loraxs`: `adapter_config.json` (format `rankwise-loraxs`: targets, ranks, alphas, scales) and
  `adapter_model.safetensors` with `<module>.lora_A/.lora_B/.lora_R` and `head.<param>` tensors.

`rankwise.json` / the loraxs config record `hard_ranks`; loading applies them as masks, so a learned
run's adapter (allocated at rank_max) gives the same outputs as at the end of training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..errors import RunDirError
from ..targets import TargetMatrix, find_targets
from . import AdapterSet, build_adapter, hard_keep

LORAXS_FORMAT = "rankwise-loraxs"
META_FILE = "rankwise.json"


def _head_state(model: nn.Module, head_modules: list[str]) -> dict[str, torch.Tensor]:
    return {f"head.{h}.{k}": v.detach().cpu().contiguous()
            for h in head_modules for k, v in model.get_submodule(h).state_dict().items()}


def adapter_metadata(adapter: AdapterSet, base_model: str, head_modules: list[str], hard_ranks: list[int]) -> dict:
    return {
        "format": LORAXS_FORMAT if adapter.method == "loraxs" else "rankwise-lora",
        "method": adapter.method,
        "base_model": base_model,
        "rankwise_version": __version__,
        "targets": [t.to_dict() for t in adapter.targets],
        "ranks": list(adapter.ranks),
        "hard_ranks": list(hard_ranks),
        "alphas": list(adapter.alphas),
        "scales": [m.scale for m in adapter.modules] if adapter.method == "loraxs" else None,
        "head_modules": list(head_modules),
    }


def save_adapter(adapter: AdapterSet, directory: str | Path, base_model: str, head_modules: list[str],
                 hard_ranks: list[int]) -> None:
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
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps(meta, indent=2))


def read_adapter_metadata(directory: str | Path) -> dict:
    directory = Path(directory)
    for name in (META_FILE, "adapter_config.json"):
        path = directory / name
        if path.is_file():
            meta = json.loads(path.read_text())
            if str(meta.get("format", "")).startswith("rankwise"):
                return meta
    raise RunDirError(f"{directory} is not a rankwise adapter (no {META_FILE} or rankwise adapter_config.json)")


def _check_targets(model: nn.Module, meta: dict, directory: Path) -> list[TargetMatrix]:
    saved = [TargetMatrix(**t) for t in meta["targets"]]
    names = {t.name for t in find_targets(model, "all-linear")}
    for t in saved:
        if t.name not in names:
            raise RunDirError(f"adapter {directory} targets `{t.name}`, which this model does not have: it was "
                              f"trained on `{meta.get('base_model')}`")
        module = model.get_submodule(t.name)
        from ..targets import linear_shape

        if linear_shape(module) != (t.in_features, t.out_features):
            raise RunDirError(f"adapter {directory}: `{t.name}` is {t.out_features}×{t.in_features} in the adapter "
                              f"but {linear_shape(module)[1]}×{linear_shape(module)[0]} in this model; it was trained "
                              f"on `{meta.get('base_model')}`")
    return saved


def load_adapter(model: nn.Module, directory: str | Path) -> AdapterSet:
    """Attach a saved rankwise adapter (and its head) to a freshly loaded base `model`. Hard ranks are applied
    as masks. Raises RunDirError when the adapter does not fit the model."""
    directory = Path(directory)
    meta = read_adapter_metadata(directory)
    targets = _check_targets(model, meta, directory)
    hard = meta["hard_ranks"]
    if meta["method"] == "lora":
        from peft import PeftModel

        from .lora import KeepHooks, lora_layers

        peft_model = PeftModel.from_pretrained(model, str(directory))
        layers = lora_layers(peft_model, [t.name for t in targets])
        adapter = AdapterSet("lora", peft_model, targets, meta["ranks"], meta["alphas"], layers, KeepHooks(layers))
    else:
        adapter = build_adapter(model, "loraxs", targets, meta["ranks"], meta["alphas"],
                                head_modules=meta["head_modules"])
        tensors = load_file(str(directory / "adapter_model.safetensors"))
        for target, module, scale in zip(targets, adapter.modules, meta["scales"]):
            module.lora_A.copy_(tensors[f"{target.name}.lora_A"])
            module.lora_B.copy_(tensors[f"{target.name}.lora_B"])
            with torch.no_grad():
                module.lora_R.copy_(tensors[f"{target.name}.lora_R"])
            module.scale = scale
        for head in meta["head_modules"]:
            prefix = f"head.{head}."
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            model.get_submodule(head).load_state_dict(state)
    if list(hard) != list(adapter.ranks):
        adapter.set_keep(hard_keep(hard, max(adapter.ranks)))
    return adapter
