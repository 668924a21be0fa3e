"""Adaptive learning-rate search (`search:` in a sweep file): the decision rule on synthetic objectives (extends the
grid until the best is interior, stops at the cap, halving drops the worst rates), bad `search:` blocks refused
with the key and the fix, and a whole search through `rankwise sweep` (fake training: scores are a function of the
learning rate) that is resumable, runs the reporting seeds at the chosen rate only, and records which runs served
the search and which the answer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import run_cli
from rankwise.errors import ConfigError
from rankwise.report.docs_blocks import search_block
from rankwise.runs.rundir import read_json
from rankwise.sweep.search import SearchSpec, decide, read_records, run_roles
from rankwise.sweep import parse_sweep


def spec(start=(0.005, 0.01, 0.02), factor=2.0, max_rates=6, seeds=(0, 1), halving=None) -> SearchSpec:
    return SearchSpec("learning_rate", tuple(start), factor, max_rates, tuple(seeds), halving)


def bowl(optimum: float, noise: float = 0.0):
    """A score peaked at `optimum` in log2(rate) (a parabola), with a seed-dependent offset."""
    return lambda rate, seed: -(math.log2(rate) - math.log2(optimum)) ** 2 + noise * ((seed * 7919) % 13 - 6) / 6


def run_search(search: SearchSpec, objective, greater=True) -> tuple:
    """Drive `decide` as the sweep does: run every needed (rate, seed), until a rate is chosen. Returns
    (decision, runs made, the rounds of needed runs)."""
    done: dict = {}
    rounds = []
    while True:
        decision = decide(search, lambda r, s: done.get((r, s)), greater)
        if decision.chosen is not None:
            return decision, sorted(done), rounds
        assert decision.needed and not set(decision.needed) & set(done)  # every round asks for new runs only
        rounds.append(decision.needed)
        done.update({(r, s): objective(r, s) for r, s in decision.needed})


def test_the_grid_extends_upwards_until_the_best_is_interior():
    decision, runs, rounds = run_search(spec(), bowl(0.08, noise=0.1))
    assert decision.chosen == 0.08 and decision.edge == "inside" and not decision.capped
    assert decision.rates == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16]
    assert len(runs) == 6 * 2  # every rate on both search seeds, nothing else
    assert rounds[0] == [(r, s) for r in (0.005, 0.01, 0.02) for s in (0, 1)]  # the start grid runs at once


def test_the_grid_extends_downwards_and_a_lower_is_better_metric_is_minimised():
    loss = lambda rate, seed: -bowl(0.001)(rate, seed)  # noqa: E731
    decision, runs, _ = run_search(spec(), loss, greater=False)
    assert decision.rates == [0.000625, 0.00125, 0.0025, 0.005, 0.01, 0.02]
    assert decision.chosen == 0.00125 and decision.edge == "inside"  # log2 distance 0.32, against 0.68 for 0.000625


def test_the_cap_stops_the_search_and_says_the_best_is_still_at_the_edge():
    decision, runs, _ = run_search(spec(max_rates=5), bowl(1.0))
    assert decision.rates == [0.005, 0.01, 0.02, 0.04, 0.08]
    assert decision.chosen == 0.08 and decision.edge == "highest" and decision.capped
    assert len(runs) == 10


def test_an_interior_start_needs_no_extension_and_ties_go_to_the_smaller_rate():
    decision, runs, rounds = run_search(spec(), bowl(0.01))
    assert decision.rates == [0.005, 0.01, 0.02] and decision.chosen == 0.01 and len(rounds) == 1
    # Equal scores everywhere: the smaller rate wins each time, so the grid walks down to the cap.
    flat = run_search(spec(start=(0.01, 0.02, 0.04)), lambda r, s: 1.0)[0]
    assert flat.rates == [0.00125, 0.0025, 0.005, 0.01, 0.02, 0.04]
    assert flat.chosen == 0.00125 and flat.edge == "lowest" and flat.capped


def test_halving_races_rates_over_the_search_seeds_and_drops_the_worst():
    objective = bowl(0.014)  # between 0.01 and 0.02, nearer 0.01
    full, full_runs, _ = run_search(spec(seeds=(0, 1, 2)), objective)
    halved, halved_runs, rounds = run_search(spec(seeds=(0, 1, 2), halving=2), objective)
    assert full.chosen == halved.chosen == 0.01
    assert rounds[0] == [(0.005, 0), (0.01, 0), (0.02, 0)]  # every rate on the first seed
    assert halved.dropped == {0.005: [0], 0.02: [0, 1]}  # 3 → 2 after seed 0, 2 → 1 after seed 1
    assert len(full_runs) == 9 and len(halved_runs) == 3 + 2 + 1


def test_with_halving_a_winner_at_the_edge_gets_its_neighbour_on_every_search_seed():
    # Seed 0: 0.02 is best at the top, so 0.04 joins; 0.02 and 0.04 go on. Seed 1: 0.04 wins (median 6.5), now at
    # the top of every rate tried, so 0.08 runs on both search seeds, and loses.
    scores = {0: {0.005: 1, 0.01: 3, 0.02: 5, 0.04: 4, 0.08: 2}, 1: {0.02: -10, 0.04: 9, 0.08: 2}}
    decision, runs, _ = run_search(spec(halving=2), lambda r, s: scores[s][r])
    assert decision.rates == [0.005, 0.01, 0.02, 0.04, 0.08]
    assert decision.chosen == 0.04 and decision.edge == "inside"
    assert decision.dropped == {0.005: [0], 0.01: [0]}
    assert runs == sorted([(r, 0) for r in (0.005, 0.01, 0.02, 0.04, 0.08)] + [(0.02, 1), (0.04, 1), (0.08, 1)])


def test_a_diverged_rate_counts_as_the_worst_score():
    objective = lambda r, s: -math.inf if r >= 0.02 else bowl(0.05)(r, s)  # noqa: E731
    decision, _, _ = run_search(spec(), objective)
    assert decision.chosen == 0.01 and decision.edge == "inside"


# ---------------------------------------------------------------------------------------------
# The search: block
# ---------------------------------------------------------------------------------------------

GOOD = {"field": "learning_rate", "start": [0.005, 0.01, 0.02], "factor": 2, "max_rates": 6, "seeds": [0, 1],
        "halving": 2}


@pytest.mark.parametrize("change, key, words", [
    ({"strat": [0.01, 0.02]}, "search", "unknown key `strat`. Did you mean `start`?"),
    ({"field": "rank"}, "search.field", "`rank` is not a learning-rate option"),
    ({"start": [0.01]}, "search.start", "at least two distinct positive numbers"),
    ({"start": [0.01, -0.02]}, "search.start", "at least two distinct positive numbers"),
    ({"factor": 1}, "search.factor", "greater than 1"),
    ({"max_rates": 2}, "search.max_rates", "at least the 3 start rates"),
    ({"seeds": [0, 0]}, "search.seeds", "distinct integers"),
    ({"seeds": [0, 2]}, "search.seeds", "seed 2 would both choose the rate and be reported"),
    ({"halving": 1}, "search.halving", "at least 2"),
    ({"halving": 2, "seeds": [0]}, "search.halving", "at least two search seeds"),
])
def test_a_bad_search_block_names_the_key_and_the_fix(change, key, words):
    with pytest.raises(ConfigError) as err:
        parse_sweep({"base": {"task": "stsb"}, "search": {**GOOD, **change}, "seeds": [2, 3]}, source="s.yaml")
    assert err.value.field == f"sweep s.yaml ({key})" and words in str(err.value)
    assert err.value.fix  # every message says what to do


@pytest.mark.parametrize("where", ["base", "grid", "variants"])
def test_the_searched_field_cannot_also_be_set_by_the_sweep(where):
    data = {"base": {"task": "stsb"}, "search": GOOD, "seeds": [2]}
    if where == "variants":
        data["variants"] = [{"label": "a", "learning_rate": 0.01}]
    else:
        data.setdefault(where, {})["learning_rate"] = [0.01, 0.02] if where == "grid" else 0.01
    with pytest.raises(ConfigError, match="`learning_rate` is searched, so the sweep must not set it"):
        parse_sweep(data, source="s.yaml")


def test_a_malformed_search_block_exits_2_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": {"task": "stsb"}, "search": {"start": "0.01"}, "seeds": [2],
                                    "output_dir": str(tmp_path / "runs")}))
    assert run_cli("sweep", path) == 2
    err = capsys.readouterr().err
    assert "search.start" in err and "e.g. start: [0.005, 0.01, 0.02]" in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# A whole search through `rankwise sweep`
# ---------------------------------------------------------------------------------------------

def fake_training(calls: list):
    """A stand-in for train.run_training that writes a finished run whose score peaks at lr 0.04 (rank 2) or 0.01
    (rank 4), so the rank-2 arm's grid must extend upwards."""
    def run(cfg):
        calls.append(Path(cfg.output_dir).name)
        optimum = 0.04 if cfg.rank == 2 else 0.01
        score = 0.8 - 0.01 * (math.log2(cfg.learning_rate) - math.log2(optimum)) ** 2 + 0.001 * cfg.seed
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "environment": {"rankwise": "test"}}))
        record = {"type": "eval", "step": 10, "epoch": 1, "eval_pearson": score}
        (out / "metrics.jsonl").write_text(json.dumps(record) + "\n")
        summary = {"status": "completed", "main_metric": "eval_pearson", "greater_is_better": True,
                   "best": record, "task": cfg.task, "seed": cfg.seed,
                   "trainable_parameters": {"adapter": 12 * cfg.rank ** 2, "head": 10, "allocation": 0}}
        (out / "summary.json").write_text(json.dumps(summary))
        return summary
    return run


