"""Checking a COCO-format detection dataset before training on it.

:func:`check_coco` reads an annotation file (and, unless ``decode=False``, fully decodes every image) and returns a
:class:`CheckReport`: the dataset's figures (images, boxes, class counts, COCO size histogram) and its problems as
:class:`Issue` records, each with a count and the first few offenders.

What counts as bad, and what :func:`drop_bad_records` does with it:

- a bad *image* (file missing, unreadable or truncated, decoded size differs from the JSON, a required field
  missing or malformed, an id shared by several images) is dropped together with all its annotations: dropping only
  some boxes of an image would turn real objects into background;
- a bad *annotation* (zero or negative width/height, a required field missing or malformed, an unknown category or
  image id, an id already used by an earlier annotation, a box entirely outside its image) is dropped;
- a box *partly* outside its image is an error too, but is clipped to the image instead (area = clipped w*h);
- warnings (images without boxes, near-duplicate boxes, EXIF rotation, ...) never drop anything.

Images are decoded with Pillow with truncated-image loading switched off: OpenCV (which MMDetection uses) decodes a
truncated JPEG without complaint, filling the missing part with grey.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from fltool.errors import ConfigError, DataError

Progress = Callable[[int, int], None]

ERROR, WARNING = "error", "warning"
IMAGE_FIELDS = ("id", "file_name", "width", "height")
ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox", "area")
SIZE_NAMES = ("small", "medium", "large")
SMALL_MAX_AREA, MEDIUM_MAX_AREA = 32 ** 2, 96 ** 2  # COCO's thresholds on box area
#: Boxes may reach this far past an image edge (float rounding) before they count as outside.
EDGE_TOLERANCE = 0.01
#: Same-class boxes in one image with an IoU above this are reported as near-duplicates.
DUPLICATE_IOU = 0.9

#: kind -> (severity, singular, plural). Counts are numbers of records (images or annotations) flagged.
KINDS: dict[str, tuple[str, str, str]] = {
    "missing_image": (ERROR, "missing image", "missing images"),
    "unreadable_image": (ERROR, "unreadable image", "unreadable images"),
    "image_size_mismatch": (ERROR, "image size mismatch", "image size mismatches"),
    "image_missing_field": (ERROR, "image record missing a field", "image records missing a field"),
    "image_malformed_field": (ERROR, "image record with a malformed field", "image records with a malformed field"),
    "duplicate_image_id": (ERROR, "image sharing its id", "images sharing their id"),
    "annotation_missing_field": (ERROR, "annotation missing a field", "annotations missing a field"),
    "annotation_malformed_field": (ERROR, "annotation with a malformed field", "annotations with a malformed field"),
    "duplicate_annotation_id": (ERROR, "duplicate annotation id", "duplicate annotation ids"),
    "unknown_image_id": (ERROR, "annotation of an unknown image", "annotations of unknown images"),
    "unknown_category": (ERROR, "unknown category id", "unknown category ids"),
    "zero_size_box": (ERROR, "zero-size box", "zero-size boxes"),
    "box_outside_image": (ERROR, "box outside its image", "boxes outside their image"),
    "box_partly_outside_image": (ERROR, "box partly outside its image", "boxes partly outside their image"),
    "bad_category": (ERROR, "bad category record", "bad category records"),
    "duplicate_category_id": (ERROR, "duplicate category id", "duplicate category ids"),
    "config_class_not_in_annotations": (ERROR, "config class missing from the categories",
                                        "config classes missing from the categories"),
    "duplicate_category_name": (WARNING, "duplicate category name", "duplicate category names"),
    "duplicate_file_name": (WARNING, "image file listed twice", "image files listed twice"),
    "image_without_boxes": (WARNING, "image without boxes", "images without boxes"),
    "near_duplicate_boxes": (WARNING, f"near-duplicate box pair (same class, IoU > {DUPLICATE_IOU})",
                             f"near-duplicate box pairs (same class, IoU > {DUPLICATE_IOU})"),
    "exif_rotation": (WARNING, "image with an EXIF rotation", "images with an EXIF rotation"),
}


@dataclass
class Issue:
    kind: str  # a key of KINDS
    severity: str  # "error" | "warning"
    count: int
    examples: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Human words for ``count`` records of this kind: ``2 missing images``."""
        _, one, many = KINDS.get(self.kind, (self.severity, self.kind, self.kind))
        return f"{self.count} {one if self.count == 1 else many}"


