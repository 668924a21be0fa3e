"""Training on transformers' Trainer: two processes (torchrun, gloo) give what one process gives, a run killed with
SIGKILL resumes from its checkpoint to the metrics of an uninterrupted run (Gumbel noise included) and a sweep
re-run resumes it too, the best evaluation's weights are the ones saved, the familiar flags work and their bad
uses stop before any work."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from rankwise.config import RunConfig
from rankwise.runs.rundir import read_jsonl, read_summary

LEARNED = ["--method", "loraxs", "--allocation", "learned", "--rank_min", "2", "--rank_max", "8", "--rank_average",
           "5", "--rank_allocation_weights_init", "random", "--rank_allocation_lr", "0.5", "--learning_rate", "1e-2"]


def base_args(model_dir, data_dir, out, *extra):
    return ["train", "--model", str(model_dir), "--data_dir", str(data_dir), "--task", "cola", "--output_dir",
            str(out), "--logging_steps", "1", "--quiet", *map(str, extra)]


def subprocess_env() -> dict:
    # One thread everywhere: the same config and seed give the same numbers at the same thread count.
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def rankwise(*args, launcher=()) -> subprocess.CompletedProcess:
    command = [sys.executable, *launcher, "-m", "rankwise", *map(str, args)]
    return subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)


def evals(run: Path) -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "eval"]


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun over gloo on Linux")
def test_two_processes_at_half_the_batch_match_one_process(tiny_bert_dir, tiny_glue_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = [*LEARNED, "--num_train_epochs", "3"]
    done = rankwise(*base_args(tiny_bert_dir, tiny_glue_dir, one, *common, "--per_device_train_batch_size", "32"))
    assert done.returncode == 0, done.stderr[-3000:]
    done = rankwise(*base_args(tiny_bert_dir, tiny_glue_dir, two, *common, "--per_device_train_batch_size", "16"),
                    launcher=("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29617"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("completed:") == 1  # one summary line, from the main process
    first, second = read_summary(one), read_summary(two)
    assert first["steps"] == second["steps"] == 3 * 3  # 96 examples, global batch 32, 3 epochs
    training = json.loads((two / "config.json").read_text())["training"]
    assert training["num_processes"] == 2 and training["global_batch_size"] == 32
    assert training["launcher"] == "torchrun" and training["steps_per_epoch"] == 3
    # the same hard ranks at every logged step, the same schedules
    alloc_one, alloc_two = read_jsonl(one / "allocation.jsonl"), read_jsonl(two / "allocation.jsonl")
    assert [r["step"] for r in alloc_one] == [r["step"] for r in alloc_two] == list(range(10))  # the final record once
    assert all(a["hard"] == b["hard"] and a["alpha"] == b["alpha"] and a["budget"] == b["budget"]
               for a, b in zip(alloc_one, alloc_two))
    assert len({tuple(r["hard"].values()) for r in alloc_one}) > 1  # the allocation moved: the test can fail
    # evaluation over exactly the dev set, each record once
    for a, b in zip(evals(one), evals(two)):
        assert a["step"] == b["step"]
        for key in ("eval_loss", "eval_accuracy", "eval_matthews_correlation"):
            assert abs(a[key] - b[key]) <= 1e-4, (key, a[key], b[key])
    records = read_jsonl(two / "metrics.jsonl")
    assert len(records) == len({(r["type"], r["step"]) for r in records}) == 9 + 3


def start_and_kill(args: list, run: Path, checkpoint: str) -> None:
    """Start `rankwise` in a process and SIGKILL it once `run/checkpoint` exists and training went past it."""
    process = subprocess.Popen([sys.executable, "-m", "rankwise", *map(str, args)], env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    step = int(checkpoint.split("-")[1])
    try:
        while time.time() < deadline and process.poll() is None:
            records = read_jsonl(run / "metrics.jsonl")
            if (run / checkpoint).is_dir() and records and records[-1]["step"] > step:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed: " + process.stderr.read()[-2000:]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_a_killed_run_resumes_from_its_checkpoint_as_if_never_interrupted(tiny_bert_dir, tiny_glue_dir, tmp_path):
    """Learned allocation with Gumbel noise (tau > 0): weights, allocation weights, optimiser, schedules and every
    random state must come back for the metrics to match."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    common = [*LEARNED, "--tau", "0.5", "--num_train_epochs", "40", "--per_device_train_batch_size", "32",
              "--save_strategy", "steps", "--save_steps", "5"]
    done = rankwise(*base_args(tiny_bert_dir, tiny_glue_dir, whole, *common))
    assert done.returncode == 0, done.stderr[-3000:]
    start_and_kill(base_args(tiny_bert_dir, tiny_glue_dir, killed, *common), killed, "checkpoint-50")
    assert read_summary(killed) is None and (killed / "checkpoint-50").is_dir()
    copy = tmp_path / "sweep" / killed.name  # the same killed run, for the sweep below
    shutil.copytree(killed, copy)

    done = rankwise(*base_args(tiny_bert_dir, tiny_glue_dir, killed, *common, "--resume_from_checkpoint", "true"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((killed / "config.json").read_text())["training"]["resumed_from"].endswith("checkpoint-50")
    assert_same_run(whole, killed)
    assert not list(killed.glob("checkpoint-*"))  # removed once the run completed

    # A sweep over the killed run resumes it from its checkpoint instead of starting over.
    cfg = RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="cola", output_dir=str(copy),
                    logging_steps=1, quiet=True, method="loraxs", allocation="learned", rank_min=2, rank_max=8,
                    rank_average=5, rank_allocation_weights_init="random", rank_allocation_lr=0.5, learning_rate=1e-2,
                    tau=0.5, num_train_epochs=40, per_device_train_batch_size=32, save_strategy="steps",
                    save_steps=5)
    code = subprocess.run([sys.executable, "-c", "import json, sys\nfrom rankwise.config import RunConfig, prepare\n"
                           "from rankwise.sweep import run_sweep\n"
                           "print(json.dumps(run_sweep([prepare(RunConfig(**json.loads(sys.argv[1])))])))",
                           json.dumps(cfg.to_dict())], env=subprocess_env(), capture_output=True, text=True)
    assert code.returncode == 0, code.stderr[-3000:]
    assert json.loads((copy / "config.json").read_text())["training"]["resumed_from"].endswith("checkpoint-50")
    assert_same_run(whole, copy)


def assert_same_run(whole: Path, resumed: Path) -> None:
    a, b = read_jsonl(whole / "metrics.jsonl"), read_jsonl(resumed / "metrics.jsonl")
    assert [(r["type"], r["step"]) for r in a] == [(r["type"], r["step"]) for r in b]  # no record lost or twice
    for x, y in zip(a, b):
        for key in ("loss", "eval_loss", "eval_accuracy"):
            if key in x:
                assert abs(x[key] - y[key]) <= 1e-6, (x["step"], key, x[key], y[key])
    alloc_a, alloc_b = read_jsonl(whole / "allocation.jsonl"), read_jsonl(resumed / "allocation.jsonl")
    assert [r["step"] for r in alloc_a] == [r["step"] for r in alloc_b]
    assert all(abs(x["continuous"][k] - y["continuous"][k]) <= 1e-4 and x["hard"] == y["hard"]
               for x, y in zip(alloc_a, alloc_b) for k in x["continuous"])
    from safetensors.torch import load_file

    wa = load_file(str(whole / "adapter" / "allocation_weights.safetensors"))["weights"]
    wb = load_file(str(resumed / "adapter" / "allocation_weights.safetensors"))["weights"]
    assert float((wa - wb).abs().max()) <= 1e-6
    assert read_summary(whole)["final"] == pytest.approx(read_summary(resumed)["final"], abs=1e-6)


def test_load_best_model_at_end_saves_the_best_evaluations_weights(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, run, "--method", "lora", "--rank", "4",
                              "--num_train_epochs", "6", "--learning_rate", "5e-2", "--per_device_train_batch_size",
                              "16", "--load_best_model_at_end", "--metric_for_best_model", "loss")) == 0
    summary = read_summary(run)
    losses = {r["step"]: r["eval_loss"] for r in evals(run)}
    best_step = min(losses, key=losses.get)
    assert summary["saved_weights"]["which"] == "best" and summary["saved_weights"]["step"] == best_step
    assert best_step != max(losses)  # the best is not the last evaluation: the test tells them apart
    assert "weights: best eval_loss" in capsys.readouterr().out
    assert not list(run.glob("checkpoint-*"))
    assert run_cli("evaluate", "--adapter", run, "--out", tmp_path / "m.json") == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["eval_loss"] == pytest.approx(losses[best_step], abs=1e-5)
    assert metrics["eval_loss"] != pytest.approx(losses[max(losses)], abs=1e-5)
    from rankwise.report import build_report

    report = Path(build_report([run], tmp_path / "report")["report"]).read_text()
    assert "saved weights (adapter/, exports) are their best evaluation's (--load_best_model_at_end)" in report


