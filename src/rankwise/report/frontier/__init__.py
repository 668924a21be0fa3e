"""The budget frontier: score against adapter size, for runs that vary the budget (added automatically).

    analysis.py   runs → arms and budget points → each point at its best learning rate → paired differences to
                  uniform at the same budget; the parameters each arm needs to reach uniform's largest budget
    figures.py    score against adapter parameters (log scale), one line per arm with the seed spread
    markdown.py   the section (`frontier_markdown`) and its `rankwise report` hook (`section`)
"""

from .analysis import budget_comparisons, frontier_points, frontier_runs, parameters_needed, varies_budget
from .markdown import frontier_markdown, section

__all__ = ["frontier_runs", "varies_budget", "frontier_points", "budget_comparisons", "parameters_needed",
           "frontier_markdown", "section"]
