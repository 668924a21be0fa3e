"""bf16 against fp32 on this machine's CPU: the memory a training run holds and its step time, in one run.

    python bench/precision.py            # MiniLM, LoRA-XS r25 (the README's main run), batch 32 x 64 tokens

With --bf16 rankwise holds the frozen base in bfloat16 and keeps the trainable parts (adapters, head, allocation
weights, AdamW's moments) in float32, under autocast. Measured:
- weight bytes: parameters and buffers as held (exact);
- peak resident memory over loading and 10 training steps, in a fresh process per precision (RSS: the whole process,
  torch's own libraries included, so the ratio understates the weights' halving);
- step time: both models in one process, steps interleaved (A B A B ...) so that load from other processes hits
  both alike; median of 20 steps each.
Prints one line per quantity and the ratio, and writes bench/results/precision.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def build(precision: str, rank: int):
    """MiniLM for 2-class classification with LoRA-XS at `rank`, its frozen base in `precision`, and its optimiser."""
    import torch
    from transformers import AutoModelForSequenceClassification

    import rankwise
    from rankwise.devices import half_precision_base
    from rankwise.models import quiet_transformers, resolve_model
    from rankwise.train import GuardedAdamW

    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=2)
    model, _ = rankwise.wrap(model, method="loraxs", rank=rank)
    if precision != "fp32":
        half_precision_base(model, precision)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model.train(), GuardedAdamW([{"params": trainable, "lr": 1e-3, "weight_decay": 0.0}])


def batch(size: int, length: int):
    import torch

    ids = torch.randint(1000, 29000, (size, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 2}


def step(model, optimizer, inputs, precision: str) -> float:
    import torch

    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def held_bytes(model, optimizer) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [t for state in optimizer.state.values() for t in state.values() if hasattr(t, "element_size")]
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_child(precision: str, rank: int, size: int, length: int) -> None:
    """In a fresh process: resident memory before loading, and its peak after 10 steps (KiB, Linux ru_maxrss)."""
    import torch  # noqa: F401 - loaded before the baseline, so the baseline holds torch's libraries

    inputs = batch(size, length)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model, optimizer = build(precision, rank)
    for _ in range(10):
        step(model, optimizer, inputs, precision)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_before_kib": before, "rss_peak_kib": peak, "held_bytes": held_bytes(model, optimizer)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rank", type=int, default=25)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--child", choices=("fp32", "bf16"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(args.child, args.rank, args.batch, args.length)
        return 0
    import torch

    memory = {}
    for precision in ("fp32", "bf16"):
        out = subprocess.run([sys.executable, __file__, "--child", precision, "--rank", str(args.rank), "--batch",
                              str(args.batch), "--length", str(args.length)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        memory[precision] = json.loads(out)
    models = {p: build(p, args.rank) for p in ("fp32", "bf16")}
    inputs = batch(args.batch, args.length)
    times = {p: [] for p in models}
    for _ in range(2):  # warm-up
        for p, (model, optimizer) in models.items():
            step(model, optimizer, inputs, p)
    for _ in range(args.steps):
        for p, (model, optimizer) in models.items():
            times[p].append(step(model, optimizer, inputs, p))
    result = {"model": "minilm", "method": f"loraxs r{args.rank}", "batch": args.batch, "length": args.length,
              "threads": torch.get_num_threads()}
    for p in models:
        m = memory[p]
        result[p] = {"held_mib": round(m["held_bytes"] / 2**20, 1),
                     "peak_rss_increase_mib": round((m["rss_peak_kib"] - m["rss_before_kib"]) / 1024, 1),
                     "peak_rss_mib": round(m["rss_peak_kib"] / 1024, 1),
                     "step_ms_median": round(1000 * statistics.median(times[p]), 1)}
    ratios = {key: round(result["bf16"][key] / result["fp32"][key], 3)
              for key in ("held_mib", "peak_rss_increase_mib", "peak_rss_mib", "step_ms_median")}
    result["bf16_over_fp32"] = ratios
    for key, ratio in ratios.items():
        print(f"{key:<24} fp32 {result['fp32'][key]:>9}  bf16 {result['bf16'][key]:>9}  bf16/fp32 {ratio}")
    out = REPO / "bench" / "results" / "precision.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
