"""The learning-rate search section (automatic for runs of a `search:` sweep): per arm the rates the search tried
with their scores on the search seeds, what successive halving dropped, the chosen rate and where it sits, and how
many runs served the search and how many the answer, against a fixed grid of the same rates on every seed.

It reads the `search_role` (`search` / `answer`), `search_arm` and `search_chosen` columns that `search.json` gives
the runs (`results_csv.with_search_roles`), so a report made from a results.csv shows it too. `search_arms.csv`
holds every number of the section (docs/results prose is checked against it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .context import ReportContext
from .selection import seeds_text
from .stats import completed_runs, grid_edge
from .text import is_missing, markdown_table, plural, short_text, task_name

HEADING = "## Learning-rate search"


def section(ctx: ReportContext) -> str | None:
    """`rankwise report` section hook: nothing unless some run served a `search:` sweep."""
    runs = ctx.runs
    if "search_role" not in runs or not runs["search_role"].notna().any():
        return None
    searched_runs = runs[runs["search_role"].notna()]
    write_search_arms(arm_rows(searched_runs), ctx.out / "search_arms.csv")
    return search_markdown(searched_runs)


def write_search_arms(arms: pd.DataFrame, path: Path) -> None:
    """One row per (task, arm): the rates tried with their scores on the search seeds (JSON, × 100), the chosen rate
    (empty while searching) and where it sits, the rates halving dropped, the search and answer runs and seeds,
    and `fixed_grid_runs`: the same rates on every seed the sweep used."""
    rows = [{"task": r.task, "arm": r.arm, "rates": json.dumps(r.rates),
             "scores": json.dumps({short_text(rate): {str(s): round(v, 4) for s, v in r.scores[rate].items()}
                                   for rate in r.rates if rate in r.scores}),
             "chosen": r.chosen if searched(r) else None, "edge": r.edge if searched(r) else "still searching",
             "dropped": json.dumps(r.dropped), "search_runs": r.search_runs, "answer_runs": r.answer_runs,
             "search_seeds": json.dumps(r.search_seeds), "answer_seeds": json.dumps(r.answer_seeds),
             "fixed_grid_runs": r.fixed_grid_runs} for r in arms.itertuples()]
    pd.DataFrame(rows).to_csv(path, index=False)


def arm_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, search arm): rates tried, each rate's scores on the search seeds, the rates halving
    dropped, the chosen rate and where it sits, search and answer runs, the search and answer seeds,
    and `fixed_grid_runs` (the same rates on every seed of the sweep)."""
    rows = []
    for (task, arm), group in runs.groupby(["task", "search_arm"], sort=False):
        search = group[group["search_role"] == "search"]
        answer = group[group["search_role"] == "answer"]
        seeds = sorted(int(s) for s in search["seed"].unique())
        done = completed_runs(search)
        scores = {float(lr): dict(zip(g["seed"].astype(int), g["score"].astype(float)))
                  for lr, g in done.groupby("learning_rate")}
        rates = sorted(float(r) for r in search["learning_rate"].unique())
        chosen = float(group["search_chosen"].dropna().iloc[0]) if group["search_chosen"].notna().any() else None
        rows.append({"task": task, "arm": arm, "rates": rates, "scores": scores, "chosen": chosen,
                     "edge": grid_edge(chosen, rates) if chosen is not None else None,
                     "dropped": [r for r in rates if len(scores.get(r, {})) < len(seeds)],
                     "search_runs": len(search), "answer_runs": len(answer), "search_seeds": seeds,
                     "answer_seeds": sorted(int(s) for s in answer["seed"].unique())})
    arms = pd.DataFrame(rows)
    arms["fixed_grid_runs"] = arms["rates"].map(len) * len(sweep_seeds(arms))  # the same rates on every seed
    return arms


def sweep_seeds(arms: pd.DataFrame) -> list[int]:
    """Every seed the search sweep ran, search and answer."""
    return sorted({s for r in arms.itertuples() for s in r.search_seeds + r.answer_seeds})


def searched(arm) -> bool:
    """Whether the arm's search has chosen its rate (a DataFrame row: a missing choice reads NaN there)."""
    return not is_missing(arm.chosen)


def search_markdown(runs: pd.DataFrame) -> str:
    """The section for the runs of `search:` sweeps."""
    arms = arm_rows(runs)
    all_seeds = sweep_seeds(arms)
    used = int(arms["search_runs"].sum() + arms["answer_runs"].sum())
    fixed = int(arms["fixed_grid_runs"].sum())
    rows = []
    for r in arms.itertuples():
        tried = "; ".join(f"{short_text(rate)}: " + ", ".join(f"{r.scores.get(rate, {}).get(s, float('nan')):.2f}"
                                                              for s in r.search_seeds if s in r.scores.get(rate, {}))
                          for rate in r.rates)
        rows.append([task_name(r.task), f"`{r.arm}`", tried, ", ".join(short_text(x) for x in r.dropped) or "–",
                     *((short_text(r.chosen), r.edge) if searched(r) else ("–", "still searching")),
                     str(r.search_runs), str(r.answer_runs)])
    seeds_line = (f"search seeds {seeds_text(sorted({s for v in arms['search_seeds'] for s in v}))}, answer seeds "
                  f"{seeds_text(sorted({s for v in arms['answer_seeds'] for s in v}))}")
    return "\n".join([
        HEADING, "",
        f"{plural(len(arms), 'arm')} had their learning rate searched by a `search:` sweep ({seeds_line}): the "
        "search seeds chose each arm's rate and are never reported; the answer seeds ran only at the chosen rate. "
        "Scores are the search seeds' (× 100, in seed order); a rate with fewer scores than search seeds was dropped "
        "by successive halving.", "",
        markdown_table(["Task", "Arm", "Rates tried: scores on the search seeds", "Dropped by halving", "Chosen",
                        "Where", "Search runs", "Answer runs"], rows, ["l", "l", "l", "l", "r", "l", "r", "r"]), "",
        f"**Runs**: {used} in all ({int(arms['search_runs'].sum())} for the search, "
        f"{int(arms['answer_runs'].sum())} for the answer). A fixed grid of the same rates on all "
        f"{len(all_seeds)} seeds would have been {fixed} runs, with every seed both choosing and reported.", ""])
