"""`rankwise export`: turn a completed run into an artifact at its hard ranks.

`export_run(run_dir, format, out)`:

- `compact` (`loraxs`, `lora`): per matrix A (r, in), B (out, r) and, for LoRA-XS, R (r, r) truncated to the hard
  rank r, in safetensors with a small JSON config (format `rankwise-compact`, see rankwise/adapters/io.py); each
  matrix keeps the scale it was trained with (α/rank_max for learned runs), so ΔW is unchanged.
  `rankwise.load_adapter(model, DIR)` loads it.
- `peft` (`lora`): a standard PEFT adapter with `rank_pattern` at the hard ranks and an `alpha_pattern` chosen so
  that α_i/r_i (α_i/√r_i with rsLoRA) equals the trained scale; the head is in `modules_to_save`. Loads with
  `PeftModel.from_pretrained`, no rankwise needed.
- `merged` (any method): ΔW added into the base weights, saved with `save_pretrained` with the tokenizer;
  loads with `AutoModelForSequenceClassification.from_pretrained(DIR)` (or the causal-LM class).

Exports load anywhere: every one carries the tokenizer and the fine-tuned model's transformers config (config.json:
class, `num_labels`, `problem_type`, `id2label`/`label2id` with the task's label names), and names its base model
portably (`base_model_name_or_path`: a hub id wherever there is one, the embedded models' included; only your own
local model stays its directory; see models.base_model_reference). Nothing else in it is a path of this machine:
the source run is named by its folder, and the run config's paths are written relative to the directory the export
was made from (as `rankwise report` writes results.csv).

Which formats a run supports and how it is written is the method's to say (`export_formats`, `export_style`).
Every export writes `export.json` (source run, hard ranks, adapter parameters before and after, file sizes, the
run's config; `saved_weights`: which evaluation's weights it holds, best or final, its step, epoch and metrics, with
the run's `final_metrics` beside them) and a model card (README.md, ship/card.py) that says the same, and is checked
before it is kept: it is reloaded through ship/source.py and its logits compared with the trained model's on a fixed
batch. The whole directory is written under a temporary
name and renamed at the end, so an interrupted export leaves nothing that looks complete. `push_to_hub` then uploads
it (the Hub is checked before any work).

`rankwise.export(model, ...)` (api.py) exports a model wrapped in Python the same way: its adapter is saved as a
run's would be and exported by these same functions (`export_finished`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..adapters.io import (CONFIG_FILE, META_FILE, WEIGHTS_FILE, compact_metadata, compact_tensors, inner_model,
                           read_adapter_metadata, save_compact)
from ..errors import ConfigError, RankwiseError, RunDirError
from ..methods import AdapterSet, METHODS, attach_tensors, get_method, load_adapter
from ..models import base_model_reference, check_hub_upload, load_tokenizer, quiet_transformers
from ..runs.rundir import check_writable_path, replace_dir, write_json_atomic
from ..targets import TargetMatrix
from ..version import __version__
from .card import CARD_FILE, describe_weights, model_card
from .source import (EXPORT_FILE, FinishedRun, load_base, load_source, logits_of, open_finished_run, probe_batch,
                     task_head)

FORMATS = ("peft", "compact", "merged")
# Largest |Δ logit| between the trained model and a reloaded export that still counts as the same model.
VERIFY_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------
# Checks, before anything is loaded or written
# ---------------------------------------------------------------------------------------------

def check_format(run: FinishedRun, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError("format", f"unknown format `{fmt}`", f"Choose one of: {', '.join(FORMATS)}")
    method = run.method
    if fmt in method.export_formats:
        return
    fix = f"Use --format {' or --format '.join(method.export_formats)}" + FORMAT_HINTS.get(method.export_formats[0], "")
    if not method.trains_adapter:
        raise ConfigError("format", f"`{fmt}` exports an adapter, but {run.described} is a {method.title} run (no "
                          "adapter)", fix)
    others = [f"`{m}`" for m in METHODS if fmt in get_method(m).export_formats]
    more = f" (or {' or '.join(others[1:])} one)" if len(others) > 1 else ""
    raise ConfigError("format", f"`{fmt}` needs a {others[0]} run{more}, but {run.described} is a `{method.name}` "
                      "run", fix)


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



def merge_adapter(adapter: AdapterSet) -> nn.Module:
    """The plain transformers model with each matrix's ΔW (at its current ranks and masks) added to its weight."""
    return adapter.method.merge(adapter)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------

