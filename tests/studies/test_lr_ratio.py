"""The LR-ratio study: log-quadratic optimum, edge fallback, results files in the reproduction's schema
(never overwritten across ranks, seeds, resumes or settings), the sweep's expansion, the ratio report on
synthetic run directories with known optima, and `rankwise lr-sweep` end to end on a tiny BERT."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import run_cli
from rankwise.studies.lr_ratio import (LRSweep, adapter_scale, default_lrs, expand_lr_sweep, format_lr, log_grid,
                              results_basename, write_results)
from rankwise.report.lr_ratio import fit_optima, load_points, log_quadratic_optimum, lr_ratio_report, summarize
from rankwise.runs.rundir import read_json, write_json_atomic


def parabola(lrs, optimum, floor=0.3, curvature=0.5):
    return [floor + curvature * (math.log10(lr) - math.log10(optimum)) ** 2 for lr in lrs]


# ---------------------------------------------------------------------------------------------
# The optimum of one curve
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("optimum", [3.7e-4, 1.13e-3, 2.05e-4])
def test_log_quadratic_optimum_recovers_a_vertex_between_grid_points(optimum):
    lrs = log_grid(1e-5, 1e-2)
    result = log_quadratic_optimum(lrs, parabola(lrs, optimum))
    assert result.how == "fit" and result.warning is None
    assert result.lr == pytest.approx(optimum, rel=1e-9)
    assert result.loss == pytest.approx(0.3, abs=1e-12)
    assert result.grid_lr == min(lrs, key=lambda lr: abs(math.log10(lr / optimum)))  # nearest grid point
    assert result.lr != result.grid_lr


def test_optimum_uses_only_the_minimum_and_its_two_neighbours():
    """A curve that is a parabola only near its minimum (flat far away) still gives the exact vertex, and a
    diverged point (None) or NaN away from the minimum changes nothing."""
    lrs = log_grid(1e-5, 1e-2)
    losses = parabola(lrs, 4.2e-4)
    losses = [min(v, 0.45) for v in losses]  # far points clipped: a global quadratic fit would be wrong
    losses[-1], losses[0] = None, float("nan")
    result = log_quadratic_optimum(lrs, losses)
    assert result.lr == pytest.approx(4.2e-4, rel=1e-9)
    # the same three points fitted by numpy directly
    i = int(np.nanargmin([np.nan if v is None else v for v in losses]))
    x = np.log10(lrs[i - 1:i + 2])
    a, b, _ = np.polyfit(x, losses[i - 1:i + 2], 2)
    assert math.log10(result.lr) == pytest.approx(-b / (2 * a), abs=1e-12)


def test_neighbour_of_a_diverged_point_is_the_next_finished_one():
    lrs = [1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3]
    losses = parabola(lrs, 5e-4)
    losses[3] = None  # 8e-4 diverged: the minimum's upper neighbour is 1.6e-3
    result = log_quadratic_optimum(lrs, losses)
    x = np.log10([2e-4, 4e-4, 1.6e-3])
    a, b, _ = np.polyfit(x, parabola([2e-4, 4e-4, 1.6e-3], 5e-4), 2)
    assert result.how == "fit" and math.log10(result.lr) == pytest.approx(-b / (2 * a), abs=1e-12)


def test_minimum_at_the_edge_falls_back_to_the_grid_point_with_a_warning():
    lrs = log_grid(1e-4, 1e-2)
    falling = parabola(lrs, 0.5)  # optimum far above the grid: loss falls all the way
    result = log_quadratic_optimum(lrs, falling)
    assert result.how == "grid: edge" and result.lr == lrs[-1] == result.grid_lr
    assert result.loss == falling[-1]
    assert "edge" in result.warning and "extend the grid up" in result.warning

    rising = parabola(lrs, 1e-6)
    result = log_quadratic_optimum(lrs, rising)
    assert result.how == "grid: edge" and result.lr == lrs[0] and "extend the grid down" in result.warning


def test_minimum_next_to_a_diverged_learning_rate_is_an_edge_too():
    lrs = log_grid(1e-4, 1e-2)
    losses = parabola(lrs, 2e-2)
    losses[-2:] = [None, None]  # the two highest learning rates diverged
    result = log_quadratic_optimum(lrs, losses)
    assert result.how == "grid: edge" and result.lr == lrs[-3]
    assert "diverged" in result.warning


def test_no_finished_point_gives_no_optimum():
    result = log_quadratic_optimum([1e-4, 1e-3], [None, None])
    assert result.lr is None and result.how == "none" and result.warning


# ---------------------------------------------------------------------------------------------
# Grids and expansion
# ---------------------------------------------------------------------------------------------

def test_default_grids_are_log_spaced_dense_enough_and_a_decade_apart():
    for method in ("lora", "loraxs", "full"):
        grid = default_lrs(method)
        steps = np.diff(np.log10(grid))
        assert np.allclose(steps, 0.25, atol=0.003), method  # 4 per decade = 7 per decade and a half
        assert len(grid) >= 7
    assert default_lrs("lora")[0] == pytest.approx(10 * default_lrs("full")[0])
    assert default_lrs("lora")[-1] == pytest.approx(10 * default_lrs("full")[-1])


def test_lr_keys_read_back_as_floats():
    for lr in log_grid(1e-6, 1):
        assert float(format_lr(lr)) == lr
    assert [format_lr(v) for v in (1e-4, 5e-4, 1.78e-3, 3e-5)] == ["1e-4", "5e-4", "1.78e-3", "3e-5"]
    assert float(format_lr(1.2345e-4)) == 1.2345e-4  # a user's own grid is not rounded


def test_expansion_alpha_policies_head_lr_and_unique_names(tmp_path):
    sweep = LRSweep(method="lora", ranks=[4, 16, 64], alpha=32, alpha_policies=["constant", "ratio", "rslora"],
                    seeds=[0, 1], lrs=[1e-4, 1e-3], include_full=True, full_lrs=[1e-5, 1e-4, 1e-3],
                    output_dir=str(tmp_path), overrides={"task": "sst2"})
    configs = expand_lr_sweep(sweep)
    assert len(configs) == 2 * (3 * 3 * 2 + 3)
    assert len({c.output_dir for c in configs}) == len(configs)
    assert [c.output_dir for c in configs] == [c.output_dir for c in expand_lr_sweep(sweep)]  # deterministic
    for cfg in configs:
        assert cfg.cls_learning_rate == cfg.learning_rate  # the head trains at the swept LR
        assert cfg.save_model is False and cfg.allocation == "uniform"
        if cfg.method == "full":
            continue
        expected_alpha = 32 * cfg.rank / 16 if cfg.alpha_policy == "ratio" else 32
        assert cfg.lora_alpha == expected_alpha
    scales = {(c.alpha_policy, c.rank): adapter_scale(c.alpha_policy, c.lora_alpha, c.rank)
              for c in configs if c.method != "full"}
    assert {scales["ratio", r] for r in (4, 16, 64)} == {2.0}  # α/r the same at every rank
    assert [scales["constant", r] for r in (4, 16, 64)] == [8.0, 2.0, 0.5]
    assert [scales["rslora", r] for r in (4, 16, 64)] == [16.0, 8.0, 4.0]
    assert sorted(c.learning_rate for c in configs if c.method == "full" and c.seed == 0) == [1e-5, 1e-4, 1e-3]


def test_bad_input_is_rejected_before_any_work(tmp_path):
    from rankwise.errors import ConfigError

    with pytest.raises(ConfigError, match="--ranks"):
        expand_lr_sweep(LRSweep(ranks=[0], output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="--lrs"):
        expand_lr_sweep(LRSweep(lrs=[1e-3, -1.0], output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="--allocation"):
        expand_lr_sweep(LRSweep(overrides={"allocation": "learned"}, output_dir=str(tmp_path)))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Results files (synthetic run directories)
# ---------------------------------------------------------------------------------------------

def fake_run(cfg, val_losses, accuracies=None, status="completed"):
    """A run directory as train.py writes it: config.json, metrics.jsonl, summary.json."""
    from pathlib import Path

    run = Path(cfg.output_dir)
    run.mkdir(parents=True)
    write_json_atomic(run / "config.json", {"config": cfg.to_dict()})
    lines, evals = [], []
    accuracies = accuracies or [0.5] * len(val_losses)
    for epoch, (loss, accuracy) in enumerate(zip(val_losses, accuracies), 1):
        lines.append({"type": "train", "step": 10 * epoch - 5, "epoch": epoch - 0.5, "loss": 1.0 / epoch})
        lines.append({"type": "train", "step": 10 * epoch, "epoch": float(epoch), "loss": 0.5 / epoch})
        evals.append({"type": "eval", "step": 10 * epoch, "epoch": epoch, "eval_loss": loss, "eval_accuracy": accuracy})
        lines.append(evals[-1])
    if status == "diverged":
        evals = []
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    best = max(evals, key=lambda r: r["eval_accuracy"]) if evals else None
    write_json_atomic(run / "summary.json", {
        "status": status, "message": "loss was non-finite" if status == "diverged" else None, "task": cfg.task,
        "method": cfg.method, "allocation": cfg.allocation, "seed": cfg.seed, "main_metric": "eval_accuracy",
        "greater_is_better": True, "best": best, "best_epoch": best["epoch"] if best else None,
        "final": evals[-1] if evals else None, "epochs_completed": len(evals)})


def small_sweep(tmp_path, **kw):
    values = dict(method="lora", ranks=[4, 16], alpha=32, seeds=[0, 1], lrs=[1e-4, 1e-3, 1e-2],
                  output_dir=str(tmp_path / "sweep"), overrides={"task": "sst2", "num_train_epochs": 3})
    values.update(kw)
    return LRSweep(**values)


def test_results_files_follow_the_reproduction_schema(tmp_path):
    configs = expand_lr_sweep(small_sweep(tmp_path, ranks=[16], seeds=[0]))
    fake_run(configs[0], [0.6, 0.5, 0.55], [0.70, 0.80, 0.78])
    fake_run(configs[1], [0.45, 0.40, 0.42], [0.82, 0.86, 0.84])
    fake_run(configs[2], [0.9], status="diverged")
    written = write_results(configs, tmp_path / "sweep")
    assert [p.name for p in written] == ["results_lora_r16_alpha32_constant_seed0.json"]
    text = written[0].read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert list(data) == ["1e-4", "1e-3", "1e-2"]  # every top-level key is a learning rate
    assert [float(k) for k in data] == [1e-4, 1e-3, 1e-2]
    entry = data["1e-3"]
    assert set(entry) == {"best_val_loss", "test_acc", "train_losses", "val_losses", "meta"}
    assert entry["best_val_loss"] == 0.40 == min(entry["val_losses"])
    assert entry["test_acc"] == 0.86  # dev accuracy at the epoch of the best validation loss
    assert entry["val_losses"] == [0.45, 0.40, 0.42]
    assert entry["train_losses"] == pytest.approx([0.75, 0.375, 0.25])  # mean of each epoch's logged losses
    meta = entry["meta"]
    assert (meta["method"], meta["rank"], meta["alpha"], meta["alpha_policy"], meta["seed"]) == \
        ("lora", 16, 32.0, "constant", 0)
    assert meta["scale"] == 2.0 and meta["learning_rate"] == 1e-3 and "dev set" in meta["test_acc_is"]
    diverged = data["1e-2"]
    assert diverged["best_val_loss"] is None and diverged["test_acc"] is None  # missing, never NaN
    assert diverged["meta"]["status"] == "diverged"


def test_no_results_file_is_overwritten_across_ranks_seeds_and_resumes(tmp_path):
    sweep = small_sweep(tmp_path)
    configs = expand_lr_sweep(sweep)
    first_lr = [c for c in configs if c.learning_rate == 1e-4]
    for i, cfg in enumerate(first_lr):
        fake_run(cfg, [0.5 + 0.01 * i])
    written = write_results(configs, sweep.output_dir)
    names = sorted(p.name for p in written)
    assert names == sorted(f"results_lora_r{r}_alpha32_constant_seed{s}.json" for r in (4, 16) for s in (0, 1))
    before = {p.name: read_json(p) for p in written}
    assert all(list(d) == ["1e-4"] for d in before.values())

    # Resume: more points finish; each file gains keys and keeps what it had.
    for cfg in configs:
        if cfg.learning_rate == 1e-3:
            fake_run(cfg, [0.4])
    after = {p.name: read_json(p) for p in write_results(configs, sweep.output_dir)}
    for name, data in after.items():
        assert list(data) == ["1e-4", "1e-3"] and data["1e-4"] == before[name]["1e-4"]

    # A later sweep of only 1e-2 into the same folder merges too (earlier keys stay).
    only_high = [c for c in configs if c.learning_rate == 1e-2]
    for cfg in only_high:
        fake_run(cfg, [0.7])
    merged = {p.name: read_json(p) for p in write_results(only_high, sweep.output_dir)}
    assert all(list(d) == ["1e-4", "1e-3", "1e-2"] for d in merged.values())

    # Same file name, different settings (5 epochs): a suffixed file, the original untouched.
    other = expand_lr_sweep(small_sweep(tmp_path, ranks=[4], seeds=[0], lrs=[1e-4],
                                        overrides={"task": "sst2", "num_train_epochs": 5}))
    fake_run(other[0], [0.3] * 5)
    original = (tmp_path / "sweep" / "results_lora_r4_alpha32_constant_seed0.json").read_text()
    [path] = write_results(other, sweep.output_dir)
    assert path.name == "results_lora_r4_alpha32_constant_seed0_2.json"
    assert (tmp_path / "sweep" / "results_lora_r4_alpha32_constant_seed0.json").read_text() == original
    assert read_json(path)["1e-4"]["meta"]["epochs"] == 5
    assert write_results(other, sweep.output_dir) == [path]  # and it keeps going to the same suffixed file


def test_full_finetuning_results_file(tmp_path):
    configs = expand_lr_sweep(small_sweep(tmp_path, method="full", seeds=[3], lrs=[1e-5]))
    fake_run(configs[0], [0.5, 0.45])
    [path] = write_results(configs, tmp_path / "sweep")
    meta = read_json(path)["1e-5"]["meta"]
    assert path.name == results_basename(configs[0]) + ".json" == "results_full_seed3.json"
    assert meta["method"] == "full" and meta["rank"] is None and meta["alpha"] is None


# ---------------------------------------------------------------------------------------------
# The ratio report on synthetic runs with known optima
# ---------------------------------------------------------------------------------------------

FULL_OPT = {0: 1.0e-4, 1: 1.2e-4}
LORA_OPT = {4: {0: 1.0e-3, 1: 1.5e-3}, 16: {0: 8.0e-4, 1: 9.0e-4}, 64: {0: 2.0e-3, 1: 2.4e-3}}


def known_study(tmp_path):
    sweep = LRSweep(method="lora", ranks=[4, 16, 64], alpha=32, seeds=[0, 1], include_full=True,
                    output_dir=str(tmp_path / "study"), overrides={"task": "sst2", "num_train_epochs": 2})
    configs = expand_lr_sweep(sweep)
    for cfg in configs:
        optimum = FULL_OPT[cfg.seed] if cfg.method == "full" else LORA_OPT[cfg.rank][cfg.seed]
        if cfg.method == "lora" and cfg.rank == 64 and cfg.learning_rate == 1e-2:
            fake_run(cfg, [2.0], status="diverged")
            continue
        best = parabola([cfg.learning_rate], optimum)[0]
        fake_run(cfg, [best + 0.1, best])
    return sweep, configs


def test_ratio_analysis_recovers_known_optima_and_pairs_seeds(tmp_path):
    sweep, _ = known_study(tmp_path)
    points = load_points([tmp_path / "study"])
    assert len(points) == 2 * 4 * 9 and points["best_val_loss"].isna().sum() == 2  # the diverged runs
    optima = fit_optima(points)
    assert (optima["how"] == "fit").all()
    for _, row in optima.iterrows():
        expected = FULL_OPT[row["seed"]] if row["method"] == "full" else LORA_OPT[row["rank"]][row["seed"]]
        assert row["optimal_lr"] == pytest.approx(expected, rel=1e-9)
    summary = summarize(optima).set_index("label")
    r4 = summary.loc["LoRA r=4, α=32 (constant α)"]
    # per seed: 1e-3/1e-4 = 10, 1.5e-3/1.2e-4 = 12.5; median of two in log space = geometric mean
    assert r4["seed_ratios"] == pytest.approx({0: 10.0, 1: 12.5})
    assert r4["ratio"] == pytest.approx(math.sqrt(125)) and (r4["ratio_min"], r4["ratio_max"]) == \
        pytest.approx((10.0, 12.5))
    assert r4["optimal_lr"] == pytest.approx(math.sqrt(1e-3 * 1.5e-3))
    assert r4["ratio_of_medians"] == pytest.approx(math.sqrt(1e-3 * 1.5e-3) / math.sqrt(1e-4 * 1.2e-4))
    assert summary.loc["full fine-tuning"]["ratio"] is None


def test_lr_ratio_report_writes_figures_and_states_the_ratios(tmp_path):
    known_study(tmp_path)
    out = tmp_path / "report"
    text = lr_ratio_report([tmp_path / "study"], out)
    assert (out / "lr_ratio_loss_vs_lr.png").stat().st_size > 20_000
    assert (out / "lr_ratio_vs_rank.png").stat().st_size > 20_000
    assert "![" in text and "lr_ratio_loss_vs_lr.png" in text and "lr_ratio_vs_rank.png" in text
    row = next(line for line in text.splitlines() if line.startswith("| LoRA r=4, α=32 (constant α) | 8 |"))
    assert "11.18×" in row and "10.00× – 12.50×" in row
    csv = (out / "lr_ratio.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 * 4  # one row per curve and seed
    from PIL import Image

    width, height = Image.open(out / "lr_ratio_loss_vs_lr.png").size
    assert width > height > 300


def test_report_flags_an_edge_optimum(tmp_path):
    sweep = LRSweep(method="full", seeds=[0], lrs=[1e-5, 1e-4, 1e-3], output_dir=str(tmp_path / "s"),
                    overrides={"task": "sst2"})
    for cfg in expand_lr_sweep(sweep):
        fake_run(cfg, parabola([cfg.learning_rate], 1e-2))  # loss falls all the way to the top of the grid
    text = lr_ratio_report([tmp_path / "s"], tmp_path / "r")
    assert "grid: edge †" in text and "extend the grid up" in text and "No full" not in text


# ---------------------------------------------------------------------------------------------
# The command, end to end on a tiny BERT
# ---------------------------------------------------------------------------------------------

def test_lr_sweep_command_runs_resumes_and_reports(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["lr-sweep", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "sst2", "--ranks", "2", "4",
            "--lrs", "1e-3", "1e-2", "--include_full", "--full_lrs", "1e-3", "--epochs", "1", "--batch_size", "16",
            "--output_dir", out, "--quiet"]
    assert run_cli(*args) == 0
    files = sorted(p.name for p in out.glob("results_*.json"))
    assert files == ["results_full_seed0.json", "results_lora_r2_alpha32_constant_seed0.json",
                     "results_lora_r4_alpha32_constant_seed0.json"]
    data = read_json(out / "results_lora_r4_alpha32_constant_seed0.json")
    assert list(data) == ["1e-3", "1e-2"]
    run_dir = out / data["1e-3"]["meta"]["run_dir"]
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "eval"]
    assert data["1e-3"]["val_losses"] == [e["eval_loss"] for e in evals]
    assert data["1e-3"]["test_acc"] == evals[0]["eval_accuracy"]
    assert not (run_dir / "adapter").exists()  # sweeps keep metrics, not weights, by default
    assert (out / "lr_ratio_report" / "lr_ratio.md").is_file()
    before = {p.name: p.read_text() for p in out.glob("results_*.json")}
    capsys.readouterr()

    # Restart: every point is finished, nothing runs, no results file changes.
    assert run_cli(*args) == 0
    assert "5 already finished (skipped), 0 to run" in capsys.readouterr().out
    assert {p.name: p.read_text() for p in out.glob("results_*.json")} == before


def test_lr_sweep_command_rejects_bad_input_before_writing(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    base = ["lr-sweep", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--output_dir", out, "--quiet"]
    assert run_cli(*base, "--ranks", "4", "64") == 2  # tiny BERT's matrices are 32 wide
    assert "--rank" in capsys.readouterr().err
    assert run_cli(*base, "--ranks", "0") == 2
    assert run_cli(*base, "--full_lrs", "1e-4") == 2
    assert "--include_full" in capsys.readouterr().err
    assert run_cli(*base, "--lrs", "1e-3", "nan") == 2
    assert not out.exists()


@pytest.mark.parametrize("method", ["lora", "loraxs", "full"])
def test_head_trains_at_the_swept_learning_rate_in_every_method(method, tiny_bert_dir, tiny_glue_dir, tmp_path):
    import torch

    from rankwise.train import _param_groups, setup_run

    sweep = LRSweep(method=method, ranks=[4], seeds=[0], lrs=[3e-3], output_dir=str(tmp_path),
                    overrides={"task": "sst2", "model": str(tiny_bert_dir), "data_dir": str(tiny_glue_dir),
                               "quiet": True})
    [cfg] = expand_lr_sweep(sweep)
    setup = setup_run(cfg)
    groups = {g["name"]: g for g in _param_groups(setup)}
    head = [p for h in setup.task.head_modules for n, p in setup.adapter.model.named_parameters()
            if h in n.split(".") and p.requires_grad]
    assert head and all(p.requires_grad for p in head)
    head_ids = {id(p) for p in head}
    assert head_ids <= {id(p) for p in groups["head"]["params"]} and groups["head"]["lr"] == 3e-3
    assert groups["adapter"]["lr"] == 3e-3
    before = [p.detach().clone() for p in head]
    optimizer = torch.optim.AdamW(list(groups.values()))
    batch = setup.task.collate(setup.task.train_features[:8])
    setup.adapter.model(**batch).loss.backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, head))  # the head moved


def test_section_hook_adds_the_analysis_to_rankwise_report(tmp_path):
    from rankwise.report import build_report
    from rankwise.report.lr_ratio import section

    known_study(tmp_path)
    result = build_report([tmp_path / "study"], tmp_path / "report", options={"lr_ratio": True}, sections=[section])
    text = result["report"].read_text()
    assert "## Learning-rate ratio" in text and "11.18×" in text
    assert {p.name for p in result["figures"]} >= {"lr_ratio_loss_vs_lr.png", "lr_ratio_vs_rank.png"}
    from rankwise.report import ReportContext

    assert section(ReportContext(None, None, tmp_path / "plain", options={})) is None  # without --lr_ratio


def test_report_with_a_single_seed(tmp_path):
    """One seed: median = range (floating point must not make a negative error bar)."""
    sweep = LRSweep(method="lora", ranks=[4, 16], seeds=[0], include_full=True, output_dir=str(tmp_path / "s"),
                    overrides={"task": "sst2"})
    for cfg in expand_lr_sweep(sweep):
        fake_run(cfg, parabola([cfg.learning_rate], 1.1e-4 if cfg.method == "full" else 3.3e-3))
    text = lr_ratio_report([tmp_path / "s"], tmp_path / "r")
    assert text.count("30.00× | 30.00× – 30.00× | 30.00×") == 2
    assert (tmp_path / "r" / "lr_ratio_vs_rank.png").stat().st_size > 10_000


def test_alpha_over_r_family_borrows_the_constant_alpha_run_at_the_reference_rank(tmp_path):
    """--alpha 32 --rank 16: r=16 has α=32 under both policies, one experiment; sweeping `ratio` at ranks 4 and 64
    only still gives that family three ranks."""
    root = str(tmp_path / "s")
    constant = LRSweep(ranks=[4, 16, 64], seeds=[0], include_full=True, output_dir=root, overrides={"task": "sst2"})
    ratio = LRSweep(ranks=[4, 64], reference_rank=16, alpha_policies=["ratio"], seeds=[0], output_dir=root,
                    overrides={"task": "sst2"})
    optimum = {("constant", 4): 2e-3, ("constant", 16): 3e-3, ("constant", 64): 4e-3, ("ratio", 4): 6e-3,
               ("ratio", 64): 1e-3}
    for cfg in expand_lr_sweep(constant) + expand_lr_sweep(ratio):
        best = 2e-4 if cfg.method == "full" else optimum[cfg.alpha_policy, cfg.rank]
        fake_run(cfg, parabola([cfg.learning_rate], best))
    summary = summarize(fit_optima(load_points([root]))).set_index("label")
    shared = summary.loc["LoRA r=16, α=32 (α/r fixed) = the constant-α runs"]
    assert shared["optimal_lr"] == pytest.approx(3e-3) and shared["ratio"] == pytest.approx(15.0)
    family = summary[summary["alpha_policy"] == "ratio"].sort_values("rank")
    assert family["rank"].tolist() == [4, 16, 64] and family["scale"].tolist() == [2.0, 2.0, 2.0]
    assert family["ratio"].tolist() == pytest.approx([30.0, 15.0, 5.0])
