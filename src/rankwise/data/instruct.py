"""Instruction tuning on causal LMs: Alpaca-format data, the Alpaca prompt, response-only loss, perplexity.

Data: a JSON list of records (`.json`) or JSONL (`.jsonl`, one record per line; other suffixes are
recognised by content), each with `instruction` and `output`
strings and an optional `input` string (the Stanford Alpaca format). Task `alpaca` reads
`--train_file`, else `<data_dir>/alpaca/alpaca_data.json`. Every record is checked before any work.

Split: a fixed-seed permutation of the file holds out the first `--eval_size` records for
evaluation; training uses the rest (in that shuffled order), truncated to `--max_train_samples`. The
split does not depend on `--seed`, so runs with different seeds (and different strategies) are
evaluated on the same examples and differ only in training randomness.

Encoding: input = prompt + response + EOS. Labels are -100 on the prompt (and on padding), so the
loss covers response tokens only.

The layer-wise placement study's setup is three options away: `--prompt_format human_assistant` (its text
"Human: {instruction}\nAssistant: {output}", no input field, no EOS), `--loss_on all` (labels = input_ids: prompt
tokens count too) and `--instruct_split first_n_90_10` (the first --max_train_samples records in file order, the
first 90% to train and the rest to evaluate). Evaluation loss is the mean token loss over the whole eval set
(token-weighted, not a mean of per-batch means) and perplexity = exp(eval loss).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..devices import HostBatches
from ..errors import ConfigError, DataError
from .. import models
from ..runs.rundir import write_jsonl_atomic
from .task import PreparedTask, max_seq_length_for

TASKS = ("alpaca",)
ALPACA_FILE = Path("alpaca") / "alpaca_data.json"
IGNORE_INDEX = -100
SPLIT_SEED = 1234  # the held-out split is the same for every run seed
GENERATION_MAX_NEW_TOKENS = 128
LOGITS_CHUNK_BYTES = 512 * 2**20  # evaluation runs the model on sub-batches whose logits fit in this

# The standard Stanford Alpaca prompts (tatsu-lab/stanford_alpaca, PROMPT_DICT).
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True)
class InstructExample:
    instruction: str
    input: str
    output: str
    index: int  # position in the source file (0-based record number)
    messages: tuple | None = None  # a chat record: ({"role", "content"}, ...); instruction/output are its last turn

    @property
    def prompt(self) -> str:
        return alpaca_prompt(self.instruction, self.input)


def human_assistant_prompt(instruction: str) -> str:
    """The placement study's prompt (its text is this followed by " {output}"; the `input` field is not used)."""
    return f"Human: {instruction}\nAssistant:"


