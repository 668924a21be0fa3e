"""The LR-ratio study's section: per study, the optimal learning rate of each curve and its ratio to full
fine-tuning's ("LoRA Without Regret" finds ≈10×, roughly independent of rank), the per-seed optima, and the
figures.

`lr_ratio_report(run_dirs, out_dir)` writes `lr_ratio.csv` and two figures per study into `out_dir` and returns
the markdown section (used by `rankwise report RUNS --lr_ratio --out DIR` through `section`, and by
`rankwise lr-sweep`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...lr_curves import format_lr
from ..context import ReportContext
from ..text import DASH, is_missing, task_name
from .analysis import fit_optima, is_reference, load_points, summarize
from .figures import plot_loss_vs_lr, plot_ratio_vs_rank

HEADING = "## Learning-rate ratio: adapters vs full fine-tuning\n"
METHOD_TEXT = (
    "For each curve (method, rank, α, α policy) and seed, a run's validation loss is its best over epochs "
    "(on the GLUE dev set). The optimal learning rate is the vertex of the parabola in log10(lr) through "
    "the grid minimum and its two neighbours; when the minimum is at the edge of the grid (or next to a "
    "diverged run), or the three points are not convex, the grid point is used and flagged †. Diverged runs "
    "have no loss and are left out of the fit. **Optimal LR** is the median over seeds (in log space) with "
    "its range. **Ratio** is the adapter's optimum ÷ full fine-tuning's for the same seed, median and range "
    "over seeds; **ratio of medians** divides the two median optima. Per-seed values: `lr_ratio.csv`.\n")


def section(ctx: ReportContext) -> str | None:
    """`rankwise report` section hook (`register_section(section)`): with `--lr_ratio` in the report's
    options, the LR-ratio analysis of the report's runs, figures written beside report.md."""
    if not ctx.options.get("lr_ratio"):
        return None
    text = lr_ratio_report([Path(d) for d in ctx.runs["run_dir"]], ctx.out)
    ctx.add_linked_figures(text)
    return text


def lr_ratio_report(run_dirs: list[Path], out_dir: Path) -> str:
    """Analyse the LR curves among `run_dirs`; write `lr_ratio.csv` and the figures into `out_dir`;
    return the markdown section."""
    out_dir = Path(out_dir)
    notes: list[str] = []
    points = load_points(run_dirs, warn=notes.append)
    lines = [HEADING]
    if points.empty:
        return "\n".join(lines + ["No finished uniform-rank runs with a learning rate were found.\n"])
    out_dir.mkdir(parents=True, exist_ok=True)
    optima = fit_optima(points)
    summary = summarize(optima)
    optima.to_csv(out_dir / "lr_ratio.csv", index=False)

    lines.append(METHOD_TEXT)
    studies = list(dict.fromkeys(points["study"]))
    for number, study in enumerate(studies, 1):
        suffix = f"_{number}" if len(studies) > 1 else ""
        lines += _study_lines(points[points["study"] == study], optima[optima["study"] == study],
                              _in_curve_order(summary[summary["study"] == study]), out_dir, suffix)
    if notes:
        lines.append("Skipped: " + "; ".join(notes) + "\n")
    return "\n".join(lines)


def _study_lines(part: pd.DataFrame, optima: pd.DataFrame, table: pd.DataFrame, out_dir: Path,
                 suffix: str) -> list[str]:
    """One study: the curves' table, the per-seed table, the two figures and the fallback warnings."""
    title = _study_title(part)
    lines = [f"### {title}\n" if suffix else f"Study: {title}.\n", *_curves_table(table)]
    if not table["method"].map(is_reference).any():
        lines.append("\nNo full fine-tuning runs in this study, so no ratio: add them with "
                     "`rankwise lr-sweep ... --full-finetune` into the same output directory.")
    lines.append("\nScale: the multiplier of B·A (α/r, or α/√r for rsLoRA). Head LR: the classification head "
                 "trains at the swept learning rate unless the curve says otherwise.\n")
    lines += _seeds_table(optima)

    figure = plot_loss_vs_lr(part, optima, table, out_dir / f"lr_ratio_loss_vs_lr{suffix}.png",
                             f"{title}\nvalidation loss vs learning rate")
    lines.append(f"\n![Validation loss against learning rate, one curve per rank]({figure.name})\n")
    figure = plot_ratio_vs_rank(table, out_dir / f"lr_ratio_vs_rank{suffix}.png",
                                f"{title}\noptimal learning rate relative to full fine-tuning")
    if figure is not None:
        lines.append(f"![Optimal-LR ratio to full fine-tuning against rank]({figure.name})\n")

    warnings = optima[optima["warning"].notna()]
    if len(warnings):
        lines.append("Warnings:\n")
        lines += [f"- {row['label']}, seed {row['seed']}: {row['warning']}" for _, row in warnings.iterrows()]
        lines.append("")
    return lines


