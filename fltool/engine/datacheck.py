"""The data a run trains on, checked before MMEngine builds anything: ``fltool data check`` on the train/val
splits (stop, skip, or drop the bad records with ``--data-check``), and a training set that would hold no image
after MMDetection's own filter named as such (MMEngine would stop on 'need at least one array to concatenate')."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fltool.engine import runner as rn
from fltool.errors import DataError
from fltool.progress import ProgressEvent, ProgressFn, no_progress


def check_training_data(cfg: Any, mode: str, progress: ProgressFn = no_progress) -> list[str]:
    """``fltool data check`` on the train/val sets before training. Returns notes (e.g. what was dropped)."""
    if mode == "skip":
        check_training_boxes(cfg)
        return ["data check skipped (--data-check skip)"]
    from fltool.data.check import check_coco, drop_bad_records

    notes = []
    for split in ("train", "val"):
        ann, img_dir = rn.dataset_paths(cfg, split)
        if ann is None:
            continue
        progress(ProgressEvent("stage", f"checking {split} data ({ann.name})"))
        report = check_coco(ann, img_dir)
        if report.ok:
            continue
        errors = [i for i in report.issues if i.severity == "error"]
        summary = ", ".join(i.label for i in errors)
        if mode != "drop":
            example = errors[0].examples[0] if errors and errors[0].examples else ""
            raise DataError(f"{split} data {ann} has errors: {summary}" + (f" (e.g. {example})" if example else ""),
                            f"run `fltool data check {ann}` for the full report; fix the data or rerun with "
                            "--data-check drop to train without the bad records")
        out = Path(cfg.work_dir) / "data" / f"{split}_checked.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        n_img, n_ann = drop_bad_records(ann, report, out)
        if n_img >= report.num_images:
            raise DataError(f"{split} data {ann}: every image has errors ({summary}), none is left to "
                            f"{'train' if split == 'train' else 'evaluate'} on",
                            f"run `fltool data check {ann}` for the full report and fix the data")
        dataset = rn.innermost_dataset(cfg, split)
        dataset["ann_file"] = str(out.resolve())
        dataset["data_root"] = ""
        dataset["data_prefix"] = dict(img=str(img_dir) + "/")
        if split == "val":
            for key in ("val_evaluator", "test_evaluator"):
                if isinstance(cfg.get(key), dict) and "ann_file" in cfg[key]:
                    cfg[key]["ann_file"] = str(out.resolve())
        notes.append(f"{split}: dropped {n_img} images and {n_ann} annotations with errors ({summary}); "
                     f"training reads {out}")
    check_training_boxes(cfg, "dropped with --data-check drop" if any("dropped" in n for n in notes) else "")
    return notes


def check_training_boxes(cfg: Any, dropped: str = "") -> None:
    """A DataError before training where MMDetection's training set would hold no image (its CocoDataset keeps an
    image with a box of the config's classes and both sides at least ``filter_cfg.min_size``); MMEngine would
    otherwise stop on ``need at least one array to concatenate``. Says why no image is left."""
    import json

    ann, _ = rn.dataset_paths(cfg, "train")
    dataset = rn.innermost_dataset(cfg, "train")
    if ann is None or "Coco" not in str(dataset.get("type", "")):
        return
    try:
        data = json.loads(ann.read_text())
        images = {img["id"]: img for img in data.get("images") or []}
        anns, categories = data.get("annotations") or [], data.get("categories") or []
        classes = set((dataset.get("metainfo") or {}).get("classes") or [c.get("name") for c in categories])
        cat_ids = {c["id"] for c in categories if c.get("name") in classes}
        with_box = {a["image_id"] for a in anns if a.get("category_id") in cat_ids}
        filter_cfg = dataset.get("filter_cfg") or {}
        min_size = filter_cfg.get("min_size", 0) or 0
        keep = [i for i in images if (i in with_box or not filter_cfg.get("filter_empty_gt"))
                and min(images[i].get("width", 0), images[i].get("height", 0)) >= min_size]
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return  # the data check and MMDetection name a malformed file better than this count could
    if keep:
        return
    if not anns:
        why = "it has no boxes (no annotations)"
    elif not with_box:
        why = f"none of its {len(anns)} boxes is of the classes {sorted(classes)[:5]}"
    else:
        why = (f"all {len(with_box)} images with boxes are smaller than filter_cfg.min_size = {min_size} px "
               "(MMDetection leaves them out)")
    raise DataError(f"no training image is left in {ann}: {why}" + (f" after what was {dropped}" if dropped else ""),
                    "give data with boxes of the model's classes (fltool data check shows what is there)"
                    + (", or lower train_dataloader.dataset.filter_cfg.min_size" if with_box else ""))
