"""Checkpoints complete for every method and checked before a resume (issue 32): AdaLoRA's allocator state (PEFT's
rank_pattern, importance averages and budget) is saved and restored, so a run killed in each of its three phases
(before pruning, while pruning, at its final ranks) resumes to the metrics and ranks of an uninterrupted run; a
missing, corrupt or foreign checkpoint is refused before any work with exit 2 and nothing written."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from rankwise.runs.rundir import read_jsonl, read_summary

# 96 examples at batch 8: 12 steps an epoch, 48 in all. AdaLoRA: tinit 4 steps, final ranks from step 34
# (tfinal 14), a new allocation every 2 steps in between.
ADALORA = ("--method", "adalora", "--rank_average", "2", "--adalora_deltaT", "2", "--num_train_epochs", "4",
           "--per_device_train_batch_size", "8", "--learning_rate", "5e-3", "--logging_steps", "1",
           "--save_strategy", "steps", "--save_steps", "3", "--save_total_limit", "100", "--keep_checkpoints",
           "--save_model", "false", "--quiet")


def train_args(model_dir, data_dir, out, *extra):
    return ("train", "--model", model_dir, "--data_dir", data_dir, "--task", "sst2", "--output_dir", out, *extra)


def killed_at(whole: Path, step: int, to: Path) -> Path:
    """The run directory a kill right after checkpoint-`step` leaves: the run's files without a summary or weights,
    and its checkpoints up to that one."""
    to.mkdir()
    for name in ("config.json", "ranks.json", "metrics.jsonl", "allocation.jsonl"):
        shutil.copy(whole / name, to / name)
    shutil.copytree(whole / f"checkpoint-{step}", to / f"checkpoint-{step}")
    return to


def by_step(path: Path) -> dict:
    return {r["step"]: r for r in read_jsonl(path)}


@pytest.fixture(scope="module")
def adalora_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory) -> Path:
    whole = tmp_path_factory.mktemp("adalora") / "whole"
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, whole, *ADALORA)) == 0
    return whole


@pytest.mark.parametrize("step,phase", [(3, "before pruning"), (21, "pruning"), (39, "final ranks")])
def test_adalora_killed_in_each_phase_resumes_to_the_uninterrupted_run(step, phase, adalora_run, tiny_bert_dir,
                                                                       tiny_glue_dir, tmp_path):
    whole = adalora_run
    allocation = by_step(whole / "allocation.jsonl")
    ranks_then, final = allocation[step]["hard"], read_summary(whole)["hard_ranks"]
    assert len(set(final.values())) > 1 and sum(final.values()) < 12 * 3  # pruned, unevenly
    assert (ranks_then == {k: 3 for k in final}) == (phase == "before pruning")  # init_r 3 until the first mask
    assert allocation[step]["discrete"] == (phase == "final ranks")
    resumed = killed_at(whole, step, tmp_path / "resumed")
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, resumed, *ADALORA, "--resume_from_checkpoint",
                               "true")) == 0
    a, b = read_summary(whole), read_summary(resumed)
    assert b["hard_ranks"] == a["hard_ranks"] and b["adalora"] == a["adalora"]
    assert b["final"] == pytest.approx(a["final"], abs=1e-6) and b["best"] == pytest.approx(a["best"], abs=1e-6)
    after = by_step(resumed / "allocation.jsonl")
    assert all(after[s]["hard"] == allocation[s]["hard"] and after[s]["budget"] == allocation[s]["budget"]
               for s in allocation)  # every allocation, the triplet counts logged after the resume too
    evals = [r for r in read_jsonl(whole / "metrics.jsonl") if r["type"] == "eval"]
    again = [r for r in read_jsonl(resumed / "metrics.jsonl") if r["type"] == "eval"]
    assert [r["step"] for r in again] == [r["step"] for r in evals]
    assert all(abs(x["eval_loss"] - y["eval_loss"]) <= 1e-6 for x, y in zip(evals, again))


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def damage_weights(checkpoint: Path, whole: Path) -> str:
    (checkpoint / "rankwise_trainable.safetensors").write_bytes(b"\x00garbage" * 64)
    return "rankwise_trainable.safetensors is not a readable safetensors file"


def cut_weights(checkpoint: Path, whole: Path) -> str:
    path = checkpoint / "rankwise_trainable.safetensors"
    path.write_bytes(path.read_bytes()[:-100])  # a copy cut short
    return "rankwise_trainable.safetensors is not a readable safetensors file (Error while deserializing header"


def swap_weights(checkpoint: Path, whole: Path) -> str:
    shutil.copy(whole / "checkpoint-39" / "rankwise_trainable.safetensors", checkpoint)  # another step's state
    return "rankwise_trainable.safetensors holds other tensors than its rankwise_state.json records"


def damage_optimizer(checkpoint: Path, whole: Path) -> str:
    (checkpoint / "optimizer.pt").write_text("not torch")
    return "optimizer.pt is not a PyTorch file"


def damage_trainer_state(checkpoint: Path, whole: Path) -> str:
    (checkpoint / "trainer_state.json").write_text("{")
    return "trainer_state.json cannot be read"


@pytest.mark.parametrize("damage", [damage_weights, cut_weights, swap_weights, damage_optimizer, damage_trainer_state])
def test_a_damaged_checkpoint_is_refused_before_any_work(damage, adalora_run, tiny_bert_dir, tiny_glue_dir, tmp_path,
                                                         capsys):
    run = killed_at(adalora_run, 21, tmp_path / "run")
    expected = damage(run / "checkpoint-21", adalora_run)
    before = snapshot(tmp_path)
    for given in ("true", run / "checkpoint-21"):
        assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, run, *ADALORA, "--resume_from_checkpoint",
                                   given)) == 2
        err = capsys.readouterr().err
        assert f"--resume_from_checkpoint: `{run / 'checkpoint-21'}` is damaged: {expected}" in err, err
        assert "Resume from an earlier checkpoint of the run, or train it anew" in err
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock, no summary


def test_a_missing_or_foreign_checkpoint_path_is_named_for_what_it_is(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    out, foreign = tmp_path / "run", tmp_path / "hf-checkpoint"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"")
    (tmp_path / "file").write_text("x")
    for given, expected in ((tmp_path / "nowhere", f"`{tmp_path / 'nowhere'}` does not exist. Give a checkpoint-N/ "
                                                   "directory of the interrupted run, or `true` for its last one"),
                            (tmp_path / "file", "is a file, not a checkpoint directory"),
                            (foreign, f"`{foreign}` is not a rankwise checkpoint")):
        assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, out, *ADALORA, "--resume_from_checkpoint",
                                   given)) == 2
        assert expected in capsys.readouterr().err
    assert not out.exists()


LEARNED_LOGGING = ("--method", "loraxs", "--allocation", "learned", "--rank_min", "2", "--rank_max", "6",
                   "--rank_average", "4", "--tau", "0.5", "--num_train_epochs", "3", "--per_device_train_batch_size",
                   "8", "--logging_steps", "5", "--save_strategy", "steps", "--save_steps", "3",
                   "--save_total_limit", "100", "--keep_checkpoints", "--save_model", "false", "--quiet")


def test_a_resume_logs_and_evaluates_as_the_uninterrupted_run(tiny_bert_dir, tiny_glue_dir, tmp_path):
    """Checkpoint-12 is an epoch's last step, written before that epoch's evaluation, and in the middle of a logging
    window (logging every 5 steps): the resumed run evaluates at step 12 as the uninterrupted one did, and its loss
    records (steps 15, 20, ...) average the same steps, the ones before the kill included."""
    whole = tmp_path / "whole"
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, whole, *LEARNED_LOGGING)) == 0
    resumed = killed_at(whole, 12, tmp_path / "resumed")  # its metrics.jsonl still holds the evaluation at 12
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, resumed, *LEARNED_LOGGING, "--resume_from_checkpoint",
                               "true")) == 0
    a, b = read_jsonl(whole / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
    assert [(r["type"], r["step"]) for r in b] == [(r["type"], r["step"]) for r in a]
    assert ("eval", 12) in [(r["type"], r["step"]) for r in b]
    for x, y in zip(a, b):
        for key in ("loss", "eval_loss", "skipped_steps"):
            if key in x:
                assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])
    steps = [r["step"] for r in read_jsonl(resumed / "allocation.jsonl")]
    assert steps == [r["step"] for r in read_jsonl(whole / "allocation.jsonl")] and len(steps) == len(set(steps))


def test_true_passes_over_a_damaged_last_checkpoint_to_the_one_before(adalora_run, tiny_bert_dir, tiny_glue_dir,
                                                                      tmp_path, capsys):
    """What a sweep does with a killed run (`resume_from_checkpoint=true`): a damaged last checkpoint is named and
    passed over, and the run resumes from the one before to the uninterrupted run's result."""
    run = killed_at(adalora_run, 21, tmp_path / "run")
    shutil.copytree(adalora_run / "checkpoint-24", run / "checkpoint-24")
    cut_weights(run / "checkpoint-24", adalora_run)
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, run, *ADALORA, "--resume_from_checkpoint", "true")) == 0
    err = capsys.readouterr().err
    assert f"warning: --resume_from_checkpoint: `{run / 'checkpoint-24'}` is damaged" in err and "one before" in err
    assert json.loads((run / "config.json").read_text())["training"]["resumed_from"].endswith("checkpoint-21")
    assert read_summary(run)["hard_ranks"] == read_summary(adalora_run)["hard_ranks"]
