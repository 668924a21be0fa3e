"""Adaptive learning-rate search for sweeps: the `search:` block of a sweep file.

    search:
      field: learning_rate          # the learning-rate-like option searched (learning_rate, cls_learning_rate,
                                    # rank_allocation_lr); the sweep must not set it itself
      start: [0.005, 0.01, 0.02]    # the coarse grid every arm starts from
      factor: 2                     # geometric step when the best rate sits at an edge of the rates tried
      max_rates: 6                  # cap: at most this many rates per arm
      seeds: [0, 1]                 # search seeds: they choose the rate and are never reported
      halving: 2                    # optional successive halving: after each search seed keep the best 1/2
    seeds: [2, 3, 4, 5, 6]          # the sweep's seeds: run at the chosen rate, the answer the report reads

Per *arm* (a grid point × variant; every run option but the searched field and the seed) the search runs the
start rates on the search seeds, adds `rate × factor` (or `rate / factor`) while the best is the highest (lowest)
rate tried, until the best is interior or `max_rates` rates were tried, and then runs the sweep's seeds at the
chosen rate. With `halving: η` the rates race over the search seeds: all run on the first seed (the grid is
extended on that seed's scores), then only the best ⌈n/η⌉ go on to the next seed, and so on; a rate that wins
there at the edge of every rate tried gets its neighbour, run on every search seed. Rates are compared by the
median score over the seeds they share; ties go to the smaller rate; a diverged run counts as the worst score.

Why not Optuna or Ray Tune: their samplers and schedulers (Optuna's GridSampler and SuccessiveHalvingPruner, Ray
Tune's ASHA) decide asynchronously, in the order trials report, so with the three to six rates an arm has here a
restart or another worker count could choose a different rate, and they keep their state in a study database or
an experiment folder beside the runs. This search is a pure function of the finished runs on disk (`decide`): a
sweep killed and started again re-derives every decision and runs only what is missing, on the sweep's own
runners (local workers or Ray), and `search.json` in the output directory records the decisions for the report.
Halving races over seeds, not epochs: a run is never stopped half-way (a stopped run would leave a run
directory that is neither finished nor resumable as the same config), and the score a rate is judged by is the
one the report uses (best over epochs), not an early epoch's, which under a warm-up and decay schedule favours
large learning rates.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import FIELDS, RunConfig, applies, config_from_dict, prepare
from ..errors import ConfigError, RunDirError
from ..runs.naming import run_name
from ..runs.rundir import read_json, write_json_atomic
from ..runs.state import config_conflicts, inspect
from .points import point_values

SEARCH_KEYS = ("field", "start", "factor", "max_rates", "seeds", "halving")
LR_FIELDS = ("learning_rate", "cls_learning_rate", "rank_allocation_lr")
RECORD = "search.json"
WRITER = "rankwise sweep (search)"
EXAMPLE = ("e.g. search: {field: learning_rate, start: [0.005, 0.01, 0.02], factor: 2, max_rates: 6, "
           "seeds: [0, 1], halving: 2}")


@dataclass(frozen=True)
class SearchSpec:
    field: str
    start: tuple[float, ...]
    factor: float
    max_rates: int
    seeds: tuple[int, ...]
    halving: int | None  # η, or None: every rate runs every search seed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# The search: block
# ---------------------------------------------------------------------------------------------

def search_error(problem: str, fix: str, key: str | None = None, source: str = "sweep") -> ConfigError:
    """An error naming the sweep file and the key: `sweep FILE (search.start): must be ...`."""
    return ConfigError(f"sweep {source} (search{'.' + key if key else ''})", problem, fix)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rate_value(rate: float) -> float:
    """A rate as runs are named: 6 significant digits, so 0.005 × 2 × 2 is the 0.02 a grid would write."""
    return float(f"{rate:.6g}")


def parse_search(block, base: dict, grid: dict, variants: list[dict], seeds: list[int] | None,
                 source: str = "sweep") -> SearchSpec:
    """The search spec from a sweep file's `search:` mapping; ConfigError naming the key, the problem and the fix.
    `base`, `grid`, `variants` and `seeds` are the sweep's (the searched field must not be set there, and the
    search seeds must not be reported)."""
    def _error(problem: str, fix: str, key: str | None = None) -> ConfigError:
        return search_error(problem, fix, key, source)

    if not isinstance(block, dict) or not block:
        raise _error(f"must be a mapping, got {block!r}", EXAMPLE)
    for key in block:
        if key not in SEARCH_KEYS:
            close = difflib.get_close_matches(str(key), SEARCH_KEYS, n=1)
            raise _error(f"unknown key `{key}`", (f"Did you mean `{close[0]}`? " if close else "")
                         + f"Keys: {', '.join(SEARCH_KEYS)}")
    name = block.get("field", "learning_rate")
    if name not in LR_FIELDS:
        raise _error(f"`{name}` is not a learning-rate option", f"Use one of: {', '.join(LR_FIELDS)}", "field")
    for where, values in (("base", base), ("grid", grid)):
        if name in values:
            raise _error(f"`{name}` is searched, so the sweep must not set it (it is in `{where}:`)",
                         f"Remove `{name}` from `{where}:`; the search sets it per arm", "field")
    for i, variant in enumerate(variants, 1):
        if name in variant:
            raise _error(f"`{name}` is searched, so the sweep must not set it (variant {i} does)",
                         f"Remove `{name}` from variant {i}", "field")
    start = block.get("start")
    if (not isinstance(start, list) or len(start) < 2 or not all(_number(v) and v > 0 for v in start)
            or len({rate_value(v) for v in start}) != len(start)):
        raise _error(f"must be a list of at least two distinct positive numbers, got {start!r}",
                     "e.g. start: [0.005, 0.01, 0.02]", "start")
    factor = block.get("factor", 2)
    if not _number(factor) or factor <= 1:
        raise _error(f"must be a number greater than 1, got {factor!r}", "e.g. factor: 2 (one octave per step)",
                     "factor")
    max_rates = block.get("max_rates", len(start) + 3)
    if not isinstance(max_rates, int) or isinstance(max_rates, bool) or max_rates < len(start):
        raise _error(f"must be an integer of at least the {len(start)} start rates, got {max_rates!r}",
                     f"e.g. max_rates: {len(start) + 3}", "max_rates")
    search_seeds = block.get("seeds", [0, 1])
    if (not isinstance(search_seeds, list) or not search_seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in search_seeds)
            or len(set(search_seeds)) != len(search_seeds)):
        raise _error(f"must be a list of distinct integers, got {search_seeds!r}", "e.g. seeds: [0, 1]", "seeds")
    shared = sorted(set(search_seeds) & set(seeds or []))
    if shared:
        raise _error(f"seed{'s' if len(shared) > 1 else ''} {', '.join(map(str, shared))} would both choose the "
                     "rate and be reported", "Give the search other seeds than the sweep's `seeds:` (e.g. search "
                     "seeds [0, 1], seeds [2, 3, 4, 5, 6])", "seeds")
    halving = block.get("halving")
    if halving in (None, False, 0):
        halving = None
    elif not isinstance(halving, int) or isinstance(halving, bool) or halving < 2:
        raise _error(f"must be an integer of at least 2 (keep the best 1/η rates after each search seed), or "
                     f"false, got {halving!r}", "e.g. halving: 2", "halving")
    elif len(search_seeds) < 2:
        raise _error("needs at least two search seeds (it drops rates after the first)",
                     "Add a search seed (seeds: [0, 1]) or drop `halving`", "halving")
    return SearchSpec(name, tuple(sorted(rate_value(v) for v in start)), float(factor), max_rates,
                      tuple(search_seeds), halving)


# ---------------------------------------------------------------------------------------------
# Decisions: a pure function of the scores finished so far
# ---------------------------------------------------------------------------------------------

class Blocked(Exception):
    """A run the search needs failed: the arm cannot go on until it is fixed and the sweep started again."""


@dataclass
class Decision:
    """Where one arm's search stands. `needed`: the (rate, seed) runs whose scores decide the next step (empty once
    `chosen` is set). `rates`: every rate tried or about to be, ascending. `dropped`: rate → the search seeds it
    ran before halving dropped it. `edge`: where the best rate so far sits among `rates` (`inside`, `lowest`,
    `highest`); `capped`: it sits at an edge because `max_rates` rates were tried."""

    rates: list[float]
    needed: list[tuple[float, int]] = dataclass_field(default_factory=list)
    chosen: float | None = None
    edge: str | None = None
    capped: bool = False
    dropped: dict[float, list[int]] = dataclass_field(default_factory=dict)
    steps: list[str] = dataclass_field(default_factory=list)


def grid_edge(rate: float, rates: list[float]) -> str:
    """`only`, `lowest`, `highest` or `inside`: where `rate` sits among the rates tried."""
    if len(rates) == 1:
        return "only"
    return "lowest" if rate == min(rates) else "highest" if rate == max(rates) else "inside"


def decide(spec: SearchSpec, score: Callable[[float, int], float | None], greater_is_better: bool = True
           ) -> Decision:
    """Replay the search from its start on the scores there are. `score(rate, seed)`: the run's score, None when it
    has not run (raise `Blocked` for a run that failed). Returns the runs needed next, or the chosen rate."""
    replay = _Replay(spec, score, 1.0 if greater_is_better else -1.0)
    return replay.first_rung() or replay.halving() or replay.final()


class _Replay:
    """One replay of a search over the scores there are: each stage returns the decision when it needs runs (or,
    the last one, chooses), None when the next stage goes on."""

    def __init__(self, spec: SearchSpec, score: Callable[[float, int], float | None], sign: float):
        self.spec, self.score, self.sign = spec, score, sign
        self.rates, self.seeds = sorted(spec.start), list(spec.seeds)
        self.alive: list[float] = []
        self.decision = Decision(self.rates)

    def value(self, rate: float, on: list[int]) -> float:
        return float(np.median([self.sign * self.score(rate, s) for s in on]))

    def best_of(self, candidates: list[float], on: list[int]) -> float:
        return max(sorted(candidates), key=lambda r: self.value(r, on))  # max keeps the first (smallest) of equals

    def needs(self, candidates: list[float], on: list[int]) -> Decision | None:
        self.decision.needed = [(r, s) for r in sorted(candidates) for s in on if self.score(r, s) is None]
        return self.decision if self.decision.needed else None

    def extend(self, best: float, side: str) -> float:
        new = rate_value(best * self.spec.factor if side == "highest" else best / self.spec.factor)
        self.decision.steps.append(f"best {best:g} is the {side} rate tried: add {new:g}")
        self.rates.append(new)
        self.rates.sort()
        return new

    def first_rung(self) -> Decision | None:
        """The first search seed with halving, else every search seed: extend until its best is inside the rates
        tried or the cap is reached."""
        first = self.seeds[:1] if self.spec.halving else self.seeds
        while True:
            if self.needs(self.rates, first):
                return self.decision
            best = self.best_of(self.rates, first)
            side = grid_edge(best, self.rates)
            if side == "inside" or len(self.rates) >= self.spec.max_rates:
                self.alive = list(self.rates)
                return None
            self.extend(best, side)

    def halving(self) -> Decision | None:
        """Successive halving over the other search seeds."""
        seeds = self.seeds
        for j in range(1, len(seeds) if self.spec.halving else 0):
            keep = max(1, math.ceil(len(self.alive) / self.spec.halving))
            ranked = sorted(self.alive, key=lambda r: (-self.value(r, seeds[:j]), r))
            for r in ranked[keep:]:
                self.decision.dropped[r] = seeds[:j]
            if ranked[keep:]:
                self.decision.steps.append(
                    f"after seed{'s' if j > 1 else ''} {', '.join(map(str, seeds[:j]))}: keep "
                    + ", ".join(f"{r:g}" for r in sorted(ranked[:keep])) + "; drop "
                    + ", ".join(f"{r:g}" for r in sorted(ranked[keep:])))
            self.alive = sorted(ranked[:keep])
            if self.needs(self.alive, seeds[j:j + 1]):
                return self.decision
        return None

    def final(self) -> Decision:
        """The best over every search seed; while it is at the edge of every rate tried, its neighbour runs on
        every search seed."""
        while True:
            best = self.best_of(self.alive, self.seeds)
            side = grid_edge(best, self.rates)
            if side == "inside" or len(self.rates) >= self.spec.max_rates:
                d = self.decision
                d.chosen, d.edge, d.capped = best, side, side != "inside"
                d.steps.append(f"chosen {best:g} ({side}" + (f", cap of {self.spec.max_rates} rates reached"
                                                               if side != "inside" else "") + ")")
                return d
            self.alive.append(self.extend(best, side))
            if self.needs(self.alive[-1:], self.seeds):
                return self.decision


# ---------------------------------------------------------------------------------------------
# Arms and their runs
# ---------------------------------------------------------------------------------------------

@dataclass
class Arm:
    name: str
    values: dict  # run options, without the searched field and the seed


def search_arms(spec: dict) -> list[Arm]:
    """One arm per grid point × variant, named by its label and the grid values that vary."""
    search: SearchSpec = spec["search"]
    shared = sorted(set(search.seeds) & set(spec["seeds"]))
    if shared:  # --seeds can bring them together after the file was checked
        raise search_error(f"seed{'s' if len(shared) > 1 else ''} {', '.join(map(str, shared))} would both choose "
                           "the rate and be reported", "Give --seeds other seeds than the search's", "seeds",
                           spec.get("source", "sweep"))
    if search.field in spec["base"]:  # --set can put it there after the file was checked
        raise search_error(f"`{search.field}` is searched, so it cannot be set for every run (--set or base)",
                           f"Drop --set {search.field}=...", "field", spec.get("source", "sweep"))
    varying = [k for k, v in spec["grid"].items() if len(v) > 1]
    arms = []
    for values in point_values(spec):
        allocation = values.get("allocation", FIELDS["allocation"].default)
        method = values.get("method", FIELDS["method"].default)
        if not applies(search.field, allocation, method, values.get("task")):
            raise search_error(f"`{search.field}` does not apply to the arm {_describe(values, varying)} "
                               f"(allocation {allocation}, method {method})",
                               "Search learning_rate, or give that arm its own sweep", "field",
                               spec.get("source", "sweep"))
        arms.append(Arm(_describe(values, varying), values))
    for name in {a.name for a in arms}:  # one label on several variants: add the options that tell them apart
        same = [a for a in arms if a.name == name]
        keys = sorted({k for a in same for k in a.values})
        differ = [k for k in keys if len({repr(a.values.get(k)) for a in same}) > 1]
        for k, arm in enumerate(same, 1):
            parts = [f"{key} {arm.values[key]}" for key in differ if key in arm.values]
            arm.name = f"{name} ({', '.join(parts)})" if len(same) > 1 and parts else \
                f"{name} #{k}" if len(same) > 1 else name
    return arms


def _describe(values: dict, varying: list[str]) -> str:
    head = values.get("label") or " ".join(str(values[k]) for k in ("method", "allocation") if k in values) or "arm"
    parts = [f"{k} {values[k]}" for k in varying if k in values]
    return head + (f" ({', '.join(parts)})" if parts else "")


def run_config(spec: dict, arm: Arm, rate: float, seed: int, root: Path) -> RunConfig:
    """The validated config of one run of `arm` at `rate` and `seed`, in `root/<run name>`."""
    source = spec.get("source", "sweep")
    cfg = config_from_dict({**arm.values, spec["search"].field: rate, "seed": seed}, source=source)
    name = run_name(cfg)
    cfg.output_dir = str(root / name)
    try:
        return prepare(cfg)
    except ConfigError as exc:
        raise ConfigError(exc.field, f"{exc.problem} (in {source}, run {name})", exc.fix) from None


def known_runs(spec: dict) -> list[dict]:
    """The option dicts (with the searched rate and the seed) of the runs every search makes before it decides
    anything: each arm's start rates on the first rung's seeds. `sweep.expand` validates these."""
    search: SearchSpec = spec["search"]
    first = search.seeds[:1] if search.halving else search.seeds
    return [{**arm.values, search.field: rate, "seed": seed}
            for arm in search_arms(spec) for rate in search.start for seed in first]


class _Scores:
    """Scores of an arm's runs, read from their run directories (cached for one round)."""

    def __init__(self, spec: dict, arm: Arm, root: Path, failed: dict[str, str]):
        self.spec, self.arm, self.root, self.failed = spec, arm, root, failed
        self.cache: dict[tuple[float, int], tuple[RunConfig, dict | None]] = {}
        self.greater_is_better = True
        self.metric = None

    def run(self, rate: float, seed: int) -> tuple[RunConfig, dict | None]:
        key = (rate, seed)
        if key not in self.cache:
            cfg = run_config(self.spec, self.arm, rate, seed, self.root)
            state = inspect(cfg.output_dir)
            summary = state.summary if state.kind == "finished" and not config_conflicts(cfg) else None
            self.cache[key] = (cfg, summary)
        return self.cache[key]

    def __call__(self, rate: float, seed: int) -> float | None:
        cfg, summary = self.run(rate, seed)
        name = Path(cfg.output_dir).name
        if summary is None:
            if name in self.failed:
                raise Blocked(f"run {name} failed: {self.failed[name]}")
            return None
        self.metric = summary.get("main_metric")
        self.greater_is_better = bool(summary.get("greater_is_better", True))
        best = (summary.get("best") or {}).get(self.metric)
        if summary.get("status") != "completed" or best is None:  # diverged: the worst score there is
            return -math.inf if self.greater_is_better else math.inf
        return float(best)


