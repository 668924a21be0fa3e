"""One training run on 🤗 transformers' `Trainer`: prepare (every check, nothing written) → train → run directory.

rankwise's own behaviour plugs into `Trainer` (`RankwiseTrainer` and `RunDirCallback` below):
- parameter groups: adapter, head and allocation weights, each with its own learning rate (the allocation weights
  with their own weight decay, --rank_allocation_weight_decay, 0 by default), in an AdamW whose step is the
  divergence guard: a step whose gradients are not finite is skipped and counted, and after --max_bad_steps such
  steps in a row the run ends `diverged`;
- learned allocation: the allocator is a submodule of the model, so data-parallel training averages its gradients
  like every other parameter's, and a forward pre-hook sets the rank masks of the current optimiser step (the
  schedules count optimiser steps of the global batch, whatever the number of processes);
- the method's per-step hooks (AdaLoRA's rank allocation after each optimiser step, before zero_grad);
- evaluation with the task's own metrics over exactly the dev set, with hard ranks;
- the run directory (runs/rundir.py): config.json, ranks.json, metrics.jsonl and allocation.jsonl, written once by the
  main process; checkpoint-N/ (trainable weights and allocation state, optimiser, scheduler, RNG) to resume from;
  adapter/ (or model/) and summary.json last.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (EarlyStoppingCallback, PrinterCallback, ProgressCallback, Trainer, TrainerCallback,
                          TrainingArguments, get_scheduler)

from .allocation import strategy_for
from .allocation.allocator import RankAllocator
from .config import SEED_LIMIT, RunConfig, prepare
from .config.run import TrainerArguments
from .config.trainer import passed_options, warmup_steps
from .errors import ConfigError, DataError, RankwiseError, RunDirError
from .methods import AdapterSet, build_adapter, get_method
from .models import check_hub_upload
from .planning import Plan, build_plan, check_head_saving, measuring_batches
from .adapters.io import base_model_record
from .devices import HALF_DTYPES, half_precision_base, to_host
from .runs.rundir import RunDir, read_jsonl, write_jsonl_atomic
from .ship.export import push_export
from .runs.state import Claim, check_output_dir, checkpoints, claim_output_dir, stored_config_conflicts
from .data.prepare import prepare_task
from .data.task import PreparedTask
from .version import __version__

TRAINABLE_FILE = "rankwise_trainable.safetensors"  # in each checkpoint: every trainable tensor, by name
STATE_FILE = "rankwise_state.json"  # in each checkpoint: the config and the divergence guard's counters
METHOD_STATE = "rankwise.method_state."  # TRAINABLE_FILE's prefix of a method's own checkpoint tensors (AdaLoRA)
ALLOCATOR_MODULE = "rankwise_allocator"


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
    steps_per_epoch: int  # optimiser steps of the global batch
    total_steps: int
    processes: int
    resume_from: Path | None  # the checkpoint to resume from


def setup_run(cfg: RunConfig) -> Setup:
    """Resolve and validate the config, load data and model, build the plan and adapters. Raises
    RankwiseError on bad input; writes nothing."""
    cfg = prepare(cfg)
    if cfg.output_dir is None:
        cfg.output_dir = default_output_dir(cfg)
    check_output_dir(cfg)  # before anything is loaded; checked again under the run's lock when training starts
    resume_from = resolve_checkpoint(cfg)
    check_environment(cfg)
    check_launch(process_state(cpu=cfg.use_cpu).num_processes)
    task = prepare_task(cfg)
    if cfg.label_smoothing_factor and task.info.get("problem_type") == "regression":  # own data: known once read
        raise ConfigError("label_smoothing_factor", "smooths class labels, but this data is a regression ("
                          f"{task.info.get('problem_type_reason')})", "Drop --label_smoothing_factor")
    if not task.train_features:
        raise DataError(f"task {cfg.task}: no training examples")
    processes = process_state().num_processes
    per_step = cfg.per_device_train_batch_size * processes
    batches = len(task.train_features) // per_step if cfg.dataloader_drop_last else \
        math.ceil(len(task.train_features) / per_step)
    steps_per_epoch = math.ceil(batches / cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps or math.ceil(steps_per_epoch * cfg.num_train_epochs)  # as transformers counts
    measured = measuring_batches(cfg, task, process_state().device, processes) \
        if strategy_for(get_method(cfg.method), cfg.allocation).measures else None
    plan, allocator = build_plan(cfg, task.model, task.head_modules, steps_per_epoch, measured,
                                 distributed=processes > 1)
    check_head_saving(cfg, plan)
    adapter = build_adapter(task.model, cfg.method, plan.targets, plan.allocated_ranks, [r.alpha for r in plan.rows],
                            rslora=cfg.alpha_policy == "rslora", dropout=cfg.lora_dropout,
                            head_modules=task.head_modules, task_type=task.peft_task_type, seed=cfg.seed,
                            init=cfg.init, run_config=cfg, total_steps=total_steps)
    plan, adapter = adapter.method.initialise(cfg, task, plan, adapter)  # EVA: ranks from data
    if precision(cfg) != "fp32":  # after EVA and gradient measuring, which read the weights in float32
        adapter.base_record = base_model_record(adapter, task.head_modules)  # the base as loaded, not as cast
        half_precision_base(adapter.model, precision(cfg), getattr(task.model, "_keep_in_fp32_modules", None))
    return Setup(cfg, task, plan, adapter, allocator, steps_per_epoch, total_steps, processes, resume_from)


def precision(cfg: RunConfig) -> str:
    return "bf16" if cfg.bf16 else "fp16" if cfg.fp16 else "fp32"


def autocast(cfg: RunConfig, device) -> contextlib.AbstractContextManager:
    """The run's mixed precision for forwards outside the Trainer (generations after training): the frozen base is
    in half precision and the adapters and head in float32, which only autocast multiplies together."""
    if precision(cfg) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=HALF_DTYPES[precision(cfg)])


def process_state(cpu: bool = False) -> PartialState:
    """This process's place among the processes of a run (one, or those torchrun / accelerate launch started).
    On a machine without CUDA (or with --use_cpu, `cpu`) the processes talk over gloo (`cpu=True`; without it
    accelerate runs each alone). The first call of a process decides (setup_run makes it)."""
    return PartialState(cpu=cpu or not torch.cuda.is_available())


class DamagedCheckpoint(ConfigError):
    """A checkpoint whose files cannot be resumed from (cut short, overwritten, incomplete)."""

    def __init__(self, checkpoint: Path, problem: str):
        super().__init__("resume_from_checkpoint", f"`{checkpoint}` is damaged: {problem}",
                         "Resume from an earlier checkpoint of the run, or train it anew without "
                         "--resume_from_checkpoint")


def resolve_checkpoint(cfg: RunConfig) -> Path | None:
    """The checkpoint --resume_from_checkpoint names, checked to belong to a run of this config and to hold readable
    files (`check_checkpoint`). `true`: the last one in --output_dir that is not damaged (a damaged one is named on
    stderr and passed over). None when not resuming."""
    given = cfg.resume_from_checkpoint
    if given is None or given.lower() in ("false", "no", "none"):
        return None
    if given.lower() not in ("true", "last", "yes"):
        checkpoint = Path(given)
        if not checkpoint.is_dir():
            raise ConfigError("resume_from_checkpoint", f"`{given}` " + ("is a file, not a checkpoint directory"
                                                                         if checkpoint.exists() else "does not exist"),
                              "Give a checkpoint-N/ directory of the interrupted run, or `true` for its last one")
        return _checked_checkpoint(checkpoint, cfg)
    found = checkpoints(Path(cfg.output_dir))
    if not found:
        raise ConfigError("resume_from_checkpoint", f"`{cfg.output_dir}` holds no checkpoint-N/ directory to "
                          "resume from", "Train it without --resume_from_checkpoint, or point --output_dir at "
                          "the run that was interrupted")
    for checkpoint in reversed(found):
        try:
            return _checked_checkpoint(checkpoint, cfg)
        except DamagedCheckpoint as exc:
            print(f"warning: {exc}; trying the one before", file=sys.stderr, flush=True)
    raise ConfigError("resume_from_checkpoint", f"every checkpoint in `{cfg.output_dir}` is damaged",
                      "Train the run anew without --resume_from_checkpoint")


def _checked_checkpoint(checkpoint: Path, cfg: RunConfig) -> Path:
    if (checkpoint / TRAINABLE_FILE).is_file() and not (checkpoint / "trainer_state.json").is_file():
        raise DamagedCheckpoint(checkpoint, "it is incomplete (the run was killed while writing it)")
    if not (checkpoint / STATE_FILE).is_file() or not (checkpoint / TRAINABLE_FILE).is_file():
        raise ConfigError("resume_from_checkpoint", f"`{checkpoint}` is not a rankwise checkpoint (no {STATE_FILE} "
                          f"and {TRAINABLE_FILE})", "Give a checkpoint-N/ directory of a rankwise run, or `true`")
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
        stored = state["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DamagedCheckpoint(checkpoint, f"{STATE_FILE} cannot be read") from None
    conflicts = stored_config_conflicts(stored, cfg)
    if conflicts:
        raise ConfigError("resume_from_checkpoint", f"`{checkpoint}` was trained with another config ("
                          + "; ".join(conflicts) + ")", "Resume with the config it was trained with, or train anew")
    check_checkpoint(checkpoint, state)
    return checkpoint


def check_checkpoint(checkpoint: Path, state: dict) -> None:
    """Refuse, before any work, a checkpoint whose files would fail half-way into a resume: weights that are not a
    whole safetensors file or hold other tensors than its state records, Trainer files that are not JSON or
    PyTorch archives (a copy cut short, another program's file)."""
    def refuse(problem: str):
        raise DamagedCheckpoint(checkpoint, problem)

    try:
        with safe_open(str(checkpoint / TRAINABLE_FILE), framework="pt") as weights:
            shapes = {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except Exception as exc:  # safetensors' errors have no common base
        refuse(f"{TRAINABLE_FILE} is not a readable safetensors file ({str(exc).strip()[:200]})")
    recorded = state.get("tensors")  # checkpoints written before it was recorded have none
    if recorded is not None and recorded != shapes:
        name = next(n for n in sorted(set(recorded) | set(shapes)) if recorded.get(n) != shapes.get(n))
        refuse(f"{TRAINABLE_FILE} holds other tensors than its {STATE_FILE} records (`{name}`: "
               f"{shapes.get(name, 'missing')} there, {recorded.get(name, 'not recorded')} recorded)")
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError) as exc:
        refuse(f"trainer_state.json cannot be read ({type(exc).__name__})")
    if not (checkpoint / "optimizer.pt").exists() or not (checkpoint / "scheduler.pt").exists():
        refuse("it holds no optimizer or scheduler state (written with --save_only_model), so a resume would restart "
               "AdamW's moments and the schedule")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        if (checkpoint / name).exists() and not zipfile.is_zipfile(checkpoint / name):
            refuse(f"{name} is not a PyTorch file (torch.save writes a zip archive)")


def check_compiler(backend: str) -> None:
    """torch.compile's backend must exist, and inductor needs what it builds with: a C++ compiler for CPU code,
    Triton for GPU kernels."""
    import shutil

    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ConfigError("torch_compile_backend", f"unknown backend `{backend}`",
                          f"Choose one of: {', '.join(torch._dynamo.list_backends(exclude_tags=()))}")
    if backend != "inductor":
        return
    if torch.cuda.is_available():
        try:
            import triton  # noqa: F401
        except ImportError:
            raise ConfigError("torch_compile", "inductor compiles GPU kernels with Triton, which is not installed",
                              "pip install triton, or use --torch_compile_backend aot_eager, or drop "
                              "--torch_compile") from None
    elif not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        raise ConfigError("torch_compile", "inductor compiles CPU code with a C++ compiler, and none is on PATH "
                          "(g++, c++, clang++ or $CXX)", "Install one (e.g. apt install g++), use "
                          "--torch_compile_backend aot_eager, or drop --torch_compile")


def check_environment(cfg: RunConfig) -> None:
    """What the device, the installed packages and the network must allow, checked before any work."""
    if cfg.bf16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError("bf16", f"this GPU ({torch.cuda.get_device_name()}) cannot compute in bfloat16",
                          "Use --fp16, or drop --bf16")
    if cfg.fp16 and not torch.cuda.is_available():
        raise ConfigError("fp16", "float16 mixed precision needs a CUDA GPU, and none is available",
                          "Use --bf16 (CPUs support it), or drop --fp16")
    if cfg.tf32 and not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8):
        raise ConfigError("tf32", "TF32 needs an Ampere or newer CUDA GPU, and none is available", "Drop --tf32")
    if cfg.torch_compile:
        check_compiler(cfg.torch_compile_backend or "inductor")
    if cfg.report_to not in ("none", "all"):  # `all`: those installed, as transformers reads it
        from transformers.integrations import is_mlflow_available, is_tensorboard_available, is_wandb_available

        available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                     "mlflow": is_mlflow_available}[cfg.report_to]()
        if not available:
            package = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}[cfg.report_to]
            raise ConfigError("report_to", f"`{cfg.report_to}` needs the {package} package, which is not installed",
                              f"pip install {package}, or use --report_to none (metrics.jsonl has every metric)")
    if cfg.push_to_hub:
        check_hub_upload("Drop --push_to_hub; export the run later with `rankwise export --push_to_hub`")


