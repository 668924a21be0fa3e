"""Ready for a GPU, proven on the CPU: no host synchronisation in a training step (every method and allocation), the
allocation path correct on another device (`meta`), torch.compile without recompiles or graph breaks, frozen weights
in half precision, fp16 overflow steps seen by the guard, and launchers that tell the truth."""

from __future__ import annotations

import collections
import contextlib
import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli
from rankwise.config import RunConfig
from rankwise.runs.rundir import read_jsonl, read_summary

SRC = str(REPO / "src" / "rankwise")
# Tensor methods that copy a value to the host: on a GPU each waits for every kernel queued before it.
SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def host_syncs(monkeypatch, excluded: tuple = (), logging_steps: bool = False):
    """Count the calls rankwise's own code makes to `SYNC_METHODS` and to `nonzero` without a size, by file:line,
    except while Trainer's logging/evaluation/saving or one of the `excluded` (class, method name) pairs runs; with
    `logging_steps`, only while those run."""
    from rankwise import train

    counts: collections.Counter = collections.Counter()
    outside = [not logging_steps]

    def counting(name, original):
        def method(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if outside[0] and caller.startswith(SRC) and not (name == "nonzero" and "size" in kwargs):
                counts[f"{name} {caller[len(SRC) + 1:]}:{sys._getframe(1).f_lineno}"] += 1
            return original(self, *args, **kwargs)
        return method

    def pausing(original):
        def method(*args, **kwargs):
            before, outside[0] = outside[0], logging_steps
            try:
                return original(*args, **kwargs)
            finally:
                outside[0] = before
        return method

    for name in SYNC_METHODS + ("nonzero",):
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    for owner, name in ((train.RankwiseTrainer, "_maybe_log_save_evaluate"), *excluded):
        monkeypatch.setattr(owner, name, pausing(getattr(owner, name)))
    yield counts


def _train(model_dir, data_dir, out, **options):
    values = dict(model=str(model_dir), data_dir=str(data_dir), task="sst2", output_dir=str(out), quiet=True,
                  per_device_train_batch_size=8, logging_steps=1000, save_strategy="no", eval_strategy="no",
                  max_train_samples=32)
    values.update(options)
    from rankwise.train import run_training

    summary = run_training(RunConfig(**values))
    assert summary["status"] == "completed", summary["message"]
    return summary


LEARNED = dict(allocation="learned", rank_min=2, rank_max=6, rank_average=4, rank_allocation_weights_init="random")
# Every method and allocation. Learned allocation's second run has one more epoch of soft masks and one more of hard
# masks (its discrete phase); the others' has more optimiser steps.
STEP_CASES = {
    "loraxs-learned-gumbel": {"method": "loraxs", **LEARNED, "tau": 0.5},
    "loraxs-rank-annealing": {"method": "loraxs", **LEARNED, "rank_allocation_weights_init": "uniform",
                              "rank_annealing": True},
    "loraxs-gradient": {"method": "loraxs", "allocation": "gradient", "rank": 3, "allocation_batches": 1},
    "lora-learned": {"method": "lora", **LEARNED},
    "lora-eva": {"method": "lora", "init": "eva", "rank": 4},
    "dora-learned": {"method": "dora", **LEARNED},
    "adalora-every-phase": {"method": "adalora", "rank": 2, "adalora_tfinal": 0.4, "adalora_deltaT": 2},
    "full": {"method": "full"},
}


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_a_training_step_never_waits_for_the_host(case, tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch):
    """Two runs that differ only in their number of optimiser steps make the same host synchronisations from
    rankwise's own code (logging steps, evaluation and set-up apart): a training step makes none."""
    options = STEP_CASES[case]
    runs = ([{"num_train_epochs": 2, "epochs_rank_discrete": 1}, {"num_train_epochs": 4, "epochs_rank_discrete": 2}]
            if options.get("allocation") == "learned" else [{"max_steps": 4}, {"max_steps": 12}])
    counted = []
    for k, extra in enumerate(runs):
        with host_syncs(monkeypatch) as counts:
            summary = _train(tiny_bert_dir, tiny_glue_dir, tmp_path / f"run{k}", **options, **extra)
        counted.append(counts)
        monkeypatch.undo()
    assert summary["steps"] in (12, 16)  # 4 steps per epoch: the second run is 8 steps longer
    assert counted[0] == counted[1], f"host syncs per step: {dict(counted[1] - counted[0])}"


@pytest.mark.parametrize("case", ["loraxs-learned-gumbel", "adalora-every-phase"])
def test_a_logging_step_costs_a_handful_of_syncs(case, tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch):
    """A logging step reads the guard's counters and the allocation state in one copy each (not one per matrix):
    two runs logging every step, 8 logging steps apart, differ by at most 3 syncs per logging step."""
    counted = []
    for k, steps in enumerate((4, 12)):
        with host_syncs(monkeypatch, logging_steps=True) as counts:
            _train(tiny_bert_dir, tiny_glue_dir, tmp_path / f"run{k}", **STEP_CASES[case], max_steps=steps,
                   logging_steps=1, epochs_rank_discrete=None)
        counted.append(sum(counts.values()))
        monkeypatch.undo()
    assert 0 < (counted[1] - counted[0]) / 8 <= 3, counted


def test_the_sync_counter_sees_a_sync_in_the_step(tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch):
    """The check can fail: a copy to the host added to the guard's step shows as one sync per step."""
    from rankwise import devices, train

    original = train.StepLedger.record_step

    def with_sync(self, bad):
        devices.to_host(bad)
        return original(self, bad)

    counted = []
    for k, steps in enumerate((4, 12)):
        with host_syncs(monkeypatch) as counts:
            monkeypatch.setattr(train.StepLedger, "record_step", with_sync)
            _train(tiny_bert_dir, tiny_glue_dir, tmp_path / f"run{k}", method="loraxs", rank=4, max_steps=steps)
        counted.append(counts)
        monkeypatch.undo()
    (extra,) = (counted[1] - counted[0]).items()
    assert extra[0].startswith("tolist devices.py:") and extra[1] == 8


# ---------------------------------------------------------------------------------------------
# Device correctness without a GPU: the allocation path on the meta device
# ---------------------------------------------------------------------------------------------

def _allocator(**kw):
    from rankwise.allocation.allocator import RankAllocator
    from rankwise.allocation.schedules import AllocationSchedule
    from rankwise.methods import get_method
    from rankwise.targets import TargetMatrix

    targets = [TargetMatrix(f"m{i}", i, "attention", 16 + 8 * i, 32) for i in range(6)]
    schedule = AllocationSchedule(steps_per_epoch=5, num_epochs=4, alpha_min=0.5, alpha_max=3.0,
                                  alpha_scheduler="linear", memory_start=6 * 36.0, memory_end=6 * 25.0,
                                  epochs_memory_start=1, epochs_memory_start_to_end=1, epochs_rank_discrete=1)
    options = dict(weights_init="random", seed=0)
    options.update(kw)
    return RankAllocator(targets, get_method("loraxs").rank_cost(targets), 2, 10, schedule, **options), targets


@pytest.mark.parametrize("rounding", ["budget", "study"])
def test_the_allocation_path_runs_with_its_tensors_on_another_device(rounding, monkeypatch):
    """The allocation weights on `meta` (a device without values, as a GPU is to the host): soft masks with Gumbel
    noise, the log record, hard ranks, the budget arithmetic and both methods' masks run there. Values cross to the
    host only through `devices.to_host` (replaced here by one that gives plausible numbers), and each step's path
    copies nothing from the host: a CPU tensor meeting a meta tensor would raise."""
    from rankwise import devices
    from rankwise.adapters.masks import square_masks

    copies = collections.Counter()
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        moved = real_to(self, *args, **kwargs)
        if self.device.type == "cpu" and moved.device.type == "meta" and \
                sys._getframe(1).f_code.co_filename.startswith(SRC):
            copies[f"{sys._getframe(1).f_code.co_filename}:{sys._getframe(1).f_lineno}"] += 1
        return moved

    def meta_to_host(tensor):
        assert tensor.device.type == "meta"
        return torch.linspace(4.2, 5.7, tensor.numel(), dtype=torch.float64).reshape(tensor.shape).tolist()

    allocator, _ = _allocator(tau=0.5, rounding=rounding)
    allocator.to("meta")
    monkeypatch.setattr(devices, "to_host", meta_to_host)
    monkeypatch.setattr("rankwise.allocation.budget.to_host", meta_to_host)
    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    allocator.keep(0, training=True)
    assert sum(copies.values()) == 3  # the costs' coefficients, once, when the weights are first seen there
    copies.clear()
    for step in range(1, 4):  # soft phase: Gumbel noise, masks
        keep = allocator.keep(step, training=True)
        assert keep.device.type == "meta" and keep.shape == (6, 10) and keep.requires_grad
        assert square_masks(keep).device.type == "meta"
    assert not copies, f"host-to-device copies in each soft step: {dict(copies)}"
    record = allocator.state(7)  # budget arithmetic on the host from one copy
    assert record["budget_used"] <= record["budget"] + 1e-6 and len(record["hard"]) == 6
    hard = allocator.keep(16, training=True)  # discrete phase: hard masks made on the device, then kept
    assert hard.device.type == "meta" and allocator.keep(17, training=True) is hard
    assert sum(copies.values()) <= 1


def test_hard_masks_follow_weights_that_a_fused_optimiser_changed():
    """The fused AdamW kernel changes parameters without bumping their version counter: the hard masks of a soft
    step (evaluation) must still be those of the current weights."""
    from rankwise.adapters.masks import hard_keep

    allocator, _ = _allocator()
    optimizer = torch.optim.AdamW([allocator.weights], lr=2.0, fused=True)
    before = allocator.keep(3, training=False)
    version = allocator.weights._version
    allocator.weights.grad = torch.linspace(-5, 5, 6)
    optimizer.step()
    assert allocator.weights._version == version  # what made a version-keyed cache stale
    after = allocator.keep(4, training=False)
    assert torch.equal(after, hard_keep(allocator.hard_ranks(allocator.schedule.memory(4)), 10))
    assert not torch.equal(before, after)


# ---------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["loraxs", "lora", "adalora"])
def test_compiled_training_has_no_graph_breaks_and_no_recompiles_after_warm_up(method, tiny_bert_dir, tiny_glue_dir,
                                                                                 tmp_path, monkeypatch):
    """Dynamo's counters over a compiled run (the `eager` backend: graphs are captured, nothing is code-generated):
    no graph break in the training step, and new graphs only in the first two steps of each phase (static shapes,
    then dynamic sequence lengths; hard masks from the discrete phase on), never after."""
    from torch._dynamo.utils import counters

    from rankwise import train

    torch._dynamo.reset()
    counters.clear()
    graphs = []
    original = train.RankwiseTrainer.training_step

    def step(self, model, inputs, num_items_in_batch=None):
        graphs.append(counters["stats"]["unique_graphs"])
        return original(self, model, inputs, num_items_in_batch)

    monkeypatch.setattr(train.RankwiseTrainer, "training_step", step)
    options = {"method": "adalora", "rank": 2} if method == "adalora" else {"method": method, **LEARNED, "tau": 0.5}
    _train(tiny_bert_dir, tiny_glue_dir, tmp_path / "run", torch_compile_backend="eager", num_train_epochs=3,
           max_train_samples=24, logging_steps=2, eval_strategy="epoch", **options)
    graphs.append(counters["stats"]["unique_graphs"])
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    discrete = 6 if method != "adalora" else None  # the last epoch (3 steps) trains with hard masks
    warm_up = {1, 2} | ({discrete + 1} if discrete else set())
    new_graphs = [k for k in range(1, len(graphs)) if graphs[k] > graphs[k - 1]]
    assert new_graphs and set(new_graphs) <= warm_up, (new_graphs, graphs)
    torch._dynamo.reset()


def test_compile_without_a_compiler_or_with_an_unknown_backend_is_refused(capsys, tmp_path, tiny_bert_dir,
                                                                          tiny_glue_dir, monkeypatch):
    import shutil

    args = ["train", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "sst2", "--output_dir",
            tmp_path / "run", "--quiet"]
    assert run_cli(*args, "--torch_compile_backend", "inductr") == 2
    assert "--torch_compile_backend: unknown backend `inductr`" in capsys.readouterr().err
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert run_cli(*args, "--torch_compile") == 2
    err = capsys.readouterr().err
    assert "--torch_compile: inductor compiles CPU code with a C++ compiler" in err and "aot_eager" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Half precision
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["loraxs", "lora"])
def test_bf16_holds_the_frozen_weights_in_bf16_and_trains_the_rest_in_float32(method, tiny_bert_dir, tiny_glue_dir,
                                                                                tmp_path):
    from rankwise import train

    cfg = RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="sst2", output_dir=str(tmp_path / "r"),
                    quiet=True, per_device_train_batch_size=8, max_train_samples=32, num_train_epochs=2, bf16=True,
                    method=method, **LEARNED)
    setup = train.setup_run(cfg)
    parameters = list(setup.adapter.model.named_parameters())
    frozen = [p for _, p in parameters if not p.requires_grad]
    trainable = [p for _, p in parameters if p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert trainable and all(p.dtype == torch.float32 for p in trainable)  # adapters, head, allocation weights
    fp32_bytes = sum(p.numel() * 4 for _, p in parameters)
    held = sum(p.numel() * p.element_size() for _, p in parameters)
    assert held < 0.52 * fp32_bytes  # the frozen base is almost all of the model
    summary = train.train(setup.cfg, setup)
    assert summary["status"] == "completed" and all(torch.isfinite(torch.tensor(v)) for k, v in
                                                    summary["final"].items() if k.startswith("eval_"))
    record = json.loads((tmp_path / "r" / "config.json").read_text())["training"]
    assert record["precision"] == "bf16" and record["frozen_weights_dtype"] == "bfloat16"


def test_fp16_overflow_steps_are_skipped_and_counted_by_the_guard():
    """A GradScaler (fp16) that finds an overflow hands the fused AdamW `found_inf` instead of skipping the step
    itself: the guard counts it as skipped, the weights and the step count stay, and the next step is taken."""
    from rankwise.train import GuardedAdamW

    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = GuardedAdamW([{"params": [weight], "lr": 0.1, "weight_decay": 0.0}])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    for overflow in (True, False):
        loss = (weight * (float("inf") if overflow else 1.0)).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        counts = optimizer.ledger.read()
        if overflow:
            assert torch.equal(weight.detach(), torch.ones(4)) and counts["skipped"] == 1
            assert float(optimizer.state[weight]["step"]) == 0 and scaler.get_scale() == 2.0**15
        weight.grad = None
    assert counts["skipped"] == 1 and counts["taken"] == 1 and not torch.equal(weight.detach(), torch.ones(4))


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

def test_the_launcher_is_read_from_the_command_that_started_the_process():
    from rankwise.train import _is_accelerate_launch, requested_processes

    accelerate = ["/venv/bin/python", "/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "2", "-m",
                  "rankwise", "train"]
    assert _is_accelerate_launch(accelerate) and requested_processes(accelerate) == 2
    assert requested_processes(["accelerate", "launch", "--num_processes=4", "x.py"]) == 4
    assert not _is_accelerate_launch(["/venv/bin/python", "/venv/bin/torchrun", "--nproc_per_node", "2"])
    assert not _is_accelerate_launch(["python", "-m", "rankwise", "train"])


@pytest.mark.skipif(sys.platform != "linux", reason="accelerate's launchers and gloo on Linux")
def test_accelerate_launch_runs_the_processes_it_is_asked_for_or_refuses(tiny_bert_dir, tiny_glue_dir, tmp_path):
    """`--cpu --num_processes 2` makes accelerate start one process: refused before any work (it would train alone
    at half the batch). `--multi_gpu --num_processes 2` starts two (over gloo here): recorded as accelerate launch."""
    import subprocess

    from test_hf_trainer import LEARNED as ENGINE_LEARNED, base_args, subprocess_env

    accelerate = str(Path(sys.executable).parent / "accelerate")
    args = base_args(tiny_bert_dir, tiny_glue_dir, tmp_path / "one", *ENGINE_LEARNED, "--num_train_epochs", "2",
                     "--per_device_train_batch_size", "16")

    def launch(*flags, out):
        command = [accelerate, "launch", *flags, "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
                   "no", "--main_process_port", "29631", "-m", "rankwise", *args]
        command[command.index(str(tmp_path / "one"))] = str(out)
        return subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)

    refused = launch("--cpu", "--num_processes", "2", out=tmp_path / "one")
    assert refused.returncode != 0  # rankwise exits 2; accelerate reports that as its own failure (1)
    assert "returned non-zero exit status 2" in refused.stderr
    assert "--num_processes: `accelerate launch` was asked for 2 processes but started 1" in refused.stderr
    assert "--multi_gpu --num_processes 2" in refused.stderr and not (tmp_path / "one").exists()

    done = launch("--multi_gpu", "--num_processes", "2", out=tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    training = json.loads((tmp_path / "two" / "config.json").read_text())["training"]
    assert training["launcher"] == "accelerate launch" and training["num_processes"] == 2
    assert training["global_batch_size"] == 32 and read_summary(tmp_path / "two")["status"] == "completed"
    steps = [r["step"] for r in read_jsonl(tmp_path / "two" / "allocation.jsonl")]
    assert steps == sorted(set(steps))  # one allocation record per step, the final one too


def test_each_process_draws_its_own_dropout_stream(tmp_path):
    """Two processes (torchrun, gloo): after the Trainer seeds every process alike, `seed_dropout` gives the main
    process the run's own stream and the second another, seeded one."""
    import subprocess

    from test_hf_trainer import subprocess_env

    script = tmp_path / "draw.py"
    script.write_text(
        "import json, sys, torch\n"
        "from accelerate import PartialState\n"
        "from rankwise.train import seed_dropout\n"
        "state = PartialState(cpu=True)\n"
        "torch.manual_seed(7)\n"
        "seed_dropout(7, state.process_index)\n"
        "mask = torch.nn.functional.dropout(torch.ones(64), 0.5)\n"
        "open(sys.argv[1] + f'/rank{state.process_index}.json', 'w').write(json.dumps(mask.tolist()))\n")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29633", str(script), str(tmp_path)], env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))
    torch.manual_seed(7)
    assert first == torch.nn.functional.dropout(torch.ones(64), 0.5).tolist() and first != second
    torch.manual_seed(8)
    assert second == torch.nn.functional.dropout(torch.ones(64), 0.5).tolist()


# ---------------------------------------------------------------------------------------------
# Many runs per GPU
# ---------------------------------------------------------------------------------------------

def test_runs_are_spread_round_robin_over_the_gpus():
    from rankwise.devices import assign_gpus
    from rankwise.errors import ConfigError

    plan = assign_gpus(gpus=2, runs_per_gpu=3)
    assert plan.workers == 6 and plan.devices == (0, 1, 0, 1, 0, 1)
    assert [plan.visible_devices(k) for k in range(3)] == ["0", "1", "0"]
    assert assign_gpus(gpus=4, runs_per_gpu=2, jobs=3).devices == (0, 1, 2)  # every GPU gets work before a second
    with pytest.raises(ConfigError, match="--jobs: \\(5\\) asks for more parallel runs than --runs_per_gpu 2 on 2"):
        assign_gpus(gpus=2, runs_per_gpu=2, jobs=5)
    with pytest.raises(ConfigError, match="--runs_per_gpu: needs a CUDA GPU"):
        assign_gpus(gpus=0, runs_per_gpu=2)


def test_runs_per_gpu_beyond_the_gpus_memory_is_refused_before_any_run(tmp_path, tiny_bert_dir, tiny_glue_dir,
                                                                         capsys, monkeypatch):
    from rankwise.devices import run_memory_estimate
    from rankwise.sweep import runners

    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"base: {{model: {tiny_bert_dir}, data_dir: {tiny_glue_dir}, task: sst2, max_steps: 1}}\n"
                    f"seeds: [0, 1]\noutput_dir: {tmp_path / 'runs'}\n")
    assert run_cli("sweep", spec, "--runs_per_gpu", "2") == 2  # this machine has no GPU
    assert "--runs_per_gpu: needs a CUDA GPU, and none is visible" in capsys.readouterr().err
    monkeypatch.setattr(runners, "visible_gpus", lambda: 1)
    monkeypatch.setattr(runners, "cuda_memory", lambda: (2 * 2**30, "a 2 GiB GPU"))
    assert run_cli("sweep", spec, "--runs_per_gpu", "4") == 2
    err = capsys.readouterr().err
    per_run = run_memory_estimate(0, 0, "fp32", 0, 0, 0)  # at least the CUDA context: 500 MiB
    assert "--runs_per_gpu: (4) runs need about" in err and "on a 2 GiB GPU, which has 2.0 GiB" in err
    assert "Use --runs_per_gpu 3 or less" in err and per_run == 500 * 2**20
    assert not (tmp_path / "runs").exists()


