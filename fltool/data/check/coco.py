"""Checking one COCO annotation file and its images (:func:`check_coco`); what counts as bad is in the package's
docstring."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from fltool.data.check.report import (
    ANNOTATION_FIELDS,
    DUPLICATE_IOU,
    EDGE_TOLERANCE,
    IMAGE_FIELDS,
    KINDS,
    MEDIUM_MAX_AREA,
    SMALL_MAX_AREA,
    CheckReport,
    IssueCollector,
)
from fltool.errors import DataError

Progress = Callable[[int, int], None]


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
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise DataError(f"{ann_file} is not usable JSON ({' '.join(str(exc).split(';')[0].split())[:100]})",
                        "give a COCO annotation .json file") from None
    except RecursionError:
        raise DataError(f"{ann_file} is nested too deeply to be a COCO annotation file (lists or objects inside "
                        "each other beyond Python's recursion limit)", "give a COCO annotation .json file") from None
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
    """A finite int or float (not a bool); an int beyond the float range is not one."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int of hundreds of digits
        return False


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

    from fltool.data.image_limits import ImageTooLarge, check_image

    if not path.is_file():
        return _ImageFacts(exists=False)
    try:
        check_image(path, path.name)  # from the header: a decompression bomb is named, never decoded
    except ImageTooLarge as exc:
        return _ImageFacts(True, error=f"ImageTooLarge: {exc}")
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
    issues = IssueCollector(KINDS, max_examples)

    _check_categories(categories, report, issues)
    image_by_id = _check_image_records(images, report, issues)
    _check_image_files(images, image_by_id, img_dir, decode, report, issues, progress)
    _check_annotations(annotations, images, image_by_id, report, issues)

    report.issues = issues.as_list()
    return report


def _check_categories(categories: list[Any], report: CheckReport, issues: IssueCollector) -> None:
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


def _check_image_records(images: list[Any], report: CheckReport, issues: IssueCollector) -> dict[int, int]:
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
                       report: CheckReport, issues: IssueCollector, progress: Progress | None) -> None:
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
                       report: CheckReport, issues: IssueCollector) -> None:
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