# ---------------------------------------------------------------------------------------------
# Environment record
# ---------------------------------------------------------------------------------------------

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
            "command": " ".join([_program_name(sys.argv[0]), *sys.argv[1:]])}


def _program_name(argv0: str) -> str:
    """The command as typed, without this machine's path to it (`.venv/bin/rankwise` → `rankwise`;
    `.../rankwise/__main__.py` → `python -m rankwise`): the run record travels, the virtualenv does not."""
    path = Path(argv0)
    return f"python -m {path.parent.name}" if path.name == "__main__.py" else path.name


def _parent_command() -> list[str]:
    """The command line of the process that started this one (Linux), else []."""
    try:
        return Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _is_accelerate_launch(command: list[str]) -> bool:
    names = [Path(part).name for part in command]
    return ("launch" in command and "accelerate" in names) or "accelerate.commands.launch" in command


def launcher() -> str:
    """How the processes were started: `accelerate launch` (which starts its processes with torch's elastic agent,
    so it is asked first), `torchrun`, or `python` (one process)."""
    if _is_accelerate_launch(_parent_command()):
        return "accelerate launch"
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return "torchrun"
    return "python"


def requested_processes(command: list[str]) -> int | None:
    """The process count an `accelerate launch` command line asks for (--num_processes, else accelerate's default
    config file), or None."""
    for i, part in enumerate(command):
        if part == "--num_processes" and i + 1 < len(command):
            return int(command[i + 1]) if command[i + 1].isdigit() else None
        if part.startswith("--num_processes="):
            value = part.split("=", 1)[1]
            return int(value) if value.isdigit() else None
    try:
        from accelerate.commands.config import default_config_file
        from accelerate.commands.config.config_args import load_config_from_file

        if "--config_file" not in command and Path(default_config_file).is_file():
            return load_config_from_file(default_config_file).num_processes
    except Exception:  # noqa: BLE001 - an unreadable accelerate config is accelerate's to report
        return None
    return None


