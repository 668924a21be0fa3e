"""`rankwise glue`: the adaptive LoRA-XS study's run_glue_adaptive.py command lines, as written in its reports."""

import sys

import pytest

from conftest import run_cli, shared_glue
from rankwise.runs.rundir import read_summary

STUDY = {  # the study's command lines, after `python scripts/run_glue_adaptive.py`
    "memory": "--target_task cola --wandb_disabled False --seed 0 --rank_allocation_lr 0.002 --epoch 50 --rank_min 5 "
              "--rank_max 30 --memory_start 30000 --memory_end 60000 --epochs_memory_start 3 "
              "--epochs_memory_start_to_end 5 --epochs_rank_discrete 1 --lr_scheduler constant_schedule",
    "alpha": "--target_task cola --wandb_disabled False --seed 0 --rank_allocation_lr 0.01 --epoch 50 --rank_min 5 "
             "--rank_max 30 --rank_average 20 --epochs_rank_discrete 1 --lr_scheduler constant_schedule "
             "--alpha_min 0.1 --alpha_max 5",
    "qnli": "--target_task qnli --wandb_disabled False --seed 0 --lr 2e-3 --cls_lr 6e-4 --rank_allocation_lr 0.002 "
            "--epoch 15 --rank_min 5 --rank_max 25 --rank_average 20 --epochs_rank_discrete 1 "
            "--lr_scheduler linear_schedule_with_warmup --alpha_min 0.5 --alpha_max 3 --alpha_scheduler exponential",
}


def study(name, tmp_path, *extra):
    """A study command line plus what this machine needs (a model and a data dir), checked with --dry_run."""
    return ["glue", *STUDY[name].split(), "--model", "minilm", "--data_dir", str(shared_glue()),
            "--output_dir", str(tmp_path / "runs"), "--dry_run", *extra]


def test_study_alpha_command_runs_as_written(tmp_path, capsys):
    assert run_cli(*study("alpha", tmp_path)) == 0
    out = capsys.readouterr().out
    assert "would run" in out and "seed 0, 50 epochs" in out and out.count("would run") == 1
    assert "budget 9,600 → 9,600 parameters" in out  # 24 MiniLM matrices × 20²
    assert not (tmp_path / "runs").exists()


def test_study_memory_command_is_infeasible_on_minilm_with_a_clear_error(tmp_path, capsys):
    # Sized for RoBERTa-large's 96 matrices; MiniLM's 24 hold at most 24 × 30² = 21,600.
    assert run_cli(*study("memory", tmp_path)) == 2
    err = capsys.readouterr().err
    assert "--memory_start: budget 30,000 is outside what 24 target matrices can hold with ranks in [5, 30]" in err
    assert not (tmp_path / "runs").exists()


def test_study_qnli_command_stops_on_missing_data_and_its_flags_work_on_rte(tmp_path, capsys):
    assert run_cli(*study("qnli", tmp_path)) == 2
    assert "task qnli: missing" in capsys.readouterr().err
    args = study("qnli", tmp_path)
    args[args.index("qnli")] = "rte"
    assert run_cli(*args) == 0
    assert "would run" in capsys.readouterr().out


def test_seeds_zero_to_four_by_default_and_wandb_note_when_missing(tiny_bert_dir, tiny_glue_dir, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    code = run_cli("glue", "--target_task", "cola", "--wandb_disabled", "False", "--epoch", "2", "--rank_min", "2",
                   "--rank_max", "8", "--rank_average", "5", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir,
                   "--output_dir", tmp_path / "runs", "--max_train_samples", "32", "--quiet")
    assert code == 0
    runs = sorted(r for r in (tmp_path / "runs").iterdir() if not r.name.startswith("."))  # .locks/ of the runner
    summaries = [read_summary(r) for r in runs]
    assert sorted(s["seed"] for s in summaries) == [0, 1, 2, 3, 4]
    assert all(s["status"] == "completed" and s["allocation"] == "learned" for s in summaries)
    assert all(r.name.startswith("cola_loraxs_learned_r2-8_a0.5-3_lr0.01_avg5_seed") for r in runs)
    assert "wandb is not installed" in capsys.readouterr().err

    # The same command again skips the finished seeds: nothing is retrained or overwritten.
    before = {r.name: (r / "summary.json").read_text() for r in runs}
    code = run_cli("glue", "--target_task", "cola", "--epoch", "2", "--rank_min", "2", "--rank_max", "8",
                   "--rank_average", "5", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir,
                   "--output_dir", tmp_path / "runs", "--max_train_samples", "32", "--quiet")
    assert code == 0
    assert {r.name: (r / "summary.json").read_text() for r in sorted((tmp_path / "runs").iterdir())
            if r.is_dir() and not r.name.startswith(".")} == before


@pytest.mark.parametrize("flag,value,expected", [
    ("--rank_min", "30", "--rank_min: (30) is greater than --rank_max (5)"),
    ("--alpha_min", "0", "--alpha_min: must be > 0 with --alpha_scheduler exponential"),
])
def test_bad_study_flags_fail_before_work(tmp_path, capsys, flag, value, expected):
    args = ["glue", "--target_task", "rte", "--rank_max", "5", "--alpha_scheduler", "exponential", flag, value,
            "--model", "minilm", "--data_dir", str(shared_glue()), "--output_dir", str(tmp_path / "runs")]
    if flag == "--alpha_min":
        args[args.index("--rank_max") + 1] = "30"
    assert run_cli(*args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_glue_keeps_the_studys_random_initialisation_while_train_defaults_to_uniform():
    import argparse

    from rankwise.studies.glue_compat import GLUE_FLAGS, glue_configs
    from rankwise.config import RunConfig, resolve_defaults

    args = argparse.Namespace(**{field: None for field, _ in GLUE_FLAGS.values()}, seed=0, wandb_disabled=True,
                              quiet=True, output_dir="runs/glue")
    args.model = "minilm"
    (cfg,) = glue_configs(args)
    assert cfg.rank_allocation_weights_init == "random" and cfg.rank_allocation_lr == 0.01
    train = resolve_defaults(RunConfig(task="cola", method="loraxs", allocation="learned"))
    assert train.rank_allocation_weights_init == "uniform" and train.rank_allocation_lr == 0.01
    assert (train.budget_mode, train.alpha_min, train.alpha_max, train.alpha_scheduler) == ("capped", 0.5, 3.0,
                                                                                           "linear")
