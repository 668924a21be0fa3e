"""Blocks of a results README written from the reports' CSV files, so its claims cannot drift from them.

A block sits between `<!-- generated: KIND FOLDER -->` and `<!-- end generated -->`, FOLDER relative to the
README: `comparisons` (every row of FOLDER/*_comparisons.csv), `edges` (every arm and learning-rate field of
FOLDER/*_learning_rates.csv at the edge of its grid, with one value, or inside) or `search` (every arm of
FOLDER/search_arms.csv and the runs it took). `python -m
rankwise.report.docs_blocks README.md` rewrites the blocks; tests/report/test_results_docs.py checks that the committed
README equals its rewrite, and that every interval written in its prose is a row of a comparisons CSV.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd

from .text import DASH, markdown_table, p_text, short_text, signed, task_name

BLOCK = re.compile(r"<!-- generated: (\w+) ([^ ]+) -->\n.*?<!-- end generated -->", re.S)


def _csvs(folder: Path, suffix: str) -> list[pd.DataFrame]:
    return [pd.read_csv(path) for path in sorted(folder.glob(f"*_{suffix}.csv"))]


def comparisons_block(folder: Path) -> str:
    """Every comparison of the report in FOLDER: task, arm − reference, n, Δ, 95% t-interval, Holm p, family size,
    detectable difference, verdict."""
    rows = []
    for table in _csvs(folder, "comparisons"):
        for r in table.itertuples():
            arm = getattr(r, "point", r.arm) if isinstance(getattr(r, "point", None), str) else r.arm
            interval = DASH if pd.isna(r.ci_low) else f"[{signed(r.ci_low)}, {signed(r.ci_high)}]"
            rows.append([task_name(r.task), f"`{arm}` − `{r.reference}`", str(r.n), signed(r.mean_diff), interval,
                         p_text(r.p_holm), str(r.family_size) if r.in_family else DASH,
                         DASH if pd.isna(r.detectable) else f"{r.detectable:.2f}", r.verdict])
    if not rows:
        return "(no comparisons)"
    return markdown_table(["Task", "Comparison", "n", "Δ", "95% t-interval", "Holm p", "Family size", "Detectable",
                           "Verdict"], rows, ["l", "l", "r", "r", "l", "r", "r", "r", "l"])


def edges_block(folder: Path) -> str:
    """Where every chosen learning-rate value sits, per arm and field (the fields with one value for every arm in
    one line each)."""
    tables = _csvs(folder, "learning_rates")
    if not tables:
        return "(no learning-rate table)"
    table = pd.concat(tables, ignore_index=True).drop_duplicates(["task", "arm", "field"])
    table["tried"] = table["tried"].map(json.loads)
    lines = []
    several = table[table["tried"].map(len) > 1]
    for edge, words in (("lowest", "chosen at the lowest value of its grid"),
                        ("highest", "chosen at the highest value of its grid")):
        rows = several[several["edge"] == edge]
        if len(rows):
            lines.append(f"- {words} ({len(rows)}): " + "; ".join(
                f"{task_name(r.task)} `{r.arm}` {r.field} {short_text(float(r.chosen))} of "
                f"{', '.join(short_text(float(v)) for v in r.tried)}" for r in rows.itertuples()))
    inside = several[several["edge"] == "inside"]
    if len(inside):
        lines.append(f"- chosen inside its grid: {len(inside)} of the {len(several)} arm-field pairs with several "
                     "values tried")
    single = table[table["tried"].map(len) == 1]
    for field, rows in single.groupby("field", sort=False):
        values = ", ".join(short_text(float(v)) for v in sorted({v for t in rows["tried"] for v in t}))
        lines.append(f"- one value, not searched: `{field}` ({values}) for {len(rows)} of the "
                     f"{len(table[table['field'] == field])} arms")
    return "\n".join(lines) if lines else "(no arm)"


def search_block(folder: Path) -> str:
    """Every arm of FOLDER/search_arms.csv (the rates a `search:` sweep tried, the one it chose and where it sits,
    its search and answer runs) and the runs in all against a fixed grid of the same rates on every seed."""
    tables = _csvs(folder, "arms")
    if not tables:
        return "(no search)"
    arms = pd.concat(tables, ignore_index=True)
    rows = [[task_name(r.task), f"`{r.arm}`", ", ".join(short_text(float(v)) for v in json.loads(r.rates)),
             DASH if pd.isna(r.chosen) else short_text(float(r.chosen)), r.edge, str(r.search_runs),
             str(r.answer_runs)] for r in arms.itertuples()]
    search, answer = int(arms["search_runs"].sum()), int(arms["answer_runs"].sum())
    return "\n".join([
        markdown_table(["Task", "Arm", "Rates tried", "Chosen", "Where", "Search runs", "Answer runs"], rows,
                       ["l", "l", "l", "r", "l", "r", "r"]), "",
        f"Runs: {search + answer} ({search} search, {answer} answer); the same rates on every seed as a fixed grid: "
        f"{int(arms['fixed_grid_runs'].sum())}."])


KINDS = {"comparisons": comparisons_block, "edges": edges_block, "search": search_block}


def rewrite(readme: Path) -> str:
    """The README's text with every generated block written again from its CSV files."""
    readme = Path(readme)

    def fill(match: re.Match) -> str:
        kind, folder = match.group(1), match.group(2)
        if kind not in KINDS:
            raise ValueError(f"{readme}: unknown generated block `{kind}` (known: {', '.join(KINDS)})")
        return f"<!-- generated: {kind} {folder} -->\n{KINDS[kind](readme.parent / folder)}\n<!-- end generated -->"

    return BLOCK.sub(fill, readme.read_text())


def main(paths: list[str]) -> int:
    for path in paths:
        Path(path).write_text(rewrite(Path(path)))
        print(f"rewrote the generated blocks of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
