"""Why does rank annealing (train at rank_max under shrinking soft masks, then truncate) score what it scores?

For every finished learned-allocation LoRA-XS run under the given folders (rank annealing or learned), prints:
- the training loss in the logs just before and just after the switch to hard ranks (the last soft step), and the
  dev score after every epoch (evaluations always use the hard ranks, so the epoch before the switch already shows
  the truncated adapter);
- the energy left in truncated components: ‖ΔW_soft − ΔW_hard‖² / ‖ΔW_soft‖² per matrix (mean), ΔW_soft = B·(R⊙M)·A
  with the soft mask M of the last soft step and ΔW_hard the same with R cut to its hard-rank block (needs the
  run's adapter/, `save_model: true`; R's components outside the hard block do not change after the switch);
and, for comparison, the dev scores of the uniform runs beside them.

    python bench/annealing_analysis.py runs/frontier_pilot
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from rankwise.adapters.masks import keep_probabilities, square_masks


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncated_energy(run: Path, hard: dict[str, int], soft: dict, config: dict) -> float | None:
    """Mean over matrices of the share of the soft adapter's ‖ΔW‖² (the mask of the last soft step, `soft` its
    allocation.jsonl record) that the hard ranks cut off: ‖ΔW_soft − ΔW_hard‖² / ‖ΔW_soft‖²."""
    path = run / "adapter" / "adapter_model.safetensors"
    if not path.exists():
        return None
    tensors = load_file(str(path))
    names = list(hard)
    ranks = torch.tensor([soft["continuous"][n] for n in names], dtype=torch.float64)
    masks = square_masks(keep_probabilities(ranks, config["rank_min"], config["rank_max"], soft["alpha"]))
    shares = []
    for name, mask in zip(names, masks):
        a, b, r = (tensors[f"{name}.lora_{part}"].double() for part in "ABR")
        full = b @ (r * mask) @ a
        kept = b[:, :hard[name]] @ r[:hard[name], :hard[name]] @ a[:hard[name]]
        shares.append(float(((full - kept) ** 2).sum() / (full**2).sum().clamp_min(1e-300)))
    return sum(shares) / len(shares)


def describe(run: Path) -> str | None:
    summary_path = run / "summary.json"
    if not summary_path.exists():
        return None
    summary = json.loads(summary_path.read_text())
    config = json.loads((run / "config.json").read_text())["config"]
    metric = summary["main_metric"]
    records = read_jsonl(run / "metrics.jsonl")
    scores = " ".join(f"{100 * r[metric]:.1f}" for r in records if r["type"] == "eval")
    line = f"{run.name[:70]:<70} dev by epoch {scores}"
    if config["allocation"] != "learned":
        return line
    allocation = read_jsonl(run / "allocation.jsonl")
    switch = next((r["step"] for r in allocation if r["discrete"]), None)
    train = [r for r in records if r["type"] == "train"]
    before = [r["loss"] for r in train if switch is not None and switch - 20 <= r["step"] <= switch]
    after = [r["loss"] for r in train if switch is not None and switch < r["step"] <= switch + 20]
    if before and after:
        line += f" | train loss before/after the switch {sum(before) / len(before):.3f}/{sum(after) / len(after):.3f}"
    last_soft = [r for r in allocation if not r["discrete"]][-1]
    share = truncated_energy(run, summary["hard_ranks"], last_soft, config)
    if share is not None:
        line += f" | truncated share of ‖ΔW‖² {100 * share:.1f}%"
    return line


def main(folders: list[str]) -> None:
    for folder in folders:
        for run in sorted(Path(folder).iterdir()):
            if run.is_dir() and (line := describe(run)):
                print(line)


if __name__ == "__main__":
    main(sys.argv[1:] or ["runs/frontier_pilot"])
