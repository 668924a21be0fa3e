"""Learning-rate curves: what makes runs points of one LR curve, and how a learning rate is written.

Shared by the LR-ratio study's recipe (rankwise.studies.lr_ratio, which writes results files keyed by a curve's
id) and its report section (rankwise.report.lr_ratio, which groups run directories into curves): both must agree,
and the report may not import a study recipe.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from .config import FIELDS, RunConfig
from .methods import get_method
from .runs.naming import NOT_IDENTITY


def format_lr(lr: float, digits: int = 6) -> str:
    """The results-file key of a learning rate: `1e-4`, `1.78e-4`, `3e-5` (float() reads it back exactly
    for up to `digits` significant digits; fewer digits for display)."""
    mantissa, exponent = f"{lr:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def adapter_scale(policy: str, alpha: float, rank: int) -> float:
    """The multiplier of B·A: α/r, or α/√r for rsLoRA."""
    return alpha / math.sqrt(rank) if policy == "rslora" else alpha / rank


def head_lr_mode(cfg: RunConfig) -> str | float:
    """`tied` when the head trains at the swept learning rate, else the fixed head learning rate."""
    return "tied" if cfg.cls_learning_rate == cfg.learning_rate else cfg.cls_learning_rate


def curve_identity(cfg: RunConfig) -> dict[str, Any]:
    """What makes two runs points of the same LR curve: every result-changing setting except the
    learning rate (and the head's learning rate when it is tied to it)."""
    skip = set(NOT_IDENTITY) | {"output_dir", "learning_rate", "cls_learning_rate", "label"}
    if not get_method(cfg.method).trains_adapter:
        skip |= {"rank", "lora_alpha", "alpha_policy", "lora_dropout", "target_modules"}
    identity = {name: value for name, value in cfg.to_dict().items()
                if name not in skip and value != FIELDS[name].default}
    identity["head_lr"] = head_lr_mode(cfg)
    return identity


def identity_id(identity: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
