"""The layer-wise placement study (alpaca runs; added to every report that has them).

    analysis.py   per strategy: eval loss, perplexity, size and time over seeds; budget-matched vs uniform
    figures.py    loss vs size, strategies compared, efficiency frontier
    markdown.py   the section (`placement_report`, `placement_markdown`) and its `rankwise report` hook (`section`)
"""

from .analysis import compare_with_uniform, pareto_front, strategy_stats
from .markdown import placement_markdown, placement_report, section

__all__ = ["strategy_stats", "compare_with_uniform", "pareto_front", "placement_markdown", "placement_report",
           "section"]
