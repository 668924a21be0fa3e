"""Sweeps: a YAML grid × variants × seeds → validated run configs → resumable runs, locally or on Ray.

Sweep file (YAML)::

    base:                 # RunConfig fields shared by every run (any option of `rankwise train`)
      task: cola
      method: loraxs
      allocation: learned
    grid:                 # every field given as a list expands; cartesian product over fields
      alpha_min: [0.1, 0.5]
      lr_scheduler: [constant_schedule, linear_schedule_with_warmup]
    variants:             # optional named override sets: not crossed with each other, crossed with the grid
      - {label: "baseline r8", allocation: uniform, rank: 8}
    seeds: [0, 1, 2]
    output_dir: runs/my_sweep   # parent of the run directories (relative to where you run the command)

The flat form (RunConfig fields at the top level, lists expand; plus `seeds` and `output_dir`) works too.
A base/grid field that does not apply to a variant (the learned-allocation knobs for a fixed-rank
baseline, say) is dropped for that variant, so a baseline is not re-run once per grid value of a knob
it does not have.

Each run's directory is `<output_dir>/<run_name(config)>`. A run whose summary.json says completed or
diverged is finished and skipped; anything else (never started, killed half-way, failed) is run again
from scratch. A finished run whose config.json differs from the requested config in a setting that changes
results is neither skipped nor replaced: the sweep reports it as a conflict (a run name that came to mean
another config, e.g. after a default changed without an entry in runs/naming.py, NAME_DEFAULTS). A per-run lock file
(`<output_dir>/.locks/<name>.lock`, flock) keeps two sweeps over the same directory from running the same
config at once.
"""

from __future__ import annotations

from ..config import applies
from ..runs.rundir import SUMMARY
from ..runs.state import config_conflicts, run_state
from .points import override, point_values
from .runners import BACKENDS, cuda_memory, run_one, run_sweep, threads_per_run, visible_gpus
from .spec import RUN_STATES, SPEC_KEYS, check_configs, describe_runs, expand, load_sweep, parse_sweep

__all__ = ["load_sweep", "parse_sweep", "override", "point_values", "expand", "applies", "check_configs", "run_sweep",
           "run_one", "run_state", "threads_per_run", "describe_runs", "config_conflicts", "visible_gpus",
           "cuda_memory", "BACKENDS", "RUN_STATES", "SPEC_KEYS", "SUMMARY"]
