"""A copy of a checked annotation file without its bad records (:func:`drop_bad_records`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fltool.data.check.coco import load_coco_json
from fltool.data.check.report import CheckReport
from fltool.errors import DataError


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
