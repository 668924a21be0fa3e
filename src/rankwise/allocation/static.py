"""Static rank strategies: decided before training and realised exactly (checked by adapter shapes).

- uniform          rank r everywhere
- linear_decay     rank_first at layer 0 to rank_last at the last layer, rounded
- attention_heavy  rank_attention for attention matrices, rank_mlp for MLP matrices
- empirical        early layers (depth < 30%) 0.6·r, middle (< 70%) 1.2·r, late 1.0·r
- custom           a JSON/YAML file: {"layer_ranks": [...]} and/or {"module_ranks": {regex: r}} (the placement
                   study's {"strategy_name": ..., "layer_ranks": [...]} too); --resample_layer_ranks stretches a
                   layer list of another length to the model's depth
Any of them can be rescaled to a parameter budget (`--match_budget`) for fair comparisons.

The functions take plain values (targets, ranks, costs); the strategy classes read their options from the run's
configuration and name the option that caused a problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..data.structured import read_structured_file
from ..errors import ConfigError
from ..options import option, positive_int, require, require_file
from ..targets import HEAD_KIND, TargetMatrix, num_layers
from .base import AllocationStrategy, PlanContext, StrategyPlan, register
from .budget import round_to_budget
from .options import BudgetOption, MatchBudgetOption, RankOption


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
    """The spec in a JSON/YAML rank file (`.json` read as JSON, `.yaml`/`.yml` as YAML, others as either)."""
    data, _ = read_structured_file(path, "rank_file")
    if not isinstance(data, dict) or not ({"layer_ranks", "module_ranks"} & set(data)):
        raise ConfigError("rank_file", f"`{path}` must be a mapping with `layer_ranks` (a list, one rank per layer) "
                          "or `module_ranks` (regex -> rank)")
    unknown = set(data) - {"layer_ranks", "module_ranks", "default", "strategy_name"}
    if unknown:
        raise ConfigError("rank_file", f"`{path}` has unknown keys {sorted(unknown)}",
                          "Use `layer_ranks`, `module_ranks` and optionally `default` (and `strategy_name`, a label)")
    return data


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("rank_file", f"{where} must be a positive integer, got {value!r}")
    return value


def resample_layer_ranks(layer_ranks: list[int], layers: int) -> list[int]:
    """A per-layer rank list stretched (or shrunk) to `layers` entries: layer j reads the list at position
    j·(len−1)/(layers−1), linearly interpolated and rounded (the first and last entries stay in place)."""
    if len(layer_ranks) == layers:
        return list(layer_ranks)
    if len(layer_ranks) == 1 or layers == 1:
        return [layer_ranks[0]] * layers
    out = []
    for j in range(layers):
        x = j * (len(layer_ranks) - 1) / (layers - 1)
        low = int(x)
        high = min(low + 1, len(layer_ranks) - 1)
        out.append(max(1, round(layer_ranks[low] + (layer_ranks[high] - layer_ranks[low]) * (x - low))))
    return out


def custom(targets: list[TargetMatrix], spec: dict, default_rank: int, path: str = "rank file",
           resample: bool = False) -> list[int]:
    """Ranks from a custom spec. `module_ranks` patterns (re.search on the module name, first match in file
    order) override `layer_ranks`; matrices matched by neither get `default` (or --rank). `resample`: a
    `layer_ranks` list of another length is stretched to the model's depth (`resample_layer_ranks`)."""
    layers = num_layers(targets)
    default = _positive_int(spec.get("default", default_rank), f"`default` in {path}")
    ranks = [default] * len(targets)
    if "layer_ranks" in spec:
        layer_ranks = spec["layer_ranks"]
        if not isinstance(layer_ranks, list) or not layer_ranks or (len(layer_ranks) != layers and not resample):
            got = len(layer_ranks) if isinstance(layer_ranks, list) else type(layer_ranks).__name__
            raise ConfigError("rank_file", f"`layer_ranks` in {path} has {got} entries but the model has {layers} "
                              "layers", f"Give exactly {layers} ranks, one per layer, or add --resample_layer_ranks "
                              f"to stretch the list to {layers} layers")
        layer_ranks = [_positive_int(r, f"`layer_ranks[{i}]` in {path}") for i, r in enumerate(layer_ranks)]
        layer_ranks = resample_layer_ranks(layer_ranks, layers)
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


def rescale_to_budget(ranks: list[int], cost, budget: float, field: str = "budget") -> list[int]:
    """Scale all ranks by one factor γ so Σ c_i(γ·r_i) = budget (`cost`: a RankCost), then round within the budget.
    Keeps the strategy's shape while matching a reference parameter count. `field` is the option that set
    the budget (`budget`, or `rank` for uniform rank's parameter count), named in errors."""
    import torch

    base = torch.tensor(ranks, dtype=torch.float64)
    if cost.total(base / base.min()) > budget:
        what = (f"({budget:,.0f} parameters)" if field == "budget" else
                f"sets the --match_budget budget to {budget:,.0f} parameters (uniform rank's), which")
        raise ConfigError(field, f"{what} cannot give every matrix rank ≥ 1 with this strategy's proportions "
                          f"(at least {cost.total(base / base.min()):,.0f} parameters needed)", f"Raise --{field}")
    low, high = 0.0, 64.0
    for _ in range(200):  # bisection on γ; cost is increasing in γ
        mid = (low + high) / 2
        low, high = (mid, high) if cost.total(base * mid) < budget else (low, mid)
    scaled = (base * low).clamp_min(1.0)
    return round_to_budget(scaled, cost, budget, 1, int(torch.ceil(scaled.max()).item()) + 1)


