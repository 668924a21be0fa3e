"""One writer per run directory whatever the path (issue 32): the lock follows symlinks (to the run directory and
to its parent), `..` and relative paths to the real directory, so a second `train` through another spelling is
refused while the first writes, and a run through a symlink is written (and replaced) in the real directory."""

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, run_cli
from rankwise.runs.rundir import read_summary
from rankwise.runs.state import is_locked, lock_path


def spellings(tmp_path: Path) -> tuple[Path, list]:
    """A run directory and other paths to it: symlinks to it and to its parent, `..` through a symlink, relative."""
    real = tmp_path / "runs" / "run"
    real.mkdir(parents=True)
    (tmp_path / "link_run").symlink_to(real)
    (tmp_path / "link_parent").symlink_to(real.parent)
    (tmp_path / "elsewhere").mkdir()
    return real, [tmp_path / "link_run", tmp_path / "link_parent" / "run",
                  tmp_path / "link_run" / ".." / "run",  # `..` of the symlink's target, not of the link's folder
                  tmp_path / "elsewhere" / ".." / "runs" / "run", Path("../runs/run"), Path("../link_run")]


def test_every_spelling_of_a_run_directory_takes_its_one_lock(tmp_path, monkeypatch):
    real, paths = spellings(tmp_path)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert {lock_path(p) for p in paths} == {lock_path(real)} == {real.parent / ".locks" / "run.lock"}


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_second_writer_through_a_symlink_or_dotdot_is_refused(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    real, paths = spellings(tmp_path)
    args = ("--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "cola", "--num_train_epochs", "1",
            "--rank", "2", "--quiet", "--save_model", "false")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom rankwise.runs.state import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)",
                               str(real)], env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(tmp_path / "link_run")
        for path in paths[:4]:
            assert run_cli("train", *args, "--output_dir", path) == 2
            assert f"is being written by process {holder.pid} " in capsys.readouterr().err
        assert not any(real.iterdir())  # nothing written while the first writer holds it
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10
    while is_locked(real) and time.time() < deadline:
        time.sleep(0.05)
    assert run_cli("train", *args, "--output_dir", tmp_path / "link_run") == 0
    assert read_summary(real)["status"] == "completed" and (tmp_path / "link_run").is_symlink()
    before = snapshot(real)
    # --overwrite_output_dir through the symlink replaces the real directory and keeps the link
    assert run_cli("train", *args, "--output_dir", tmp_path / "link_run", "--seed", "1", "--overwrite_output_dir") == 0
    assert (tmp_path / "link_run").is_symlink() and read_summary(real)["seed"] == 1 and snapshot(real) != before
    assert sorted(p.name for p in real.parent.iterdir()) == [".locks", "run"]