def format_prompt(example: InstructExample, prompt_format: str = "alpaca") -> str:
    return human_assistant_prompt(example.instruction) if prompt_format == "human_assistant" else example.prompt


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt, with the `### Input:` block only when `input` is non-empty."""
    if input.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_NO_INPUT.format(instruction=instruction)


# ---------------------------------------------------------------------------------------------
# Reading and splitting
# ---------------------------------------------------------------------------------------------

CHAT_ROLES = ("system", "user", "assistant")


def _check_chat(record: dict, where: str) -> tuple:
    """A chat record (TRL's SFT format): `messages`, a list of {role, content} ending with the assistant's."""
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: `messages` must be a non-empty list of {{\"role\", \"content\"}} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES or \
                not isinstance(message.get("content"), str):
            raise DataError(f"{where}: message {i} must be {{\"role\": one of {', '.join(CHAT_ROLES)}, "
                            f"\"content\": a string}}, got {message!r}"[:300])
    if messages[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in messages):
        raise DataError(f"{where}: a chat record needs a user message and must end with the assistant's reply (the "
                        "text the model learns)")
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


def _check_record(record: Any, where: str) -> tuple[str, str, str]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with `instruction`, `input`, `output`, got "
                        f"{type(record).__name__}")
    missing = [k for k in ("instruction", "output") if k not in record]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(f'`{k}`' for k in missing)} (has "
                        f"{', '.join(f'`{k}`' for k in record) or 'no keys'}). Alpaca records need `instruction` and "
                        "`output` strings and an optional `input`")
    values = []
    for key in ("instruction", "input", "output"):
        value = record.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise DataError(f"{where}: `{key}` must be a string, got {type(value).__name__}")
        values.append(value)
    if not values[0].strip():
        raise DataError(f"{where}: `instruction` is empty")
    return values[0], values[1], values[2]


def load_alpaca(path: str | Path) -> list[InstructExample]:
    """All records of an Alpaca-format JSON (a list) or JSONL file, checked. Raises DataError naming the file
    and the record (index for JSON, line number for JSONL) of the first problem."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"Alpaca file {path} is a directory, not a file. Give an Alpaca-format .json or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"Alpaca file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read Alpaca file {path}: {exc}") from None

    stripped = text.lstrip()
    records: list[tuple[str, Any]] = []
    if path.suffix == ".jsonl" or (path.suffix != ".json" and not stripped.startswith("[")):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"{path} line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number}: not valid JSON ({exc.msg}). A .jsonl file holds one "
                                "JSON object per line") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = ". A file with one JSON object per line should be named .jsonl" if exc.msg == "Extra data" else ""
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}){hint}") \
                from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records with `instruction`, `input`, `output`, got a "
                            f"{type(data).__name__}")
        records = [(f"{path} record {i}", record) for i, record in enumerate(data)]
    if not records:
        raise DataError(f"{path} holds no records")
    examples = []
    for i, (where, record) in enumerate(records):
        if isinstance(record, dict) and "messages" in record:
            messages = _check_chat(record, where)
            user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
            examples.append(InstructExample(user, "", messages[-1]["content"], index=i, messages=messages))
        else:
            examples.append(InstructExample(*_check_record(record, where), index=i))
    return examples


def split_examples(examples: list[InstructExample], eval_size: int, max_train_samples: int | None,
                   seed: int = SPLIT_SEED, how: str = "seeded_holdout"
                   ) -> tuple[list[InstructExample], list[InstructExample]]:
    """(train, eval): a seeded permutation; the first `eval_size` records are held out, training uses the
    rest in permuted order (first `max_train_samples` of them). Disjoint by construction.
    `how="first_n_90_10"` (the placement study's): the first `max_train_samples` records (all without it) in file
    order, the first int(0.9·N) to train and the rest to evaluate."""
    if how == "first_n_90_10":
        pool = examples[:max_train_samples] if max_train_samples is not None else examples
        cut = int(0.9 * len(pool))
        if cut == 0 or cut == len(pool):
            raise ConfigError("max_train_samples", f"({len(pool)} records) is too few for a 90/10 split: "
                              f"{cut} to train, {len(pool) - cut} to evaluate", "Use at least 10 records")
        return pool[:cut], pool[cut:]
    if eval_size >= len(examples):
        raise ConfigError("eval_size", f"({eval_size}) leaves no training examples: the file has {len(examples)} "
                          "records", f"Use --eval_size {max(1, len(examples) // 10)} or a bigger file")
    order = np.random.default_rng(seed).permutation(len(examples))
    held_out = [examples[i] for i in order[:eval_size]]
    train = [examples[i] for i in order[eval_size:]]
    if max_train_samples is not None:
        train = train[:max_train_samples]
    return train, held_out


def alpaca_path(cfg) -> Path:
    """`--train_file`, else `<data_dir>/alpaca/alpaca_data.json`."""
    if cfg.train_file:
        return Path(cfg.train_file)
    if cfg.data_dir:
        path = Path(cfg.data_dir) / ALPACA_FILE
        if path.is_dir():
            raise DataError(f"task alpaca: {path} is a directory, not the Alpaca JSON file. Put the file there, or "
                            "give --train_file PATH (any Alpaca-format JSON/JSONL)")
        if not path.is_file():
            raise DataError(f"task alpaca: {path} does not exist. Put the Alpaca JSON there, or give "
                            "--train_file PATH (any Alpaca-format JSON/JSONL)")
        return path
    raise ConfigError("train_file", "task alpaca needs a data file",
                      f"Give --train_file PATH (Alpaca JSON/JSONL) or --data_dir DIR holding {ALPACA_FILE} "
                      "(or set RANKWISE_DATA_DIR)")