def check_launch(processes: int) -> None:
    """Refuse a run that `accelerate launch --num_processes N` started as one process (its simple launcher, used
    without --multi_gpu, e.g. with --cpu): it would train alone at a per-device batch meant for N."""
    command = _parent_command()
    wanted = requested_processes(command) if _is_accelerate_launch(command) else None
    if wanted is not None and wanted > processes:
        raise ConfigError("num_processes", f"`accelerate launch` was asked for {wanted} processes but started "
                          f"{processes}: without --multi_gpu it starts one process (also with --cpu, whose several "
                          "processes need MPI)", f"Use `accelerate launch --multi_gpu --num_processes {wanted} -m "
                          f"rankwise train ...` (on a machine without GPUs rankwise runs them over gloo) or "
                          f"`torchrun --nproc_per_node {wanted} -m rankwise train ...`")


def seed_dropout(seed: int, process_index: int) -> None:
    """Give each process its own dropout stream: torch's generators seeded with seed + process index (the main
    process keeps the run's seed, so one process draws what it always drew). The data order does not use them
    (TrainingArguments.data_seed), so every process still reads its own shard of one shuffled order."""
    if process_index:
        torch.manual_seed((seed + process_index) % SEED_LIMIT)


def training_record(setup: Setup, args: TrainingArguments) -> dict:
    """config.json's effective training settings: what the flags resolved to on this machine."""
    cfg = setup.cfg
    return {"precision": precision(cfg), "frozen_weights_dtype": "float32" if precision(cfg) == "fp32" else
            str(HALF_DTYPES[precision(cfg)]).removeprefix("torch."), "tf32": cfg.tf32,
            "num_processes": setup.processes, "launcher": launcher(), "device": str(args.device),
            "per_device_train_batch_size": cfg.per_device_train_batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "global_batch_size": cfg.per_device_train_batch_size * setup.processes * cfg.gradient_accumulation_steps,
            "steps_per_epoch": setup.steps_per_epoch, "total_steps": setup.total_steps,
            "resumed_from": str(setup.resume_from) if setup.resume_from else None}


# ---------------------------------------------------------------------------------------------
# Optimiser: parameter groups and the divergence guard
# ---------------------------------------------------------------------------------------------

# rankwise's schedule names and the transformers scheduler each is (constant_schedule has no warm-up).
SCHEDULER_NAMES = {"linear_schedule_with_warmup": "linear", "cosine": "cosine", "constant_schedule": "constant"}


def _lr_schedule(optimizer, cfg: RunConfig, total_steps: int):
    """transformers' scheduler of --lr_scheduler, with the warm-up transformers computes (`warmup_steps`) and
    --lr_scheduler_kwargs."""
    kwargs = cfg.lr_scheduler_kwargs
    if isinstance(kwargs, str):
        kwargs = passed_options(cfg, TrainerArguments)["lr_scheduler_kwargs"]
    return get_scheduler(SCHEDULER_NAMES.get(cfg.lr_scheduler, cfg.lr_scheduler), optimizer,
                         num_warmup_steps=warmup_steps(cfg, total_steps), num_training_steps=total_steps,
                         scheduler_specific_kwargs=kwargs or None)


def _param_groups(setup: Setup) -> list[dict]:
    cfg, model = setup.cfg, setup.adapter.model
    allocator = setup.allocator
    allocation = [allocator.weights] if allocator is not None and allocator.weights.requires_grad else []
    special = {id(p) for p in allocation}
    adapters = {id(p) for p in setup.adapter.adapter_parameters()}  # on the head's layers too (every-linear)
    head_ids = {id(p) for h in setup.task.head_modules for p in _head_parameters(model, h)} - adapters
    head = [p for p in model.parameters() if p.requires_grad and id(p) in head_ids]
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids and id(p) not in special]
    groups = [{"params": body, "lr": cfg.learning_rate, "weight_decay": cfg.weight_decay, "name": "adapter"},
              {"params": head, "lr": cfg.cls_learning_rate, "weight_decay": cfg.weight_decay, "name": "head"},
              {"params": allocation, "lr": cfg.rank_allocation_lr, "weight_decay": cfg.rank_allocation_weight_decay,
               "name": "allocation"}]
    return [g for g in groups if g["params"]]


