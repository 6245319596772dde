"""What ``fltool predict`` writes into its output folder.

- ``<name>.jpg`` (``.png`` for PNG inputs): the image with its boxes, class names and scores drawn;
- ``labels/<name>.txt``: one line per box, ``class_id x_center y_center width height score`` normalised to the
  image (YOLO's layout, so scripts and annotation tools read it; an image without detections gets an empty file);
- ``detections.csv``: one row per box of every image (file, frame, class, score, x1, y1, x2, y2 in pixels);
- ``detections.json``: COCO results format for all inputs, ``bbox`` as ``[x, y, w, h]`` in pixels, with
  ``image_id`` numbering the images in the order read, ``category_id`` = class index + 1 (the ids that
  ``fltool train --data`` gives), and ``file_name``, ``frame``, ``category`` added for readers;
- ``summary.json``: the table ``fltool predict`` prints.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fltool.fileio import write_json, write_text


@dataclass
class ImageDetections:
    name: str  # output name
    path: Path
    frame: Optional[int]
    width: int
    height: int
    bboxes: np.ndarray  # (N, 4) x1, y1, x2, y2 in pixels of the original image
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) class indices


def draw(image: np.ndarray, det: ImageDetections, classes: Sequence[str], colours: Sequence[Sequence[int]]
         ) -> np.ndarray:
    """A copy of the BGR ``image`` with boxes and ``class score`` labels."""
    import cv2

    out = image.copy()
    side = max(out.shape[:2])
    thickness = max(1, round(side / 400))
    font_scale = max(0.35, side / 1500)
    for (x1, y1, x2, y2), score, label in zip(det.bboxes, det.scores, det.labels):
        r, g, b = colours[int(label) % len(colours)]
        colour = (int(b), int(g), int(r))
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, colour, thickness)
        text = f"{classes[int(label)]} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = p1[1] - th - base if p1[1] - th - base >= 0 else p1[1]
        cv2.rectangle(out, (p1[0], top), (p1[0] + tw + 2, top + th + base), colour, -1)
        cv2.putText(out, text, (p1[0] + 1, top + th), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


class OutputWriter:
    """Writes each image's results as it comes (drawing, label file) and the collected files at :meth:`close`."""

    CSV_COLUMNS = ["file", "frame", "image_id", "class_id", "class", "score", "x1", "y1", "x2", "y2"]

    def __init__(self, out_dir: Path, classes: Sequence[str], colours: Sequence[Sequence[int]],
                 draw_images: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.classes = list(classes)
        self.colours = list(colours)
        self.draw_images = draw_images
        self.records: list[dict[str, Any]] = []
        self.rows: list[list[Any]] = []
        self.images = 0
        (self.out_dir / "labels").mkdir(parents=True, exist_ok=True)

    def add(self, det: ImageDetections, image: Optional[np.ndarray]) -> None:
        import cv2

        self.images += 1
        image_id = self.images
        lines = []
        for (x1, y1, x2, y2), score, label in zip(det.bboxes.tolist(), det.scores.tolist(), det.labels.tolist()):
            name = self.classes[label]
            self.records.append({"image_id": image_id, "category_id": label + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                 "score": score, "category": name, "file_name": str(det.path), "frame": det.frame})
            self.rows.append([str(det.path), "" if det.frame is None else det.frame, image_id, label, name,
                              f"{score:.4f}", f"{x1:.1f}", f"{y1:.1f}", f"{x2:.1f}", f"{y2:.1f}"])
            lines.append(f"{label} {(x1 + x2) / 2 / det.width:.6f} {(y1 + y2) / 2 / det.height:.6f} "
                         f"{(x2 - x1) / det.width:.6f} {(y2 - y1) / det.height:.6f} {score:.4f}")
        write_text(self.out_dir / "labels" / f"{det.name}.txt", "".join(line + "\n" for line in lines))
        if self.draw_images and image is not None:
            suffix = ".png" if det.path.suffix.lower() == ".png" and det.frame is None else ".jpg"
            target = self.out_dir / f"{det.name}{suffix}"
            ok, encoded = cv2.imencode(suffix, draw(image, det, self.classes, self.colours))
            if ok:
                target.write_bytes(encoded.tobytes())

    def close(self, summary: dict[str, Any]) -> dict[str, Path]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.CSV_COLUMNS)
        writer.writerows(self.rows)
        files = {"detections": write_json(self.out_dir / "detections.json", self.records, indent=None),
                 "rows": write_text(self.out_dir / "detections.csv", buffer.getvalue()),
                 "labels": self.out_dir / "labels"}
        files["summary"] = write_json(self.out_dir / "summary.json", summary)
        return files
