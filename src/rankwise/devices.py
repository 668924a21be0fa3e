"""Where a run's tensors live and what crosses between the device and the host.

- `to_host`: the one way rankwise's own code reads device values on the host (hard-rank rounding, log records).
  Every call is a host synchronisation on a GPU, so the training step never makes one: it runs only on logging
  steps, at evaluation and when a phase changes. Tests count its calls (and replace it to run the allocation path
  on the `meta` device, which has no values).
- `half_precision_base`: with --bf16/--fp16 the frozen weights are held in that dtype (the trainable ones stay in
  float32, as PEFT keeps adapter weights in float32 over a half-precision base: `autocast_adapter_dtype`).
- `GpuPlan` / `assign_gpus`: many small runs per GPU in a sweep (local workers sharing a device, one device per
  worker on a multi-GPU host), and the check that they fit in its memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError

HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def to_host(tensor: torch.Tensor) -> list:
    """`tensor`'s values as (nested) Python numbers: one device-to-host copy."""
    return tensor.detach().tolist()


class HostBatches:
    """Per-batch tensors of an evaluation, held on their device and moved to the host every `every` batches
    (transformers' --eval_accumulation_steps) or once at the end (None): no host sync per batch."""

    def __init__(self, every: int | None = None):
        self.every = every
        self.pending: list[tuple[torch.Tensor, ...]] = []
        self.moved: list[tuple[torch.Tensor, ...]] = []

    def add(self, *tensors: torch.Tensor) -> None:
        self.pending.append(tuple(t.detach() for t in tensors))
        if self.every and len(self.pending) >= self.every:
            self._move()

    def _move(self) -> None:
        if self.pending:
            self.moved.append(tuple(torch.cat(parts).cpu() for parts in zip(*self.pending)))
            self.pending = []

    def result(self, fields: int) -> tuple[torch.Tensor, ...]:
        """Each of the `fields` values over every batch, concatenated on the host (empty without batches)."""
        self._move()
        return tuple(torch.cat(parts) for parts in zip(*self.moved)) if self.moved else \
            tuple(torch.zeros(0) for _ in range(fields))


def half_precision_base(model: nn.Module, precision: str, keep_in_fp32: list[str] | None = None) -> int:
    """Hold `model`'s frozen floating-point parameters in `precision`'s dtype (`bf16`, `fp16`), in place. Trainable
    parameters (adapters, head, allocation weights) stay in float32 for the optimiser, as PEFT keeps adapter
    weights over a half-precision base (`autocast_adapter_dtype`); buffers stay as they are (LoRA-XS's frozen SVD
    factors are small and multiply float32 R; rotary frequencies need float32), and so do the modules a model
    keeps in float32 (`keep_in_fp32`, transformers' `_keep_in_fp32_modules`). Returns the bytes saved."""
    dtype = HALF_DTYPES[precision]
    keep = tuple(keep_in_fp32 or ())
    saved = 0
    for name, p in model.named_parameters():
        if p.requires_grad or not p.is_floating_point() or p.dtype == dtype or any(k in name for k in keep):
            continue
        saved += p.numel() * (p.element_size() - dtype.itemsize)
        p.data = p.data.to(dtype)
    return saved


# ---------------------------------------------------------------------------------------------
# Many runs per GPU (sweeps)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuPlan:
    """How a sweep's parallel runs share the GPUs: `workers` runs at once, worker k on device `devices[k]`."""

    workers: int
    devices: tuple[int, ...]  # one CUDA device index per worker
    runs_per_gpu: int

    def visible_devices(self, worker: int) -> str:
        """CUDA_VISIBLE_DEVICES for worker `worker` (0-based): the run sees its GPU as cuda:0."""
        return str(self.devices[worker % len(self.devices)])


def assign_gpus(gpus: int, runs_per_gpu: int, jobs: int | None = None) -> GpuPlan:
    """Spread parallel runs over `gpus` devices, `runs_per_gpu` at a time on each (round robin, so every device
    gets work before any gets a second run). `jobs`: the number of parallel runs (default gpus × runs_per_gpu,
    at most that)."""
    if gpus < 1:
        raise ConfigError("runs_per_gpu", "needs a CUDA GPU, and none is visible",
                          "Drop --runs_per_gpu (runs then share the CPU cores: --jobs), or run on a GPU machine")
    if runs_per_gpu < 1:
        raise ConfigError("runs_per_gpu", f"must be a positive integer, got {runs_per_gpu}")
    capacity = gpus * runs_per_gpu
    workers = capacity if jobs is None else jobs
    if workers > capacity:
        raise ConfigError("jobs", f"({jobs}) asks for more parallel runs than --runs_per_gpu {runs_per_gpu} on "
                          f"{gpus} GPU(s) allow ({capacity})", f"Use --jobs {capacity} or less, or raise "
                          "--runs_per_gpu")
    return GpuPlan(workers, tuple(k % gpus for k in range(workers)), runs_per_gpu)


def run_memory_estimate(model_parameters: int, trainable_parameters: int, precision: str, batch_tokens: int,
                        hidden_size: int, layers: int) -> int:
    """Bytes one training run needs on its GPU, roughly and on the high side: the frozen weights in the run's
    dtype, the trainable ones with their gradient and AdamW's two moments in float32, the activations autograd
    keeps (about 34 values per token per hidden unit per layer, as in the Megatron activation-memory estimate,
    attention scores left out), and the CUDA context (about 500 MiB)."""
    weight_bytes = 2 if precision in HALF_DTYPES else 4
    activations = 34 * batch_tokens * hidden_size * layers * weight_bytes
    return int(model_parameters * weight_bytes + trainable_parameters * 16 + activations + 500 * 2**20)


def check_runs_fit(runs_per_gpu: int, run_bytes: int, device_bytes: int, device_name: str) -> None:
    """ConfigError when `runs_per_gpu` runs of `run_bytes` each do not fit in 90% of a device's memory."""
    usable = int(0.9 * device_bytes)
    fit = max(0, usable // max(run_bytes, 1))
    if runs_per_gpu > fit:
        raise ConfigError("runs_per_gpu", f"({runs_per_gpu}) runs need about {_gib(runs_per_gpu * run_bytes)} on "
                          f"{device_name}, which has {_gib(device_bytes)} ({_gib(run_bytes)} per run: weights, "
                          "optimiser state and activations)", f"Use --runs_per_gpu {fit} or less" if fit else
                          "Lower --per_device_train_batch_size or --max_seq_length, or use --bf16")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def cuda_memory() -> tuple[int, str]:
    """(total bytes, name) of the first visible CUDA device."""
    properties = torch.cuda.get_device_properties(0)
    return properties.total_memory, properties.name
