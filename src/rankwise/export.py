"""Ship a finished run, and use what was shipped.

`export_run(run_dir, format, out)` turns a completed run into an artifact at its hard ranks:

- `compact` (`loraxs`, `lora`): per matrix A (r, in), B (out, r) and, for LoRA-XS, R (r, r) truncated to the hard
  rank r, in safetensors with a small JSON config (format `rankwise-compact`, see adapters/io.py); each matrix
  keeps the scale it was trained with (α/rank_max for learned runs), so ΔW is unchanged.
  `rankwise.load_adapter(model, DIR)` loads it.
- `peft` (`lora`): a standard PEFT adapter with `rank_pattern` at the hard ranks and an `alpha_pattern` chosen so
  that α_i/r_i (α_i/√r_i with rsLoRA) equals the trained scale; the head is in `modules_to_save`. Loads with
  `PeftModel.from_pretrained`, no rankwise needed.
- `merged` (any method): ΔW added into the base weights, saved with `save_pretrained` with the tokenizer;
  loads with `AutoModelForSequenceClassification.from_pretrained(DIR)` (or the causal-LM class).

Every export writes `export.json` (source run, hard ranks, adapter parameters before and after, file sizes,
the run's config and final metrics) and is checked before it is kept: it is reloaded and its logits compared
with the trained model's on a fixed batch. The whole directory is written under a temporary name and renamed
at the end, so an interrupted export leaves nothing that looks complete.

`load_source` / `evaluate_source` / `predict_file` load an export (or a run's `adapter/`, or a run directory)
for `rankwise evaluate` and `rankwise predict`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .version import __version__
from .adapters.io import META_FILE, WEIGHTS_FILE, compact_metadata, compact_tensors, read_adapter_metadata, save_compact
from .errors import ConfigError, DataError, ModelError, RunDirError
from .methods import METHODS, AdapterMethod, AdapterSet, attach_tensors, get_method, load_adapter
from .models import _quiet_transformers
from .rundir import check_writable_path, read_json, read_summary, replace_dir, write_json_atomic
from .targets import TargetMatrix

FORMATS = ("peft", "compact", "merged")
EXPORT_FILE = "export.json"
# Largest |Δ logit| between the trained model and a reloaded export that still counts as the same model.
VERIFY_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# The run to export
# ---------------------------------------------------------------------------------------------

@dataclass
class FinishedRun:
    """A completed run directory: its resolved config, summary and weights folder."""

    path: Path
    config: dict  # config.json's "config": the resolved RunConfig as a dict
    summary: dict

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
        config = read_json(config_path)["config"]
    except (json.JSONDecodeError, KeyError, TypeError):
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
    run = FinishedRun(path, config, summary)
    if not run.weights.is_dir():
        raise RunDirError(f"run `{path}` has no {run.weights.name}/ folder with weights (trained with "
                          "--save_model false?). Train again with --save_model true")
    return run


def check_format(run: FinishedRun, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError("format", f"unknown format `{fmt}`", f"Choose one of: {', '.join(FORMATS)}")
    method = run.method
    if fmt in method.export_formats:
        return
    fix = f"Use --format {' or --format '.join(method.export_formats)}" + FORMAT_HINTS.get(method.export_formats[0], "")
    if not method.trains_adapter:
        raise ConfigError("format", f"`{fmt}` exports an adapter, but `{run.path}` is a {method.title} run (no "
                          "adapter)", fix)
    others = [f"`{m}`" for m in METHODS if fmt in get_method(m).export_formats]
    more = f" (or {' or '.join(others[1:])} one)" if len(others) > 1 else ""
    raise ConfigError("format", f"`{fmt}` needs a {others[0]} run{more}, but `{run.path}` is a `{method.name}` run",
                      fix)


FORMAT_HINTS = {"compact": " (compact loads with rankwise.load_adapter; merged with plain transformers)",
                "peft": " (peft loads with PeftModel.from_pretrained; merged with plain transformers)",
                "merged": " (a plain transformers model)"}


def check_out(out: str | Path, overwrite: bool, run: FinishedRun | None = None) -> Path:
    """Raise unless `out` may receive an export: never an existing non-empty directory without `overwrite`, and
    never the run directory, its weights folder, a folder holding them, or a folder inside the weights."""
    out = Path(out)
    resolved = out.resolve()
    if run is not None:
        weights = run.weights.resolve()
        if weights in resolved.parents or any(resolved == p or resolved in p.parents for p in (run.path.resolve(),
                                                                                             weights)):
            raise RunDirError(f"--out `{out}` would replace or sit inside `{run.weights}`, which the export reads. "
                              "Choose another directory (e.g. a new folder next to the run)")
    check_writable_path(out, "--out")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out `{out}` exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / EXPORT_FILE).is_file():  # never replace what rankwise did not write
            raise RunDirError(f"--out `{out}` holds files that are not a rankwise export "
                              f"({', '.join(sorted(p.name for p in out.iterdir())[:5])}); rankwise never deletes files "
                              "it did not write. Choose a new or empty directory")
        if not overwrite:
            raise RunDirError(f"--out `{out}` already holds an export. Choose another directory, or pass "
                              "--overwrite to replace it (the old export stays until the new one is written)")
    return out


@contextlib.contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield a temporary directory next to `out`; on success it replaces `out` in one rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; exports are for sharing
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for path in tmp.rglob("*"):  # safetensors writes 0600; exports are for sharing
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())
    replace_dir(tmp, out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def load_base(model_name: str, task_name: str) -> nn.Module:
    """A fresh base model for `task_name` (a classifier for GLUE tasks, else a causal LM), in eval mode."""
    from .data import GLUE_TASKS
    from .models import load_causal_lm, load_classifier

    torch.manual_seed(0)  # a new head is initialised, then replaced by the adapter's
    if task_name in GLUE_TASKS:
        task = GLUE_TASKS[task_name]
        model = load_classifier(model_name, task.num_labels, task.is_regression)
    else:
        model = load_causal_lm(model_name)
    return model.eval()


def merge_adapter(adapter: AdapterSet) -> nn.Module:
    """The plain transformers model with each matrix's ΔW (at its current ranks and masks) added to its weight."""
    return adapter.method.merge(adapter)


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
# Export
# ---------------------------------------------------------------------------------------------

