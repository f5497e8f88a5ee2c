"""Pictures of what a captioner attends to: figures (attention, channels, gates) and the HTML report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display is needed (or available on servers)
import matplotlib.pyplot as plt


def save_figure(fig: plt.Figure, path: str | Path, *, tight: bool = True) -> Path:
    """Writes ``fig`` to ``path`` (folders made as needed), closes it, and returns the path. ``tight=False`` keeps a
    layout placed by hand (the attention grid's exact panel boxes)."""
    if tight:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