# ---------------------------------------------------------------------------------------------
# Encoding and batching
# ---------------------------------------------------------------------------------------------

def encode_instruct(examples: list[InstructExample], tokenizer, max_length: int, prompt_format: str = "alpaca",
                    loss_on: str = "response") -> tuple[list[dict], int]:
    """Features {input_ids, attention_mask, labels, index} with labels = -100 on prompt tokens (`loss_on="all"`:
    labels = input_ids), and the number of examples dropped because truncation to `max_length` left no token to
    learn from.

    The prompt is tokenized with the tokenizer's special tokens (BOS where it adds one), the response without,
    followed by EOS, so the prompt/response boundary is exact. `prompt_format="human_assistant"`: the placement
    study's text, no EOS; with `loss_on="all"` tokenized in one piece, exactly as the study did."""
    if not examples:
        return [], 0
    if any(e.messages is not None for e in examples):
        return _encode_chats(examples, tokenizer, max_length, loss_on)
    study = prompt_format == "human_assistant"
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    eos = None if study else eos
    if study and loss_on == "all":
        whole = tokenizer([f"{format_prompt(e, prompt_format)} {e.output}" for e in examples],
                          add_special_tokens=True)["input_ids"]
        prompts, responses = [[] for _ in examples], whole
    else:
        prompts = tokenizer([format_prompt(e, prompt_format) for e in examples], add_special_tokens=True)["input_ids"]
        responses = tokenizer([(" " if study else "") + e.output for e in examples],
                              add_special_tokens=False)["input_ids"]
    features, dropped = [], 0
    for example, prompt, response in zip(examples, prompts, responses):
        response = list(response) + ([eos] if eos is not None else [])
        input_ids = (list(prompt) + response)[:max_length]
        labels = ([IGNORE_INDEX] * len(prompt) + response)[:max_length]
        if loss_on == "all":
            labels = list(input_ids)
        dropped += _add_feature(features, input_ids, labels, example.index)
    return features, dropped


def _add_feature(features: list[dict], input_ids: list[int], labels: list[int], index: int) -> int:
    """Append a training feature; 1 (dropped) instead when truncation left no token to learn from."""
    if all(label == IGNORE_INDEX for label in labels):
        return 1
    features.append({"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels,
                     "index": index})
    return 0


def chat_segments(messages: tuple, tokenizer) -> list[tuple[str, bool]]:
    """The conversation as (text, learned) pieces: the assistant's replies learned, everything else context. With
    a chat template the pieces are the template's own rendering, cut where each message starts; without one, a
    plain `User: ...` / `Assistant: ...` transcript."""
    if not getattr(tokenizer, "chat_template", None):
        eos = tokenizer.eos_token or tokenizer.sep_token or ""
        pieces = []
        for m in messages:
            if m["role"] == "assistant":
                pieces += [("Assistant: ", False), (m["content"] + eos, True), ("\n", False)]
            else:
                pieces.append((f"{m['role'].capitalize()}: {m['content']}\n", False))
        return pieces

    def render(upto: int, generation_prompt: bool = False) -> str:
        if upto == 0:
            return ""
        return tokenizer.apply_chat_template(list(messages[:upto]), tokenize=False,
                                             add_generation_prompt=generation_prompt)

    pieces, done = [], ""
    for k, message in enumerate(messages):
        after = render(k + 1)
        if message["role"] == "assistant":
            opened = render(k, generation_prompt=True)
            if not (opened.startswith(done) and after.startswith(opened)):
                raise DataError("the tokenizer's chat template does not render a conversation turn by turn (each "
                                "prefix extending the last), so the assistant's tokens cannot be told apart; use "
                                "Alpaca-format records, or a tokenizer with another template")
            pieces += [(opened[len(done):], False), (after[len(opened):], True)]
        else:
            if not after.startswith(done):
                raise DataError("the tokenizer's chat template does not render a conversation turn by turn")
            pieces.append((after[len(done):], False))
        done = after
    return pieces


