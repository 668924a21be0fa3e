"""Running a sweep's configs: in this process, in local worker processes (threads split between them, GPUs
assigned), or as Ray tasks; finished runs skipped, conflicts kept, progress printed, and every worker stopped
when the sweep stops however it ends."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from .. import train
from ..config import RunConfig
from ..devices import GpuPlan, assign_gpus, check_runs_fit, cuda_memory, run_memory_estimate
from ..errors import ConfigError, RankwiseError
from ..methods import get_method
from ..planning import build_plan, meta_model
from ..runs.state import checkpoints, config_conflicts, inspect, run_lock
from ..stopping import RayReaper, claim_sigterm, die_with_driver, driver_identity, stop_on_sigterm

BACKENDS = ("local", "ray")


def _finished_record(cfg: RunConfig) -> dict | None:
    """The record of a finished run that needs no running: skipped, or failed when the directory holds a
    finished run of another config (kept as it is). None when the run must be run."""
    state = inspect(cfg.output_dir)
    if state.kind != "finished":
        return None
    conflicts = config_conflicts(cfg)
    if conflicts:
        return _record(cfg, "failed", f"`{cfg.output_dir}` holds a finished run of another config ("
                       + "; ".join(conflicts) + "). It was kept as it is: move it away to run this config there, "
                       "or give the sweep another --output_dir")
    return _record(cfg, "skipped", "finished", state.summary)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_run(jobs: int, cores: int | None = None) -> int:
    """Torch threads per run so `jobs` parallel runs do not oversubscribe the cores."""
    return max(1, (cores or usable_cores()) // max(1, jobs))


def _record(cfg: RunConfig, status: str, message: str | None = None, summary: dict | None = None) -> dict:
    summary = summary or {}
    metric = summary.get("main_metric")
    best = (summary.get("best") or {}).get(metric) if metric else None
    return {"name": Path(cfg.output_dir).name, "output_dir": cfg.output_dir, "status": status,
            "message": message if message is not None else summary.get("message"), "seed": cfg.seed,
            "main_metric": metric, "best": best, "best_epoch": summary.get("best_epoch"),
            "wall_time_s": summary.get("wall_time_s")}


def run_one(cfg: RunConfig) -> dict:
    """Run one config unless it is finished or running elsewhere; never raises for a failed run. The record
    also says how many torch threads the run had (`threads`)."""
    import torch

    record = _run_one(cfg)
    record["threads"] = torch.get_num_threads()
    record["visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")  # the GPU a sweep gave this run, if any
    return record


def _run_one(cfg: RunConfig) -> dict:
    run_dir = Path(cfg.output_dir)
    with run_lock(run_dir) as locked:
        if not locked:
            return _record(cfg, "skipped", "another process is running this config right now")
        done = _finished_record(cfg)
        if done is not None:
            return done
        state = inspect(run_dir)
        if state.kind in ("unfinished", "failed") and checkpoints(run_dir) and not config_conflicts(cfg) \
                and not cfg.save_only_model:  # its checkpoints cannot resume: the run starts over
            cfg = dataclasses.replace(cfg, resume_from_checkpoint="true")  # go on from its last checkpoint
        try:
            summary = train.run_training(cfg)
        except RankwiseError as exc:
            return _record(cfg, "failed", f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # one failed run must not cost the sweep
            traceback.print_exc(file=sys.stderr)
            return _record(cfg, "failed", f"{type(exc).__name__}: {exc}"[:2000])
    return _record(cfg, summary["status"], summary=summary)


def _set_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)


def _die_with_parent() -> None:
    """A worker must not outlive its sweep (a killed sweep's orphans would keep writing run directories)."""
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker_main(threads: int, conn) -> None:
    """A local worker process (spawned, so torch starts fresh with `threads` threads): runs the configs the
    sweep sends, one at a time, and answers each with its record; None ends it."""
    _die_with_parent()
    _set_threads(threads)
    while True:
        cfg_dict = conn.recv()
        if cfg_dict is None:
            break
        cfg = RunConfig(**cfg_dict)
        try:
            record = run_one(cfg)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which records the run as failed
            record = _record(cfg, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        conn.send(record)
    conn.close()


@contextlib.contextmanager
def _environment(**values: str | None):
    """Set environment variables (None: leave as is) for the duration, then restore them."""
    saved = {k: os.environ.get(k) for k, v in values.items() if v is not None}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def visible_gpus() -> int:
    """CUDA devices this process sees (CUDA_VISIBLE_DEVICES applies; no CUDA context is created)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_gpus(configs: list[RunConfig], jobs: int, runs_per_gpu: int | None) -> GpuPlan | None:
    """How local workers share the GPUs: None without a GPU (and without --runs_per_gpu) or for one run at a time
    on one GPU; else the workers spread over the GPUs, checked to fit their memory (ConfigError otherwise)."""
    gpus = visible_gpus()
    if runs_per_gpu is None and (gpus == 0 or jobs == 1):
        return None
    per_gpu = runs_per_gpu if runs_per_gpu is not None else math.ceil(jobs / gpus)
    plan = assign_gpus(gpus, per_gpu, None if runs_per_gpu and jobs == 1 else jobs)  # jobs 1: not given
    if configs:
        device_bytes, name = cuda_memory()
        check_runs_fit(per_gpu, max(estimate_run_memory(c) for c in _distinct_shapes(configs)), device_bytes, name)
    return plan


def _distinct_shapes(configs: list[RunConfig]) -> list[RunConfig]:
    """One config per (model, task, method, batch, length, precision): what a run's memory depends on."""
    seen = {}
    for c in configs:
        seen.setdefault((c.model, c.task, c.method, c.per_device_train_batch_size, c.max_seq_length, c.bf16, c.fp16,
                         c.rank, c.rank_max), c)
    return list(seen.values())


def estimate_run_memory(cfg: RunConfig) -> int:
    """A run's GPU memory from its plan on a weightless model (devices.run_memory_estimate)."""

    model, heads = meta_model(cfg)
    totals = build_plan(cfg, model, heads)[0].totals()
    trainable = totals["trainable_parameters"] if get_method(cfg.method).trains_adapter else \
        totals["model_parameters"]
    config = model.config
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 768)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 12)
    precision = "bf16" if cfg.bf16 else "fp16" if cfg.fp16 else "fp32"
    return run_memory_estimate(totals["model_parameters"], trainable, precision,
                               cfg.per_device_train_batch_size * cfg.max_seq_length, hidden, layers)