def _head_parameters(model, head: str):
    """Trainable parameters of a head module, also inside a PEFT wrapper (modules_to_save)."""
    for name, p in model.named_parameters():
        if f".{head}." in f".{name}." and p.requires_grad:
            yield p


class StepLedger:
    """The divergence guard's counters and the training loss of the current logging window, kept on the device so
    that a training step never waits for the host; read (one copy) on logging steps and in checkpoints.

    Per optimiser step: `skipped` steps in all, `consecutive` non-finite steps now, `worst` the longest such run
    since the last read (a run that reached --max_bad_steps between two logging steps is still seen), `taken` steps
    since the last train record and the sum of their losses (`window_loss`; a skipped step's loss is left out, so
    the logged loss is the mean over the steps taken)."""

    FIELDS = ("skipped", "consecutive", "worst", "taken", "window_loss")

    def __init__(self, device: torch.device, values: dict | None = None):
        values = values or {}
        # float32: exact counts up to 2^24 steps, and every accelerator has it (MPS has no float64)
        self.values = torch.tensor([float(values.get(k, 0)) for k in self.FIELDS], dtype=torch.float32,
                                   device=device)
        self.pending = torch.zeros((), dtype=torch.float32, device=device)  # the current step's loss so far

    def add_loss(self, loss: torch.Tensor) -> None:
        """A micro-batch's loss (already divided by the accumulation steps, as Trainer returns it)."""
        self.pending += loss.detach().to(self.pending)

    def record_step(self, bad: torch.Tensor) -> None:
        """One optimiser step; `bad` (a 0-dim bool on the device) says it was skipped."""
        skipped, consecutive, worst, taken, window_loss = self.values.unbind()
        bad = bad.to(self.values.dtype)
        consecutive = (consecutive + 1) * bad
        loss = torch.where(bad > 0, torch.zeros_like(self.pending), self.pending)
        self.values = torch.stack([skipped + bad, consecutive, torch.maximum(worst, consecutive), taken + 1 - bad,
                                   window_loss + loss])
        self.pending = torch.zeros_like(self.pending)

    def read(self) -> dict:
        """The counters on the host (one copy)."""
        values = to_host(self.values)
        return {k: (v if k == "window_loss" else int(v)) for k, v in zip(self.FIELDS, values)}

    def reset_window(self) -> None:
        """After a train record: a new logging window (the current run of bad steps goes on)."""
        skipped, consecutive, _, _, _ = self.values.unbind()
        zero = torch.zeros_like(skipped)
        self.values = torch.stack([skipped, consecutive, consecutive, zero, zero])


def _fused_supported(groups: list[dict]) -> bool:
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = set(_get_fused_kernels_supported_devices())
    return all(p.device.type in devices and p.is_floating_point() for g in groups for p in g["params"])


class GuardedAdamW(torch.optim.AdamW):
    """AdamW whose step is the divergence guard: a step whose gradients are not all finite is skipped and counted.
    The decision stays on the device: the fused AdamW kernel skips the update (and its step count) when `found_inf`
    is set, as it does for a GradScaler's overflow steps under --fp16, which it counts as skipped too. Under data
    parallelism the gradients are already averaged, so every process takes the same decision. `after_step(bad)`
    runs after every step with the device flag (the method's hooks, e.g. AdaLoRA's rank allocation, which reads
    the gradients and must leave a skipped step out)."""

    def __init__(self, groups: list[dict], after_step=None, ledger_values: dict | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, fused: bool = True):
        self.fused = fused and _fused_supported(groups)  # --optim adamw_torch: torch's unfused AdamW
        super().__init__(groups, betas=betas, eps=eps, fused=True if self.fused else None)
        self.after_step = after_step
        device = next(p.device for g in groups for p in g["params"])
        self.ledger = StepLedger(device, ledger_values)

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            bad = ~torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
        else:
            bad = torch.zeros((), dtype=torch.bool, device=self.ledger.values.device)
        overflow = getattr(self, "found_inf", None)  # set by a GradScaler (fp16) just before this step
        if overflow is not None:
            bad = bad | (overflow.to(bad.device) > 0)
        loss = None
        if self.fused:
            self.found_inf = bad.to(torch.float32)
            loss = super().step(closure)
        elif not bool(bad):  # without the fused kernel the skip is decided on the host (one synchronisation)
            loss = super().step(closure)
        self.found_inf = None
        self.ledger.record_step(bad)
        if self.after_step is not None:
            self.after_step(bad)
        return loss


# ---------------------------------------------------------------------------------------------
# Learned allocation on the model
# ---------------------------------------------------------------------------------------------

def attach_allocator(adapter: AdapterSet, allocator: RankAllocator, hook: bool = True) -> None:
    """Make the allocator a submodule of the model (one parameter set for checkpoints and device placement).
    `hook`: also set the masks of `allocator.step` before every forward (soft while training in the soft phase, hard
    otherwise), for training loops that know nothing of the allocator (rankwise.wrap). `rankwise train` sets them
    itself, once per micro-batch and outside the model's forward, so that a compiled model sees a mask tensor, not
    the step counter (which would recompile it every step)."""
    adapter.model.add_module(ALLOCATOR_MODULE, allocator)
    allocator.hook = None
    if hook:
        def set_masks(module, _args):
            adapter.set_keep(allocator.keep(allocator.step, training=module.training))

        allocator.hook = adapter.model.register_forward_pre_hook(set_masks)


def detach_allocator(adapter: AdapterSet, allocator: RankAllocator) -> None:
    if allocator.hook is not None:
        allocator.hook.remove()
    del adapter.model._modules[ALLOCATOR_MODULE]


def loader_options(workers: int, device) -> dict:
    """DataLoader options for `device`: pinned memory on a GPU (so batches copy without blocking), and `workers`
    persistent worker processes."""
    options = {"num_workers": workers, "pin_memory": torch.device(device).type == "cuda"}
    if workers:
        options["persistent_workers"] = True
    return options


def ignore_in_ddp(model, names: list[str]) -> None:
    """Leave parameters out of DistributedDataParallel's gradient reduction (the allocation weights: they take no
    part in the forward in the discrete phase, and DDP would otherwise need find_unused_parameters for the whole
    run); their gradients are averaged by `RankwiseTrainer` instead."""
    from torch.nn.parallel import DistributedDataParallel

    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)


