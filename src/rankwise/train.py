"""One training run: prepare (all checks, nothing written) → train → run directory.

The loop is plain PyTorch under `accelerate`, so the same command scales out with
`accelerate launch` / `torchrun`. Per optimiser step: the rank allocator (learned runs) sets the
masks, the loss is back-propagated, a non-finite loss or gradient norm skips the step (the
divergence guard), and the adapter, head and allocation weights step with their own learning
rates. After every epoch the model is evaluated with hard ranks.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_constant_schedule, get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

from .version import __version__
from .allocation import RankAllocator
from .config import RunConfig, prepare
from .plan import Plan, build_plan
from .methods import AdapterSet, build_adapter, get_method
from .rundir import RunDir
from .runstate import check_output_dir, claim_output_dir
from .tasks import PreparedTask, prepare_task


def default_output_dir(cfg: RunConfig) -> str:
    return str(Path("runs") / f"{cfg.task}_{cfg.method}_{cfg.allocation}_seed{cfg.seed}")


@dataclass
class Setup:
    """Everything a run needs, built and checked before the run directory is touched."""

    cfg: RunConfig
    task: PreparedTask
    plan: Plan
    adapter: AdapterSet
    allocator: RankAllocator | None
    train_loader: DataLoader
    eval_loaders: dict[str, DataLoader]
    steps_per_epoch: int


def setup_run(cfg: RunConfig) -> Setup:
    """Resolve and validate the config, load data and model, build the plan and adapters. Raises
    RankwiseError on bad input; writes nothing."""
    cfg = prepare(cfg)
    if cfg.output_dir is None:
        cfg.output_dir = default_output_dir(cfg)
    check_output_dir(cfg)  # before anything is loaded; checked again under the run's lock when training starts
    task = prepare_task(cfg)
    if not task.train_features:
        from .errors import DataError

        raise DataError(f"task {cfg.task}: no training examples")

    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(task.train_features, batch_size=cfg.per_device_train_batch_size, shuffle=True,
                              collate_fn=task.collate, generator=generator)
    eval_loaders = {split: DataLoader(features, batch_size=cfg.per_device_eval_batch_size, collate_fn=task.collate)
                    for split, features in task.eval_sets.items()}
    steps_per_epoch = math.ceil(len(train_loader) / cfg.gradient_accumulation_steps)

    plan, allocator = build_plan(cfg, task.model, task.head_modules, steps_per_epoch)
    adapter = build_adapter(task.model, cfg.method, plan.targets, plan.allocated_ranks, [r.alpha for r in plan.rows],
                            rslora=cfg.alpha_policy == "rslora", dropout=cfg.lora_dropout,
                            head_modules=task.head_modules, task_type=task.peft_task_type, seed=cfg.seed,
                            init=cfg.init, run_config=cfg, total_steps=steps_per_epoch * cfg.num_train_epochs)
    plan, adapter = adapter.method.initialise(cfg, task, plan, adapter)  # EVA: ranks from data
    return Setup(cfg, task, plan, adapter, allocator, train_loader, eval_loaders, steps_per_epoch)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    import peft
    import transformers

    return {"rankwise": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version(), "git_revision": _git_revision(),
            "command": " ".join(sys.argv)}


def _lr_schedule(optimizer, cfg: RunConfig, total_steps: int):
    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.lr_scheduler == "linear_schedule_with_warmup":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    if cfg.lr_scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule(optimizer)


def _param_groups(setup: Setup) -> list[dict]:
    cfg, model = setup.cfg, setup.adapter.model
    head_ids = {id(p) for h in setup.task.head_modules for p in _head_parameters(model, h)}
    head = [p for p in model.parameters() if p.requires_grad and id(p) in head_ids]
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": body, "lr": cfg.learning_rate, "weight_decay": cfg.weight_decay, "name": "adapter"},
              {"params": head, "lr": cfg.cls_learning_rate, "weight_decay": cfg.weight_decay, "name": "head"}]
    if setup.allocator is not None:
        groups.append({"params": [setup.allocator.weights], "lr": cfg.rank_allocation_lr, "weight_decay": 0.0,
                       "name": "allocation"})
    return [g for g in groups if g["params"]]


def _head_parameters(model, head: str):
    """Trainable parameters of a head module, also inside a PEFT wrapper (modules_to_save)."""
    for name, p in model.named_parameters():
        if f".{head}." in f".{name}." and p.requires_grad:
            yield p


class _Wandb:
    """Optional W&B mirror of metrics.jsonl: offline unless WANDB_MODE says otherwise; never fatal."""

    def __init__(self, cfg: RunConfig, run_dir: Path, enabled: bool):
        self.run = None
        if not enabled:
            return
        try:
            import wandb
        except ImportError:
            print("note: --report_to wandb: wandb is not installed (pip install wandb); metrics are in "
                  f"{run_dir / 'metrics.jsonl'}", file=sys.stderr)
            return
        os.environ.setdefault("WANDB_MODE", "offline")
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rankwise"), name=run_dir.name,
                                  dir=str(run_dir), config=cfg.to_dict(), reinit=True)
        except Exception as exc:  # W&B problems must not cost a run
            print(f"note: wandb could not start ({exc}); metrics are in {run_dir / 'metrics.jsonl'}",
                  file=sys.stderr)

    def log(self, record: dict) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


def _count(params) -> int:
    return sum(p.numel() for p in params)


def _save_weights(run: RunDir, setup: Setup, hard_ranks: list[int]) -> None:
    """The method's weights (an adapter, or the whole model) in the run directory, written atomically; learned
    runs add their allocation weights."""
    cfg, adapter = setup.cfg, setup.adapter
    with run.atomic_subdir(adapter.method.weights_dir) as tmp:
        adapter.method.save(adapter, tmp, base_model=cfg.model, head_modules=setup.task.head_modules,
                            hard_ranks=hard_ranks, tokenizer=setup.task.tokenizer)
        if setup.allocator is not None:
            save_file({"weights": setup.allocator.weights.detach().cpu().contiguous()},
                      str(tmp / "allocation_weights.safetensors"))


def train(cfg: RunConfig, setup: Setup | None = None) -> dict:
    """Run one training job and return its summary (also written to <output_dir>/summary.json).

    The main process holds the output directory's lock for the whole run. A crash is recorded as status
    `failed`; with --overwrite_output_dir the run is written beside the old one and swapped in at the end,
    so the old run stays intact until then (and for good if this one crashes)."""
    setup = setup or setup_run(cfg)
    accelerator = Accelerator(gradient_accumulation_steps=setup.cfg.gradient_accumulation_steps)
    if not accelerator.is_main_process:
        return _train(setup, accelerator, RunDir(setup.cfg.output_dir))
    with claim_output_dir(setup.cfg) as claim:
        try:
            summary = _train(setup, accelerator, claim.run)
        except Exception as exc:
            if claim.replacing:
                claim.abandon()
            elif not claim.run.file("summary.json").exists():
                cfg = setup.cfg
                claim.run.write_summary({"status": "failed", "message": f"{type(exc).__name__}: {exc}",
                                         "task": cfg.task, "method": cfg.method, "allocation": cfg.allocation,
                                         "seed": cfg.seed})
            raise
        claim.commit()
    return summary


def _train(setup: Setup, accelerator: Accelerator, run: RunDir) -> dict:
    cfg, task, plan, adapter, allocator = setup.cfg, setup.task, setup.plan, setup.adapter, setup.allocator
    main = accelerator.is_main_process
    show = main and not cfg.quiet

    accelerator.wait_for_everyone()
    if main:
        run.write_json("config.json", {"config": cfg.to_dict(), "environment": environment(), "data": task.info,
                                       "plan": plan.totals(), "num_processes": accelerator.num_processes})
        run.write_json("ranks.json", plan.to_dict())

    model = adapter.model
    optimizer = torch.optim.AdamW(_param_groups(setup), lr=cfg.learning_rate)
    total_steps = setup.steps_per_epoch * cfg.num_train_epochs
    scheduler = _lr_schedule(optimizer, cfg, total_steps)
    model, optimizer, train_loader, scheduler, *eval_loaders = accelerator.prepare(
        model, optimizer, setup.train_loader, scheduler, *setup.eval_loaders.values())
    eval_loaders = dict(zip(setup.eval_loaders, eval_loaders))
    if allocator is not None:
        allocator.to(accelerator.device)
    hooks = adapter.method.training_hooks(adapter, cfg)  # AdaLoRA: its own rank allocation per step
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    wandb = _Wandb(cfg, run.path, main and cfg.report_to == "wandb")

    step, skipped, consecutive_bad = 0, 0, 0
    window_loss, window_count, window_bad = 0.0, 0, False
    log_loss, log_count = 0.0, 0
    best, best_epoch, final, evaluations = None, None, None, []
    status, message = "completed", None
    started = time.time()

    def log(record: dict) -> None:
        if main:
            run.append_jsonl("metrics.jsonl", record)
            wandb.log(record)

    source = adapter.method.allocation_source(cfg)  # EVA: ranks fixed from data before training

    def log_allocation() -> None:
        if not main:
            return
        record = allocator.state(step) if allocator is not None else hooks.allocation_record(step)
        if record is not None:
            run.append_jsonl("allocation.jsonl", {"epoch": round(step / setup.steps_per_epoch, 4), **record})
        elif source is not None and step == 0:
            ranks = dict(zip([t.name for t in plan.targets], plan.allocated_ranks))
            run.append_jsonl("allocation.jsonl", {"epoch": 0.0, "step": 0, "budget": sum(ranks.values()),
                                                  "budget_unit": "sum of ranks", "discrete": True,
                                                  "budget_used": sum(ranks.values()), "source": source,
                                                  "continuous": ranks, "hard": ranks})

    def set_eval_masks() -> None:
        if allocator is not None:
            adapter.set_keep(allocator.keep(step, training=False))

    log_allocation()
    for epoch in range(cfg.num_train_epochs):
        model.train()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.num_train_epochs}", disable=not show, leave=False,
                   dynamic_ncols=True)
        for batch in bar:
            with accelerator.accumulate(model):
                if allocator is not None:
                    adapter.set_keep(allocator.keep(step, training=True))
                loss = model(**batch).loss
                loss_value = float(loss.detach())
                window_bad |= not math.isfinite(loss_value)
                accelerator.backward(loss)
                if not accelerator.sync_gradients:
                    window_loss, window_count = window_loss + loss_value, window_count + 1
                    continue
                if allocator is not None and accelerator.num_processes > 1:
                    grad = allocator.weights.grad
                    if grad is not None:
                        allocator.weights.grad = accelerator.reduce(grad, "mean")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(
                    trainable, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")))
                window_loss, window_count = window_loss + loss_value, window_count + 1
                if window_bad or not math.isfinite(grad_norm):
                    # Divergence guard: drop this update, count it, stop after too many in a row.
                    skipped, consecutive_bad = skipped + 1, consecutive_bad + 1
                    optimizer.zero_grad(set_to_none=True)
                else:
                    consecutive_bad = 0
                    optimizer.step()
                    hooks.after_optimizer_step(step)  # AdaLoRA scores rank triplets from the gradients
                    optimizer.zero_grad(set_to_none=True)
                    log_loss, log_count = log_loss + window_loss / window_count, log_count + 1
                scheduler.step()
                step += 1
                window_loss, window_count, window_bad = 0.0, 0, False

            if consecutive_bad >= cfg.max_bad_steps:
                status = "diverged"
                scale = max(adapter.scales(), default=None)
                kind = "alpha/sqrt(r)" if cfg.alpha_policy == "rslora" else "alpha/r"
                message = (f"loss or gradient norm was non-finite for {consecutive_bad} consecutive steps (up to step "
                           f"{step}, epoch {epoch + 1}); {skipped} steps skipped in all. Likely cause: the learning "
                           f"rate ({cfg.learning_rate:g}) is too high"
                           + (f" or the adapter scale {kind} (up to {scale:g}) is too large" if scale else "")
                           + ". Try a lower --learning_rate, warm-up (--lr_scheduler linear_schedule_with_warmup)"
                           + (", or --alpha_policy rslora" if scale else ""))
                break
            if step % cfg.logging_steps == 0 and step > 0 and log_count:
                record = {"type": "train", "step": step, "epoch": round(step / setup.steps_per_epoch, 4),
                          "loss": log_loss / log_count, "learning_rate": scheduler.get_last_lr()[0],
                          "grad_norm": grad_norm, "skipped_steps": skipped}
                log(record)
                log_allocation()
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                log_loss, log_count = 0.0, 0
        bar.close()
        if status != "completed":
            break

        set_eval_masks()
        with hooks.evaluating():
            metrics = task.evaluate(model, eval_loaders, accelerator)
        record = {"type": "eval", "step": step, "epoch": epoch + 1, **metrics, "skipped_steps": skipped}
        log(record)
        evaluations.append(record)
        if not all(math.isfinite(v) for v in metrics.values()):
            status = "diverged"
            message = (f"evaluation after epoch {epoch + 1} gave non-finite values "
                       f"({', '.join(k for k, v in metrics.items() if not math.isfinite(v))}); the learning rate "
                       f"({cfg.learning_rate:g}) is likely too high")
            break
        final = record
        value = metrics[task.main_metric]
        if best is None or (value > best[task.main_metric] if task.greater_is_better else value < best[task.main_metric]):
            best, best_epoch = record, epoch + 1
        if show:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            tqdm.write(f"epoch {epoch + 1}/{cfg.num_train_epochs}  {shown}  (best {task.main_metric} "
                       f"{best[task.main_metric]:.4f} at epoch {best_epoch})")

    wall = time.time() - started
    unwrapped = accelerator.unwrap_model(model)
    adapter.model = unwrapped
    method = adapter.method
    hard_ranks = plan.allocated_ranks
    method_ranks = hooks.final_ranks()  # AdaLoRA: the ranks it pruned to
    if allocator is not None:
        budget = allocator.schedule.memory(step)
        hard_ranks = allocator.hard_ranks(budget)
        set_eval_masks()
        log_allocation()
    elif method_ranks is not None:
        hard_ranks = method_ranks
        log_allocation()
    summary = {
        "status": status, "message": message, "task": cfg.task, "method": cfg.method, "allocation": cfg.allocation,
        "seed": cfg.seed, "main_metric": task.main_metric, "greater_is_better": task.greater_is_better,
        "best": best, "best_epoch": best_epoch, "final": final, "epochs_completed": len(evaluations),
        "steps": step, "skipped_steps": skipped, "wall_time_s": round(wall, 2),
        "steps_per_second": round(step / wall, 4) if wall > 0 else None,
        "trainable_parameters": {
            "adapter": adapter.num_adapter_parameters() if method.trains_adapter else
            _count(p for g in optimizer.param_groups if g.get("name") == "adapter" for p in g["params"]),
            "head": plan.head_parameters,
            "allocation": allocator.weights.numel() if allocator is not None else 0,
        },
        "model_parameters": plan.model_parameters,
    }
    if method.trains_adapter:
        at_hard = method.parameters(plan.targets, hard_ranks)
        summary["trainable_parameters"]["adapter_at_hard_ranks"] = at_hard
        summary["hard_ranks"] = dict(zip([t.name for t in plan.targets], hard_ranks))
    summary.update(method.summary_fields(plan, hard_ranks))
    if main:
        if allocator is not None or method_ranks is not None:
            ranks = plan.to_dict()
            for row, rank in zip(ranks["matrices"], hard_ranks):
                row["rank"] = rank
            ranks["hard_ranks_final"] = True
            run.write_json("ranks.json", ranks)
        if cfg.save_model and status == "completed":
            _save_weights(run, setup, hard_ranks)
        if status == "completed" and task.finalize is not None:
            task.finalize(unwrapped, run.path)
        run.write_summary(summary)
    wandb.finish()
    accelerator.wait_for_everyone()
    return summary


def run_training(cfg: RunConfig) -> dict:
    """Set up (every check, nothing written) and train."""
    setup = setup_run(cfg)
    return train(setup.cfg, setup)
