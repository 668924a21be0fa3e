"""The per-task part of every report: the learned-allocation tables, every configuration against the baselines,
the `--group_by` table, the figures (comparison over seeds, metric per epoch, ranks of the most interesting
configuration, alpha and budget schedules) and the runs that did not complete.

`task_sections(ctx, task, ...)` returns one task's markdown lines in that order; each part is one function
below, which returns its lines (none when it has nothing to show) and writes its figure into `ctx.out`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...errors import ConfigError
from ...methods import allocates_ranks, trains_adapter
from ..aggregate import IDENTITY_FIELDS, applicable, group_runs, resolve_baselines, row_strategy, strategy_mask
from ..context import ReportContext
from ..figures import kept_figure
from ..selection import edges_text, reported_cell, selection_text
from ..stats import lr_edges, select_learning_rates
from ..text import DASH, is_missing, markdown_table, median_std, plural, task_name, value_text
from .figures import allocation_heatmap, comparison_boxplot, eval_curves, final_ranks, ranks_by_layer, schedules
from .tables import adaptive_table, configurations_table, group_key, groups_table, not_completed_table

BASELINE_RULE = (" (each fixed-rank arm at the learning rate the one rule below chooses for it; `--baseline` names "
                 "others)")

# Fields shown as columns of the adaptive table; other fields that vary between learned configurations
# split it into one table per value combination (as the study's reports did, e.g. per LR scheduler).
ADAPTIVE_COLUMNS = {"task", "rank_min", "rank_max", "alpha_min", "alpha_max", "rank_allocation_lr", "rank_average",
                    "label"}
# Fields that make two learned configurations' schedules (alpha, budget) differ.
SCHEDULE_FIELDS = ("alpha_min", "alpha_max", "alpha_scheduler", "memory_start", "memory_end", "epochs_memory_start",
                   "epochs_memory_start_to_end", "rank_average", "epochs_rank_discrete", "num_train_epochs",
                   "max_train_samples", "per_device_train_batch_size")


@dataclass
class TaskPart:
    """One task's runs and configurations, and how its headings and figure files are named."""

    ctx: ReportContext
    runs: pd.DataFrame
    groups: pd.DataFrame
    baselines: dict[str, float]  # baseline label → its median
    heading: str  # "##", or "###" below a per-task heading
    prefix: str  # figure-file suffix: "" or "_cola"
    title: str  # figure-title prefix: "CoLA: " or ""
    baseline_rule: str = ""  # how the baselines were narrowed to one learning rate per arm, if they were

    @property
    def learned(self) -> pd.DataFrame:
        return self.groups[strategy_mask(self.groups, "learned")]

    def figure_path(self, name: str) -> Path:
        return self.ctx.out / f"{name}{self.prefix}.png"

    @property
    def from_csv(self) -> bool:
        """Made from a results.csv: figures that need per-step records are kept, not drawn."""
        return bool(self.ctx.options.get("from_csv"))

    def kept(self, name: str, alt: str) -> list[str]:
        """A kept figure's lines when the report comes from a results.csv, else none."""
        return kept_figure(self.ctx.out, self.figure_path(name).name, alt) if self.from_csv else []


def task_sections(ctx: ReportContext, task: str, prefix: str, heading: str, group_by: list[str] | None,
                  baseline: str | None, top: int) -> list[str]:
    """The markdown lines of one task's part of the report; its figures go to `ctx.out` (listed in ctx.figures)."""
    part = task_part(ctx, task, prefix, heading, baseline)
    return [*learned_tables(part), *all_configurations(part), *learning_rates(part), *by_group(part, group_by),
            *seed_figures(part, group_by, top), *focus_ranks(part), *schedule_figure(part), *not_completed(part)]


def task_part(ctx: ReportContext, task: str, prefix: str, heading: str, baseline: str | None) -> TaskPart:
    runs = ctx.runs[ctx.runs["task"] == task]
    groups = ctx.groups[ctx.groups["task"] == task].reset_index(drop=True)
    try:
        baseline_labels = resolve_baselines(groups, baseline)
    except ConfigError:  # matched configurations of another task only
        baseline_labels = []
    every_rate = baseline_labels
    if baseline is None:
        baseline_labels = at_chosen_rates(runs, baseline_labels, ctx.options.get("selection_seeds"))
    baselines = {label: float(groups.loc[groups["label"] == label, "median"].iloc[0]) for label in baseline_labels}
    return TaskPart(ctx, runs, groups, baselines, heading, prefix, f"{task_name(task)}: " if task else "",
                    BASELINE_RULE if len(baseline_labels) < len(every_rate) else "")


