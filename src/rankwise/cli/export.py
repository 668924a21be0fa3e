"""`rankwise export | evaluate | predict`: ship a finished run at its hard ranks, and use what was shipped.

The work is in rankwise/ship/ (and rankwise/data/inputs.py for predict's input files). Those modules import torch,
transformers or scipy, so each command imports them when it runs: `rankwise --help` stays fast."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import parse_bool
from ..errors import ConfigError
from ..runs.rundir import check_writable_path, write_json_atomic

SOURCE_HELP = ("--adapter DIR: a compact or peft export, a run's adapter/ folder, or a run directory (its base model "
               "comes from the adapter's metadata; override with --base_model). --model DIR: a merged export or any "
               "transformers model directory.")
INPUT_HELP = """\
--input formats (the text fields depend on --task):
  GLUE TSV (.tsv): the task's columns by header name, as in the GLUE train/dev files (CoLA: sentence in
    column 4 of the header-less file; SST-2: sentence; MRPC: "#1 String", "#2 String"; QNLI: question,
    sentence; RTE/WNLI/STS-B/MNLI: sentence1, sentence2; QQP: question1, question2) or as in the GLUE test
    files (CoLA/SST-2: sentence; MRPC/RTE/STS-B: sentence1, sentence2; ...). An `index` column, if present,
    is carried to the output; other columns (labels) are ignored.
  JSONL (.jsonl): one JSON object per line with the task's fields: cola/sst2 `sentence`; mrpc/rte/wnli/stsb
    `sentence1`, `sentence2`; qnli `question`, `sentence`; qqp `question1`, `question2`; mnli `premise`,
    `hypothesis`. An `idx`, `index` or `id` field is carried to the output.
