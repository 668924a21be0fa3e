"""The model card (README.md) every export carries: Hugging Face's conventions (YAML metadata: `base_model` as a hub
id, `library_name`, `pipeline_tag`, `tags`, `datasets`, a `model-index` with the dev-set results) and a text that says
which weights the export holds: the evaluation they come from (best or final: step, epoch, the metric that chose
them), their metrics, and the run's final metrics beside them, as export.json records them (`saved_weights`,
`final_metrics`). Nothing in it is a path of the machine it was written on.
"""

from __future__ import annotations

import yaml

from ..methods import get_method
from ..models import EMBEDDED

CARD_FILE = "README.md"

# GLUE tasks as the hub's `nyu-mll/glue` names them (config names), with their metrics' model-index types.
GLUE_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qnli": "QNLI", "rte": "RTE", "stsb": "STS-B",
              "qqp": "QQP", "mnli": "MNLI", "wnli": "WNLI"}
METRIC_NAMES = {"matthews_correlation": "Matthews correlation", "accuracy": "accuracy", "f1": "F1",
                "pearson": "Pearson correlation", "spearmanr": "Spearman correlation", "loss": "loss",
                "perplexity": "perplexity"}
LOADERS = {
    "merged": ("from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
               "model = AutoModelForSequenceClassification.from_pretrained(\"{path}\")\n"
               "tokenizer = AutoTokenizer.from_pretrained(\"{path}\")"),
    "peft": ("from peft import AutoPeftModelForSequenceClassification\n"
             "from transformers import AutoTokenizer\n\n"
             "model = AutoPeftModelForSequenceClassification.from_pretrained(\"{path}\")  # base: {base}\n"
             "tokenizer = AutoTokenizer.from_pretrained(\"{path}\")"),
    "compact": ("import rankwise\n\n"
                "model = rankwise.load(\"{path}\")  # base: {base}, found installed or in the hub cache"),
}
CAUSAL_LOADERS = {"merged": "AutoModelForCausalLM", "peft": "AutoPeftModelForCausalLM"}


