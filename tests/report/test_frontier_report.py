"""`rankwise report`'s budget frontier: arms and budget points, the best learning rate per point, paired
differences to uniform at the same budget (against scipy and Holm written out), the parameters needed to reach
uniform's largest budget, the figure, and no section when the runs do not vary the budget."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rankwise.report import build_report, load_runs
from rankwise.report.frontier import budget_comparisons, frontier_points, frontier_runs, varies_budget
from rankwise.report.frontier.figures import draw_frontier
from rankwise.report.stats import detectable_difference
from conftest import fake_run

SEEDS = range(5)
REPORTED = [2, 3, 4]  # seeds 0 and 1 choose each point's learning rate; the others report
NOISE = [0.0, 0.4, -0.3, 0.2, -0.1]  # each seed's shift, shared by every arm (what pairing by seed removes)
UNIFORM = {2: 60.0, 4: 70.0, 8: 78.0}
# per rank: score shift at each learning rate; best inside (r2), at the lowest (r4) and at the highest (r8) rate
UNIFORM_LR = {2: {0.005: -2.0, 0.01: 0.0, 0.02: -1.0}, 4: {0.005: 0.0, 0.01: -0.5, 0.02: -1.0},
              8: {0.005: -3.0, 0.01: -1.0, 0.02: 0.0}}
LEARNED_LR = {0.01: -1.0, 0.02: 0.0, 0.04: -0.5}
LEARNED_GAIN = {2: 4.0, 4: 8.3, 8: 0.0}  # learned − uniform at the same budget, before the seed terms below
LEARNED_SEED = {2: [-0.5, 0.3, 0.1, -0.2, 0.4], 4: [0.5, -0.6, 0.2, -0.3, 0.1], 8: [0.3, -0.4, 0.6, -0.2, -0.3]}
ANNEALING_SEED = [0.2, -0.1, 0.0, 0.3, -0.2]  # annealing: uniform − 1 plus these, at one learning rate (0.02)
LEARNED = "LoRA-XS learned (alloc-lr 0.01)"


def uniform_score(rank: int, lr: float, seed: int) -> float:
    return UNIFORM[rank] + UNIFORM_LR[rank][lr] + NOISE[seed]


def learned_score(rank: int, lr: float, seed: int, gain: dict) -> float:
    return UNIFORM[rank] + gain[rank] + LEARNED_LR[lr] + NOISE[seed] + LEARNED_SEED[rank][seed]


def annealing_score(rank: int, seed: int) -> float:
    return UNIFORM[rank] - 1.0 + NOISE[seed] + ANNEALING_SEED[seed]


def run(root: Path, score: float, params: int | None = None, **config) -> Path:
    """`fake_run` with `score` at its best epoch; `params`: the adapter size at the final ranks (learned runs
    keep a little under their budget)."""
    run_dir = fake_run(root, [score / 100 - 0.05, score / 100], **config)
    if params is not None:
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["trainable_parameters"]["adapter_at_hard_ranks"] = params
        (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def learned_config(rank: int, **config) -> dict:
    return dict(allocation="learned", rank_average=rank, rank_min=1, rank_max=3 * rank, **config)


def write_frontier(root: Path, gain: dict, annealing: bool) -> Path:
    """LoRA-XS uniform r2/r4/r8 (3 learning rates), learned at the same budgets (3 learning rates) and, with
    `annealing`, a labelled learned variant with a frozen allocation at one learning rate; 5 seeds each."""
    for seed in SEEDS:
        for rank in UNIFORM:
            for lr in UNIFORM_LR[rank]:
                run(root, uniform_score(rank, lr, seed), seed=seed, rank=rank, learning_rate=lr)
            for lr in LEARNED_LR:
                run(root, learned_score(rank, lr, seed, gain), 12 * rank ** 2 - 2, seed=seed, learning_rate=lr,
                    **learned_config(rank))
            if annealing:
                run(root, annealing_score(rank, seed), 12 * rank ** 2 - 2, seed=seed, learning_rate=0.02,
                    label="annealing", **learned_config(rank, rank_allocation_lr=1e-12))
    return root


@pytest.fixture(scope="module")
def frontier(tmp_path_factory):
    """(runs folder, report folder, build_report's result) for runs where learned allocation beats uniform at
    the two smaller budgets."""
    root = write_frontier(tmp_path_factory.mktemp("frontier") / "runs", LEARNED_GAIN, annealing=True)
    out = root.parent / "report"
    return root, out, build_report([root], out)


@pytest.fixture(scope="module")
def points(frontier):
    frame = frontier_runs(load_runs([frontier[0]]))
    found, chosen = frontier_points(frame)
    return frame, found, chosen


def section_text(out: Path) -> str:
    text = (out / "report.md").read_text()
    start = text.index("## Budget frontier")
    return text[start:text.index("\n## ", start + 1)]


def test_arms_and_the_best_learning_rate_of_each_budget(points):
    _, found, _ = points
    assert set(found["arm"]) == {"LoRA-XS uniform", LEARNED, "annealing"}
    best = {(r.arm, r.budget): (r.learning_rate, r.edge) for r in found.itertuples()}
    assert best == {
        ("LoRA-XS uniform", "r2"): (0.01, "inside"), ("LoRA-XS uniform", "r4"): (0.005, "lowest"),
        ("LoRA-XS uniform", "r8"): (0.02, "highest"),
        (LEARNED, "1–6, avg 2"): (0.02, "inside"), (LEARNED, "1–12, avg 4"): (0.02, "inside"),
        (LEARNED, "1–24, avg 8"): (0.02, "inside"),
        ("annealing", "1–6, avg 2"): (0.02, "only"), ("annealing", "1–12, avg 4"): (0.02, "only"),
        ("annealing", "1–24, avg 8"): (0.02, "only")}


def test_medians_spreads_and_sizes_are_those_of_the_reporting_seeds(points):
    """Seeds 0-1 chose the learning rate, so the numbers of a point with several rates come from seeds 2-4; a point
    run at one rate was not selected and reports all 5."""
    _, found, _ = points
    for r in found.itertuples():
        rank = int(r.budget.split("avg ")[-1]) if "avg" in r.budget else int(r.budget[1:])
        if r.arm == "LoRA-XS uniform":
            expected, params = [uniform_score(rank, r.learning_rate, s) for s in REPORTED], 12 * rank ** 2
        elif r.arm == LEARNED:
            expected, params = [learned_score(rank, 0.02, s, LEARNED_GAIN) for s in REPORTED], 12 * rank ** 2 - 2
        else:
            expected, params = [annealing_score(rank, s) for s in SEEDS], 12 * rank ** 2 - 2
        assert r.median == pytest.approx(np.median(expected), abs=1e-9)
        assert r.std == pytest.approx(np.std(expected, ddof=1), abs=1e-9)
        assert r.n == len(expected) and r.params == params
        assert r.scores == pytest.approx(expected, abs=1e-9)
        assert r.rule == ("one rate" if r.arm == "annealing" else "seed split")


def test_paired_differences_to_uniform_at_the_same_budget_by_hand(points):
    frame, found, chosen = points
    table = budget_comparisons(frame, found, chosen)
    best_uniform_lr = {2: 0.01, 4: 0.005, 8: 0.02}
    hand = {}
    for rank, lr in best_uniform_lr.items():  # paired on the seeds both report: 2-4
        uniform = np.array([uniform_score(rank, lr, s) for s in REPORTED])
        hand[(LEARNED, rank)] = np.array([learned_score(rank, 0.02, s, LEARNED_GAIN) for s in REPORTED]) - uniform
        hand[("annealing", rank)] = np.array([annealing_score(rank, s) for s in REPORTED]) - uniform
    p = {key: stats.ttest_1samp(diff, 0.0).pvalue for key, diff in hand.items()}
    # Holm written out: the k-th smallest p (from 0) times (m − k), never below the one before, at most 1
    holm, running = {}, 0.0
    for k, key in enumerate(sorted(p, key=p.get)):
        running = max(running, min(1.0, (len(p) - k) * p[key]))
        holm[key] = running
    # with 3 pairs annealing's −0.97 (p 0.022) does not survive Holm over 6 (0.087)
    expected_verdicts = {(LEARNED, 2): "better", (LEARNED, 4): "better", (LEARNED, 8): "not significant",
                         **{("annealing", rank): "not significant" for rank in UNIFORM}}
    assert len(table) == 6 and (table["family_size"] == 6).all()
    budgets = found.set_index("point")["budget"]
    for r in table.itertuples():
        key = (r.arm, int(budgets[r.point].split("avg ")[-1]))
        assert r.mean_diff == pytest.approx(hand[key].mean(), abs=1e-9)
        assert r.p_holm == pytest.approx(holm[key], rel=1e-6)
        ci = stats.ttest_1samp(hand[key], 0.0).confidence_interval(0.95)
        assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-9) and r.n == 3
        assert budgets[r.reference] == f"r{key[1]}" and r.verdict == expected_verdicts[key]
        assert r.detectable == pytest.approx(detectable_difference(3, hand[key].std(ddof=1), 0.05 / 6), rel=1e-6)


def test_section_answers_first_and_tables_every_point(frontier):
    _, out, _ = frontier
    section = section_text(out)
    answer = section[:section.index("### CoLA")]
    assert "**Beats uniform at the same budget:**" in answer
    assert (f"- CoLA: `{LEARNED}` at 46 parameters (1–6, avg 2) − `LoRA-XS uniform` r2: +4.10 (95% t-interval "
            "+3.35 to +4.85, n=3, Holm p 0.009, detectable 2.41): **better**") in answer
    assert f"- CoLA: `{LEARNED}` at 190 parameters (1–12, avg 4) − `LoRA-XS uniform` r4: +8.30" in answer
    assert "No significant difference in the other 4 comparisons " in answer
    assert "*every arm vs uniform at the same budget, every task*: 6 comparisons" in answer
    assert "compared on seeds 0, 1 only" in answer and "at the chosen rate (2–4)" in answer
    assert "No arm beats uniform" not in section
    row = next(line for line in section.splitlines() if line.startswith("| LoRA-XS uniform | r4 |"))
    assert row == "| LoRA-XS uniform | r4 | 192 | 69.90 ± 0.25 (n=3) | 0.005 ↓ |  |  |  |  |  |  | uniform |"
    assert ("**Chosen at the edge of its grid** (a wider grid may move it, and the arm's numbers may understate it): "
            "`LoRA-XS uniform r4` learning_rate 0.005 (lowest of 3); `LoRA-XS uniform r8` learning_rate 0.02 "
            "(highest of 3).") in section
    assert "| `LoRA-XS uniform r2` | `learning_rate` | 0.005, 0.01, 0.02 | 0.01 | inside |" in section
    assert ("One value per arm, so not searched: `learning_rate` (0.02) for `annealing 1–6, avg 2`; `annealing "
            "1–12, avg 4`; `annealing 1–24, avg 8`.") in section
    edges = pd.read_csv(frontier[1] / "frontier_learning_rates.csv")
    assert len(edges[edges["edge"].isin(["lowest", "highest"])]) == 2  # the section's claims are the CSV's


def test_parameters_needed_to_reach_uniform_at_its_largest_budget(frontier):
    section = section_text(frontier[1])
    assert ("**Parameters needed to reach `LoRA-XS uniform` at its largest budget** (r8, 768 parameters, median "
            "77.90)") in section  # 78 + median(−0.3, 0.2, −0.1) over seeds 2-4
    table = section[section.index("| Method | Parameters needed"):]
    assert "| LoRA-XS uniform | 768 | 1.00× | 77.90 (r8) |" in table
    assert f"| {LEARNED} | 190 | 0.25× | 78.20 (1–12, avg 4) |" in table  # 78.3 + median(−0.1, −0.1, 0) = 78.2
    assert "| annealing | not reached | – | best 77.20 (1–24, avg 8, 766 parameters) |" in table


def test_the_figure_is_a_png_linked_from_the_report_and_draws_the_medians(frontier, points):
    _, out, result = frontier
    path = out / "frontier_cola.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path in result["figures"]
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05
    assert "![Score against adapter parameters on CoLA](frontier_cola.png)" in section_text(out)
    _, found, _ = points
    arms = ["LoRA-XS uniform", LEARNED, "annealing"]
    ax = draw_frontier(found, arms, "score", "title", found.iloc[0]).axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: (data line, caps, bars)
    for arm in arms:
        expected = found[found["arm"] == arm].sort_values("params")
        x, y = lines[arm].get_data()
        shift = x / expected["params"].to_numpy()  # arms are dodged sideways by a constant factor
        assert np.allclose(y, expected["median"]) and np.allclose(shift, shift[0]) and abs(np.log10(shift[0])) < 0.1
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["48\nr2", "192\nr4", "768\nr8"]


def test_the_figure_keeps_seeds_near_the_medians_and_marks_a_collapse_on_its_edge_once():
    # medians 60 and 70 (span 10): a seed at 52 or 78 is in view, a collapse at 35 is not; 47 and 48 go
    # together on the lower edge in one label
    points = pd.DataFrame([
        {"arm": "uniform", "budget": "r2", "params": 96.0, "median": 60.0, "scores": [52.0, 60.0, 61.0],
         "edge": "inside", "uniform": True},
        {"arm": "uniform", "budget": "r4", "params": 384.0, "median": 70.0, "scores": [35.0, 70.0, 78.0],
         "edge": "inside", "uniform": True},
        {"arm": "other", "budget": "r2", "params": 96.0, "median": 62.0, "scores": [47.0, 48.0, 62.0, 63.0],
         "edge": "inside", "uniform": False}])
    ax = draw_frontier(points, ["uniform", "other"], "score", "title", points.iloc[0]).axes[0]
    low, high = ax.get_ylim()
    assert low < 52 and 78 < high and low > 48  # one span (10) below the lowest median: 50, less a margin
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["35.0", "47.0, 48.0"]


def test_no_arm_beating_uniform_is_said_plainly_with_every_interval(tmp_path):
    root = write_frontier(tmp_path / "runs", {2: 0.0, 4: 0.0, 8: 0.0}, annealing=False)
    build_report([root], tmp_path / "report")
    section = section_text(tmp_path / "report")
    assert ("**No arm beats uniform at any budget**: none of the 3 tested differences to uniform at the same budget "
            "has a Holm-adjusted p < 0.05. Read each with its detectable difference") in section
    intervals = [line for line in section.splitlines() if line.startswith("- CoLA: `LoRA-XS learned` at ")]
    assert len(intervals) == 3 and all("95% t-interval" in line and "detectable" in line for line in intervals)
    # learned r2 against uniform r2 at its best learning rate: the seed terms' mean over seeds 2-4, +0.10
    assert "- CoLA: `LoRA-XS learned` at 46 parameters (1–6, avg 2) − `LoRA-XS uniform` r2: +0.10" in section


def test_no_section_when_no_arm_varies_its_budget(tmp_path):
    root = tmp_path / "runs"
    for seed in SEEDS:
        for lr in (0.005, 0.01):
            run(root, uniform_score(4, lr, seed), seed=seed, rank=4, learning_rate=lr)
            run(root, learned_score(4, 0.02, seed, LEARNED_GAIN), 190, seed=seed, learning_rate=lr,
                **learned_config(4))
    assert varies_budget(frontier_runs(load_runs([root]))) == []
    result = build_report([root], tmp_path / "report")
    assert "Budget frontier" not in (tmp_path / "report" / "report.md").read_text()
    assert not list((tmp_path / "report").glob("frontier_*.png")) and result["figures"]


def test_without_a_uniform_arm_the_paired_parts_are_skipped_with_a_reason(tmp_path):
    root = tmp_path / "runs"
    for seed in SEEDS:
        for rank in (2, 4):
            run(root, learned_score(rank, 0.02, seed, LEARNED_GAIN), 12 * rank ** 2, seed=seed, learning_rate=0.02,
                **learned_config(rank))
    build_report([root], tmp_path / "report")
    section = section_text(tmp_path / "report")
    assert "No uniform arm on CoLA, so there are no differences to uniform and no \"parameters needed\" table." \
        in section
    assert "Parameters needed" not in section and "| LoRA-XS learned | 1–6, avg 2 | 48 |" in section


@pytest.mark.parametrize("pairs, arms", [
    ([(2, 6), (4, 12)], {"LoRA-XS learned"}),  # rank_max follows the budget: one arm
    ([(2, 6), (4, 12), (2, 12), (4, 24)],
     {"LoRA-XS learned (rank_max 3× avg rank)", "LoRA-XS learned (rank_max 6× avg rank)"}),
    ([(2, 12), (4, 12), (2, 24), (4, 24)], {"LoRA-XS learned (rank_max 12)", "LoRA-XS learned (rank_max 24)"}),
])
def test_rank_max_belongs_to_the_budget_or_to_the_arm(tmp_path, pairs, arms):
    for average, rank_max in pairs:
        run(tmp_path, 70.0, 12 * average ** 2, learning_rate=0.01, allocation="learned", rank_average=average,
            rank_min=1, rank_max=rank_max)
    frame = frontier_runs(load_runs([tmp_path]))
    assert set(frame["arm"]) == arms
    assert frame.groupby("arm")["point"].nunique().tolist() == [2] * len(arms)  # each arm at both budgets


def test_every_arm_has_its_own_colour_and_uniform_is_black():
    """The slice had 14 arms: with tab10 alone, uniform and rank annealing were both blue."""
    from rankwise.report.frontier.figures import arm_colours

    for n in (3, 10, 11, 14, 20):
        arms = ["uniform"] + [f"arm {k}" for k in range(n - 1)]
        colours = arm_colours(arms, "uniform")
        assert colours[0] == "black"
        assert len({str(c) for c in colours}) == n
    assert len({str(c) for c in arm_colours([f"a{k}" for k in range(5)], None)}) == 5