def _bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _label_names(model: nn.Module, task_name: str) -> None:
    """Record the task's label names in the model config, so pipelines print them."""
    from .data import GLUE_TASKS

    task = GLUE_TASKS.get(task_name)
    if task is not None and task.labels is not None:
        model.config.id2label = dict(enumerate(task.labels))
        model.config.label2id = {label: i for i, label in enumerate(task.labels)}


def export_run(run_dir: str | Path, fmt: str, out: str | Path, overwrite: bool = False, verify: bool = True,
               log=print, allow_base_model_mismatch: bool = False) -> dict:
    """Export a completed run (see the module docstring) as its method's `export_style` says. All
    checks run before anything is loaded or written. The run's base model must still be the one it was trained on
    (its fingerprint, see adapters/io.py), unless `allow_base_model_mismatch`; the export records the fingerprint
    of the model the run was trained on. Returns the record written to `<out>/export.json`."""
    run = open_finished_run(run_dir)
    check_format(run, fmt)
    out = check_out(out, overwrite, run)
    from .models import load_tokenizer

    tokenizer = load_tokenizer(run.base_model if run.method.trains_adapter else str(run.weights))
    if not run.method.trains_adapter:
        return export_full_model(run, out, tokenizer=tokenizer, verify=verify, log=log)
    exporter = {"truncate": export_adapter_run, "as_trained": export_trained_adapter}[run.method.export_style]
    return exporter(run, fmt, out, tokenizer=tokenizer, verify=verify, log=log,
                    allow_base_model_mismatch=allow_base_model_mismatch)


