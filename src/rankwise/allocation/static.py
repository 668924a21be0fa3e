"""Static rank strategies: decided before training and realised exactly (checked by adapter shapes).

- uniform          rank r everywhere
- linear_decay     rank_first at layer 0 to rank_last at the last layer, rounded
- attention_heavy  rank_attention for attention matrices, rank_mlp for MLP matrices
- empirical        early layers (depth < 30%) 0.6·r, middle (< 70%) 1.2·r, late 1.0·r
- custom           a JSON/YAML file: {"layer_ranks": [...]} and/or {"module_ranks": {regex: r}}
Any of them can be rescaled to a parameter budget (`--match_budget`) for fair comparisons.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import yaml

from ..errors import ConfigError
from ..targets import TargetMatrix, num_layers
from .budget import RankCost, round_to_budget


def uniform(targets: list[TargetMatrix], rank: int) -> list[int]:
    return [rank] * len(targets)


def linear_decay(targets: list[TargetMatrix], rank_first: int, rank_last: int) -> list[int]:
    layers = num_layers(targets)
    span = max(layers - 1, 1)
    return [max(1, round(rank_first + (rank_last - rank_first) * t.layer / span)) for t in targets]


def attention_heavy(targets: list[TargetMatrix], rank_attention: int, rank_mlp: int) -> list[int]:
    return [rank_attention if t.kind == "attention" else rank_mlp for t in targets]


def empirical(targets: list[TargetMatrix], rank: int) -> list[int]:
    layers = num_layers(targets)

    def factor(layer: int) -> float:
        depth = layer / layers
        return 0.6 if depth < 0.3 else 1.2 if depth < 0.7 else 1.0

    return [max(1, round(factor(t.layer) * rank)) for t in targets]


def load_rank_file(path: str | Path) -> dict:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
    except (OSError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError("rank_file", f"cannot read `{path}`: {exc}") from None
    if not isinstance(data, dict) or not ({"layer_ranks", "module_ranks"} & set(data)):
        raise ConfigError("rank_file", f"`{path}` must be a mapping with `layer_ranks` (a list, one rank per layer) "
                          "or `module_ranks` (regex -> rank)")
    unknown = set(data) - {"layer_ranks", "module_ranks", "default"}
    if unknown:
        raise ConfigError("rank_file", f"`{path}` has unknown keys {sorted(unknown)}",
                          "Use `layer_ranks`, `module_ranks` and optionally `default`")
    return data


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("rank_file", f"{where} must be a positive integer, got {value!r}")
    return value


def custom(targets: list[TargetMatrix], spec: dict, default_rank: int, path: str = "rank file") -> list[int]:
    """Ranks from a custom spec. `module_ranks` patterns (re.search on the module name, first match in file
    order) override `layer_ranks`; matrices matched by neither get `default` (or --rank)."""
    layers = num_layers(targets)
    default = _positive_int(spec.get("default", default_rank), f"`default` in {path}")
    ranks = [default] * len(targets)
    if "layer_ranks" in spec:
        layer_ranks = spec["layer_ranks"]
        if not isinstance(layer_ranks, list) or len(layer_ranks) != layers:
            got = len(layer_ranks) if isinstance(layer_ranks, list) else type(layer_ranks).__name__
            raise ConfigError("rank_file", f"`layer_ranks` in {path} has {got} entries but the model has {layers} "
                              "layers", f"Give exactly {layers} ranks, one per layer")
        layer_ranks = [_positive_int(r, f"`layer_ranks[{i}]` in {path}") for i, r in enumerate(layer_ranks)]
        ranks = [layer_ranks[t.layer] for t in targets]
    module_ranks = spec.get("module_ranks") or {}
    if not isinstance(module_ranks, dict):
        raise ConfigError("rank_file", f"`module_ranks` in {path} must map regex patterns to ranks")
    compiled = []
    for pattern, rank in module_ranks.items():
        try:
            compiled.append((pattern, re.compile(pattern), _positive_int(rank, f"rank of `{pattern}` in {path}")))
        except re.error as exc:
            raise ConfigError("rank_file", f"pattern `{pattern}` in {path} is not a valid regex: {exc}") from None
    unmatched = [p for p, regex, _ in compiled if not any(regex.search(t.name) for t in targets)]
    if unmatched:
        raise ConfigError("rank_file", f"pattern(s) {', '.join(f'`{p}`' for p in unmatched)} in {path} match no "
                          "target matrix", "Check the names with `rankwise plan`")
    for i, t in enumerate(targets):
        ranks[i] = next((rank for _, regex, rank in compiled if regex.search(t.name)), ranks[i])
    return ranks


def rescale_to_budget(ranks: list[int], cost: RankCost, budget: float) -> list[int]:
    """Scale all ranks by one factor γ so Σ c_i(γ·r_i) = budget, then round within the budget.
    Keeps the strategy's shape while matching a reference parameter count."""
    base = torch.tensor(ranks, dtype=torch.float64)
    if cost.total(base / base.min()) > budget:
        raise ConfigError("budget", f"{budget:,.0f} parameters cannot give every matrix rank ≥ 1 with this "
                          "strategy's proportions", "Raise the budget or --rank")
    low, high = 0.0, 64.0
    for _ in range(200):  # bisection on γ; cost is increasing in γ
        mid = (low + high) / 2
        low, high = (mid, high) if cost.total(base * mid) < budget else (low, mid)
    scaled = (base * low).clamp_min(1.0)
    return round_to_budget(scaled, cost, budget, 1, int(torch.ceil(scaled.max()).item()) + 1)


def static_ranks(cfg, targets: list[TargetMatrix]) -> list[int]:
    """Ranks of a static strategy from a resolved RunConfig, rescaled when `match_budget` is set."""
    a = cfg.allocation
    if a == "uniform":
        ranks = uniform(targets, cfg.rank)
    elif a == "linear_decay":
        ranks = linear_decay(targets, cfg.rank_first, cfg.rank_last)
    elif a == "attention_heavy":
        ranks = attention_heavy(targets, cfg.rank_attention, cfg.rank_mlp)
    elif a == "empirical":
        ranks = empirical(targets, cfg.rank)
    elif a == "custom":
        ranks = custom(targets, load_rank_file(cfg.rank_file), cfg.rank, path=f"`{cfg.rank_file}`")
    else:
        raise ValueError(f"{a!r} is not a static strategy")
    if cfg.match_budget:
        cost = RankCost.for_method(cfg.method, targets)
        budget = cfg.budget if cfg.budget is not None else cost.total(cfg.rank)
        ranks = rescale_to_budget(ranks, cost, budget)
    return ranks