def _encode_chats(examples: list[InstructExample], tokenizer, max_length: int, loss_on: str) -> tuple[list[dict], int]:
    """Chat records: the pieces of `chat_segments` tokenized one by one (no special tokens added: the template
    writes them), labels on the assistant's tokens only (`loss_on="all"`: every token)."""
    features, dropped = [], 0
    for example in examples:
        messages = example.messages or ({"role": "user", "content": example.instruction},
                                        {"role": "assistant", "content": example.output})
        input_ids, labels = [], []
        for text, learned in chat_segments(messages, tokenizer):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            input_ids += ids
            labels += ids if learned or loss_on == "all" else [IGNORE_INDEX] * len(ids)
        dropped += _add_feature(features, input_ids[:max_length], labels[:max_length], example.index)
    return features, dropped


class CausalCollator:
    """Right-pads a list of features to its longest (or to `length`, --pad_to_max_length): input_ids with `pad_id`,
    attention_mask 0, labels -100."""

    def __init__(self, pad_id: int, length: int | None = None):
        self.pad_id, self.length = pad_id, length

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = self.length or max(len(f["input_ids"]) for f in features)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([f[key] + [value] * (length - len(f[key])) for f in features], dtype=torch.long)

        return {"input_ids": pad("input_ids", self.pad_id), "attention_mask": pad("attention_mask", 0),
                "labels": pad("labels", IGNORE_INDEX)}


# ---------------------------------------------------------------------------------------------
# Evaluation and generation
# ---------------------------------------------------------------------------------------------

def token_losses(model: nn.Module, batch: dict[str, torch.Tensor], max_logits_bytes: int = LOGITS_CHUNK_BYTES
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: (sum of next-token cross-entropies over response tokens, number of those tokens), shapes (B,).
    Runs the model on sub-batches so the (B, T, vocab) logits stay under `max_logits_bytes`."""
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    sums, counts = [], []
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    vocab = head.weight.shape[0] if head is not None else 65536
    chunk = max(1, max_logits_bytes // (input_ids.shape[1] * vocab * 4))
    for start in range(0, input_ids.shape[0], chunk):
        part = slice(start, start + chunk)
        logits = model(input_ids=input_ids[part], attention_mask=attention_mask[part]).logits.float()
        target = labels[part, 1:]
        losses = nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=IGNORE_INDEX,
                                             reduction="none")  # (b, T-1); 0 where ignored
        sums.append(losses.sum(1))
        counts.append((target != IGNORE_INDEX).sum(1))
    return torch.cat(sums), torch.cat(counts)


def evaluate_causal(model: nn.Module, loaders: dict, accelerator, accumulation_steps: int | None = None
                    ) -> dict[str, float]:
    """`{split}_loss` (mean token loss over the split, token-weighted), `{split}_perplexity` = exp(loss) and
    `{split}_tokens`, for every eval loader. Per-example sums stay on the device until `accumulation_steps`
    batches have run (--eval_accumulation_steps), or to the end."""
    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        for split, loader in loaders.items():
            held = HostBatches(accumulation_steps)
            for batch in loader:
                sums, counts = token_losses(model, batch)
                held.add(*accelerator.gather_for_metrics((sums.double(), counts)))
            sums, counts = held.result(2)
            total, tokens = float(sums.sum()), int(counts.sum())
            loss = total / max(tokens, 1)
            out[f"{split}_loss"] = loss
            out[f"{split}_perplexity"] = math.exp(loss) if loss < 700 else float("inf")
            out[f"{split}_tokens"] = float(tokens)
    return out


def generate_greedy(model: nn.Module, tokenizer, examples: list[InstructExample],
                    max_new_tokens: int = GENERATION_MAX_NEW_TOKENS, prompt_format: str = "alpaca") -> list[dict]:
    """Greedy completions of each example's prompt, one prompt at a time (no padding to get wrong)."""
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos,
                              pad_token_id=pad)
    device = next(model.parameters()).device
    model.eval()
    records = []
    for example in examples:
        if example.messages is not None:  # the conversation up to the reply, as training saw it
            pieces = chat_segments(example.messages, tokenizer)
            last_reply = max(i for i, (_, learned) in enumerate(pieces) if learned)
            context = "".join(text for text, _ in pieces[:last_reply])
            encoded = tokenizer(context, return_tensors="pt", add_special_tokens=False).to(device)
        else:
            encoded = tokenizer(format_prompt(example, prompt_format), return_tensors="pt",
                                add_special_tokens=True).to(device)
        with torch.no_grad():
            output = model.generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                    generation_config=config)
        new_tokens = output[0, encoded["input_ids"].shape[1]:]
        records.append({"index": example.index, "instruction": example.instruction, "input": example.input,
                        "reference": example.output,
                        "generation": tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
                        "new_tokens": int(new_tokens.shape[0])})
    return records