@dataclass
class CheckReport:
    ann_file: Path
    img_dir: Path
    decoded: bool
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    categories: dict[int, str] = field(default_factory=dict)  # id -> name
    class_counts: dict[str, int] = field(default_factory=dict)  # name -> boxes
    size_histogram: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIZE_NAMES, 0))
    image_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" (from the JSON) -> images
    issues: list[Issue] = field(default_factory=list)
    bad_image_ids: set[int] = field(default_factory=set)
    bad_annotation_ids: set[int] = field(default_factory=set)
    clip_annotation_ids: set[int] = field(default_factory=set)  # partly outside: clipped, not dropped
    # Positions in the JSON lists (records without a usable id have no other handle), for drop_bad_records.
    bad_image_indices: set[int] = field(default_factory=set, repr=False)
    bad_annotation_indices: set[int] = field(default_factory=set, repr=False)
    clip_annotation_indices: set[int] = field(default_factory=set, repr=False)
    ann_sha256: str = field(default="", repr=False)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def issue(self, kind: str) -> Optional[Issue]:
        return next((i for i in self.issues if i.kind == kind), None)

    def summary(self) -> str:
        """``ann.json: 3 errors found (2 missing images, 1 zero-size box)``, or ``ann.json: no errors``."""
        errors = self.errors
        if not errors:
            return f"{self.ann_file.name}: no errors"
        total = sum(i.count for i in errors)
        return (f"{self.ann_file.name}: {total} error{'s' if total != 1 else ''} found "
                f"({', '.join(i.label for i in errors)})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ann_file": str(self.ann_file), "img_dir": str(self.img_dir), "decoded": self.decoded, "ok": self.ok,
            "num_images": self.num_images, "num_annotations": self.num_annotations,
            "num_categories": self.num_categories,
            "categories": {str(k): v for k, v in self.categories.items()},
            "class_counts": dict(self.class_counts), "size_histogram": dict(self.size_histogram),
            "image_sizes": dict(self.image_sizes),
            "issues": [{"kind": i.kind, "severity": i.severity, "count": i.count, "label": i.label,
                        "examples": list(i.examples)} for i in self.issues],
            "bad_image_ids": sorted(self.bad_image_ids), "bad_annotation_ids": sorted(self.bad_annotation_ids),
            "clip_annotation_ids": sorted(self.clip_annotation_ids)}


class _Issues:
    """Collects issues in a fixed order (that of KINDS) with up to ``max_examples`` examples each."""

    def __init__(self, max_examples: int):
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, example: str, count: int = 1) -> None:
        self.counts[kind] += count
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(example)

    def as_list(self) -> list[Issue]:
        return [Issue(kind, KINDS[kind][0], self.counts[kind], self.examples[kind])
                for kind in KINDS if self.counts[kind]]


# ---------------------------------------------------------------------------------------------- reading

def load_coco_json(ann_file: Path) -> tuple[dict[str, Any], str]:
    """The parsed COCO dict and the file's sha256. A missing, non-JSON or non-COCO file is a DataError."""
    ann_file = Path(ann_file)
    try:
        raw = ann_file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {ann_file}", "check the path") from None
    except OSError as exc:
        raise DataError(f"cannot read annotation file {ann_file}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise DataError(f"{ann_file} is not a JSON file (not UTF-8 text)",
                        "give a COCO annotation .json file") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{ann_file} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                        "give a COCO annotation .json file") from None
    if not isinstance(data, dict):
        raise DataError(f"{ann_file} is not a COCO annotation file (its JSON is a {type(data).__name__}, "
                        "not an object)", "a COCO file is an object with 'images', 'annotations' and 'categories'")
    wrong = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if wrong:
        raise DataError(f"{ann_file} is not a COCO annotation file ({', '.join(repr(k) for k in wrong)} "
                        f"{'is' if len(wrong) == 1 else 'are'} missing or not a list)",
                        "a COCO file is an object with 'images', 'annotations' and 'categories' lists")
    return data, hashlib.sha256(raw).hexdigest()


def default_img_dir(ann_file: Path) -> Path:
    """The JSON's folder + ``images/`` if that exists, else the JSON's folder."""
    folder = Path(ann_file).parent
    return folder / "images" if (folder / "images").is_dir() else folder


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_pixels(value: Any) -> bool:
    """A positive whole number (``640`` or ``640.0``): an image side."""
    return _is_number(value) and value > 0 and float(value).is_integer()


