"""`rankwise report --study`: learning-rate selection, seed-paired tests, Holm's correction, the section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rankwise.report import build_report
from rankwise.report.aggregate import load_runs
from rankwise.report.stats import holm, paired_comparison, select_learning_rates, verdict
from rankwise.report.study import arm_names, default_baseline
from test_report import fake_run


def test_paired_comparison_matches_the_textbook_formulas():
    base = {s: v for s, v in enumerate([50.0, 52.0, 49.0, 51.0, 50.5])}
    diffs = np.array([3.0, 1.5, 4.0, 2.0, 2.5])
    arm = {s: base[s] + d for s, d in enumerate(diffs)}
    arm[7] = 99.0  # a seed the baseline lacks is not paired
    c = paired_comparison(arm, base)
    assert c["n"] == 5
    assert c["mean_diff"] == pytest.approx(diffs.mean(), abs=1e-12)
    t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(5))
    assert c["p_t"] == pytest.approx(2 * stats.t.sf(abs(t), df=4), rel=1e-9)
    assert c["p_wilcoxon"] == pytest.approx(2 / 2 ** 5)  # all 5 differences positive: the exact minimum
    assert diffs.min() <= c["ci_low"] < diffs.mean() < c["ci_high"] <= diffs.max()
    assert paired_comparison(arm, base) == c  # the bootstrap is seeded


def test_paired_comparison_degenerate_cases():
    same = paired_comparison({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert same["mean_diff"] == 0 and math.isnan(same["p_t"]) and math.isnan(same["p_wilcoxon"])
    constant = paired_comparison({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert constant["mean_diff"] == pytest.approx(1.0) and math.isnan(constant["p_t"])
    one = paired_comparison({0: 2.0}, {0: 1.0})
    assert one["n"] == 1 and one["mean_diff"] == 1.0 and math.isnan(one["ci_low"])


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_verdict_needs_holm_significance_and_an_interval_excluding_zero():
    c = {"mean_diff": 2.0, "ci_low": 0.5, "ci_high": 3.0, "p_holm": 0.01}
    assert verdict(c, True) == "better" and verdict(c, False) == "worse"
    assert verdict({**c, "p_holm": 0.2}, True) == "no significant difference"
    assert verdict({**c, "ci_low": -0.1}, True) == "no significant difference"


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory):
    """Uniform r20 (the budget match) and r25 and learned avg20 at two learning rates each, 5 seeds.
    Learned at its better LR beats r20 by 1–3 points on every seed; r25 is r20 plus ±0.5 noise."""
    root = tmp_path_factory.mktemp("study") / "runs"
    rng = np.random.default_rng(3)
    base = rng.uniform(0.30, 0.40, 5)
    for seed in range(5):
        for lr, shift in ((0.005, 0.0), (0.01, -0.03)):
            fake_run(root, [base[seed] + shift - 0.05, base[seed] + shift], seed=seed, rank=20, learning_rate=lr,
                     label="U20")
            fake_run(root, [base[seed] + shift + rng.uniform(-0.005, 0.005)], seed=seed, rank=25, learning_rate=lr,
                     label="U25")
        for lr, gain in ((0.005, 0.0), (0.01, rng.uniform(0.04, 0.06))):
            fake_run(root, [base[seed] - 0.03 + gain], seed=seed, allocation="learned", rank_average=20,
                     rank_min=5, rank_max=30, learning_rate=lr, label="L20")
    return root


def test_learning_rate_selection_and_default_baseline(study_runs):
    runs = load_runs([study_runs])
    runs["arm"] = arm_names(runs)
    assert set(runs["arm"]) == {"U20", "U25", "L20"}
    table = select_learning_rates(runs)
    chosen = table[table["chosen"]].set_index("arm")["learning_rate"].to_dict()
    assert chosen == {"U20": 0.005, "U25": 0.005, "L20": 0.01}
    u20 = table[(table["arm"] == "U20") & (table["learning_rate"] == 0.005)].iloc[0]
    scores = runs[(runs["arm"] == "U20") & (runs["learning_rate"] == 0.005)]["score"]
    assert u20["median"] == pytest.approx(np.median(scores)) and u20["std"] == pytest.approx(np.std(scores, ddof=1))
    runs["params"] = runs["params_adapter_at_hard_ranks"]
    assert default_baseline(runs) == "U20"  # 12·20² = 4,800 is the closest to the learned budget


def test_study_section_answers_per_task_with_figures(study_runs, tmp_path):
    out = tmp_path / "report"
    build_report([study_runs], out, options={"study": True})
    text = (out / "report.md").read_text()
    section = text[text.index("## Learned vs uniform rank at the same budget"):]
    assert "**Baseline**: `U20`" in section
    answer = next(line for line in section.splitlines() if line.startswith("- **CoLA**"))
    assert "`L20` − `U20`" in answer and answer.endswith("**better**.")
    u25 = next(line for line in section.splitlines() if line.startswith("| U25 | 0.005 |"))
    assert u25.endswith("| no significant difference |")
    assert "| Method | Adapter params | CoLA |" in section
    for name in ("study_scores.png", "study_learned_ranks.png", "study_learning_rates.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image[..., :3].std() > 0.05
    assert "![Score against learning rate](study_learning_rates.png)" in section


def test_learning_rate_curves_plot_each_methods_medians_and_ring_the_chosen_one(study_runs):
    from rankwise.report.study.figures import draw_lr_curves

    runs = load_runs([study_runs])
    runs["arm"] = arm_names(runs)
    table = select_learning_rates(runs)
    fig = draw_lr_curves(table, ["U20", "U25", "L20"], ["cola"])
    ax = fig.axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar containers: (data line, caps, bars)
    for arm in ("U20", "U25", "L20"):
        expected = table[table["arm"] == arm].sort_values("learning_rate")
        x, y = lines[arm].get_data()
        assert list(x) == list(expected["learning_rate"]) and np.allclose(y, expected["median"])
    from matplotlib.collections import PathCollection  # scatter; the error bars are LineCollections

    ringed = np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
    picked = table[table["chosen"]]
    assert sorted(map(tuple, ringed.tolist())) == sorted(zip(picked["learning_rate"], picked["median"]))


def test_learning_rate_ticks_drop_labels_that_would_print_over_each_other():
    from rankwise.report.study.figures import tick_labels

    rates = [0.001, 0.003, 0.005, 0.01, 0.02, 0.03, 0.04]
    assert tick_labels(rates) == ["0.001", "0.003", "0.005", "0.01", "0.02", "", "0.04"]
    # a wider axis (two decades) needs more room per label: 0.005 goes too
    assert tick_labels(rates + [0.1]) == ["0.001", "0.003", "", "0.01", "0.02", "", "0.04", "0.1"]
    assert tick_labels([1e-4, 1e-3, 1e-2]) == ["0.0001", "0.001", "0.01"]


def test_collapsed_medians_at_one_learning_rate_get_their_values_written_apart():
    from rankwise.report.study.figures import draw_lr_curves

    rows = [("A", 0.01, 80.0, True), ("A", 0.001, 50.0, False), ("B", 0.01, 79.0, True), ("B", 0.001, 40.0, False)]
    table = pd.DataFrame([{"task": "stsb", "greater_is_better": True, "arm": a, "learning_rate": lr, "median": m,
                           "std": 0.5, "chosen": c} for a, lr, m, c in rows])
    ax = draw_lr_curves(table, ["A", "B"], ["stsb"]).axes[0]
    written = {t.get_text(): t.xyann for t in ax.texts}
    assert set(written) == {"50.0", "40.0"}  # both below the 10-point window under the best median
    assert written["50.0"] != written["40.0"]


def test_unknown_study_baseline_is_a_clear_error(study_runs, tmp_path):
    from rankwise.errors import ConfigError

    with pytest.raises(ConfigError, match="is not a method of these runs"):
        build_report([study_runs], tmp_path / "r", options={"study": True, "study_baseline": "nope"})


def _write_allocation(run_dir: Path, first: dict, last: dict) -> Path:
    run_dir.mkdir(parents=True)
    lines = [{"step": 0, "continuous": first}, {"step": 5, "continuous": {k: (first[k] + last[k]) / 2 for k in first}},
             {"step": 10, "continuous": last}]
    (run_dir / "allocation.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run_dir


def test_allocation_diagnostics_match_their_definitions(tmp_path):
    from rankwise.report.study import allocation_diagnostics

    rng = np.random.default_rng(0)
    names = [f"bert.encoder.layer.{i}.attention.self.{k}" for i in range(3) for k in ("query", "value")]
    firsts = rng.uniform(5, 30, size=(4, len(names)))
    lasts = firsts + rng.normal(0, 2, size=firsts.shape)
    dirs = [_write_allocation(tmp_path / f"run{i}", dict(zip(names, f)), dict(zip(names, l)))
            for i, (f, l) in enumerate(zip(firsts, lasts))]
    d = allocation_diagnostics(dirs)
    change = lasts - firsts
    # naive definitions, written out with scipy
    assert d["runs"] == 4
    assert d["moved"] == pytest.approx(np.mean(np.abs(change)), abs=1e-12)
    assert d["moved_max"] == pytest.approx(np.max(np.abs(change)), abs=1e-12)
    assert d["init_corr"] == pytest.approx(np.mean([stats.pearsonr(f, l)[0] for f, l in zip(firsts, lasts)]), abs=1e-9)
    pairs = [stats.pearsonr(change[i], change[j])[0] for i in range(4) for j in range(i + 1, 4)]
    assert d["agreement"] == pytest.approx(np.mean(pairs), abs=1e-9)
    assert d["by_kind"]["attention.self.query"] == pytest.approx(change[:, 0::2].mean(), abs=1e-12)
    assert d["by_kind"]["attention.self.value"] == pytest.approx(change[:, 1::2].mean(), abs=1e-12)
    assert list(d["by_kind"]) == sorted(d["by_kind"], key=d["by_kind"].get, reverse=True)
    # a flat (uniform) initialisation has no correlation with the final ranks: NaN, not a number
    flat = _write_allocation(tmp_path / "flat", dict.fromkeys(names, 20.0), dict(zip(names, lasts[0])))
    assert math.isnan(allocation_diagnostics([flat])["init_corr"])
    assert allocation_diagnostics([tmp_path / "missing"]) is None


def test_a_learning_rate_with_fewer_seeds_is_shown_but_never_chosen(study_runs, tmp_path):
    """A half-finished grid point (here: L20 at 0.02 on 2 seeds, scoring far above everything) must not win
    the learning-rate selection; the report says it was left out and that L20 had more learning rates."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(study_runs, root)
    for seed in (0, 1):
        fake_run(root, [0.9], seed=seed, allocation="learned", rank_average=20, rank_min=5, rank_max=30,
                 learning_rate=0.02, label="L20")
    runs = load_runs([root])
    runs["arm"] = arm_names(runs)
    table = select_learning_rates(runs)
    l20 = table[table["arm"] == "L20"].set_index("learning_rate")
    assert l20.loc[0.02, "n"] == 2 and l20.loc[0.02, "median"] == pytest.approx(90.0)
    assert l20["chosen"].to_dict() == {0.005: False, 0.01: True, 0.02: False}
    build_report([root], tmp_path / "report", options={"study": True})
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Each method ran at 2 learning rates per task (3 for `L20` on CoLA)" in text
    assert "`L20` on CoLA at 0.02 (n=2)" in text


def test_one_learning_rate_per_method_claims_no_selection():
    from rankwise.report.study.markdown import grid_sentence as _grid_sentence

    table = pd.DataFrame({"task": ["cola", "cola"], "arm": ["A", "B"], "learning_rate": [0.01, 0.01], "n": [5, 5]})
    assert _grid_sentence(table) == "Each method ran at one learning rate per task, so no learning rate was selected."