def _ray_task(cfg_dict: dict, threads: int, driver: tuple | None = None) -> dict:
    die_with_driver(driver)  # a killed sweep's runs stop with it, not after it
    _set_threads(threads)
    return run_one(RunConfig(**cfg_dict))


class _Progress:
    """One line per run start and end, with an overall count and a rough time left."""

    def __init__(self, total: int, jobs: int, stream=None):
        self.total, self.jobs, self.done, self.started = total, jobs, 0, time.time()
        self.stream = stream or sys.stdout
        self.durations: list[float] = []

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, k: int, cfg: RunConfig) -> None:
        self._print(f"[{k:>{len(str(self.total))}}/{self.total}] start     {Path(cfg.output_dir).name}")

    def end(self, k: int, record: dict, seconds: float | None = None) -> None:
        self.done += 1
        if seconds is not None:
            self.durations.append(seconds)
        line = f"[{k:>{len(str(self.total))}}/{self.total}] {record['status']:<9} {record['name']}"
        if record.get("best") is not None:
            line += f"  best {record['main_metric']} {record['best']:.4f} (epoch {record['best_epoch']})"
        if seconds is not None:
            line += f"  {_duration(seconds)}"
        left = self.total - self.done
        elapsed = time.time() - self.started
        line += f"  | {self.done}/{self.total} done, {_duration(elapsed)} elapsed"
        if left and self.durations:
            eta = sum(self.durations) / len(self.durations) * left / self.jobs
            line += f", ~{_duration(eta)} left"
        self._print(line)
        if record["status"] in ("failed", "diverged") and record.get("message"):
            self._print(f"    {record['message']}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def run_sweep(configs: list[RunConfig], jobs: int = 1, backend: str = "local", ray_address: str | None = None,
              quiet: bool = False, gpus_per_run: float = 0.0, runs_per_gpu: int | None = None) -> list[dict]:
    """Run every config that is not finished; one record per config, in order.

    Records: {"name", "output_dir", "status" (completed|diverged|failed|skipped), "message", "seed",
    "main_metric", "best", "best_epoch", "wall_time_s"}. Finished runs (summary.json completed or diverged)
    are `skipped`; failed and killed runs are run again. A failed or diverged run is recorded and the sweep
    goes on. `jobs` parallel runs: local worker processes with max(1, cores // jobs) torch threads each
    (jobs=1 runs in this process), or Ray tasks with that many CPUs each (`backend="ray"`).

    On a GPU host the local workers are spread over the visible GPUs (round robin); `runs_per_gpu` N runs N at once
    on each GPU (jobs = N × GPUs unless `jobs` is given), after checking that N runs fit in its memory. With Ray,
    `runs_per_gpu` N gives each task 1/N of a GPU (Ray's fractional GPUs).
    """
    if backend not in BACKENDS:
        raise ConfigError("backend", f"unknown backend `{backend}`", f"Choose one of: {', '.join(BACKENDS)}")
    if jobs < 1:
        raise ConfigError("jobs", f"must be at least 1, got {jobs}")
    records: list[dict | None] = [None] * len(configs)
    todo = []
    for i, cfg in enumerate(configs):
        records[i] = _finished_record(cfg)
        if records[i] is None:
            todo.append(i)
    finished = sum(1 for r in records if r is not None and r["status"] == "skipped")
    conflicts = len(configs) - len(todo) - finished
    gpu_plan = None
    if backend == "ray" and runs_per_gpu:
        if gpus_per_run:
            raise ConfigError("runs_per_gpu", "and --ray_gpus_per_run both set the GPUs of a Ray task", "Give one")
        gpus_per_run = 1.0 / runs_per_gpu
    elif backend == "local":
        gpu_plan = plan_gpus([configs[i] for i in todo], jobs, runs_per_gpu)
        jobs = gpu_plan.workers if gpu_plan is not None else jobs
    if quiet or jobs > 1 or backend == "ray":  # parallel runs' bars would interleave
        configs = [dataclasses.replace(c, quiet=True) for c in configs]
    print(f"sweep: {len(configs)} runs, {finished} already finished (skipped), {len(todo)} to run"
          + (f", {conflicts} finished with another config (kept, not run; listed at the end)" if conflicts else ""),
          flush=True)
    with stop_on_sigterm():  # SIGTERM stops the workers and tasks on the way out, as Ctrl-C does
        if todo and backend == "ray":
            _run_ray(configs, todo, records, jobs, ray_address, gpus_per_run)
        elif todo and jobs == 1:
            _run_here(configs, todo, records)
        elif todo:
            _run_processes(configs, todo, records, jobs, gpu_plan)
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    print("sweep done: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())), flush=True)
    return records  # type: ignore[return-value]


def _run_here(configs, todo, records) -> None:
    progress = _Progress(len(todo), 1)
    for k, i in enumerate(todo, 1):
        progress.start(k, configs[i])
        started = time.time()
        records[i] = run_one(configs[i])
        progress.end(k, records[i], time.time() - started)


def _run_processes(configs, todo, records, jobs: int, gpu_plan: GpuPlan | None = None) -> None:
    """`jobs` long-lived worker processes, each running one config at a time. A worker that dies (killed, out
    of memory) costs only its current run, which is recorded as failed; a new worker takes its place (and its GPU,
    `gpu_plan`: worker k sees only GPU devices[k] through CUDA_VISIBLE_DEVICES)."""
    ctx = mp.get_context("spawn")  # fresh interpreters: torch thread settings take effect, no forked state
    threads = threads_per_run(jobs)
    print(f"sweep: {jobs} worker processes × {threads} torch thread(s)"
          + (f", {gpu_plan.runs_per_gpu} per GPU on GPU(s) {', '.join(map(str, sorted(set(gpu_plan.devices))))}"
             if gpu_plan else ""), flush=True)
    progress = _Progress(len(todo), jobs)
    pending = list(enumerate(todo, 1))
    idle: list = []  # (connection, process) of workers waiting for work
    busy: dict = {}  # connection -> (process, k, index, start time)
    workers = 0

    def start_worker():
        nonlocal workers
        workers += 1
        parent_end, child_end = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(threads, child_end), daemon=True,
                              name=f"rankwise-sweep-worker-{workers}")
        slot = min(set(range(jobs)) - slots_in_use())  # a replacement takes the place (and GPU) of the dead one
        with _environment(CUDA_VISIBLE_DEVICES=gpu_plan.visible_devices(slot) if gpu_plan else None):
            process.start()  # a spawned process starts with this environment
        process.slot = slot
        child_end.close()
        return parent_end, process

    def slots_in_use() -> set[int]:
        return {p.slot for _, p in idle} | {entry[0].slot for entry in busy.values()}

    try:
        while pending or busy:
            while pending and len(busy) < jobs:
                conn, process = idle.pop() if idle else start_worker()
                k, i = pending.pop(0)
                conn.send(configs[i].to_dict())
                busy[conn] = (process, k, i, time.time())
                progress.start(k, configs[i])
            for conn in wait(list(busy)):
                process, k, i, started = busy.pop(conn)
                try:
                    record = conn.recv()
                    idle.append((conn, process))
                except (EOFError, OSError):  # the worker died without reporting
                    process.join()
                    conn.close()
                    record = _record(configs[i], "failed", f"worker process exited with code {process.exitcode}")
                records[i] = record
                progress.end(k, record, time.time() - started)
    finally:
        _stop_workers(idle, [entry[0] for entry in busy.values()])


