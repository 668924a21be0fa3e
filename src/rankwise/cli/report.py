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
                   help="add the learned-vs-uniform study section (configs/study.yaml): per task and method the "
                        "learning rate chosen on the selection seeds, a method × task table on the other seeds, "
                        "seed-paired tests against the baseline (t-interval, t-test with Holm's correction, Wilcoxon, "
                        "the smallest detectable difference), per-seed score and learned-rank figures")
    p.add_argument("--study_baseline", metavar="METHOD",
                   help="the study's baseline method, as the section names it (default: the fixed-rank method "
                        "closest in adapter size to the learned methods' budget)")


def register(sub) -> None:
    p = sub.add_parser("report", help="tables (median ± std over seeds) and figures from run directories",
                       description="Aggregate run directories (or folders holding them, searched recursively) into "
                                   "report.md, results.csv (one row per run), configurations.csv (one row per "
                                   "configuration over seeds) and PNG figures. Runs without summary.json (killed or "
                                   "still running), or with a file that is corrupt, cut short or not rankwise's, are "
                                   "skipped with a warning naming it. --out must not be, or be inside, a run "
                                   "directory.")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run directories or folders holding them")
    p.add_argument("--from_csv", metavar="RESULTS_CSV",
                   help="make the report from a results.csv an earlier report wrote instead of run directories (every "
                        "statistic is computed again; figures that need per-step records are kept from that report)")
    p.add_argument("--selection_seeds", type=_seed_list, metavar="S,...",
                   help="seeds that choose each arm's learning rate and are never reported (default 0,1; runs of a "
                        "`search:` sweep use the search's seeds)")
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


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 0,1; got `{text}`")
    return seeds


def cmd_report(args) -> int:
    from ..errors import ConfigError
    from ..report import build_report

    if bool(args.run_dirs) == bool(args.from_csv):
        raise ConfigError("from_csv", "give run directories or --from_csv RESULTS_CSV" + (
            ", not both" if args.run_dirs else ""), "e.g. rankwise report runs/my_sweep --out report, or rankwise "
                                                   "report --from_csv docs/results/study_small/results.csv --out DIR")

    options = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    result = build_report(args.run_dirs, args.out, group_by=args.group_by, baseline=args.baseline, top=args.top,
                          options=options, warn=lambda text: print(f"warning: {text}"))
    print(f"{result['runs']} runs in {result['configurations_count']} configurations")
    for key in ("report", "results", "configurations"):
        print(f"wrote {result[key]}")
    for figure in result["figures"]:
        print(f"wrote {figure}")
    return 0
