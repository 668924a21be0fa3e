"""What `--model` / `--adapter` point at, and loading it: the one loader behind export, evaluate and predict.

A source is a finished run directory, its weights folder (`adapter/`, or `model/` for full fine-tuning), an export
written by `rankwise export` (ship/export.py), a PEFT adapter without rankwise metadata, or any transformers model.
`load_source` resolves one before anything heavy is loaded (so bad input stops early); `Source.load` then builds the
model to call. `open_finished_run` is the stricter view export needs: a run that completed and saved its weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..adapters.io import META_FILE, read_adapter_metadata
from ..adapters.lora import peft_quietly
from ..data import GLUE_TASKS, INSTRUCT_TASKS, known_tasks
from ..errors import ConfigError, ModelError, RunDirError
from ..methods import AdapterMethod, AdapterSet, get_method, load_adapter
from ..models import load_causal_lm, load_classifier, load_pretrained, locate_base_model
from ..runs.rundir import read_json, read_summary

EXPORT_FILE = "export.json"  # written by every export; evaluate/predict read the training config from it


# ---------------------------------------------------------------------------------------------
# A finished run
# ---------------------------------------------------------------------------------------------

@dataclass
class FinishedRun:
    """A completed run directory: its resolved config, summary and weights folder."""

    path: Path
    config: dict  # config.json's "config": the resolved RunConfig as a dict
    summary: dict
    data: dict = field(default_factory=dict)  # config.json's "data": where the data came from, label names, ...

    def load_base(self) -> nn.Module:
        """A fresh base model as the run trained it: its head for the run's task and labels, in eval mode."""
        return load_base(self.base_model, self.task, self.data)

    @property
    def method(self) -> AdapterMethod:
        return get_method(self.config["method"])

    @property
    def task(self) -> str:
        return self.config["task"]

    @property
    def base_model(self) -> str:
        return self.config["model"]

    @property
    def weights(self) -> Path:
        return self.path / self.method.weights_dir

    @property
    def source_run(self) -> str | None:
        """What export.json names as the export's source: the run directory."""
        return str(self.path.resolve())

    @property
    def described(self) -> str:
        """How messages name it: the run directory."""
        return f"`{self.path}`"


def open_finished_run(run_dir: str | Path) -> FinishedRun:
    """Raise RunDirError unless `run_dir` is a run that completed and saved its weights."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory `{path}` does not exist")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise RunDirError(f"`{path}` is not a run directory (no config.json). Give the directory `rankwise train` "
                          "wrote (its --output_dir)")
    try:
        recorded = read_json(config_path)
        config, data = recorded["config"], recorded.get("data") or {}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise RunDirError(f"{config_path} is not a rankwise run config (no `config` object)") from None
    summary = read_summary(path)
    if summary is None:
        raise RunDirError(f"run `{path}` did not finish: it has no summary.json (killed, or still running). Export "
                          "a completed run")
    status = summary.get("status")
    if status != "completed":
        why = f": {summary['message']}" if summary.get("message") else ""
        raise RunDirError(f"run `{path}` did not complete (status `{status}`{why}). Only completed runs can be "
                          "exported; fix the cause and train again")
    run = FinishedRun(path, config, summary, data)
    if not run.weights.is_dir():
        raise RunDirError(f"run `{path}` has no {run.weights.name}/ folder with weights (trained with "
                          "--save_model false?). Train again with --save_model true")
    return run


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

# Label names as the GLUE datasets on the hub (`nyu-mll/glue`) name them, index for index with the labels of the TSV
# files in data/glue.py (CoLA's files say 0/1, which exports would otherwise show as the names).
GLUE_LABEL_NAMES = {
    "cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"), "qqp": ("not_duplicate", "duplicate"),
    "qnli": ("entailment", "not_entailment"), "rte": ("entailment", "not_entailment"),
    "mnli": ("entailment", "neutral", "contradiction"), "wnli": ("not_entailment", "entailment"),
}
REGRESSION = "regression"
CLASSIFICATION = "single_label_classification"


@dataclass(frozen=True)
class Head:
    """A classification (or regression) head as transformers configures it: `num_labels`, `problem_type` and the
    label names (`id2label`; None for regression)."""

    num_labels: int
    problem_type: str
    label_names: tuple[str, ...] | None = None

    def apply(self, config) -> None:
        """Write the head into a transformers config, so `from_pretrained` rebuilds it and pipelines name labels."""
        config.num_labels = self.num_labels
        config.problem_type = self.problem_type
        if self.label_names is not None:
            config.id2label = dict(enumerate(self.label_names))
            config.label2id = {name: i for i, name in enumerate(self.label_names)}


def task_head(task_name: str | None, data: dict | None = None) -> Head | None:
    """The head of a run's task: label names the run recorded (config.json `data.label_names`, your own data)
    first, then a GLUE task's; None for a causal LM task."""
    data = data or {}
    if data.get("label_names"):
        names = tuple(str(name) for name in data["label_names"])
        return Head(len(names), data.get("problem_type") or CLASSIFICATION, names)
    if data.get("problem_type") == REGRESSION:
        return Head(1, REGRESSION)
    task = GLUE_TASKS.get(task_name)
    if task is None:
        return None
    if task.is_regression:
        return Head(1, REGRESSION)
    return Head(task.num_labels, CLASSIFICATION, GLUE_LABEL_NAMES.get(task_name, task.labels))