def export_adapter_run(run: FinishedRun, fmt: str, out: Path, *, tokenizer, verify: bool, log,
                       allow_base_model_mismatch: bool = False) -> dict:
    """An adapter truncated to its hard ranks (LoRA-XS, LoRA): `compact` tensors, or built from them at the hard
    ranks and saved as a `peft` adapter or `merged` into the base weights."""
    trained = load_adapter(load_base(run.base_model, run.task), run.weights, allow_base_model_mismatch)
    meta = read_adapter_metadata(run.weights)
    hard_ranks, allocated = list(meta["hard_ranks"]), list(meta["ranks"])
    head = list(meta["head_modules"])
    compact_meta = compact_metadata(trained, hard_ranks, run.base_model, head,
                                    rslora=run.config.get("alpha_policy") == "rslora",
                                    task_type=trained.method.peft_task_type(trained),
                                    dropout=float(run.config.get("lora_dropout") or 0.0),
                                    fingerprint=meta.get("base_model_fingerprint"))
    tensors = compact_tensors(trained, hard_ranks, head)
    probe = probe_batch(trained.model)
    reference = logits_of(trained.model, probe)

    with atomic_directory(out) as tmp:
        if fmt == "compact":
            save_compact(tmp, compact_meta, tensors)
        else:
            # The same base model as `trained`, checked above: no second fingerprint (nor a second warning).
            unchecked = {**compact_meta, "base_model_fingerprint": None, "base_weight_norms": None}
            exported = attach_tensors(load_base(run.base_model, run.task), unchecked, tensors)
            if fmt == "peft":
                exported.method.save_peft_export(exported, tmp, compact_meta)
            else:
                _save_merged(merge_adapter(exported), tokenizer, run.task, tmp)
        record = _record(run, fmt, out, meta, tensors, allocated, hard_ranks, tmp)
        record["scales"] = dict(zip(record["hard_ranks"], compact_meta["scales"]))
        if verify:
            _verify(record, tmp, run.task, probe, reference, allow_base_model_mismatch)
        record["export_bytes"] = _bytes(tmp)  # everything but export.json
        write_json_atomic(tmp / EXPORT_FILE, record)
    _print_record(record, log)
    return record


def export_trained_adapter(run: FinishedRun, fmt: str, out: Path, *, tokenizer, verify: bool, log,
                           allow_base_model_mismatch: bool = False) -> dict:
    """An adapter that is already at its final ranks in PEFT's format (AdaLoRA: pruned while training; DoRA:
    static ranks): `peft` copies the run's files, `merged` adds ΔW into the base weights."""
    trained = load_adapter(load_base(run.base_model, run.task), run.weights, allow_base_model_mismatch)
    meta = read_adapter_metadata(run.weights)
    hard_ranks = trained.method.current_ranks(trained)
    probe = probe_batch(trained.model)
    reference = logits_of(trained.model, probe)
    with atomic_directory(out) as tmp:
        if fmt == "peft":
            for path in run.weights.iterdir():
                if path.is_file():
                    shutil.copy2(path, tmp / path.name)
        else:
            _save_merged(trained.method.merge(trained), tokenizer, run.task, tmp)
        record = _record(run, fmt, out, meta, None, list(meta["ranks"]), hard_ranks, tmp)
        record["head_parameters"] = run.summary.get("trainable_parameters", {}).get("head")
        if verify:
            _verify(record, tmp, run.task, probe, reference, allow_base_model_mismatch)
        record["export_bytes"] = _bytes(tmp)
        write_json_atomic(tmp / EXPORT_FILE, record)
    _print_record(record, log)
    return record


def export_full_model(run: FinishedRun, out: Path, *, tokenizer, verify: bool, log) -> dict:
    """A full fine-tuning run is already a plain model: re-save it (with label names) as the merged export."""
    model = load_base(str(run.weights), run.task)
    probe = probe_batch(model)
    reference = logits_of(model, probe)
    with atomic_directory(out) as tmp:
        _save_merged(model, tokenizer, run.task, tmp)
        record = {"format": "merged", "source_run": str(run.path.resolve()), "out": str(out), "task": run.task,
                  "method": run.method.name, "allocation": None, "base_model": run.base_model,
                  "rankwise_version": __version__, "adapter_parameters": None,
                  "model_parameters": sum(p.numel() for p in model.parameters()),
                  "final_metrics": run.summary.get("final"), "main_metric": run.summary.get("main_metric"),
                  "run_config": run.config,
                  "files": sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()) + [EXPORT_FILE]}
        if verify:
            _verify(record, tmp, run.task, probe, reference)
        write_json_atomic(tmp / EXPORT_FILE, record)
    _print_record(record, log)
    return record