def arm_learning_rates(runs: pd.DataFrame, selection_seeds=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`runs` with each run's `arm`, a configuration without its learning rates; `select_learning_rates` of them)."""
    from ..study.analysis import configuration_arms, mask_inapplicable

    runs = mask_inapplicable(runs.assign(arm=configuration_arms(runs)))
    return runs, select_learning_rates(runs, selection_seeds)


def at_chosen_rates(runs: pd.DataFrame, labels: list[str], selection_seeds=None) -> list[str]:
    """The default baselines kept at the learning rate the one rule chooses for their arm: a uniform arm run at
    several rates is one baseline, not one per rate (an arm with no rate chosen yet keeps them all)."""
    mine = runs[runs["label"].isin(labels)]
    if mine.empty:
        return labels
    mine, table = arm_learning_rates(mine, selection_seeds)
    chosen = {arm: float(rates.loc[rates["chosen"], "learning_rate"].iloc[0])
              for arm, rates in table.groupby("arm") if rates["chosen"].any()}
    kept = {label for label, arm, rate in zip(mine["label"], mine["arm"], mine["learning_rate"].astype(float))
            if arm not in chosen or rate == chosen[arm]}
    return [label for label in labels if label in kept]


def learned_tables(part: TaskPart) -> list[str]:
    """The adaptive LoRA-XS study's table of the learned configurations, one per value of the fields it does not
    show."""
    learned = part.learned
    if learned.empty:
        return []
    out = [f"{part.heading} Learned rank allocation ({plural(len(learned), 'configuration')})\n",
           "The adaptive LoRA-XS study's table: one row per configuration over its seeds, best first. "
           "**LR** is the learning rate of the allocation weights (`rank_allocation_lr`), as in the study."]
    splits = _split_fields(learned)
    derived_any = False
    if splits:
        out.append(f"One table per value of {', '.join(f'`{s}`' for s in splits)}, which the table's columns "
                   "do not show.")
        for key, split in learned.groupby(splits, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            title = ", ".join(f"{s} = {value_text(v)}" for s, v in zip(splits, key))
            table, derived = adaptive_table(split)
            derived_any |= derived
            out.append(f"\n**{title}**\n\n{table}")
    else:
        table, derived_any = adaptive_table(learned)
        out.append("\n" + table)
    if derived_any:
        out.append("\n\\* no `rank_average` (a memory schedule sets the budget): the mean final hard rank over "
                   "the target matrices, median over seeds.")
    out.append("")
    return out


def _split_fields(learned: pd.DataFrame) -> list[str]:
    """Identity fields the adaptive table has no column for and whose value differs between `learned`'s rows."""
    out = []
    for f in IDENTITY_FIELDS:
        if f in ADAPTIVE_COLUMNS or f not in learned:
            continue
        if f in ("memory_start", "memory_end") and learned["rank_average"].notna().all():
            continue
        if learned[f].astype(str).nunique() > 1:
            out.append(f)
    return out


def all_configurations(part: TaskPart) -> list[str]:
    """Every configuration with its difference of medians to each baseline."""
    groups, baselines = part.groups, part.baselines
    out = [f"{part.heading} All configurations\n"]
    if baselines:
        described = "; ".join(_median_std_of(groups, label) for label in baselines)
        out.append(f"Baseline{'s' if len(baselines) > 1 else ''}: {described}{part.baseline_rule}. "
                   "Δ = configuration − baseline: the "
                   "mean of the differences paired by seed, with its 95% t-interval, the number of shared seeds and "
                   "the smallest difference those seeds could detect (80% power at α 0.05); descriptive (the learning "
                   "rate is not selected here and no test is made: the study and frontier sections hold the tests). "
                   "With fewer than 3 shared seeds, the difference of medians, exploratory."
                   "\n")
    out.append(configurations_table(groups, baselines))
    out.append("\nRanks: `r25` uniform rank; `16→4` linear decay; `5–30, avg 20` learned between rank_min and "
               "rank_max at an average rank of 20 (M: a budget schedule). Adapter params: trainable adapter "
               "parameters at the final ranks (classification head not included). LR: the adapter's learning "
               "rate. Time/run: median wall time of one run.\n")
    return out


def learning_rates(part: TaskPart) -> list[str]:
    """Each arm (a configuration without its learning rates) at the learning rate the report's one rule chooses,
    with where every learning-rate value sits in its grid; nothing when no arm ran at two rates or more."""
    runs, table = arm_learning_rates(part.runs, part.ctx.options.get("selection_seeds"))
    if table.empty or table.groupby("arm")["learning_rate"].nunique().max() < 2:
        return []
    rows = []
    for arm, rates in table.groupby("arm", sort=False):
        chosen = rates[rates["chosen"]]
        picked = chosen.iloc[0].to_dict() if len(chosen) else None
        rows.append([f"`{arm}`", rates["rule"].iloc[0], ", ".join(f"{v:g}" for v in sorted(rates["learning_rate"])),
                     f"{picked['learning_rate']:g}" if picked else DASH, reported_cell(picked)])
    return [f"{part.heading} Learning rates per arm\n",
            selection_text(table, noun="configuration without its learning rate (an arm)") + "\n",
            markdown_table(["Arm", "Rule", "Rates tried", "Chosen", "Reported median ± std"], rows,
                           ["l", "l", "l", "r", "l"]) + "\n", edges_text(lr_edges(runs, table))]


def _median_std_of(groups: pd.DataFrame, label: str) -> str:
    median, std = groups.loc[groups["label"] == label, ["median", "std"]].iloc[0]
    return f"**{label}** ({median_std(median, std)})"


def by_group(part: TaskPart, group_by: list[str] | None) -> list[str]:
    """With `--group_by`: one row per value of those fields, with its best configuration."""
    if not group_by:
        return []
    keyed = part.groups.copy()
    for b in group_by:
        keyed[b] = applicable(keyed, b)
    best = {}
    for _, g in keyed.iterrows():  # configurations are sorted best first
        best.setdefault(group_key(g.get(b) for b in group_by), g)
    return [f"{part.heading} By {', '.join(f'`{b}`' for b in group_by)}\n",
            groups_table(group_runs(part.runs, group_by), group_by, best) + "\n"]


def seed_figures(part: TaskPart, group_by: list[str] | None, top: int) -> list[str]:
    """The configurations compared over seeds (box plot) and the validation metric per epoch."""
    out = []
    figure = part.ctx.add_figure(comparison_boxplot(part.runs, part.groups, part.figure_path("comparison_boxplot"),
                                                    group_by, part.baselines, part.title))
    if figure:
        out.append(f"{part.heading} Comparison over seeds\n\n![Configurations compared over seeds]({figure.name})\n")
    if part.from_csv:  # metrics.jsonl is not in a results.csv
        kept = kept_figure(part.ctx.out, part.figure_path("eval_curves").name, "Validation metric per epoch")
        return out + ([f"{part.heading} Validation metric per epoch\n", *kept] if kept else [])
    figure = part.ctx.add_figure(eval_curves(part.runs, part.groups, part.figure_path("eval_curves"),
                                             list(part.baselines), top, part.title))
    if figure:
        out.append(f"{part.heading} Validation metric per epoch\n\n![Validation metric per epoch]({figure.name})\n")
    return out


def rank_focus(groups: pd.DataFrame) -> pd.Series | None:
    """The configuration whose ranks the report draws: the best learned one; without learned runs AdaLoRA's or
    EVA's, else the best non-uniform static configuration (None when there is none)."""
    learned = groups[strategy_mask(groups, "learned") & (groups["n"] > 0)]
    if not learned.empty:
        return learned.iloc[0]
    adaptive = groups[(groups["n"] > 0) & (groups["method"].map(allocates_ranks) | (
        groups["init"].fillna("default") == "eva" if "init" in groups else False))]
    static = groups[(groups["n"] > 0) & ~strategy_mask(groups, "baseline") & ~strategy_mask(groups, "learned")
                    & groups["method"].map(trains_adapter)]
    return adaptive.iloc[0] if not adaptive.empty else static.iloc[0] if not static.empty else None


def focus_ranks(part: TaskPart) -> list[str]:
    """Final ranks per matrix of the focus configuration (`rank_focus`) and, for learned or AdaLoRA ranks, how
    they moved during training."""
    focus = rank_focus(part.groups)
    if focus is None:
        return []
    label = focus["label"]
    runs = part.runs
    dirs = runs.loc[(runs["label"] == label) & (runs["status"] == "completed"), "run_dir"].tolist()
    learned = row_strategy(focus).learned
    kind = ("best learned configuration" if learned else
            "best AdaLoRA / EVA configuration" if allocates_ranks(focus["method"]) or focus.get("init") == "eva"
            else "best non-uniform configuration")
    out = [f"{part.heading} Ranks of the {kind}: {label}\n"]
    figure = part.ctx.add_figure(final_ranks(dirs, part.figure_path("final_ranks"),
                                             f"{part.title}final hard rank per target matrix — {label}"))
    if figure:
        out.append(f"![Final ranks per matrix]({figure.name})\n")
    else:
        out += part.kept("final_ranks", "Final ranks per matrix")
    figure = part.ctx.add_figure(ranks_by_layer(dirs, part.figure_path("ranks_by_layer"),
                                                f"{part.title}final hard rank by layer and component — {label}"))
    if figure:
        out.append(f"![Final ranks by layer, one line per component type]({figure.name})\n")
    else:
        out += part.kept("ranks_by_layer", "Final ranks by layer, one line per component type")
    if learned or allocates_ranks(focus["method"]):
        out += _allocation_over_training(part, focus)
    return out


def _allocation_over_training(part: TaskPart, focus: pd.Series) -> list[str]:
    label = focus["label"]
    run = median_seed_run(part.runs, label)
    figure = part.ctx.add_figure(allocation_heatmap(
        run["run_dir"], part.figure_path("allocation_heatmap"),
        f"{part.title}ranks over training — {label}, seed {run['seed']} (the median seed)"))
    if not figure:
        return part.kept("allocation_heatmap", "Allocation over training")
    if allocates_ranks(focus["method"]):
        legend = ("Rows: the adapted matrices in model order (L = layer); both panels: the rank triplets AdaLoRA's "
                  f"masks keep. Run: `{run['run_name']}`.\n")
    else:
        legend = ("Rows: the adapted matrices in model order (L = layer); left: the continuous ranks the allocation "
                  "weights give under the current budget; right: the hard ranks used at evaluation. "
                  f"Run: `{run['run_name']}`.\n")
    return [f"![Allocation over training]({figure.name})\n", legend]


def median_seed_run(runs: pd.DataFrame, label: str) -> pd.Series | None:
    """The completed run of configuration `label` whose score is closest to its median (None without one)."""
    ok = runs[(runs["label"] == label) & (runs["status"] == "completed")].dropna(subset=["score"])
    if ok.empty:
        return None
    median = ok["score"].median()
    return ok.iloc[(ok["score"] - median).abs().argsort(kind="stable").iloc[0]]


def schedule_figure(part: TaskPart) -> list[str]:
    """Alpha and budget per step, one line per distinct schedule among the learned configurations."""
    if part.learned.empty:
        return []
    entries, seen = [], set()
    for _, g in part.learned.iterrows():
        run = median_seed_run(part.runs, g["label"])
        key = tuple(str(g.get(f)) for f in SCHEDULE_FIELDS)
        if run is None or key in seen:
            continue
        seen.add(key)
        entries.append((_schedule_label(g), run["run_dir"]))
    figure = part.ctx.add_figure(schedules(entries, part.figure_path("schedules"),
                                           f"{part.title}schedules of the learned configurations (per optimiser step)"))
    if not figure:
        kept = part.kept("schedules", "Alpha and budget schedules")
        return [f"{part.heading} Alpha and budget schedules\n", *kept] if kept else []
    return [f"{part.heading} Alpha and budget schedules\n\n![Alpha and budget schedules]({figure.name})\n"]


def _schedule_label(row) -> str:
    alpha = f"α {value_text(row['alpha_min'])}→{value_text(row['alpha_max'])} ({row['alpha_scheduler']})"
    if not is_missing(row.get("memory_start")):
        budget = f"M {row['memory_start']:,.0f}→{row['memory_end']:,.0f}"
    else:
        budget = f"M at rank_average {value_text(row['rank_average'])}"
    epochs = row["num_train_epochs"]
    return f"{alpha}; {budget}; " + (plural(int(epochs), "epoch") if float(epochs).is_integer() else f"{epochs:g} epochs")


def not_completed(part: TaskPart) -> list[str]:
    """Runs that diverged or failed, with their message."""
    bad = part.runs[part.runs["status"] != "completed"]
    if bad.empty:
        return []
    return [f"{part.heading} Runs that did not complete ({len(bad)})\n",
            "Listed here and left out of every median, std and figure above.\n", not_completed_table(bad) + "\n"]