def load_base(model_name: str, task_name: str | None = None, data: dict | None = None, config=None) -> nn.Module:
    """A fresh base model, in eval mode: built with `config` when given (the fine-tuned model's config an export
    carries: class, head size, labels), else with the head of `task_name` (see `task_head`), else a causal LM for a
    causal-LM task (instruction tuning), else the class the checkpoint's own config names."""
    torch.manual_seed(0)  # a new head is initialised, then replaced by the adapter's
    head = task_head(task_name, data) if config is None else None
    if config is not None:
        model = load_pretrained(model_name, config)
    elif head is not None:
        model = load_classifier(model_name, head.num_labels, head.problem_type == REGRESSION)
        head.apply(model.config)
    elif task_name in INSTRUCT_TASKS:
        model = load_causal_lm(model_name)
    else:  # no task, or one whose head is unknown here: the class the checkpoint's config names
        model = load_pretrained(model_name)
    return model.eval()


def probe_batch(model: nn.Module, batch_size: int = 4, length: int = 16) -> dict[str, torch.Tensor]:
    """A fixed batch of token ids (seeded) with some padding, to compare two models' logits."""
    vocab = int(getattr(model.config, "vocab_size", 1000))
    generator = torch.Generator().manual_seed(1234)
    input_ids = torch.randint(5, vocab, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1:, length // 2:] = 0  # rows of different lengths
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@torch.no_grad()
def logits_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    return model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()


# ---------------------------------------------------------------------------------------------
# A source for evaluate / predict (and for reloading an export to check it)
# ---------------------------------------------------------------------------------------------

@dataclass
class Source:
    """What `--model` / `--adapter` point at, resolved before anything is loaded.

    kind: `adapter` (rankwise adapter: a run's adapter/, a compact or peft export), `peft` (a PEFT adapter
    without rankwise metadata), or `model` (a plain transformers model: a merged export, a full run's model/)."""

    kind: str
    path: Path | str
    base_model: str | None = None  # for adapters
    meta: dict | None = None
    training: dict = field(default_factory=dict)  # the run's config when known (task, max_seq_length, ...)
    allow_base_model_mismatch: bool = False  # a rankwise adapter on another base model: warn instead of refusing
    data: dict = field(default_factory=dict)  # the run's config.json `data` when known (label names, ...)

    def model_name(self) -> str:
        return str(self.path) if self.kind == "model" else self.base_model

    def fine_tuned_config(self):
        """The fine-tuned model's transformers config an adapter export carries (config.json: class, head size,
        labels), or None (a run's adapter/, a merged model: its own config.json is its checkpoint's)."""
        path = Path(self.path)
        if self.kind == "model" or not (path / "config.json").is_file():
            return None
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(str(path))
        except Exception as exc:  # a config.json transformers cannot read
            raise RunDirError(f"{path / 'config.json'} is not a transformers model config: "
                              f"{str(exc).strip().splitlines()[0][:300]}") from None

    def load(self, task_name: str | None = None, model: nn.Module | None = None
             ) -> tuple[nn.Module, AdapterSet | None]:
        """(model to call, AdapterSet or None). `model`: an already loaded base (or full) model to use. Without
        one, the base is built as the export's config.json says, else for `task_name` (default: the task it was
        trained on)."""
        if model is None:
            model = load_base(self.model_name(), task_name or self.training.get("task"), self.data,
                              self.fine_tuned_config())
        if self.kind == "model":
            return model.eval(), None
        if self.kind == "peft":
            # PEFT (and adapters.lora, which imports it) take seconds to import: only plain PEFT adapters need them.
            from peft import PeftModel

            try:
                with peft_quietly():
                    return PeftModel.from_pretrained(model, str(self.path)).eval(), None
            except Exception as exc:
                raise RunDirError(f"PEFT adapter {self.path} does not load onto `{self.base_model}`: "
                                  f"{str(exc).strip().splitlines()[0][:300]}") from None
        adapter = load_adapter(model, self.path, self.allow_base_model_mismatch)
        return adapter.model.eval(), adapter


def _run_config(path: Path) -> dict:
    try:
        return read_json(path / "config.json")["config"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}


def _run_data(path: Path) -> dict:
    try:
        return read_json(path / "config.json").get("data") or {}
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}


def _training_data(path: Path) -> dict:
    """The data record (label names, ...) of the run behind an export or a run's adapter/ (empty if none)."""
    if (path / EXPORT_FILE).is_file():
        try:
            return read_json(path / EXPORT_FILE).get("run_data") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            return {}
    return _run_data(path.parent) if path.name == "adapter" else {}


def _training_config(path: Path) -> dict:
    """The training config recorded next to an export or a run's adapter/ (empty if none)."""
    if (path / EXPORT_FILE).is_file():
        try:
            return read_json(path / EXPORT_FILE).get("run_config") or {}
        except (OSError, json.JSONDecodeError):
            return {}
    return _run_config(path.parent) if path.name == "adapter" else {}


