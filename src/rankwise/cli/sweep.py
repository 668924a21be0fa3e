"""`rankwise sweep CONFIG.yaml`: a grid × variants × seeds of runs, resumable, in parallel or on Ray."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from ..errors import ConfigError
from . import positive_int

FORMAT = """\
sweep file (YAML):
  base:                  # options shared by every run (any option of `rankwise train`)
    task: cola
    method: loraxs
    allocation: learned
  grid:                  # every option given as a list expands (cartesian product)
    alpha_min: [0.1, 0.5]
    lr_scheduler: [constant_schedule, linear_schedule_with_warmup]
  variants:              # optional: named override sets, crossed with the grid, not with each other
    - {label: "LoRA-XS r25", allocation: uniform, rank: 25}
  seeds: [0, 1, 2]
  output_dir: runs/my_sweep   # parent of the run directories

Top-level options with list values (the flat form) work too. Each run is written to
<output_dir>/<run name>; finished runs (summary.json completed or diverged) are skipped when the
sweep is started again, and runs killed half-way are redone. A finished run whose config.json holds other
settings than the sweep asks for is kept as it is and reported as a conflict (the sweep exits 1).
"""


def _assignment(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got `{text}`")
    key, value = text.split("=", 1)
    return key.strip().lstrip("-"), yaml.safe_load(value)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got `{text}`") from None
    if not seeds:  # an empty list would otherwise run the file's seeds
        raise argparse.ArgumentTypeError("is empty; give the seeds to run, e.g. --seeds 0,1 (or drop --seeds for the "
                                         "file's)")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"repeats a seed ({text}); list each seed once")
    return seeds


def _selection(text: str) -> tuple[str, list[str]]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE[,VALUE...], got `{text}`")
    key, values = text.split("=", 1)
    values = [v.strip() for v in values.split(",") if v.strip()]
    if not values:  # would select no run
        raise argparse.ArgumentTypeError(f"`{text}` names no value; give FIELD=VALUE[,VALUE...]")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"`{text}` repeats a value; list each once")
    return key.strip().lstrip("-"), values


def select(configs: list, selections: list[tuple[str, list[str]]]) -> list:
    """The configs whose option FIELD is one of the given values, for every (FIELD, values) pair.

    Values compare as text (`learning_rate=0.005` matches 5e-3). An unknown field, or a value no config has,
    is a ConfigError naming the values that do exist, so a typo cannot silently select nothing.
    """
    for field, wanted in selections:
        if not configs:
            break
        if not hasattr(configs[0], field):
            raise ConfigError(f"--only {field}", "is not a run option", "Use an option of `rankwise train`, e.g. "
                                                                       "--only task=mrpc or --only label='LoRA-XS r20'")
        have = {_text(getattr(c, field)): None for c in configs}
        missing = [v for v in wanted if _text(v) not in have]
        if missing:
            raise ConfigError(f"--only {field}", f"no run of the sweep has {field}={', '.join(missing)}",
                              f"Use one of: {', '.join(have)}")
        keep = {_text(v) for v in wanted}
        configs = [c for c in configs if _text(getattr(c, field)) in keep]
    return configs


def _text(value) -> str:
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of configs × seeds (resumable; --jobs N, --backend ray)",
                       description="Run every configuration of a sweep file × its seeds. Everything is validated "
                                   "before the first run starts; finished runs are skipped on restart, killed runs "
                                   "are redone, and a failed or diverged run is recorded while the sweep goes on.",
                       epilog=FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="sweep YAML file")
    p.add_argument("--output_dir", help="parent directory of the runs (overrides the file's output_dir; "
                                        "default runs/<file name>)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="runs in parallel: local worker processes (or Ray tasks), each with max(1, cores // jobs) "
                        "torch threads (default 1: one run at a time in this process)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local processes (default) or Ray tasks (pip install 'rankwise[ray]')")
    p.add_argument("--ray_address", help="Ray cluster address for ray.init (default: start a local Ray instance)")
    p.add_argument("--ray_gpus_per_run", type=float, default=0.0, help="GPUs per Ray task (default 0)")
    p.add_argument("--runs_per_gpu", type=positive_int,
                   help="runs at once on each GPU: small models leave a GPU mostly idle. Local: --jobs defaults to "
                        "this × the visible GPUs, worker k is given GPU k mod GPUs (CUDA_VISIBLE_DEVICES), and the "
                        "runs are checked to fit in its memory before any starts; Ray: each task asks for 1/N GPU. "
                        "Without it, local workers on a GPU host are spread over the GPUs")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="list the runs (name and state: new, finished, running, unfinished = killed half-way, failed, "
                        "conflict = finished with other settings) and do nothing else")
    p.add_argument("--data_dir", help="GLUE data directory for every run (default: the file's, or $RANKWISE_DATA_DIR)")
    p.add_argument("--set", dest="overrides", type=_assignment, action="append", default=[], metavar="FIELD=VALUE",
                   help="force a run option for every run, e.g. --set num_train_epochs=1 (repeatable)")
    p.add_argument("--seeds", type=_seeds, help="comma-separated seeds, replacing the file's (e.g. 0,1)")
    p.add_argument("--only", dest="selections", type=_selection, action="append", default=[],
                   metavar="FIELD=V1[,V2]",
                   help="run only the runs whose option FIELD is one of the values, e.g. --only task=mrpc,stsb "
                        "--only label='LoRA-XS r20' (repeatable; all must hold). Run names stay those of the "
                        "whole sweep, so the subsets of several calls (or SLURM array tasks) add up to it")
    p.add_argument("--quiet", action="store_true", help="no per-run progress bars")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from ..sweep import RUN_STATES, describe_runs, expand, load_sweep, override, point_values, run_sweep

    spec = load_sweep(args.config)
    forced = dict(args.overrides)
    if len(forced) != len(args.overrides):  # dict() would keep the last value silently
        twice = next(k for i, (k, _) in enumerate(args.overrides) if k in [o for o, _ in args.overrides[:i]])
        raise ConfigError(f"--set {twice}", "is given more than once", "Give each option once")
    if args.data_dir:
        if "data_dir" in forced:
            raise ConfigError("data_dir", "and --set data_dir=... both set the data directory", "Give one of them")
        forced["data_dir"] = args.data_dir
    if args.backend != "ray" and args.ray_address:
        raise ConfigError("ray_address", "is only used with --backend ray", "Add --backend ray or drop --ray_address")
    if forced or args.seeds is not None:
        spec = override(spec, forced, args.seeds)
    if args.quiet:
        spec = override(spec, {"quiet": True})
    if spec.get("search"):
        return _cmd_search(args, spec)
    configs = expand(spec, args.output_dir, check_resources=not args.dry_run)
    root = Path(configs[0].output_dir).parent
    points, seeds = len(point_values(spec)), len(spec["seeds"])
    distinct = len(configs) // seeds
    merged = (f" ({points - distinct} grid point × variant combinations repeated another's options, from a variant "
              "that overrides a grid field or from options that do not apply to a variant; each is run once)"
              ) if distinct != points else ""
    print(f"{args.config}: {distinct} configurations × {seeds} seeds = {len(configs)} runs under {root}{merged}")
    if args.selections:
        total = len(configs)
        configs = select(configs, args.selections)
        print(f"--only: {len(configs)} of the {total} runs")
    if args.dry_run:
        from ..sweep import check_configs  # model and data checks that need no network

        for note in dict.fromkeys(check_configs(configs, allow_network=False)):
            print(f"note: {note}")
        states = describe_runs(configs)
        width = max(len("unfinished"), max(len(s) for _, s in states))
        for name, state in states:
            print(f"  {state:<{width}}  {name}")
        counts = {s: sum(1 for _, x in states if x == s) for s in RUN_STATES}
        print("dry run: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "; nothing was run")
        return 0
    records = run_sweep(configs, jobs=args.jobs, backend=args.backend, ray_address=args.ray_address,
                        quiet=args.quiet, gpus_per_run=args.ray_gpus_per_run, runs_per_gpu=args.runs_per_gpu)
    bad = [r for r in records if r["status"] in ("failed", "diverged")]
    for record in bad:
        print(f"{record['status']}: {record['name']}: {record['message']}")
    print(f"report: rankwise report {os.path.relpath(root) if not root.is_absolute() else root} --out {root / 'report'}")
    return 1 if any(r["status"] == "failed" for r in records) else 0


def _cmd_search(args, spec: dict) -> int:
    """A sweep with a `search:` block: each arm's learning rate searched on the search seeds, then the sweep's seeds
    run at the chosen rate (rankwise.sweep.search)."""
    from ..sweep.search import describe, run_config, run_search, search_arms
    from ..sweep import check_configs, expand, run_sweep

    search = spec["search"]
    configs = expand(spec, args.output_dir, check_resources=not args.dry_run)  # the runs every search starts with
    root = Path(configs[0].output_dir).parent
    arms = search_arms(spec)
    if args.selections:
        firsts = [run_config(spec, arm, search.start[0], search.seeds[0], root) for arm in arms]
        kept = {c.output_dir for c in select(firsts, args.selections)}
        arms = [arm for arm, c in zip(arms, firsts) if c.output_dir in kept]
        print(f"--only: {len(arms)} of the {len(firsts)} arms")
    halving = f", halving (keep the best 1/{search.halving} after each search seed)" if search.halving else ""
    print(f"{args.config}: {len(arms)} arms; {search.field} searched from "
          f"{', '.join(f'{r:g}' for r in search.start)} (steps of ×{search.factor:g}, at most {search.max_rates} "
          f"rates) on seeds {', '.join(map(str, search.seeds))}{halving}; then seeds "
          f"{', '.join(map(str, spec['seeds']))} at each arm's chosen rate; runs under {root}")
    if args.dry_run:
        for note in dict.fromkeys(check_configs(configs, allow_network=False)):
            print(f"note: {note}")
        for line in describe(spec, arms, root):
            print(line)
        print("dry run: nothing was run")
        return 0

    def run_batch(batch):
        return run_sweep(batch, jobs=args.jobs, backend=args.backend, ray_address=args.ray_address, quiet=args.quiet,
                         gpus_per_run=args.ray_gpus_per_run, runs_per_gpu=args.runs_per_gpu)

    data = run_search(spec, arms, root, run_batch)
    print(f"report: rankwise report {os.path.relpath(root) if not root.is_absolute() else root} --out {root / 'report'}")
    return 1 if any(arm["status"].startswith("failed") for arm in data["arms"]) else 0

