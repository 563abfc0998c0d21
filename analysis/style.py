"""One figure style for every fsv plot: sizes, fonts, colour-blind-safe colours, vector + raster output.

Model sizes are coloured along viridis (ordered by parameter count, so colour reads as size);
categorical things (training series, description variants) use the Okabe-Ito palette. Figures are
built on `matplotlib.figure.Figure` with the Agg canvas: no pyplot, no global backend change.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
DESCRIPTION_COLOURS = {"none": "#000000", "model": "#0072B2", "human": "#D55E00"}
CHANCE_STYLE = dict(color="0.45", linestyle=":", linewidth=1.0)
BAYES_STYLE = dict(color="black", linestyle="--", linewidth=1.2)
PANEL_SIZE = (3.6, 2.9)  # inches per panel: two panels fit a column-and-a-half figure

RC = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "legend.frameon": False,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by publishers
    "svg.fonttype": "none",
}


@contextlib.contextmanager
def context():
    with matplotlib.rc_context(RC):
        yield


def panels(count: int, max_columns: int = 3, sharey: bool = False) -> tuple[Figure, list]:
    columns = min(count, max_columns)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=sharey).ravel().tolist()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def size_colours(models: list[str]) -> dict[str, tuple]:
    """Viridis from dark (smallest) to light green (largest), skipping the low-contrast yellow end."""
    cmap = matplotlib.colormaps["viridis"]
    spots = np.linspace(0.0, 0.82, max(len(models), 2))[: len(models)] if len(models) > 1 else [0.35]
    return {model: cmap(spot) for model, spot in zip(models, spots)}


def format_params(params: float) -> str:
    if params is None or not np.isfinite(params):
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if params >= scale:
            return f"{params / scale:.3g}{unit}"
    return f"{params:.0f}"


def model_label(model: str, params: float) -> str:
    return f"{model} ({format_params(params)})"


def log2_ticks(axis, values, which: str = "x") -> None:
    """Ticks at the measured example counts, written as plain integers."""
    values = sorted({float(v) for v in values if np.isfinite(v)})
    labels = [f"{v:g}" for v in values]
    if which == "x":
        axis.set_xticks(values, labels)
        axis.xaxis.set_minor_locator(NullLocator())
    else:
        axis.set_yticks(values, labels)
        axis.yaxis.set_minor_locator(NullLocator())


def plain_log_labels(axis, which: str = "xy") -> None:
    """Write log-axis ticks as plain numbers (0.05, 20, 300) instead of powers."""
    formatter = FuncFormatter(lambda value, _: f"{value:g}")
    for name in which:
        target = axis.xaxis if name == "x" else axis.yaxis
        target.set_major_formatter(formatter)
        target.set_minor_formatter(FuncFormatter(_minor_label))


def _minor_label(value: float, _position) -> str:
    """Label the 2s and 5s between decades; leave the other minor ticks bare."""
    return f"{value:g}" if _leading_digit(value) in (2, 5) else ""


def _leading_digit(value: float) -> int:
    return int(f"{value:e}"[0]) if value > 0 else 0


def save(figure: Figure, folder: Path, name: str, dpi: int) -> list[Path]:
    """PDF (vector, no timestamp, so identical inputs give identical files) and PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    pdf, png = folder / f"{name}.pdf", folder / f"{name}.png"
    figure.savefig(pdf, metadata={"CreationDate": None, "Producer": None})
    figure.savefig(png, dpi=dpi, metadata={"Software": None})
    return [pdf, png]
