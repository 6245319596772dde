"""The picture of a sweep: AP (mean over seeds) over its grid.

Two axes: a heat map, rows = first axis, columns = second, every cell annotated with mean ± std.
One axis (or none): bars with the std as error bars. More than two: one heat map per combination of the values of
the extra axes (at most :data:`MAX_PANELS`; the rest are named in a note).
"""
from __future__ import annotations

import itertools
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

from fltool.fileio import save_figure

MAX_PANELS = 12

#: (mean, std, number of seeds finished) of one point; mean/std None where nothing finished or no spread.
Cell = tuple


@dataclass
class SweepPlot:
    path: Path
    notes: list = field(default_factory=list)


def _cell_text(cell: Optional[Cell]) -> str:
    if cell is None or cell[0] is None:
        return "n/a"
    mean, std = cell[0], cell[1]
    return f"{mean:.3f}" + (f"\n±{std:.3f}" if std is not None else "")


def _heatmap(fig, ax, rows: Sequence[str], cols: Sequence[str], values: list, texts: list, row_name: str,
             col_name: str, title: str, vmin: float, vmax: float) -> None:
    import numpy as np
    from matplotlib import colormaps

    grid = np.array(values, dtype=float)  # (rows, cols); NaN where no run finished
    cmap = colormaps["viridis"].with_extremes(bad="0.85")  # no finished run: grey
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=list(cols))
    ax.set_yticks(range(len(rows)), labels=list(rows))
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    ax.set_title(title, fontsize=9)
    mid = (vmin + vmax) / 2
    for r, c in itertools.product(range(len(rows)), range(len(cols))):
        value = grid[r, c]
        colour = "black" if math.isnan(value) or value > mid else "white"
        ax.text(c, r, texts[r][c], ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(image, ax=ax, shrink=0.8, label="AP")


def plot_sweep(axis_names: Sequence[str], axis_labels: Sequence[Sequence[str]], cells: Mapping[tuple, Cell],
               path: Path, title: str = "AP over the sweep", metric: str = "AP") -> SweepPlot:
    """Write the PNG (Agg, no display needed); ``cells`` maps a tuple of value labels (one per axis) to a Cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    notes: list = []
    means = [c[0] for c in cells.values() if c is not None and c[0] is not None]
    vmin, vmax = (min(means), max(means)) if means else (0.0, 1.0)
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.005, vmax + 0.005

    if len(axis_names) <= 1:
        labels = list(axis_labels[0]) if axis_names else ["base"]
        keys = [(label,) for label in labels] if axis_names else [()]
        fig = Figure(figsize=(max(5.0, 0.9 * len(labels) + 2), 4.5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        heights = [cells.get(k, (None,))[0] for k in keys]
        errors = [(cells.get(k) or (None, None))[1] or 0.0 for k in keys]
        xs = range(len(labels))
        ax.bar(xs, [h if h is not None else 0.0 for h in heights], yerr=errors if any(errors) else None, capsize=4,
               color="tab:blue")
        for x, key in zip(xs, keys):
            cell = cells.get(key)
            top = (cell[0] or 0.0) + ((cell[1] or 0.0) if cell else 0.0)
            ax.annotate(_cell_text(cell).replace("\n", " "), (x, top), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=8)
        ax.set_xticks(list(xs), labels=labels)
        ax.set_xlabel(axis_names[0] if axis_names else "")
        ax.set_ylabel(f"{metric} (mean over seeds; bars: std)")
        ax.set_title(textwrap.fill(title, int(fig.get_figwidth() * 10)), fontsize=10)
    else:
        rows, cols = list(axis_labels[0]), list(axis_labels[1])
        extra = list(itertools.product(*[list(labels) for labels in axis_labels[2:]]))
        if len(extra) > MAX_PANELS:
            notes.append(f"heatmap.png shows {MAX_PANELS} of the {len(extra)} combinations of "
                         f"{', '.join(axis_names[2:])}; results.csv has every point")
            extra = extra[:MAX_PANELS]
        n_cols = min(3, len(extra))
        n_rows = math.ceil(len(extra) / n_cols)
        width = max(6.5, 1.1 * len(cols) + 3)
        height = max(3.5, 0.7 * len(rows) + 2)
        fig = Figure(figsize=(width * n_cols, height * n_rows + 0.6), dpi=120)
        FigureCanvasAgg(fig)
        for k, fixed in enumerate(extra):
            ax = fig.add_subplot(n_rows, n_cols, k + 1)
            values, texts = [], []
            for r in rows:
                cells_row = [cells.get((r, c, *fixed)) for c in cols]
                values.append([c[0] if c is not None and c[0] is not None else float("nan") for c in cells_row])
                texts.append([_cell_text(c) for c in cells_row])
            panel = ", ".join(f"{name}={v}" for name, v in zip(axis_names[2:], fixed))
            _heatmap(fig, ax, rows, cols, values, texts, axis_names[0], axis_names[1], panel, vmin, vmax)
        fig.suptitle(textwrap.fill(f"{title}; cells: mean ± std", int(width * n_cols * 11)), fontsize=10)
    fig.tight_layout()
    return SweepPlot(save_figure(fig, path), notes)
