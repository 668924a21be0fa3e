"""The Python API (issue 21) on tiny random BERTs: a plan's LoraConfig makes PEFT train exactly the planned ranks and
counts; `rankwise.plan` and `rankwise plan` give the same plan; a plain transformers Trainer with
RankAllocationCallback learns an allocation that ends within its budget, with the allocation weights in their own
optimiser group on the Trainer's schedule; exports of a wrapped model and of a CLI run, moved to another directory,
load with plain PEFT / transformers in a process without rankwise, to the same logits, with the task's label names,
num_labels and problem_type; bad input raises ConfigError (a ValueError) with the CLI's message; push_to_hub is
refused offline before any work; and docs/api.md's examples run (on the embedded MiniLM) and do what they say."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, GPT2ForSequenceClassification,
                          Trainer, TrainerCallback, TrainingArguments)

import rankwise
from conftest import REPO, run_cli, tiny_gpt2_config
from rankwise.config import RunConfig
from rankwise.data import encode_classification, load_glue
from rankwise.methods import get_method
from rankwise.models import EMBEDDED, base_model_reference, load_tokenizer, locate_base_model
from rankwise.train import setup_run, train

TOL = 1e-5
LABELS = {"id2label": {0: "no_cat", 1: "cat"}, "label2id": {"no_cat": 0, "cat": 1}}


def fresh(model_dir, num_labels=2, seed=1, **kw):
    torch.manual_seed(seed)  # the new head
    return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels, **kw)


def cola_features(model_dir, data_dir, split="train", n=None):
    tokenizer = load_tokenizer(str(model_dir))
    data = load_glue("cola", str(data_dir))
    examples = data.train if split == "train" else data.evals["eval"]
    return encode_classification(examples[:n], tokenizer, 128, regression=False), tokenizer


def dev_batch(model_dir, data_dir, n=16):
    features, tokenizer = cola_features(model_dir, data_dir, "dev", n)
    batch = dict(DataCollatorWithPadding(tokenizer)(features))
    batch.pop("labels")
    return batch


@torch.no_grad()
def logits(model, batch):
    model.eval()
    return model(**batch).logits.float()


def cli_error(capsys, *args) -> str:
    assert run_cli(*args) == 2
    err = capsys.readouterr().err.strip()
    return err.split(": error: ", 1)[1]


# ---------------------------------------------------------------------------------------------
# plan → peft.LoraConfig
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("allocation, options", [
    ("uniform", {"rank": 4}),
    ("linear_decay", {"rank_first": 8, "rank_last": 2, "match_budget": True, "rank": 4}),
    ("attention_heavy", {"rank_attention": 6, "rank_mlp": 2, "alpha_policy": "ratio"}),
])
def test_plan_lora_config_makes_peft_train_exactly_the_planned_ranks(allocation, options, tiny_bert_dir):
    model = fresh(tiny_bert_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = rankwise.plan(model, method="lora", allocation=allocation, **options)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # planning changes nothing
    assert len(set(plan.ranks.values())) == (1 if allocation == "uniform" else 3 if allocation == "linear_decay" else 2)

    config = plan.lora_config(lora_alpha=32)
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == plan.trainable_parameters == plan.adapter_parameters + plan.head_parameters
    for row in plan.rows:
        layer = peft_model.base_model.model.get_submodule(row.name)
        assert layer.r["default"] == row.rank
        assert layer.lora_A["default"].weight.shape == (row.rank, row.in_features)
        # lora_alpha=32 rescales every alpha of the plan (16 by default); `ratio` keeps alpha/r at lora_alpha/rank
        assert layer.scaling["default"] == pytest.approx(row.alpha * 2 / row.rank, rel=1e-12)
    if options.get("match_budget"):  # rescaled to the budget of rank 4 everywhere: within it, by less than a rank
        uniform = sum(4 * (r.in_features + r.out_features) for r in plan.rows)
        assert uniform - max(r.in_features + r.out_features for r in plan.rows) < plan.adapter_parameters <= uniform

    frame = plan.to_frame()
    assert list(frame["name"]) == list(plan.ranks) and list(frame["rank"]) == list(plan.ranks.values())
    assert frame["parameters"].sum() == plan.adapter_parameters
    assert json.loads(plan.to_json())["totals"]["trainable_parameters"] == trainable


def test_plan_of_a_gpt2_classifier_gives_peft_its_conv1d_layout():
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=3, pad_token_id=0))
    plan = rankwise.plan(model, method="lora", allocation="linear_decay", rank_first=6, rank_last=2)
    config = plan.lora_config()
    assert config.fan_in_fan_out and plan.head_modules == ["score"]
    peft_model = get_peft_model(model, config)
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == plan.trainable_parameters


def test_plan_by_name_is_the_plan_the_cli_writes(tiny_bert_dir, tmp_path, capsys):
    options = dict(rank_min=2, rank_max=8, rank_average=5, rank_allocation_weights_init="random", seed=3)
    plan = rankwise.plan(str(tiny_bert_dir), method="loraxs", allocation="learned", **options)
    flags = [x for k, v in options.items() for x in (f"--{k}", v)]
    assert run_cli("plan", "--model", tiny_bert_dir, "--method", "loraxs", "--allocation", "learned", *flags,
                   "--out", tmp_path / "plan.json") == 0
    capsys.readouterr()
    assert json.loads(plan.to_json()) == json.loads((tmp_path / "plan.json").read_text())
    assert len(set(plan.ranks.values())) > 1  # random initial weights: ranks differ per matrix
    assert plan.budget["start"] == 12 * 5 ** 2  # n · rank_average², LoRA-XS's cost


def test_custom_rank_file_from_python(tiny_bert_dir, tmp_path, capsys):
    ranks = tmp_path / "ranks.json"
    ranks.write_text(json.dumps({"layer_ranks": [8, 4, 2]}))
    plan = rankwise.plan(fresh(tiny_bert_dir), method="loraxs", allocation="custom", rank_file=ranks)  # a Path
    assert [row.rank for row in plan.rows] == [8] * 4 + [4] * 4 + [2] * 4
    assert plan.adapter_parameters == 4 * (64 + 16 + 4)

    ranks.write_text(json.dumps({"layer_ranks": [8, 4]}))
    with pytest.raises(rankwise.ConfigError) as error:
        rankwise.plan(fresh(tiny_bert_dir), method="loraxs", allocation="custom", rank_file=str(ranks))
    assert str(error.value) == cli_error(capsys, "plan", "--model", tiny_bert_dir, "--method", "loraxs",
                                         "--allocation", "custom", "--rank_file", ranks)


# ---------------------------------------------------------------------------------------------
# Bad input: ConfigError (a ValueError) with the CLI's message
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, flags", [
    ({"method": "loraxs", "allocation": "learned", "rank_min": 40, "rank_max": 30},
     ["--method", "loraxs", "--allocation", "learned", "--rank_min", 40, "--rank_max", 30]),
    ({"method": "lorax"}, ["--method", "lorax"]),
    ({"method": "loraxs", "allocation": "learned", "rank_min": 2, "rank_max": 8, "memory_start": 10_000},
     ["--method", "loraxs", "--allocation", "learned", "--rank_min", 2, "--rank_max", 8, "--memory_start", 10_000]),
    ({"method": "lora", "allocation": "uniform", "rank_min": 5}, ["--method", "lora", "--rank_min", 5]),
    ({"method": "lora", "allocation": "linear_decay", "rank_first": 8}, ["--method", "lora", "--allocation",
                                                                        "linear_decay", "--rank_first", 8]),
])
def test_bad_input_raises_config_error_with_the_cli_message(options, flags, tiny_bert_dir, capsys):
    for call in (rankwise.plan, rankwise.wrap):
        with pytest.raises(rankwise.ConfigError) as error:
            call(fresh(tiny_bert_dir), **options)
        assert isinstance(error.value, ValueError)
        assert str(error.value) == cli_error(capsys, "plan", "--model", tiny_bert_dir, *flags)


def test_bad_python_arguments_are_named(tiny_bert_dir):
    model = fresh(tiny_bert_dir)
    cases = [
        (lambda: rankwise.plan(model, rank_averag=5), "--rank_averag: unknown option of rankwise.plan(). Did you mean "
                                                      "`rank_average`?"),
        (lambda: rankwise.wrap(model, learning_rate=1e-3), "--learning_rate: is a training or data option"),
        (lambda: rankwise.plan(model, rank="8"), '--rank: bad value in rankwise.plan(): got "8" (a str), but it '
                                                 "takes an integer"),
        (lambda: rankwise.plan(model, method="loraxs").lora_config(), "--method: `lora_config` builds PEFT LoRA "
                                                                       "adapters, but this plan is for `loraxs`"),
        (lambda: rankwise.plan(model, allocation="learned").lora_config(), "--allocation: `learned` ranks change"),
        (lambda: rankwise.plan(model).lora_config(rank=3), "--lora_config: "),
        (lambda: rankwise.wrap("bert-base-uncased"), "--model: rankwise.wrap() takes a torch model, got str"),
        (lambda: rankwise.wrap(model, method="full"), "--method: `full` trains every weight"),
        (lambda: rankwise.wrap(model, steps_per_epoch=0), "--steps_per_epoch: must be a positive integer"),
        (lambda: rankwise.RankAllocationCallback(None), "--allocator: is None"),
        (lambda: rankwise.export(model, "out"), "--model: rankwise.export() takes a model returned by rankwise.wrap"),
    ]
    for call, message in cases:
        with pytest.raises(rankwise.ConfigError) as error:
            call()
        assert str(error.value).startswith(message), (str(error.value), message)
    wrapped, _ = rankwise.wrap(model, method="lora")
    with pytest.raises(rankwise.ConfigError, match="already has adapters"):
        rankwise.wrap(wrapped)
    assert not Path("out").exists()


# ---------------------------------------------------------------------------------------------
# A plain transformers Trainer with RankAllocationCallback
# ---------------------------------------------------------------------------------------------

class LearningRates(TrainerCallback):
    """Each step's learning rates of the adapter group (the Trainer's first) and of the allocation group."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        groups = {g.get("name"): g for g in optimizer.param_groups}
        self.steps.append((optimizer.param_groups[0]["lr"], groups[rankwise.api.ALLOCATION_GROUP]["lr"]))


