"""YOLO datasets: ``images/`` + ``labels/`` with one ``.txt`` per image, ``class x_center y_center width height``
normalised to the image size (a polygon line, ``class x1 y1 x2 y2 ...``, counts as its bounding box).

Layouts recognised: a ``data.yaml`` (Ultralytics': ``path``, ``train``, ``val``, ``names``; given as ``--data`` or
found in the folder), or, without one, ``images/`` + ``labels/`` (splits from ``images/train`` + ``images/val``
subfolders, else one set) or ``train/images`` + ``val/images`` (or ``valid/``). An image's label file is its path
with the last ``images`` folder replaced by ``labels`` and the extension by ``.txt``, as Ultralytics does. Class names
come from the yaml's ``names``, else ``classes.txt`` (or ``obj.names``), one per line.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from fltool.data.formats.common import Box, ImageRecord, Problems, image_sizes, list_images, relative
from fltool.errors import DataError

LOOKED_FOR = "YOLO: images/ + labels/ (.txt: class x_center y_center width height), or data.yaml"
NAME_FILES = ("classes.txt", "obj.names")


@dataclass
class YoloLayout:
    root: Path
    splits: dict[str, list[Path]]  # "train"/"val" -> image files, or "all" -> one set
    names: Optional[list[str]]
    names_source: str
    description: str
    sources: list[Path] = field(default_factory=list)  # the yaml / class file (labels are added when read)


def label_path(image: Path) -> Path:
    """``.../images/a/b.jpg`` -> ``.../labels/a/b.txt`` (the last ``images`` folder; Ultralytics' rule)."""
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    text = sb.join(text.rsplit(sa, 1)) if sa in text else text
    return Path(text).with_suffix(".txt")


_NAMES_HINT = "list them, e.g. names: [cat, dog] or names: {0: cat, 1: dog}"


def _class_id(key: Any) -> Optional[int]:
    """A 'names' key as a class id: 0, 1.0 or '1' (as YAML may quote it); None for anything else."""
    if isinstance(key, bool) or (isinstance(key, float) and not key.is_integer()):
        return None
    try:
        return int(key)
    except (TypeError, ValueError, OverflowError):
        return None


def _class_name(value: Any, where: Path) -> str:
    """A class name as text (YAML may read one as a number, a bool or a date); an empty one or a list/mapping
    (a nesting mistake) is a DataError."""
    if value is None or isinstance(value, (list, tuple, dict, set)):
        raise DataError(f"{where}: a class name in 'names' is {'empty' if value is None else 'a list or mapping'} "
                        f"({value!r:.60})", _NAMES_HINT)
    return str(value)


def _names_from_yaml(value: Any, where: Path) -> list[str]:
    if isinstance(value, dict):
        by_id: dict[int, Any] = {}
        for key, name in value.items():
            cls = _class_id(key)
            if cls is None or cls in by_id:
                raise DataError(f"{where}: 'names' keys must be class ids 0..K-1, each once, got {key!r:.40}",
                                _NAMES_HINT)
            by_id[cls] = name
        ids = sorted(by_id)
        if ids != list(range(len(ids))):
            raise DataError(f"{where}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids[:10]}")
        return [_class_name(by_id[k], where) for k in ids]
    if isinstance(value, (list, tuple)) and value:
        return [_class_name(v, where) for v in value]
    raise DataError(f"{where} has no class names ('names:' missing or empty)", _NAMES_HINT)


def _user_path(text: str, where: Path) -> Path:
    """A path written in ``where`` (data.yaml, an image list), ``~`` expanded; a DataError naming ``where`` if no
    file could ever have that name (a NUL byte, a name too long, the home of an unknown user)."""
    problem = "holds a NUL byte" if "\0" in text else ""
    try:
        path = Path(text).expanduser()
        path.exists()  # raises for a name the file system cannot look up (e.g. too long)
    except RuntimeError:  # '~name' of a user this machine does not know
        problem = "names the home folder of an unknown user"
    except OSError as exc:
        problem = f"cannot be looked up ({exc.strerror or exc})"
    if problem:
        raise DataError(f"{where}: the path {text[:80]!r} {problem}", f"fix the path in {where.name}")
    return path


def _resolve_entry(base: Path, entry: str, where: Path) -> Path:
    path = _user_path(entry, where)
    if path.is_absolute():
        return path
    found = _user_path(str(base / path), where)
    if not found.exists() and entry.startswith("../"):
        found = base / entry[3:]  # Roboflow's exports: '../train/images' meant relative to the dataset folder
    return found


def _images_of(entry: Path) -> list[Path]:
    if entry.is_dir():
        return list_images(entry)
    if entry.is_file() and entry.suffix == ".txt":  # a list of image paths, relative to the list's folder
        out = []
        for line in entry.read_text(errors="replace").splitlines():
            line = line.strip()
            if line:
                p = Path(line)
                out.append(_user_path(str(p if p.is_absolute() else entry.parent / p), entry).resolve())
        return out
    raise DataError(f"{entry} (a train/val entry of data.yaml) is neither a folder nor a .txt list of images",
                    "fix the path in data.yaml")


def _from_yaml(yaml_file: Path) -> YoloLayout:
    import yaml

    try:
        data = yaml.safe_load(yaml_file.read_text(errors="replace"))
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. a date like 2024-13-45, an int of 5000 digits
        raise DataError(f"{yaml_file} is not valid YAML ({' '.join(str(exc).split())[:100]})",
                        "fix the file, or give the dataset folder without it") from None
    except RecursionError:
        raise DataError(f"{yaml_file} is nested too deeply to be a YOLO dataset file",
                        "a data.yaml names train: and val: image folders and the class names") from None
    if not isinstance(data, dict) or "train" not in data:
        raise DataError(f"{yaml_file} is not a YOLO dataset file (it has no 'train:' entry)",
                        "a data.yaml names train: and val: image folders and the class names")
    if not data["train"]:
        raise DataError(f"{yaml_file}: 'train:' names no training images (it is {json.dumps(data['train'])})",
                        "give the folder (or .txt list) of the training images, e.g. train: images/train")
    base = yaml_file.parent
    if data.get("path"):
        given = _user_path(str(data["path"]), yaml_file)
        base = given if given.is_absolute() else next(
            (c for c in (yaml_file.parent / given, Path.cwd() / given) if _user_path(str(c), yaml_file).is_dir()),
            yaml_file.parent)
    splits = {}
    for split in ("train", "val"):
        entries = data.get(split)
        if not entries:
            continue
        entries = entries if isinstance(entries, list) else [entries]
        images: list[Path] = []
        for entry in entries:
            images += _images_of(_resolve_entry(base, str(entry), yaml_file))
        splits[split] = images
    if "val" not in splits:
        splits = {"all": splits["train"]}
    names = _names_from_yaml(data.get("names"), yaml_file)
    desc = f"{yaml_file.name} ({'train + val' if 'val' in splits else 'train only'})"
    return YoloLayout(base, splits, names, yaml_file.name, desc, [yaml_file])


def _dataset_yaml(folder: Path) -> Optional[Path]:
    if (folder / "data.yaml").is_file():
        return folder / "data.yaml"
    candidates = [p for p in sorted(folder.glob("*.y*ml")) if p.suffix in (".yaml", ".yml")]
    for p in candidates:
        text = p.read_text(errors="replace")
        if "names" in text and "train" in text:
            return p
    return None


def find(path: Path) -> Optional[YoloLayout]:
    if path.is_file():
        return _from_yaml(path) if path.suffix in (".yaml", ".yml") else None
    yaml_file = _dataset_yaml(path)
    if yaml_file is not None:
        return _from_yaml(yaml_file)
    splits: dict[str, list[Path]] = {}
    desc = ""
    if (path / "images").is_dir() and (path / "labels").is_dir():
        sub = {d.name.lower(): d for d in (path / "images").iterdir() if d.is_dir()}
        val = sub.get("val") or sub.get("valid") or sub.get("validation")
        if "train" in sub and val is not None:
            splits = {"train": list_images(sub["train"]), "val": list_images(val)}
            desc = f"images/{sub['train'].name} + images/{val.name} with labels/"
        else:
            splits = {"all": list_images(path / "images")}
            desc = "images/ + labels/"
    else:
        val_dir = next((path / v for v in ("val", "valid", "validation") if (path / v / "images").is_dir()), None)
        if (path / "train" / "images").is_dir() and val_dir is not None:
            splits = {"train": list_images(path / "train" / "images"), "val": list_images(val_dir / "images")}
            desc = f"train/images + {val_dir.name}/images with labels/"
    if not splits:
        return None
    name_file = next((d / n for d in (path, path / "labels") for n in NAME_FILES if (d / n).is_file()), None)
    names = None
    if name_file is not None:
        names = [line.strip() for line in name_file.read_text(errors="replace").splitlines() if line.strip()]
    return YoloLayout(path, splits, names, name_file.name if name_file else "", desc,
                      [name_file] if name_file else [])


def _box(values: list[float]) -> Optional[tuple[float, float, float, float]]:
    """Normalised (x_center, y_center, w, h) of a box line (4 values) or a polygon (an even number >= 6)."""
    if len(values) == 4:
        return values[0], values[1], values[2], values[3]
    if len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    return None


def _parse_label(path: Path, root: Path, names: list[str], problems: Problems
                 ) -> Optional[list[tuple[str, tuple[float, float, float, float]]]]:
    rel = relative(path, root)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.add("unreadable_annotation_file", f"{rel}: {exc}")
        return None
    out = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls_value = float(parts[0])
            values = [float(v) for v in parts[1:]]
        except ValueError:
            cls_value, values = float("nan"), []
        box = _box(values) if all(math.isfinite(v) for v in values) else None
        if box is None or not cls_value.is_integer():
            problems.add("malformed_label_line", f"{rel} line {number}: {line.strip()[:60]!r} (want: class "
                                                 "x_center y_center width height, normalised)")
            continue
        cls = int(cls_value)
        if not 0 <= cls < len(names):
            problems.add("class_id_beyond_names", f"{rel} line {number}: class {cls}, but {len(names)} names "
                                                  f"(ids 0-{len(names) - 1})")
            continue
        out.append((names[cls], box))
    return out


def read(layout: YoloLayout, problems: Problems, classes: Optional[Sequence[str]] = None
         ) -> tuple[list[ImageRecord], list[str], str]:
    """Records (with their split where the layout gives one), class names and where the split came from."""
    root = layout.root  # (``classes`` is for VOC; YOLO's class ids need the data's own names)
    if not layout.names:
        raise DataError(f"YOLO dataset {root} has no class names (looked for data.yaml 'names:', "
                        f"{' and '.join(NAME_FILES)} in {root.name}/ and labels/)",
                        f"write one class name per line, in class-id order, into {root / 'classes.txt'}")
    parsed = []
    for split, images in layout.splits.items():
        for image in images:
            labels = label_path(image)
            if not labels.is_file():
                problems.add("image_without_annotation_file", f"{relative(image, root)} (no "
                                                              f"{relative(labels, root)})")
                continue
            boxes = _parse_label(labels, root, layout.names, problems)
            if boxes is not None:
                parsed.append((image, boxes, None if split == "all" else split))
    sizes = image_sizes([p for p, _, _ in parsed])
    records = []
    for (image, boxes, split), size in zip(parsed, sizes):
        if size is None:
            problems.add("unreadable_image", f"{relative(image, root)}: not an image PIL can open")
            continue
        w, h = size
        records.append(ImageRecord(image, w, h, [Box(name, (xc - bw / 2) * w, (yc - bh / 2) * h, bw * w, bh * h)
                                                 for name, (xc, yc, bw, bh) in boxes], split))
    return records, list(layout.names), layout.description


def label_files(layout: YoloLayout) -> list[Path]:
    """The label files of the layout's images that exist (their content keys the conversion cache)."""
    return [lp for images in layout.splits.values() for lp in map(label_path, images) if lp.is_file()]
