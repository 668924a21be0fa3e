"""How values read in a report: `–` for a missing value, `5` for 5.0, `68.20 ± 0.50`, task and matrix names,
GitHub markdown tables. Shared by every section; no statistics and no figures here."""

from __future__ import annotations

import math

DASH = "–"

# In the GLUE paper's order, which is the order reports show tasks in.
TASK_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
              "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "alpaca": "Alpaca"}

# Suffixes of target-matrix names (BERT/RoBERTa, GPT-2) and how figures and tables call them.
MATRIX_NAMES = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
                "attention.output.dense": "attn out", "intermediate.dense": "ffn in", "output.dense": "ffn out",
                "attn.c_attn": "qkv", "attn.c_proj": "attn out", "mlp.c_fc": "ffn in", "mlp.c_proj": "ffn out"}


def is_missing(value) -> bool:
    """None or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def short_text(value) -> str:
    """A value as reports write it: `5` for 5.0, `0.001`, `1e-05` (floats as `%g`); anything else as `str()`."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def value_text(value) -> str:
    """`short_text`, or `–` for a missing value."""
    return DASH if is_missing(value) else short_text(value)


def number(value, fmt: str = "g") -> str:
    """A number for a table cell: `–` when missing; numbers as `short_text(float(value))` (fmt "g") or
    `format(value, fmt)`."""
    if is_missing(value):
        return DASH
    if fmt == "g":
        return short_text(float(value)) if isinstance(value, (int, float)) else str(value)
    return format(value, fmt)


def thousands(value) -> str:
    """A count rounded to an integer with thousands separators: `4,800`; `–` when missing."""
    return DASH if is_missing(value) else f"{int(round(value)):,}"


def median_std(median, std, digits: int = 2) -> str:
    """`68.20 ± 0.50`; `68.20 ± –` for a single seed; `–` when no run completed."""
    if is_missing(median):
        return DASH
    return f"{median:.{digits}f} ± " + (DASH if is_missing(std) else f"{std:.{digits}f}")


def signed(value) -> str:
    """`+1.25`, `-0.40`; `–` when missing."""
    return DASH if is_missing(value) else f"{value:+.2f}"


def two_digits(value) -> str:
    """`0.42`; `–` when missing."""
    return DASH if is_missing(value) else f"{value:.2f}"


def p_text(value) -> str:
    """A p-value: `0.034`, `<0.001`; `–` when missing."""
    if is_missing(value):
        return DASH
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def plural(n: int, word: str) -> str:
    """`1 run`, `3 runs`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def task_name(task: str) -> str:
    """`cola` -> `CoLA`; an unknown task as it is."""
    return TASK_NAMES.get(task, task)


def task_order(tasks) -> list[str]:
    """The distinct tasks of `tasks` in GLUE's order (CoLA, SST-2, MRPC, STS-B, …, RTE); others after them, in
    the order they first appear."""
    known = list(TASK_NAMES)
    distinct = list(dict.fromkeys(tasks))
    return sorted(distinct, key=lambda t: (known.index(t) if t in known else len(known), distinct.index(t)))


def short_matrix_name(name: str, layer: int | None = None) -> str:
    """`bert.encoder.layer.3.attention.self.query` → `L3 query`; `...output.dense` → `L3 ffn out`."""
    suffix = next((v for k, v in sorted(MATRIX_NAMES.items(), key=lambda kv: -len(kv[0])) if name.endswith(k)), None)
    if suffix is None:
        suffix = ".".join(p for p in name.split(".")[-2:] if not p.isdigit())
    return f"L{layer} {suffix}" if layer is not None else suffix


def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A GitHub markdown table; `align` per column: "l" or "r" (default: left)."""
    align = align or ["l"] * len(header)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)
