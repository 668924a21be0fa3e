"""The headline study: does learned allocation beat uniform rank at the same budget? (`report --study`)

    analysis.py   runs → arms → chosen learning rates → seed-paired comparisons; learned-allocation diagnostics
    figures.py    per-seed scores, score against learning rate, learned ranks by layer and matrix
    markdown.py   the section (`study_markdown`) and its `rankwise report` hook (`section`)
"""

from .analysis import (allocation_diagnostics, arm_names, compare_arms, default_baseline, learned_rank_grid,
                       with_arms)
from .markdown import section, study_markdown

__all__ = ["arm_names", "with_arms", "default_baseline", "compare_arms", "learned_rank_grid", "allocation_diagnostics",
           "study_markdown", "section"]