def _curves_table(table: pd.DataFrame) -> list[str]:
    """Per curve: its scale, seeds, median optimum and range, and the ratio to full fine-tuning's."""
    lines = ["| Curve | Scale | Seeds | Optimal LR (median) | Range over seeds | Ratio to full FT "
             "(median) | Ratio range | Ratio of medians |", "|---|---|---|---|---|---|---|---|"]
    for _, row in table.iterrows():
        flag = " †" if row["fallbacks"] else ""
        scale = DASH if row["scale"] is None or pd.isna(row["scale"]) else f"{row['scale']:.3g}"
        adapter = not is_reference(row["method"])
        ratio = _x(row["ratio"]) if adapter else "1 (reference)"
        ratio_range = (_x(row["ratio_min"]) + " – " + _x(row["ratio_max"])) \
            if adapter and row["ratio"] is not None else DASH
        lines.append(f"| {row['label']} | {scale} | {', '.join(map(str, row['seeds']))} | "
                     f"{_lr(row['optimal_lr'])}{flag} | {_lr(row['optimal_lr_min'])} – {_lr(row['optimal_lr_max'])} | "
                     f"{ratio} | {ratio_range} | {_x(row['ratio_of_medians']) if adapter else DASH} |")
    return lines


def _seeds_table(optima: pd.DataFrame) -> list[str]:
    """Per curve and seed: the grid minimum, the optimum and how it was found, and the diverged runs."""
    lines = ["| Curve | Seed | Grid minimum (LR, loss) | Optimum (LR, loss) | How | Diverged LRs |",
             "|---|---|---|---|---|---|"]
    for _, row in _in_curve_order(optima).iterrows():
        grid = DASH if row["grid_lr"] is None or pd.isna(row["grid_lr"]) else \
            f"{_lr(row['grid_lr'])}, {row['grid_loss']:.4f}"
        best = DASH if row["optimal_lr"] is None or pd.isna(row["optimal_lr"]) else \
            f"{_lr(row['optimal_lr'])}, {row['loss_at_optimum']:.4f}"
        how = row["how"] + (" †" if row["how"] != "fit" else "")
        lines.append(f"| {row['label']} | {row['seed']} | {grid} | {best} | {how} | {row['diverged']} of "
                     f"{row['lrs']} |")
    return lines


def _lr(value) -> str:
    return DASH if is_missing(value) else format_lr(float(value), 3)


def _x(value) -> str:
    return DASH if is_missing(value) else f"{float(value):.2f}×"


def _in_curve_order(table: pd.DataFrame) -> pd.DataFrame:
    """Adapter curves by method, α policy and rank, full fine-tuning last; seeds in order."""
    def key(i):
        row = table.loc[i]
        return (is_reference(row["method"]), str(row["method"]), str(row["alpha_policy"]),
                0 if pd.isna(row["rank"]) else int(row["rank"]), int(row["seed"]) if "seed" in row else 0)

    return table.loc[sorted(table.index, key=key)]


def _study_title(part: pd.DataFrame) -> str:
    first = part.iloc[0]
    epochs = ", ".join(str(e) for e in sorted(part["epochs"].unique()))
    samples = part["train_samples"].dropna().unique()
    size = f"{int(samples[0]):,} training examples" if len(samples) == 1 else "all training examples"
    return f"{task_name(first['task'])}, {first['model']}, {size}, {epochs} epochs"