@contextlib.contextmanager
def _strict_pillow() -> Iterator[None]:
    """Make Pillow raise on truncated images even if something switched that off globally."""
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


@dataclass
class _ImageFacts:
    exists: bool
    size: Optional[tuple[int, int]] = None  # (w, h)
    error: str = ""
    exif_orientation: int = 1


def _inspect_image(path: Path, decode: bool) -> _ImageFacts:
    """Open one image: its size from the header, and with ``decode`` a full decode to catch truncation."""
    from PIL import Image

    if not path.is_file():
        return _ImageFacts(exists=False)
    try:
        with Image.open(path) as im:
            size = im.size
            if decode:
                im.load()
            # A PNG's getexif() decodes the whole image: read EXIF without decoding for JPEG only.
            orientation = 1
            if decode or im.format in ("JPEG", "MPO"):
                orientation = int(im.getexif().get(0x0112, 1) or 1)
        return _ImageFacts(True, size, exif_orientation=orientation)
    except Exception as exc:  # any decoder failure is a finding about this file, not a crash
        text = " ".join(str(exc).split())[:120]
        return _ImageFacts(True, error=f"{type(exc).__name__}: {text}")


# ---------------------------------------------------------------------------------------------- the check

def check_coco(ann_file: Path, img_dir: Path | None = None, decode: bool = True,
               progress: Progress | None = None, max_examples: int = 10) -> CheckReport:
    """Check a COCO annotation file and its images; see the module docstring for what is checked.

    ``img_dir`` defaults to :func:`default_img_dir`; ``file_name`` is relative to it. With ``decode=False`` image
    headers are still read (existence and size) but pixels are not decoded. ``progress(done, total)`` is called
    as images are inspected.
    """
    ann_file = Path(ann_file)
    data, sha = load_coco_json(ann_file)
    img_dir = Path(img_dir) if img_dir is not None else default_img_dir(ann_file)
    if not img_dir.is_dir():
        raise DataError(f"image folder not found: {img_dir}", "pass the folder holding the images with --img-dir")
    images, annotations, categories = data["images"], data["annotations"], data["categories"]
    report = CheckReport(ann_file=ann_file, img_dir=img_dir, decoded=decode, num_images=len(images),
                         num_annotations=len(annotations), ann_sha256=sha)
    issues = _Issues(max_examples)

    _check_categories(categories, report, issues)
    image_by_id = _check_image_records(images, report, issues)
    _check_image_files(images, image_by_id, img_dir, decode, report, issues, progress)
    _check_annotations(annotations, images, image_by_id, report, issues)

    report.issues = issues.as_list()
    return report


def _check_categories(categories: list[Any], report: CheckReport, issues: _Issues) -> None:
    names: Counter[str] = Counter()
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            issues.add("bad_category", f"categories[{i}]: needs an integer 'id' and a string 'name' ({cat!r:.80})")
            continue
        if cat["id"] in report.categories:
            issues.add("duplicate_category_id", f"id {cat['id']} ({report.categories[cat['id']]!r}, {cat['name']!r})")
            continue
        report.categories[cat["id"]] = cat["name"]
        names[cat["name"]] += 1
    for name, n in names.items():
        if n > 1:
            issues.add("duplicate_category_name", f"{name!r} ({n} categories)")
    report.num_categories = len(report.categories)
    report.class_counts = dict.fromkeys(report.categories.values(), 0)


def _image_label(img: Any, index: int) -> str:
    if isinstance(img, dict) and isinstance(img.get("file_name"), str):
        return img["file_name"]
    return f"images[{index}]"