def _stop_workers(idle: list, busy: list) -> None:
    """Idle workers (connection, process) are told to exit, and terminated after 10 s; busy ones terminated."""
    for conn, _ in idle:
        try:
            conn.send(None)
        except OSError:
            pass
    for process in busy:
        process.terminate()
    for _, process in idle:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
    for process in busy:
        process.join()


def _run_ray(configs, todo, records, jobs: int, address: str | None, gpus_per_run: float) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("backend", "`ray` needs the Ray package, which is not installed",
                          'Install it with: pip install "rankwise[ray]"') from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=usable_cores(), **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError("ray_address", f"could not start or reach Ray ({type(exc).__name__}: {exc})",
                              "Check the address (e.g. ray://head:10001 or auto), or drop it to start Ray locally") from None
    claim_sigterm()  # ray.init's own SIGTERM handler aborts: stop through the `finally` below instead
    reaper = RayReaper() if started_here and not address else None  # the local instance dies with this process
    refs = {}
    try:
        cpus = int(ray.cluster_resources().get("CPU", usable_cores()))
        node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [cpus])
        threads = min(threads_per_run(jobs, cpus), max(1, node_cpus))
        task = ray.remote(num_cpus=threads, num_gpus=gpus_per_run, max_retries=0)(_ray_task)
        print(f"sweep: Ray cluster with {cpus} CPUs; each run is a task with {threads} CPU(s)"
              + (f" and {gpus_per_run:g} GPU(s)" if gpus_per_run else ""), flush=True)
        progress = _Progress(len(todo), max(1, cpus // threads))
        driver = driver_identity()
        for k, i in enumerate(todo, 1):
            refs[task.remote(configs[i].to_dict(), threads, driver)] = (k, i, time.time())
            progress.start(k, configs[i])
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            k, i, started = refs.pop(done[0])
            try:
                record = ray.get(done[0])
            except Exception as exc:  # the task's process died, or Ray failed it
                record = _record(configs[i], "failed", f"Ray task failed: {type(exc).__name__}: {exc}"[:2000])
            records[i] = record
            progress.end(k, record, time.time() - started)
    except BaseException:  # stopped (Ctrl-C, SIGTERM) or failed: the runs still going stop too
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
        if reaper is not None:
            reaper.close()
