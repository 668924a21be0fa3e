"""The allocation record of a logging step, mirrored to Weights & Biases (`--report_to wandb`, or `rankwise glue
--wandb_disabled False`).

The adaptive LoRA-XS study's plots read W&B keys `alpha`, `memory` and `rank_allocation_<i>` (matrix i in model
order: the continuous rank in the soft phase, the rounded rank in the discrete phase); rankwise adds every matrix's
continuous and hard rank by name. Transformers' W&B callback logs the metrics; this adds what allocation.jsonl holds.

In the soft phase a logging step also gets `rank_masks`, an image of the soft masks drawn as the study drew them
(utils/adaptive/mask.py: imshow, gray_r from 0 to 1, a colour bar, α in the title): one row per matrix in model
order, one column per rank component k, each value its keep probability q_i(k), which fixes the study's r_max × r_max
`mask_<i>` (M[a, b] = q_i(max(a, b))). The study drew one figure per matrix in every training forward pass; rankwise
draws one per logging step (--logging_steps).
"""

from __future__ import annotations

import torch


def allocation_values(record: dict, step: int) -> dict[str, float]:
    """The W&B values of one allocation.jsonl record (see the module docstring)."""
    values: dict[str, float] = {"train/global_step": step}
    if "alpha" in record:
        values["alpha"] = float(record["alpha"])
    values["memory"] = float(record["budget"])
    values["budget_used"] = float(record["budget_used"])
    discrete = bool(record.get("discrete"))
    continuous, hard = record.get("continuous") or {}, record.get("hard") or {}
    for i, name in enumerate(hard):
        values[f"rank_allocation_{i}"] = float(hard[name] if discrete else continuous.get(name, hard[name]))
        values[f"rank_continuous/{name}"] = float(continuous.get(name, hard[name]))
        values[f"rank_hard/{name}"] = float(hard[name])
    return values


def mask_figure(keep: torch.Tensor, alpha: float):
    """The soft masks `keep` (n, r_max) as a matplotlib figure (see the module docstring)."""
    from .report.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, min(3 + 0.1 * keep.shape[0], 12)))
    image = ax.imshow(keep.detach().float().cpu().numpy(), cmap="gray_r", interpolation="none", vmin=0, vmax=1,
                      aspect="auto")
    fig.colorbar(image, label="keep probability")
    ax.set_xlabel("rank component")
    ax.set_ylabel("matrix (model order)")
    ax.set_title(f"Rank masks, alpha: {alpha:.2f}")
    return fig


def log_allocation_to_wandb(record: dict, step: int, allocator=None) -> bool:
    """Log `record` to the active W&B run, with the mask image of `allocator` (a RankAllocator) in the soft phase;
    False (nothing logged) without wandb or an active run."""
    try:
        import wandb
    except ImportError:
        return False
    if getattr(wandb, "run", None) is None:
        return False
    values = allocation_values(record, step)
    if allocator is None or record.get("discrete"):
        wandb.log(values)
        return True
    from .report.figures import pyplot

    with torch.no_grad():  # without Gumbel noise: a log must not draw from the allocator's generator
        figure = mask_figure(allocator.keep(step, training=True, noise=False), record["alpha"])
    wandb.log({**values, "rank_masks": wandb.Image(figure)})
    pyplot().close(figure)
    return True
