"""COCO datasets: where their annotation files and images are, and the split of a single annotation file.

Layouts recognised (``PATH`` is what ``--data`` names):

- an annotation ``.json`` file: one set, split here;
- a folder with ``train.json`` and ``val.json`` (also under ``annotations/``; ``valid.json`` counts as val);
- a folder with ``annotations/instances_train*.json`` and ``annotations/instances_val*.json`` (COCO's own layout);
- a folder with ``train/`` and ``val/`` (or ``valid/``) subfolders holding one COCO ``.json`` each (Roboflow's);
- a folder with one COCO ``.json`` (at its top or under ``annotations/``): one set, split here.

Images are found from the first ``file_name``\\ s of each file: in ``images/`` beside the JSON, the JSON's folder,
the folder above (and its ``images/``), or a folder named after the split (``train2017/``, ``images/train2017/``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fltool.data.check import load_coco_json
from fltool.errors import DataError

LOOKED_FOR = ("COCO: an annotation .json (images/annotations/categories): train.json + val.json, "
              "annotations/instances_train*.json + instances_val*.json, train/ + val/ with one .json each, "
              "or one .json")
_INSTANCES = re.compile(r"^instances_(?P<split>[A-Za-z]+)[\w-]*\.json$")


@dataclass
class CocoLayout:
    root: Path
    files: dict[str, Path]  # "train"/"val" -> JSON, or "all" -> the one JSON to split
    description: str


def looks_like_coco(path: Path) -> bool:
    """A JSON object whose first 256 kB mention ``"images"`` (read without parsing the whole file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256 * 1024)
    except OSError:
        return False
    return head.lstrip()[:1] == b"{" and b'"images"' in head


def _coco_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.json") if p.is_file() and looks_like_coco(p)) if folder.is_dir() else []


def find(path: Path) -> Optional[CocoLayout]:
    if path.is_file():
        return CocoLayout(path.parent, {"all": path}, f"annotation file {path.name}") \
            if path.suffix.lower() == ".json" else None
    for folder in (path, path / "annotations"):
        by_name = {p.stem.lower(): p for p in _coco_files(folder)}
        val = by_name.get("val") or by_name.get("valid") or by_name.get("validation")
        if "train" in by_name and val is not None:
            where = "" if folder == path else f"{folder.name}/"
            return CocoLayout(path, {"train": by_name["train"], "val": val},
                              f"{where}{by_name['train'].name} + {where}{val.name}")
    subfolders = {d.name.lower(): d for d in path.iterdir() if d.is_dir()}
    val_dir = subfolders.get("val") or subfolders.get("valid") or subfolders.get("validation")
    if "train" in subfolders and val_dir is not None:  # train/ + valid/, one JSON each (e.g. Roboflow's export)
        per_split = {"train": _coco_files(subfolders["train"]), "val": _coco_files(val_dir)}
        if all(len(files) == 1 for files in per_split.values()):
            files = {s: f[0] for s, f in per_split.items()}
            return CocoLayout(path, files, f"train/{files['train'].name} + {val_dir.name}/{files['val'].name}")
    instances = {}
    for p in _coco_files(path / "annotations"):
        m = _INSTANCES.match(p.name)
        if m and m.group("split").lower() in ("train", "val"):
            instances.setdefault(m.group("split").lower(), p)
    if set(instances) == {"train", "val"}:
        return CocoLayout(path, instances, f"annotations/{instances['train'].name} + {instances['val'].name}")
    for folder in (path, path / "annotations"):
        files = _coco_files(folder)
        if len(files) == 1:
            return CocoLayout(path, {"all": files[0]}, f"one annotation file, {files[0].relative_to(path)}")
        if len(files) > 1:
            names = ", ".join(p.name for p in files[:5])
            raise DataError(f"{folder} holds several COCO annotation files ({names}) and no train/val pair",
                            "give the one to use as --data FILE, or name them train.json and val.json")
    return None


def _split_word(ann_file: Path) -> Optional[str]:
    m = _INSTANCES.match(ann_file.name)
    if m:
        return ann_file.stem[len("instances_"):]
    return ann_file.stem


def find_image_dir(ann_file: Path, data: dict[str, Any]) -> Path:
    """The folder that ``file_name`` is relative to (see the module docstring for the places tried)."""
    names = [img["file_name"] for img in data["images"][:50]
             if isinstance(img, dict) and isinstance(img.get("file_name"), str)]
    folder, word = ann_file.parent, _split_word(ann_file)
    candidates = [folder / "images", folder, folder.parent / "images", folder.parent]
    if word:
        candidates += [folder.parent / word, folder.parent / "images" / word, folder / word]
    if not names:
        return candidates[0] if candidates[0].is_dir() else folder
    best, best_hits = None, 0
    for cand in candidates:
        if not cand.is_dir():
            continue
        hits = sum((cand / n).is_file() for n in names)
        if hits > best_hits:
            best, best_hits = cand, hits
        if hits == len(names):
            break
    if best is None:
        tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
        raise DataError(f"the images of {ann_file} were not found (e.g. {names[0]!r}; looked in {tried})",
                        "put them in an images/ folder beside the annotation file")
    return best


def class_names(data: dict[str, Any], ann_file: Path) -> list[str]:
    cats = [c for c in data["categories"] if isinstance(c, dict) and isinstance(c.get("name"), str)
            and isinstance(c.get("id"), int)]
    if not cats:
        raise DataError(f"{ann_file} has no categories", "a COCO file lists its classes in 'categories'")
    return [c["name"] for c in sorted(cats, key=lambda c: c["id"])]


def load(ann_file: Path) -> dict[str, Any]:
    data, _ = load_coco_json(ann_file)
    return data
