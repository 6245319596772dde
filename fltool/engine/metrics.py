"""COCO box metrics as fltool reports them, in one place.

- :data:`METRIC_KEYS`: AP, AP50, AP75, APs, APm, APl, in [0, 1]; :func:`coco_metrics` turns MMDetection's
  ``coco/bbox_mAP...`` keys into them (None where COCO's -1 means "no ground truth of that size");
- :func:`no_detection_metrics`: the metrics of a model that detected nothing (MMDetection returns none at all);
- :func:`subset_evaluator_cfg` / :func:`subset_metrics`: AP on exactly the images a command ran (a subset of a
  split), against an annotation file filtered to them, through MMDetection's own evaluator (pycocotools), so a
  subset does not deflate AP. ``fltool bench`` and ``fltool export``'s check use them.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from fltool.errors import DataError
from fltool.fileio import write_json

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
METRIC_NAMES = {"bbox_mAP": "AP", "bbox_mAP_50": "AP50", "bbox_mAP_75": "AP75", "bbox_mAP_s": "APs",
                "bbox_mAP_m": "APm", "bbox_mAP_l": "APl"}


def coco_metrics(raw: dict) -> dict:
    """MMDetection's ``coco/bbox_mAP...`` keys to AP/AP50/AP75/APs/APm/APl (+ per-class AP when present)."""
    out: dict = {}
    per_class: dict = {}
    for key, value in raw.items():
        name = key.split("/", 1)[-1]
        if name in METRIC_NAMES:
            # COCO reports -1 where the split has no ground truth of that size: not a score, so None.
            out[METRIC_NAMES[name]] = float(value) if float(value) >= 0 else None
        elif name.endswith("_precision"):
            per_class[name[: -len("_precision")]] = float(value)
    if per_class:
        out["per_class_AP"] = per_class
    return out


def has_bbox_metrics(raw: dict) -> bool:
    return any(key.split("/", 1)[-1] == "bbox_mAP" for key in raw)


def no_detection_metrics(ann_file: Any) -> dict:
    """The COCO metrics of a model that detected nothing: 0 where the split has ground truth, None where it has none.

    MMDetection's CocoMetric logs "The testing results of the whole dataset is empty" and returns no numbers at
    all, which would read as n/a; pycocotools' own answer for no detections is AP 0 (and -1 for an empty size bin).
    """
    import json

    from fltool.data.check import MEDIUM_MAX_AREA, SMALL_MAX_AREA

    try:
        data = json.loads(Path(ann_file).read_text())
        areas = [float(a.get("area", 0.0)) for a in data.get("annotations", []) if not a.get("iscrowd", 0)]
    except (OSError, ValueError, TypeError, AttributeError):
        areas = []
    bins = {"APs": any(a < SMALL_MAX_AREA for a in areas),
            "APm": any(SMALL_MAX_AREA <= a < MEDIUM_MAX_AREA for a in areas),
            "APl": any(a >= MEDIUM_MAX_AREA for a in areas)}
    out = {key: (0.0 if areas else None) for key in METRIC_KEYS[:3]}
    out.update({key: (0.0 if present else None) for key, present in bins.items()})
    return out


def filter_coco(data: dict, img_ids: Sequence[int]) -> dict:
    """A COCO dict with only the images ``img_ids`` (in that order) and their annotations."""
    wanted = list(img_ids)
    by_id = {img["id"]: img for img in data.get("images", [])}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise DataError(f"image id {missing[0]} is not in the annotation file ({len(missing)} missing)",
                        "use the evaluator's annotation file of the same split as the test dataset")
    keep = set(wanted)
    out = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    out["images"] = [by_id[i] for i in wanted]
    out["annotations"] = [a for a in data.get("annotations", []) if a.get("image_id") in keep]
    return out


def subset_evaluator_cfg(cfg: Any, img_ids: Sequence[int], work_dir: Path, written: dict) -> Any:
    """The test evaluator config with every ``ann_file`` replaced by one holding only the images ``img_ids``
    (written under ``work_dir/annotations``; ``written`` maps each original file to its subset, reused by the next
    call)."""
    evaluator = cfg.test_evaluator
    evaluator = evaluator.to_dict() if hasattr(evaluator, "to_dict") else copy.deepcopy(evaluator)
    for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
        ann = ev.get("ann_file")
        if not ann:
            continue
        if ann not in written:
            path = Path(ann)
            if not path.is_file():
                raise DataError(f"test annotation file not found: {ann}", "fix test_evaluator.ann_file")
            try:
                data = json.loads(path.read_text())
            except ValueError as exc:
                raise DataError(f"annotation file {ann} is not valid JSON: {exc}") from None
            subset = filter_coco(data, img_ids)
            digest = hashlib.sha1(f"{path.resolve()}:{list(img_ids)}".encode()).hexdigest()[:8]
            out = work_dir / "annotations" / f"{path.stem}_{len(img_ids)}img_{digest}.json"
            write_json(out, subset, indent=None)
            written[ann] = str(out)
        ev["ann_file"] = written[ann]
    return evaluator


def subset_metrics(runner: Any, evaluator_cfg: Any, metainfo: dict, batches: list, preds: list) -> dict:
    """COCO metrics of the predictions against the evaluator of :func:`subset_evaluator_cfg` (these images)."""
    evaluator = runner.build_evaluator(copy.deepcopy(evaluator_cfg))
    evaluator.dataset_meta = metainfo
    for batch, pred_per_image in zip(batches, preds):
        samples = []
        for sample, pred in zip(batch["data_samples"], pred_per_image):
            record = sample.to_dict()
            record["pred_instances"] = pred.to_dict()
            samples.append(record)
        evaluator.process(data_samples=samples, data_batch=batch)
    found = coco_metrics(evaluator.evaluate(len(batches)))
    return {k: found.get(k) for k in METRIC_KEYS}
