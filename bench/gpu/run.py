"""rankwise on a GPU, in one command: correctness, host synchronisations per step, and step time.

    python bench/gpu/pack.py                       # here: .gpu_bundle/ (MiniLM in bf16, GLUE files, PEFT wheel)
    python bench/gpu/run.py                        # there (see README "On a GPU"): writes docs/results/gpu/
    python bench/gpu/run.py --device cpu --short   # here: the same script, small, so it is known to run

(a) correctness: every method × allocation trains briefly in bf16 (frozen base in bf16) on SST-2 with MiniLM; its
    metrics must be finite and its merged export, reloaded with plain transformers, must give the trained model's
    logits (to bf16 precision: the export adds ΔW into float32 weights the run held in bf16).
(b) host synchronisations per training step, with torch.cuda.set_sync_debug_mode over a window of steps (logging,
    evaluation and saving outside it), each with the file:line that made it (and the rankwise frame under it).
(c) step time side by side in one process, bf16: rankwise LoRA-XS vs PEFT LoRA at (nearly) equal parameters, learned
    vs fixed rank, rankwise's LoRA (PEFT underneath) vs PEFT alone, on MiniLM and SmolLM2-135M (random weights: the
    bundle carries its architecture only; the time of a multiplication does not depend on the values);
(d) tokens/s and model FLOPs utilisation: 4 · (matrix parameters) · tokens per step (forward and the activation
    gradients; the frozen base gets no weight gradients) over the device's dense bf16 peak.

It checks the machine's torch, transformers, PEFT and accelerate at start, and needs no internet and no `datasets`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

# Dense bf16 peak of common GPUs, TFLOP/s (vendor data sheets; SXM forms). --peak_tflops overrides.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "RTX 4090": 165.0}
CASES = [  # (label, run options)
    ("LoRA-XS uniform r8", {"method": "loraxs", "rank": 8}),
    ("LoRA-XS learned", {"method": "loraxs", "allocation": "learned", "rank_min": 2, "rank_max": 12,
                         "rank_average": 8, "tau": 0.5}),
    ("LoRA-XS rank annealing", {"method": "loraxs", "allocation": "learned", "rank_min": 2, "rank_max": 12,
                                "rank_average": 8, "rank_annealing": True}),
    ("LoRA-XS gradient", {"method": "loraxs", "allocation": "gradient", "rank": 8, "allocation_batches": 2}),
    ("LoRA uniform r4", {"method": "lora", "rank": 4}),
    ("LoRA learned", {"method": "lora", "allocation": "learned", "rank_min": 1, "rank_max": 8, "rank_average": 4}),
    ("LoRA EVA", {"method": "lora", "init": "eva", "rank": 4}),
    ("DoRA learned", {"method": "dora", "allocation": "learned", "rank_min": 1, "rank_max": 8, "rank_average": 4}),
    ("AdaLoRA", {"method": "adalora", "rank": 4}),
    ("full fine-tuning", {"method": "full"}),
]
SYNC_CASES = ("LoRA-XS learned", "LoRA learned", "AdaLoRA", "full fine-tuning")
MODELS = ("MiniLM", "SmolLM2-135M")
# Largest |Δ logit| between the trained model (frozen base in bf16) and its merged export: a few bf16 ulps of logits
# of size ~1 (bf16 keeps 8 bits of mantissa: 2^-8 ≈ 0.004 relative).
LOGIT_TOLERANCE = 0.05


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------

def environment(device: str) -> dict:
    """Versions and the device, checked against what rankwise needs (a clear error otherwise)."""
    import accelerate
    import peft
    import torch
    import transformers

    needs = [("transformers", transformers.__version__, int(transformers.__version__.split(".")[0]) >= 5),
             ("peft", peft.__version__, peft.__version__.startswith("0.21.")),
             ("accelerate", accelerate.__version__, int(accelerate.__version__.split(".")[0]) >= 1)]
    missing = [f"{name} {version}" for name, version, ok in needs if not ok]
    if missing:
        raise SystemExit(f"error: rankwise needs transformers>=5, peft 0.21.x and accelerate>=1; this Python has "
                         f"{', '.join(missing)}. Install the bundle's wheels first: python3 -m pip install --no-deps "
                         "--target .gpu_site .gpu_bundle/wheels/*.whl && export PYTHONPATH=.gpu_site:src")
    record = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
              "peft": peft.__version__, "accelerate": accelerate.__version__, "device": device}
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda, but torch sees no CUDA device (use --device cpu for a dry run)")
        props = torch.cuda.get_device_properties(0)
        record.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                      cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    else:
        record.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return record


def peak_tflops(env: dict, given: float | None) -> float | None:
    if given:
        return given
    name = env.get("gpu", "")
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


# ---------------------------------------------------------------------------------------------
# (a) correctness
# ---------------------------------------------------------------------------------------------

def run_config(options: dict, out: Path, data_dir: Path, steps: int, batch: int, device: str):
    from rankwise.config import RunConfig

    epochs = 2  # learned allocation: one soft epoch, one with hard ranks
    values = dict(task="sst2", model="minilm", data_dir=str(data_dir), output_dir=str(out), bf16=True,
                  num_train_epochs=epochs, max_train_samples=steps * batch, max_eval_samples=4 * batch,
                  per_device_train_batch_size=batch, per_device_eval_batch_size=2 * batch, logging_steps=steps,
                  save_strategy="no", quiet=True, learning_rate=None)
    values.update(options)
    return RunConfig(**{k: v for k, v in values.items() if v is not None})


def probe_logits(model, batch: dict, device: str):
    import torch

    with torch.no_grad(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        return model(**{k: v.to(device) for k, v in batch.items() if k != "labels"}).logits.float().cpu()


def correctness(cases, work: Path, data_dir: Path, steps: int, batch: int, device: str) -> list[dict]:
    import torch
    from transformers import AutoModelForSequenceClassification

    from rankwise import train
    from rankwise.ship.export import export_run

    rows = []
    for label, options in cases:
        row = {"case": label}
        started = time.time()
        try:
            cfg = run_config(options, work / label.replace(" ", "_"), data_dir, steps, batch, device)
            setup = train.setup_run(cfg)
            summary = train.train(setup.cfg, setup)
            finals = {k: v for k, v in (summary["final"] or {}).items() if k.startswith("eval_")}
            row.update(status=summary["status"], steps=summary["steps"], skipped=summary["skipped_steps"],
                       finite=bool(finals) and all(math.isfinite(v) for v in finals.values()),
                       eval_loss=finals.get("eval_loss"), steps_per_second=summary["steps_per_second"])
            probe = dict(setup.task.collate(setup.task.eval_sets["eval"][:batch]))
            trained = probe_logits(setup.adapter.model, probe, device)
            export = work / (label.replace(" ", "_") + "_merged")
            export_run(cfg.output_dir, "merged", export, log=lambda *_: None)
            reloaded = AutoModelForSequenceClassification.from_pretrained(export).to(device)
            exported = probe_logits(reloaded, probe, device)
            row.update(max_abs_logit_diff=float((trained - exported).abs().max()),
                       same_predictions=float((trained.argmax(-1) == exported.argmax(-1)).float().mean()))
            # Near-ties may flip a prediction at bf16 precision; the logits themselves must agree.
            row["ok"] = row["status"] == "completed" and row["finite"] and row["max_abs_logit_diff"] <= LOGIT_TOLERANCE
            del setup, reloaded
        except Exception as exc:  # noqa: BLE001 - one failing case is a finding, the others still run
            row.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300], trace=traceback.format_exc()[-1500:])
        row["seconds"] = round(time.time() - started, 1)
        rows.append(row)
        print(f"(a) {label}: {'ok' if row['ok'] else 'FAILED'} in {row['seconds']} s", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------
# (b) host synchronisations per step
# ---------------------------------------------------------------------------------------------

def sync_window(cases, work: Path, data_dir: Path, steps: int, batch: int, device: str) -> list[dict]:
    """Each case trains with torch's sync debug mode on for its steps after the first 3 (logging, evaluation and
    saving left out), collecting every synchronising call with its file:line."""
    import torch

    from rankwise import train

    if device != "cuda":
        return [{"case": label, "note": "CUDA only (on the CPU, tests/train/test_gpu_ready.py counts rankwise's own)"}
                for label, _ in cases]
    rows = []
    for label, options in cases:
        found: list[tuple[str, str]] = []
        step_count = {"window": 0}
        original_step, original_log = train.RankwiseTrainer.training_step, train.RankwiseTrainer._maybe_log_save_evaluate

        def training_step(self, *args, **kwargs):
            if self.state.global_step >= 3:
                step_count["window"] += 1
                torch.cuda.set_sync_debug_mode("warn")
            return original_step(self, *args, **kwargs)

        def log_save_evaluate(self, *args, **kwargs):
            torch.cuda.set_sync_debug_mode(0)
            return original_log(self, *args, **kwargs)

        def show(message, category, filename, lineno, file=None, line=None):
            ours = next((f"{Path(f.filename).relative_to(REPO)}:{f.lineno}" for f in reversed(traceback.extract_stack())
                         if str(REPO / "src") in f.filename), "-")
            found.append((f"{_short(filename)}:{lineno}", ours))

        train.RankwiseTrainer.training_step, train.RankwiseTrainer._maybe_log_save_evaluate = \
            training_step, log_save_evaluate
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = show
                cfg = run_config({**options, "logging_steps": 10_000}, work / ("sync_" + label.replace(" ", "_")),
                                 data_dir, steps, batch, device)
                train.run_training(cfg)
        finally:
            torch.cuda.set_sync_debug_mode(0)
            train.RankwiseTrainer.training_step, train.RankwiseTrainer._maybe_log_save_evaluate = \
                original_step, original_log
        where: dict[tuple, int] = {}
        for key in found:
            where[key] = where.get(key, 0) + 1
        rows.append({"case": label, "steps": step_count["window"], "syncs": len(found),
                     "per_step": round(len(found) / max(step_count["window"], 1), 2),
                     "where": [{"at": at, "rankwise": ours, "count": n}
                               for (at, ours), n in sorted(where.items(), key=lambda x: -x[1])]})
        print(f"(b) {label}: {rows[-1]['per_step']} syncs per step", flush=True)
    return rows


def _short(filename: str) -> str:
    for marker in ("site-packages/", "dist-packages/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return str(Path(filename).relative_to(REPO)) if filename.startswith(str(REPO)) else filename


# ---------------------------------------------------------------------------------------------
# (c, d) step time
# ---------------------------------------------------------------------------------------------

def model_variants(kind: str, xs_rank: int) -> list[tuple[str, dict | None]]:
    """(label, rankwise.wrap options, or None for PEFT alone at LoRA rank 1)."""
    return [("rankwise LoRA-XS r%d (fixed)" % xs_rank, {"method": "loraxs", "allocation": "uniform", "rank": xs_rank}),
            ("rankwise LoRA-XS learned (rank_max %d)" % xs_rank,
             {"method": "loraxs", "allocation": "learned", "rank_min": 1, "rank_max": xs_rank,
              "rank_average": xs_rank / 2, "tau": 0.5}),
            ("PEFT LoRA r1 (alone)", None),
            ("rankwise LoRA r1 (PEFT underneath)", {"method": "lora", "allocation": "uniform", "rank": 1})]


def build_model(kind: str, bundle: Path, short: bool):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from rankwise.models import quiet_transformers

    if kind == "MiniLM":
        with quiet_transformers():  # the new head's "missing weights" report
            model = AutoModelForSequenceClassification.from_pretrained(bundle / "embedded" / "minilm", num_labels=2,
                                                                       dtype=torch.float32)
    else:
        config = AutoConfig.from_pretrained(bundle / "smollm2-135m")
        if short:
            config.num_hidden_layers = 2
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model


def matrix_parameters(model) -> int:
    """Parameters of the linear layers (the multiplications that dominate a step)."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def time_variant(kind: str, label: str, options, bundle: Path, shape: tuple[int, int], steps: int, warm_up: int,
                 device: str, short: bool) -> dict:
    import torch
    from peft import get_peft_model

    import rankwise
    from rankwise.devices import half_precision_base
    from rankwise.train import GuardedAdamW

    model = build_model(kind, bundle, short)
    base_matrices = matrix_parameters(model)
    allocator = None
    if options is None:
        config = rankwise.plan(model, "lora", "uniform", rank=1).lora_config()
        model = get_peft_model(model, config)
    else:
        model, allocator = rankwise.wrap(model, steps_per_epoch=steps + warm_up, num_train_epochs=1, **options)
    half_precision_base(model, "bf16")
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=True) if options is None else \
        GuardedAdamW([{"params": trainable, "lr": 1e-4, "weight_decay": 0.0}])
    batch, length = shape
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 30000 if kind == "MiniLM" else 49000, (batch, length), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "labels": ids if kind == "SmolLM2-135M" else (ids[:, 0] % 2)}
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(warm_up + steps):
        if allocator is not None:
            allocator.step = step
        start = _now(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = _now(device)
        if step >= warm_up:
            times.append((start, end))
    seconds = _elapsed(times, device)
    step_s = statistics.median(seconds)
    tokens = batch * length
    row = {"model": kind, "variant": label, "trainable_parameters": sum(p.numel() for p in trainable),
           "step_ms": round(1000 * step_s, 3), "tokens_per_s": round(tokens / step_s),
           "flops_per_step": 4 * base_matrices * tokens, "batch": batch, "length": length}
    if device == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model, optimizer
    return row


def _now(device: str):
    import torch

    if device == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def _elapsed(pairs, device: str) -> list[float]:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        return [start.elapsed_time(end) / 1000 for start, end in pairs]
    return [end - start for start, end in pairs]


def step_times(bundle: Path, device: str, short: bool, peak: float | None, models=MODELS) -> list[dict]:
    # Equal parameters: LoRA-XS at rank r spends 24·r² (MiniLM's 24 matrices) or 210·r² (SmolLM2's 210), LoRA at
    # rank 1 Σ(in+out): 25,344 and 305,280, so r = 32 (24,576) and r = 38 (303,240).
    plans = [("MiniLM", 32, (8, 32) if short else (32, 128)), ("SmolLM2-135M", 38, (2, 32) if short else (16, 256))]
    plans = [p for p in plans if p[0] in models]
    steps, warm_up = (3, 1) if short else (30, 5)
    rows = []
    for kind, xs_rank, shape in plans:
        for label, options in model_variants(kind, xs_rank):
            row = time_variant(kind, label, options, bundle, shape, steps, warm_up, device, short)
            if peak:
                row["mfu"] = round(row["flops_per_step"] / (row["step_ms"] / 1000) / (peak * 1e12), 4)
            rows.append(row)
            print(f"(c) {kind} {label}: {row['step_ms']} ms/step", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def write_report(out: Path, env: dict, checks: list, syncs: list, times: list, peak, wall: float, short: bool):
    out.mkdir(parents=True, exist_ok=True)
    data = {"environment": env, "correctness": checks, "syncs": syncs, "step_time": times, "peak_tflops": peak,
            "wall_seconds": round(wall, 1), "short": short}
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    device = env.get("gpu") or f"CPU ({env.get('cpu')}, {env.get('threads')} threads)"
    lines = [f"# rankwise on {device}", "",
             f"`python bench/gpu/run.py{' --device cpu --short' if short else ''}` — {wall / 60:.1f} minutes; torch "
             f"{env['torch']}, transformers {env['transformers']}, PEFT {env['peft']}, accelerate {env['accelerate']}."
             + (" A dry run on the CPU at toy sizes: these numbers say the script runs, not how fast a GPU is."
                if short else ""), "",
             "## (a) Correctness: bf16 runs, frozen base in bf16", "",
             "| case | status | steps (skipped) | eval loss | merged export: max abs Δlogit | same predictions | ok |",
             "|---|---|---|---|---|---|---|"]
    for r in checks:
        if "error" in r:
            lines.append(f"| {r['case']} | error: {r['error']} | | | | | no |")
            continue
        lines.append(f"| {r['case']} | {r['status']} | {r['steps']} ({r['skipped']}) | {_num(r['eval_loss'])} | "
                     f"{r['max_abs_logit_diff']:.2e} | {100 * r['same_predictions']:.0f}% | "
                     f"{'yes' if r['ok'] else 'NO'} |")
    lines += ["", "## (b) Host synchronisations per training step (after 3 steps; logging, evaluation, saving "
              "outside the window)", ""]
    for r in syncs:
        if "note" in r:
            lines.append(f"- {r['case']}: {r['note']}")
            continue
        lines.append(f"- **{r['case']}**: {r['syncs']} in {r['steps']} steps ({r['per_step']} per step)")
        lines += [f"  - {w['count']}× `{w['at']}` (rankwise: `{w['rankwise']}`)" for w in r["where"][:8]]
    lines += ["", "## (c, d) Step time, bf16 (forward, backward, optimiser step; median)", "",
              "| model | variant | trainable | batch × length | ms/step | tokens/s | MFU | peak memory |",
              "|---|---|---|---|---|---|---|---|"]
    for r in times:
        lines.append(f"| {r['model']} | {r['variant']} | {r['trainable_parameters']:,} | {r['batch']} × {r['length']} "
                     f"| {r['step_ms']:.2f} | {r['tokens_per_s']:,} | "
                     f"{_pct(r.get('mfu'))} | {r.get('peak_memory_gib', '—')} GiB |")
    lines += ["", f"MFU: 4 × (linear-layer parameters) × tokens per step over the dense bf16 peak "
              f"({peak or 'unknown'} TFLOP/s); attention scores and the adapters' own work are left out, so it "
              "understates the work done a little.", ""]
    (out / "report.md").write_text("\n".join(lines))


def _num(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--short", action="store_true", help="toy sizes (a dry run on the CPU)")
    parser.add_argument("--bundle", default=str(REPO / ".gpu_bundle"), help="what bench/gpu/pack.py wrote")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "gpu"))
    parser.add_argument("--peak_tflops", type=float, help="the device's dense bf16 peak (default: from its name)")
    parser.add_argument("--skip", default="", help="sections to leave out: a, b, c (comma-separated)")
    parser.add_argument("--cases", help="only these correctness cases (labels, comma-separated; default all)")
    parser.add_argument("--models", default=",".join(MODELS), help="models of the step-time section")
    args = parser.parse_args(argv)
    bundle = Path(args.bundle)
    if not (bundle / "embedded" / "minilm").is_dir():
        parser.error(f"--bundle: {bundle} holds no packed MiniLM; run python bench/gpu/pack.py first")
    os.environ["RANKWISE_EMBEDDED_DIR"] = str(bundle / "embedded")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.time()
    env = environment(args.device)
    print(f"environment: {json.dumps(env)}", flush=True)
    peak = peak_tflops(env, args.peak_tflops)
    steps, batch = (4, 8) if args.short else (25, 32)
    skip = set(args.skip.split(","))
    cases = CASES if not args.cases else [c for c in CASES if c[0] in args.cases.split(",")]
    if args.cases and len(cases) != len(args.cases.split(",")):
        parser.error(f"--cases: choose from {', '.join(c[0] for c in CASES)}")
    with tempfile.TemporaryDirectory(prefix="rankwise-gpu-") as work:
        work = Path(work)
        data_dir = bundle / "data"
        checks = [] if "a" in skip else correctness(cases, work, data_dir, steps, batch, args.device)
        chosen = [c for c in cases if c[0] in SYNC_CASES]
        syncs = [] if "b" in skip else sync_window(chosen, work, data_dir, steps + 4, batch, args.device)
    times = [] if "c" in skip else step_times(bundle, args.device, args.short, peak, args.models.split(","))
    write_report(Path(args.out), env, checks, syncs, times, peak, time.time() - started, args.short)
    print(f"wrote {Path(args.out) / 'report.md'} in {(time.time() - started) / 60:.1f} minutes")
    return 0 if all(r.get("ok") for r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
