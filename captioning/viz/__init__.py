"""Pictures of what a captioner attends to: figures (attention, channels, gates) and the HTML report.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), never ``pyplot``: no global figure
registry to leak into, and no backend switch, so a notebook's own plotting backend stays as the user set it.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | Path, *, tight: bool = True) -> Path:
    """Writes ``fig`` to ``path`` (folders made as needed) and returns the path. ``tight=False`` keeps a layout
    placed by hand (the attention grid's exact panel boxes)."""
    if tight:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