def _save_merged(model: nn.Module, tokenizer, task: str, directory: Path) -> None:
    _label_names(model, task)
    with _quiet_transformers():
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))


def _verify(record: dict, tmp: Path, task: str, probe: dict, reference: torch.Tensor,
            allow_base_model_mismatch: bool = False) -> None:
    """Reload the export being written in `tmp` and compare its logits on `probe` with the trained model's;
    records the difference, raises (so nothing is kept) beyond VERIFY_TOLERANCE."""
    fmt = record["format"]
    reloaded = (load_source(adapter=str(tmp), allow_base_model_mismatch=allow_base_model_mismatch) if fmt != "merged"
                else load_source(model=str(tmp)))
    difference = float((logits_of(reloaded.load(task)[0], probe) - reference).abs().max())
    record["verified_max_abs_logit_difference"] = difference
    if not difference <= VERIFY_TOLERANCE:
        raise RuntimeError(f"export check failed: the reloaded {fmt} export's logits differ from the trained "
                           f"model's by up to {difference:.3g} (tolerance {VERIFY_TOLERANCE:g}); nothing was "
                           f"written to {record['out']}")


def _record(run: FinishedRun, fmt: str, out: Path, meta: dict, tensors: dict[str, torch.Tensor] | None,
            allocated: list[int], hard_ranks: list[int], written: Path) -> dict:
    """export.json. `tensors`: the compact tensors when the export was made from them (their values are counted)."""
    method = run.method
    targets = [TargetMatrix(**t) for t in meta["targets"]]
    before, after = method.parameters(targets, allocated), method.parameters(targets, hard_ranks)
    if tensors is not None:
        head = sum(v.numel() for k, v in tensors.items() if k.startswith("head."))
        stored_after = sum(v.numel() for k, v in tensors.items() if not k.startswith("head."))
        stored_before = sum(t.in_features * r + t.out_features * r + (r * r if "lora_R" in method.tensor_parts else 0)
                            for t, r in zip(targets, allocated))
    else:
        head, stored_before, stored_after = None, before, after
    names = [t.name for t in targets]
    return {
        "format": fmt,
        "source_run": str(run.path.resolve()),
        "out": str(out),
        "task": run.task,
        "method": method.name,
        "allocation": run.config.get("allocation") if not method.allocates_ranks else method.name,
        "base_model": run.base_model,
        "rankwise_version": __version__,
        "adapter_parameters": {
            "before": before,  # trainable adapter parameters as allocated (Σ rank_max² for learned LoRA-XS)
            "after": after,  # at the hard ranks (Σ r_i² for LoRA-XS, Σ r_i·(in+out) for LoRA)
            "saved": before - after,
            "percent_saved": 100.0 * (before - after) / before if before else 0.0,
            "counted_as": method.cost_formula,
        },
        "stored_adapter_values": {"before": stored_before, "after": stored_after},  # LoRA-XS: A, B and R
        "head_parameters": head,
        "adapter_bytes_before": (run.weights / WEIGHTS_FILE).stat().st_size
        if (run.weights / WEIGHTS_FILE).is_file() else None,
        "hard_ranks": dict(zip(names, hard_ranks)),
        "allocated_ranks": dict(zip(names, allocated)),
        "final_metrics": run.summary.get("final"),
        "main_metric": run.summary.get("main_metric"),
        "run_config": run.config,
        "files": sorted(str(p.relative_to(written)) for p in written.rglob("*") if p.is_file()) + [EXPORT_FILE],
    }


