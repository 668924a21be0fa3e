"""`rankwise report --from_csv`: a report made again from a committed results.csv gives the same statistics as one
made from the run directories, keeps (and says it keeps) the figures that need per-step records, writes no absolute
path of the machine, and refuses bad input with exit 2 before writing anything."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from conftest import run_cli
from rankwise.report import build_report
from test_frontier_report import LEARNED_GAIN, write_frontier


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """(from run directories, from its results.csv) report folders of a frontier with a learned arm."""
    root = write_frontier(tmp_path_factory.mktemp("csv") / "runs", LEARNED_GAIN, annealing=True)
    first = root.parent / "from_runs"
    build_report([root], first)
    second = root.parent / "from_csv"
    for figure in first.glob("eval_curves*.png"):  # an earlier report's figure in the output folder
        second.mkdir(exist_ok=True)
        shutil.copy(figure, second / figure.name)
    assert run_cli("report", "--from_csv", first / "results.csv", "--out", second) == 0
    return first, second


def test_the_statistics_from_a_results_csv_are_those_from_the_run_directories(reports):
    first, second = reports
    for name in ("frontier_comparisons.csv", "frontier_learning_rates.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(first / name), pd.read_csv(second / name))
    a, b = (first / "report.md").read_text(), (second / "report.md").read_text()
    section = lambda text: text[text.index("## Budget frontier"):text.index("\n## ", text.index("## Budget frontier") + 1)]  # noqa: E731
    assert section(a) == section(b)
    assert "Made from that results.csv (`rankwise report --from_csv`)" in b


def test_figures_that_need_per_step_records_are_kept_and_say_so(reports):
    _, second = reports
    text = (second / "report.md").read_text()
    assert "![Validation metric per epoch](eval_curves.png)" in text
    assert text.count("*Kept from the report made from the run directories, not redrawn") >= 1
    assert "frontier_cola.png" in text and (second / "frontier_cola.png").is_file()  # redrawn: scores suffice


def test_no_table_carries_an_absolute_path_of_this_machine(reports, tmp_path, monkeypatch):
    first, _ = reports
    results = pd.read_csv(first / "results.csv")
    results["data_dir"] = str(tmp_path / "shared" / "data")  # as a run on this machine records it
    results["run_dir"] = [str(tmp_path / "runs" / name) for name in results["run_name"]]
    results.to_csv(tmp_path / "results.csv", index=False)
    monkeypatch.chdir(tmp_path / "runs" if (tmp_path / "runs").is_dir() else tmp_path)
    out = tmp_path / "again"
    assert run_cli("report", "--from_csv", tmp_path / "results.csv", "--out", out) == 0
    for name in ("results.csv", "configurations.csv", "report.md"):
        assert str(tmp_path) not in (out / name).read_text()
    written = pd.read_csv(out / "results.csv")
    assert (written["data_dir"] == os.path.join("shared", "data")).all()  # relative to where the command ran
    assert written["run_dir"].str.startswith("runs/").all()


def test_configurations_are_named_again_from_their_configured_labels(reports, tmp_path):
    first, _ = reports
    results = pd.read_csv(first / "results.csv")
    results["label"] = [f"older name #{k}" for k in range(len(results))]  # a CSV written by an older naming
    results.to_csv(tmp_path / "results.csv", index=False)
    assert run_cli("report", "--from_csv", tmp_path / "results.csv", "--out", tmp_path / "again") == 0
    named = pd.read_csv(tmp_path / "again" / "configurations.csv")["label"]
    assert sorted(named) == sorted(pd.read_csv(first / "configurations.csv")["label"])
    assert not named.str.startswith("older name").any()


@pytest.mark.parametrize("args, words", [
    ([], "give run directories or --from_csv RESULTS_CSV"),
    (["--from_csv", "missing.csv"], "`missing.csv` is not a file"),
    (["--from_csv", "not_results.csv"], "is not a rankwise results.csv (no column"),
])
def test_bad_from_csv_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "not_results.csv", index=False)
    assert run_cli("report", *args, "--out", tmp_path / "out") == 2
    assert words in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_run_directories_and_a_csv_together_are_refused(reports, tmp_path, capsys):
    first, _ = reports
    assert run_cli("report", first, "--from_csv", first / "results.csv", "--out", tmp_path / "out") == 2
    assert "not both" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_with_the_study_section_the_frontier_does_not_test_the_same_runs_again(reports, tmp_path):
    first, _ = reports
    assert run_cli("report", "--from_csv", first / "results.csv", "--out", tmp_path / "r", "--study") == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "one family per question, so this section draws the frontier and does not test" in text
    assert (tmp_path / "r" / "study_comparisons.csv").is_file()
    assert not (tmp_path / "r" / "frontier_comparisons.csv").exists()
