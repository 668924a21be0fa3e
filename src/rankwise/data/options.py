"""The data options of a run: what every task reads (`DataArguments`), and what only your own data (`--task text`) or
instruction tuning (`--task alpaca`) reads. A task reads `DataArguments` and its own part (`task_options`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..options import option

PROBLEM_TYPES = ("auto", "single_label_classification", "regression")
PROMPT_FORMATS = ("alpaca", "human_assistant")
LOSS_ON = ("response", "all")
INSTRUCT_SPLITS = ("seeded_holdout", "first_n_90_10")


@dataclass
class DataArguments:
    """The task and what every task's data reading takes."""

    task: Optional[str] = option(None, "GLUE task (cola, sst2, mrpc, qnli, rte, stsb, qqp, mnli, wnli), `alpaca` "
                                "(instruction tuning), or `text` (your own classification or regression data: "
                                "--train_file or --dataset). Default: `text` when --train_file or --dataset is given "
                                "without a task, else cola.", "data", aliases=("--task_name",))
    data_dir: Optional[str] = option(None, "Directory with GLUE task folders in the original TSV layout and/or "
                                    "alpaca/alpaca_data.json "
                                    "(default: $RANKWISE_DATA_DIR; else the Hugging Face hub).", "data")
    max_seq_length: Optional[int] = option(None, "Longest input in tokens (default 128 for GLUE, 512 for alpaca).",
                                          "data")
    pad_to_max_length: bool = option(False, "Pad every batch to --max_seq_length (transformers' run_glue.py flag; the "
                                    "LoRA Without Regret and adaptive LoRA-XS studies padded so) instead of to its "
                                    "longest input: the same logits under the attention mask, more compute.", "data")
    max_train_samples: Optional[int] = option(None, "Use only the first N training examples.", "data")
    max_eval_samples: Optional[int] = option(None, "Use only the first N evaluation examples.", "data")


@dataclass
class TrainFileOption:
    """A training file: your own data's (`text`), or Alpaca-format records (`alpaca`); GLUE tasks read --data_dir."""

    train_file: Optional[str] = option(None, "Training data: for `text`, a CSV, TSV, JSON, JSONL or Parquet file of "
                                      "texts and labels; for `alpaca`, Alpaca-format or chat-format (`messages`) JSON/JSONL "
                                      "(GLUE tasks read --data_dir).", "data")


@dataclass
class TextDataOptions:
    """Your own data (`--task text`): its files or dataset, columns and split."""

    validation_file: Optional[str] = option(None, "`text`: evaluation data, in the training file's format (default: "
                                           "--validation_split of the training data).", "data")
    test_file: Optional[str] = option(None, "`text`: test data, evaluated with every evaluation (metrics `test_*`).",
                                     "data")
    dataset: Optional[str] = option(None, "`text`: a 🤗 datasets dataset: a local directory of data files, or a hub "
                                   "name when the hub is reachable (`ag_news`: the LR-ratio study's draw).", "data")
    dataset_config: Optional[str] = option(None, "`text`: the --dataset configuration (name) to load.", "data")
    text_column: Optional[str] = option(None, "`text`: the column with the text (default: the first of text, sentence, "
                                       "sentence1, question, premise, content, review, document).", "data")
    text_pair_column: Optional[str] = option(None, "`text`: a second text column for sentence pairs (default: sentence2, "
                                            "hypothesis or question2 when the first is sentence1, premise or "
                                            "question1).", "data")
    label_column: Optional[str] = option(None, "`text`: the label column (default: label).", "data")
    problem_type: str = option("auto", "`text`: `single_label_classification`, `regression`, or `auto` (float labels "
                              "that are not whole numbers mean regression).", "data", PROBLEM_TYPES)
    validation_split: float = option(0.1, "`text` without validation data: the fraction of the training data held out "
                                    "for evaluation (a fixed split, the same for every seed).", "data")


@dataclass
class InstructDataOptions:
    """Instruction tuning (`--task alpaca`): the prompt, the loss, the held-out split and the generations."""

    prompt_format: str = option("alpaca", "alpaca: `alpaca` (the Stanford Alpaca prompt) or `human_assistant` "
                               "(\"Human: {instruction}\\nAssistant: {output}\", the placement study's; the input "
                               "field is left out as it did).", "data", PROMPT_FORMATS)
    loss_on: str = option("response", "alpaca: loss on the `response` tokens, or on `all` tokens of prompt and "
                         "response (the placement study's labels = input_ids).", "data", LOSS_ON)
    instruct_split: str = option("seeded_holdout", "alpaca: `seeded_holdout` (--eval_size records of a fixed "
                                "permutation held out) or `first_n_90_10` (the placement study's: the first "
                                "--max_train_samples records, the first nine tenths to train and the rest to evaluate).",
                                "data", INSTRUCT_SPLITS, aliases=("--split",))
    eval_size: int = option(200, "alpaca: size of the held-out evaluation split.", "data")
    num_generations: int = option(4, "alpaca: greedy generations on eval prompts saved to the run directory.", "data")


def default_max_seq_length(task: str) -> int:
    """--max_seq_length when none is given (a model with fewer positions caps it: `models.check_max_seq_length`)."""
    return 512 if task == "alpaca" else 128


def task_options(task: str | None) -> tuple[type, ...]:
    """The data option parts task `task` reads beyond DataArguments (None: a task not yet known reads them all)."""
    if task is None:
        return (TrainFileOption, TextDataOptions, InstructDataOptions)
    if task == "text":
        return (TrainFileOption, TextDataOptions)
    if task == "alpaca":
        return (TrainFileOption, InstructDataOptions)
    return ()
