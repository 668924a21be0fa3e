"""`rankwise report`: run directories → report.md, results.csv, configurations.csv and PNG figures.

Where things live:

    build.py          build_report: checks the inputs, writes the header, the sections, the CSV files;
                      register_section for study sections of your own
    context.py        ReportContext: what a section gets (runs, configurations, output folder, options)
    aggregate.py      run directories → one row per run (load_runs) → one row per configuration (group_runs);
                      configuration labels; the default baselines
    stats.py          the statistics (numpy/scipy/pandas only: no figures, no text)
    text.py           how values read: numbers, median ± std, p-values, task and matrix names, markdown tables
    figures.py        what every figure shares: matplotlib (Agg, imported only to draw), atomic PNG files
    configurations/   the per-task part of every report: tables.py, figures.py, markdown.py
    placement/        the layer-wise placement study (alpaca runs, automatic)
    lr_ratio/         the LR-ratio study (--lr_ratio)
    study/            learned vs uniform rank at the same budget (--study)

Each study folder is split the same way: analysis.py (runs → numbers), figures.py (matplotlib) and
markdown.py (the section's text and its `section(ctx)` hook for `rankwise report`).
"""

from .aggregate import group_runs, load_runs, rank_text, resolve_baselines
from .build import EXTRA_SECTIONS, build_report, register_section, study_sections
from .context import ReportContext, Section
from .text import task_name, task_order

__all__ = ["build_report", "register_section", "study_sections", "ReportContext", "Section", "EXTRA_SECTIONS",
           "load_runs", "group_runs", "resolve_baselines", "rank_text", "task_name", "task_order"]