@dataclass
class ArmState:
    arm: Arm
    decision: Decision | None
    scores: _Scores
    blocked: str | None = None

    def answer_configs(self) -> list[RunConfig]:
        if self.decision is None or self.decision.chosen is None:
            return []
        return [self.scores.run(self.decision.chosen, seed)[0] for seed in self.scores.spec["seeds"]]

    def needed_configs(self) -> list[RunConfig]:
        return [self.scores.run(rate, seed)[0] for rate, seed in (self.decision.needed if self.decision else [])]


def arm_state(spec: dict, arm: Arm, root: Path, failed: dict[str, str]) -> ArmState:
    scores = _Scores(spec, arm, root, failed)
    try:
        # The metric's direction comes from the first finished run; decide() is replayed once it is known.
        decision = decide(spec["search"], scores, True)
        if not scores.greater_is_better:
            decision = decide(spec["search"], scores, False)
    except Blocked as exc:
        return ArmState(arm, None, scores, str(exc))
    return ArmState(arm, decision, scores)


# ---------------------------------------------------------------------------------------------
# The record the report reads
# ---------------------------------------------------------------------------------------------

def record(spec: dict, states: list[ArmState]) -> dict:
    """search.json: the spec, and per arm every rate's scores by seed, what halving dropped, the chosen rate, where
    it sits, and which runs served the search and which the answer (finished runs only)."""
    search: SearchSpec = spec["search"]
    arms = []
    for state in states:
        scores, decision = state.scores, state.decision
        rates: dict[float, dict] = {}
        search_runs = []
        for (rate, seed), (cfg, summary) in sorted(scores.cache.items()):
            if seed not in search.seeds:
                continue
            entry = rates.setdefault(rate, {"rate": rate, "scores": {}, "dropped_after_seeds": None})
            if summary is not None:
                entry["scores"][str(seed)] = scores(rate, seed)
                search_runs.append(Path(cfg.output_dir).name)
        if decision is not None:
            for rate, seeds in decision.dropped.items():
                rates[rate]["dropped_after_seeds"] = seeds
        answer = [Path(c.output_dir).name for c in state.answer_configs()
                  if scores.run(decision.chosen, c.seed)[1] is not None]
        if state.blocked:
            status = "failed: " + state.blocked
        elif decision.chosen is None:
            status = "searching"
        else:
            status = "done" if len(answer) == len(spec["seeds"]) else "answering"
        arms.append({"arm": state.arm.name, "options": state.arm.values, "metric": scores.metric,
                     "greater_is_better": scores.greater_is_better, "status": status,
                     "rates": [rates[r] for r in sorted(rates)],
                     "chosen": decision.chosen if decision else None, "edge": decision.edge if decision else None,
                     "capped": decision.capped if decision else False, "steps": decision.steps if decision else [],
                     "search_runs": search_runs, "answer_runs": answer})
    return {"written_by": WRITER, "source": spec.get("source"), "search": search.to_dict(),
            "report_seeds": list(spec["seeds"]), "arms": arms}


