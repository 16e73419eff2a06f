"""The one style and the one way of saving of every figure the commands draw.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display) under
fixed style settings, and saved as PNG and SVG whose bytes depend only on the inputs (no dates
or software versions in the metadata, a fixed SVG hash salt).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "calib-report",
    "svg.fonttype": "path",
}


@contextmanager
def saved_figure(stem: Path, size: tuple[float, float]) -> Iterator[Figure]:
    """A ``size`` (inches) figure with constrained layout, to draw on under ``STYLE`` (and
    matplotlib's defaults for everything else); once the block ends without an exception it
    is written to ``<stem>.png`` (at ``DPI``) and ``<stem>.svg``."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(STYLE)
        figure = Figure(figsize=size, layout="constrained")
        yield figure
        FigureCanvasAgg(figure)
        figure.savefig(
            stem.parent / f"{stem.name}.png", format="png", dpi=DPI, metadata={"Software": None}
        )
        figure.savefig(
            stem.parent / f"{stem.name}.svg", format="svg", metadata={"Date": None, "Creator": None}
        )