def load_source(model: str | None = None, adapter: str | None = None, base_model: str | None = None,
                allow_base_model_mismatch: bool = False) -> Source:
    """Resolve `--model` / `--adapter` (exactly one) to a Source. Raises RankwiseError with the fix.
    `allow_base_model_mismatch`: load a rankwise adapter onto a base model other than the one it was trained on
    (its fingerprint differs) with a warning instead of refusing it."""
    if (model is None) == (adapter is None):
        raise ConfigError("model", "give exactly one of --model DIR (a merged export or any transformers model) "
                          "and --adapter DIR (an adapter export, a run's adapter/, or a run directory)")
    flag = "--model" if model is not None else "--adapter"
    given = model if model is not None else adapter
    path = Path(given).expanduser()

    if path.is_dir() and (path / "config.json").is_file() and _run_config(path):  # a run directory
        run = FinishedRun(path, _run_config(path), read_summary(path) or {}, _run_data(path))
        if not run.weights.is_dir():
            status = run.summary.get("status", "unfinished (no summary.json)")
            raise RunDirError(f"{flag} `{path}`: the run has no {run.weights.name}/ (status {status}); only a "
                              "completed run with saved weights can be used")
        if not run.method.trains_adapter:  # full fine-tuning: the run's model/ is a plain model
            return Source("model", run.weights, training=run.config, data=run.data)
        path = run.weights
        flag = "--adapter"

    is_rankwise = (path / META_FILE).is_file() or _is_rankwise_config(path / "adapter_config.json")
    is_peft = not is_rankwise and (path / "adapter_config.json").is_file()
    if flag == "--model":
        if is_rankwise or is_peft:
            raise ConfigError("model", f"`{path}` is an adapter, not a full model", f"Use --adapter {path}")
        if not path.exists() and (str(given).startswith((".", "/", "~")) or os.sep in str(given)):
            raise ModelError(f"--model `{given}` does not exist")
        name = str(path) if path.exists() else str(given)
        return Source("model", name, training=_training_config(path) if path.is_dir() else {},
                      data=_training_data(path) if path.is_dir() else {})

    if not path.is_dir():
        raise RunDirError(f"--adapter `{given}` is not a directory")
    if is_rankwise:
        meta = read_adapter_metadata(path)
        # The base model as recorded (an embedded name, a directory, a hub id): whichever exists here.
        return Source("adapter", path, base_model or locate_base_model(meta), meta, _training_config(path),
                      allow_base_model_mismatch, _training_data(path))
    if is_peft:
        config = json.loads((path / "adapter_config.json").read_text())
        named = config.get("base_model_name_or_path")
        base = base_model or (locate_base_model({"base_model_name_or_path": named}) if named else None)
        if not base:
            raise ConfigError("base_model", f"the PEFT adapter `{path}` does not name its base model",
                              "Pass --base_model NAME_OR_DIR")
        return Source("peft", path, base, config, {})
    raise RunDirError(f"--adapter `{path}` holds no adapter (no {META_FILE} or adapter_config.json) and is not a "
                      "run directory")


def _is_rankwise_config(path: Path) -> bool:
    try:
        return str(json.loads(path.read_text()).get("format", "")).startswith("rankwise")
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def resolve_task(source: Source, task: str | None) -> str:
    task = task or source.training.get("task")
    if task is None:
        raise ConfigError("task", f"`{source.path}` does not record the task it was trained for",
                          f"Pass --task (one of: {', '.join(known_tasks())})")
    if task not in known_tasks():
        raise ConfigError("task", f"unknown task `{task}`", f"Choose one of: {', '.join(known_tasks())}")
    return task


def check_source_fits_task(source: Source, task_name: str) -> None:
    """Refuse a classifier with another number of labels before loading it (the head would not load)."""
    task = GLUE_TASKS.get(task_name)
    if task is None:
        return
    trained_for = source.training.get("task")
    if trained_for in GLUE_TASKS and GLUE_TASKS[trained_for].num_labels != task.num_labels:
        raise ConfigError("task", f"`{source.path}` was trained on {trained_for} ({GLUE_TASKS[trained_for].num_labels}"
                          f" outputs) and cannot be evaluated on {task_name} ({task.num_labels} outputs)",
                          f"Use --task {trained_for} or another task with as many labels")
    if source.kind == "model" and Path(source.path).is_dir() and (Path(source.path) / "config.json").is_file():
        config = read_json(Path(source.path) / "config.json")
        labels = config.get("id2label")
        if labels is not None and len(labels) != task.num_labels and any(
                str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
            raise ConfigError("task", f"model `{source.path}` has {len(labels)} outputs but {task_name} needs "
                              f"{task.num_labels}", "Evaluate it on the task it was trained for")


__all__ = ["EXPORT_FILE", "FinishedRun", "open_finished_run", "load_base", "probe_batch",
           "logits_of", "Source", "load_source", "resolve_task", "check_source_fits_task", "Head", "task_head",
           "GLUE_LABEL_NAMES"]