def search_sweep(tmp_path: Path, model_dir, data_dir, **search) -> Path:
    """A sweep file: STS-B, LoRA-XS uniform ranks 2 and 4, one epoch, the rate searched on seeds 0-1 from
    0.005/0.01/0.02 (halving 2; `search` overrides), reporting seeds 2-4."""
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"task": "stsb", "model": str(model_dir), "data_dir": str(data_dir), "method": "loraxs",
                 "allocation": "uniform", "num_train_epochs": 1, "save_model": False, "quiet": True},
        "grid": {"rank": [2, 4]},
        "search": {"start": [0.005, 0.01, 0.02], "seeds": [0, 1], "halving": 2, **search},
        "seeds": [2, 3, 4], "output_dir": str(tmp_path / "runs")}))
    return path


def test_a_search_through_rankwise_sweep_is_resumable_and_records_each_runs_role(tiny_bert_dir, tiny_glue_dir,
                                                                                tmp_path, monkeypatch, capsys):
    import rankwise.train as train

    root = tmp_path / "runs"
    path = search_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir, factor=2, max_rates=6)
    calls: list = []
    monkeypatch.setattr(train, "run_training", fake_training(calls))

    assert run_cli("sweep", path, "--dry-run") == 0
    assert "next 0.005 on seed 0, 0.01 on seed 0, 0.02 on seed 0" in capsys.readouterr().out and not calls

    # Stop after the first round (the start grid on seed 0), as a killed sweep would, then start again.
    real = train.run_training
    budget = {"runs": 6}

    def limited(cfg):
        if budget["runs"] == 0:
            raise KeyboardInterrupt
        budget["runs"] -= 1
        return real(cfg)

    monkeypatch.setattr(train, "run_training", limited)
    assert run_cli("sweep", path) != 0  # interrupted in the second round
    first = list(calls)
    assert len(first) == 6
    monkeypatch.setattr(train, "run_training", real)
    assert run_cli("sweep", path) == 0
    assert not set(first) & set(calls[6:])  # nothing ran twice

    data = read_json(root / "search.json")
    arms = {a["arm"]: a for a in data["arms"]}
    r2, r4 = arms["loraxs uniform (rank 2)"], arms["loraxs uniform (rank 4)"]
    assert r2["chosen"] == 0.04 and r2["edge"] == "inside" and [r["rate"] for r in r2["rates"]] == [
        0.005, 0.01, 0.02, 0.04, 0.08]
    assert r4["chosen"] == 0.01 and r4["edge"] == "inside" and len(r4["rates"]) == 3
    # halving dropped one of the three start rates after seed 0 (0.005 and 0.02 tie there; the smaller stays)
    assert [r["dropped_after_seeds"] for r in r4["rates"]] == [None, None, [0]]
    for arm in (r2, r4):
        assert arm["status"] == "done" and len(arm["answer_runs"]) == 3
        assert all(f"lr{arm['chosen']:g}" in name for name in arm["answer_runs"])
    # every run made is either a search run or an answer run, once
    roles = run_roles(read_records([root]))
    assert sorted(roles) == sorted(calls) and len(calls) == len(set(calls))
    assert {roles[n]["search_role"] for n in r2["answer_runs"]} == {"answer"}
    # a third start runs nothing
    before = len(calls)
    assert run_cli("sweep", path) == 0 and len(calls) == before


