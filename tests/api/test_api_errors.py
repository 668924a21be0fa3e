"""The Python API's errors are rankwise's (issue 32): every public function, given a wrong type, a wrong value or
missing data, raises a `rankwise.ConfigError` (a ValueError) whose field is the argument at fault, in a short
message (never a model's repr); a refusal from below (a model or directory that cannot be loaded) is one too, and
stays the ModelError / RunDirError it was."""

import torch
import pytest
from transformers import AutoModelForSequenceClassification

import rankwise
from rankwise.errors import ModelError, RunDirError


@pytest.fixture
def model(tiny_bert_dir):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)


@pytest.fixture(scope="module")
def learned(tiny_bert_dir):
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    return rankwise.wrap(base, allocation="learned", rank_min=1, rank_max=4, rank_average=2)


def batch(**drop):
    values = {"input_ids": torch.ones(2, 4, dtype=torch.long), "labels": torch.zeros(2, dtype=torch.long)}
    return {k: v for k, v in values.items() if k not in drop}


GRADIENT = dict(allocation="gradient", rank=2)
CASES = {  # name: (call(model, learned, tmp_path), the argument the error names)
    # plan: wrong types, values and missing data
    "plan batches a string": (lambda m, l, t: rankwise.plan(m, batches="x", **GRADIENT), "batches"),
    "plan batches a dict": (lambda m, l, t: rankwise.plan(m, batches=batch(), **GRADIENT), "batches"),
    "plan batches of ints": (lambda m, l, t: rankwise.plan(m, batches=[1], **GRADIENT), "batches"),
    "plan batches of lists": (lambda m, l, t: rankwise.plan(m, batches=[{"input_ids": [[1, 2]]}], **GRADIENT),
                              "batches"),
    "plan batches empty": (lambda m, l, t: rankwise.plan(m, batches=[], **GRADIENT), "batches"),
    "plan batches without labels": (lambda m, l, t: rankwise.plan(m, batches=[batch(labels=1)], **GRADIENT),
                                    "batches"),
    "plan batches for uniform": (lambda m, l, t: rankwise.plan(m, batches=[batch()]), "batches"),
    "plan loss_fn not callable": (lambda m, l, t: rankwise.plan(m, batches=[batch()], loss_fn=3, **GRADIENT),
                                  "loss_fn"),
    "plan model an int": (lambda m, l, t: rankwise.plan(3), "model"),
    "plan model missing": (lambda m, l, t: rankwise.plan(str(t / "no-model")), "model"),
    "plan method unknown": (lambda m, l, t: rankwise.plan(m, method="x"), "method"),
    "plan method an int": (lambda m, l, t: rankwise.plan(m, method=3), "method"),
    "plan rank a string": (lambda m, l, t: rankwise.plan(m, rank="8"), "rank"),
    "plan rank negative": (lambda m, l, t: rankwise.plan(m, rank=-1), "rank"),
    "plan steps_per_epoch": (lambda m, l, t: rankwise.plan(m, steps_per_epoch="x"), "steps_per_epoch"),
    "plan unknown option": (lambda m, l, t: rankwise.plan(m, rnk=3), "rnk"),
    "plan training option": (lambda m, l, t: rankwise.plan(m, learning_rate=1e-3), "learning_rate"),
    "plan rank_file missing": (lambda m, l, t: rankwise.plan(m, allocation="custom", rank_file=t / "r.yaml"),
                               "rank_file"),
    # wrap
    "wrap a model name": (lambda m, l, t: rankwise.wrap("minilm"), "model"),
    "wrap twice": (lambda m, l, t: rankwise.wrap(l[0]), "model"),
    "wrap gradient without batches": (lambda m, l, t: rankwise.wrap(m, **GRADIENT), "batches"),
    "wrap batches an int": (lambda m, l, t: rankwise.wrap(m, batches=5, **GRADIENT), "batches"),
    "wrap full": (lambda m, l, t: rankwise.wrap(m, method="full"), "method"),
    "wrap rank_min above rank_max": (lambda m, l, t: rankwise.wrap(m, allocation="learned", rank_min=5, rank_max=2),
                                     "rank_min"),
    # the callback
    "callback None": (lambda m, l, t: rankwise.RankAllocationCallback(None), "allocator"),
    "callback an int": (lambda m, l, t: rankwise.RankAllocationCallback(3), "allocator"),
    "fit_schedule steps a string": (lambda m, l, t: rankwise.RankAllocationCallback(l[1]).fit_schedule("x", 3),
                                    "steps_per_epoch"),
    "fit_schedule epochs zero": (lambda m, l, t: rankwise.RankAllocationCallback(l[1]).fit_schedule(4, 0),
                                 "num_train_epochs"),
    # export
    "export an unwrapped model": (lambda m, l, t: rankwise.export(m, t / "e"), "model"),
    "export a missing run": (lambda m, l, t: rankwise.export(t / "no-run", t / "e"), "model"),
    "export out an int": (lambda m, l, t: rankwise.export(l[0], 3), "out"),
    "export format an int": (lambda m, l, t: rankwise.export(l[0], t / "e", format=3), "format"),
    "export format unknown": (lambda m, l, t: rankwise.export(l[0], t / "e", format="zip"), "format"),
    "export overwrite a string": (lambda m, l, t: rankwise.export(l[0], t / "e", overwrite="yes"), "overwrite"),
    "export out a file": (lambda m, l, t: rankwise.export(l[0], _file(t)), "out"),
    # load, load_adapter, model_path
    "load an int": (lambda m, l, t: rankwise.load(3), "path"),
    "load a missing path": (lambda m, l, t: rankwise.load(str(t / "nowhere")), "path"),
    "load an empty directory": (lambda m, l, t: rankwise.load(str(_empty(t))), "path"),
    "load base_model an int": (lambda m, l, t: rankwise.load(str(t), base_model=3), "base_model"),
    "load_adapter model an int": (lambda m, l, t: rankwise.load_adapter(3, t), "model"),
    "load_adapter a missing adapter": (lambda m, l, t: rankwise.load_adapter(m, t / "nowhere"), "directory"),
    "model_path an int": (lambda m, l, t: rankwise.model_path(3), "name"),
    "model_path empty": (lambda m, l, t: rankwise.model_path(""), "name"),
}


def _file(tmp_path):
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile"


def _empty(tmp_path):
    (tmp_path / "empty").mkdir(exist_ok=True)
    return tmp_path / "empty"


@pytest.mark.parametrize("name", list(CASES))
def test_every_public_function_refuses_bad_arguments_with_a_config_error_naming_them(name, model, learned, tmp_path):
    call, argument = CASES[name]
    with pytest.raises(rankwise.ConfigError) as refusal:
        call(model, learned, tmp_path)
    error = refusal.value
    assert isinstance(error, ValueError) and error.field == argument, (error.field, str(error))
    message = str(error)
    assert message.startswith(f"--{argument}: ") and len(message.replace(str(tmp_path), "TMP")) < 320, message
    assert "BertForSequenceClassification" not in message and "Embedding(" not in message


def test_refusals_from_below_stay_their_own_kind(model, tmp_path):
    with pytest.raises(ModelError) as missing:
        rankwise.plan(str(tmp_path / "no-model"))
    assert isinstance(missing.value, rankwise.ConfigError) and missing.value.field == "model"
    with pytest.raises(RunDirError) as not_adapter:
        rankwise.load_adapter(model, tmp_path)
    assert isinstance(not_adapter.value, rankwise.ConfigError) and not_adapter.value.field == "directory"
