"""Reports survive bad runs (issue 32): a corrupt, truncated, unreadable or foreign metrics.jsonl (or
allocation.jsonl) skips its run with a warning that names it, never a traceback; a report is never written into a
run directory (`report --out`, `lr-sweep --report_dir`)."""

from pathlib import Path

import pytest

from conftest import run_cli
from conftest import fake_run


def corrupt_byte(run: Path) -> str:
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"type": "eval", "step": 99, "x": "\xff"}\n')
    return "metrics.jsonl is corrupt: byte 0xff at offset"


def foreign_line(run: Path) -> str:
    with open(run / "metrics.jsonl", "a") as f:
        f.write("[1, 2]\n")
    return "metrics.jsonl line 7 is not a rankwise record (`[1, 2]`"


def cut_mid_line(run: Path) -> str:
    path = run / "metrics.jsonl"
    path.write_bytes(path.read_bytes()[:-20])
    return "metrics.jsonl line 6 is not JSON (cut short): corrupt or truncated"


def cut_at_a_line(run: Path) -> str:
    path = run / "metrics.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:4]))
    return "metrics.jsonl lacks the final evaluation summary.json records (step 30): truncated"


def unreadable(run: Path) -> str:
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()  # reading it fails with an OSError, as an unreadable file does (even as root)
    return "metrics.jsonl cannot be read (Is a directory)"


def bad_allocation(run: Path) -> str:
    (run / "allocation.jsonl").write_bytes(b"\x00\x01garbage\n")
    return "allocation.jsonl line 1 is not JSON"


@pytest.mark.parametrize("damage", [corrupt_byte, foreign_line, cut_mid_line, cut_at_a_line, unreadable,
                                    bad_allocation])
def test_a_damaged_run_is_skipped_with_a_warning_that_names_it(damage, tmp_path, capsys):
    root = tmp_path / "runs"
    good = fake_run(root, [0.2, 0.3, 0.4], allocation="learned", rank_average=20, seed=0)
    bad = fake_run(root, [0.1, 0.5, 0.6], allocation="learned", rank_average=20, seed=1)
    expected = damage(bad)
    assert run_cli("report", root, "--out", tmp_path / "report") == 0
    out = capsys.readouterr().out
    assert f"warning: skipping {bad}: {expected}" in out, out
    assert "1 runs in 1 configurations" in out and str(good) not in out
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"skipping {bad}: {expected}" in report and "40.00" in report and "60.00" not in report


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_report_is_never_written_into_a_run_directory(tmp_path, capsys):
    root = tmp_path / "runs"
    run = fake_run(root, [0.2, 0.3], seed=0)
    (tmp_path / "link").symlink_to(run)
    before = snapshot(tmp_path)
    for out, where in ((run, "is a run directory"), (run / "report", f"is inside the run directory `{run}`"),
                       (tmp_path / "link" / "r", f"is inside the run directory `{run}`")):
        assert run_cli("report", root, "--out", out) == 2
        assert f"--out: `{out}` {where}; a report is never written into a run" in capsys.readouterr().err
    assert snapshot(tmp_path) == before and not (run / "report").exists()
    assert run_cli("report", root, "--out", root / "report") == 0  # beside the runs, as `rankwise sweep` suggests


def test_lr_sweep_refuses_a_report_folder_in_a_run_before_any_run(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    run = fake_run(tmp_path, [0.2], seed=0)
    assert run_cli("lr-sweep", "--task", "sst2", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--lrs", "1e-3",
                   "--output_dir", tmp_path / "sweep", "--report_dir", run / "lr", "--epochs", "1") == 2
    assert f"--report_dir: `{run / 'lr'}` is inside the run directory `{run}`" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists() and not (run / "lr").exists()
