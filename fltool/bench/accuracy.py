"""How ``fltool bench`` measures accuracy: COCO AP on exactly the validation images it ran.

The test evaluator is pointed at an annotation file filtered to the images run (``annotations/`` in the work dir),
so a subset of the split does not deflate AP; the predictions then go through MMDetection's own evaluator
(pycocotools). Reported: AP, AP50, AP75, APs, APm, APl in [0, 1].
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from fltool.bench.inputs import Images, plain
from fltool.errors import DataError
from fltool.fileio import write_json

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


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


def subset_evaluator_cfg(cfg: Any, images: Images, work_dir: Path) -> Any:
    """The test evaluator config with every ``ann_file`` replaced by one holding only the images run."""
    evaluator = plain(cfg.test_evaluator)
    for ev in evaluator if isinstance(evaluator, list) else [evaluator]:
        ann = ev.get("ann_file")
        if not ann:
            continue
        if ann not in images.subset_anns:
            path = Path(ann)
            if not path.is_file():
                raise DataError(f"test annotation file not found: {ann}", "fix test_evaluator.ann_file")
            try:
                data = json.loads(path.read_text())
            except ValueError as exc:
                raise DataError(f"annotation file {ann} is not valid JSON: {exc}") from None
            subset = filter_coco(data, images.img_ids)
            digest = hashlib.sha1(f"{path.resolve()}:{images.img_ids}".encode()).hexdigest()[:8]
            out = work_dir / "annotations" / f"{path.stem}_{len(images.img_ids)}img_{digest}.json"
            write_json(out, subset, indent=None)
            images.subset_anns[ann] = str(out)
        ev["ann_file"] = images.subset_anns[ann]
    return evaluator


def subset_metrics(runner: Any, evaluator_cfg: Any, images: Images, batches: list, preds: list) -> dict:
    """COCO metrics of the predictions against the annotation file filtered to these images."""
    from fltool.engine.train import coco_metrics

    evaluator = runner.build_evaluator(copy.deepcopy(evaluator_cfg))
    evaluator.dataset_meta = images.metainfo
    for batch, pred_per_image in zip(batches, preds):
        samples = []
        for sample, pred in zip(batch["data_samples"], pred_per_image):
            record = sample.to_dict()
            record["pred_instances"] = pred.to_dict()
            samples.append(record)
        evaluator.process(data_samples=samples, data_batch=batch)
    found = coco_metrics(evaluator.evaluate(len(batches)))
    return {k: found.get(k) for k in METRIC_KEYS}
