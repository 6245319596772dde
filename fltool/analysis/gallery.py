"""The images a detector gets most wrong, drawn in one figure: ground truth found (green), missed (magenta, dashed),
false positives on background (red), detections of the wrong class (orange), correct detections (blue)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from fltool.analysis.tables import pyplot
from fltool.fileio import save_figure

COLOURS = {"tp": "#1f77b4", "confused": "#ff7f0e", "background": "#d62728", "gt": "#2ca02c", "missed": "#e377c2"}


def _load_rgb(path: Path) -> Optional[object]:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _box(ax: object, box: Sequence[float], colour: str, dashed: bool = False, label: str = "") -> None:
    from matplotlib.patches import Rectangle

    x, y, w, h = (float(v) for v in box)
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.4,
                           linestyle="--" if dashed else "-"))
    if label:
        ax.text(x, y - 1, label, color="white", fontsize=6, va="bottom",
                bbox=dict(facecolor=colour, edgecolor="none", pad=0.6, alpha=0.85))


def draw_outcome(ax: object, image: object, table: dict, outcome: object, classes: Sequence[str]) -> None:
    """One image with its boxes and kept detections coloured by what happened to them."""
    ax.imshow(image)
    for (box, label, _), status in zip(table["gt"], outcome.gt_status):
        if status != "ignored":
            _box(ax, box, COLOURS["missed" if status == "missed" else "gt"], dashed=status == "missed",
                 label=f"missed {classes[label]}" if status == "missed" else "")
    for d, status in zip(outcome.kept, outcome.det_status):
        if status == "ignored":
            continue
        box, label, score = table["det"][d]
        _box(ax, box, COLOURS[status], label=f"{classes[label]} {score:.2f}")
    ax.set_axis_off()


def save_gallery(path: Path, worst: Sequence[object], tables: dict, files: dict, img_dir: Optional[Path],
                 classes: Sequence[str], columns: int = 3) -> Optional[Path]:
    """The ``worst`` images (:class:`~fltool.analysis.confusion.ImageOutcome`) in a grid; None where there are none
    or no image can be read (a note is the caller's)."""
    drawn = []
    for outcome in worst:
        name = files.get(outcome.image_id, "")
        image = _load_rgb(Path(img_dir) / name) if img_dir is not None and name else None
        if image is not None:
            drawn.append((outcome, image, name))
    if not drawn:
        return None
    plt = pyplot()
    cols = min(columns, len(drawn))
    rows = (len(drawn) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (outcome, image, name) in zip(axes.flat, drawn):
        draw_outcome(ax, image, tables[outcome.image_id], outcome, classes)
        ax.set_title(f"{Path(name).name}: {outcome.false_positives} false pos., {outcome.misses} missed",
                     fontsize=8)
    fig.suptitle("worst images (false positives + missed); green found, magenta missed, red background, "
                 "orange wrong class, blue correct", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
