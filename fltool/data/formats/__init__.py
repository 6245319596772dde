"""Datasets in COCO, Pascal VOC or YOLO layout, found from what a folder holds, read into COCO JSON.

:func:`resolve` is what ``--data PATH`` means: it detects the layout (or takes ``--format``), reads VOC/YOLO
annotations into COCO JSON once (cached under ``cache_root``, keyed by the annotation files' content and the image
files' names and sizes), takes the train/val split the data gives or draws one (:func:`common.split_names`, written
down in ``split.json``), and returns a :class:`Dataset`: the classes, the COCO files and image folder of each split,
and what converting found wrong (:attr:`Dataset.issues`; the records concerned are left out of the JSON).
Images are read where they are, never copied.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from fltool.data.check import ERROR, Issue
from fltool.data.formats import coco, voc, yolo
from fltool.data.formats.common import (
    DEFAULT_VAL_FRACTION,
    SPLIT_SEED,
    ImageRecord,
    Problems,
    coco_subset,
    file_digest,
    id_key,
    issue_label,
    list_images,
    relative,
    split_names,
    to_coco,
)
from fltool.errors import DataError
from fltool.fileio import write_json

FORMATS = ("coco", "voc", "yolo")
FORMAT_NAMES = {"coco": "COCO", "voc": "Pascal VOC", "yolo": "YOLO"}
#: Bump when the conversion's output changes, so that cached conversions are redone.
CONVERTER_VERSION = 1
_LOOKED_FOR = {"coco": coco.LOOKED_FOR, "voc": voc.LOOKED_FOR, "yolo": yolo.LOOKED_FOR}


@dataclass
class SplitFiles:
    ann_file: Path
    img_dir: Path  # what the JSON's file names are relative to (absolute file names ignore it)
    num_images: int


@dataclass
class Dataset:
    source: Path
    name: str
    format: str
    layout: str
    classes: tuple
    train: SplitFiles
    val: SplitFiles
    split_from: str
    image_size: tuple  # median (width, height) of the training images
    issues: list = field(default_factory=list)  # Issue: what reading VOC/YOLO files found (left out of the JSON)
    cache_dir: Optional[Path] = None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    def errors_summary(self) -> str:
        errors = self.errors
        total = sum(i.count for i in errors)
        return f"{total} error{'s' if total != 1 else ''} ({', '.join(issue_label(i) for i in errors)})"

    def describe(self) -> str:
        names = ", ".join(self.classes[:6]) + (", ..." if len(self.classes) > 6 else "")
        return (f"{FORMAT_NAMES[self.format]} ({self.layout}): {len(self.classes)} classes ({names}); "
                f"{self.train.num_images} train / {self.val.num_images} val images, split {self.split_from}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["issues"] = [asdict(i) for i in self.issues]
        return json.loads(json.dumps(out, default=str))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Dataset":
        split = lambda s: SplitFiles(Path(s["ann_file"]), Path(s["img_dir"]), int(s["num_images"]))  # noqa: E731
        return cls(Path(d["source"]), d["name"], d["format"], d["layout"], tuple(d["classes"]), split(d["train"]),
                   split(d["val"]), d["split_from"], tuple(d["image_size"]), [Issue(**i) for i in d["issues"]],
                   Path(d["cache_dir"]) if d.get("cache_dir") else None)


def data_name(path: Path) -> str:
    """A short name for configs and work dirs: the dataset folder's name."""
    path = path.resolve()
    folder = path.parent if path.is_file() else path
    if folder.name.lower() in ("annotations", "labels", "images") and folder.parent.name:
        folder = folder.parent
    return re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-") or "data"


def _contents(path: Path) -> str:
    counts: Counter[str] = Counter()
    for i, p in enumerate(path.rglob("*") if path.is_dir() else [path]):
        if i > 100_000:
            break
        if p.is_file():
            counts[p.suffix.lower() or "no extension"] += 1
    if not counts:
        return "the folder is empty"
    return "it holds " + ", ".join(f"{n} {ext}" for ext, n in counts.most_common(4)) + " files"


