"""Find the weight matrices an adapter targets: their names, layer index, kind and shape.

A target is a linear module (`nn.Linear`, or GPT-2's `Conv1D`) inside a transformer block,
listed in model order (`named_modules`). Its kind is `attention` when any part of its path after
the layer index names attention (BERT `attention.self.query`, `attention.output.dense`; GPT-2
`attn.c_attn`, `attn.c_proj`; Llama `self_attn.q_proj`), else `mlp` (BERT `intermediate.dense`,
`output.dense`; GPT-2 `mlp.c_fc`, `mlp.c_proj`; Llama `mlp.{gate,up,down}_proj`).

`every-linear` also takes the linear layers outside the blocks (the task head's: BERT's `bert.pooler.dense` and
`classifier`, DistilBERT's `pre_classifier` and `classifier`, RoBERTa's `classifier.dense` and `classifier.out_proj`),
as LoRA Without Regret's `inject_lora` wraps every `nn.Linear`. Their kind is `head`, and they count as the last
block's matrices (layer strategies give them its rank).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

# Default targets per model family (`config.model_type`). Encoders: the LoRA-XS paper's 4 matrices per layer
# (`output.dense` also matches `attention.output.dense`; both are wanted). Decoders: every projection.
_ENCODER = ["query", "value", "attention.output.dense", "output.dense"]
_DECODER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS = {
    "bert": _ENCODER, "roberta": _ENCODER, "xlm-roberta": _ENCODER, "electra": _ENCODER, "camembert": _ENCODER,
    "deberta-v2": ["query_proj", "value_proj", "attention.output.dense", "output.dense"],
    "distilbert": ["q_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "albert": ["query", "value", "attention.dense", "ffn", "ffn_output"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": _DECODER, "mistral": _DECODER, "qwen2": _DECODER, "gemma": _DECODER, "gemma2": _DECODER,
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}

# Numbered transformer blocks: BERT `layer.3.`, Llama `layers.3.`, GPT-2 `h.3.`, T5 `block.3.`, ALBERT's shared
# `albert_layer_groups.0.` (one group serves every depth).
_LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks|albert_layer_groups)\.(\d+)\.")
_HEAD_NAMES = ("classifier", "pre_classifier", "score", "lm_head", "qa_outputs", "pooler")
ALL_LINEAR = "all-linear"  # every linear layer inside the transformer blocks (PEFT's meaning: not the output layer)
EVERY_LINEAR = "every-linear"  # every linear layer of the model, the task head's included
HEAD_KIND = "head"


@dataclass(frozen=True)
class TargetMatrix:
    """One adapted weight matrix. `in_features`/`out_features` as in `nn.Linear` (W is out×in)."""

    name: str
    layer: int
    kind: str
    in_features: int
    out_features: int

    def to_dict(self) -> dict:
        return asdict(self)


def is_conv1d(module) -> bool:
    """GPT-2's Conv1D (W stored as in×out). transformers is imported here, not with this module: the configuration
    reads TargetMatrix and stays light to import."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def is_linear(module: nn.Module) -> bool:
    from torch import nn

    return isinstance(module, nn.Linear) or is_conv1d(module)


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or a GPT-2 Conv1D (whose weight is in×out)."""
    if is_conv1d(module):
        in_features, out_features = module.weight.shape
        return int(in_features), int(out_features)
    return int(module.in_features), int(module.out_features)


def fan_in_fan_out(model: nn.Module, names) -> bool:
    """Whether the modules `names` of `model` store W as in×out (GPT-2's Conv1D): PEFT's `fan_in_fan_out`."""
    return any(is_conv1d(model.get_submodule(n)) for n in names)


def weight_matrix(module: nn.Module, tensor=None):
    """`tensor` (default: the module's weight), shaped like the module's weight, as out×in: GPT-2's Conv1D
    stores W as in×out."""
    tensor = module.weight if tensor is None else tensor
    return tensor.T if is_conv1d(module) else tensor


def layer_index(name: str) -> int | None:
    match = _LAYER_RE.search(name)
    return int(match.group(1)) if match else None


def matrix_kind(name: str) -> str:
    """`attention` or `mlp`, from the part of the module path after the layer index."""
    match = _LAYER_RE.search(name)
    inner = name[match.end():] if match else name
    segments = inner.lower().split(".")[:-1]  # the last segment is the matrix itself (query, c_proj, ...)
    return "attention" if any("attn" in s or "attention" in s for s in segments) else "mlp"


def default_target_modules(model: nn.Module) -> list[str]:
    """The family's default targets; ConfigError naming the linear layers found for a family rankwise does not
    know, so the user can choose (--target_modules)."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    found = list(dict.fromkeys(_suffix(name) for name, module in model.named_modules()
                               if is_linear(module) and layer_index(name) is not None))
    raise ConfigError("target_modules", f"rankwise has no default targets for `{model_type or type(model).__name__}` "
                      f"models; their transformer blocks hold these linear layers: {', '.join(found) or 'none'}",
                      "Choose with --target_modules (e.g. the attention and MLP projections above), or use "
                      "--target_modules all-linear")