--out formats (labels by name, as the model's id2label: CoLA `unacceptable`/`acceptable`, ...):
  .jsonl: {"index", the text fields, "prediction" (label name, or score for stsb), "label_id" (output index),
          "probabilities" (per label name)}
  .csv:   index, the text fields, prediction, label_id, probability_<label> per label
  .tsv:   index<TAB>prediction (the GLUE submission layout: a GLUE task's own label values, e.g. CoLA 0/1)
"""


def _add_allow_mismatch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow_base_model_mismatch", type=parse_bool, nargs="?", const=True, default=False,
                   help="use an adapter on a base model other than the one it was trained on (its recorded "
                        "base-model fingerprint differs): print a warning instead of refusing")


def _add_source(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", help="a merged export, a full run, or any transformers model directory")
    group.add_argument("--adapter", help="a compact/peft export, a run's adapter/ folder, or a run directory")
    p.add_argument("--task", help="GLUE task (default: the task the export or run was trained on)")
    p.add_argument("--base_model", help="base model for --adapter (default: the one recorded in the adapter)")
    p.add_argument("--max_seq_length", type=int, help="longest input in tokens (default: as in training, else 128)")
    p.add_argument("--batch_size", type=int, help="examples per forward pass (default: as in training, else 64)")
    p.add_argument("--quiet", type=parse_bool, nargs="?", const=True, default=False, help="no progress bars")
    _add_allow_mismatch(p)


def _positive(args, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(name, f"must be a positive integer, got {value}")


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a finished run at its hard ranks (compact, peft or merged)",
                       description="Write a completed run as an artifact others can load. compact: A, B (and R for "
                                   "LoRA-XS) truncated to each matrix's hard rank, loadable with "
                                   "rankwise.load_adapter(model, DIR). peft (lora runs): a PEFT adapter with "
                                   "rank_pattern/alpha_pattern at the hard ranks, loadable with "
                                   "PeftModel.from_pretrained and no rankwise. merged: the adapter added into the "
                                   "base weights, saved with save_pretrained. Every export carries the tokenizer and "
                                   "the model config (num_labels, problem_type, label names), names its base "
                                   "model by hub id, and holds a model card (README.md). Prints and records "
                                   "(export.json) the adapter parameters before and after, and which evaluation's "
                                   "weights it holds (best with --load_best_model_at_end, else final: step, "
                                   "metrics) beside the run's final metrics. The export is reloaded "
                                   "and its logits checked against the trained model before it is kept.")
    p.add_argument("run_dir", help="a run directory written by `rankwise train` (status completed)")
    p.add_argument("--format", required=True, choices=("peft", "compact", "merged"), help="what to write")
    p.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    p.add_argument("--overwrite", type=parse_bool, nargs="?", const=True, default=False,
                   help="replace an existing --out directory")
    p.add_argument("--verify", type=parse_bool, nargs="?", const=True, default=True,
                   help="reload the export and compare its logits with the trained model's (default true)")
    p.add_argument("--push_to_hub", metavar="USER/NAME", default=None,
                   help="also upload the export to this Hugging Face Hub repository (created if needed; the Hub "
                        "and your login are checked before anything is written)")
    _add_allow_mismatch(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from ..ship.export import export_run

    export_run(args.run_dir, args.format, args.out, overwrite=args.overwrite, verify=args.verify,
               allow_base_model_mismatch=args.allow_base_model_mismatch, push_to_hub=args.push_to_hub)
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------

def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate an export, adapter or run on a task's dev set",
                       description="Evaluate on the task's dev set with the task's metrics, exactly as training "
                                   "evaluates. " + SOURCE_HELP + " Data settings default to the run's.")
    _add_source(p)
    p.add_argument("--data_dir", help="GLUE data folder (default: $RANKWISE_DATA_DIR, else the run's, else the hub)")
    p.add_argument("--max_eval_samples", type=int, help="only the first N dev examples (default: as in training)")
    p.add_argument("--out", help="also write the metrics and settings to this JSON file")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from ..ship.evaluate import evaluate_source
    from ..ship.source import check_source_fits_task, load_source, resolve_task

    _positive(args, "max_seq_length", "batch_size", "max_eval_samples")
    if args.out and Path(args.out).suffix != ".json":
        raise ConfigError("out", f"`{args.out}` must end in .json")
    if args.out:
        check_writable_path(args.out, "--out")
    source = load_source(args.model, args.adapter, args.base_model, args.allow_base_model_mismatch)
    task = resolve_task(source, args.task)
    check_source_fits_task(source, task)
    result = evaluate_source(source, task, data_dir=args.data_dir, max_eval_samples=args.max_eval_samples,
                             max_seq_length=args.max_seq_length, batch_size=args.batch_size, quiet=args.quiet)
    settings = result["settings"]
    examples = settings["eval_examples"]
    print(f"{task} dev ({examples.get('eval') if isinstance(examples, dict) else examples} examples) — "
          f"{settings['kind']} {settings['source']}" + (f" on {settings['base_model']}" if settings["base_model"]
                                                         else ""))
    for name, value in result["metrics"].items():
        print(f"  {name:<32} {value:.6f}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, result)
        print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------

def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict labels (or STS-B scores) for a file of inputs",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Write predictions for every input of a GLUE TSV or JSONL file. " + SOURCE_HELP
                                   + "\n\n" + INPUT_HELP)
    _add_source(p)
    p.add_argument("--input", required=True, help="a GLUE TSV (.tsv) or JSONL (.jsonl) file of inputs")
    p.add_argument("--out", required=True, help="predictions file: .jsonl, .csv or .tsv")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from ..data.inputs import read_inputs
    from ..ship.predict import check_prediction_out, predict, write_predictions
    from ..ship.source import check_source_fits_task, load_source, resolve_task

    _positive(args, "max_seq_length", "batch_size")
    out = check_prediction_out(args.out)
    source = load_source(args.model, args.adapter, args.base_model, args.allow_base_model_mismatch)
    task = resolve_task(source, args.task)
    check_source_fits_task(source, task)
    inputs = read_inputs(args.input, task, source.training)  # every input checked before the model is loaded
    records = predict(source, task, inputs, max_seq_length=args.max_seq_length,
                      batch_size=args.batch_size, quiet=args.quiet)
    write_predictions(out, records, task)
    counts: dict = {}
    for r in records:
        if isinstance(r["prediction"], str):
            counts[r["prediction"]] = counts.get(r["prediction"], 0) + 1
    shown = (", ".join(f"{label}: {n}" for label, n in sorted(counts.items())) if counts else
             f"scores from {min(r['prediction'] for r in records):.3f} to "
             f"{max(r['prediction'] for r in records):.3f}")
    print(f"wrote {len(records)} predictions to {out} ({task}; {shown})")
    return 0


def register(sub) -> None:
    for add in (_add_export, _add_evaluate, _add_predict):
        add(sub)