def detect(path: Path, fmt: Optional[str] = None) -> tuple[str, Any]:
    """(format, layout) of ``path``; DataError naming what was looked for when nothing (or several) match."""
    finders = {"coco": coco.find, "voc": voc.find, "yolo": yolo.find}
    order = [fmt] if fmt else ["yolo", "voc", "coco"]
    found, problems = {}, []
    for name in order:
        try:
            layout = finders[name](path)
        except DataError as exc:  # e.g. several COCO files: only an error if nothing else matches
            problems.append(exc)
            continue
        if layout is not None:
            found[name] = layout
    if not found and problems:
        raise problems[0]
    if not found:
        what = FORMAT_NAMES[fmt] + " dataset" if fmt else "dataset"
        looked = "; ".join(_LOOKED_FOR[f] for f in order)
        raise DataError(f"no {what} found in {path}: looked for {looked}; {_contents(path)}",
                        "give the dataset's folder or annotation file" + ("" if fmt else
                                                                          ", or the format with --format"))
    if len(found) > 1:
        which = ", ".join(f"{FORMAT_NAMES[f]} ({layout.description})" for f, layout in found.items())
        raise DataError(f"{path} matches several dataset layouts: {which}",
                        f"choose one with --format {'|'.join(found)}")
    return next(iter(found.items()))


