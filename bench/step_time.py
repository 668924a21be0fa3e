"""Training-step time on transformers' Trainer: rankwise adapters vs plain PEFT LoRA on MiniLM, in one run.

Variants (batch 32 × 32 tokens of synthetic SST-2-shaped data, AdamW, gradient clipping):
  peft_lora_r8            plain PEFT LoRA r=8 on the same 24 matrices, with transformers' own Trainer (the reference)
  rankwise_lora_r8        rankwise `lora` (PEFT underneath), r=8, on rankwise's Trainer
  rankwise_loraxs_r25     rankwise `loraxs`, r=25
  rankwise_loraxs_learned rankwise `loraxs` with learned allocation, rank_max 25 (masks + allocator every step)
Rounds are interleaved (A B C D, D C B A, ...): each round trains each variant --steps optimiser steps (one
Trainer.train call; a callback times every step from its start to the end of the optimiser step, and the first
step of each call is dropped). Reported per variant: the median step time and its spread (interquartile range over
the median); then the ratios the issues ask for. When the machine was busy (other processes used more than
--max_other_cores cores on average during the run, from /proc/stat less this process's own CPU time, or a
variant's spread was above --max_spread) the ratios are withheld with the reason, unless --force: two trainings at
once on 2 cores run 10× slower, and a ratio measured under that load means nothing.
Writes bench/results/step_time.json.

    python bench/step_time.py [--rounds 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from rankwise.config import RunConfig, prepare
from rankwise.data.task import PreparedTask
from rankwise.methods import build_adapter
from rankwise.models import head_modules, load_classifier, load_tokenizer
from rankwise.planning import build_plan
from rankwise.train import RankwiseTrainer, Setup, attach_allocator, training_arguments

BATCH, TOKENS, EXAMPLES = 32, 32, 32 * 40
SUFFIXES = ["query", "value", "attention.output.dense", "output.dense"]


class StepTimer(TrainerCallback):
    """Wall time of each optimiser step: forward, backward, clipping and the step (not data loading)."""

    def __init__(self):
        self.times: list[float] = []
        self.started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.started)


def synthetic_features(tokenizer) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 29000, (EXAMPLES, TOKENS), generator=generator)
    labels = torch.randint(0, 2, (EXAMPLES,), generator=generator)
    return [{"input_ids": row.tolist(), "attention_mask": [1] * TOKENS, "labels": int(y)} for row, y in zip(ids, labels)]


def rankwise_trainer(name: str, features: list[dict], tokenizer, out: Path, **options) -> Trainer:
    cfg = prepare(RunConfig(model="minilm", task="sst2", per_device_train_batch_size=BATCH, quiet=True,
                            eval_strategy="no", save_strategy="no", logging_steps=10**6, num_train_epochs=3,
                            learning_rate=1e-3, output_dir=str(out / name), **options))
    torch.manual_seed(0)
    model = load_classifier("minilm", 2, False)
    heads = head_modules(model)
    task = PreparedTask(model=model, tokenizer=tokenizer, train_features=features, eval_sets={"eval": features[:BATCH]},
                        collate=DataCollatorWithPadding(tokenizer), evaluate=lambda *a: {}, main_metric="eval_loss",
                        greater_is_better=False, head_modules=heads, peft_task_type="SEQ_CLS")
    steps_per_epoch = EXAMPLES // BATCH
    plan, allocator = build_plan(cfg, model, heads, steps_per_epoch)
    adapter = build_adapter(model, cfg.method, plan.targets, plan.allocated_ranks, [r.alpha for r in plan.rows],
                            head_modules=heads, task_type="SEQ_CLS", seed=0, run_config=cfg,
                            total_steps=steps_per_epoch * 3)
    setup = Setup(cfg, task, plan, adapter, allocator, steps_per_epoch, steps_per_epoch * 3, 1, None)
    if allocator is not None:
        attach_allocator(adapter, allocator)
    return RankwiseTrainer(setup, training_arguments(setup, out / name), run=None)


def peft_trainer(features: list[dict], tokenizer, out: Path) -> Trainer:
    torch.manual_seed(0)
    model = get_peft_model(load_classifier("minilm", 2, False),
                           LoraConfig(r=8, lora_alpha=16, target_modules=SUFFIXES, task_type="SEQ_CLS",
                                      modules_to_save=["classifier", "bert.pooler"]))
    args = TrainingArguments(output_dir=str(out / "peft"), per_device_train_batch_size=BATCH, learning_rate=1e-3,
                             max_grad_norm=1.0, eval_strategy="no", save_strategy="no", logging_steps=10**6,
                             report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(), seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.remove_callback(PrinterCallback)  # no log dict printed per call
    return trainer


def busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (/proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def spread(times: list[float]) -> float:
    """Interquartile range over the median."""
    q = statistics.quantiles(times, n=4)
    return (q[2] - q[0]) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps per variant per round")
    parser.add_argument("--max_other_cores", type=float, default=0.25, help="CPU cores other processes may use on "
                        "average during the run before it counts as busy (default 0.25)")
    parser.add_argument("--max_spread", type=float, default=0.25, help="largest interquartile range / median of a "
                        "variant's step times before the run counts as disturbed (default 0.25)")
    parser.add_argument("--force", action="store_true", help="print the ratios even on a busy machine")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "step_time.json"))
    args = parser.parse_args()

    tokenizer = load_tokenizer("minilm")
    features = synthetic_features(tokenizer)
    work = Path(tempfile.mkdtemp(prefix="rankwise-bench-"))
    trainers = {
        "peft_lora_r8": peft_trainer(features, tokenizer, work),
        "rankwise_lora_r8": rankwise_trainer("lora", features, tokenizer, work, method="lora", rank=8),
        "rankwise_loraxs_r25": rankwise_trainer("loraxs", features, tokenizer, work, method="loraxs", rank=25),
        "rankwise_loraxs_learned": rankwise_trainer("learned", features, tokenizer, work, method="loraxs",
                                                    allocation="learned", rank_min=5, rank_max=25,
                                                    rank_average=15),
    }
    timers = {name: StepTimer() for name in trainers}
    for name, trainer in trainers.items():
        trainer.add_callback(timers[name])
    times: dict[str, list[float]] = {name: [] for name in trainers}
    names = list(trainers)
    started, busy_before, own_before = time.perf_counter(), busy_seconds(), own_seconds()
    for round_index in range(args.rounds + 1):  # round 0 warms up
        for name in (names if round_index % 2 == 0 else names[::-1]):
            trainer, timer = trainers[name], timers[name]
            trainer.args.max_steps = args.steps + 1
            timer.times = []
            trainer.train()
            if round_index > 0:
                times[name] += timer.times[1:]
    wall = time.perf_counter() - started
    other_cores = None if busy_before is None else max(
        0.0, (busy_seconds() - busy_before) - (own_seconds() - own_before)) / wall

    median = {k: statistics.median(v) for k, v in times.items()}
    spreads = {k: spread(v) for k, v in times.items()}
    for name in names:
        print(f"{name:<26} {median[name] * 1000:8.1f} ms/step  spread {spreads[name]:5.1%}  "
              f"(min {min(times[name]) * 1000:.1f}, max {max(times[name]) * 1000:.1f}, {len(times[name])} steps)")
    busy = []
    if other_cores is not None and other_cores > args.max_other_cores:
        busy.append(f"other processes used {other_cores:.2f} cores on average during the run")
    print(f"other processes: {other_cores:.2f} cores on average during the run" if other_cores is not None
          else "other processes: not measured (no /proc/stat)")
    busy += [f"{k} step times spread {v:.0%}" for k, v in spreads.items() if v > args.max_spread]
    ratios = {
        "rankwise_loraxs_r25 / peft_lora_r8": median["rankwise_loraxs_r25"] / median["peft_lora_r8"],
        "rankwise_lora_r8 / peft_lora_r8": median["rankwise_lora_r8"] / median["peft_lora_r8"],
        "rankwise_loraxs_learned / rankwise_loraxs_r25": median["rankwise_loraxs_learned"] / median["rankwise_loraxs_r25"],
    }
    if busy and not args.force:
        print("machine busy: " + "; ".join(busy) + ". Ratios withheld: rerun on a quiet machine (or --force)")
    else:
        for name, ratio in ratios.items():
            print(f"{name:<48} {ratio:.3f}x")
        print(f"summary: loraxs_r25/peft_lora_r8 {ratios['rankwise_loraxs_r25 / peft_lora_r8']:.3f}x (goal <= 1.0), "
              f"learned/fixed {ratios['rankwise_loraxs_learned / rankwise_loraxs_r25']:.3f}x (goal <= 1.05), "
              f"threads {torch.get_num_threads()}" + (" [busy machine, --force]" if busy else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"median_s": median, "spread": spreads, "all_s": times,
                               "ratios": ratios if not busy or args.force else None, "busy": busy,
                               "other_processes_cores": other_cores, "batch": [BATCH, TOKENS],
                               "engine": "transformers Trainer", "threads": torch.get_num_threads(),
                               "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
