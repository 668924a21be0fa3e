"""Killed sweeps leave nothing running (issue 32): SIGTERM or SIGKILL on a sweep process stops its local workers, or
its Ray tasks and the local Ray instance it started (agents included), within seconds; no run goes on after it;
and rerunning the sweep completes every run exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from rankwise.runs.rundir import read_jsonl, read_summary
from rankwise.sweep import expand, load_sweep, run_state, run_sweep

psutil = pytest.importorskip("psutil")
EPOCHS = 30  # 360 steps a run: killed in its first epochs (on a fast machine too), rerun in seconds


def sweep_file(tmp_path: Path, model_dir, data_dir) -> Path:
    """Two runs long enough to be killed in their first epochs."""
    base = {"task": "cola", "model": str(model_dir), "data_dir": str(data_dir), "method": "loraxs",
            "num_train_epochs": EPOCHS, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "logging_steps": 4,
            "save_model": False, "quiet": True}  # a checkpoint each epoch, after its evaluation
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": base, "grid": {"rank": [2, 4]}, "output_dir": str(tmp_path / "runs")}))
    return path


def evals(cfg) -> list[int]:
    return [r["epoch"] for r in read_jsonl(Path(cfg.output_dir) / "metrics.jsonl") if r.get("type") == "eval"]


def start_and_stop(path: Path, configs, backend: str, sig: int, log: Path) -> tuple[int, list]:
    """Start `rankwise sweep` and send it `sig` once a run has logged (again) while another is unfinished; (exit
    code, its processes then). On a busy machine one run can end before the other starts."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "rankwise", "sweep", str(path), "--jobs", "2", "--backend",
                                    backend], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    before = [len(read_jsonl(Path(c.output_dir) / "metrics.jsonl")) for c in configs]  # a killed sweep's records
    try:
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if any(len(read_jsonl(Path(c.output_dir) / "metrics.jsonl")) > n for c, n in zip(configs, before)):
                break
            time.sleep(0.1)
        assert process.poll() is None, "the sweep ended before it could be stopped:\n" + log.read_text()
        assert not all(evals(c) == list(range(1, EPOCHS + 1)) for c in configs)  # the stop lands mid-sweep
        processes = []  # (process, command line), taken before the signal
        for child in psutil.Process(process.pid).children(recursive=True):
            try:
                processes.append((child, " ".join(child.cmdline())))
            except psutil.Error:
                continue
        process.send_signal(sig)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return code, processes


def assert_all_stop(processes: list, configs, log: Path) -> None:
    """Every process the sweep had started is gone within 10 s, and no run writes anything after that."""
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p, _ in processes):
        time.sleep(0.1)
    left = [command[:60] for p, command in processes if _alive(p)]
    assert not left, f"outlived the sweep: {left}\n{log.read_text()}"
    sizes = [_size(Path(c.output_dir) / "metrics.jsonl") for c in configs]
    time.sleep(2)
    assert sizes == [_size(Path(c.output_dir) / "metrics.jsonl") for c in configs]
    states = [run_state(c.output_dir) for c in configs]  # locks released: no run reads as running
    assert "unfinished" in states and set(states) <= {"unfinished", "finished", "new"}, states


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


def _alive(process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_stopped_or_killed_local_sweep_stops_its_workers(tiny_bert_dir, tiny_glue_dir, tmp_path):
    path = sweep_file(tmp_path, tiny_bert_dir, tiny_glue_dir)
    configs = expand(load_sweep(path), check_resources=False)
    code, processes = start_and_stop(path, configs, "local", signal.SIGTERM, tmp_path / "log")
    assert code == 128 + signal.SIGTERM and any("spawn_main" in c for _, c in processes)
    assert_all_stop(processes, configs, tmp_path / "log")


def test_a_stopped_or_killed_ray_sweep_leaves_nothing_running_and_reruns_each_run_once(tiny_bert_dir, tiny_glue_dir,
                                                                                       tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs `pip install rankwise[ray]`")
    path = sweep_file(tmp_path, tiny_bert_dir, tiny_glue_dir)
    configs = expand(load_sweep(path), check_resources=False)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        code, processes = start_and_stop(path, configs, "ray", sig, tmp_path / f"log{sig}")
        assert code in (128 + sig, -sig)
        names = " ".join(c for _, c in processes)
        assert "raylet" in names and "_ray_task" in names and "DashboardAgent" in names  # the test can fail
        assert_all_stop(processes, configs, tmp_path / f"log{sig}")
    records = run_sweep(configs)  # the rerun: each run resumed from its checkpoint and completed once
    assert [r["status"] for r in records] == ["completed", "completed"]
    for c in configs:
        assert read_summary(c.output_dir)["status"] == "completed" and evals(c) == list(range(1, EPOCHS + 1))
