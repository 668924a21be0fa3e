"""What a transformers user types works (issue 35): every field of transformers' TrainingArguments is a `rankwise
train` flag with its name and default (or a documented rankwise default, or a refusal with its reason); unknown
flags get train's usage and the closest flag; warm-up steps are transformers'; and the familiar flags are honoured in
one real run."""

from __future__ import annotations

import dataclasses
import enum
import json

import pytest
import torch
from transformers import TrainingArguments

from conftest import run_cli
from rankwise.cli import build_parser
from rankwise.config import RunConfig, resolve_defaults
from rankwise.config.run import FIELDS, OWNER
from rankwise.config.trainer import REFUSED, warmup_steps
from rankwise.config.training import TRANSFORMERS_DEFAULTS_CHANGED
from rankwise.report.aggregate import load_runs
from rankwise.train import STATE_FILE, DamagedCheckpoint, check_checkpoint
from rankwise.runs.rundir import read_jsonl

TRANSFORMERS_FIELDS = {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}


def train_parser():
    return build_parser().parse_args(["train"])._commands["train"]


def transformers_default(field: dataclasses.Field):
    if field.default is dataclasses.MISSING:
        return None  # a factory's dict or list: transformers' applies when the flag is not given
    return field.default.value if isinstance(field.default, enum.Enum) else field.default


def test_every_trainingarguments_field_is_a_train_flag_with_transformers_default_or_a_stated_one():
    flags = {flag for action in train_parser()._actions for flag in action.option_strings}
    changed = set()
    for name, field in TRANSFORMERS_FIELDS.items():
        if name == "lr_scheduler_type":  # rankwise's --lr_scheduler, under transformers' name too
            assert "--lr_scheduler_type" in flags and FIELDS["lr_scheduler"].default == "linear_schedule_with_warmup"
            continue
        assert f"--{name}" in flags, name
        if FIELDS[name].default != transformers_default(field):
            changed.add(name)
            assert OWNER[name].__name__ != "TrainerArguments", name  # passed-through fields keep transformers'
    assert changed == set(TRANSFORMERS_DEFAULTS_CHANGED)  # each with its reason in config/training.py
    assert set(REFUSED) <= set(TRANSFORMERS_FIELDS)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_refused_field_is_refused_with_its_reason(tiny_bert_dir, tmp_path, capsys, name):
    default = FIELDS[name].default
    value = str(not default).lower() if isinstance(default, bool) else "1"
    assert run_cli("train", "--model", tiny_bert_dir, f"--{name}", value, "--output_dir", tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert f"--{name}: is not used by rankwise: {REFUSED[name]}" in err and not (tmp_path / "r").exists()


def test_an_unknown_flag_gets_trains_usage_and_the_closest_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli("train", "--warmup_stepz", "3")
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("usage: rankwise train ")
    assert "rankwise train: error: unrecognized arguments: --warmup_stepz 3 (did you mean --warmup_steps?)" in err


@pytest.mark.parametrize("steps", [6, 10, 17, 1000])
@pytest.mark.parametrize("given", [{"warmup_ratio": 0.1}, {"warmup_ratio": 0.06}, {"warmup_steps": 3},
                                   {"warmup_steps": 0.25}, {"warmup_ratio": 0.0}])
def test_warmup_steps_are_those_transformers_computes(tmp_path, steps, given):
    cfg = resolve_defaults(RunConfig(**given))
    fraction = given.get("warmup_ratio", given.get("warmup_steps"))  # transformers 5: warmup_steps takes a ratio
    expected = TrainingArguments(output_dir=str(tmp_path), warmup_steps=fraction).get_warmup_steps(steps)
    assert warmup_steps(cfg, steps) == expected
    if given == {"warmup_ratio": 0.1} and steps == 6:
        assert expected == 1


def test_the_familiar_flags_are_honoured_in_one_run(tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch):
    import rankwise.train as train

    seen = {}
    original_guard, original_scheduler, original_init = train.GuardedAdamW.__init__, train.get_scheduler, \
        train.RankwiseTrainer.__init__

    def guard(self, groups, **kwargs):
        seen["optimizer"] = kwargs
        original_guard(self, groups, **kwargs)

    def scheduler(name, optimizer, **kwargs):
        seen["scheduler"] = (name, kwargs)
        return original_scheduler(name, optimizer, **kwargs)

    def trainer(self, setup, args, run):
        seen["trainer"] = self
        original_init(self, setup, args, run)

    monkeypatch.setattr(train.GuardedAdamW, "__init__", guard)
    monkeypatch.setattr(train, "get_scheduler", scheduler)
    monkeypatch.setattr(train.RankwiseTrainer, "__init__", trainer)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "elsewhere")
    deterministic = torch.are_deterministic_algorithms_enabled()
    out, logs = tmp_path / "run", tmp_path / "tb"
    try:
        code = run_cli(
            "train", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "cola", "--output_dir", out,
            "--per_device_train_batch_size", "8", "--num_train_epochs", "1.5", "--learning_rate", "5e-3",
            "--lr_scheduler_type", "constant_with_warmup", "--warmup_steps", "0.5", "--optim", "adamw_torch",
            "--adam_beta1", "0.8", "--adam_beta2", "0.99", "--adam_epsilon", "1e-6", "--logging_strategy", "epoch",
            "--logging_dir", logs, "--report_to", "all", "--run_name", "tiny-run", "--do_train", "--do_eval",
            "--label_smoothing_factor", "0.1", "--data_seed", "7", "--full_determinism", "--eval_on_start",
            "--save_only_model", "--save_safetensors", "true", "--eval_accumulation_steps", "2", "--use_cpu",
            "--metric_for_best_model", "eval_loss", "--greater_is_better", "false", "--load_best_model_at_end",
            "--keep_checkpoints", "--quiet")
        assert code == 0
        determinism_set = torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(deterministic)
    args = seen["trainer"].args
    # 96 examples / 8 = 12 steps an epoch; 1.5 epochs = 18 steps (transformers' ceil), warm-up ceil(0.5 × 18) = 9
    assert seen["scheduler"] == ("constant_with_warmup", {"num_warmup_steps": 9, "num_training_steps": 18,
                                                          "scheduler_specific_kwargs": None})
    assert seen["optimizer"]["betas"] == (0.8, 0.99) and seen["optimizer"]["eps"] == 1e-6
    assert seen["optimizer"]["fused"] is False  # --optim adamw_torch: torch's unfused AdamW
    records = read_jsonl(out / "metrics.jsonl")
    trains = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in trains] == [12, 18]  # once an epoch: not at logging_steps 10
    assert trains[0]["learning_rate"] == pytest.approx(5e-3)  # constant after its 9 warm-up steps
    assert [r["step"] for r in evals] == [0, 12, 18]  # --eval_on_start
    summary = json.loads((out / "summary.json").read_text())
    best = min(evals[1:], key=lambda r: r["eval_loss"])  # eval_loss, lower is better; the untrained one apart
    assert summary["saved_weights"]["which"] == "best" and summary["saved_weights"]["step"] == best["step"]
    assert summary["steps"] == 18 and summary["best"]["step"] > 0
    checkpoint = next(out.glob("checkpoint-*"))
    assert not (checkpoint / "optimizer.pt").exists() and not (checkpoint / "scheduler.pt").exists()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()  # --save_safetensors: nothing else is written
    assert not [p for p in out.rglob("*") if p.suffix in (".bin", ".pkl")]
    assert args.run_name == "tiny-run" and args.data_seed == 7 and args.label_smoothing_factor == 0.1
    assert seen["trainer"].label_smoother is not None and seen["trainer"].label_smoother.epsilon == 0.1
    assert args.eval_accumulation_steps == 2 and args.use_cpu and args.greater_is_better is False
    assert args.full_determinism and determinism_set
    with pytest.raises(DamagedCheckpoint, match="written with --save_only_model"):  # it cannot resume exactly
        check_checkpoint(checkpoint, json.loads((checkpoint / STATE_FILE).read_text()))
    row = load_runs([out]).iloc[0]  # the report's best, too, leaves the untrained model's evaluation out
    assert row["best_epoch"] == summary["best_epoch"] and row["best_epoch"] > 0
    import os

    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(logs)


