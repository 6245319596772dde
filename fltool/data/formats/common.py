"""What the three readers share: the records they produce, the issues they find, image headers, the split and the
COCO JSON that fltool writes.

A reader (:mod:`.voc`, :mod:`.yolo`) turns annotation files into :class:`ImageRecord` lists and :class:`Problems`;
:func:`to_coco` turns records into a COCO dict. Every JSON fltool writes names its images by absolute path, so it can
be read (by MMDetection, ``fltool data check``, pycocotools) from wherever it lies.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from fltool.data import check
from fltool.data.check import ERROR, WARNING, Issue, IssueCollector

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
TRAIN_NAMES = ("train", "training")
VAL_NAMES = ("val", "valid", "validation")
TEST_NAMES = ("test", "testing")
#: The split of a single annotation set is drawn with this seed (fixed: every command sees the same split).
SPLIT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2

#: kind -> (severity, singular, plural): what converting VOC/YOLO files can find (box checks come later, from
#: ``fltool.data.check`` on the converted JSON).
KINDS: dict[str, tuple[str, str, str]] = {
    "image_without_annotation_file": (ERROR, "image without an annotation file", "images without an annotation file"),
    "annotation_without_image": (ERROR, "annotation file without its image", "annotation files without their image"),
    "unreadable_annotation_file": (ERROR, "unreadable annotation file", "unreadable annotation files"),
    "malformed_label_line": (ERROR, "malformed label line", "malformed label lines"),
    "class_id_beyond_names": (ERROR, "class id beyond the class names", "class ids beyond the class names"),
    "class_not_in_class_list": (ERROR, "object of a class missing from the class list",
                                "objects of classes missing from the class list"),
    "malformed_object": (ERROR, "malformed object", "malformed objects"),
    "unreadable_image": (ERROR, "unreadable image", "unreadable images"),
    "ambiguous_image": (ERROR, "annotation file matching several images", "annotation files matching several images"),
    "difficult_object": (WARNING, "object marked difficult (kept as iscrowd: ignored in training and evaluation)",
                         "objects marked difficult (kept as iscrowd: ignored in training and evaluation)"),
    "test_image_ignored": (WARNING, "image of a test split (not used)", "images of a test split (not used)"),
}


def issue_label(issue: Issue) -> str:
    return check.issue_label(issue, KINDS)


class Problems(IssueCollector):
    """Collects what a reader finds, in the order of :data:`KINDS`, with the first few examples of each."""

    def __init__(self, max_examples: int = 10) -> None:
        super().__init__(KINDS, max_examples)


@dataclass
class Box:
    """One object: class name and a COCO box (x, y, w, h in pixels)."""

    name: str
    x: float
    y: float
    w: float
    h: float
    crowd: bool = False


@dataclass
class ImageRecord:
    path: Path  # absolute
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    split: Optional[str] = None  # "train" | "val" when the layout says


def relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` (hidden files and folders skipped), sorted."""
    if not folder.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".")
                  and Path(f).suffix.lower() in IMAGE_SUFFIXES]
        if not recursive:
            break
    return sorted(found)


def split_of_path(rel_path: str) -> Optional[str]:
    """'train', 'val' or 'test' when a folder of the relative path says so (``images/val/x.jpg`` -> 'val')."""
    for part in Path(rel_path).parts[:-1]:
        low = part.lower()
        if low in TRAIN_NAMES:
            return "train"
        if low in VAL_NAMES:
            return "val"
        if low in TEST_NAMES:
            return "test"
    return None


def image_sizes(paths: Sequence[Path]) -> list[Optional[tuple[int, int]]]:
    """(width, height) of each image from its header (no decoding), None where it cannot be read."""
    from PIL import Image

    def size(path: Path) -> Optional[tuple[int, int]]:
        try:
            with Image.open(path) as im:
                return tuple(im.size)  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 - any failure is a finding about this file
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(size, paths))


# ---------------------------------------------------------------------------------------------- the split

def _rank(name: str, seed: int) -> str:
    # surrogatepass: a name read from JSON may hold a lone surrogate (JSON's \ud800), which plain UTF-8 refuses
    return hashlib.sha256(f"{seed}:{name}".encode("utf-8", "surrogatepass")).hexdigest()


def split_names(names: Iterable[str], val_fraction: float, seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Split ``names`` into (train, val): the ``round(n * val_fraction)`` names (at least one) with the lowest
    hash of (seed, name) go to val. Deterministic, independent of the order given, and stable when images are
    added (a new image displaces at most one other)."""
    unique = sorted(set(names))
    n_val = min(len(unique) - 1, max(1, round(len(unique) * val_fraction)))
    ranked = sorted(unique, key=lambda n: _rank(n, seed))
    val = set(ranked[:n_val])
    return [n for n in unique if n not in val], [n for n in unique if n in val]


# ---------------------------------------------------------------------------------------------- COCO out

def to_coco(records: Sequence[ImageRecord], classes: Sequence[str]) -> dict[str, Any]:
    """A COCO dict of ``records``: category ids 1..K in the order of ``classes``, absolute file names."""
    cat_id = {name: i + 1 for i, name in enumerate(classes)}
    images, annotations = [], []
    for image_id, rec in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": str(rec.path), "width": rec.width, "height": rec.height})
        for box in rec.boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id[box.name],
                                "bbox": [box.x, box.y, box.w, box.h], "area": box.w * box.h,
                                "iscrowd": int(box.crowd)})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": cat_id[n], "name": n, "supercategory": "none"} for n in classes]}


def id_key(value: Any) -> Any:
    """A record's id as a set member: an id of a malformed record that is a list or an object stands for itself as
    its JSON text (``fltool data check`` names such records; splitting must not fail on them)."""
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def coco_subset(data: dict[str, Any], keep_ids: set, img_dir: Optional[Path] = None) -> dict[str, Any]:
    """The images ``keep_ids`` (:func:`id_key` of their ids) of a COCO dict with their annotations; with ``img_dir``
    file names become absolute."""
    images = [dict(img) for img in data["images"] if isinstance(img, dict) and id_key(img.get("id")) in keep_ids]
    if img_dir is not None:
        for img in images:
            if isinstance(img.get("file_name"), str):
                img["file_name"] = str(img_dir / img["file_name"])
    ids = {id_key(img.get("id")) for img in images}
    annotations = [a for a in data["annotations"] if isinstance(a, dict) and id_key(a.get("image_id")) in ids]
    return dict(data, images=images, annotations=annotations)


def file_digest(paths: Iterable[Path], root: Path, with_content: bool = True) -> str:
    """SHA-256 over files: relative path and content (or, without content, the byte size)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(relative(path, root).encode() + b"\0")
        if with_content:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(str(path.stat().st_size).encode() + b"\0")
    return digest.hexdigest()