def _check_image_records(images: list[Any], report: CheckReport, issues: _Issues) -> dict[int, int]:
    """Required fields, types and unique ids; returns image id -> index for the images with a usable id."""
    indices_by_id: dict[int, list[int]] = defaultdict(list)
    file_names: Counter[str] = Counter()
    for index, img in enumerate(images):
        label = _image_label(img, index)
        if not isinstance(img, dict):
            issues.add("image_malformed_field", f"{label}: not an object")
            report.bad_image_indices.add(index)
            continue
        missing = [k for k in IMAGE_FIELDS if k not in img]
        if missing:
            issues.add("image_missing_field", f"{label}: no {', '.join(repr(k) for k in missing)}")
        elif not (_is_int(img["id"]) and isinstance(img["file_name"], str) and img["file_name"]
                  and _is_pixels(img["width"]) and _is_pixels(img["height"])):
            issues.add("image_malformed_field", f"{label}: id must be an integer, width/height whole numbers > 0, "
                                                f"file_name a string (id={img['id']!r}, width={img['width']!r}, "
                                                f"height={img['height']!r})")
        else:
            indices_by_id[img["id"]].append(index)
            file_names[img["file_name"]] += 1
            size = f"{img['width']}x{img['height']}"
            report.image_sizes[size] = report.image_sizes.get(size, 0) + 1
            continue
        report.bad_image_indices.add(index)
        if _is_int(img.get("id")):
            report.bad_image_ids.add(img["id"])
    image_by_id = {}
    for image_id, idx in indices_by_id.items():
        if len(idx) == 1 and image_id not in report.bad_image_ids:
            image_by_id[image_id] = idx[0]
            continue
        # Shared ids make every annotation of that id ambiguous: all images sharing it are bad.
        names = ", ".join(_image_label(images[i], i) for i in idx[:3])
        issues.add("duplicate_image_id", f"id {image_id}: {names}", count=len(idx))
        report.bad_image_ids.add(image_id)
        report.bad_image_indices.update(idx)
    for name, n in file_names.items():
        if n > 1:
            issues.add("duplicate_file_name", f"{name} ({n} records)")
    return image_by_id


def _check_image_files(images: list[Any], image_by_id: dict[int, int], img_dir: Path, decode: bool,
                       report: CheckReport, issues: _Issues, progress: Progress | None) -> None:
    """Existence, decodability and decoded size of each image file of a well-formed image record."""
    todo = sorted(image_by_id.items(), key=lambda item: item[1])
    total = len(todo)
    workers = min(8, os.cpu_count() or 1)
    with _strict_pillow(), ThreadPoolExecutor(max_workers=workers) as pool:
        paths = [img_dir / images[index]["file_name"] for _, index in todo]
        for done, ((image_id, index), facts) in enumerate(
                zip(todo, pool.map(_inspect_image, paths, [decode] * total)), start=1):
            img = images[index]
            name = img["file_name"]
            bad = True
            if not facts.exists:
                issues.add("missing_image", name)
            elif facts.error:
                issues.add("unreadable_image", f"{name}: {facts.error}")
            elif facts.size != (img["width"], img["height"]):
                w, h = facts.size
                issues.add("image_size_mismatch", f"{name}: file is {w}x{h}, JSON says {img['width']}x{img['height']}")
            else:
                bad = False
                if facts.exif_orientation in (5, 6, 7, 8):
                    issues.add("exif_rotation", f"{name}: orientation {facts.exif_orientation} (loaders that apply "
                                                f"it see {facts.size[1]}x{facts.size[0]})")
            if bad:
                report.bad_image_ids.add(image_id)
                report.bad_image_indices.add(index)
            if progress is not None:
                progress(done, total)


