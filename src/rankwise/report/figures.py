"""What every report figure module shares: matplotlib on the Agg backend (imported only when a figure is
drawn, so loading runs and computing statistics never imports it) and atomic PNG files."""

from __future__ import annotations

from pathlib import Path

DPI = 110


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (figures go to files; no window is ever opened)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def palette() -> tuple:
    """The report's colour cycle (matplotlib's tab10)."""
    return pyplot().get_cmap("tab10").colors


def save_figure(fig, path: Path, dpi: int = DPI) -> Path | None:
    """Write a figure (None: nothing to draw) atomically (a reader never sees half a PNG) and close it."""
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    tmp.replace(path)
    return path


KEPT = ("*Kept from the report made from the run directories, not redrawn: it needs their per-step records, which a "
        "results.csv does not hold.*")


def kept_figure(out: Path, name: str, alt: str) -> list[str]:
    """Markdown lines linking a figure an earlier report left in `out` (with the note that it was kept), or none."""
    if not (Path(out) / name).is_file():
        return []
    return [f"![{alt}]({name})", "", KEPT, ""]