# ---------------------------------------------------------------------------------------------
# The Trainer
# ---------------------------------------------------------------------------------------------

class RankwiseTrainer(Trainer):
    """`Trainer` with rankwise's optimiser, schedule, evaluation and checkpoint contents (see the module
    docstring). `run` is the run directory on the main process, None on the others."""

    def __init__(self, setup: Setup, args: TrainingArguments, run: RunDir | None):
        self.setup, self.run = setup, run
        self.method_hooks = setup.adapter.method.training_hooks(setup.adapter, setup.cfg)
        self.evaluations: list[dict] = []
        self.status, self.message = "completed", None
        self.weights_step: int | None = None  # the step of the weights loaded at the end (best model)
        self._resumed: dict | None = None
        self._ledger_at_save: dict | None = None
        self._eval_loaders = None
        callbacks = [RunDirCallback(self)]
        if setup.cfg.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(setup.cfg.early_stopping_patience))
        super().__init__(model=setup.adapter.model, args=args, train_dataset=setup.task.train_features,
                         eval_dataset=setup.task.eval_sets["eval"], data_collator=setup.task.collate,
                         callbacks=callbacks)  # eval_dataset: Trainer asks for one; `evaluate` uses every dev set
        self.model_accepts_loss_kwargs = False  # the task's loss is the model's mean loss, as without Trainer
        seed_dropout(setup.cfg.seed, self.accelerator.process_index)  # after Trainer seeded every process alike
        self.remove_callback(PrinterCallback)
        if self.pop_callback(ProgressCallback) is not None and not setup.cfg.quiet:
            self.add_callback(QuietProgressCallback())

    # --- optimiser and schedule ---------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            resumed = self._resumed or {}
            ledger = resumed.get("ledger") or {"skipped": resumed.get("skipped_steps", 0),  # older checkpoints
                                               "consecutive": resumed.get("consecutive_bad_steps", 0)}
            cfg = self.setup.cfg
            self.optimizer = GuardedAdamW(_param_groups(self.setup), after_step=self._after_optimizer_step,
                                          betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
                                          fused=cfg.optim == "adamw_torch_fused", ledger_values=ledger)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = _lr_schedule(optimizer or self.optimizer, self.setup.cfg, num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    @property
    def guard(self) -> GuardedAdamW:
        return self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer

    def _after_optimizer_step(self, skipped: torch.Tensor) -> None:
        self.method_hooks.after_optimizer_step(self.state.global_step, skipped)

    def ledger_counts(self) -> dict:
        """The guard's counters on the host (one copy; every process calls it together under data parallelism,
        which averages the window's loss over the processes)."""
        if self.optimizer is None:
            return {name: 0 for name in StepLedger.FIELDS}
        ledger = self.guard.ledger
        if self.setup.processes > 1:
            averaged = self.accelerator.reduce(ledger.values.clone(), reduction="mean")
            return dict(zip(StepLedger.FIELDS, [v if k == "window_loss" else int(round(v))
                                                 for k, v in zip(StepLedger.FIELDS, to_host(averaged))]))
        return ledger.read()

    # --- the training step ----------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        """Trainer's step with the rank masks of this optimiser step set first (learned allocation), the loss kept
        on the device for the train record, and the allocation weights' gradients averaged over the processes."""
        self.set_masks(training=True)
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.guard.ledger.add_loss(loss)
        if self.setup.processes > 1 and self.accelerator.sync_gradients:
            self._average_allocation_gradients()
        return loss

    def set_masks(self, training: bool) -> None:
        allocator = self.setup.allocator
        if allocator is not None:
            self.setup.adapter.set_keep(allocator.keep(allocator.step, training=training))

    def _average_allocation_gradients(self) -> None:
        """DDP leaves the allocation weights out (`ignore_in_ddp`): average their gradients here, on the last
        micro-batch of the step and before clipping, as DDP would."""
        allocator = self.setup.allocator
        if allocator is None or allocator.weights.grad is None:
            return
        grad = allocator.weights.grad
        torch.distributed.all_reduce(grad)
        grad.div_(self.setup.processes)

    # --- evaluation ---------------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """The task's metrics over exactly its dev set(s), with hard ranks; one `eval` record in metrics.jsonl."""
        task = self.setup.task
        if self._eval_loaders is None:
            self._eval_loaders = {split: self.accelerator.prepare(torch.utils.data.DataLoader(
                features, batch_size=self.args.per_device_eval_batch_size, collate_fn=task.collate,
                **loader_options(self.args.dataloader_num_workers, self.args.device)))
                for split, features in task.eval_sets.items()}
        self.set_masks(training=False)
        with self.method_hooks.evaluating():
            metrics = task.evaluate(self.model, self._eval_loaders, self.accelerator,
                                    self.args.eval_accumulation_steps)
        epoch = self.state.epoch or 0.0
        record = {"type": "eval", "step": self.state.global_step,
                  "epoch": int(round(epoch)) if abs(epoch - round(epoch)) < 1e-6 else round(epoch, 4), **metrics,
                  "skipped_steps": self.ledger_counts()["skipped"]}
        if self.run is not None:
            self.run.append_jsonl("metrics.jsonl", record)
        self.evaluations.append(record)
        if not all(math.isfinite(v) for v in metrics.values()):
            bad = ", ".join(k for k, v in metrics.items() if not math.isfinite(v))
            self.end_as_diverged(f"evaluation at step {self.state.global_step} gave non-finite values ({bad}); the "
                                 f"learning rate ({self.setup.cfg.learning_rate:g}) is likely too high")
        elif not self.setup.cfg.quiet and self.is_world_process_zero():
            print(self._eval_line(record, metrics), flush=True)
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _eval_line(self, record: dict, metrics: dict) -> str:
        main = self.setup.task.main_metric
        pick = max if self.setup.task.greater_is_better else min
        best = pick(self.evaluations, key=lambda r: r[main])
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        return (f"epoch {record['epoch']} step {record['step']}  {shown}  (best {main} {best[main]:.4f} at epoch "
                f"{best['epoch']})")

    def log_allocation(self, step: int, extra: dict | None = None) -> None:
        """One allocation.jsonl record at `step` (main process): the allocator's state, the method's own (AdaLoRA),
        or once, at step 0, ranks fixed before training (EVA)."""
        if self.run is None:
            return
        setup = self.setup
        record = setup.allocator.state(step) if setup.allocator is not None else self.method_hooks.allocation_record(step)
        if record is None and step == 0:
            source = setup.adapter.method.allocation_source(setup.cfg)
            if source is None:
                return
            ranks = dict(zip([t.name for t in setup.plan.targets], setup.plan.allocated_ranks))
            record = {"step": 0, "budget": sum(ranks.values()), "budget_unit": "sum of ranks", "discrete": True,
                      "budget_used": sum(ranks.values()), "source": source, "continuous": ranks, "hard": ranks}
        if record is not None:
            self.run.append_jsonl("allocation.jsonl", {"epoch": round(step / setup.steps_per_epoch, 4), **record,
                                                       **(extra or {})})
            if setup.cfg.report_to in ("wandb", "all"):  # α, budget and every matrix's ranks, as the study's W&B plots read them
                from .wandb_log import log_allocation_to_wandb

                log_allocation_to_wandb(record, step, setup.allocator)

    def log_final_allocation(self, step: int) -> None:
        """The allocation record of the weights the run ends with, unless the record of `step` already says it:
        after --load_best_model_at_end it is the best evaluation's allocation (`weights_step`)."""
        if self.run is None:
            return
        path = self.run.file("allocation.jsonl")
        last = read_jsonl(path)[-1]["step"] if path.exists() and path.stat().st_size else None
        if last != step or self.weights_step is not None:
            self.log_allocation(step, {"weights_step": self.weights_step} if self.weights_step is not None else None)

    def end_as_diverged(self, message: str) -> None:
        self.status, self.message = "diverged", message
        self.control.should_training_stop = True

    # --- checkpoints: trainable tensors and rankwise's state, not the whole model -------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        directory = Path(output_dir or self.args.output_dir)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: p.detach().cpu().contiguous() for name, p in self.model.named_parameters()
                   if p.requires_grad}
        allocator = self.setup.allocator
        if allocator is not None:
            tensors["rankwise.allocator_generator"] = allocator.noise_state()
        method_tensors, method_values = self.method_hooks.checkpoint_state()  # AdaLoRA's allocator
        tensors.update({METHOD_STATE + k: v.detach().cpu().contiguous() for k, v in method_tensors.items()})
        save_file(tensors, str(directory / TRAINABLE_FILE))
        # The guard's counters and the open logging window, so a resumed run logs what this one would have. Read by
        # every process in _save_checkpoint (a collective under data parallelism; only the main process gets here).
        ledger = self._ledger_at_save or self.ledger_counts()
        state = {"config": self.setup.cfg.to_dict(), "step": self.state.global_step,
                 "skipped_steps": ledger["skipped"], "consecutive_bad_steps": ledger["consecutive"],
                 "ledger": ledger, "method_state": method_values, "evaluations": self.evaluations,
                 "tensors": {name: list(t.shape) for name, t in tensors.items()}}  # checked before a resume
        (directory / STATE_FILE).write_text(json.dumps(state, indent=2, default=str))

    def _save_checkpoint(self, model, trial):
        self._ledger_at_save = self.ledger_counts()
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._ledger_at_save = None

    def _load_trainable(self, checkpoint: Path) -> dict:
        try:
            tensors = load_file(str(checkpoint / TRAINABLE_FILE))
        except Exception as exc:  # safetensors' errors have no common base; resolve_checkpoint checked it already
            raise RunDirError(f"checkpoint {checkpoint}: {TRAINABLE_FILE} cannot be read ({exc})") from None
        method_tensors = {k[len(METHOD_STATE):]: tensors.pop(k) for k in list(tensors) if k.startswith(METHOD_STATE)}
        generator = tensors.pop("rankwise.allocator_generator", None)
        if generator is not None and self.setup.allocator is not None:
            self.setup.allocator.load_noise_state(generator)
        parameters = dict(self.model.named_parameters())
        missing = sorted(set(name for name, p in parameters.items() if p.requires_grad) - set(tensors))
        if missing:
            raise RunDirError(f"checkpoint {checkpoint} lacks `{missing[0]}` ({len(missing)} tensors): it belongs to "
                              "another run")
        with torch.no_grad():
            for name, tensor in tensors.items():
                parameters[name].copy_(tensor)
        state = json.loads((checkpoint / STATE_FILE).read_text())
        if state.get("method_state") is not None:  # checkpoints written before it have none
            self.method_hooks.load_checkpoint_state(method_tensors, state["method_state"])
        return state

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        self._resumed = self._load_trainable(Path(resume_from_checkpoint))
        self.evaluations = list(self._resumed.get("evaluations", []))  # the summary's best counts them too

    def _load_best_model(self) -> None:
        state = self._load_trainable(Path(self.state.best_model_checkpoint))
        self.weights_step = state["step"]


