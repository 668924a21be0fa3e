"""Sweeps: grid expansion, run names, validation before any run, resumable runs (a sweep process killed with
SIGKILL and restarted loses and duplicates nothing), failed runs recorded, local workers and the Ray backend."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli
from rankwise.config import RunConfig, config_from_dict, resolve_defaults
from rankwise.errors import ConfigError
from rankwise.runs.naming import run_name
from rankwise.runs.rundir import read_jsonl, read_summary
from rankwise.sweep import expand, load_sweep, parse_sweep, run_state, run_sweep, threads_per_run


def write_sweep(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
    return path


def tiny_base(model_dir, data_dir, **kw) -> dict:
    base = {"task": "cola", "model": str(model_dir), "data_dir": str(data_dir), "method": "loraxs",
            "num_train_epochs": 2, "per_device_train_batch_size": 16, "learning_rate": 5e-3, "logging_steps": 2,
            "save_model": False, "quiet": True}
    base.update(kw)
    return base


# ---------------------------------------------------------------------------------------------
# Expansion
# ---------------------------------------------------------------------------------------------

def test_grid_times_variants_times_seeds_with_inapplicable_fields_dropped(tmp_path):
    spec = parse_sweep({
        "base": {"task": "cola", "method": "loraxs", "allocation": "learned", "rank_average": 20},
        "grid": {"alpha_min": [0.1, 0.5], "lr_scheduler": ["constant_schedule", "linear_schedule_with_warmup"]},
        "variants": [{}, {"label": "LoRA-XS r25", "allocation": "uniform", "rank": 25}],
        "seeds": [0, 1, 2]})
    configs = expand(spec, str(tmp_path / "runs"), check_resources=False)
    # Naive definition: learned runs over the whole grid; the baseline has no alpha_min, so only its
    # lr_scheduler varies (it is not re-run once per alpha value).
    learned = {("learned", a, s, seed) for a, s, seed in itertools.product(
        [0.1, 0.5], ["constant_schedule", "linear_schedule_with_warmup"], [0, 1, 2])}
    baseline = {("uniform", 0.5, s, seed) for s, seed in itertools.product(
        ["constant_schedule", "linear_schedule_with_warmup"], [0, 1, 2])}  # 0.5: alpha_min's default
    got = [(c.allocation, c.alpha_min, c.lr_scheduler, c.seed) for c in configs]
    assert len(got) == len(set(got)) == 18
    assert set(got) == learned | baseline
    for c in configs:
        assert c.output_dir == str(tmp_path / "runs" / run_name(c))
        assert (c.label == "LoRA-XS r25") == (c.allocation == "uniform")
        # prepared: defaults resolved (learned ranks; the baseline's rank from its variant, no learned knobs)
        assert (c.rank_min, c.rank_max, c.rank) == ((5, 30, 25) if c.allocation == "learned" else (None, None, 25))
    assert not (tmp_path / "runs").exists()


def test_a_variant_that_overrides_a_grid_field_runs_once_per_seed(tmp_path, capsys):
    raw = {"base": {"method": "loraxs", "rank": 20}, "grid": {"task": ["cola", "stsb", "mrpc"]},
           "variants": [{"learning_rate": 0.01}, {"learning_rate": 0.1, "task": "mrpc"}],
           "seeds": [0, 1], "output_dir": str(tmp_path / "runs")}
    configs = expand(parse_sweep(raw), check_resources=False)
    got = sorted((c.task, c.learning_rate, c.seed) for c in configs)
    naive = sorted([(t, 0.01, s) for t in ("cola", "stsb", "mrpc") for s in (0, 1)]
                   + [("mrpc", 0.1, s) for s in (0, 1)])
    assert got == naive
    assert run_cli("sweep", write_sweep(tmp_path / "s.yaml", raw), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "4 configurations × 2 seeds = 8 runs" in out and "2 grid point × variant combinations repeated" in out


def test_flat_form_and_seed_lists(tmp_path):
    path = write_sweep(tmp_path / "flat.yaml", {"task": "cola", "allocation": "learned",
                                               "alpha_max": [3, 5], "seed": [0, 1], "output_dir": "x"})
    spec = load_sweep(path)
    assert spec["grid"] == {"alpha_max": [3, 5]} and spec["seeds"] == [0, 1] and spec["output_dir"] == "x"
    configs = expand(spec, str(tmp_path), check_resources=False)
    assert sorted((c.alpha_max, c.seed) for c in configs) == [(3.0, 0), (3.0, 1), (5.0, 0), (5.0, 1)]


@pytest.mark.parametrize("spec,expected", [
    ({"base": {"task": "cola"}, "grid": {"alpha_mn": [0.1]}}, "--alpha_mn: unknown option in"),
    ({"base": {"task": "cola"}, "grid": {"alpha_mn": [0.1]}}, "Did you mean `alpha_min`?"),
    ({"base": {"task": "cola"}, "grids": {"alpha_min": [0.1]}}, "unknown key `grids`. Did you mean `grid`?"),
    ({"base": {"task": "cola"}, "rank": 8}, "`rank` is a run option: put it under `base:`"),
    ({"base": {"task": "cola"}, "grid": {"rank": []}}, "grid `rank` is an empty list"),
    ({"base": {"task": "cola"}, "grid": {"rank": [4, 4]}}, "grid `rank` repeats a value"),
    ({"base": {"task": "cola"}, "variants": [{"label": "a"}, {"label": "a"}]}, "variants 1 and 2 are identical"),
    ({"base": {"task": "cola", "seed": 1}, "seeds": [0]}, "seeds are given twice"),
    ({"base": {"task": "cola"}, "seeds": [0, "x"]}, "`seeds` must be a list of integers"),
    ({"base": {"task": "cola", "rank": "big"}}, "--rank: bad value"),
])
def test_bad_sweep_files_name_the_key_and_the_fix(spec, expected):
    with pytest.raises(ConfigError) as info:
        parse_sweep(spec, source="s.yaml")
    assert expected in str(info.value)


def test_every_config_is_validated_before_anything_runs(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    """A budget that the model cannot hold (checked on a weightless model) and a bad value in one grid point
    stop the sweep with exit status 2 before any directory is created."""
    root = tmp_path / "runs"
    base = tiny_base(tiny_bert_dir, tiny_glue_dir, allocation="learned", rank_min=2, rank_max=8,
                     memory_start=500.0, epochs_memory_start_to_end=1, memory_end=5000.0)
    path = write_sweep(tmp_path / "s.yaml", {"base": base, "grid": {"alpha_min": [0.5, 0.1]}, "output_dir": str(root)})
    assert run_cli("sweep", path) == 2
    err = capsys.readouterr().err
    assert "--memory_end" in err and "cola_" in err and "rankwise sweep: error:" in err
    assert not root.exists()
    path = write_sweep(tmp_path / "t.yaml", {"base": tiny_base(tiny_bert_dir, tiny_glue_dir, allocation="learned"),
                                            "grid": {"alpha_min": [0.5, 4.0]}, "output_dir": str(root)})
    assert run_cli("sweep", path) == 2
    assert "--alpha_min: (4) is greater than --alpha_max (3)" in capsys.readouterr().err
    assert not root.exists()


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

def test_a_malformed_alpaca_file_stops_the_sweep_before_any_run(tiny_llama_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"base": {"task": "alpaca", "model": str(tiny_llama_dir), "method": "lora",
                                              "train_file": str(bad), "eval_size": 1},
                                     "seeds": [0, 1], "output_dir": str(tmp_path / "runs")}))
    assert run_cli("sweep", sweep) == 2
    assert "bad.json record 1: missing key(s) `output`" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_names_are_readable_deterministic_and_hash_only_when_needed():
    study = dict(task="cola", method="loraxs", allocation="learned", rank_min=5, rank_max=30, alpha_min=0.5,
                 alpha_max=3, rank_allocation_lr=0.002, rank_average=20, rank_allocation_weights_init="random",
                 learned_scale="rank_max")
    assert run_name(RunConfig(**study)) == "cola_loraxs_learned_r5-30_a0.5-3_lr0.002_avg20_seed0"
    # The scale default changed too (issue 24): α/rank_max names the old runs, α/rank_average is another config.
    rescaled = {k: v for k, v in study.items() if k != "learned_scale"}
    assert run_name(RunConfig(**rescaled)).startswith(run_name(RunConfig(**study)) + "_")
    # A changed default does not rename existing runs: `random` was the default when this name was made, so it
    # keeps it; today's default (uniform) is a different config and gets a different name.
    today = {k: v for k, v in study.items() if k != "rank_allocation_weights_init"}
    assert RunConfig().rank_allocation_weights_init == "uniform"
    assert run_name(RunConfig(**today)) == run_name(RunConfig(**today, rank_allocation_weights_init="uniform"))
    assert run_name(RunConfig(**today)).startswith("cola_loraxs_learned_r5-30_a0.5-3_lr0.002_avg20_seed0_")
    assert run_name(RunConfig(allocation="uniform", rank=8)) == "cola_loraxs_uniform_r8_lr0.005_seed0"  # n/a there
    # gradient allocation measured 8 batches until issue 24: those runs keep their name, today's 4 is another run
    measured = dict(task="stsb", allocation="gradient", rank=4, learning_rate=0.02)
    assert RunConfig().allocation_batches == 4
    assert run_name(RunConfig(**measured, allocation_batches=8)) == "stsb_loraxs_gradient_r4_lr0.02_seed0"
    assert run_name(RunConfig(**measured)).startswith("stsb_loraxs_gradient_r4_lr0.02_seed0_")
    # Defaults written out, resolved, or given with other types name the same run.
    assert run_name(resolve_defaults(RunConfig(**study))) == run_name(RunConfig(**study))
    assert run_name(config_from_dict({**study, "alpha_max": 3, "rank_average": "20", "learning_rate": 5e-3,
                                      "data_dir": "/elsewhere", "quiet": True})) == run_name(RunConfig(**study))
    long = run_name(RunConfig(**study, num_train_epochs=50))
    assert long.startswith("cola_loraxs_learned_r5-30_a0.5-3_lr0.002_avg20_seed0_") and len(long.split("_")[-1]) == 8
    assert run_name(RunConfig(allocation="uniform", rank=8, label="r8")) == "cola_r8_loraxs_uniform_r8_lr0.005_seed0"
    named = run_name(RunConfig(allocation="uniform", rank=8, label="baseline r8"))
    assert named.startswith("cola_baseline-r8_loraxs_uniform_r8_lr0.005_seed0_")
    # Same name in a fresh interpreter (no per-process hashing).
    code = ("from rankwise.config import RunConfig; from rankwise.runs.naming import run_name; "
            "print(run_name(RunConfig(num_train_epochs=50, label='baseline r8')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == run_name(RunConfig(num_train_epochs=50, label="baseline r8"))


def test_different_configs_never_share_a_name():
    """Random configs over many fields: two names are equal exactly when the result-relevant settings are."""
    choices = {"method": ["loraxs", "lora"], "allocation": ["uniform", "learned", "linear_decay"],
               "rank": [4, 8], "rank_first": [8, 16], "rank_last": [2, 4], "alpha_min": [0.1, 0.5],
               "rank_allocation_lr": [0.002, 0.0020000001], "learning_rate": [1e-3, 2e-3], "seed": [0, 1],
               "lr_scheduler": ["constant_schedule", "linear_schedule_with_warmup"], "num_train_epochs": [3, 4],
               "label": [None, "a b", "a-b"], "max_seq_length": [64, 128], "quiet": [True, False]}
    rng = random.Random(0)
    ignored = {"quiet", "output_dir", "overwrite_output_dir", "report_to", "data_dir", "save_model", "logging_steps"}
    names: dict[str, str] = {}
    for _ in range(400):
        values = {k: rng.choice(v) for k, v in choices.items()}
        cfg = resolve_defaults(RunConfig(**values))
        identity = json.dumps({k: v for k, v in cfg.to_dict().items() if k not in ignored}, sort_keys=True)
        name = run_name(cfg)
        assert names.setdefault(name, identity) == identity, f"{name} names two different configs"
    assert len(set(names.values())) == len(names) > 100


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def test_threads_per_run_never_oversubscribe():
    assert threads_per_run(1, cores=2) == 2 and threads_per_run(2, cores=2) == 1
    assert threads_per_run(3, cores=16) == 5 and threads_per_run(8, cores=2) == 1


def test_failed_run_is_recorded_the_sweep_goes_on_and_restart_redoes_only_it(tiny_bert_dir, tiny_glue_dir,
                                                                                 tmp_path, monkeypatch):
    import rankwise.train as train

    spec = parse_sweep({"base": tiny_base(tiny_bert_dir, tiny_glue_dir, num_train_epochs=1),
                        "grid": {"rank": [2, 4]}, "seeds": [0, 1]})
    configs = expand(spec, str(tmp_path / "runs"))
    real = train.run_training

    def flaky(cfg):
        if cfg.rank == 4 and cfg.seed == 0:
            raise RuntimeError("injected crash")
        return real(cfg)

    monkeypatch.setattr(train, "run_training", flaky)
    records = run_sweep(configs)
    assert [r["status"] for r in records] == ["completed", "completed", "failed", "completed"]
    assert "injected crash" in records[2]["message"]
    assert [r["output_dir"] for r in records] == [c.output_dir for c in configs]
    assert run_state(configs[2].output_dir) == "new"
    done = {c.output_dir: (Path(c.output_dir) / "summary.json").read_bytes() for c in configs if c.seed == 1 or c.rank == 2}

    monkeypatch.setattr(train, "run_training", real)
    records = run_sweep(configs)
    assert [r["status"] for r in records] == ["skipped", "skipped", "completed", "skipped"]
    assert all((Path(d) / "summary.json").read_bytes() == b for d, b in done.items())
    assert records[0]["best"] == read_summary(configs[0].output_dir)["best"][records[0]["main_metric"]]


def test_a_finished_run_of_another_config_is_kept_and_reported_not_skipped(tiny_bert_dir, tiny_glue_dir, tmp_path,
                                                                          capsys):
    """A run directory whose config.json says it was trained otherwise (e.g. a default changed under its name)
    must neither count as this config's result nor be overwritten."""
    raw = {"base": tiny_base(tiny_bert_dir, tiny_glue_dir, num_train_epochs=1), "seeds": [0],
           "output_dir": str(tmp_path / "runs")}
    path = write_sweep(tmp_path / "s.yaml", raw)
    configs = expand(load_sweep(path))
    assert [r["status"] for r in run_sweep(configs)] == ["completed"]
    run_dir = Path(configs[0].output_dir)
    stored = json.loads((run_dir / "config.json").read_text())
    stored["config"]["lora_alpha"] = 2 * stored["config"]["lora_alpha"]  # changes results
    stored["config"]["rank_allocation_weights_init"] = "random"  # means nothing for a uniform allocation
    del stored["config"]["weight_decay"]  # a field an older rankwise did not write
    (run_dir / "config.json").write_text(json.dumps(stored))
    summary = (run_dir / "summary.json").read_bytes()

    records = run_sweep(configs)
    assert [r["status"] for r in records] == ["failed"]
    message = records[0]["message"]
    assert "lora_alpha: 32.0 there, 16.0 here" in message and "kept" in message
    assert "rank_allocation_weights_init" not in message and "weight_decay" not in message
    assert (run_dir / "summary.json").read_bytes() == summary
    assert run_cli("sweep", path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"conflict    {run_dir.name}" in out and "dry run: 1 conflict;" in out
    assert run_cli("sweep", path) == 1
    assert "lora_alpha: 32.0 there" in capsys.readouterr().out

    stored["config"]["lora_alpha"] /= 2  # the same config again: inapplicable and missing fields do not count
    (run_dir / "config.json").write_text(json.dumps(stored))
    assert [r["status"] for r in run_sweep(configs)] == ["skipped"]


def test_a_run_locked_by_a_sweep_reads_as_running_and_is_not_started_twice(tmp_path):
    import subprocess
    import sys

    from rankwise.runs.state import lock_holder, run_lock

    run_dir = tmp_path / "runs" / "cola_x_seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text('{"config": {}, "environment": {"rankwise": "0.1.0"}}')
    assert run_state(run_dir) == "unfinished"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from rankwise.runs.state import run_lock\n"
                               f"with run_lock({str(run_dir)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_state(run_dir) == "running"
        with run_lock(run_dir) as second:
            assert second is False
        assert f"process {holder.pid} " in lock_holder(run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert run_state(run_dir) == "unfinished"
    with run_lock(run_dir) as first:  # re-entrant within one process: a sweep holds it around `train`
        assert first is True and run_state(run_dir) == "running"
        with run_lock(run_dir) as again:
            assert again is True


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc (Linux)")
def test_sweep_killed_mid_run_restarts_without_duplicates_or_losses(tiny_bert_dir, tiny_glue_dir, tmp_path):
    """`rankwise sweep --jobs 2` in a real process, SIGKILLed while runs are in progress (its workers die with
    it); the restart skips the finished runs untouched and resumes the killed ones (from their last checkpoint,
    or from scratch before the first). The first two
    runs are short and the last two long, so the kill lands mid-run even on a loaded machine."""
    root = tmp_path / "runs"
    short, long = 2, 24
    base = tiny_base(tiny_bert_dir, tiny_glue_dir, per_device_train_batch_size=4)
    spec = {"base": base, "grid": {"num_train_epochs": [short, long]}, "seeds": [0, 1], "output_dir": str(root)}
    path = write_sweep(tmp_path / "s.yaml", spec)
    configs = expand(load_sweep(path), check_resources=False)
    assert [c.num_train_epochs for c in configs] == [short, short, long, long]
    log = tmp_path / "sweep.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}

    def evals(c) -> list[int]:
        return [r["epoch"] for r in read_jsonl(Path(c.output_dir) / "metrics.jsonl") if r["type"] == "eval"]

    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "rankwise", "sweep", str(path), "--jobs", "2"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            finished = [c for c in configs if read_summary(c.output_dir)]
            # Kill while a long run is in its first epochs, so it cannot finish before the signal.
            started = [c for c in configs if run_state(c.output_dir) == "running" and len(evals(c)) < 3
                       and (Path(c.output_dir) / "config.json").exists() and c.num_train_epochs == long]
            if finished and started and "] completed" in log.read_text():
                break
            time.sleep(0.05)
        assert process.poll() is None, "the sweep ended before it could be killed:\n" + log.read_text()
        workers = [pid for pid in _children(process.pid) if "spawn_main" in _cmdline(pid)]
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert workers, "the sweep had no worker processes:\n" + log.read_text()
    deadline = time.time() + 20  # the kernel releases a dead worker's lock once its last thread has exited
    while (any(_alive(w) for w in workers) or any(run_state(c.output_dir) == "running" for c in configs)) \
            and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "worker processes outlived the killed sweep"

    states = {c.output_dir: run_state(c.output_dir) for c in configs}
    before = {d: (Path(d) / "summary.json").read_bytes() for d, s in states.items() if s == "finished"}
    killed = [d for d, s in states.items() if s == "unfinished"]  # lock released
    assert before and killed and set(states.values()) <= {"finished", "unfinished", "new"}, f"{states}\n{log.read_text()}"
    records = run_sweep(configs)  # the restart
    assert {r["output_dir"] for r in records if r["status"] == "skipped"} == set(before)
    assert {r["output_dir"] for r in records if r["status"] == "completed"} == {c.output_dir for c in configs} - set(before)
    for c in configs:  # nothing lost, nothing duplicated, finished runs untouched
        assert read_summary(c.output_dir)["status"] == "completed"
        assert evals(c) == list(range(1, c.num_train_epochs + 1)), c.output_dir
    assert all((Path(d) / "summary.json").read_bytes() == b for d, b in before.items())
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        Path(c.output_dir).name for c in configs)


def test_dry_run_lists_states_and_writes_nothing(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    path = write_sweep(tmp_path / "s.yaml", {"base": tiny_base(tiny_bert_dir, tiny_glue_dir), "grid": {"rank": [2, 4]},
                                            "output_dir": str(root)})
    configs = expand(load_sweep(path), check_resources=False)
    assert run_cli("sweep", path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert all(f"new         {Path(c.output_dir).name}" in out for c in configs) and "nothing was run" in out
    assert not root.exists()
    Path(configs[0].output_dir).mkdir(parents=True)
    (Path(configs[0].output_dir) / "config.json").write_text('{"config": {}, "environment": {"rankwise": "0"}}')
    assert run_cli("sweep", path, "--dry_run", "--seeds", "0") == 0
    assert f"unfinished  {Path(configs[0].output_dir).name}" in capsys.readouterr().out


def test_only_selects_a_subset_under_the_whole_sweeps_names(tmp_path, capsys):
    from rankwise.cli.sweep import select

    raw = {"base": {"task": "cola", "method": "loraxs"}, "grid": {"task": ["cola", "mrpc", "rte"]},
           "variants": [{"label": "A", "rank": 20, "learning_rate": 5e-3},
                        {"label": "A", "rank": 20, "learning_rate": 0.01},
                        {"label": "B", "rank": 25, "learning_rate": 5e-3}],
           "seeds": [0, 1], "output_dir": str(tmp_path / "runs")}
    spec = parse_sweep(raw)
    configs = expand(spec, str(tmp_path / "runs"), check_resources=False)
    picked = select(configs, [("task", ["mrpc", "rte"]), ("label", ["A"]), ("learning_rate", ["0.005"])])
    # naive definition: filter by hand
    naive = [c for c in configs if c.task in ("mrpc", "rte") and c.label == "A" and c.learning_rate == 5e-3]
    assert [c.output_dir for c in picked] == [c.output_dir for c in naive] and len(picked) == 4
    with pytest.raises(ConfigError) as err:
        select(configs, [("task", ["mrp"])])
    assert err.value.field == "--only task" and "cola, mrpc, rte" in err.value.fix
    with pytest.raises(ConfigError):
        select(configs, [("no_such_option", ["1"])])
    path = write_sweep(tmp_path / "s.yaml", raw)
    assert run_cli("sweep", path, "--dry-run", "--only", "label=B") == 0
    out = capsys.readouterr().out
    assert "--only: 6 of the 18 runs" in out and "dry run: 6 new;" in out
    assert run_cli("sweep", path, "--dry-run", "--only", "task=mrp") == 2


def test_ray_backend_runs_the_same_runs_as_tasks(tiny_bert_dir, tiny_glue_dir, tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray backend needs `pip install rankwise[ray]`")
    spec = parse_sweep({"base": tiny_base(tiny_bert_dir, tiny_glue_dir, num_train_epochs=1), "grid": {"rank": [2, 4]}})
    configs = expand(spec, str(tmp_path / "runs"))
    records = run_sweep(configs, jobs=2, backend="ray")
    assert not ray.is_initialized()  # the local instance it started is shut down
    assert [r["status"] for r in records] == ["completed", "completed"]
    assert [r["threads"] for r in records] == [threads_per_run(2)] * 2
    for c, r in zip(configs, records):
        summary = read_summary(c.output_dir)
        assert summary["trainable_parameters"]["adapter"] == 12 * c.rank * c.rank
        assert r["best"] == summary["best"][summary["main_metric"]]
    assert [r["status"] for r in run_sweep(configs, backend="ray")] == ["skipped", "skipped"]


def test_every_committed_sweep_file_expands_to_the_run_count_its_readme_states():
    """configs/README.md promises that every file validates and states how many runs each makes."""
    readme = (REPO / "configs" / "README.md").read_text()
    stated, column = {}, None
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            column = None
        elif "runs" in cells:
            column = cells.index("runs")  # a table with a run-count column starts
        elif column is not None and cells[0].startswith("`") and cells[column].replace(",", "").isdigit():
            stated[cells[0].strip("`").split("/")[-1]] = int(cells[column].replace(",", ""))
    files = sorted((REPO / "configs").rglob("*.yaml"))
    counts = {f.name: len(expand(load_sweep(f), output_dir="/nonexistent", check_resources=False)) for f in files}
    assert len(counts) == len(files) and {"study.yaml", "study_full.yaml", "study_lr_edge.yaml"} <= set(stated)
    assert {name: counts[name] for name in stated} == stated