def _bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def export_run(run_dir: str | Path, fmt: str, out: str | Path, overwrite: bool = False, verify: bool = True,
               log=print, allow_base_model_mismatch: bool = False, push_to_hub: str | None = None) -> dict:
    """Export a completed run (see the module docstring) as its method's `export_style` says. All
    checks run before anything is loaded or written. The run's base model must still be the one it was trained on
    (its fingerprint, see rankwise/adapters/io.py), unless `allow_base_model_mismatch`; the export records the
    fingerprint of the model the run was trained on. `push_to_hub`: a hub repository (`user/name`) to upload the
    export to. Returns the record written to `<out>/export.json`."""
    return export_finished(open_finished_run(run_dir), fmt, out, overwrite=overwrite, verify=verify, log=log,
                           allow_base_model_mismatch=allow_base_model_mismatch, push_to_hub=push_to_hub)


def export_finished(run: FinishedRun, fmt: str, out: str | Path, *, overwrite: bool = False, verify: bool = True,
                    log=print, allow_base_model_mismatch: bool = False, push_to_hub: str | None = None,
                    tokenizer=None) -> dict:
    """`export_run` for a run already opened: a run directory, or a model wrapped in Python and saved like one
    (api.export). `tokenizer`: the one to ship (default: the base model's)."""
    check_format(run, fmt)
    out = check_out(out, overwrite, run)
    if push_to_hub:
        check_hub_upload(f"Export without it, then upload the folder: hf upload {push_to_hub} {out}")
    if tokenizer is None:
        tokenizer = load_tokenizer(run.base_model if run.method.trains_adapter else str(run.weights))
    if not run.method.trains_adapter:
        record = export_full_model(run, out, tokenizer=tokenizer, verify=verify, log=log)
    else:
        exporter = {"truncate": export_adapter_run, "as_trained": export_trained_adapter}[run.method.export_style]
        record = exporter(run, fmt, out, tokenizer=tokenizer, verify=verify, log=log,
                          allow_base_model_mismatch=allow_base_model_mismatch)
    if push_to_hub:
        record["hub_url"] = push_export(out, push_to_hub, log)
    return record