class QuietProgressCallback(ProgressCallback):
    """The progress bar, without printing every log dict (metrics go to metrics.jsonl and one line per eval)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class RunDirCallback(TrainerCallback):
    """The allocator's step, train records in metrics.jsonl and allocation.jsonl, and the divergence stop."""

    def __init__(self, trainer: RankwiseTrainer):
        self.trainer = trainer
        self.save_at_epoch_end = False

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.trainer.log_allocation(0)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.trainer.setup.allocator is not None:
            self.trainer.setup.allocator.step = state.global_step

    def on_step_end(self, args, state, control, **kwargs):
        """A checkpoint due on an epoch's last step (--save_strategy steps) waits for the epoch's end, so it holds
        the epoch's train record and evaluation: Trainer saves a step's checkpoint before it ends the epoch, and a
        run resumed from one written in between would never make them."""
        if control.should_save and state.global_step % self.trainer.setup.steps_per_epoch == 0:
            control.should_save = False
            self.save_at_epoch_end = True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.trainer.status != "completed":  # a diverged run is not evaluated or checkpointed again
            control.should_evaluate = control.should_save = False
        else:  # a train record closes every epoch, so per-epoch training losses exist however short the epoch
            control.should_log = True
            control.should_save = control.should_save or self.save_at_epoch_end
        self.save_at_epoch_end = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        """On logging steps (and at each epoch's end): the train record, the allocation record, and the divergence
        check. The guard's counters are read here, not after every step, so the steps between cost no host
        synchronisation; a run of --max_bad_steps bad steps is caught at the next logging step."""
        trainer = self.trainer
        if not logs or "loss" not in logs:
            return
        counts = trainer.ledger_counts()
        trainer.guard.ledger.reset_window()
        if trainer.run is not None and counts["taken"]:  # all steps since the last record skipped: no loss
            record = {"type": "train", "step": state.global_step, "epoch": round(state.epoch, 4),
                      "loss": counts["window_loss"] / counts["taken"], "learning_rate": logs.get("learning_rate"),
                      "grad_norm": logs.get("grad_norm"), "skipped_steps": counts["skipped"]}
            trainer.run.append_jsonl("metrics.jsonl", record)
            trainer.log_allocation(state.global_step)
        if counts["worst"] >= trainer.setup.cfg.max_bad_steps:
            self._diverged(state, counts)
            control.should_evaluate = control.should_save = False

    def _diverged(self, state, counts: dict) -> None:
        trainer, cfg = self.trainer, self.trainer.setup.cfg
        scale = max(trainer.setup.adapter.scales(), default=None)
        kind = "alpha/sqrt(r)" if cfg.alpha_policy == "rslora" else "alpha/r"
        epoch = math.ceil(state.epoch or 0)
        trainer.end_as_diverged(
            f"loss or gradient norm was non-finite for {counts['worst']} consecutive steps (up to step "
            f"{state.global_step}, epoch {epoch}); {counts['skipped']} steps skipped in all. Likely cause: the "
            f"learning rate ({cfg.learning_rate:g}) is too high"
            + (f" or the adapter scale {kind} (up to {scale:g}) is too large" if scale else "")
            + ". Lower it, or raise --max_bad_steps to tolerate more")