# ---------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------

def prepare_instruct(cfg):
    """A PreparedTask for instruction tuning: data read and checked, tokenized, model loaded. Raises
    ConfigError/DataError/ModelError on bad input before anything is written."""
    path = alpaca_path(cfg)
    examples = load_alpaca(path)
    train_examples, eval_examples = split_examples(examples, cfg.eval_size, cfg.max_train_samples,
                                                   how=cfg.instruct_split)
    if cfg.max_eval_samples is not None:
        eval_examples = eval_examples[:cfg.max_eval_samples]
    tokenizer = models.load_tokenizer(cfg.model)
    torch.manual_seed(cfg.seed)
    model = models.load_causal_lm(cfg.model)
    max_length = max_seq_length_for(cfg, model)
    train, train_dropped = encode_instruct(train_examples, tokenizer, max_length, cfg.prompt_format, cfg.loss_on)
    evals, eval_dropped = encode_instruct(eval_examples, tokenizer, max_length, cfg.prompt_format, cfg.loss_on)
    for split, features in (("training", train), ("eval", evals)):
        if not features:
            raise DataError(f"task alpaca: no {split} example of {path} keeps a response token within "
                            f"--max_seq_length {max_length}. Raise --max_seq_length")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generation_examples = eval_examples[:cfg.num_generations]

    def finalize(trained: nn.Module, run_dir: Path) -> None:
        if generation_examples:
            write_jsonl_atomic(Path(run_dir) / "generations.jsonl",
                               generate_greedy(trained, tokenizer, generation_examples,
                                               prompt_format=cfg.prompt_format))

    def response_tokens(features: list[dict]) -> int:
        return sum(sum(label != IGNORE_INDEX for label in f["labels"]) for f in features)

    info = {"data_source": str(path), "records_in_file": len(examples), "split_seed": SPLIT_SEED,
            "train_examples": len(train), "eval_examples": {"eval": len(evals)},
            "dropped_by_truncation": {"train": train_dropped, "eval": eval_dropped},
            "response_tokens": {"train": response_tokens(train), "eval": response_tokens(evals)},
            "eval_record_indices": [e.index for e in eval_examples], "max_seq_length": max_length}
    return PreparedTask(
        model=model, tokenizer=tokenizer, train_features=train, eval_sets={"eval": evals},
        collate=CausalCollator(pad_id, max_length if cfg.pad_to_max_length else None), evaluate=evaluate_causal,
        main_metric="eval_loss", greater_is_better=False,
        head_modules=[], peft_task_type="CAUSAL_LM", info=info, finalize=finalize)
