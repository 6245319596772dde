"""Pascal VOC datasets: XML annotation files matched to their images.

Layouts recognised: ``Annotations/*.xml`` with ``JPEGImages/`` (also one ``VOC20xx/`` folder down), or XML files
anywhere under the folder next to (or in) an image folder. An XML names its image in ``<filename>``; an image of that
name is looked up under the folder, then one with the XML's stem and any image extension. ``ImageSets/Main/train.txt``
and ``val.txt`` give the split when both are present; otherwise folders named train/val do, else the set is split.

Coordinates are read as pixel coordinates, ``x = xmin``, ``w = xmax - xmin`` (as CVAT, LabelImg and Roboflow write
them). Objects marked ``<difficult>1</difficult>`` become ``iscrowd`` boxes: ignored in training and evaluation, as
MMDetection's VOC loader ignores them. Classes come from ``classes.txt`` (or ``labels.txt``) beside the annotations
when there is one (an object of another class is an error), else from the objects' names, sorted.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from fltool.data.formats.common import Box, ImageRecord, Problems, image_sizes, list_images, relative, split_of_path

LOOKED_FOR = "Pascal VOC: .xml files (<annotation>), e.g. Annotations/ with JPEGImages/"
CLASS_FILES = ("classes.txt", "labels.txt", "class_names.txt")
MAX_XML = 1_000_000


@dataclass
class VocLayout:
    root: Path
    xml_files: list[Path]
    class_file: Optional[Path]
    image_sets: Optional[tuple[Path, Path]]
    description: str
    sources: list[Path] = field(default_factory=list)  # files whose content keys the conversion cache


def _is_voc_xml(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b"<annotation" in head


def find(path: Path) -> Optional[VocLayout]:
    if not path.is_dir():
        return None
    root = path
    if not (root / "Annotations").is_dir():
        devkit = [d for d in sorted(root.iterdir()) if d.is_dir() and (d / "Annotations").is_dir()]
        if len(devkit) == 1:
            root = devkit[0]
    if (root / "Annotations").is_dir():
        xml_files = sorted((root / "Annotations").rglob("*.xml"))
        where = "Annotations/" + (" + JPEGImages/" if (root / "JPEGImages").is_dir() else "")
    else:
        xml_files = []
        for p in sorted(root.rglob("*.xml")):
            if not any(part.startswith(".") for part in p.relative_to(root).parts):
                xml_files.append(p)
            if len(xml_files) > MAX_XML:
                break
        where = "XML files under the folder"
    xml_files = [p for p in xml_files if _is_voc_xml(p)] if xml_files and _is_voc_xml(xml_files[0]) else []
    if not xml_files:
        return None
    sets_dir = root / "ImageSets" / "Main"
    image_sets = (sets_dir / "train.txt", sets_dir / "val.txt")
    image_sets = image_sets if all(p.is_file() for p in image_sets) else None
    if image_sets:
        where += ", split by ImageSets/Main/train.txt + val.txt"
    class_file = next((d / n for d in (root, root / "Annotations", xml_files[0].parent) for n in CLASS_FILES
                       if (d / n).is_file()), None)
    sources = xml_files + list(image_sets or ()) + ([class_file] if class_file else [])
    return VocLayout(root, xml_files, class_file, image_sets, where, sources)


def _image_index(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    by_name: dict[str, list[Path]] = defaultdict(list)
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for img in list_images(root):
        by_name[img.name].append(img)
        by_stem[img.stem].append(img)
    return by_name, by_stem


def _closest(xml: Path, candidates: list[Path], root: Path) -> list[Path]:
    """The candidates whose folders share the most names with the XML's folders (``.../train/x.xml`` prefers
    ``.../train/x.jpg``)."""
    xml_parts = set(xml.relative_to(root).parts[:-1])
    score = {c: len(xml_parts & set(c.relative_to(root).parts[:-1])) for c in candidates}
    best = max(score.values())
    return [c for c in candidates if score[c] == best]


def _number(node: Optional[ET.Element], tag: str) -> Optional[float]:
    child = node.find(tag) if node is not None else None
    try:
        value = float((child.text or "").strip()) if child is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


@dataclass
class _Parsed:
    filename: Optional[str]
    size: Optional[tuple[int, int]]
    boxes: list[Box]


def _parse(xml: Path, root: Path, classes: Optional[set], problems: Problems) -> Optional[_Parsed]:
    rel = relative(xml, root)
    try:
        tree = ET.parse(xml).getroot()
    except (ET.ParseError, OSError, ValueError, LookupError) as exc:  # LookupError: <?xml encoding="unknown"?>
        problems.add("unreadable_annotation_file", f"{rel}: {' '.join(str(exc).split())[:80]}")
        return None
    if tree.tag != "annotation":
        problems.add("unreadable_annotation_file", f"{rel}: root element <{tree.tag}>, not <annotation>")
        return None
    name_node = tree.find("filename")
    filename = (name_node.text or "").strip() if name_node is not None else ""
    size_node = tree.find("size")
    w, h = _number(size_node, "width"), _number(size_node, "height")
    size = (int(w), int(h)) if w and h and w > 0 and h > 0 else None
    boxes = []
    for i, obj in enumerate(tree.findall("object")):
        name_el = obj.find("name")
        name = (name_el.text or "").strip() if name_el is not None else ""
        bnd = obj.find("bndbox")
        coords = [_number(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        if not name or None in coords:
            problems.add("malformed_object", f"{rel}: object {i + 1} needs <name> and <bndbox> with numeric "
                                             "xmin/ymin/xmax/ymax")
            continue
        if classes is not None and name not in classes:
            problems.add("class_not_in_class_list", f"{rel}: object {name!r} (class list: "
                                                    f"{', '.join(sorted(classes))})")
            continue
        difficult = _number(obj, "difficult") or 0.0
        if difficult:
            problems.add("difficult_object", f"{rel}: object {i + 1} ({name})")
        x1, y1, x2, y2 = coords  # type: ignore[misc]
        boxes.append(Box(name, x1, y1, x2 - x1, y2 - y1, crowd=bool(difficult)))
    return _Parsed(filename or None, size, boxes)


def read_class_file(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    return [n for n in names if n]


def read(layout: VocLayout, problems: Problems, classes: Optional[Sequence[str]] = None
         ) -> tuple[list[ImageRecord], list[str], str]:
    """Records (with their split where the layout gives one), class names and where the split came from.
    ``classes``: the class list when the data has no classes.txt (e.g. the classes of the model to evaluate)."""
    root = layout.root
    given = read_class_file(layout.class_file) if layout.class_file else (list(classes) if classes else None)
    by_name, by_stem = _image_index(root)
    split_of_stem: dict[str, str] = {}
    if layout.image_sets:
        for split, path in zip(("train", "val"), layout.image_sets):
            for line in path.read_text(errors="replace").split():
                split_of_stem.setdefault(line.strip(), split)
    matched: dict[Path, tuple[Path, _Parsed]] = {}
    for xml in layout.xml_files:
        if split_of_stem and xml.stem not in split_of_stem:
            continue  # not in train.txt/val.txt: not used
        parsed = _parse(xml, root, set(given) if given else None, problems)
        if parsed is None:
            continue
        candidates = by_name.get(Path(parsed.filename).name, []) if parsed.filename else []
        if not candidates:
            candidates = by_stem.get(xml.stem, []) or (by_stem.get(Path(parsed.filename).stem, [])
                                                       if parsed.filename else [])
        if len(candidates) > 1:
            candidates = _closest(xml, candidates, root)
        if not candidates:
            wanted = parsed.filename or f"{xml.stem}.*"
            problems.add("annotation_without_image", f"{relative(xml, root)} (no image named {wanted} under "
                                                     f"{root.name}/)")
            continue
        if len(candidates) > 1:
            problems.add("ambiguous_image", f"{relative(xml, root)}: "
                                            + ", ".join(relative(c, root) for c in candidates[:3]))
            continue
        matched[candidates[0]] = (xml, parsed)
    if not split_of_stem:
        # Images in the folders that hold annotated images, without an XML of their own.
        folders = {img.parent for img in matched}
        for img in list_images(root):
            if img.parent in folders and img not in matched:
                problems.add("image_without_annotation_file", f"{relative(img, root)} (no .xml names it)")
    paths = sorted(matched)
    need_size = [p for p in paths if matched[p][1].size is None]
    header = dict(zip(need_size, image_sizes(need_size)))
    records = []
    for img in paths:
        xml, parsed = matched[img]
        size = parsed.size or header.get(img)
        if size is None:
            problems.add("unreadable_image", f"{relative(img, root)}: cannot read its size (and "
                                             f"{relative(xml, root)} gives none)")
            continue
        split = split_of_stem.get(xml.stem) if split_of_stem else \
            (split_of_path(relative(xml, root)) or split_of_path(relative(img, root)))
        records.append(ImageRecord(img, size[0], size[1], parsed.boxes, split))
    classes = given or sorted({b.name for r in records for b in r.boxes})
    source = "ImageSets/Main/train.txt + val.txt" if split_of_stem else "train/val folders"
    return records, classes, source
