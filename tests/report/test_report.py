"""Reports from synthetic run directories: aggregation over seeds against numpy, the adaptive LoRA-XS table
layout, baselines and groups, figures (files and what they draw), and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import MATRICES, METRIC, fake_run, run_cli
from rankwise.report import build_report, resolve_baselines, task_order
from rankwise.report.configurations import figures as plots
from rankwise.report.aggregate import group_runs, load_runs
from rankwise.report.configurations.tables import ADAPTIVE_HEADER
from rankwise.report.stats import detectable_difference

HEADER_LINE = "| Task | Rank Min | Rank Max | Alpha Min | Alpha Max | LR | Rank Avg | Median ± Std |"


LEARNED = [dict(allocation="learned", alpha_min=a, alpha_max=b, lr_scheduler=s, rank_average=20, rank_allocation_lr=lr)
           for a, b in ((0.1, 5.0), (0.5, 3.0)) for s in ("constant_schedule", "linear_schedule_with_warmup")
           for lr in (0.01,)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """4 learned configurations and a LoRA-XS r25 baseline, 5 seeds each, 4 epochs; one extra diverged and one
    failed run; one killed run (no summary). Returns (root, {config index: [per-seed epoch scores]})."""
    root = tmp_path_factory.mktemp("study") / "runs"
    rng = np.random.default_rng(0)
    scores = {}
    configs = LEARNED + [dict(allocation="uniform", rank=25, label="LoRA-XS r25")]
    for c, config in enumerate(configs):
        scores[c] = []
        for seed in range(5):
            values = list(rng.uniform(0.3, 0.6, 4).round(6))
            scores[c].append(values)
            fake_run(root / ("nested" if c % 2 else ""), values, seed=seed, num_train_epochs=4, **config)
    fake_run(root, [0.2, 0.9], status="diverged", seed=7, num_train_epochs=4, **LEARNED[0])
    fake_run(root, [], status="failed", seed=8, num_train_epochs=4, **LEARNED[0])
    killed = root / "killed_run"
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    return root, scores, configs


def test_load_runs_finds_nested_runs_and_skips_unfinished(study):
    root, scores, configs = study
    warnings = []
    runs = load_runs([root], warn=warnings.append)
    assert len(runs) == 5 * 5 + 2
    assert warnings == [f"skipping {root / 'killed_run'}: no summary.json (the run is still going or was killed)"]
    again = load_runs([root, root / "nested", next((root / "nested").iterdir())], warn=lambda _: None)
    assert len(again) == len(runs)  # a run given twice (directly and through a parent) counts once
    assert runs["status"].value_counts().to_dict() == {"completed": 25, "diverged": 1, "failed": 1}


def test_median_and_sample_std_over_seeds_match_numpy(study):
    root, scores, configs = study
    runs = load_runs([root], warn=lambda _: None)
    groups = group_runs(runs)
    assert len(groups) == len(configs)
    for c, config in enumerate(configs):
        best = np.array([max(v) * 100 for v in scores[c]])
        final = np.array([v[-1] * 100 for v in scores[c]])
        mask = np.ones(len(groups), bool)
        for key, value in config.items():
            if key != "label":
                mask &= groups[key].to_numpy() == value
        g = groups[mask].iloc[0]
        assert g["n"] == 5
        assert g["median"] == pytest.approx(np.median(best), abs=1e-9)
        assert g["std"] == pytest.approx(np.std(best, ddof=1), abs=1e-9)
        assert g["final_median"] == pytest.approx(np.median(final), abs=1e-9)
        assert sorted(g["scores"]) == pytest.approx(sorted(best))
    first = groups[(groups["alpha_min"] == 0.1) & (groups["lr_scheduler"] == "constant_schedule")].iloc[0]
    assert (first["runs"], first["n"], first["not_completed"]) == (7, 5, 2)  # diverged and failed left out
    assert list(groups["median"]) == sorted(groups["median"], reverse=True)


def test_report_tables_have_the_study_layout(study, tmp_path):
    root, scores, configs = study
    result = build_report([root], tmp_path / "report")
    text = result["report"].read_text()
    assert "| " + " | ".join(ADAPTIVE_HEADER) + " |" == HEADER_LINE
    assert text.count(HEADER_LINE) == 2  # one table per lr_scheduler (a field the columns do not show)
    runs = load_runs([root], warn=lambda _: None)
    groups = group_runs(runs)
    for scheduler in ("constant_schedule", "linear_schedule_with_warmup"):
        section = text.split(f"**lr_scheduler = {scheduler}**")[1].split("\n\n")[1]
        lines = section.splitlines()
        assert lines[0] == HEADER_LINE and lines[1] == "|:---|---:|---:|---:|---:|---:|---:|:---|"
        expected = groups[(groups["lr_scheduler"] == scheduler) & (groups["allocation"] == "learned")]
        rows = [f"| cola | 5 | 30 | {g['alpha_min']:g} | {g['alpha_max']:g} | 0.01 | 20 | "
                f"{g['median']:.2f} ± {g['std']:.2f} |" for _, g in expected.iterrows()]
        assert lines[2:] == rows
        medians = [float(line.split("|")[-2].split("±")[0]) for line in lines[2:]]
        assert medians == sorted(medians, reverse=True)
    baseline = groups[groups["label"] == "LoRA-XS r25"].iloc[0]
    assert f"**LoRA-XS r25** ({baseline['median']:.2f} ± {baseline['std']:.2f})" in text
    best = groups[groups["allocation"] == "learned"].iloc[0]
    # Δ: the mean of the seed-paired differences with scipy's 95% t-interval (the learned configurations' seeds 7
    # and 8 did not complete, so 5 seeds pair)
    diffs = np.array(best["scores"]) - np.array(baseline["scores"])
    ci = stats.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    detectable = detectable_difference(5, diffs.std(ddof=1))
    cell = f"| {diffs.mean():+.2f} [{ci.low:+.2f}, {ci.high:+.2f}] (n=5, detectable {detectable:.2f}) |"
    assert cell in text.split("## All configurations")[1]
    assert "ddof=1" in text and "Runs that did not complete (2)" in text and "out of memory" in text
    csv = pd.read_csv(result["results"])
    assert len(csv) == 27 and {"score", "final_score", "best_epoch", "wall_time_s", "label"} <= set(csv.columns)
    ok = csv[csv["status"] == "completed"]
    assert ok["score"].to_numpy() == pytest.approx(ok["best"].to_numpy() * 100)


def test_figures_are_written_and_draw_what_they_claim(study, tmp_path):
    root, scores, configs = study
    result = build_report([root], tmp_path / "report", group_by=["alpha_min", "alpha_max"])
    names = {p.name for p in result["figures"]}
    assert names == {"comparison_boxplot.png", "eval_curves.png", "final_ranks.png", "allocation_heatmap.png",
                     "schedules.png", "ranks_by_layer.png"}
    for path in result["figures"]:
        image = matplotlib.image.imread(path)
        assert path.stat().st_size > 10_000 and image.shape[0] > 300 and image.shape[1] > 600
        assert image[..., :3].std() > 0.05  # not blank
    assert "By `alpha_min`, `alpha_max`" in result["report"].read_text()

    runs = load_runs([root], warn=lambda _: None)
    groups = group_runs(runs)
    fig = plots.draw_comparison_boxplot(runs, groups, None, {"LoRA-XS r25": 50.0})
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == len(configs)
    assert sum(len(c.get_offsets()) for c in ax.collections) == 25  # one dot per completed seed
    fig = plots.draw_eval_curves(runs, groups, ["LoRA-XS r25"], top=2)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3  # the baseline and the two best
    best = groups[groups["allocation"] == "learned"]["label"].iloc[0]
    best_dirs = runs.loc[(runs["label"] == best) & (runs["status"] == "completed"), "run_dir"]
    per_epoch = np.array([[json.loads(l)[METRIC] for l in open(Path(d) / "metrics.jsonl") if '"eval"' in l]
                          for d in best_dirs]) * 100
    drawn = next(line for line in lines if line.get_label().startswith(best))
    assert drawn.get_ydata() == pytest.approx(np.median(per_epoch, axis=0))
    fig = plots.draw_final_ranks(list(best_dirs), "t")
    bars = fig.axes[0].patches
    assert len(bars) == len(MATRICES)
    hard = np.array([[json.load(open(Path(d) / "summary.json"))["hard_ranks"][n] for n, _, _ in MATRICES]
                     for d in best_dirs])
    assert [b.get_height() for b in bars] == pytest.approx(np.median(hard, axis=0))
    colours = {kind: {tuple(b.get_facecolor()) for b, (_, _, k) in zip(bars, MATRICES) if k == kind}
               for kind in ("attention", "mlp")}
    assert len(colours["attention"]) == len(colours["mlp"]) == 1 and colours["attention"] != colours["mlp"]
    run_dir = best_dirs.iloc[0]
    fig = plots.draw_allocation_heatmap(run_dir, "t")
    records = [json.loads(l) for l in open(Path(run_dir) / "allocation.jsonl")]
    soft = np.array([[r["continuous"][n] for r in records] for n, _, _ in MATRICES])
    np.testing.assert_allclose(np.asarray(fig.axes[0].collections[0].get_array()).reshape(soft.shape), soft)
    fig = plots.draw_schedules([("a", run_dir)])
    assert fig.axes[0].get_lines()[0].get_ydata() == pytest.approx([r["alpha"] for r in records])


def test_baseline_and_group_by_choose_what_is_compared(study, tmp_path):
    root, scores, configs = study
    runs = load_runs([root], warn=lambda _: None)
    groups = group_runs(runs)
    label = groups[groups["allocation"] == "learned"]["label"].iloc[-1]
    result = build_report([root], tmp_path / "a", baseline=label, group_by=["lr_scheduler"])
    text = result["report"].read_text()
    assert f"Δ vs {label}" in text
    by = group_runs(runs, ["lr_scheduler"])
    for scheduler in ("constant_schedule", "linear_schedule_with_warmup"):
        pooled = runs[(runs["lr_scheduler"] == scheduler) & (runs["status"] == "completed")]["score"]
        row = by[by["lr_scheduler"] == scheduler].iloc[0]
        assert row["median"] == pytest.approx(np.median(pooled)) and row["n"] == len(pooled)
    # A field that does not apply to a run (a fixed-rank baseline has no allocation-weight initialisation)
    # puts it in a group of its own instead of the field's default.
    by_init = group_runs(runs, ["rank_allocation_weights_init"])
    assert sorted(zip(by_init["label"], by_init["n"])) == [("rank_allocation_weights_init=uniform", 20),
                                                            ("rank_allocation_weights_init=–", 5)]
    text = build_report([root], tmp_path / "c", group_by=["rank_allocation_weights_init"])["report"].read_text()
    assert "| – (does not apply) | 1 | 5 |" in text and "| uniform | 4 | 20 |" in text
    query = build_report([root], tmp_path / "b", baseline="allocation == 'learned' and alpha_min == 0.1")
    assert query["report"].read_text().count("Δ vs LoRA-XS learned") == 2


def test_report_without_learned_runs_reads_well(tmp_path):
    rng = np.random.default_rng(1)
    for seed in range(3):
        fake_run(tmp_path / "runs", list(rng.uniform(0.2, 0.5, 3)), seed=seed, rank=25)
        fake_run(tmp_path / "runs", list(rng.uniform(0.2, 0.5, 3)), seed=seed, allocation="linear_decay",
                 rank_first=16, rank_last=4)
    result = build_report([tmp_path / "runs"], tmp_path / "report")
    text = result["report"].read_text()
    assert HEADER_LINE not in text and "Learned rank allocation" not in text
    assert "| LoRA-XS r25 | cola | LoRA-XS | r25 |" in text and "| LoRA-XS 16→4 | cola | LoRA-XS | 16→4 |" in text
    assert "Δ vs LoRA-XS r25" in text  # the fixed-rank run is the default baseline
    assert {p.name for p in result["figures"]} == {"comparison_boxplot.png", "eval_curves.png", "final_ranks.png",
                                                   "ranks_by_layer.png"}


@pytest.mark.parametrize("args,expected", [
    (["--group_by", "alpha_mn"], "--group_by: `alpha_mn` is not a config field or results column. Did you mean `alpha_min`?"),
    (["--baseline", "no such thing"], "--baseline: `no such thing` is neither a configuration label nor a valid query"),
    (["--baseline", "rank == 99"], "--baseline: `rank == 99` matches no configuration"),
])
def test_bad_report_options_stop_before_anything_is_written(study, tmp_path, capsys, args, expected):
    root, _, _ = study
    out = tmp_path / "report"
    assert run_cli("report", root, "--out", out, *args) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()
    assert run_cli("report", tmp_path / "missing", "--out", out) == 2
    assert "does not exist" in capsys.readouterr().err and not out.exists()


def test_default_baselines_are_fixed_ranks_only_against_other_allocations():
    groups = pd.DataFrame({"label": ["LoRA r4", "LoRA r16", "full", "learned 5–30"],
                           "method": ["lora", "lora", "full", "lora"],
                           "allocation": ["uniform", "uniform", "uniform", "learned"]})
    assert resolve_baselines(groups, None) == ["LoRA r4", "LoRA r16"]
    # an LR sweep (fixed ranks and full fine-tuning only): no adapter is another's baseline
    assert resolve_baselines(groups.iloc[:3], None) == []
    assert resolve_baselines(groups.iloc[:3], "full") == ["full"]


def test_a_label_shared_across_tasks_is_not_numbered_but_within_a_task_it_is():
    from rankwise.report.aggregate import config_labels

    df = pd.DataFrame([{"config_id": "a", "label": "X", "task": "cola", "allocation": "uniform", "method": "loraxs", "rank": 20},
                       {"config_id": "b", "label": "X", "task": "mrpc", "allocation": "uniform", "method": "loraxs", "rank": 20},
                       {"config_id": "c", "label": "Y", "task": "cola", "allocation": "uniform", "method": "loraxs", "rank": 20},
                       {"config_id": "d", "label": "Y", "task": "cola", "allocation": "uniform", "method": "loraxs", "rank": 20}])
    assert list(config_labels(df)) == ["X", "X", "Y #1", "Y #2"]


def test_a_label_shared_by_two_ranks_names_each_rank_and_then_the_differing_rate():
    from rankwise.report.aggregate import config_labels

    rows = [("a", 2, 0.01), ("b", 2, 0.02), ("c", 4, 0.01), ("d", 4, 0.02)]
    df = pd.DataFrame([{"config_id": cid, "label": "uniform", "task": "stsb", "allocation": "uniform",
                        "method": "loraxs", "rank": rank, "learning_rate": lr} for cid, rank, lr in rows])
    assert list(config_labels(df)) == ["uniform r2 (lr 0.01)", "uniform r2 (lr 0.02)", "uniform r4 (lr 0.01)",
                                       "uniform r4 (lr 0.02)"]


def test_a_uniform_arm_run_at_several_rates_is_one_baseline_at_its_chosen_rate(tmp_path):
    # r20 at 0.005 (best on seeds 0-1) and 0.01; r25 at one rate; a learned arm: two baselines, not three
    for seed in range(4):
        fake_run(tmp_path / "runs", [0.40 if seed < 2 else 0.30], seed=seed, rank=20, learning_rate=0.005)
        fake_run(tmp_path / "runs", [0.35], seed=seed, rank=20, learning_rate=0.01)
        fake_run(tmp_path / "runs", [0.33], seed=seed, rank=25, learning_rate=0.01)
        fake_run(tmp_path / "runs", [0.31 + 0.01 * seed], seed=seed, **LEARNED[1])
    build_report([tmp_path / "runs"], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    line = next(l for l in text.splitlines() if l.startswith("Baselines: "))
    assert line.startswith("Baselines: **LoRA-XS r20 (lr 0.005)** (35.00 ± 5.77); **LoRA-XS r25 (lr 0.01)** (33.00 ± 0.00) "
                           "(each fixed-rank arm at the learning rate the one rule below chooses for it; "), line
    header = next(l for l in text.splitlines() if l.startswith("| Configuration |"))
    assert "Δ vs LoRA-XS r20 (lr 0.005)" in header and "Δ vs LoRA-XS r25 (lr 0.01)" in header
    assert "Δ vs LoRA-XS r20 (lr 0.01)" not in header
    # named explicitly, every rate is a baseline again
    build_report([tmp_path / "runs"], tmp_path / "named", baseline="allocation == 'uniform' and rank == 20")
    header = next(l for l in (tmp_path / "named" / "report.md").read_text().splitlines()
                  if l.startswith("| Configuration |"))
    assert "Δ vs LoRA-XS r20 (lr 0.005)" in header and "Δ vs LoRA-XS r20 (lr 0.01)" in header


def test_tasks_are_reported_in_glue_order_then_unknown_ones_as_they_come():
    assert task_order(["rte", "stsb", "zeta", "cola", "rte", "alpha", "mrpc", "sst2"]) == [
        "cola", "sst2", "mrpc", "stsb", "rte", "zeta", "alpha"]


def test_unreadable_run_files_are_skipped_with_the_reason_and_out_must_be_a_folder(tmp_path, capsys):
    good = fake_run(tmp_path / "runs", [0.3, 0.4], seed=0)
    shapes = {"list_config": ("config.json", "[1, 2]"), "config_not_object": ("config.json", '{"config": 3}'),
              "corrupt_summary": ("summary.json", "{oops"), "list_summary": ("summary.json", "[]")}
    for name, (file, text) in shapes.items():
        run = fake_run(tmp_path / "runs" / name, [0.3], seed=1)
        (run / file).write_text(text)
    warnings = []
    runs = load_runs([tmp_path / "runs"], warn=warnings.append)
    assert list(runs["run_dir"]) == [str(good)]
    assert sum("config.json is not a rankwise config.json" in w for w in warnings) == 2
    assert sum("summary.json cannot be read (JSONDecodeError" in w for w in warnings) == 1
    assert sum("summary.json is not a rankwise summary.json" in w for w in warnings) == 1
    (tmp_path / "afile").write_text("x")
    for out, expected in ((tmp_path / "afile", "is a file; the report needs a folder"),
                          (tmp_path / "afile" / "sub", "is a file, not a directory")):
        assert run_cli("report", tmp_path / "runs", "--out", out) == 2
        assert expected in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "x"


def test_a_section_lists_only_the_figures_its_markdown_links_not_stale_ones_in_the_folder(tmp_path):
    from rankwise.report.context import ReportContext
    (tmp_path / "lr_ratio_vs_rank_old.png").write_bytes(b"stale")  # an earlier report's figure
    ctx = ReportContext(runs=pd.DataFrame(), groups=pd.DataFrame(), out=tmp_path)
    ctx.add_linked_figures("text\n![Loss vs LR](lr_ratio_loss_vs_lr.png)\n[a link](notes.md) ![x](b.png)\n")
    assert ctx.figures == [tmp_path / "lr_ratio_loss_vs_lr.png", tmp_path / "b.png"]


def test_seeds_of_one_configuration_stay_together_across_a_changed_default():
    """A learned run from before --allocation_batches' default changed (8, a gradient-only field) and one from
    after (4), or one whose config.json predates a field, are one configuration; gradient runs that measured 8
    and 4 batches are two."""
    from rankwise.config import RunConfig, resolve_defaults
    from rankwise.runs.naming import with_old_defaults  # how the report reads a run's config.json
    from rankwise.report.aggregate import config_id

    learned = resolve_defaults(RunConfig(task="stsb", allocation="learned", rank_min=1, rank_max=12,
                                         rank_average=4)).to_dict()
    before = {**learned, "allocation_batches": 8}
    before.pop("allocation_head_steps")
    assert config_id(with_old_defaults(before)) == config_id(learned)
    gradient = resolve_defaults(RunConfig(task="stsb", allocation="gradient", rank=4)).to_dict()
    assert config_id({**gradient, "allocation_batches": 8}) != config_id(gradient)
    old_gradient = dict(gradient)
    old_gradient.pop("allocation_head_steps")  # measured at the head's initialisation: today's default 0
    assert config_id(with_old_defaults(old_gradient)) == config_id(gradient)
    assert config_id({**gradient, "allocation_head_steps": 32}) != config_id(gradient)