def _custom_sources(targets: list[TargetMatrix], spec: dict) -> list[str]:
    """Per matrix, the option that set its rank in `custom`: the rank file, or --rank for a matrix the file
    leaves to the default (no `default`, not in `layer_ranks`, no `module_ranks` pattern matches)."""
    if "default" in spec or "layer_ranks" in spec:
        return ["rank_file"] * len(targets)
    patterns = [re.compile(p) for p in (spec.get("module_ranks") or {})]
    return ["rank_file" if any(p.search(t.name) for p in patterns) else "rank" for t in targets]


# ---------------------------------------------------------------------------------------------
# The strategies
# ---------------------------------------------------------------------------------------------

@dataclass
class LinearDecayOptions:
    """`linear_decay`'s ranks at the first and last layer."""

    rank_first: Optional[int] = option(None, "`linear_decay`: rank at the first layer.", "allocation")
    rank_last: Optional[int] = option(None, "`linear_decay`: rank at the last layer.", "allocation")


@dataclass
class AttentionHeavyOptions:
    """`attention_heavy`'s ranks of attention and MLP matrices."""

    rank_attention: Optional[int] = option(None, "`attention_heavy`: rank of attention matrices.", "allocation")
    rank_mlp: Optional[int] = option(None, "`attention_heavy`: rank of MLP matrices.", "allocation")


@dataclass
class CustomOptions:
    """`custom`'s rank file."""

    rank_file: Optional[str] = option(None, "`custom`: JSON/YAML file with `layer_ranks: [...]` (one per layer) or "
                                     "`module_ranks: {regex: rank}`.", "allocation")
    resample_layer_ranks: bool = option(False, "`custom`: stretch a `layer_ranks` list of another length to the model's "
                                       "depth (linear interpolation, rounded) instead of refusing it.", "allocation")


class StaticStrategy(AllocationStrategy):
    """A strategy whose ranks follow from its options and the targets alone; `--match_budget` rescales them."""

    options = (RankOption, MatchBudgetOption, BudgetOption)

    def ranks(self, cfg, targets: list[TargetMatrix]) -> tuple[list[int], list[str]]:
        """(ranks, per matrix the option that set its rank)."""
        raise NotImplementedError

    def validate(self, cfg, given) -> None:
        require(cfg.rank >= 1, "rank", f"must be a positive integer, got {cfg.rank}")
        if cfg.budget is not None:
            require(cfg.budget >= 1, "budget", f"must be a positive integer, got {cfg.budget}")
            require(cfg.match_budget, "budget", "is only used with --match_budget",
                    "Add --match_budget to rescale the ranks to this budget")

    def plan(self, cfg, context: PlanContext) -> StrategyPlan:
        targets = context.targets
        ranks, sources = self.ranks(cfg, targets)
        if cfg.match_budget:
            cost = context.cost
            budget = cfg.budget if cfg.budget is not None else cost.total(cfg.rank)
            ranks = rescale_to_budget(ranks, cost, budget, "budget" if cfg.budget is not None else "rank")
            sources = ["budget" if cfg.budget is not None else "rank"] * len(targets)
        check_ranks_fit(cfg, targets, ranks, sources, context.method.ranks_beyond_shape)
        return StrategyPlan(ranks)

    def name_parts(self, cfg) -> tuple[list[str], set[str]]:
        return [self.name, f"r{cfg.rank}"], {"allocation", "rank"}




@register
class Uniform(StaticStrategy):
    name = "uniform"
    title = "uniform"
    summary = "rank --rank everywhere"
    baseline = same_rank_everywhere = True

    def ranks(self, cfg, targets):
        return uniform(targets, cfg.rank), ["rank"] * len(targets)

    def describe(self, row: dict, text) -> str:
        return f"r{text(row['rank'])}" + (" (matched budget)" if row.get("match_budget") else "")


@register
class LinearDecay(StaticStrategy):
    name = "linear_decay"
    title = "linear decay"
    summary = "--rank_first at the first layer to --rank_last at the last, rounded"
    options = (RankOption, LinearDecayOptions, MatchBudgetOption, BudgetOption)

    def validate(self, cfg, given) -> None:
        super().validate(cfg, given)
        positive_int(cfg, "rank_first", self.name)
        positive_int(cfg, "rank_last", self.name)

    def ranks(self, cfg, targets):
        source = "rank_first" if cfg.rank_first >= cfg.rank_last else "rank_last"
        return linear_decay(targets, cfg.rank_first, cfg.rank_last), [source] * len(targets)

    def name_parts(self, cfg):
        return [self.name, f"r{cfg.rank_first}-{cfg.rank_last}"], {"allocation", "rank_first", "rank_last"}

    def describe(self, row: dict, text) -> str:
        return f"{text(row['rank_first'])}→{text(row['rank_last'])}"