def _suffix(name: str) -> str:
    """A linear layer's name inside its block: `attention.self.query`, `mlp.down_proj`."""
    match = _LAYER_RE.search(name)
    return name[match.end():] if match else name


def _matches(name: str, suffixes: list[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def find_targets(model: nn.Module, target_modules: str | list[str] | None = None) -> list[TargetMatrix]:
    """Target matrices of `model` in model order.

    `target_modules`: comma-separated suffixes, a list of suffixes, `all-linear`, `every-linear`, or None for the
    architecture's default. Only linear modules inside numbered transformer blocks qualify, except with
    `every-linear` (see the module docstring).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if target_modules is None:
        target_modules = default_target_modules(model)
    keyword = target_modules in (ALL_LINEAR, EVERY_LINEAR)
    if isinstance(target_modules, str) and not keyword:
        target_modules = [s.strip() for s in target_modules.split(",") if s.strip()]

    targets = []
    for name, module in model.named_modules():
        if not is_linear(module):
            continue
        layer = layer_index(name)
        outside = layer is None or any(h in name.split(".") for h in _HEAD_NAMES)
        if (outside and target_modules != EVERY_LINEAR) or (not keyword and not _matches(name, target_modules)):
            continue
        in_features, out_features = linear_shape(module)
        kind = HEAD_KIND if outside else matrix_kind(name)
        targets.append(TargetMatrix(name, -1 if outside else layer, kind, in_features, out_features))

    if not any(t.kind != HEAD_KIND for t in targets):
        raise ConfigError("target_modules", f"`{target_modules}` matches no linear module inside the "
                          f"transformer blocks of this `{model_type or type(model).__name__}` model",
                          "Give module-name suffixes such as `query,value` or use `all-linear`")
    if not keyword:
        unmatched = [s for s in target_modules if not any(_matches(t.name, [s]) for t in targets)]
        if unmatched:
            raise ConfigError("target_modules", f"{', '.join(unmatched)} matches no module of this model",
                              "Check the names with `rankwise plan --target_modules all-linear`")
    return _heads_at_last_layer(targets)


def _heads_at_last_layer(targets: list[TargetMatrix]) -> list[TargetMatrix]:
    """Head matrices get the last block's layer index: they read its output."""
    last = num_layers(targets) - 1
    return [dataclasses.replace(t, layer=last) if t.kind == HEAD_KIND else t for t in targets]


def adapted_heads(head_modules: list[str], names: list[str]) -> list[str]:
    """The head modules holding one of the target matrices `names` (`every-linear`): adapters sit on their linear
    layers, so their own weights stay frozen instead of training as the head (PEFT cannot do both to one layer)."""
    return [h for h in head_modules if any(n == h or n.startswith(h + ".") for n in names)]


def num_layers(targets: list[TargetMatrix]) -> int:
    """Transformer blocks holding targets (head matrices count as the last block's)."""
    return max(t.layer for t in targets if t.kind != HEAD_KIND) + 1