def push_export(out: Path, repo_id: str, log=print) -> str:
    """Upload an export folder to the hub repository `repo_id` (created if needed); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(out))
    except Exception as exc:  # network, permissions, a bad repo id: the export itself is complete
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise RankwiseError(f"--push_to_hub: the export is complete in {out}, but uploading it to `{repo_id}` "
                            f"failed ({reason}). Upload it later: hf upload {repo_id} {out}") from None
    url = str(getattr(commit, "commit_url", commit))
    log(f"  uploaded to the Hugging Face Hub: {repo_id} ({url})")
    return url


def fine_tuned_config(model: nn.Module):
    """The transformers config of the fine-tuned model under `model` (a PEFT wrapper, or a model with LoRA-XS
    layers), naming its class: the config.json an adapter export carries, so loaders rebuild the right head."""
    inner = inner_model(model)
    config = copy.deepcopy(inner.config)
    config.architectures = [type(inner).__name__]
    return config


def _save_model_files(directory: Path, config, tokenizer) -> None:
    """config.json (the fine-tuned model's: class, head, labels) and the tokenizer, beside an adapter's files."""
    with quiet_transformers():
        config.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))


def _name_base_model(directory: Path, reference: dict) -> None:
    """Point a PEFT adapter's files (copied from a run) at their base model portably (models.base_model_reference)."""
    peft_config = directory / CONFIG_FILE
    config = json.loads(peft_config.read_text())
    config["base_model_name_or_path"] = reference["base_model_name_or_path"]
    peft_config.write_text(json.dumps(config, indent=2))
    meta_path = directory / META_FILE
    if meta_path.is_file():
        meta = {**json.loads(meta_path.read_text()), **reference}
        meta.pop("base_model_path", None)  # older rankwise: this machine's directory of the base model
        meta_path.write_text(json.dumps(meta, indent=2))


def export_adapter_run(run: FinishedRun, fmt: str, out: Path, *, tokenizer, verify: bool, log,
                       allow_base_model_mismatch: bool = False) -> dict:
    """An adapter truncated to its hard ranks (LoRA-XS, LoRA, DoRA): `compact` tensors, or built from them at the hard
    ranks and saved as a `peft` adapter or `merged` into the base weights."""
    trained = load_adapter(run.load_base(), run.weights, allow_base_model_mismatch)
    meta = read_adapter_metadata(run.weights)
    hard_ranks, allocated = list(meta["hard_ranks"]), list(meta["ranks"])
    head = list(meta["head_modules"])
    compact_meta = compact_metadata(trained, hard_ranks, run.base_model, head,
                                    rslora=run.config.get("alpha_policy") == "rslora",
                                    task_type=trained.method.peft_task_type(trained),
                                    dropout=float(run.config.get("lora_dropout") or 0.0),
                                    fingerprint=meta.get("base_model_fingerprint"))
    compact_meta.update(base_model_reference(run.base_model))
    tensors = compact_tensors(trained, hard_ranks, head)
    probe = probe_batch(trained.model)
    reference = logits_of(trained.model, probe)
    fine_tuned = fine_tuned_config(trained.model)

    with atomic_directory(out) as tmp:
        if fmt == "compact":
            save_compact(tmp, compact_meta, tensors)
        else:
            # The same base model as `trained`, checked above: no second fingerprint (nor a second warning).
            unchecked = {**compact_meta, "base_model_fingerprint": None, "base_weight_norms": None}
            exported = attach_tensors(run.load_base(), unchecked, tensors)
            if fmt == "peft":
                exported.method.save_peft_export(exported, tmp, compact_meta)
            else:
                _save_merged(merge_adapter(exported), tokenizer, tmp)
        if fmt != "merged":
            _save_model_files(tmp, fine_tuned, tokenizer)
        record = _record(run, fmt, out, meta, tensors, allocated, hard_ranks, tmp)
        record["scales"] = dict(zip(record["hard_ranks"], compact_meta["scales"]))
        _finish(record, tmp, out, run, probe, reference, verify, allow_base_model_mismatch)
    _print_record(record, log, out, run)
    return record


def export_trained_adapter(run: FinishedRun, fmt: str, out: Path, *, tokenizer, verify: bool, log,
                           allow_base_model_mismatch: bool = False) -> dict:
    """An adapter that is already at its final ranks in PEFT's format (AdaLoRA: pruned while training): `peft`
    copies the run's files, `merged` adds ΔW into the base weights."""
    trained = load_adapter(run.load_base(), run.weights, allow_base_model_mismatch)
    meta = read_adapter_metadata(run.weights)
    hard_ranks = trained.method.current_ranks(trained)
    probe = probe_batch(trained.model)
    reference = logits_of(trained.model, probe)
    fine_tuned = fine_tuned_config(trained.model)
    with atomic_directory(out) as tmp:
        if fmt == "peft":
            for path in run.weights.iterdir():
                if path.is_file():
                    shutil.copy2(path, tmp / path.name)
            _name_base_model(tmp, base_model_reference(run.base_model))
            _save_model_files(tmp, fine_tuned, tokenizer)
        else:
            _save_merged(trained.method.merge(trained), tokenizer, tmp)
        record = _record(run, fmt, out, meta, None, list(meta["ranks"]), hard_ranks, tmp)
        record["head_parameters"] = run.summary.get("trainable_parameters", {}).get("head")
        _finish(record, tmp, out, run, probe, reference, verify, allow_base_model_mismatch)
    _print_record(record, log, out, run)
    return record


def export_full_model(run: FinishedRun, out: Path, *, tokenizer, verify: bool, log) -> dict:
    """A full fine-tuning run is already a plain model: re-save it (with label names) as the merged export."""
    model = load_base(str(run.weights), run.task, run.data)
    probe = probe_batch(model)
    reference = logits_of(model, probe)
    reference_name = base_model_reference(run.base_model)
    with atomic_directory(out) as tmp:
        _save_merged(model, tokenizer, tmp)
        record = {"format": "merged", "source_run": _run_name(run), "task": run.task,
                  "method": run.method.name, "allocation": None, "base_model": reference_name["base_model"],
                  "base_model_name_or_path": reference_name["base_model_name_or_path"],
                  "rankwise_version": __version__, "adapter_parameters": None,
                  "model_parameters": sum(p.numel() for p in model.parameters()),
                  **_weights_record(run), "labels": _labels(run),
                  "run_config": portable_paths(run.config), "run_data": portable_paths(run.data),
                  "files": _files(tmp)}
        _finish(record, tmp, out, run, probe, reference, verify, False)
    _print_record(record, log, out, run)
    return record


def _save_merged(model: nn.Module, tokenizer, directory: Path) -> None:
    """A plain transformers model (its config carries the head and label names: `load_base` set them) and the
    tokenizer."""
    with quiet_transformers():
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))


