"""Output-directory safety (issue 17): rankwise never deletes a file it did not write, one writer per run
directory, and --overwrite_output_dir keeps the old run until the new one has ended."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from rankwise.runs import rundir
from rankwise.runs import state as runstate
from rankwise.config import RunConfig
from rankwise.runs.rundir import read_summary
from rankwise.train import run_training


def tiny_cfg(model_dir, data_dir, out, **kw):
    values = dict(model=str(model_dir), data_dir=str(data_dir), task="cola", output_dir=str(out), num_train_epochs=1,
                  per_device_train_batch_size=16, logging_steps=2, quiet=True, learning_rate=5e-3, rank=2)
    values.update(kw)
    return RunConfig(**values)


def train_args(model_dir, data_dir, out, *extra):
    return ("train", "--model", model_dir, "--data_dir", data_dir, "--task", "cola", "--output_dir", out,
            "--num_train_epochs", "1", "--rank", "2", "--quiet", *extra)


def snapshot(root: Path) -> dict:
    """Every file under root (hidden ones too) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_directory_with_user_files_is_refused_and_untouched(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    out = tmp_path / "u"
    out.mkdir()
    (out / "thesis.txt").write_text("x")
    (out / "data").mkdir()
    (out / "data" / "notes.md").write_text("y")
    before = snapshot(tmp_path)
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, out)) == 2
    err = capsys.readouterr().err
    assert "thesis.txt" in err and "did not write" in err and "--output_dir" in err
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["u"]  # no lock dir


def test_a_user_file_named_like_a_run_file_is_not_taken_for_a_run(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    """`model/` and `config.json` are common names: without rankwise's own config.json nothing is ours."""
    out = tmp_path / "mine"
    (out / "model").mkdir(parents=True)
    (out / "model" / "pytorch_model.bin").write_bytes(b"weights")
    (out / "config.json").write_text(json.dumps({"hidden_size": 32}))
    before = snapshot(out)
    for flags in ((), ("--overwrite_output_dir",)):
        assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, out, *flags)) == 2
        assert "did not write" in capsys.readouterr().err
        assert snapshot(out) == before


def test_a_folder_of_runs_is_refused_even_with_overwrite(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    for seed in (0, 1):
        run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, root / f"seed{seed}", seed=seed))
    before = snapshot(root)
    for flags in ((), ("--overwrite_output_dir",)):
        assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, root, *flags)) == 2
        err = capsys.readouterr().err
        assert "folder of 2 rankwise run(s)" in err and "seed0" in err
    assert snapshot(root) == before


@pytest.mark.parametrize("given", [".", ""])
def test_dot_and_empty_output_dir(given, tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper.tex").write_text("keep me")
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, given)) == 2
    err = capsys.readouterr().err
    assert ("is empty" in err) if given == "" else ("paper.tex" in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paper.tex"]


def test_output_dir_under_a_file_or_unwritable(tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, tmp_path / "afile" / "sub")) == 2
    assert "`" + str(tmp_path / "afile") + "` is a file" in capsys.readouterr().err
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, tmp_path / "afile")) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    # root may write anywhere, so the permission check is exercised through os.access
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, locked / "run")) == 2
    assert "no write permission in" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "locked"] and not any(locked.iterdir())


def test_unfinished_and_failed_runs_of_the_same_config_are_reused_others_refused(tiny_bert_dir, tiny_glue_dir,
                                                                                  tmp_path, capsys):
    out = tmp_path / "run"
    run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out))
    finished = read_summary(out)
    (out / "summary.json").unlink()  # as a run killed before its summary
    (out / ".metrics.jsonl.abc.tmp").write_text("torn")  # and a temporary file of its own
    assert runstate.inspect(out).kind == "unfinished"
    # another config: refused, naming what differs
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, out, "--seed", "3")) == 2
    err = capsys.readouterr().err
    assert "unfinished run" in err and "seed: 0 there, 3 here" in err
    assert (out / ".metrics.jsonl.abc.tmp").exists()
    # the same config: cleared (its own files only) and run again
    summary = run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out))
    assert summary["status"] == "completed" and not (out / ".metrics.jsonl.abc.tmp").exists()
    assert summary["final"] == finished["final"]
    # a failed run of the same config is run again too, and is never called finished
    failed = {"status": "failed", "message": "RuntimeError: boom", "task": "cola"}
    (out / "summary.json").write_text(json.dumps(failed))
    assert runstate.inspect(out).kind == "failed"
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, out, "--seed", "3")) == 2
    assert "holds a failed run of another config" in capsys.readouterr().err
    assert run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out))["status"] == "completed"


def test_corrupt_summary_is_named_as_such(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out))
    (out / "summary.json").write_text("{not json")
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, out)) == 2
    assert "summary.json cannot be read" in capsys.readouterr().err


