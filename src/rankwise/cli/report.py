"""`rankwise report RUN_DIRS... --out DIR`: tables (median ± std over seeds) and figures from run directories."""

from __future__ import annotations

import argparse

from . import positive_int


def _fields(text: str) -> list[str]:
    fields = [f.strip() for f in text.split(",") if f.strip()]
    if not fields:
        raise argparse.ArgumentTypeError("expected comma-separated field names, e.g. rank_allocation_weights_init")
    return fields


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of study sections (rankwise.report.study_sections); each section reads them from `ctx.options`.
    The layer-wise placement section needs none: it appears whenever the runs include alpaca runs."""
    p.add_argument("--lr_ratio", action="store_true",
                   help="add the LR-ratio analysis (`rankwise lr-sweep` runs): optimal learning rate per method, "
                        "rank and alpha policy from a quadratic fit in log10(lr), its ratio to full fine-tuning's, "
                        "loss-vs-LR and ratio-vs-rank figures")
    p.add_argument("--study", action="store_true",
                   help="add the learned-vs-uniform study section (configs/study.yaml): per task and method the best "
                        "learning rate, a method × task table, seed-paired tests against the baseline (bootstrap CI, "
                        "t-test with Holm's correction, Wilcoxon), per-seed score and learned-rank figures")
    p.add_argument("--study_baseline", metavar="METHOD",
                   help="the study's baseline method, as the section names it (default: the fixed-rank method "
                        "closest in adapter size to the learned methods' budget)")


def register(sub) -> None:
    p = sub.add_parser("report", help="tables (median ± std over seeds) and figures from run directories",
                       description="Aggregate run directories (or folders holding them, searched recursively) into "
                                   "report.md, results.csv (one row per run), configurations.csv (one row per "
                                   "configuration over seeds) and PNG figures. Runs without summary.json (killed or "
                                   "still running) are skipped with a warning.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories or folders holding them")
    p.add_argument("--out", required=True, help="folder for report.md, results.csv and the figures")
    p.add_argument("--group_by", type=_fields, metavar="FIELD,...",
                   help="compare groups of configurations by these config fields, e.g. "
                        "rank_allocation_weights_init or alpha_min,alpha_max (a table and the box plot's colours)")
    p.add_argument("--baseline", metavar="LABEL_OR_QUERY",
                   help="baseline configuration(s): a configuration label as shown in the report, or a pandas query "
                        "such as \"allocation == 'uniform' and rank == 25\" (default: the fixed-rank uniform "
                        "configurations, when there are others)")
    p.add_argument("--top", type=positive_int, default=6,
                   help="configurations drawn in the per-epoch figure besides the baselines (default 6)")
    add_study_arguments(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ..report import build_report

    options = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    result = build_report(args.run_dirs, args.out, group_by=args.group_by, baseline=args.baseline, top=args.top,
                          options=options, warn=lambda text: print(f"warning: {text}"))
    print(f"{result['runs']} runs in {result['configurations_count']} configurations")
    for key in ("report", "results", "configurations"):
        print(f"wrote {result[key]}")
    for figure in result["figures"]:
        print(f"wrote {figure}")
    return 0
