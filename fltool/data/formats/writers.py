"""Writing a COCO dataset (train.json + val.json + images/) out in Pascal VOC or YOLO layout.

Used by ``fltool data synth --format voc|yolo``; the readers (:mod:`.voc`, :mod:`.yolo`) read these layouts back to
the same boxes. VOC: ``Annotations/<stem>.xml`` (pixel coordinates, ``xmax = x + w``), ``JPEGImages/``,
``ImageSets/Main/{train,val}.txt``. YOLO: ``images/{train,val}/``, ``labels/{train,val}/<stem>.txt``
(``class x_center y_center width height``, normalised) and ``data.yaml`` with the class names.
"""
from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from fltool.errors import DataError
from fltool.fileio import write_text

SPLITS = ("train", "val")


def _load(coco_root: Path, split: str) -> dict[str, Any]:
    path = coco_root / f"{split}.json"
    if not path.is_file():
        raise DataError(f"{path} not found", "export a COCO dataset with train.json and val.json")
    return json.loads(path.read_text())


def _place(src: Path, dst: Path, move: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        shutil.move(str(src), str(dst))
    else:
        shutil.copy2(src, dst)


def _by_image(data: dict[str, Any]) -> tuple[dict[int, str], dict[int, list[dict]]]:
    names = {c["id"]: c["name"] for c in data["categories"]}
    anns: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        anns[ann["image_id"]].append(ann)
    return names, anns


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def voc_xml(img: dict[str, Any], anns: list[dict], names: dict[int, str]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = Path(img["file_name"]).name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", img["width"]), ("height", img["height"]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for ann in anns:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[ann["category_id"]]
        ET.SubElement(obj, "difficult").text = str(int(ann.get("iscrowd", 0)))
        box = ET.SubElement(obj, "bndbox")
        x, y, w, h = ann["bbox"]
        for tag, value in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = _fmt(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def export_voc(coco_root: Path, out_dir: Path, move: bool = False) -> Path:
    for split in SPLITS:
        data = _load(coco_root, split)
        names, anns = _by_image(data)
        ids = []
        for img in data["images"]:
            stem = Path(img["file_name"]).stem
            _place(coco_root / "images" / img["file_name"], out_dir / "JPEGImages" / Path(img["file_name"]).name,
                   move)
            write_text(out_dir / "Annotations" / f"{stem}.xml", voc_xml(img, anns[img["id"]], names))
            ids.append(stem)
        write_text(out_dir / "ImageSets" / "Main" / f"{split}.txt", "\n".join(ids) + "\n")
    return out_dir


def yolo_lines(img: dict[str, Any], anns: list[dict], label_of: dict[int, int]) -> str:
    w_img, h_img = img["width"], img["height"]
    lines = []
    for ann in anns:
        x, y, w, h = ann["bbox"]
        lines.append(" ".join([str(label_of[ann["category_id"]]), _fmt((x + w / 2) / w_img),
                               _fmt((y + h / 2) / h_img), _fmt(w / w_img), _fmt(h / h_img)]))
    return "".join(line + "\n" for line in lines)


def export_yolo(coco_root: Path, out_dir: Path, move: bool = False) -> Path:
    classes: list[str] = []
    for split in SPLITS:
        data = _load(coco_root, split)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        classes = classes or [c["name"] for c in cats]
        label_of = {c["id"]: classes.index(c["name"]) for c in cats}
        _, anns = _by_image(data)
        for img in data["images"]:
            name = Path(img["file_name"])
            _place(coco_root / "images" / img["file_name"], out_dir / "images" / split / name.name, move)
            write_text(out_dir / "labels" / split / f"{name.stem}.txt", yolo_lines(img, anns[img["id"]], label_of))
    names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(classes))
    write_text(out_dir / "data.yaml", f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return out_dir


def export(coco_root: Path, out_dir: Path, fmt: str, move: bool = False) -> Path:
    """Write the COCO dataset in ``coco_root`` to ``out_dir`` in ``fmt`` layout (images copied, or moved)."""
    if fmt == "voc":
        return export_voc(coco_root, out_dir, move)
    if fmt == "yolo":
        return export_yolo(coco_root, out_dir, move)
    raise DataError(f"cannot export to format '{fmt}'", "use voc or yolo")