def _box_iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xywh -> (N, N) IoU."""
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    iw = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    ih = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    inter = iw * ih
    area = boxes[:, 2] * boxes[:, 3]
    return inter / np.maximum(area[:, None] + area[None] - inter, 1e-9)


def _check_annotations(annotations: list[Any], images: list[Any], image_by_id: dict[int, int],
                       report: CheckReport, issues: _Issues) -> None:
    images_with_boxes: set[int] = set()
    seen_ids: set[int] = set()
    boxes_per_image: dict[tuple[int, int], list[tuple[int, list[float]]]] = defaultdict(list)
    referenced_ids = set()
    for index, ann in enumerate(annotations):
        if isinstance(ann, dict) and _is_int(ann.get("image_id")):
            referenced_ids.add(ann["image_id"])
        bad, example = _annotation_problem(ann, index, images, image_by_id, report, seen_ids)
        if isinstance(ann, dict) and _is_int(ann.get("id")):
            seen_ids.add(ann["id"])
        if bad:
            issues.add(bad, example)
            report.bad_annotation_indices.add(index)
            if isinstance(ann, dict) and _is_int(ann.get("id")):
                report.bad_annotation_ids.add(ann["id"])
            continue
        x, y, w, h = ann["bbox"]
        images_with_boxes.add(ann["image_id"])
        report.class_counts[report.categories[ann["category_id"]]] += 1
        area = w * h
        size = "small" if area < SMALL_MAX_AREA else "medium" if area < MEDIUM_MAX_AREA else "large"
        report.size_histogram[size] += 1
        boxes_per_image[(ann["image_id"], ann["category_id"])].append((ann["id"], ann["bbox"]))
        if ann["image_id"] in image_by_id:
            img = images[image_by_id[ann["image_id"]]]
            img_w, img_h = img["width"], img["height"]
            if x < -EDGE_TOLERANCE or y < -EDGE_TOLERANCE or x + w > img_w + EDGE_TOLERANCE \
                    or y + h > img_h + EDGE_TOLERANCE:
                issues.add("box_partly_outside_image", f"annotation {ann['id']}: bbox {_fmt_box(ann['bbox'])} "
                                                       f"in a {img_w}x{img_h} image")
                report.clip_annotation_ids.add(ann["id"])
                report.clip_annotation_indices.add(index)

    for image_id, index in image_by_id.items():
        if image_id not in referenced_ids:
            issues.add("image_without_boxes", images[index]["file_name"])

    for (image_id, _), items in boxes_per_image.items():
        if len(items) < 2:
            continue
        iou = np.triu(_box_iou_matrix(np.asarray([b for _, b in items], dtype=np.float64)), k=1)
        for a, b in zip(*np.nonzero(iou > DUPLICATE_IOU)):
            where = images[image_by_id[image_id]]["file_name"] if image_id in image_by_id else f"image {image_id}"
            issues.add("near_duplicate_boxes", f"annotations {items[a][0]} and {items[b][0]} on {where} "
                                               f"(IoU {iou[a, b]:.2f})")


def _fmt_box(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def _annotation_problem(ann: Any, index: int, images: list[Any], image_by_id: dict[int, int],
                        report: CheckReport, seen_ids: set[int]) -> tuple[str, str]:
    """(kind, example) of the first thing wrong with one annotation, or ("", "")."""
    if not isinstance(ann, dict):
        return "annotation_malformed_field", f"annotations[{index}]: not an object"
    label = f"annotation {ann['id']}" if _is_int(ann.get("id")) else f"annotations[{index}]"
    missing = [k for k in ANNOTATION_FIELDS if k not in ann]
    if missing:
        return "annotation_missing_field", f"{label}: no {', '.join(repr(k) for k in missing)}"
    bbox = ann["bbox"]
    if not (_is_int(ann["id"]) and _is_int(ann["image_id"]) and _is_int(ann["category_id"])
            and isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)
            and _is_number(ann["area"])):
        return "annotation_malformed_field", (f"{label}: ids must be integers, bbox 4 numbers, area a number "
                                              f"(bbox={bbox!r:.60}, area={ann['area']!r:.20})")
    if ann["id"] in seen_ids:
        return "duplicate_annotation_id", f"{label} (annotations[{index}]; an earlier annotation has this id)"
    if ann["image_id"] not in image_by_id and ann["image_id"] not in report.bad_image_ids:
        return "unknown_image_id", f"{label}: image_id {ann['image_id']}"
    if ann["category_id"] not in report.categories:
        return "unknown_category", f"{label}: category_id {ann['category_id']}"
    x, y, w, h = bbox
    img = images[image_by_id[ann["image_id"]]] if ann["image_id"] in image_by_id else None
    where = img["file_name"] if img else f"image id {ann['image_id']}"
    if w <= 0 or h <= 0:
        return "zero_size_box", f"{label} on {where}: bbox {_fmt_box(bbox)}"
    if img:
        img_w, img_h = img["width"], img["height"]
        if x >= img_w or y >= img_h or x + w <= 0 or y + h <= 0:
            return "box_outside_image", f"{label} on {where}: bbox {_fmt_box(bbox)} in a {img_w}x{img_h} image"
    return "", ""


# ---------------------------------------------------------------------------------------------- cleaning

def drop_bad_records(ann_file: Path, report: CheckReport, out_file: Path) -> tuple[int, int]:
    """Write a copy of ``ann_file`` without the records ``report`` found bad; returns (images, annotations) dropped.

    Bad images go with all their annotations; bad annotations go alone; boxes partly outside their image are
    clipped to it (area = clipped w*h) and kept. The file must be unchanged since it was checked.
    """
    ann_file, out_file = Path(ann_file), Path(out_file)
    if out_file.resolve() == ann_file.resolve():
        raise DataError(f"will not overwrite the checked file {ann_file} with its cleaned copy",
                        "write the cleaned copy to another file")
    data, sha = load_coco_json(ann_file)
    if sha != report.ann_sha256:
        raise DataError(f"{ann_file} changed since it was checked", "check it again, then drop the bad records")
    images, annotations = data["images"], data["annotations"]
    kept_images = [img for i, img in enumerate(images) if i not in report.bad_image_indices]
    kept_image_ids = {img["id"] for img in kept_images}
    size_by_id = {img["id"]: (img["width"], img["height"]) for img in kept_images}
    kept_annotations = []
    for index, ann in enumerate(annotations):
        if index in report.bad_annotation_indices or ann["image_id"] not in kept_image_ids:
            continue
        if index in report.clip_annotation_indices:
            ann = dict(ann, **_clip(ann["bbox"], *size_by_id[ann["image_id"]]))
        kept_annotations.append(ann)
    cleaned = dict(data, images=kept_images, annotations=kept_annotations)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_text(json.dumps(cleaned))
    os.replace(tmp, out_file)
    return len(images) - len(kept_images), len(annotations) - len(kept_annotations)


def _clip(bbox: list[float], width: int, height: int) -> dict[str, Any]:
    x1, y1 = max(bbox[0], 0.0), max(bbox[1], 0.0)
    x2, y2 = min(bbox[0] + bbox[2], float(width)), min(bbox[1] + bbox[3], float(height))
    box = [x1, y1, x2 - x1, y2 - y1]
    return {"bbox": box, "area": box[2] * box[3]}


# ---------------------------------------------------------------------------------------------- configs

def _join(root: str, path: str) -> str:
    """MMEngine's rule: a relative path is relative to data_root."""
    joined = path if not root or os.path.isabs(path) else os.path.join(root, path)
    return os.path.normpath(joined) if joined else joined