def _print_record(record: dict, log) -> None:
    log(f"exported {record['source_run']} ({record['method']}, {record['allocation'] or 'full fine-tuning'}) "
        f"as {record['format']} → {record['out']}")
    params = record.get("adapter_parameters")
    if params:
        method = get_method(record["method"])
        head = record["head_parameters"]
        log(f"  adapter parameters ({method.cost_symbol}): {params['before']:,} as trained → {params['after']:,} at "
            f"the hard ranks ({params['percent_saved']:.1f}% fewer)" + (f"; head {head:,}" if head is not None else ""))
        stored = record["stored_adapter_values"]
        log(f"  stored adapter values ({method.stored_parts}): {stored['before']:,} → {stored['after']:,}")
        ranks = sorted(record["hard_ranks"].values())
        log(f"  hard ranks over {len(ranks)} matrices: min {ranks[0]}, median {ranks[len(ranks) // 2]}, "
            f"max {ranks[-1]}")
    if "verified_max_abs_logit_difference" in record:
        log(f"  reloaded and checked: max |Δ logit| vs the trained model = "
            f"{record['verified_max_abs_logit_difference']:.2e}")
    if record.get("final_metrics") and record.get("main_metric"):
        value = record["final_metrics"].get(record["main_metric"])
        if value is not None:
            log(f"  the run's final {record['main_metric']}: {value:.4f}")


# ---------------------------------------------------------------------------------------------
# Loading an export (or a run) for evaluate / predict
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

    def model_name(self) -> str:
        return str(self.path) if self.kind == "model" else self.base_model

    def load(self, task_name: str, model: nn.Module | None = None) -> tuple[nn.Module, AdapterSet | None]:
        """(model to call, AdapterSet or None). `model`: an already loaded base (or full) model to use."""
        model = model if model is not None else load_base(self.model_name(), task_name)
        if self.kind == "model":
            return model.eval(), None
        if self.kind == "peft":
            from peft import PeftModel

            from .adapters.lora import peft_quietly

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
        run = FinishedRun(path, _run_config(path), read_summary(path) or {})
        if not run.weights.is_dir():
            status = run.summary.get("status", "unfinished (no summary.json)")
            raise RunDirError(f"{flag} `{path}`: the run has no {run.weights.name}/ (status {status}); only a "
                              "completed run with saved weights can be used")
        if not run.method.trains_adapter:  # full fine-tuning: the run's model/ is a plain model
            return Source("model", run.weights, training=run.config)
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
        return Source("model", name, training=_training_config(path) if path.is_dir() else {})

    if not path.is_dir():
        raise RunDirError(f"--adapter `{given}` is not a directory")
    if is_rankwise:
        meta = read_adapter_metadata(path)
        return Source("adapter", path, base_model or meta.get("base_model"), meta, _training_config(path),
                      allow_base_model_mismatch)
    if is_peft:
        config = json.loads((path / "adapter_config.json").read_text())
        base = base_model or config.get("base_model_name_or_path")
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
    from .data import known_tasks

    task = task or source.training.get("task")
    if task is None:
        raise ConfigError("task", f"`{source.path}` does not record the task it was trained for",
                          f"Pass --task (one of: {', '.join(known_tasks())})")
    if task not in known_tasks():
        raise ConfigError("task", f"unknown task `{task}`", f"Choose one of: {', '.join(known_tasks())}")
    return task


def check_source_fits_task(source: Source, task_name: str) -> None:
    """Refuse a classifier with another number of labels before loading it (the head would not load)."""
    from .data import GLUE_TASKS

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


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------