def test_sweep_workers_each_get_their_gpu(tmp_path, tiny_bert_dir, tiny_glue_dir, monkeypatch):
    """Two GPUs (as the sweep sees them), one run per GPU: each worker process runs with CUDA_VISIBLE_DEVICES set to
    its own device (the runs themselves train on the CPU here)."""
    from rankwise.config import prepare
    from rankwise.sweep import runners, run_sweep

    monkeypatch.setattr(runners, "visible_gpus", lambda: 2)
    monkeypatch.setattr(runners, "cuda_memory", lambda: (80 * 2**30, "an 80 GiB GPU"))
    configs = [prepare(RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="sst2", max_steps=1,
                                 eval_strategy="no", save_model=False, seed=seed, quiet=True,
                                 output_dir=str(tmp_path / f"run{seed}"))) for seed in (0, 1)]
    records = run_sweep(configs, runs_per_gpu=1)
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert sorted(r["visible_devices"] for r in records) == ["0", "1"]


def test_bf16_on_a_gpu_without_it_is_refused_before_any_work(capsys, tmp_path, tiny_bert_dir, tiny_glue_dir,
                                                             monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    assert run_cli("train", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "sst2", "--bf16",
                   "--output_dir", tmp_path / "run", "--quiet") == 2
    assert "--bf16: this GPU (Tesla T4) cannot compute in bfloat16. Use --fp16" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