def _side(value: Any) -> bool:
    """A usable image side: a finite number > 0 (not a bool, not NaN, inf or an int beyond the float range)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:
        return False


def _median_size(sizes: list[tuple[Any, Any]]) -> tuple[int, int]:
    """Median (width, height) of the sizes that are numbers (the others are for ``fltool data check`` to name)."""
    sizes = [(w, h) for w, h in sizes if _side(w) and _side(h)]
    if not sizes:
        return (0, 0)
    return (int(statistics.median(w for w, _ in sizes)), int(statistics.median(h for _, h in sizes)))


def _check_fraction(val_fraction: float) -> float:
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    return val_fraction


# ---------------------------------------------------------------------------------------------- COCO

def _resolve_coco(path: Path, layout: coco.CocoLayout, cache_root: Path, val_fraction: float) -> Dataset:
    name = data_name(path)
    if "all" not in layout.files:
        train, val = coco.load(layout.files["train"]), coco.load(layout.files["val"])
        classes = coco.class_names(train, layout.files["train"])
        extra = [n for n in coco.class_names(val, layout.files["val"]) if n not in classes]
        if extra:
            raise DataError(f"{layout.files['val']} has categories that {layout.files['train'].name} lacks: "
                            f"{', '.join(extra[:5])}", "give both files the same categories")
        splits = {s: SplitFiles(layout.files[s], coco.find_image_dir(layout.files[s], d), len(d["images"]))
                  for s, d in (("train", train), ("val", val))}
        sizes = [(i.get("width"), i.get("height")) for i in train["images"] if isinstance(i, dict)]
        return Dataset(path, name, "coco", layout.description, tuple(classes), splits["train"], splits["val"],
                       f"given by the data ({layout.description})", _median_size(sizes))
    ann_file = layout.files["all"]
    raw = ann_file.read_bytes()
    data = coco.load(ann_file)
    classes = coco.class_names(data, ann_file)
    img_dir = coco.find_image_dir(ann_file, data)
    key = hashlib.sha256(raw + f"|{val_fraction}|{SPLIT_SEED}|{img_dir.resolve()}".encode()).hexdigest()[:12]
    cache = cache_root / f"coco-{key}"
    good = {i["file_name"]: i["id"] for i in data["images"] if isinstance(i, dict)
            and isinstance(i.get("file_name"), str) and isinstance(i.get("id"), int)}
    if len(good) < 2:
        raise DataError(f"{ann_file} has {len(good)} usable image(s); a train/val split needs at least 2")
    train_names, val_names = split_names(good, val_fraction)
    val_ids = {good[n] for n in val_names}
    train_ids = {id_key(i.get("id")) for i in data["images"] if isinstance(i, dict)} - val_ids  # bad records: train
    files = {}
    for split, ids in (("train", train_ids), ("val", val_ids)):
        out = cache / f"{split}.json"
        if not out.is_file():
            write_json(out, coco_subset(data, ids, img_dir.resolve()), indent=None)
        files[split] = SplitFiles(out.resolve(), img_dir.resolve(), len(ids))
    split_file = cache / "split.json"
    write_json(split_file, {"source": str(ann_file.resolve()), "seed": SPLIT_SEED, "val_fraction": val_fraction,
                            "train": train_names, "val": val_names})
    sizes = [(i.get("width"), i.get("height")) for i in data["images"] if isinstance(i, dict)
             and id_key(i.get("id")) in train_ids]
    return Dataset(path, name, "coco", layout.description, tuple(classes), files["train"], files["val"],
                   f"here (seed {SPLIT_SEED}, --val-fraction {val_fraction:g}; {split_file})", _median_size(sizes),
                   cache_dir=cache.resolve())


# ---------------------------------------------------------------------------------------------- VOC / YOLO

def _conversion_key(fmt: str, layout: Any, val_fraction: float, classes: Optional[Sequence[str]]) -> str:
    if fmt == "voc":
        sources, images = list(layout.sources), list_images(layout.root)
    else:
        sources = list(layout.sources) + yolo.label_files(layout)
        images = [p for imgs in layout.splits.values() for p in imgs]
    digest = hashlib.sha256(f"{fmt}|{CONVERTER_VERSION}|{layout.root.resolve()}|{val_fraction}|{SPLIT_SEED}|"
                            f"{sorted(layout.splits) if fmt == 'yolo' else ''}|{list(classes or [])}".encode())
    digest.update(file_digest(sources, layout.root).encode())
    digest.update(file_digest([p for p in images if p.is_file()], layout.root, with_content=False).encode())
    return digest.hexdigest()[:12]


def _assign_splits(records: list[ImageRecord], root: Path, val_fraction: float, source: str,
                   problems: Problems, split_file: Path) -> tuple[list, list, str]:
    given = [r.split for r in records]
    if all(s in ("train", "val", "test") for s in given) and "train" in given and "val" in given:
        for r in records:
            if r.split == "test":
                problems.add("test_image_ignored", relative(r.path, root))
        return ([r for r in records if r.split == "train"], [r for r in records if r.split == "val"],
                f"given by the data ({source})")
    if len(records) < 2:
        raise DataError(f"{root} has {len(records)} usable image(s); a train/val split needs at least 2")
    by_name = {relative(r.path, root): r for r in records}
    train_names, val_names = split_names(by_name, val_fraction)
    write_json(split_file, {"source": str(root), "seed": SPLIT_SEED, "val_fraction": val_fraction,
                            "train": train_names, "val": val_names})
    return ([by_name[n] for n in train_names], [by_name[n] for n in val_names],
            f"here (seed {SPLIT_SEED}, --val-fraction {val_fraction:g}; {split_file})")


def _convert(path: Path, fmt: str, layout: Any, cache_root: Path, val_fraction: float,
             classes: Optional[Sequence[str]]) -> Dataset:
    cache = (cache_root / f"{fmt}-{_conversion_key(fmt, layout, val_fraction, classes)}").resolve()
    record = cache / "dataset.json"
    if record.is_file():
        try:
            return Dataset.from_dict(json.loads(record.read_text()))
        except (ValueError, KeyError, TypeError):
            pass  # an older or damaged record: convert again
    problems = Problems()
    reader = voc.read if fmt == "voc" else yolo.read
    records, classes, source = reader(layout, problems, classes)
    issues = problems.as_list()
    if not records:
        found = "; ".join(f"{issue_label(i)} (e.g. {i.examples[0]})" for i in issues if i.examples)
        raise DataError(f"no usable image in {layout.root} ({FORMAT_NAMES[fmt]}, {layout.description})"
                        + (f": {found}" if found else ""), "fix the annotation files (see `fltool data check`)")
    if not classes:
        raise DataError(f"{layout.root}: the annotations name no object at all",
                        "a detector needs boxes to train on")
    train, val, split_from = _assign_splits(records, layout.root, val_fraction, source, problems,
                                            cache / "split.json")
    if not val or not train:
        raise DataError(f"{layout.root}: the {'val' if not val else 'train'} split has no usable image")
    files = {}
    for split, recs in (("train", train), ("val", val)):
        out = cache / f"{split}.json"
        write_json(out, to_coco(recs, classes), indent=None)
        files[split] = SplitFiles(out, layout.root.resolve(), len(recs))
    dataset = Dataset(path, data_name(path), fmt, layout.description, tuple(classes), files["train"],
                      files["val"], split_from, _median_size([(r.width, r.height) for r in train]),
                      problems.as_list(), cache)
    write_json(record, dataset.to_dict())
    return dataset


def resolve(path: Path, cache_root: Path, fmt: Optional[str] = None, val_fraction: Optional[float] = None,
            classes: Optional[Sequence[str]] = None) -> Dataset:
    """What ``--data PATH`` (and ``--format``, ``--val-fraction``) name; see the module docstring. ``classes``:
    the class list for VOC data that has none of its own (a trained model's classes)."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    if not path.exists():
        raise DataError(f"data not found: {path}", "give a dataset folder (COCO, Pascal VOC or YOLO layout) or a "
                                                   "COCO annotation file")
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown data format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    fraction = _check_fraction(DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction)
    name, layout = detect(path, fmt)
    if name == "coco":
        dataset = _resolve_coco(path, layout, Path(cache_root), fraction)
    else:
        dataset = _convert(path, name, layout, Path(cache_root), fraction, classes)
    return dataset