def evaluate_source(source: Source, task_name: str, data_dir: str | None = None, max_eval_samples: int | None = None,
                    max_seq_length: int | None = None, batch_size: int | None = None, quiet: bool = False) -> dict:
    """The task's dev-set metrics for `source`, computed by the task's own evaluation (as during training).
    Data settings default to those the run was trained with. Returns {"metrics": ..., "settings": ...}."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .config import RunConfig, prepare
    from .tasks import prepare_task

    trained = source.training
    data_dir = data_dir or os.environ.get("RANKWISE_DATA_DIR") or (
        trained.get("data_dir") if trained.get("data_dir") and Path(trained["data_dir"]).is_dir() else None)
    cfg = prepare(RunConfig(
        task=task_name, model=source.model_name(), data_dir=data_dir, max_train_samples=1,
        max_eval_samples=max_eval_samples if max_eval_samples is not None else trained.get("max_eval_samples"),
        max_seq_length=max_seq_length or trained.get("max_seq_length"),
        per_device_eval_batch_size=batch_size or trained.get("per_device_eval_batch_size") or 64,
        quiet=quiet, **({"train_file": trained.get("train_file"), "eval_size": trained.get("eval_size", 200)}
                        if task_name == trained.get("task") == "alpaca" else {})))
    task = prepare_task(cfg)  # reads the data and loads the base (or full) model
    model, _ = source.load(task_name, model=task.model.eval())
    accelerator = Accelerator()
    model = model.to(accelerator.device)
    loaders = {split: tqdm(accelerator.prepare(DataLoader(features, batch_size=cfg.per_device_eval_batch_size,
                                                          collate_fn=task.collate)),
                           desc=f"evaluate {split}", disable=quiet, leave=False, dynamic_ncols=True)
               for split, features in task.eval_sets.items()}
    metrics = task.evaluate(model, loaders, accelerator)
    return {"metrics": metrics, "main_metric": task.main_metric,
            "settings": {"task": task_name, "source": str(source.path), "kind": source.kind,
                         "base_model": source.base_model, "data_source": task.info.get("data_source"),
                         "eval_examples": task.info.get("eval_examples"), "max_seq_length": cfg.max_seq_length,
                         "max_eval_samples": cfg.max_eval_samples, "batch_size": cfg.per_device_eval_batch_size}}


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------

PREDICTION_SUFFIXES = (".jsonl", ".tsv")


@dataclass
class Inputs:
    ids: list[str]
    texts: list[tuple[str, ...]]
    columns: tuple[str, ...]  # names of the text fields, as written to JSONL output


def read_inputs(path: str | Path, task_name: str) -> Inputs:
    """Texts to classify from a GLUE TSV file or a JSONL file (see `rankwise predict --help`)."""
    from .data import GLUE_TASKS

    path = Path(path)
    if task_name not in GLUE_TASKS:
        raise ConfigError("task", f"predict works on GLUE tasks; `{task_name}` is not one",
                          f"Choose one of: {', '.join(GLUE_TASKS)}")
    if path.is_dir():
        raise DataError(f"--input `{path}` is a directory. Give the path of a .tsv or .jsonl file")
    if not path.is_file():
        raise DataError(f"--input `{path}` does not exist")
    task = GLUE_TASKS[task_name]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"--input {path} is not UTF-8 text ({exc})") from None
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not lines:
        raise DataError(f"--input {path} is empty")
    fields = task.hub_text_columns
    if path.suffix.lower() == ".jsonl":
        ids, texts = [], []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"--input {path}, line {number}: not a JSON object ({exc.msg}). Give one JSON object "
                                f"per line with field(s) {', '.join(fields)}") from None
            if not isinstance(record, dict):
                raise DataError(f"--input {path}, line {number}: expected a JSON object, got {type(record).__name__}")
            missing = [f for f in fields if not isinstance(record.get(f), str)]
            if missing:
                raise DataError(f"--input {path}, line {number}: no text field `{missing[0]}`; {task_name} needs "
                                f"{', '.join(f'`{f}`' for f in fields)} (found {', '.join(record) or 'nothing'})")
            ids.append(str(next((record[k] for k in ("idx", "index", "id") if k in record), number - 1)))
            texts.append(tuple(record[f] for f in fields))
        return Inputs(ids, texts, fields)
    if path.suffix.lower() != ".tsv":
        raise DataError(f"--input {path}: expected a GLUE TSV file (.tsv) or JSON Lines (.jsonl, one object per "
                        "line); see `rankwise predict --help`")
    header = lines[0].split("\t")
    named = [c for c in (task.text_columns if task.has_header else ())]
    for columns in (named, list(fields)):
        if columns and all(c in header for c in columns):
            text_idx, rows, first = [header.index(c) for c in columns], lines[1:], 2
            id_idx = header.index("index") if "index" in header else None
            break
    else:
        if task.has_header:
            raise DataError(f"--input {path}: the header {header} has no text columns for {task_name}: expected "
                            f"{list(task.text_columns)} (GLUE train/dev files) or {list(fields)} (GLUE test files)")
        text_idx, rows, first, id_idx = [int(c) for c in task.text_columns], lines, 1, None  # CoLA train/dev
    needed = max(text_idx) + 1
    ids, texts = [], []
    for number, line in enumerate(rows, start=first):
        cells = line.split("\t")
        if len(cells) < needed:
            raise DataError(f"--input {path}, line {number}: {len(cells)} tab-separated columns, {task_name} needs at "
                            f"least {needed}. Is it a GLUE {task.folder} file?")
        ids.append(cells[id_idx] if id_idx is not None else str(len(ids)))
        texts.append(tuple(cells[i] for i in text_idx))
    return Inputs(ids, texts, fields)


def check_prediction_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in PREDICTION_SUFFIXES:
        raise ConfigError("out", f"`{out}` must end in .jsonl (one JSON object per input) or .tsv (GLUE "
                          "submission layout: index, prediction)")
    if out.is_dir():
        raise ConfigError("out", f"`{out}` is a directory", "Give a file name ending in .jsonl or .tsv")
    return check_writable_path(out, "--out")


@torch.no_grad()
def predict(source: Source, task_name: str, inputs: Inputs, max_seq_length: int | None = None,
            batch_size: int | None = None, quiet: bool = False) -> list[dict]:
    """One record per input: `prediction` (label name, or score for regression), and per-label
    `probabilities` for classification."""
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    from .data import GLUE_TASKS
    from .models import check_max_seq_length, load_tokenizer

    task = GLUE_TASKS[task_name]
    tokenizer = load_tokenizer(source.model_name())
    model, _ = source.load(task_name)
    check_max_seq_length(max_seq_length, model, model_name=source.model_name())  # a chosen length must fit
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = model.to(device)
    collate = DataCollatorWithPadding(tokenizer)
    max_length = max_seq_length or source.training.get("max_seq_length") or 128
    batch_size = batch_size or source.training.get("per_device_eval_batch_size") or 64
    records = []
    for start in tqdm(range(0, len(inputs.texts), batch_size), desc="predict", disable=quiet, leave=False,
                      dynamic_ncols=True):
        chunk = inputs.texts[start:start + batch_size]
        encoded = tokenizer(*[list(column) for column in zip(*chunk)], truncation=True, max_length=max_length)
        batch = collate([{k: encoded[k][i] for k in encoded} for i in range(len(chunk))])
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
        for offset, row in enumerate(logits):
            index = start + offset
            record = {"index": inputs.ids[index], **dict(zip(inputs.columns, inputs.texts[index]))}
            if task.is_regression:
                record["prediction"] = float(row[0])
            else:
                probabilities = torch.softmax(row, dim=-1)
                record["prediction"] = task.labels[int(row.argmax())]
                record["probabilities"] = {label: float(p) for label, p in zip(task.labels, probabilities)}
            records.append(record)
    return records


def write_predictions(out: Path, records: list[dict]) -> None:
    """`.jsonl`: the records; `.tsv`: `index<TAB>prediction` (the GLUE submission layout). Atomic."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".tsv":
        body = "index\tprediction\n" + "".join(f"{r['index']}\t{r['prediction']}\n" for r in records)
    else:
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["FORMATS", "EXPORT_FILE", "FinishedRun", "open_finished_run", "check_format", "check_out", "export_run",
           "load_base", "merge_adapter", "Source", "load_source", "resolve_task", "evaluate_source", "read_inputs",
           "predict", "write_predictions"]
