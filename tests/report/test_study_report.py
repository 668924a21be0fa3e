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
from rankwise.report.stats import holm, select_learning_rates, verdict
from rankwise.report.study import arm_names, default_baseline
from conftest import fake_run


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_verdict_needs_holm_significance_and_3_pairs():
    c = {"mean_diff": 2.0, "ci_low": 0.5, "ci_high": 3.0, "p_holm": 0.01, "n": 5, "exploratory": False}
    assert verdict(c, True) == "better" and verdict(c, False) == "worse"
    assert verdict({**c, "p_holm": 0.2}, True) == "not significant"
    assert verdict({**c, "n": 2, "exploratory": True}, True) == "exploratory (n=2)"


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
    assert "`L20` − `U20`" in answer and "n=3" in answer and answer.endswith("**better**.")
    assert "compared on seeds 0, 1 only" in section and "at the chosen rate (2–4)" in section
    assert ("*learned allocation vs `U20`, every task*: 1 comparison; *the other methods vs `U20`, every task*: "
            "1 comparison") in section
    u25 = next(line for line in section.splitlines() if line.startswith("| U25 | **0.005** |"))
    assert u25.endswith("| not significant |") and "(n=3)**" in u25
    table = pd.read_csv(out / "study_comparisons.csv")
    assert set(table["arm"]) == {"U25", "L20"} and (table["n"] == 3).all() and (table["family_size"] == 1).all()
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


def test_a_rate_run_on_the_selection_seeds_only_can_win_but_reports_nothing(study_runs, tmp_path):
    """L20 at 0.02 on seeds 0 and 1 only, far above everything: it wins on the selection seeds (where every rate is
    compared), and since it has no other seed nothing is reported for L20 and its comparison is exploratory (n=0):
    the report asks for seeds 2-4 at 0.02 instead of reporting the rate that lost."""
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
    assert l20.loc[0.02, "n"] == 2 and l20.loc[0.02, "selection_median"] == pytest.approx(90.0)
    assert l20["chosen"].to_dict() == {0.005: False, 0.01: False, 0.02: True} and l20["report_n"].max() == 0
    build_report([root], tmp_path / "report", options={"study": True})
    text = (tmp_path / "report" / "report.md").read_text()
    assert "(90.00 on the selection seeds)" in text and "exploratory (n=0)" in text
    assert "No seed beyond the selection seeds at the chosen rate, so nothing is reported" in text


def test_one_learning_rate_per_method_claims_no_selection():
    from rankwise.report.selection import selection_text

    runs = pd.DataFrame([{"task": "cola", "arm": arm, "learning_rate": 0.01, "seed": s, "score": 50.0 + s,
                          "status": "completed", "greater_is_better": True} for arm in "AB" for s in range(3)])
    text = selection_text(select_learning_rates(runs))
    assert "Run at one learning rate, so nothing was selected and every seed reports: `A`; `B`." in text
    assert "compared on seeds" not in text