def _finish(record: dict, tmp: Path, out: Path, run: FinishedRun, probe: dict, reference: torch.Tensor,
            verify: bool, allow_base_model_mismatch: bool) -> None:
    """The model card, the reload check, then export.json (written last, as the mark of a complete export)."""
    (tmp / CARD_FILE).write_text(model_card(record, out.name), encoding="utf-8")  # after PEFT's own README.md
    record["files"] = _files(tmp)
    if verify:
        _verify(record, tmp, out, run.task, probe, reference, allow_base_model_mismatch)
    record["export_bytes"] = _bytes(tmp)  # everything but export.json
    write_json_atomic(tmp / EXPORT_FILE, record)


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()) + [EXPORT_FILE]


def _verify(record: dict, tmp: Path, out: Path, task: str | None, probe: dict, reference: torch.Tensor,
            allow_base_model_mismatch: bool = False) -> None:
    """Reload the export being written in `tmp` (a `peft` one with PEFT alone, as its users will) and compare its
    logits on `probe` with the trained model's;
    records the difference, raises (so nothing is kept) beyond VERIFY_TOLERANCE."""
    fmt = record["format"]
    if fmt == "merged":
        reloaded = load_source(model=str(tmp))
    else:
        reloaded = load_source(adapter=str(tmp), allow_base_model_mismatch=allow_base_model_mismatch)
        if fmt == "peft":  # as plain PEFT loads it: rankwise.json (hard-rank masks included) plays no part
            reloaded = dataclasses.replace(reloaded, kind="peft")
    difference = float((logits_of(reloaded.load(task)[0], probe) - reference).abs().max())
    record["verified_max_abs_logit_difference"] = difference
    if not difference <= VERIFY_TOLERANCE:
        raise RuntimeError(f"export check failed: the reloaded {fmt} export's logits differ from the trained "
                           f"model's by up to {difference:.3g} (tolerance {VERIFY_TOLERANCE:g}); nothing was "
                           f"written to {out}")


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
                            + (t.out_features if "lora_magnitude_vector" in method.tensor_parts else 0)
                            for t, r in zip(targets, allocated))
    else:
        head, stored_before, stored_after = None, before, after
    names = [t.name for t in targets]
    reference = base_model_reference(run.base_model)
    return {
        "format": fmt,
        "source_run": _run_name(run),
        "task": run.task,
        "method": method.name,
        "allocation": run.config.get("allocation") if not method.allocates_ranks else method.name,
        "base_model": reference["base_model"],
        "base_model_name_or_path": reference["base_model_name_or_path"],
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
        **_weights_record(run),
        "labels": _labels(run),
        "run_config": portable_paths(run.config),
        "run_data": portable_paths(run.data),
        "files": _files(written),
    }