def check_record_path(root: Path, spec: dict) -> Path:
    """`root/search.json`, refusing a file rankwise did not write or one of another sweep file."""
    path = root / RECORD
    if path.exists():
        try:
            old = read_json(path)
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict) or old.get("written_by") != WRITER:
            raise RunDirError(f"`{path}` exists and was not written by a rankwise search; move it away or give the "
                              "sweep another output_dir")
        if Path(str(old.get("source"))).name != Path(str(spec.get("source"))).name:
            raise RunDirError(f"`{path}` records the search of another sweep file ({old.get('source')}); give this "
                              "sweep its own output_dir")
    return path


def read_records(paths: list[str | Path]) -> list[dict]:
    """Every search.json directly in `paths` or in folders below them that are not run directories."""
    found = []
    for raw in paths:
        path = Path(raw)
        candidates = [path / RECORD] if path.is_dir() else []
        if path.is_dir():
            candidates += sorted(p for p in path.rglob(RECORD) if p != path / RECORD)
        for file in candidates:
            try:
                data = read_json(file)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("written_by") == WRITER and data not in found:
                found.append(data)
    return found


def run_roles(records: list[dict]) -> dict[str, dict]:
    """Run name → {"search_role": "search" | "answer", "search_arm", "search_chosen"} from search records."""
    roles = {}
    for data in records:
        for arm in data.get("arms", []):
            for name in arm.get("search_runs", []):
                roles[name] = {"search_role": "search", "search_arm": arm["arm"], "search_chosen": arm.get("chosen")}
            for name in arm.get("answer_runs", []):
                roles[name] = {"search_role": "answer", "search_arm": arm["arm"], "search_chosen": arm.get("chosen")}
    return roles


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def describe(spec: dict, arms: list[Arm], root: Path) -> list[str]:
    """One line per arm for `--dry-run`: where its search stands and what it would run next."""
    lines = []
    for state in (arm_state(spec, arm, root, {}) for arm in arms):
        lines.append(f"  {state.arm.name}: " + _state_text(state))
    return lines