@register
class AttentionHeavy(StaticStrategy):
    name = "attention_heavy"
    title = "attention-heavy"
    summary = "--rank_attention for attention matrices, --rank_mlp for MLP matrices"
    options = (RankOption, AttentionHeavyOptions, MatchBudgetOption, BudgetOption)

    def validate(self, cfg, given) -> None:
        super().validate(cfg, given)
        positive_int(cfg, "rank_attention", self.name)
        positive_int(cfg, "rank_mlp", self.name)

    def ranks(self, cfg, targets):
        return (attention_heavy(targets, cfg.rank_attention, cfg.rank_mlp),
                ["rank_attention" if t.kind == "attention" else "rank_mlp" for t in targets])

    def name_parts(self, cfg):
        return ([self.name, f"att{cfg.rank_attention}-mlp{cfg.rank_mlp}"],
                {"allocation", "rank_attention", "rank_mlp"})

    def describe(self, row: dict, text) -> str:
        return f"att {text(row['rank_attention'])} / mlp {text(row['rank_mlp'])}"


@register
class Empirical(StaticStrategy):
    name = "empirical"
    title = "empirical"
    summary = "early layers (depth < 30%) 0.6·r, middle (< 70%) 1.2·r, late 1.0·r"

    def ranks(self, cfg, targets):
        return empirical(targets, cfg.rank), ["rank"] * len(targets)

    def describe(self, row: dict, text) -> str:
        return f"empirical, r {text(row['rank'])}"


@register
class Custom(StaticStrategy):
    name = "custom"
    title = "custom"
    summary = "ranks from a JSON/YAML file: layer_ranks (one per layer) or module_ranks (regex -> rank)"
    options = (RankOption, CustomOptions, MatchBudgetOption, BudgetOption)

    def validate(self, cfg, given) -> None:
        super().validate(cfg, given)
        fix = "Give a JSON/YAML file with `layer_ranks` or `module_ranks`"
        require(cfg.rank_file is not None, "rank_file", "is required by --allocation custom", fix)
        require_file("rank_file", cfg.rank_file, fix)
        for pattern in (load_rank_file(cfg.rank_file).get("module_ranks") or {}):  # each key says which matrices
            require(isinstance(pattern, str), "rank_file", f"`module_ranks` in `{cfg.rank_file}` has the key "
                    f"{pattern!r}, not a regex", "Write each key as a quoted regex on module names")
            require(pattern != "", "rank_file", f"`module_ranks` in `{cfg.rank_file}` has an empty pattern, which "
                    "matches every matrix", "Give `default: R` for the matrices no pattern names, or a pattern that "
                    "says which matrices it means")

    def ranks(self, cfg, targets):
        spec = load_rank_file(cfg.rank_file)
        ranks = custom(targets, spec, cfg.rank, path=f"`{cfg.rank_file}`", resample=cfg.resample_layer_ranks)
        return ranks, _custom_sources(targets, spec)

    def name_parts(self, cfg):
        return [self.name], {"allocation"}

    def describe(self, row: dict, text) -> str:
        return f"custom ({Path(str(row.get('rank_file'))).name})"


def check_ranks_fit(cfg, targets: list[TargetMatrix], ranks: list[int], sources: list[str],
                    ranks_beyond_shape: bool = False) -> None:
    """ConfigError for the first rank above its matrix's smaller dimension, naming the option that set it. A head
    matrix (`every-linear`) may have more where the method's factors allow it (`ranks_beyond_shape`: LoRA Without
    Regret put rank 128 on a 4-label classifier)."""
    for t, rank, source in zip(targets, ranks, sources):
        limit = min(t.in_features, t.out_features)
        if rank <= limit or (t.kind == HEAD_KIND and ranks_beyond_shape):
            continue
        if cfg.match_budget:
            budget = f"{cfg.budget:,} parameters" if source == "budget" else f"uniform rank {cfg.rank}'s parameters"
            what = f"({getattr(cfg, source)}) with --match_budget rescales the ranks to {budget}, which gives"
        elif source == "rank_file":
            what = f"`{cfg.rank_file}` gives"
        elif cfg.rank_file is not None and source == "rank":  # custom: the rank of matrices the file does not set
            what = f"({cfg.rank}), the rank of matrices `{cfg.rank_file}` does not set, gives"
        else:
            what = f"({getattr(cfg, source)}) gives"
        fix = "Lower it" if source == "rank_file" else f"Lower --{source}"
        raise ConfigError(source, f"{what} `{t.name}` rank {rank}, more than that matrix's smaller dimension "
                          f"({t.out_features}×{t.in_features}: at most rank {limit})",
                          f"{fix} so every matrix's rank is at most its smaller dimension")