def test_familiar_flags_bf16_max_steps_and_step_evaluation(tiny_bert_dir, tiny_glue_dir, tmp_path):
    run = tmp_path / "run"
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, run, "--method", "lora", "--rank", "4", "--bf16",
                              "--max_steps", "7", "--eval_strategy", "steps", "--eval_steps", "3",
                              "--per_device_train_batch_size", "16", "--gradient_checkpointing")) == 0
    summary, config = read_summary(run), json.loads((run / "config.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 7
    assert [r["step"] for r in evals(run)] == [3, 6, 7]  # every 3 steps, and at the end (as Trainer does)
    assert config["training"]["precision"] == "bf16" and config["config"]["bf16"] is True
    # bf16 is part of a run's identity: a sweep never takes an fp32 run for it
    from rankwise.runs.naming import run_name

    assert run_name(RunConfig(task="cola", bf16=True)) != run_name(RunConfig(task="cola"))


@pytest.mark.parametrize("extra,expected", [
    (["--fp16"], "--fp16: float16 mixed precision needs a CUDA GPU"),
    (["--tf32"], "--tf32: TF32 needs an Ampere or newer CUDA GPU"),
    (["--report_to", "tensorboard"], "--report_to: `tensorboard` needs the tensorboard package"),
    (["--resume_from_checkpoint", "true"], "holds no checkpoint-N/ directory to resume from"),
    (["--eval_steps", "5"], "--eval_steps: only applies to --eval_strategy steps"),
    (["--eval_strategy", "steps"], "--eval_steps: is required by --eval_strategy steps"),
    (["--load_best_model_at_end", "--save_strategy", "no"], "--save_strategy: (`no`) must match --eval_strategy"),
    (["--early_stopping_patience", "2"], "--early_stopping_patience: needs --load_best_model_at_end"),
    (["--metric_for_best_model", "f1"], "--metric_for_best_model: `f1` is not a metric of task cola"),
    (["--bf16", "--fp16"], "--fp16: and --bf16 both set the precision"),
    (["--allocation", "learned", "--max_steps", "10", "--num_train_epochs", "4", "--memory_start", "400",
      "--memory_end", "200", "--epochs_memory_start_to_end", "2"], "--epochs_memory_start_to_end: (2) is a budget "
                                                                    "schedule in epochs, but --max_steps (10)"),
])
def test_bad_training_options_stop_before_any_work(extra, expected, tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    if "tensorboard" in extra and __import__("importlib").util.find_spec("tensorboard"):
        pytest.skip("tensorboard is installed here")
    out = tmp_path / "run"
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, out, *extra)) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".locks").exists()


