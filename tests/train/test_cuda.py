"""On a CUDA GPU (skipped without one): every method × allocation trains a few bf16 steps on the GPU, resumes from a
checkpoint to the uninterrupted run's metrics, exports, and evaluates to the run's own numbers. `bench/gpu/run.py`
runs this module on the GPU machine (section e); CI has no GPU."""

import json
import shutil

import pytest
import torch

from conftest import run_cli
from rankwise.runs.rundir import read_jsonl, read_summary

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LEARNED = ["--allocation", "learned", "--rank_min", "2", "--rank_max", "6", "--rank_average", "4", "--tau", "0.5"]
CASES = {
    "loraxs-uniform": ["--method", "loraxs", "--rank", "4"],
    "loraxs-learned": ["--method", "loraxs", *LEARNED],
    "loraxs-annealing": ["--method", "loraxs", *LEARNED[:-2], "--rank_annealing"],
    "loraxs-gradient": ["--method", "loraxs", "--allocation", "gradient", "--rank", "3", "--allocation_batches", "1"],
    "lora-learned": ["--method", "lora", *LEARNED],
    "lora-eva": ["--method", "lora", "--init", "eva", "--rank", "4"],
    "dora-learned": ["--method", "dora", *LEARNED],
    "adalora": ["--method", "adalora", "--rank", "2"],
    "full": ["--method", "full"],
}
EXPORT = {"adalora": "peft", "lora-learned": "peft", "lora-eva": "peft"}


def _evals(run):
    return [r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "eval"]


@pytest.mark.parametrize("case", list(CASES))
def test_a_gpu_run_trains_resumes_exports_and_evaluates(case, tiny_bert_dir, tiny_glue_dir, tmp_path):
    whole, resumed, export = tmp_path / "whole", tmp_path / "resumed", tmp_path / "export"
    common = ["--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "sst2", "--bf16", "--quiet",
              "--num_train_epochs", "4", "--per_device_train_batch_size", "16", "--save_strategy", "epoch",
              "--save_total_limit", "10", "--logging_steps", "2", *CASES[case]]
    assert run_cli("train", *common, "--output_dir", whole, "--keep_checkpoints") == 0
    summary = read_summary(whole)
    assert summary["status"] == "completed" and summary["skipped_steps"] == 0
    training = json.loads((whole / "config.json").read_text())["training"]
    assert training["device"].startswith("cuda") and training["precision"] == "bf16"
    assert all(torch.isfinite(torch.tensor(v)) for k, v in summary["final"].items() if k.startswith("eval_"))

    shutil.copytree(whole, resumed)  # killed after epoch 2: the later checkpoints and the end never happened
    for name in ("summary.json", "adapter", "model", "checkpoint-18", "checkpoint-24"):
        path = resumed / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert run_cli("train", *common, "--output_dir", resumed, "--resume_from_checkpoint", "true") == 0
    for a, b in zip(_evals(whole), _evals(resumed), strict=True):
        assert a["step"] == b["step"] and abs(a["eval_loss"] - b["eval_loss"]) <= 1e-3, (a, b)

    fmt = EXPORT.get(case, "merged")
    assert run_cli("export", whole, "--format", fmt, "--out", export) == 0
    out = tmp_path / "evaluation.json"
    source = ["--model" if fmt == "merged" else "--adapter", export]
    assert run_cli("evaluate", *source, "--task", "sst2", "--data_dir", tiny_glue_dir, "--out", out) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert abs(metrics["eval_accuracy"] - summary["final"]["eval_accuracy"]) <= 0.05  # bf16 run, float32 export
