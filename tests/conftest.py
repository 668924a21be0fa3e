"""Shared fixtures: tiny randomly initialised models (built here, saved to disk so the CLI can load them by
path), small synthetic GLUE folders, and the real data in ../shared/data when it is present."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RANKWISE_TEST_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_glue() -> Path:
    path = SHARED_DATA / "glue"
    if not (path / "CoLA" / "train.tsv").is_file():
        pytest.skip(f"real GLUE data not found under {path} (set RANKWISE_TEST_DATA)")
    return path


def minilm_tokenizer():
    from rankwise.models import load_tokenizer

    return load_tokenizer("minilm")


def tiny_bert_config(**overrides):
    from transformers import BertConfig

    values = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    values.update(overrides)
    return BertConfig(**values)


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    values = dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_gpt2_config(**overrides):
    from transformers import GPT2Config

    values = dict(vocab_size=30522, n_embd=32, n_layer=3, n_head=2, n_positions=256, resid_pdrop=0.0,
                  embd_pdrop=0.0, attn_pdrop=0.0)
    values.update(overrides)
    return GPT2Config(**values)


def tiny_roberta_config(**overrides):
    from transformers import RobertaConfig

    values = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=130, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    values.update(overrides)
    return RobertaConfig(**values)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (3 layers, hidden 32) with MiniLM's tokenizer, saved like a hub checkpoint."""
    from transformers import BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(path)
    minilm_tokenizer().save_pretrained(path)
    return path


WORDS = ("the cat dog sat ran on a mat quickly slowly big small red blue house tree who what is was "
         "john mary book read wrote saw").split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


@pytest.fixture(scope="session")
def tiny_glue_dir(tmp_path_factory) -> Path:
    """Synthetic CoLA (no header), SST-2 and STS-B folders in the original GLUE layout. The label is a
    simple function of the text (contains `cat`), so a model can learn it."""
    root = tmp_path_factory.mktemp("glue")
    rng = random.Random(0)
    for split, n in (("train", 96), ("dev", 48)):
        rows = [_sentence(rng) for _ in range(n)]
        (root / "CoLA").mkdir(exist_ok=True)
        (root / "CoLA" / f"{split}.tsv").write_text(
            "\n".join(f"src\t{int('cat' in s)}\t\t{s}" for s in rows))
        (root / "SST-2").mkdir(exist_ok=True)
        (root / "SST-2" / f"{split}.tsv").write_text(
            "sentence\tlabel\n" + "\n".join(f"{s}\t{int('dog' in s)}" for s in rows) + "\n")
        (root / "STS-B").mkdir(exist_ok=True)
        header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        lines = [f"{i}\tg\tf\t2017\t{i}\ts\ts\t{s}\t{rows[(i + 1) % n]}\t{rng.uniform(0, 5):.3f}"
                 for i, s in enumerate(rows)]
        (root / "STS-B" / f"{split}.tsv").write_text(header + "\n".join(lines) + "\n")
    return root


def run_cli(*args: str) -> int:
    from rankwise.cli import main

    return main([str(a) for a in args])


# --- causal LMs and Alpaca data (issue 6: test_instruct.py, test_decoders.py) ----------------

def _save_tiny_causal_lm(path: Path, config) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    minilm_tokenizer().save_pretrained(path)  # BERT WordPiece: [SEP] serves as end of sequence
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama causal LM (3 layers, hidden 32; q/k/v/o/gate/up/down) saved like a checkpoint."""
    return _save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama"), tiny_llama_config())


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A tiny random GPT-2 causal LM (3 layers, n_embd 32; Conv1D c_attn/c_proj/c_fc) saved like a checkpoint."""
    return _save_tiny_causal_lm(tmp_path_factory.mktemp("tiny-gpt2"), tiny_gpt2_config(bos_token_id=101, eos_token_id=102))