LEARNED = dict(allocation="learned", rank_min=2, rank_max=8, rank_average=5, rank_allocation_lr=0.5)


def trained_with_trainer(model_dir, data_dir, out, method, **options):
    model = fresh(model_dir, **LABELS)
    model, allocator = rankwise.wrap(model, method=method, **{**LEARNED, **options})
    initial = allocator.weights.detach().clone()
    features, tokenizer = cola_features(model_dir, data_dir)  # 96 examples: 6 steps of 16 per epoch
    args = TrainingArguments(str(out), num_train_epochs=3, per_device_train_batch_size=16, learning_rate=5e-2,
                             lr_scheduler_type="constant_with_warmup", warmup_steps=4, save_strategy="no",
                             report_to=[], disable_tqdm=True, use_cpu=True, seed=0)
    rates = LearningRates()
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=[rankwise.RankAllocationCallback(allocator), rates])
    trainer.train()
    return model, allocator, initial, trainer, rates


@pytest.fixture(scope="module")
def loraxs_trained(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    return trained_with_trainer(tiny_bert_dir, tiny_glue_dir, tmp_path_factory.mktemp("trainer"), "loraxs")


def test_a_plain_trainer_with_the_callback_learns_an_allocation_within_its_budget(loraxs_trained):
    model, allocator, initial, trainer, rates = loraxs_trained
    schedule = allocator.schedule
    # The schedules fitted to the Trainer's run: 3 epochs of 6 steps, the last epoch at hard ranks.
    assert (schedule.steps_per_epoch, schedule.num_epochs, schedule.total_steps) == (6, 3, trainer.state.max_steps)
    assert schedule.first_discrete_step == 12 and allocator.step == trainer.state.global_step == 18
    # The allocation moved: the weights (all 0 at the start) and the continuous ranks differ per matrix.
    assert torch.equal(initial, torch.zeros_like(initial))
    assert (allocator.weights.detach() - initial).abs().max() > 1e-2
    budget = schedule.memory(allocator.step)
    with torch.no_grad():
        continuous = allocator.continuous_ranks(budget)
    assert continuous.std() > 0.05
    assert float((continuous ** 2).sum()) == pytest.approx(budget, abs=1e-6)  # the whole budget, Σ s² = 12 · 5²
    hard = model.rankwise.hard_ranks()
    assert len(set(hard)) > 1 and all(2 <= r <= 8 for r in hard)
    assert sum(r * r for r in hard) <= budget
    # The allocation weights trained in their own group, on the Trainer's schedule, without weight decay.
    groups = trainer.optimizer.param_groups
    holders = [g for g in groups if any(p is allocator.weights for p in g["params"])]
    assert [g.get("name") for g in holders] == [rankwise.api.ALLOCATION_GROUP] and holders[0]["weight_decay"] == 0
    assert len(rates.steps) == 18
    for adapter_lr, allocation_lr in rates.steps:
        assert allocation_lr / 0.5 == pytest.approx(adapter_lr / 5e-2, rel=1e-9)
    assert rates.steps[0][1] < 0.5 and rates.steps[-1][1] == pytest.approx(0.5)  # warm-up, then constant


def test_budget_and_sharpness_schedules_follow_the_trainers_epochs(tiny_bert_dir, tiny_glue_dir, tmp_path):
    """A budget moving from 12·6² to 12·4² over the second epoch, α from 1 to 4 exponentially: given in epochs to
    wrap, counted in the Trainer's optimiser steps (6 per epoch)."""
    schedules = dict(memory_start=12 * 36, memory_end=12 * 16, epochs_memory_start=1, epochs_memory_start_to_end=1,
                     alpha_min=1.0, alpha_max=4.0, alpha_scheduler="exponential", epochs_rank_discrete=1)
    model, allocator, _, trainer, _ = trained_with_trainer(tiny_bert_dir, tiny_glue_dir, tmp_path, "loraxs",
                                                           rank_average=None, **schedules)
    s = allocator.schedule
    assert [s.memory(step) for step in (0, 6, 9, 12, 17)] == [432, 432, 312, 192, 192]
    assert s.alpha(0) == 1.0 and s.alpha(11) == pytest.approx(4.0) and s.alpha(6) == pytest.approx(4.0 ** (6 / 11))
    assert [s.is_discrete(step) for step in (11, 12)] == [False, True]
    hard = model.rankwise.hard_ranks()
    assert sum(r * r for r in hard) <= 192 and all(2 <= r <= 8 for r in hard)


def test_dora_wraps_plans_and_exports_like_lora(tiny_bert_dir, tiny_glue_dir, tmp_path):
    plan = rankwise.plan(fresh(tiny_bert_dir), method="dora", allocation="attention_heavy", rank_attention=4,
                         rank_mlp=2)
    peft_model = get_peft_model(fresh(tiny_bert_dir), plan.lora_config())
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == plan.trainable_parameters
    learned, allocator = rankwise.wrap(fresh(tiny_bert_dir), method="dora", allocation="learned", rank_min=2,
                                       rank_max=6, rank_average=4, rank_annealing=True)
    assert allocator is not None and learned.rankwise.hard_ranks() == [4] * len(plan.rows)  # no longer refused

    model, allocator = rankwise.wrap(fresh(tiny_bert_dir, **LABELS), method="dora", allocation="attention_heavy",
                                     rank_attention=4, rank_mlp=2)
    assert allocator is None
    with torch.no_grad():  # a trained-looking adapter: B away from 0, magnitudes away from the column norms
        for name, p in model.named_parameters():
            if "lora_B" in name or "magnitude" in name:
                p.add_(torch.randn_like(p) * 0.05)
    batch = dev_batch(tiny_bert_dir, tiny_glue_dir)
    expected = logits(model, batch)
    record = rankwise.export(model, tmp_path / "peft", format="peft", quiet=True)
    assert record["adapter_parameters"]["after"] == plan.adapter_parameters
    assert torch.allclose(logits(rankwise.load(tmp_path / "peft"), batch), expected, atol=TOL, rtol=0)
    plain = load_without_rankwise("peft", moved(tmp_path / "peft", tmp_path), batch, tmp_path)
    assert torch.allclose(torch.tensor(plain["logits"]), expected, atol=TOL, rtol=0)


def test_the_callback_refuses_a_schedule_that_does_not_fit_the_trainers_run(tiny_bert_dir, tiny_glue_dir, tmp_path):
    model, allocator = rankwise.wrap(fresh(tiny_bert_dir), method="loraxs", **LEARNED, epochs_rank_discrete=2)
    features, tokenizer = cola_features(tiny_bert_dir, tiny_glue_dir)
    args = TrainingArguments(str(tmp_path), num_train_epochs=2, per_device_train_batch_size=16, save_strategy="no",
                             report_to=[], disable_tqdm=True, use_cpu=True)
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=[rankwise.RankAllocationCallback(allocator)])
    with pytest.raises(rankwise.ConfigError, match=r"--epochs_rank_discrete: \(2\) leaves no epoch to learn the "
                                                   r"allocation in a 2-epoch run"):
        trainer.train()
    assert trainer.state.global_step == 0