def test_overwrite_keeps_the_old_run_until_the_new_one_ends(tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, seed=0))
    old = snapshot(out)

    # a crash of the replacing run: the old run is intact, the half-written one is gone
    from rankwise import train as train_module

    def crash(*args, **kwargs):
        assert (tmp_path / ".run.overwrite-new" / "config.json").exists() and snapshot(out) == old
        raise RuntimeError("crashed mid-run")

    monkeypatch.setattr(train_module, "_save_weights", crash)
    with pytest.raises(RuntimeError):
        run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, seed=1, overwrite_output_dir=True))
    monkeypatch.undo()
    assert snapshot(out) == old and sorted(p.name for p in tmp_path.iterdir()) == [".locks", "run"]

    # a run that ends replaces it whole
    summary = run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, seed=1, overwrite_output_dir=True))
    assert summary["status"] == "completed" and read_summary(out)["seed"] == 1
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", "run"]


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_dir_is_never_without_a_complete_directory(exchange, tmp_path, monkeypatch):
    """The swap at the end of an overwrite: atomic exchange where the system has it; otherwise two renames,
    and a kill between them is repaired by the next claim (the old run goes back)."""
    final, new = tmp_path / "run", tmp_path / ".run.overwrite-new"
    for path, text in ((final, "old"), (new, "new")):
        path.mkdir()
        (path / "summary.json").write_text(text)
    if not exchange:
        monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    rundir.replace_dir(new, final)
    assert (final / "summary.json").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["run"]
    # killed between the fallback's two renames: only the hidden old copy exists
    os.replace(final, tmp_path / ".run.overwrite-old")
    runstate._recover(final)
    assert (final / "summary.json").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["run"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="SIGKILL of a child process")
def test_overwrite_killed_at_any_moment_leaves_one_complete_run(tiny_bert_dir, tiny_glue_dir, tmp_path):
    out = tmp_path / "run"
    run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, seed=0))
    old = snapshot(out)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "rankwise", *map(str, train_args(tiny_bert_dir, tiny_glue_dir, out)),
               "--seed", "1", "--overwrite_output_dir", "--num_train_epochs", "5000", "--per_device_train_batch_size", "4"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sibling = tmp_path / ".run.overwrite-new" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not sibling.exists():
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    # a second writer is refused while the first holds the lock, naming it
    second = subprocess.run([sys.executable, "-m", "rankwise", *map(str, train_args(tiny_bert_dir, tiny_glue_dir, out)),
                             "--seed", "2", "--overwrite_output_dir"], env=env, capture_output=True, text=True)
    assert second.returncode == 2 and f"is being written by process {process.pid} " in second.stderr
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert snapshot(out) == old  # the old run, complete and untouched
    # the next writer cleans the dead run's hidden sibling and replaces the old run
    summary = run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out, seed=1, overwrite_output_dir=True))
    assert summary["status"] == "completed" and read_summary(out)["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locks", "run"]


def test_overwrite_refuses_a_run_with_user_files_beside_it(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run_training(tiny_cfg(tiny_bert_dir, tiny_glue_dir, out))
    (out / "my_analysis.ipynb").write_text("{}")
    before = snapshot(out)
    assert run_cli(*train_args(tiny_bert_dir, tiny_glue_dir, out, "--overwrite_output_dir")) == 2
    assert "my_analysis.ipynb" in capsys.readouterr().err
    assert snapshot(out) == before


def test_sweep_prechecks_every_run_directory(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    import yaml

    from rankwise.runs.naming import run_name
    from rankwise.config import config_from_dict

    base = {"model": str(tiny_bert_dir), "data_dir": str(tiny_glue_dir), "task": "cola", "num_train_epochs": 1,
            "quiet": True}
    sweep = tmp_path / "s.yaml"
    (tmp_path / "afile").write_text("x")
    sweep.write_text(yaml.safe_dump({"base": base, "grid": {"rank": [2, 4]}, "output_dir": str(tmp_path / "afile")}))
    assert run_cli("sweep", sweep) == 2
    assert "is a file" in capsys.readouterr().err

    root = tmp_path / "runs"
    sweep.write_text(yaml.safe_dump({"base": base, "grid": {"rank": [2, 4]}, "output_dir": str(root)}))
    second = root / run_name(config_from_dict({**base, "rank": 4, "seed": 0}))
    second.mkdir(parents=True)
    (second / "todo.txt").write_text("mine")
    assert run_cli("sweep", sweep) == 2  # refused before the first run starts
    err = capsys.readouterr().err
    assert "todo.txt" in err and second.name in err
    assert sorted(p.name for p in root.iterdir()) == [second.name] and (second / "todo.txt").read_text() == "mine"