def _run_name(run: FinishedRun) -> str | None:
    """How export.json names its source run: the run directory's name (None for a model wrapped in Python)."""
    return Path(run.source_run).name if run.source_run else None


def _labels(run: FinishedRun) -> dict[str, str] | None:
    """The label names by output index (`id2label`), None for regression and causal LMs."""
    head = task_head(run.task, run.data) if run.task else None
    names = head.label_names if head is not None else None
    if names is None and run.task is None:  # a wrapped model: its own config's names
        config = getattr(run, "model_config", None)
        id2label = getattr(config, "id2label", None) or {}
        names = [id2label[i] for i in sorted(id2label)] if getattr(config, "problem_type", None) != "regression" \
            else None
    return {str(i): str(name) for i, name in enumerate(names)} if names else None


def saved_weights(run: FinishedRun) -> dict | None:
    """Which evaluation's weights a run saved (summary.json `saved_weights`: `which` best|final, `step`, `epoch`,
    `metrics`), with `selected_by`, the metric that chose the best evaluation. Runs written before summaries
    recorded it saved their final weights. None when the run recorded no evaluation (or for a wrapped model)."""
    summary = run.summary or {}
    final = summary.get("final") or {}
    recorded = summary.get("saved_weights")
    if recorded:
        weights = dict(recorded)
    elif final:
        weights = {"which": "final", "step": final.get("step"), "epoch": final.get("epoch"),
                   "metrics": {k: v for k, v in final.items() if k.startswith("eval_")}}
    else:
        return None
    selected = run.config.get("metric_for_best_model") or summary.get("main_metric")
    weights["selected_by"] = (selected if str(selected).startswith("eval_") else f"eval_{selected}") \
        if weights.get("which") == "best" and selected else None
    return weights


def _weights_record(run: FinishedRun) -> dict:
    """export.json's record of the weights it holds, and of the run's end beside them."""
    return {"saved_weights": saved_weights(run), "final_metrics": (run.summary or {}).get("final"),
            "main_metric": (run.summary or {}).get("main_metric")}


PATH_FIELDS = ("data_dir", "train_file", "validation_file", "test_file", "rank_file", "output_dir", "data_source",
               "resume_from_checkpoint")


def portable_paths(values: dict) -> dict:
    """`values` (a run's config or data record) with each absolute path of PATH_FIELDS written relative to the
    current directory, as a command run there gives it: no path of this machine in a file meant to travel."""
    def relative(value):
        if isinstance(value, str) and os.path.isabs(value):
            return os.path.relpath(value)
        return value

    return {k: relative(v) if k in PATH_FIELDS else v for k, v in (values or {}).items()}


def _print_record(record: dict, log, out: Path, run: FinishedRun) -> None:
    log(f"exported {run.path if run.source_run else 'the model'} ({record['method']}, "
        f"{record['allocation'] or 'full fine-tuning'}) as {record['format']} → {out}")
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
    for line in weights_lines(record):
        log(f"  {line}")


def weights_lines(record: dict) -> list[str]:
    """The summary lines saying which weights an export holds and what they score, beside the run's final score."""
    described, main = describe_weights(record), record.get("main_metric")
    if not described:
        return []
    weights, final = record["saved_weights"], record.get("final_metrics") or {}
    value = (weights.get("metrics") or {}).get(main)
    lines = [f"holds {described}" + (f": {main} {value:.4f}" if value is not None else "")]
    final_value = final.get(main)
    if final_value is not None and weights.get("which") == "best":
        where = ", ".join(p for p in (f"step {final.get('step')}" if final.get("step") is not None else None,
                                      f"epoch {final['epoch']:g}" if isinstance(final.get("epoch"), (int, float))
                                      else None) if p)
        lines.append(f"the run's final evaluation ({where}), not these weights: {main} {final_value:.4f}")
    return lines


__all__ = ["FORMATS", "VERIFY_TOLERANCE", "check_format", "check_out", "atomic_directory", "merge_adapter",
           "export_run", "export_finished", "export_adapter_run", "export_trained_adapter", "export_full_model",
           "fine_tuned_config", "push_export", "saved_weights", "portable_paths", "weights_lines"]
