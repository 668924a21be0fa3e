"""Deterministic, human-readable run names from a config.

`cola_loraxs_learned_r5-30_a0.5-3_lr0.002_avg20_seed0`: task, label (when given), method, allocation,
the strategy's own knobs, then seed. Names are computed on the resolved config, so leaving a field
at its default and writing the default out give the same name. Every other setting that differs from
what the readable part implies goes into a short hash suffix, so two different configs never share a
directory and the same config always gets the same name (restarts find their finished runs).

The hash covers what differs from the defaults *as they were when names were introduced*: when a default
changes, its old value goes into NAME_DEFAULTS, so an existing run directory keeps meaning the config it was
trained with (a run that relied on the old default keeps its name; the new default gets a new one).
"""

from __future__ import annotations

import hashlib
import json
import re

from ..allocation import strategy_for
from ..config import RunConfig, applies, resolve_defaults
from ..config.run import OWNER
from ..config.trainer import CHANGES_RESULTS
from ..methods import get_method

# Settings that never change results, or that name the run itself.
NOT_IDENTITY = {"output_dir", "overwrite_output_dir", "quiet", "report_to", "data_dir", "save_model",
                "logging_steps", "save_strategy", "save_steps", "save_total_limit", "keep_checkpoints",
                "resume_from_checkpoint", "dataloader_num_workers", "gradient_checkpointing", "push_to_hub",
                "hub_model_id", "logging_dir", "save_safetensors",
                *(f for f, part in OWNER.items() if part.__name__ == "TrainerArguments" and f not in CHANGES_RESULTS)}

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")

# Defaults that changed since run names were introduced: field -> the value a name without it means.
NAME_DEFAULTS = {
    "rank_allocation_weights_init": "random",  # the default was `random` until the study's ablation (issue 9)
    "learned_scale": "rank_max",  # learned adapters had the scale α/rank_max until issue 24
    "allocation_batches": 8,  # gradient allocation measured 8 batches until issue 24's slice showed 4 suffice
    "allocation_head_steps": 0,  # added in issue 24: older config.json files lack it and measured at the head's init
}


def with_old_defaults(stored: dict) -> dict:
    """A stored config mapping (a run's config.json) with the fields it lacks because an older rankwise wrote
    it filled with the values they had then (NAME_DEFAULTS): what that run was trained with."""
    return {**{name: old for name, old in NAME_DEFAULTS.items() if name not in stored}, **stored}


def _g(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def label_slug(label: str) -> str:
    """`linear decay 16→4` -> `linear-decay-16-4`: safe in a directory name."""
    return _UNSAFE.sub("-", label).strip("-") or "label"


def readable_parts(cfg: RunConfig) -> tuple[list[str], set[str]]:
    """Name parts of a resolved config and the config fields they represent exactly."""
    parts = [cfg.task]
    used = {"task", "method", "seed"}
    if cfg.label:
        parts.append(label_slug(cfg.label))
        if label_slug(cfg.label) == cfg.label:  # otherwise the label also goes into the hash
            used.add("label")
    parts.append(cfg.method)
    method = get_method(cfg.method)
    strategy = strategy_for(method, cfg.allocation)
    own, named = strategy.name_parts(cfg)  # AdaLoRA names its own budget and starting rank; full, nothing
    parts += own
    used |= named
    if cfg.init == "eva":
        parts.append(f"eva{_g(cfg.eva_rho)}")
        used |= {"init", "eva_rho"}
    if cfg.learning_rate is not None and strategy.names_learning_rate:
        parts.append(f"lr{_g(cfg.learning_rate)}")
        used.add("learning_rate")
    parts.append(f"seed{cfg.seed}")
    return parts, used


def run_name(cfg: RunConfig) -> str:
    """The run's directory name. Depends only on settings that can change results (plus the label)."""
    resolved = resolve_defaults(cfg)
    parts, used = readable_parts(resolved)
    # A readable float that does not round-trip (0.00123456789 shown as 0.00123457) must not decide alone.
    used = {name for name in used
            if not (isinstance(getattr(resolved, name), float) and float(_g(getattr(resolved, name))) != getattr(resolved, name))}
    # What the readable part implies for every other field: the defaults resolved from the shown fields.
    implied = resolve_defaults(RunConfig(**{name: getattr(resolved, name) for name in used})).to_dict()
    for field, value in NAME_DEFAULTS.items():
        if applies(field, resolved.allocation, resolved.method):
            implied[field] = value
    rest = {name: value for name, value in resolved.to_dict().items()
            if name not in used and name not in NOT_IDENTITY and value != implied[name]}
    name = "_".join(str(p) for p in parts).replace("/", "-")
    if rest:
        digest = hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]
        name += f"_{digest}"
    return name
