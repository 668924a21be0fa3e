"""The whole-base-model fingerprint (issue 17) on tiny random BERTs. Every adapter rankwise writes (LoRA-XS, PEFT
LoRA, compact, AdaLoRA) records it; reloading on the same base reproduces the logits, while a base whose non-head
weights differ anywhere (sign-flipped query/value, other key or intermediate weights: cases the older norm check of
the adapted matrices let through) is refused, unless explicitly allowed, which warns. Adapters without a
fingerprint keep the norm check. The fingerprint ignores heads, adapter parameters and lossless dtype changes; the
CLI refuses a mismatched base with exit status 2."""

import json
import shutil
import types

import pytest
import torch
from transformers import BertForSequenceClassification, BertModel

from conftest import run_cli, tiny_bert_config
from rankwise.adapters import hard_keep
from rankwise.adapters.io import (CONFIG_FILE, FINGERPRINT_SAMPLES, META_FILE, _sample_positions,
                                  base_model_fingerprint, base_weight_norms, compact_metadata, compact_tensors,
                                  read_adapter_metadata, save_compact)
from rankwise.methods import build_adapter, load_adapter, save_adapter
from rankwise.methods import save_adapter as save_adalora
from rankwise.config import RunConfig
from rankwise.errors import RunDirError
from rankwise.train import setup_run, train

HEADS = ["classifier", "bert.pooler"]
RANK = 4
TOL = 1e-6
MISMATCH = "was trained on another base model"


# ---------------------------------------------------------------------------------------------
# Tiny base models and the edits that make them another base model
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_state():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    return {k: v.clone() for k, v in model.state_dict().items()}


def base(state, edit=None):
    """A classifier with the weights of `state` (head included), then changed by `edit(model)`."""
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    model.load_state_dict(state)
    if edit is not None:
        with torch.no_grad():
            edit(model)
    return model.eval()


def layers(model):
    return model.bert.encoder.layer


def flip_query_value(model):
    """Sign-flipped query and value weights in every layer: same norms, and the adapted matrices are these."""
    for layer in layers(model):
        layer.attention.self.query.weight.neg_()
        layer.attention.self.value.weight.neg_()


def new_key(model):
    """Layer 1's key matrix re-initialised (key is not a target of BERT's default target modules)."""
    layers(model)[1].attention.self.key.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(5))


def new_intermediate(model):
    """Layer 2's intermediate (MLP up-projection, not a target) weight re-initialised."""
    layers(model)[2].intermediate.dense.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(6))


EDITS = {"query/value sign flip": flip_query_value, "key re-initialised": new_key,
         "intermediate re-initialised": new_intermediate}