def test_push_to_hub_offline_and_resume_with_another_config(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, tmp_path / "p", "--push_to_hub")) == 2
    assert "--push_to_hub: the Hugging Face Hub is switched off here" in capsys.readouterr().err
    run = tmp_path / "run"
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, run, "--num_train_epochs", "2", "--keep_checkpoints",
                              "--per_device_train_batch_size", "32")) == 0
    assert [p.name for p in run.glob("checkpoint-*")] == ["checkpoint-6"]  # --save_total_limit 1 (the default)
    checkpoint = run / "checkpoint-6"
    other = tmp_path / "other"
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, other, "--num_train_epochs", "2", "--seed", "7",
                              "--resume_from_checkpoint", checkpoint)) == 2
    err = capsys.readouterr().err
    assert "--resume_from_checkpoint: `" in err and "was trained with another config (seed: 0 there, 7 here)" in err
    assert not other.exists()


def test_a_checkpoint_cut_short_by_a_kill_is_never_resumed_from(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--num_train_epochs", "3", "--per_device_train_batch_size", "32", "--save_total_limit", "3"]
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, run, *common, "--keep_checkpoints")) == 0
    assert [p.name for p in sorted(run.glob("checkpoint-*"))] == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]
    for name in ("summary.json", "adapter"):  # as if killed while writing checkpoint-9
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    (run / "checkpoint-9" / "trainer_state.json").unlink()
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, run, *common, "--resume_from_checkpoint",
                              run / "checkpoint-9")) == 2
    assert "is incomplete (the run was killed while writing it)" in capsys.readouterr().err
    assert run_cli(*base_args(tiny_bert_dir, tiny_glue_dir, run, *common, "--resume_from_checkpoint", "true")) == 0
    assert json.loads((run / "config.json").read_text())["training"]["resumed_from"].endswith("checkpoint-6")
    assert [r["step"] for r in evals(run)] == [3, 6, 9] and read_summary(run)["status"] == "completed"


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun over gloo on Linux")
def test_adalora_on_two_processes_prunes_to_its_budget_as_on_one(tiny_bert_dir, tiny_glue_dir, tmp_path):
    """AdaLoRA's budget schedule counts optimiser steps of the global batch: on 2 processes it ends at its target
    (it ended above it when steps were counted per process), with the ranks one process gives."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--method", "adalora", "--rank", "2", "--num_train_epochs", "3", "--learning_rate", "1e-2"]
    done = rankwise(*base_args(tiny_bert_dir, tiny_glue_dir, one, *common, "--per_device_train_batch_size", "32"))
    assert done.returncode == 0, done.stderr[-3000:]
    done = rankwise(*base_args(tiny_bert_dir, tiny_glue_dir, two, *common, "--per_device_train_batch_size", "16"),
                    launcher=("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29618"))
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = read_summary(one), read_summary(two)
    target = first["adalora"]["target_triplets"]
    assert first["adalora"]["final_triplets"] == second["adalora"]["final_triplets"] == target
    assert first["hard_ranks"] == second["hard_ranks"] and first["steps"] == second["steps"] == 9


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun over gloo on Linux")
def test_gradient_allocation_on_two_processes_chooses_the_ranks_of_one(tiny_bert_dir, tiny_glue_dir, tmp_path):
    """Every process measures the same global batches and process 0's energies are broadcast."""
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--method", "lora", "--allocation", "gradient", "--rank", "3", "--allocation_batches", "2",
              "--num_train_epochs", "1"]
    done = rankwise(*base_args(tiny_bert_dir, tiny_glue_dir, one, *common, "--per_device_train_batch_size", "32"))
    assert done.returncode == 0, done.stderr[-3000:]
    done = rankwise(*base_args(tiny_bert_dir, tiny_glue_dir, two, *common, "--per_device_train_batch_size", "16"),
                    launcher=("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29619"))
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (json.loads((run / "ranks.json").read_text()) for run in (one, two))
    ranks = [row["rank"] for row in first["matrices"]]
    assert ranks == [row["rank"] for row in second["matrices"]] and len(set(ranks)) > 1
    flat = [[x for row in record["gradient"]["energy"] for x in row if x is not None] for record in (first, second)]
    assert flat[0] == pytest.approx(flat[1], rel=1e-5) and max(flat[0]) > 0
    assert abs(evals(one)[-1]["eval_loss"] - evals(two)[-1]["eval_loss"]) <= 1e-4
