"""What a dataset check finds: :class:`Issue` records of the kinds in :data:`KINDS`, gathered in a
:class:`CheckReport`."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

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
        return issue_label(self, KINDS)


def issue_label(issue: Issue, kinds: dict[str, tuple[str, str, str]]) -> str:
    """``2 missing images``: the count in the words of its kind in ``kinds`` (kind -> (severity, singular, plural))."""
    _, one, many = kinds.get(issue.kind, (issue.severity, issue.kind, issue.kind))
    return f"{issue.count} {one if issue.count == 1 else many}"


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


class IssueCollector:
    """Collects issues of the kinds in ``kinds`` (kind -> (severity, singular, plural)), in that table's order, with up
    to ``max_examples`` examples each. The dataset check uses :data:`KINDS`; the VOC/YOLO readers their own table."""

    def __init__(self, kinds: dict[str, tuple[str, str, str]], max_examples: int = 10):
        self.kinds = kinds
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, example: str, count: int = 1) -> None:
        self.counts[kind] += count
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(example)

    def as_list(self) -> list[Issue]:
        return [Issue(kind, self.kinds[kind][0], self.counts[kind], self.examples[kind])
                for kind in self.kinds if self.counts[kind]]
