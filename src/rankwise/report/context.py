"""What a report section gets: the runs, the configurations, the output folder and the command-line options."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd


@dataclass
class ReportContext:
    runs: pd.DataFrame  # one row per run (load_runs), all tasks
    groups: pd.DataFrame  # one row per configuration over seeds (group_runs), all tasks
    out: Path
    options: dict = field(default_factory=dict)  # command-line options, e.g. {"lr_ratio": True}
    figures: list[Path] = field(default_factory=list)

    def add_linked_figures(self, markdown: str) -> None:
        """Record the figures a section's markdown links to (the ones it drew this time, not whatever an earlier
        report left in the folder)."""
        for name in re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", markdown):
            self.add_figure(Path(self.out) / name)

    def add_figure(self, path: Path | None) -> Path | None:
        """Record a written figure (None: nothing was drawn) and return it."""
        if path:
            self.figures.append(path)
        return path


# A study section: markdown from the context (None: nothing to add); it may write figures into `ctx.out`.
Section = Callable[[ReportContext], "str | None"]