def _value(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _where(weights: dict) -> str:
    parts = [f"step {weights['step']}" if weights.get("step") is not None else None,
             f"epoch {weights['epoch']:g}" if isinstance(weights.get("epoch"), (int, float)) else None]
    return ", ".join(p for p in parts if p)


def describe_weights(record: dict) -> str | None:
    """One sentence: which evaluation's weights an export holds (None when the run recorded no evaluation)."""
    weights = record.get("saved_weights")
    if not weights:
        return None
    where = _where(weights)
    if weights.get("which") == "best":
        chosen = f", chosen by {weights['selected_by']}" if weights.get("selected_by") else ""
        return f"the weights of the run's best evaluation ({where}{chosen}; --load_best_model_at_end)"
    return f"the weights at the end of the run (its final evaluation: {where})"


def model_card(record: dict, name: str) -> str:
    """README.md for an export described by `record` (export.json's content); `name`: the export's folder name."""
    task, method = record.get("task"), get_method(record["method"])
    base = record.get("base_model_name_or_path") or record.get("base_model")
    causal = task == "alpaca" or (record.get("run_config") or {}).get("task") == "alpaca"
    how = f"{method.title}, {record['allocation']} allocation" if record.get("allocation") else method.title
    lines = [f"# {name}", "",
             f"`{base}` fine-tuned on {('GLUE ' + GLUE_NAMES[task]) if task in GLUE_NAMES else (task or 'a task')} "
             f"with rankwise ({how}), exported as "
             f"`{record['format']}`" + (f" from the run `{record['source_run']}`" if record.get("source_run") else "")
             + "."]
    embedded = EMBEDDED.get(record.get("base_model") or "")
    if embedded is not None and embedded.hub_id is None and embedded.derived_from:
        lines += ["", f"The base weights it was trained on are {embedded.description}, from the `{embedded.package}` "
                  f"package, not the very weights of `{embedded.derived_from}`: for the trained model's exact outputs "
                  "use a merged export, or `rankwise.load`, which uses that package."]
    lines += _weights_section(record)
    loader = LOADERS[record["format"]].format(path=name, base=base)
    if causal:
        loader = loader.replace("AutoPeftModelForSequenceClassification", CAUSAL_LOADERS["peft"]) \
            .replace("AutoModelForSequenceClassification", CAUSAL_LOADERS["merged"])
    lines += ["", "## Use", "", "```python", loader, "```"]
    labels = (record.get("labels") or {})
    if labels:
        lines += ["", "Labels (`config.id2label`): " + ", ".join(f"{i} = `{n}`" for i, n in labels.items()) + "."]
    lines += ["", "## Training", "", *_training_lines(record, method)]
    front = yaml.safe_dump(_card_metadata(record, name, base, method, causal), sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(lines) + "\n"


def _card_metadata(record: dict, name: str, base: str, method, causal: bool) -> dict:
    """The card's YAML front matter in the Hub's conventions, with a model-index of the saved weights' dev metrics
    for GLUE tasks."""
    fmt, task = record["format"], record.get("task")
    meta: dict = {"base_model": base}
    if fmt in ("peft", "merged"):
        meta["library_name"] = "peft" if fmt == "peft" else "transformers"
    meta["pipeline_tag"] = "text-generation" if causal else "text-classification"
    tags = ["rankwise", method.name] + ([f"base_model:adapter:{base}", "lora", "transformers"] if fmt == "peft" else [])
    meta["tags"] = list(dict.fromkeys(tags))
    if task in GLUE_NAMES:
        meta["datasets"] = ["nyu-mll/glue"]
        metrics = [{"type": key.removeprefix("eval_"), "value": round(float(value), 6),
                    "name": f"{METRIC_NAMES.get(key.removeprefix('eval_'), key)} (dev set, saved weights)",
                    "verified": False}
                   for key, value in ((record.get("saved_weights") or {}).get("metrics") or {}).items()
                   if key != "eval_loss" and isinstance(value, (int, float))]
        if metrics:
            meta["model-index"] = [{"name": name, "results": [{
                "task": {"type": "text-classification", "name": "Text Classification"},
                "dataset": {"name": f"GLUE {GLUE_NAMES[task]}", "type": "nyu-mll/glue", "config": task,
                            "split": "validation"},
                "metrics": metrics}]}]
    return meta


def _weights_section(record: dict) -> list[str]:
    """Which weights the export holds, and their dev metrics beside the final evaluation's."""
    described = describe_weights(record)
    if not described:
        return []
    weights, final = record.get("saved_weights") or {}, record.get("final_metrics") or {}
    saved_metrics = weights.get("metrics") or {}
    lines = ["", "## Weights", "", f"This export holds {described}."]
    keys = list(dict.fromkeys([*saved_metrics, *(k for k in final if k.startswith("eval_"))]))
    if keys:
        lines += ["", f"| dev-set metric | saved weights ({_where(weights)}) | final evaluation "
                  f"({_where(final)}) |", "|---|---|---|"]
        lines += [f"| {key} | {_value(saved_metrics.get(key))} | {_value(final.get(key))} |" for key in keys]
    return lines


def _training_lines(record: dict, method) -> list[str]:
    params, config, lines = record.get("adapter_parameters"), record.get("run_config") or {}, []
    if params:
        ranks = sorted((record.get("hard_ranks") or {}).values())
        span = f"rank {ranks[0]}" if ranks and ranks[0] == ranks[-1] else f"ranks {ranks[0]}–{ranks[-1]}" if ranks \
            else ""
        lines.append(f"- adapter: {len(ranks)} matrices, {span}, {params['after']:,} parameters "
                     f"({method.cost_symbol})" if ranks else f"- adapter: {params['after']:,} parameters")
    for key, label in (("learning_rate", "learning rate"), ("cls_learning_rate", "head learning rate"),
                       ("num_train_epochs", "epochs"), ("max_steps", "optimiser steps"),
                       ("per_device_train_batch_size", "batch size per device"), ("seed", "seed")):
        if config.get(key) is not None:
            lines.append(f"- {label}: {config[key]}")
    lines.append(f"- rankwise {record.get('rankwise_version')}; every setting in `export.json` (`run_config`)")
    return lines

__all__ = ["CARD_FILE", "model_card", "describe_weights"]