def _coco_datasets(dataset: Any, name: str) -> Iterator[tuple[str, Any]]:
    """(name, dataset cfg) of each COCO dataset inside a (possibly wrapped or concatenated) dataset cfg."""
    if dataset is None:
        return
    if "datasets" in dataset:  # ConcatDataset
        for i, sub in enumerate(dataset["datasets"]):
            yield from _coco_datasets(sub, f"{name}[{i}]")
    elif "dataset" in dataset:  # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset
        yield from _coco_datasets(dataset["dataset"], name)
    else:
        yield name, dataset


def check_config_datasets(cfg: Any, decode: bool = True,
                          progress: Callable[[str, int, int], None] | None = None) -> dict[str, CheckReport]:
    """Check the train/val (and test, when it differs from val) COCO datasets of an mmengine Config.

    Paths are resolved as MMDetection does: ``ann_file`` and ``data_prefix['img']`` joined with ``data_root``.
    Classes the config names in ``metainfo`` but the annotation file lacks are reported as errors.
    ``progress(name, done, total)`` reports image inspection per dataset.
    """
    reports: dict[str, CheckReport] = {}
    seen: dict[tuple[str, str, tuple], str] = {}
    for split in ("train", "val", "test"):
        loader = cfg.get(f"{split}_dataloader")
        if not loader or "dataset" not in loader:
            continue
        for name, ds in _coco_datasets(loader["dataset"], split):
            ds_type = str(ds.get("type", ""))
            ann = ds.get("ann_file")
            if not ann or not str(ann).endswith(".json"):
                raise ConfigError(f"{split} dataset ({ds_type or 'no type'}) has no COCO .json ann_file",
                                  "fltool data check reads COCO-format datasets (type CocoDataset)")
            root = ds.get("data_root") or ""
            ann_file = Path(_join(root, str(ann)))
            prefix = (ds.get("data_prefix") or {}).get("img")
            img_dir = Path(_join(root, str(prefix))) if prefix is not None else (Path(root) if root else None)
            classes = tuple((ds.get("metainfo") or {}).get("classes") or ())
            key = (str(ann_file), str(img_dir), classes)
            if key in seen:  # test often repeats val
                continue
            seen[key] = name
            callback = (lambda done, total, _n=name: progress(_n, done, total)) if progress else None
            report = check_coco(ann_file, img_dir, decode, callback)
            missing = [c for c in classes if c not in report.categories.values()]
            if missing:
                report.issues.insert(0, Issue("config_class_not_in_annotations", ERROR, len(missing),
                                              [f"{c!r} (categories: {sorted(report.categories.values())})"
                                               for c in missing[:10]]))
            reports[name] = report
    if not reports:
        raise ConfigError("the config has no train/val/test dataloader with a dataset",
                          "give a training config, or an annotation .json file")
    return reports