# ---------------------------------------------------------------------------------------------
# Exports that load anywhere
# ---------------------------------------------------------------------------------------------

PLAIN_LOAD_SCRIPT = """
import json, sys
import torch
from peft import AutoPeftModelForSequenceClassification
from transformers import AutoModelForSequenceClassification, AutoTokenizer

kind, path, batch_file = sys.argv[1:]
loader = AutoPeftModelForSequenceClassification if kind == "peft" else AutoModelForSequenceClassification
model = loader.from_pretrained(path).eval()  # no other argument
batch = torch.load(batch_file)
with torch.no_grad():
    logits = model(**batch).logits
config = model.config
tokens = AutoTokenizer.from_pretrained(path)("the cat sat on the mat")["input_ids"]
print(json.dumps({"logits": logits.tolist(), "id2label": {str(k): v for k, v in config.id2label.items()},
                  "num_labels": config.num_labels, "problem_type": config.problem_type, "tokens": tokens,
                  "rankwise_imported": any(m.split(".")[0] == "rankwise" for m in sys.modules)}))
"""


def load_without_rankwise(kind, path, batch, tmp_path):
    script, batch_file = tmp_path / "plain_load.py", tmp_path / "batch.pt"
    script.write_text(PLAIN_LOAD_SCRIPT)
    torch.save(batch, batch_file)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(script), kind, str(path), str(batch_file)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300, env={**env, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rankwise_imported"] is False
    return result


def moved(path: Path, tmp_path: Path) -> Path:
    """The export moved to a directory of another name and place (what a user copying it elsewhere does)."""
    target = tmp_path / "elsewhere" / f"copy-of-{path.name}"
    target.parent.mkdir(exist_ok=True)
    shutil.move(str(path), str(target))
    return target


def test_exports_of_a_wrapped_model_load_anywhere(loraxs_trained, tiny_bert_dir, tiny_glue_dir, tmp_path):
    model, allocator, _, _, _ = loraxs_trained
    batch = dev_batch(tiny_bert_dir, tiny_glue_dir)
    expected = logits(model, batch)
    assert (expected - logits(fresh(tiny_bert_dir, **LABELS), batch)).abs().max() > 100 * TOL  # the adapter matters
    hard = model.rankwise.hard_ranks()

    record = rankwise.export(model, tmp_path / "compact", format="compact", quiet=True)
    assert list(record["hard_ranks"].values()) == hard and record["source_run"] is None
    assert record["adapter_parameters"]["after"] == sum(r * r for r in hard)
    rankwise.export(model, tmp_path / "merged", format="merged", quiet=True)
    assert model.training is False and allocator.step == 18  # export leaves the model as it was

    compact = rankwise.load(moved(tmp_path / "compact", tmp_path))
    assert torch.allclose(logits(compact, batch), expected, atol=TOL, rtol=0)
    assert compact.config.id2label == LABELS["id2label"]
    merged_dir = moved(tmp_path / "merged", tmp_path)
    assert torch.allclose(logits(rankwise.load(merged_dir), batch), expected, atol=TOL, rtol=0)
    plain = load_without_rankwise("merged", merged_dir, batch, tmp_path)
    assert torch.allclose(torch.tensor(plain["logits"]), expected, atol=TOL, rtol=0)
    assert plain["id2label"] == {"0": "no_cat", "1": "cat"} and plain["problem_type"] == "single_label_classification"
    assert plain["tokens"] == load_tokenizer(str(tiny_bert_dir))("the cat sat on the mat")["input_ids"]


def test_peft_export_of_a_wrapped_lora_model_loads_with_peft_alone(tiny_bert_dir, tiny_glue_dir, tmp_path):
    model, _, _, _, _ = trained_with_trainer(tiny_bert_dir, tiny_glue_dir, tmp_path / "trainer", "lora",
                                             rank_allocation_weights_init="random")
    batch = dev_batch(tiny_bert_dir, tiny_glue_dir)
    expected = logits(model, batch)
    hard = model.rankwise.hard_ranks()
    assert len(set(hard)) > 1
    rankwise.export(model, tmp_path / "peft", format="peft", quiet=True)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(tiny_bert_dir).resolve())
    assert [config["rank_pattern"].get(n, config["r"]) for n in model.rankwise.plan.ranks] == hard

    path = moved(tmp_path / "peft", tmp_path)
    assert torch.allclose(logits(rankwise.load(path), batch), expected, atol=TOL, rtol=0)
    plain = load_without_rankwise("peft", path, batch, tmp_path)
    assert torch.allclose(torch.tensor(plain["logits"]), expected, atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def cola_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lora"
    setup = setup_run(RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="cola", method="lora",
                                output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=16, quiet=True,
                                allocation="learned", rank_min=2, rank_max=8, rank_average=5,
                                rank_allocation_weights_init="random"))
    summary = train(setup.cfg, setup)
    assert summary["status"] == "completed"
    batch = dev_batch(tiny_bert_dir, tiny_glue_dir)
    return out, batch, logits(setup.adapter.model, batch)


@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_exports_of_a_cli_run_carry_labels_and_tokenizer_and_load_without_rankwise(fmt, cola_run, tiny_bert_dir,
                                                                                  tmp_path):
    run, batch, expected = cola_run
    assert run_cli("export", run, "--format", fmt, "--out", tmp_path / fmt) == 0
    files = {p.name for p in (tmp_path / fmt).iterdir()}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "export.json"} <= files
    config = json.loads((tmp_path / fmt / "config.json").read_text())
    assert config["id2label"] == {"0": "unacceptable", "1": "acceptable"}
    assert config["label2id"] == {"unacceptable": 0, "acceptable": 1}
    assert config["problem_type"] == "single_label_classification"
    if fmt == "peft":
        peft_config = json.loads((tmp_path / fmt / "adapter_config.json").read_text())
        assert peft_config["base_model_name_or_path"] == str(Path(tiny_bert_dir).resolve())
    path = moved(tmp_path / fmt, tmp_path)
    plain = load_without_rankwise(fmt, path, batch, tmp_path)
    assert torch.allclose(torch.tensor(plain["logits"]), expected, atol=TOL, rtol=0)
    if fmt == "merged":  # PEFT builds its base from the base checkpoint's config: rankwise.load applies the names
        assert plain["id2label"] == {"0": "unacceptable", "1": "acceptable"}
    assert rankwise.load(path).config.id2label == {0: "unacceptable", 1: "acceptable"}


