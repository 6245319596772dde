"""Checking the COCO datasets a training config names (:func:`check_config_datasets`), found as MMDetection finds
them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

from fltool.data.check.coco import check_coco
from fltool.data.check.report import ERROR, CheckReport, Issue
from fltool.errors import ConfigError


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
