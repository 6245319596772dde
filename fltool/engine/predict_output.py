"""What ``fltool predict`` writes into its output folder.

- ``<name>.jpg`` (``.png`` for PNG inputs): the image with its boxes, class names and scores drawn;
- ``labels/<name>.txt``: one line per box, ``class_id x_center y_center width height score`` normalised to the
  image (YOLO's layout, so scripts and annotation tools read it; an image without detections gets an empty file);
- ``detections.csv``: one row per box of every image (file, frame, class, score, x1, y1, x2, y2 in pixels);
- ``detections.json``: COCO results format for all inputs, ``bbox`` as ``[x, y, w, h]`` in pixels, with
  ``image_id`` numbering the images in the order read, ``category_id`` = class index + 1 (the ids that
  ``fltool train --data`` gives), and ``file_name``, ``frame``, ``category`` added for readers;
- ``summary.json``: the table ``fltool predict`` prints;
- ``.fltool-predict.json`` (:data:`MANIFEST`): the files fltool predict wrote into the folder.

Predict replaces no file it did not write: the folder must be new, empty, or an earlier predict's (it holds the
manifest, and only the files listed there may be replaced), and every file is written atomically (a temporary
sibling, then ``os.replace``), so a full disk or a crash never leaves a truncated file under its final name.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from fltool.errors import DataError
from fltool.fileio import write_bytes, write_json, write_text

MANIFEST = ".fltool-predict.json"  # in every folder predict writes: the files it wrote there (relative paths)
NOT_OURS = "give a new or empty --out-dir"


def cannot_write(path: Path, exc: OSError) -> DataError:
    """A failed write as fltool's one line (the file, the system's reason, what to do), not an internal error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some disk space, or give an --out-dir on another disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "give an --out-dir you can write to"
    else:
        hint = "check the output folder, or give another --out-dir"
    return DataError(f"cannot write {path}: {exc.strerror or exc}", hint)


def _listed(manifest: Path) -> set[str]:
    """The relative paths a manifest lists (a path that leaves the folder is dropped); a DataError for a file that
    is no manifest of fltool predict."""
    try:
        files = json.loads(manifest.read_text()).get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ValueError("no list of files")
    except (ValueError, AttributeError) as exc:
        raise DataError(f"{manifest} is no manifest of fltool predict ({exc})", NOT_OURS) from exc
    return {f for f in files if not PurePosixPath(f).is_absolute() and ".." not in PurePosixPath(f).parts}


def earlier_outputs(out_dir: Path) -> set[str]:
    """The files an earlier fltool predict wrote into ``out_dir`` (its manifest lists them): this run may replace
    those. Empty for a new or empty folder; a DataError for a folder holding anything else, which may be the
    inputs or a dataset whose images and ground-truth labels/*.txt predict's outputs would replace."""
    try:
        if not out_dir.exists():
            return set()
        if not out_dir.is_dir():
            raise DataError(f"--out-dir {out_dir} is a file", NOT_OURS)
        if not any(out_dir.iterdir()):
            return set()
        if not (out_dir / MANIFEST).is_file():
            raise DataError(f"--out-dir {out_dir} holds files fltool did not write", NOT_OURS)
        return _listed(out_dir / MANIFEST)
    except OSError as exc:
        raise DataError(f"cannot read --out-dir {out_dir}: {exc.strerror or exc}", NOT_OURS) from exc


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
    """Writes each image's results as it comes (drawing, label file) and the collected files at :meth:`close`,
    each atomically, and keeps the folder's manifest: the files it wrote, plus ``replaceable`` (an earlier predict's,
    from :func:`earlier_outputs`), the only existing files it may replace."""

    SAVE_EVERY_S = 5.0  # the manifest is rewritten this often while images come: a killed run leaves most listed

    CSV_COLUMNS = ["file", "frame", "image_id", "class_id", "class", "score", "x1", "y1", "x2", "y2"]

    def __init__(self, out_dir: Path, classes: Sequence[str], colours: Sequence[Sequence[int]],
                 draw_images: bool = True, replaceable: Iterable[str] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.classes = list(classes)
        self.colours = list(colours)
        self.draw_images = draw_images
        self.records: list[dict[str, Any]] = []
        self.rows: list[list[Any]] = []
        self.images = 0
        self.replaceable = set(replaceable)
        self.written: set[str] = set()
        self._saved = 0.0
        labels = self.out_dir / "labels"
        if labels.is_symlink():  # os.replace would write through it, into a folder predict did not make
            raise DataError(f"{labels} is a symbolic link, not a folder fltool predict made", NOT_OURS)
        try:
            labels.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise cannot_write(labels, exc) from exc
        self.save_manifest()

    def adopt(self, path: Path) -> None:
        """List a file written into the folder for this run by another step (the ONNX export of a checkpoint)."""
        try:
            rel = Path(path).resolve().relative_to(self.out_dir.resolve()).as_posix()
        except ValueError:
            return
        if Path(path).is_file():
            self.written.add(rel)

    def save_manifest(self) -> None:
        """Write the manifest: this run's files and the earlier runs' that are still there."""
        kept = {rel for rel in self.replaceable if (self.out_dir / rel).is_file()}
        target = self.out_dir / MANIFEST
        try:
            write_json(target, {"written_by": "fltool predict", "files": sorted(kept | self.written)})
        except OSError as exc:
            raise cannot_write(target, exc) from exc
        self._saved = time.monotonic()

    def abort(self) -> None:
        """After a failure: list what was written so far (best effort), so that a rerun may replace it."""
        try:
            self.save_manifest()
        except DataError:
            pass

    def _write(self, rel: str, write: Callable[[Path], Any]) -> Path:
        """``write(out_dir / rel)`` (an atomic writer of fltool.fileio), after checking that a file already there is
        one fltool predict wrote."""
        target = self.out_dir / rel
        if rel not in self.written and rel not in self.replaceable and (target.exists() or target.is_symlink()):
            raise DataError(f"refusing to replace {target}: fltool predict did not write it (it is not listed in "
                            f"{self.out_dir / MANIFEST})", NOT_OURS)
        try:
            write(target)
        except OSError as exc:
            raise cannot_write(target, exc) from exc
        self.written.add(rel)
        return target

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
        text = "".join(line + "\n" for line in lines)
        self._write(f"labels/{det.name}.txt", lambda path: write_text(path, text))
        if self.draw_images and image is not None:
            suffix = ".png" if det.path.suffix.lower() == ".png" and det.frame is None else ".jpg"
            ok, encoded = cv2.imencode(suffix, draw(image, det, self.classes, self.colours))
            if ok:
                self._write(f"{det.name}{suffix}", lambda path: write_bytes(path, encoded.tobytes()))
        if time.monotonic() - self._saved > self.SAVE_EVERY_S:
            self.save_manifest()

    def close(self, summary: dict[str, Any]) -> dict[str, Path]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.CSV_COLUMNS)
        writer.writerows(self.rows)
        files = {"detections": self._write("detections.json", lambda p: write_json(p, self.records, indent=None)),
                 "rows": self._write("detections.csv", lambda p: write_text(p, buffer.getvalue())),
                 "labels": self.out_dir / "labels"}
        files["summary"] = self._write("summary.json", lambda p: write_json(p, summary))
        self.save_manifest()
        return files
