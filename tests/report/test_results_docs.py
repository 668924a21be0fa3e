"""docs/results takes its claims from the reports' CSV files: the README's generated blocks equal what the CSVs give
today, every interval its prose quotes is a row of a comparisons CSV, every report folder has the CSV files its
blocks read, and nothing under docs/ carries a path of the machine that made it."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from conftest import REPO
from rankwise.report.docs_blocks import BLOCK, rewrite

RESULTS = REPO / "docs" / "results"
README = RESULTS / "README.md"
INTERVAL = re.compile(r"\[([+\-−]?\d+\.\d+), ([+\-−]?\d+\.\d+)\]")


def number(text: str) -> float:
    return float(text.replace("−", "-"))


def test_the_generated_blocks_are_what_the_csv_files_give():
    assert README.read_text() == rewrite(README), \
        "docs/results/README.md is out of date: run `python -m rankwise.report.docs_blocks docs/results/README.md`"


def test_every_interval_in_the_prose_is_a_row_of_a_comparisons_csv():
    rows = pd.concat([pd.read_csv(path) for path in RESULTS.glob("*/*_comparisons.csv")], ignore_index=True)
    known = {(round(lo, 2), round(hi, 2)) for lo, hi in zip(rows["ci_low"], rows["ci_high"]) if lo == lo}
    prose = BLOCK.sub("", README.read_text())
    quoted = [(number(a), number(b)) for a, b in INTERVAL.findall(prose)]
    assert quoted, "the README quotes no interval: is the pattern still right?"
    missing = [q for q in quoted if q not in known]
    assert not missing, f"intervals in docs/results/README.md that no *_comparisons.csv holds: {missing}"


@pytest.mark.parametrize("folder", sorted({m.group(2) for m in BLOCK.finditer(README.read_text())}))
def test_every_block_reads_a_report_folder_with_its_csv_files(folder):
    path = RESULTS / folder
    assert (path / "report.md").is_file() and (path / "results.csv").is_file()
    assert list(path.glob("*_comparisons.csv")) and list(path.glob("*_learning_rates.csv"))


def test_no_file_under_docs_carries_a_machine_path():
    pattern = re.compile(r"/work/|/root/|/tmp/|site-packages")
    found = [str(path.relative_to(REPO)) for path in (REPO / "docs").rglob("*")
             if path.is_file() and path.suffix in (".md", ".csv", ".json") and pattern.search(path.read_text())]
    assert not found, f"absolute machine paths in {found}"