def test_a_regression_export_records_one_output_and_its_problem_type(tiny_bert_dir, tiny_glue_dir, tmp_path):
    setup = setup_run(RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="stsb", method="loraxs",
                                rank=4, output_dir=str(tmp_path / "run"), num_train_epochs=1, quiet=True))
    assert train(setup.cfg, setup)["status"] == "completed"
    rankwise.export(tmp_path / "run", tmp_path / "merged", format="merged", quiet=True)
    rankwise.export(tmp_path / "run", tmp_path / "compact", format="compact", quiet=True)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged")  # no arguments
    assert (merged.config.num_labels, merged.config.problem_type) == (1, "regression")
    features, tokenizer = cola_features(tiny_bert_dir, tiny_glue_dir, "dev", 8)
    batch = dict(DataCollatorWithPadding(tokenizer)([{k: v for k, v in f.items() if k != "labels"} for f in features]))
    expected = logits(setup.adapter.model, batch)
    assert expected.shape == (8, 1)
    assert torch.allclose(logits(merged, batch), expected, atol=TOL, rtol=0)
    assert torch.allclose(logits(rankwise.load(tmp_path / "compact"), batch), expected, atol=TOL, rtol=0)


def test_embedded_models_are_named_by_hub_id_and_found_in_their_package():
    local = rankwise.model_path("minilm")
    hub_id = EMBEDDED["minilm"].hub_id
    for given in ("minilm", local):  # no directory of this machine (the virtualenv holding the package)
        assert base_model_reference(given) == {"base_model": "minilm", "base_model_name_or_path": hub_id}
    # Offline here: each recorded name resolves to the installed package, not a download.
    for recorded in ({"base_model_name_or_path": hub_id}, {"base_model": "minilm"},
                     {"base_model": "/gone/elsewhere", "base_model_name_or_path": hub_id}):
        assert locate_base_model(recorded) == "minilm"
    assert locate_base_model({"base_model": "/gone/elsewhere", "base_model_name_or_path": "user/model"}) == \
        "user/model"