def test_the_report_of_a_search_knows_which_runs_chose_and_which_answered(tiny_bert_dir, tiny_glue_dir, tmp_path,
                                                                          monkeypatch):
    import rankwise.train as train
    from rankwise.report import build_report

    root = tmp_path / "runs"
    path = search_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir)
    monkeypatch.setattr(train, "run_training", fake_training([]))
    assert run_cli("sweep", path) == 0
    out = tmp_path / "report"
    build_report([root], out)
    text = (out / "report.md").read_text()
    results = pd.read_csv(out / "results.csv")
    # rank 2: 0.005, 0.01, 0.02 on seed 0, + 0.04 and 0.08; 0.02 and 0.04 on seed 1 (halving keeps 3 of 5); answer 3
    # rank 4: 3 rates on seed 0, 2 on seed 1; answer 3
    counts = results.groupby(["rank", "search_role"]).size().to_dict()
    assert counts == {(2, "answer"): 3, (2, "search"): 8, (4, "answer"): 3, (4, "search"): 5}
    assert "**Runs**: 19 in all (13 for the search, 6 for the answer). A fixed grid of the same rates on all 5 seeds " \
           "would have been 40 runs" in text
    assert "search seeds 0, 1, answer seeds 2–4" in text
    # the one rule keeps the search's choice and reports its answer seeds only
    assert "| `LoRA-XS r2` | search | 0.005, 0.01, 0.02, 0.04, 0.08 | 0.04 |" in text
    answer = results[(results["rank"] == 2) & (results["search_role"] == "answer")]
    assert set(answer["learning_rate"]) == {0.04}
    # search_arms.csv holds the section's numbers, and a docs/results block written from it says the same
    arms = pd.read_csv(out / "search_arms.csv").set_index("arm")
    r2 = arms.loc["loraxs uniform (rank 2)"]
    assert (r2["chosen"], r2["edge"], r2["search_runs"], r2["answer_runs"], r2["fixed_grid_runs"]) == (
        0.04, "inside", 8, 3, 25)
    assert json.loads(r2["rates"]) == [0.005, 0.01, 0.02, 0.04, 0.08]
    scores = json.loads(r2["scores"])
    assert set(scores["0.04"]) == {"0", "1"} and scores["0.04"]["0"] == pytest.approx(
        results.query("rank == 2 and learning_rate == 0.04 and seed == 0")["score"].item())
    block = search_block(out)
    assert "| STS-B | `loraxs uniform (rank 2)` | 0.005, 0.01, 0.02, 0.04, 0.08 | 0.04 | inside | 8 | 3 |" in block
    assert block.endswith("Runs: 19 (13 search, 6 answer); the same rates on every seed as a fixed grid: 40.")


def test_only_selects_arms_of_a_search(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"task": "stsb", "model": str(tiny_bert_dir), "data_dir": str(tiny_glue_dir), "method": "loraxs",
                 "allocation": "uniform", "num_train_epochs": 1},
        "grid": {"rank": [2, 4]}, "search": {"start": [0.01, 0.02], "seeds": [0]}, "seeds": [1],
        "output_dir": str(tmp_path / "runs")}))
    assert run_cli("sweep", path, "--dry-run", "--only", "rank=4") == 0
    out = capsys.readouterr().out
    assert "--only: 1 of the 2 arms" in out and "(rank 4)" in out and "(rank 2)" not in out
    assert run_cli("sweep", path, "--dry-run", "--seeds", "0") == 2  # a search seed cannot also be reported
    assert "seed 0 would both choose the rate and be reported" in capsys.readouterr().err