# ---------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------

def training_arguments(setup: Setup, output_dir: Path) -> TrainingArguments:
    """transformers' TrainingArguments of a run: rankwise's options, what rankwise sets itself (its own collation,
    labels, DDP and sync-free settings), and every other TrainingArguments flag the run gave (`passed_options`)."""
    cfg, task = setup.cfg, setup.task
    metric = cfg.metric_for_best_model or task.main_metric
    greater = task.greater_is_better if cfg.metric_for_best_model is None else \
        not cfg.metric_for_best_model.removeprefix("eval_") in ("loss", "perplexity")
    gpu = torch.cuda.is_available() and not cfg.use_cpu
    values = dict(
        output_dir=str(output_dir), num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, eval_strategy=cfg.eval_strategy,
        eval_steps=cfg.eval_steps, save_strategy=cfg.save_strategy, save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, load_best_model_at_end=cfg.load_best_model_at_end,
        metric_for_best_model=metric if cfg.load_best_model_at_end or cfg.save_strategy == "best" else None,
        greater_is_better=greater, bf16=cfg.bf16, fp16=cfg.fp16, tf32=cfg.tf32 or None,
        activation_checkpointing=cfg.gradient_checkpointing, dataloader_num_workers=cfg.dataloader_num_workers,
        torch_compile=cfg.torch_compile, torch_compile_backend=cfg.torch_compile_backend,
        torch_compile_mode=cfg.torch_compile_mode, report_to=[] if cfg.report_to == "none" else cfg.report_to,
        disable_tqdm=cfg.quiet, remove_unused_columns=False, label_names=["labels"],
        ddp_find_unused_parameters=False, use_cpu=not gpu,
        # Sync-free steps on a GPU: rankwise's guard skips non-finite steps itself (transformers' filter reads
        # every step's loss on the host), and pinned batches copy without blocking.
        logging_nan_inf_filter=False, dataloader_pin_memory=gpu, accelerator_config={"non_blocking": gpu})
    values.update(passed_options(cfg, TrainerArguments))  # the run's other TrainingArguments flags, as given
    try:
        return TrainingArguments(**values)
    except ValueError as exc:  # an option this transformers or this device refuses
        raise ConfigError("training options", str(exc).strip().splitlines()[0]) from None


def train(cfg: RunConfig, setup: Setup | None = None) -> dict:
    """Run one training job and return its summary (also written to <output_dir>/summary.json).

    The main process holds the output directory's lock for the whole run. A crash is recorded as status
    `failed`; with --overwrite_output_dir the run is written beside the old one and swapped in at the end,
    so the old run stays intact until then (and for good if this one crashes)."""
    setup = setup or setup_run(cfg)
    state = process_state()
    if not state.is_main_process:
        return _train(setup, _shared(None), None)
    with contextlib.ExitStack() as held:
        try:
            claim = held.enter_context(claim_output_dir(setup.cfg, resume_from=setup.resume_from))
        except RankwiseError as exc:
            _shared(exc)  # the other processes stop too
            raise
        _shared(claim.write_to)
        try:
            summary = _train(setup, claim.write_to, claim)
        except BaseException as exc:
            _record_failure(setup, claim, exc)
            raise
        claim.commit()
    return summary


def _shared(value):
    """`value` from the main process on every process (the run directory to write to, or the error that stops)."""
    if process_state().num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    value = broadcast_object_list([value])[0]
    if isinstance(value, BaseException):
        raise value
    return Path(value)


def _record_failure(setup: Setup, claim: Claim, exc: BaseException) -> None:
    if claim.replacing:
        claim.abandon()
    elif not claim.run.file("summary.json").exists() and isinstance(exc, Exception):
        cfg = setup.cfg
        claim.run.write_summary({"status": "failed", "message": f"{type(exc).__name__}: {exc}", "task": cfg.task,
                                 "method": cfg.method, "allocation": cfg.allocation, "seed": cfg.seed})


def _train(setup: Setup, write_to: Path, claim: Claim | None) -> dict:
    cfg, plan, adapter, allocator = setup.cfg, setup.plan, setup.adapter, setup.allocator
    run = claim.run if claim is not None else None
    if cfg.report_to in ("tensorboard", "all"):
        if cfg.logging_dir:  # the flag over the environment, as transformers 5 reads it
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(cfg.logging_dir)
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(write_to / "logs"))
    if cfg.report_to in ("wandb", "all"):
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(write_to))
    args = training_arguments(setup, write_to)
    if run is not None:
        run.write_json("config.json", {"config": cfg.to_dict(), "environment": environment(),
                                       "data": setup.task.info, "plan": plan.totals(),
                                       "training": training_record(setup, args),
                                       "num_processes": setup.processes})
        run.write_json("ranks.json", plan.to_dict())
        if setup.resume_from is not None:
            _keep_records_until(run, json.loads((setup.resume_from / STATE_FILE).read_text())["step"])
    if allocator is not None:
        allocator.step = 0
        attach_allocator(adapter, allocator, hook=False)  # RankwiseTrainer sets the masks
        if setup.processes > 1 and allocator.weights.requires_grad:
            ignore_in_ddp(adapter.model, [f"{ALLOCATOR_MODULE}.weights"])
    if setup.resume_from is not None:
        args.eval_on_start = False  # the interrupted run made the evaluation at step 0; Trainer would add another
    trainer = RankwiseTrainer(setup, args, run)
    started = time.time()
    trainer.train(resume_from_checkpoint=str(setup.resume_from) if setup.resume_from else None)
    wall = time.time() - started
    if allocator is not None:
        detach_allocator(adapter, allocator)
    return _finish(setup, trainer, run, wall)


