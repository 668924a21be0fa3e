"""Training-step time of rankwise adapters vs plain PEFT LoRA on MiniLM, measured in one run.

Variants (batch 32 × 32 tokens, AdamW, gradient clipping, as in `rankwise train`):
  peft_lora_r8            plain PEFT LoRA r=8 on the same 24 matrices (the reference)
  rankwise_lora_r8        rankwise `lora` (PEFT underneath), r=8
  rankwise_loraxs_r25     rankwise `loraxs`, r=25
  rankwise_loraxs_learned rankwise `loraxs` with learned allocation, rank_max 25 (masks + allocator step)
Rounds are interleaved (A B C D, A B C D, ...) so machine noise hits every variant alike; the median
per variant is reported with the ratios the issues ask for. Writes bench/results/step_time.json.

    python bench/step_time.py [--rounds 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from rankwise.methods import build_adapter, get_method
from rankwise.allocation import AllocationSchedule, RankAllocator
from rankwise.models import load_classifier
from rankwise.targets import find_targets

BATCH, TOKENS = 32, 32
SUFFIXES = ["query", "value", "attention.output.dense", "output.dense"]


def make_batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1000, 29000, (BATCH, TOKENS), generator=g),
            "attention_mask": torch.ones(BATCH, TOKENS, dtype=torch.long),
            "labels": torch.randint(0, 2, (BATCH,), generator=g)}


class Variant:
    def __init__(self, name: str, model, params: list, allocator=None, adapter=None):
        self.name, self.model, self.allocator, self.adapter = name, model, allocator, adapter
        groups = [{"params": params, "lr": 1e-3}]
        if allocator is not None:
            groups.append({"params": [allocator.weights], "lr": 1e-2, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups)
        self.trainable = [p for g in groups for p in g["params"]]
        self.step_index = 0
        model.train()

    def step(self, batch: dict) -> None:
        if self.allocator is not None:
            self.adapter.set_keep(self.allocator.keep(self.step_index, training=True))
        loss = self.model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_index += 1


def build_variants() -> list[Variant]:
    variants = []

    torch.manual_seed(0)
    model = load_classifier("minilm", 2, False)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=SUFFIXES,
                                                  modules_to_save=["classifier"], task_type="SEQ_CLS"))
    variants.append(Variant("peft_lora_r8", peft_model, [p for p in peft_model.parameters() if p.requires_grad]))

    for name, method, rank in (("rankwise_lora_r8", "lora", 8), ("rankwise_loraxs_r25", "loraxs", 25)):
        torch.manual_seed(0)
        model = load_classifier("minilm", 2, False)
        targets = find_targets(model)
        adapter = build_adapter(model, method, targets, [rank] * len(targets), [16.0] * len(targets),
                                head_modules=["classifier"], task_type="SEQ_CLS")
        variants.append(Variant(name, adapter.model, [p for p in adapter.model.parameters() if p.requires_grad]))

    torch.manual_seed(0)
    model = load_classifier("minilm", 2, False)
    targets = find_targets(model)
    adapter = build_adapter(model, "loraxs", targets, [25] * len(targets), [16.0] * len(targets),
                            head_modules=["classifier"])
    schedule = AllocationSchedule(steps_per_epoch=1000, num_epochs=10, alpha_min=0.5, alpha_max=3.0,
                                  alpha_scheduler="linear", memory_start=len(targets) * 15.0**2,
                                  memory_end=len(targets) * 15.0**2, epochs_rank_discrete=1)
    allocator = RankAllocator(targets, get_method("loraxs").rank_cost(targets), 5, 25, schedule)
    variants.append(Variant("rankwise_loraxs_learned", adapter.model,
                            [p for p in adapter.model.parameters() if p.requires_grad], allocator, adapter))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_time.json"))
    args = parser.parse_args()

    variants = build_variants()
    batch = make_batch()
    for v in variants:  # warm-up
        for _ in range(3):
            v.step(batch)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for v in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                v.step(batch)
            times[v.name].append((time.perf_counter() - start) / args.steps)

    median = {k: statistics.median(v) for k, v in times.items()}
    ratios = {
        "rankwise_loraxs_r25 / peft_lora_r8": median["rankwise_loraxs_r25"] / median["peft_lora_r8"],
        "rankwise_lora_r8 / peft_lora_r8": median["rankwise_lora_r8"] / median["peft_lora_r8"],
        "rankwise_loraxs_learned / rankwise_loraxs_r25": median["rankwise_loraxs_learned"] / median["rankwise_loraxs_r25"],
    }
    for name, seconds in median.items():
        print(f"{name:<26} {seconds * 1000:8.1f} ms/step  (min {min(times[name]) * 1000:.1f}, "
              f"max {max(times[name]) * 1000:.1f})")
    for name, ratio in ratios.items():
        print(f"{name:<48} {ratio:.3f}x")
    print(f"summary: loraxs_r25/peft_lora_r8 {ratios['rankwise_loraxs_r25 / peft_lora_r8']:.3f}x (goal <= 1.0), "
          f"learned/fixed {ratios['rankwise_loraxs_learned / rankwise_loraxs_r25']:.3f}x (goal <= 1.05), "
          f"threads {torch.get_num_threads()}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"median_s": median, "all_s": times, "ratios": ratios, "batch": [BATCH, TOKENS],
                               "threads": torch.get_num_threads(), "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
