"""The LR-ratio study (`report --lr_ratio`, `rankwise lr-sweep`): the optimal learning rate of each LR curve
and its ratio to full fine-tuning's.

    analysis.py   run directories → LR-curve points → optimum per curve and seed → ratios over seeds
    figures.py    loss against learning rate; optimal-LR ratio against rank
    markdown.py   the section (`lr_ratio_report`) and its `rankwise report` hook (`section`)
"""

from .analysis import Optimum, fit_optima, load_points, log_quadratic_optimum, summarize
from .markdown import lr_ratio_report, section

__all__ = ["Optimum", "log_quadratic_optimum", "load_points", "fit_optima", "summarize", "lr_ratio_report", "section"]