def test_push_to_hub_is_refused_offline_before_any_work(loraxs_trained, cola_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = loraxs_trained[0]
    with pytest.raises(rankwise.ConfigError) as error:
        rankwise.export(model, tmp_path / "out", format="compact", push_to_hub="someone/rankwise-test")
    assert str(error.value).startswith("--push_to_hub: the Hugging Face Hub is switched off here (HF_HUB_OFFLINE is "
                                       "set). Export without it, then upload the folder: hf upload "
                                       "someone/rankwise-test")
    message = cli_error(capsys, "export", cola_run[0], "--format", "peft", "--out", tmp_path / "out",
                        "--push_to_hub", "someone/rankwise-test")
    assert message.startswith("--push_to_hub: the Hugging Face Hub is switched off here")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# docs/api.md
# ---------------------------------------------------------------------------------------------

def test_the_api_docs_examples_run_and_do_what_they_say(tmp_path, monkeypatch, capsys):
    text = (REPO / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/api.md python block {index + 1}", "exec"), namespace)
    out = capsys.readouterr().out

    plan, peft_model = namespace["plan"], namespace["peft_model"]
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == plan.trainable_parameters
    assert plan.to_table() in out and len(set(plan.ranks.values())) > 2

    measured = namespace["measured"]  # gradient allocation: within LoRA r4's budget, as the solver chose
    cost = get_method("lora").rank_cost(measured.targets)
    ranks = [measured.ranks[r.name] for r in measured.rows]
    assert cost.total(torch.tensor(ranks, dtype=torch.float64)) <= cost.total(4.0) == measured.gradient["budget"]
    assert "loss gradients of 1 training batch (" in out and measured.gradient["solver"] == "exact"

    model, allocator = namespace["model"], namespace["allocator"]
    assert allocator.step == namespace["trainer"].state.max_steps == 9  # 24 examples, batches of 8, 3 epochs
    assert sum(r * r for r in namespace["ranks"]) <= namespace["budget"] == 24 * 4 ** 2
    batch = namespace["batch"]
    expected = logits(model, batch)
    for name in ("compact", "merged"):
        assert torch.allclose(logits(namespace[name], batch), expected, atol=TOL, rtol=0), name
    assert namespace["record"]["adapter_parameters"] == {"before": 24 * 8 ** 2, "after": sum(
        r * r for r in namespace["ranks"]), "saved": 24 * 8 ** 2 - sum(r * r for r in namespace["ranks"]),
        "percent_saved": pytest.approx(100 * (1 - sum(r * r for r in namespace["ranks"]) / (24 * 8 ** 2))),
        "counted_as": "r^2 per matrix"}

    peft_config = json.loads((tmp_path / "exports" / "peft" / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    lora_batch = {k: v for k, v in batch.items()}
    assert torch.allclose(logits(namespace["lora_reloaded"], lora_batch), logits(namespace["plain"], lora_batch),
                          atol=TOL, rtol=0)
    assert torch.allclose(logits(namespace["plain"], lora_batch), logits(namespace["lora_model"], lora_batch),
                          atol=TOL, rtol=0)
    assert namespace["message"] == "--rank_min: (40) is greater than --rank_max (30). Swap them or lower --rank_min"