def _keep_records_until(run: RunDir, step: int) -> None:
    """Resuming from the checkpoint of `step`: drop the records a killed run wrote after it (they come again). A
    checkpoint is written after everything its step logs and evaluates (`RunDirCallback.on_step_end`)."""
    for name in ("metrics.jsonl", "allocation.jsonl"):
        path = run.file(name)
        if path.exists():
            write_jsonl_atomic(path, [r for r in read_jsonl(path) if r.get("step", 0) <= step])


def _finish(setup: Setup, trainer: RankwiseTrainer, run: RunDir | None, wall: float) -> dict:
    """The run's summary (and on the main process its final ranks, weights and summary.json); every process
    returns the summary."""
    hard_ranks, ranks_changed = _final_ranks(setup, trainer)
    summary = _summary(setup, trainer, hard_ranks, wall)
    if run is not None:
        _write_results(setup, trainer, run, hard_ranks, ranks_changed, summary)
    trainer.accelerator.wait_for_everyone()
    return summary


def _final_ranks(setup: Setup, trainer: RankwiseTrainer) -> tuple[list[int], bool]:
    """(the ranks of the weights the run ends with, whether training changed them): learned allocation's hard
    ranks at the saved weights' step (masks set to them), AdaLoRA's pruned ranks, else the plan's."""
    allocator, step = setup.allocator, trainer.state.global_step
    weights_step = trainer.weights_step if trainer.weights_step is not None else step
    method_ranks = trainer.method_hooks.final_ranks()  # AdaLoRA: the ranks it pruned to
    if allocator is not None:
        hard_ranks = allocator.hard_ranks(allocator.schedule.memory(weights_step))
        setup.adapter.set_keep(allocator.keep(weights_step, training=False))
    elif method_ranks is not None:
        hard_ranks = method_ranks
    else:
        return setup.plan.allocated_ranks, False
    trainer.log_final_allocation(step)
    return hard_ranks, True


def _summary(setup: Setup, trainer: RankwiseTrainer, hard_ranks: list[int], wall: float) -> dict:
    cfg, task, plan, adapter, allocator = setup.cfg, setup.task, setup.plan, setup.adapter, setup.allocator
    method, step = adapter.method, trainer.state.global_step
    weights_step = trainer.weights_step if trainer.weights_step is not None else step
    evaluations = [r for r in trainer.evaluations if r["step"] > 0]  # --eval_on_start's is the untrained model's
    main = task.main_metric
    pick = max if task.greater_is_better else min
    best = pick(evaluations, key=lambda r: r[main]) if evaluations else None
    at_weights = next((r for r in reversed(evaluations) if r["step"] == weights_step), None)
    counts = trainer.ledger_counts()
    summary = {
        "status": trainer.status, "message": trainer.message, "task": cfg.task, "method": cfg.method,
        "allocation": cfg.allocation, "seed": cfg.seed, "main_metric": main, "greater_is_better": task.greater_is_better,
        "best": best, "best_epoch": best["epoch"] if best else None, "best_step": best["step"] if best else None,
        "final": evaluations[-1] if evaluations else None, "epochs_completed": len(evaluations)
        if cfg.eval_strategy == "epoch" else int(step // setup.steps_per_epoch), "steps": step,
        "skipped_steps": counts["skipped"], "wall_time_s": round(wall, 2),
        "steps_per_second": round(step / wall, 4) if wall > 0 else None,
        "saved_weights": {"which": "best" if trainer.weights_step is not None else "final", "step": weights_step,
                          "epoch": at_weights["epoch"] if at_weights else round(weights_step / setup.steps_per_epoch, 4),
                          "metrics": {k: v for k, v in at_weights.items() if k.startswith("eval_")}
                          if at_weights else None},
        "trainable_parameters": {
            "adapter": adapter.num_adapter_parameters() if method.trains_adapter else
            sum(p.numel() for g in _param_groups(setup) if g["name"] == "adapter" for p in g["params"]),
            "head": plan.head_parameters,
            "allocation": allocator.weights.numel() if allocator is not None and allocator.weights.requires_grad else 0,
        },
        "model_parameters": plan.model_parameters,
        "num_processes": setup.processes,
    }
    if method.trains_adapter:
        summary["trainable_parameters"]["adapter_at_hard_ranks"] = method.parameters(plan.targets, hard_ranks)
        summary["hard_ranks"] = dict(zip([t.name for t in plan.targets], hard_ranks))
    summary.update(method.summary_fields(plan, hard_ranks))
    return summary


def _write_results(setup: Setup, trainer: RankwiseTrainer, run: RunDir, hard_ranks: list[int], ranks_changed: bool,
                   summary: dict) -> None:
    """ranks.json with the final ranks, the weights, the task's extra artifacts, summary.json (then the Hub
    upload); checkpoints removed once the run completed."""
    cfg, completed = setup.cfg, trainer.status == "completed"
    if ranks_changed:
        ranks = setup.plan.to_dict()
        for row, rank in zip(ranks["matrices"], hard_ranks):
            row["rank"] = rank
        ranks["hard_ranks_final"] = True
        run.write_json("ranks.json", ranks)
    if cfg.save_model and completed:
        _save_weights(run, setup, hard_ranks)
    if completed and setup.task.finalize is not None:
        with autocast(cfg, trainer.args.device):
            setup.task.finalize(setup.adapter.model, run.path)
    if completed and not cfg.keep_checkpoints:
        for checkpoint in checkpoints(run.path, complete=False):
            shutil.rmtree(checkpoint)
    run.write_summary(summary)
    if cfg.push_to_hub and completed:  # after the summary: a failed upload keeps the run
        push_export(run.file(setup.adapter.method.weights_dir), cfg.hub_model_id or run.path.name)


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


def run_training(cfg: RunConfig) -> dict:
    """Set up (every check, nothing written) and train."""
    setup = setup_run(cfg)
    return train(setup.cfg, setup)