def _state_text(state: ArmState) -> str:
    decision = state.decision
    if state.blocked:
        return state.blocked
    if decision.chosen is None:
        need = decision.needed
        return (f"searching {state.scores.spec['search'].field}: next " + ", ".join(f"{r:g} on seed {s}" for r, s in need))
    answers = state.answer_configs()
    done = sum(1 for c in answers if state.scores.run(decision.chosen, c.seed)[1] is not None)
    return (f"chosen {decision.chosen:g} ({decision.edge}{', at the cap' if decision.capped else ''}); answer runs "
            f"{done} of {len(answers)} finished")


def run_search(spec: dict, arms: list[Arm], root: Path, run_batch: Callable[[list[RunConfig]], list[dict]],
               echo: Callable[[str], None] = print) -> dict:
    """Run the search of every arm in rounds: each round runs, through `run_batch` (the sweep's runner), every run
    any arm needs next and the answer runs of every arm that has chosen. Returns the search record (also written
    to `root/search.json` after every round)."""
    path = check_record_path(root, spec)
    failed: dict[str, str] = {}
    round_number = 0
    while True:
        states = [arm_state(spec, arm, root, failed) for arm in arms]
        data = record(spec, states)
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)
        todo, seen = [], set()
        for state in states:
            for cfg in state.needed_configs() + state.answer_configs():
                name = Path(cfg.output_dir).name
                if name in seen or name in failed or state.scores.run(*_rate_seed(spec, cfg))[1] is not None:
                    continue
                seen.add(name)
                todo.append(cfg)
        if not todo:
            break
        round_number += 1
        echo(f"search round {round_number}: {len(todo)} runs ("
             + "; ".join(f"{s.arm.name}: {_state_text(s)}" for s in states if s.decision is not None
                         and (s.decision.needed or s.decision.chosen is not None)) + ")")
        for cfg, result in zip(todo, run_batch(todo)):
            if result["status"] == "failed":
                failed[Path(cfg.output_dir).name] = result.get("message") or "failed"
    for arm in data["arms"]:
        echo(f"  {arm['arm']}: {arm['status']}" + (f", chosen {arm['chosen']:g} ({arm['edge']}"
                                                   + (", cap reached" if arm["capped"] else "") + ")"
                                                   if arm["chosen"] is not None else "")
             + f"; {len(arm['search_runs'])} search runs, {len(arm['answer_runs'])} answer runs")
    return data


def _rate_seed(spec: dict, cfg: RunConfig) -> tuple[float, int]:
    return getattr(cfg, spec["search"].field), cfg.seed


__all__ = ["SearchSpec", "parse_search", "decide", "Decision", "grid_edge", "search_arms", "known_runs", "run_search",
           "describe", "read_records", "run_roles", "LR_FIELDS", "RECORD"]