def probe():
    generator = torch.Generator().manual_seed(11)
    ids = torch.randint(1000, 2000, (6, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[::2, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def logits(model):
    model.eval()
    return model(**probe()).logits.float()


def randomise(adapter, seed):
    """Adapter and head values far from their initialisation (B and E start at 0), so they move the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        trained = [p for n, p in adapter.model.named_parameters() if "lora_" in n]
        trained += [m.lora_A for m in adapter.modules if hasattr(m, "lora_R")]  # LoRA-XS A, B are buffers
        trained += [m.lora_B for m in adapter.modules if hasattr(m, "lora_R")]
        for p in trained:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
        for name, p in adapter.model.named_parameters():
            if "classifier" in name or "pooler" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def adalora_settings():
    return types.SimpleNamespace(adalora_target_r=None, rank_average=2, adalora_init_r=RANK, adalora_tinit=0.1,
                                 adalora_tfinal=0.3, adalora_deltaT=1, adalora_beta1=0.85, adalora_beta2=0.85,
                                 adalora_orth_reg_weight=0.5, lora_alpha=8.0, lora_dropout=0.0)


def build(state, method):
    from rankwise.targets import find_targets

    model = base(state)
    targets = find_targets(model)
    n = len(targets)
    return build_adapter(model, method, targets, [RANK] * n, [16.0] * n, head_modules=HEADS, task_type="SEQ_CLS",
                         run_config=adalora_settings(), total_steps=100)


@pytest.fixture(scope="module")
def saved(base_state, tmp_path_factory):
    """{name: (directory, reference logits)} for every adapter format rankwise writes, saved by rankwise's own
    writers from a model with the adapter attached; learned-style hard ranks that differ per matrix."""
    root = tmp_path_factory.mktemp("fingerprint-adapters")
    adapters = {}
    for i, method in enumerate(("loraxs", "lora", "adalora")):
        adapter = build(base_state, method)
        randomise(adapter, seed=i)
        hard = [1 + j % RANK for j in range(len(adapter.targets))] if method != "adalora" else list(adapter.ranks)
        if method != "adalora":
            adapter.set_keep(hard_keep(hard, RANK))
            save_adapter(adapter, root / method, "tiny-bert", HEADS, hard)
        else:
            save_adalora(adapter, root / method, "tiny-bert", HEADS, hard)
        adapters[method] = (root / method, logits(adapter.model))
        if method == "loraxs":
            compact = root / "compact"
            save_compact(compact, compact_metadata(adapter, hard, "tiny-bert", HEADS),
                         compact_tensors(adapter, hard, HEADS))
            adapters["compact"] = (compact, adapters["loraxs"][1])
    return adapters


FORMATS = ["loraxs", "lora", "compact", "adalora"]


# ---------------------------------------------------------------------------------------------
# (a) same base: accepted, same logits; the fingerprint survives the save/load round trip
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FORMATS)
def test_same_base_model_reloads_to_the_same_logits(name, saved, base_state):
    directory, reference = saved[name]
    meta = read_adapter_metadata(directory)
    recorded = meta["base_model_fingerprint"]
    fresh = base(base_state)
    # Saved with the adapter attached, recomputed on the plain model before attaching: the same digest.
    assert recorded == base_model_fingerprint(fresh, HEADS)
    base_tensors = [k for k in fresh.state_dict() if not k.startswith(("classifier.", "bert.pooler."))]
    assert recorded["tensors"] == len(base_tensors) == 53
    assert recorded["dtypes"] == ["float32"]

    adapter = load_adapter(fresh, directory)
    got = logits(adapter.model)
    assert torch.allclose(got, reference, atol=TOL, rtol=0)
    assert (logits(base(base_state)) - reference).abs().max() > 1e-2  # the adapter matters: the check has teeth


def test_every_writer_records_the_fingerprint(saved):
    files = {"loraxs": CONFIG_FILE, "compact": CONFIG_FILE, "lora": META_FILE, "adalora": META_FILE}
    digests = set()
    for name, file in files.items():
        meta = json.loads((saved[name][0] / file).read_text())
        assert meta["base_model_fingerprint"]["algorithm"] == "rankwise-sampled-sha256-v1"
        digests.add(meta["base_model_fingerprint"]["digest"])
    assert len(digests) == 1  # one base model, four formats


# ---------------------------------------------------------------------------------------------
# (b)-(d) another base model: refused, even where the old norm check saw nothing
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("name", FORMATS)
def test_another_base_model_is_refused(name, edit, saved, base_state):
    directory, _ = saved[name]
    meta = read_adapter_metadata(directory)
    other = base(base_state, EDITS[edit])
    targets = [t["name"] for t in meta["targets"]]
    assert not any(".key" in t or "intermediate" in t for t in targets)  # key / intermediate are not adapted
    # What the old check compared is unchanged: it would have accepted this model.
    from rankwise.targets import TargetMatrix

    norms = base_weight_norms(other, [TargetMatrix(**t) for t in meta["targets"]])
    assert norms == pytest.approx(meta["base_weight_norms"], rel=1e-6)

    with pytest.raises(RunDirError) as refusal:
        load_adapter(other, directory)
    message = str(refusal.value)
    assert MISMATCH in message and "`tiny-bert`" in message and "--allow_base_model_mismatch" in message
    assert meta["base_model_fingerprint"]["digest"][:12] in message


# ---------------------------------------------------------------------------------------------
# (e) the override: loads, with a one-line warning
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FORMATS)
def test_override_loads_on_another_base_model_with_one_warning(name, saved, base_state, capsys):
    directory, reference = saved[name]
    capsys.readouterr()
    adapter = load_adapter(base(base_state, flip_query_value), directory, allow_base_model_mismatch=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rankwise: warning:") and MISMATCH in err[0]
    # It did load (adapter and head), and on this base it predicts something else: what the guard is for.
    same = load_adapter(base(base_state), directory, allow_base_model_mismatch=True)
    assert capsys.readouterr().err == ""  # no warning when nothing is wrong
    assert torch.allclose(logits(same.model), reference, atol=TOL, rtol=0)
    assert (logits(adapter.model) - reference).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# (f) adapters from before the fingerprint keep the norm check
# ---------------------------------------------------------------------------------------------

def strip_fingerprint(directory, into, algorithm=None):
    shutil.copytree(directory, into)
    for file in (META_FILE, CONFIG_FILE):
        path = into / file
        if path.is_file():
            meta = json.loads(path.read_text())
            if str(meta.get("format", "")).startswith("rankwise"):
                if algorithm is None:
                    del meta["base_model_fingerprint"]
                else:  # a fingerprint this rankwise cannot compute
                    meta["base_model_fingerprint"]["algorithm"] = algorithm
                path.write_text(json.dumps(meta))
    return into


def scale_query(model):
    layers(model)[0].attention.self.query.weight.mul_(1.01)


@pytest.mark.parametrize("name", ["loraxs", "lora", "compact"])
def test_old_metadata_without_fingerprint_uses_the_norm_check(name, saved, base_state, tmp_path, capsys):
    directory, reference = saved[name]
    for old in (strip_fingerprint(directory, tmp_path / "old"),
                strip_fingerprint(directory, tmp_path / "future", algorithm="rankwise-sampled-sha256-v9")):
        assert load_adapter(base(base_state), old) is not None
        # The norm check cannot see a sign flip: accepted, as before (and silently).
        flipped = load_adapter(base(base_state, flip_query_value), old)
        assert (logits(flipped.model) - reference).abs().max() > 1e-2
        assert capsys.readouterr().err == ""
        # A changed norm of an adapted matrix is refused, with the norms and the override in the message.
        with pytest.raises(RunDirError) as refusal:
            load_adapter(base(base_state, scale_query), old)
        message = str(refusal.value)
        assert MISMATCH in message and "has norm" in message and "--allow_base_model_mismatch" in message
        load_adapter(base(base_state, scale_query), old, allow_base_model_mismatch=True)
        assert "has norm" in capsys.readouterr().err
    with pytest.raises(RunDirError, match="base-model fingerprint"):  # with the fingerprint: refused by it
        load_adapter(base(base_state, scale_query), directory)


# ---------------------------------------------------------------------------------------------
# (g) what the fingerprint covers and ignores
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["loraxs", "lora", "adalora"])
def test_fingerprint_ignores_adapters_and_head(method, base_state):
    plain = base_model_fingerprint(base(base_state), HEADS)
    adapter = build(base_state, method)
    randomise(adapter, seed=3)  # adapter parameters and the head both changed
    assert base_model_fingerprint(adapter.model, HEADS) == plain
    changed_head = base(base_state)
    with torch.no_grad():
        changed_head.classifier.weight.add_(1.0)
        changed_head.bert.pooler.dense.weight.neg_()
    assert base_model_fingerprint(changed_head, HEADS) == plain
    assert base_model_fingerprint(changed_head, [])["digest"] != base_model_fingerprint(base(base_state), [])["digest"]


def test_every_base_tensor_is_covered(base_state):
    """Negating (or shifting, if all zero) any single base tensor changes the digest."""
    plain = base_model_fingerprint(base(base_state), HEADS)["digest"]
    names = [k for k in base_state if not k.startswith(("classifier.", "bert.pooler."))]
    assert len(names) == 53
    for name in names:
        state = dict(base_state)
        tensor = state[name].clone()
        state[name] = -tensor if tensor.abs().sum() > 0 else tensor + 0.1
        assert base_model_fingerprint(base(state), HEADS)["digest"] != plain, name


def test_sampling_limit_is_as_documented(base_state):
    """A tensor larger than FINGERPRINT_SAMPLES is sampled: one edited element outside the sample goes unnoticed
    (the documented limit); inside it, it is caught. Positions are spread, not one column."""
    plain = base_model_fingerprint(base(base_state), HEADS)["digest"]
    name = "bert.embeddings.word_embeddings.weight"  # 30522 × 32
    numel = base_state[name].numel()
    positions = _sample_positions(numel)
    assert len(positions) == FINGERPRINT_SAMPLES and len(set(positions.tolist())) == FINGERPRINT_SAMPLES
    assert len(set((positions % 32).tolist())) == 32  # every column is sampled somewhere
    sampled = set(positions.tolist())
    unsampled = next(i for i in range(numel) if i not in sampled)
    for position, caught in ((unsampled, False), (int(positions[500]), True)):
        state = dict(base_state)
        state[name] = base_state[name].clone()
        state[name].view(-1)[position] += 1.0
        assert (base_model_fingerprint(base(state), HEADS)["digest"] != plain) is caught


def test_dtype_lossless_copies_match_lossy_casts_do_not(base_state):
    """Values are compared, not storage types: bf16 weights match the same values held in float32 (a bf16
    checkpoint loaded in float32), while rounding float32 weights to bf16 changes them and the digest."""
    fp32 = base(base_state)
    bf16 = base(base_state).to(torch.bfloat16)
    assert base_model_fingerprint(bf16, HEADS)["digest"] != base_model_fingerprint(fp32, HEADS)["digest"]
    back_in_fp32 = base(base_state).to(torch.bfloat16).to(torch.float32)
    got, want = base_model_fingerprint(back_in_fp32, HEADS), base_model_fingerprint(bf16, HEADS)
    assert got["digest"] == want["digest"] and want["dtypes"] == ["bfloat16"] and got["dtypes"] == ["float32"]


def test_lossy_cast_is_named_in_the_refusal(saved, base_state):
    with pytest.raises(RunDirError, match="bfloat16 here, float32 when trained: a cast that rounds the weights "
                                          "changes the model, load it in float32"):
        load_adapter(base(base_state).to(torch.bfloat16), saved["loraxs"][0])


# ---------------------------------------------------------------------------------------------
# (h) the CLI: evaluate, predict and export on a mismatched base exit 2; the flag overrides
# ---------------------------------------------------------------------------------------------

def save_bert(path, tokenizer_from, edit=None):
    torch.manual_seed(0)  # the same weights as conftest's tiny_bert_dir
    model = BertModel(tiny_bert_config())
    if edit is not None:
        with torch.no_grad():
            for layer in model.encoder.layer:
                edit(layer)
    model.save_pretrained(path)
    from rankwise.models import load_tokenizer

    load_tokenizer(str(tokenizer_from)).save_pretrained(path)
    return path


def flip_layer_query_value(layer):
    layer.attention.self.query.weight.neg_()
    layer.attention.self.value.weight.neg_()


@pytest.fixture(scope="module")
def cli_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fingerprint-cli")
    base_dir = root / "base"
    shutil.copytree(tiny_bert_dir, base_dir)
    cfg = RunConfig(model=str(base_dir), data_dir=str(tiny_glue_dir), task="cola", output_dir=str(root / "run"),
                    method="loraxs", rank=RANK, num_train_epochs=2, per_device_train_batch_size=16, quiet=True,
                    learning_rate=5e-2)
    setup = setup_run(cfg)
    summary = train(setup.cfg, setup)
    assert summary["status"] == "completed"
    flipped = save_bert(root / "flipped", tiny_bert_dir, flip_layer_query_value)
    return types.SimpleNamespace(path=root / "run", base=base_dir, flipped=flipped, summary=summary, root=root)


def cli(capsys, *args):
    capsys.readouterr()
    code = run_cli(*args)
    return code, capsys.readouterr().err


def test_cli_evaluate_and_predict_refuse_a_mismatched_base(cli_run, tiny_glue_dir, tmp_path, capsys):
    final = cli_run.summary["final"]
    same = tmp_path / "same.json"  # trained with the adapter attached, checked on the plain base: accepted
    code, err = cli(capsys, "evaluate", "--adapter", cli_run.path, "--data_dir", tiny_glue_dir, "--out", same,
                    "--quiet")
    assert code == 0, err
    assert json.loads(same.read_text())["metrics"]["eval_loss"] == pytest.approx(final["eval_loss"], abs=1e-5)

    refused = tmp_path / "refused.json"
    code, err = cli(capsys, "evaluate", "--adapter", cli_run.path, "--base_model", cli_run.flipped, "--data_dir",
                    tiny_glue_dir, "--out", refused, "--quiet")
    assert code == 2 and err.startswith("rankwise evaluate: error:")
    assert MISMATCH in err and f"`{cli_run.base}`" in err and "--allow_base_model_mismatch" in err
    assert not refused.exists()

    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"sentence": "the cat sat"}) + "\n")
    code, err = cli(capsys, "predict", "--adapter", cli_run.path, "--base_model", cli_run.flipped, "--input",
                    inputs, "--out", tmp_path / "p.jsonl", "--quiet")
    assert code == 2 and MISMATCH in err and not (tmp_path / "p.jsonl").exists()

    allowed = tmp_path / "allowed.json"
    code, err = cli(capsys, "evaluate", "--adapter", cli_run.path, "--base_model", cli_run.flipped, "--data_dir",
                    tiny_glue_dir, "--out", allowed, "--quiet", "--allow_base_model_mismatch")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("rankwise: warning:")]
    assert len(warnings) == 1 and MISMATCH in warnings[0]
    # The adapter on the other base gives other outputs: the evaluation loss moves (tiny random BERTs lean little
    # on attention, so by far less than in a real model, but 10× beyond the same base's reproduction).
    assert abs(json.loads(allowed.read_text())["metrics"]["eval_loss"] - final["eval_loss"]) > 1e-4


def test_cli_export_refuses_a_run_whose_base_model_changed(cli_run, tiny_glue_dir, tmp_path, capsys):
    recorded = read_adapter_metadata(cli_run.path / "adapter")["base_model_fingerprint"]
    code, err = cli(capsys, "export", cli_run.path, "--format", "compact", "--out", tmp_path / "ok")
    assert code == 0, err
    assert read_adapter_metadata(tmp_path / "ok")["base_model_fingerprint"] == recorded

    # The run's base model directory now holds other weights (e.g. overwritten by a later download).
    moved = shutil.copytree(cli_run.path, tmp_path / "run")
    config = json.loads((moved / "config.json").read_text())
    config["config"]["model"] = str(cli_run.flipped)
    (moved / "config.json").write_text(json.dumps(config))
    for fmt in ("compact", "merged"):
        code, err = cli(capsys, "export", moved, "--format", fmt, "--out", tmp_path / fmt)
        assert code == 2 and err.startswith("rankwise export: error:") and MISMATCH in err
        assert "--allow_base_model_mismatch" in err and not (tmp_path / fmt).exists()

    code, err = cli(capsys, "export", moved, "--format", "compact", "--out", tmp_path / "forced",
                    "--allow_base_model_mismatch")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("rankwise: warning:")]
    assert len(warnings) == 2 and all(MISMATCH in w for w in warnings)  # the run's adapter, then the reload check
    # The export keeps the fingerprint of the model the run was trained on, so it is still refused elsewhere.
    assert read_adapter_metadata(tmp_path / "forced")["base_model_fingerprint"] == recorded
    code, err = cli(capsys, "evaluate", "--adapter", tmp_path / "forced", "--base_model", cli_run.flipped, "--task",
                    "cola", "--data_dir", tiny_glue_dir)
    assert code == 2 and MISMATCH in err