@pytest.mark.parametrize("flags,expected", [
    (["--save_safetensors", "false"], "--save_safetensors: false asks for PyTorch pickles"),
    (["--optim", "sgd"], "--optim: `sgd`: rankwise trains with AdamW"),
    (["--do_predict"], "--do_predict: `rankwise train` does not predict"),
    (["--save_only_model", "--resume_from_checkpoint", "true"], "--save_only_model: writes checkpoints without"),
    (["--warmup_steps", "0.1", "--warmup_ratio", "0.2"], "--warmup_steps: (0.1) and --warmup_ratio both give"),
    (["--label_smoothing_factor", "0.1", "--task", "stsb"], "smooths class labels, but task stsb is a regression"),
])
def test_flags_rankwise_cannot_honour_are_refused_with_the_reason(tiny_bert_dir, tmp_path, capsys, flags, expected):
    assert run_cli("train", "--model", tiny_bert_dir, *flags, "--output_dir", tmp_path / "r") == 2
    assert expected in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_eval_accumulation_gives_the_same_metrics(tiny_bert_dir, tiny_glue_dir, tmp_path):
    """Moving the evaluation's per-example values to the host every 2 batches or once at the end: same metrics."""
    from accelerate import Accelerator

    from rankwise.data.prepare import prepare_task

    cfg = resolve_defaults(RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="cola"))
    task = prepare_task(cfg)
    loader = torch.utils.data.DataLoader(task.eval_sets["eval"], batch_size=5, collate_fn=task.collate)
    once = task.evaluate(task.model, {"eval": loader}, Accelerator(cpu=True))
    every_two = task.evaluate(task.model, {"eval": loader}, Accelerator(cpu=True), 2)
    assert once == every_two and set(once) >= {"eval_loss", "eval_matthews_correlation"}