def alpaca_records(n: int, seed: int = 0) -> list[dict]:
    """Alpaca-format records; every third one has an input. The output repeats a word of the instruction."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        instruction = _sentence(rng)
        records.append({"instruction": instruction, "input": _sentence(rng) if i % 3 == 0 else "",
                        "output": " ".join([instruction.split()[0]] * rng.randint(2, 6))})
    return records


@pytest.fixture(scope="session")
def tiny_alpaca_file(tmp_path_factory) -> Path:
    """A 48-record Alpaca JSON file."""
    import json

    path = tmp_path_factory.mktemp("alpaca") / "alpaca_data.json"
    path.write_text(json.dumps(alpaca_records(48)))
    return path


# --- helpers shared by test modules in different folders -------------------------------------

def tiny_cfg(model_dir, data_dir, out, **kw):
    """A RunConfig for a short run of a tiny model on the synthetic CoLA files."""
    from rankwise.config import RunConfig

    values = dict(model=str(model_dir), data_dir=str(data_dir), task="cola", output_dir=str(out), num_train_epochs=2,
                  per_device_train_batch_size=16, logging_steps=2, quiet=True, learning_rate=5e-3)
    values.update(kw)
    return RunConfig(**values)


def dev_batch(model_dir, data_dir, task="cola", n=24):
    """The first `n` dev examples of a task, tokenized and padded (rows of different lengths)."""
    from transformers import DataCollatorWithPadding

    from rankwise.data import encode_classification, load_glue
    from rankwise.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    examples = load_glue(task, str(data_dir)).evals["eval"][:n]
    features = encode_classification(examples, tokenizer, 128, regression=task == "stsb")
    batch = DataCollatorWithPadding(tokenizer)(features)
    batch.pop("labels")
    return dict(batch)


@torch.no_grad()
def logits(model, batch):
    model.eval()
    return model(**batch).logits.float()


# --- synthetic run directories for reports (tests/report and the studies' tests) -------------

METRIC = "eval_matthews_correlation"
SUFFIXES = ("attention.self.query", "attention.self.value", "attention.output.dense", "output.dense")
MATRICES = [(f"bert.encoder.layer.{layer}.{suffix}", layer, "mlp" if suffix == "output.dense" else "attention")
            for layer in range(3) for suffix in SUFFIXES]


def fake_run(root: Path, epoch_scores: list[float], status: str = "completed", **config) -> Path:
    """A run directory as `rankwise train` writes it, with the given main metric per epoch."""
    import json

    import numpy as np

    from rankwise.config import RunConfig, resolve_defaults
    from rankwise.runs.naming import run_name

    cfg = resolve_defaults(RunConfig(task="cola", method="loraxs", **config))
    run_dir = root / run_name(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    rng = np.random.default_rng(abs(hash(run_dir.name)) % 2**32)
    learned = cfg.allocation == "learned"
    ranks = [int(r) for r in rng.integers(cfg.rank_min, cfg.rank_max + 1, len(MATRICES))] if learned else \
        [cfg.rank] * len(MATRICES)
    (run_dir / "ranks.json").write_text(json.dumps({"matrices": [
        {"name": n, "layer": layer, "kind": kind, "rank": r} for (n, layer, kind), r in zip(MATRICES, ranks)]}))
    evals = [{"type": "eval", "step": 10 * e, "epoch": e, "eval_loss": 1 - v, METRIC: v}
             for e, v in enumerate(epoch_scores, 1)]
    with open(run_dir / "metrics.jsonl", "w") as f:
        for e in range(1, len(epoch_scores) + 1):
            f.write(json.dumps({"type": "train", "step": 10 * e - 5, "epoch": e - 0.5, "loss": 0.6}) + "\n")
            f.write(json.dumps(evals[e - 1]) + "\n")
    if learned:
        epochs = cfg.num_train_epochs
        with open(run_dir / "allocation.jsonl", "w") as f:
            for k in range(2 * epochs + 1):
                epoch = k / 2
                f.write(json.dumps({
                    "epoch": epoch, "step": 5 * k, "alpha": cfg.alpha_min + (cfg.alpha_max - cfg.alpha_min) * min(
                        1.0, epoch / (epochs - 1)), "budget": 12 * cfg.rank_average ** 2,
                    "discrete": epoch >= epochs - 1,
                    "continuous": {n: r + 0.1 * k for (n, _, _), r in zip(MATRICES, ranks)},
                    "hard": {n: r for (n, _, _), r in zip(MATRICES, ranks)}}) + "\n")
    if status == "failed":
        summary = {"status": "failed", "message": "RuntimeError: out of memory", "task": "cola", "method": "loraxs",
                   "allocation": cfg.allocation, "seed": cfg.seed}
    else:
        best = max(evals, key=lambda r: r[METRIC])
        summary = {"status": status, "message": "loss was non-finite" if status == "diverged" else None,
                   "main_metric": METRIC, "greater_is_better": True, "best": best, "best_epoch": best["epoch"],
                   "final": evals[-1], "epochs_completed": len(evals), "wall_time_s": 60.0 + cfg.seed,
                   "trainable_parameters": {"adapter": 12 * 30 * 30, "head": 770, "allocation": 12,
                                            "adapter_at_hard_ranks": sum(r * r for r in ranks)},
                   "hard_ranks": {n: r for (n, _, _), r in zip(MATRICES, ranks)}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir
