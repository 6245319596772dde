"""Reading datasets in COCO, Pascal VOC and YOLO layout (fltool.data.formats): detection from the folder's
contents, the boxes read back, the problems named, the deterministic split, the conversion cache."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fltool.data.check import check_coco
from fltool.data.formats import common, resolve, yolo
from fltool.data.formats.common import split_names
from fltool.errors import DataError


def boxes_by_image(dataset) -> dict:
    """{image file name: sorted [(class, rounded box)]} over both splits."""
    out = {}
    for split in (dataset.train, dataset.val):
        data = json.loads(split.ann_file.read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        for img in data["images"]:
            out[Path(img["file_name"]).name] = []
        files = {img["id"]: Path(img["file_name"]).name for img in data["images"]}
        for ann in data["annotations"]:
            out[files[ann["image_id"]]].append((names[ann["category_id"]], tuple(round(v, 3) for v in ann["bbox"])))
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture()
def copy_of(tiny_layouts, tmp_path):
    def make(fmt: str) -> Path:
        return Path(shutil.copytree(tiny_layouts[fmt], tmp_path / fmt))
    return make


def test_voc_and_yolo_read_back_the_boxes_splits_and_classes_of_the_coco_they_were_written_from(tiny_layouts,
                                                                                                 tmp_path):
    got = {fmt: resolve(path, tmp_path / "cache") for fmt, path in tiny_layouts.items()}
    assert [got[f].format for f in ("coco", "voc", "yolo")] == ["coco", "voc", "yolo"]
    reference = boxes_by_image(got["coco"])
    assert sum(map(len, reference.values())) > 20
    for fmt in ("voc", "yolo"):
        assert boxes_by_image(got[fmt]) == reference, fmt
        assert (got[fmt].train.num_images, got[fmt].val.num_images) == (8, 4)
        assert "given by the data" in got[fmt].split_from
    assert set(got["voc"].classes) == {name for boxes in reference.values() for name, _ in boxes}
    assert got["voc"].classes == tuple(sorted(got["voc"].classes))  # VOC without a class list: sorted names
    assert got["yolo"].classes == got["coco"].classes  # data.yaml keeps the order
    # Images are read where they are: the converted files name them by absolute path, nothing is copied.
    first = json.loads(got["yolo"].train.ann_file.read_text())["images"][0]["file_name"]
    assert Path(first).is_absolute() and Path(first).is_file() and str(tiny_layouts["yolo"]) in first


def test_format_forces_a_layout_and_a_folder_matching_none_names_what_was_looked_for(tiny_layouts, tmp_path):
    with pytest.raises(DataError, match=r"no Pascal VOC dataset found in .*coco: looked for Pascal VOC: \.xml"):
        resolve(tiny_layouts["coco"], tmp_path, fmt="voc")
    empty = tmp_path / "photos"
    empty.mkdir()
    for i in range(3):
        shutil.copy(next((tiny_layouts["coco"] / "images").iterdir()), empty / f"p{i}.png")
    (empty / "notes.md").write_text("hello")
    with pytest.raises(DataError) as exc:
        resolve(empty, tmp_path / "cache")
    line = exc.value.one_line()
    for looked_for in ("YOLO: images/ + labels/", "Pascal VOC: .xml", "COCO: an annotation .json"):
        assert looked_for in line
    assert "it holds 3 .png, 1 .md files" in line and "--format" in line


def test_a_folder_matching_two_layouts_asks_for_the_format(copy_of, tiny_layouts, tmp_path):
    yolo_dir = copy_of("yolo")
    shutil.copy(tiny_layouts["coco"] / "train.json", yolo_dir / "train.json")
    shutil.copy(tiny_layouts["coco"] / "val.json", yolo_dir / "val.json")
    with pytest.raises(DataError) as exc:
        resolve(yolo_dir, tmp_path / "cache")
    assert re.search(r"matches several dataset layouts: YOLO .*COCO .*; choose one with --format yolo\|coco",
                     exc.value.one_line())
    assert resolve(yolo_dir, tmp_path / "cache", fmt="yolo").format == "yolo"


def test_yolo_problems_are_named_with_file_and_line_and_their_records_left_out(copy_of, tmp_path):
    root = copy_of("yolo")
    labels = sorted((root / "labels" / "train").glob("*.txt"))
    labels[0].write_text(labels[0].read_text() + "7 0.5 0.5 0.1 0.1\n")
    labels[1].write_text("0 0.5 0.5\n")
    labels[2].unlink()
    dataset = resolve(root, tmp_path / "cache")
    issues = {i.kind: i for i in dataset.errors}
    assert set(issues) == {"class_id_beyond_names", "malformed_label_line", "image_without_annotation_file"}
    assert "line" in issues["class_id_beyond_names"].examples[0] and "class 7, but 4 names" in \
        issues["class_id_beyond_names"].examples[0]
    assert issues["image_without_annotation_file"].examples[0] == \
        f"images/train/{labels[2].stem}.png (no labels/train/{labels[2].stem}.txt)"
    assert dataset.train.num_images == 7  # the image without labels is left out, the others keep their good boxes
    assert dataset.errors_summary() == ("3 errors (1 image without an annotation file, 1 malformed label line, "
                                        "1 class id beyond the class names)")


def test_a_yolo_box_outside_its_image_is_found_by_the_check_of_the_converted_file(copy_of, tmp_path):
    root = copy_of("yolo")
    label = sorted((root / "labels" / "val").glob("*.txt"))[0]
    label.write_text("0 1.3 0.5 0.2 0.2\n0 0.95 0.5 0.2 0.2\n")
    dataset = resolve(root, tmp_path / "cache")
    report = check_coco(dataset.val.ann_file, dataset.val.img_dir, decode=False)
    assert {i.kind: i.count for i in report.errors} == {"box_outside_image": 1, "box_partly_outside_image": 1}


def test_voc_object_of_a_class_missing_from_the_class_list_is_named(copy_of, tmp_path):
    root = copy_of("voc")
    (root / "classes.txt").write_text("square\ncircle\ncross\n")
    dataset = resolve(root, tmp_path / "cache")
    assert dataset.classes == ("square", "circle", "cross")  # the list's order
    issue = dataset.errors[0]
    assert issue.kind == "class_not_in_class_list" and "object 'triangle'" in issue.examples[0]
    assert issue.examples[0].startswith("Annotations/") and "(class list: circle, cross, square)" in \
        issue.examples[0]


def test_voc_xml_files_next_to_an_image_folder_match_by_filename_then_by_stem(tiny_layouts, tmp_path):
    src = tiny_layouts["voc"]
    root = tmp_path / "labelled"
    (root / "pics").mkdir(parents=True)
    (root / "xml").mkdir()
    xmls = sorted((src / "Annotations").glob("*.xml"))[:4]
    for i, xml in enumerate(xmls):
        shutil.copy(src / "JPEGImages" / f"{xml.stem}.png", root / "pics" / f"photo{i}.png")
        text = xml.read_text().replace(f"<filename>{xml.stem}.png</filename>", f"<filename>photo{i}.png</filename>")
        if i == 1:  # a wrong <filename>: matched by the XML's stem instead
            text = text.replace(f"<filename>photo{i}.png</filename>", "<filename>elsewhere.jpg</filename>")
            (root / "xml" / f"photo{i}.xml").write_text(text)
        else:
            (root / "xml" / f"label_{i}.xml").write_text(text)
    shutil.copy(src / "JPEGImages" / f"{xmls[0].stem}.png", root / "pics" / "unlabelled.png")
    dataset = resolve(root, tmp_path / "cache")
    assert dataset.format == "voc" and dataset.layout == "XML files under the folder"
    assert [(i.kind, i.examples) for i in dataset.errors] == [
        ("image_without_annotation_file", ["pics/unlabelled.png (no .xml names it)"])]
    files = {Path(p).name for s in (dataset.train, dataset.val)
             for p in (i["file_name"] for i in json.loads(s.ann_file.read_text())["images"])}
    assert files == {"photo0.png", "photo1.png", "photo2.png", "photo3.png"}
    assert "here (seed 0, --val-fraction 0.2" in dataset.split_from


def test_the_split_is_deterministic_order_free_stable_and_written_down(tiny_layouts, tmp_path):
    names = [f"img{i:03d}.jpg" for i in range(50)]
    train, val = split_names(names, 0.2)
    assert len(val) == 10 and sorted(train + val) == names
    assert split_names(list(reversed(names)), 0.2) == (train, val)
    more_train, more_val = split_names(names + ["new.jpg"], 0.2)
    assert len(set(val) - set(more_val)) <= 1  # one more image moves at most one other
    assert split_names(names, 0.2, seed=1)[1] != val
    assert split_names(["a", "b"], 0.2) == (["a"], ["b"]) or split_names(["a", "b"], 0.2) == (["b"], ["a"])

    dataset = resolve(tiny_layouts["coco"] / "train.json", tmp_path / "cache")  # one annotation file: split here
    again = resolve(tiny_layouts["coco"] / "train.json", tmp_path / "other_cache")
    written = json.loads((dataset.cache_dir / "split.json").read_text())
    assert (len(written["train"]), len(written["val"])) == (dataset.train.num_images, dataset.val.num_images) \
        == (6, 2)
    assert written == json.loads((again.cache_dir / "split.json").read_text()) | {"source": written["source"]}
    assert json.loads(dataset.val.ann_file.read_text())["images"] == \
        json.loads(again.val.ann_file.read_text())["images"]
    with pytest.raises(DataError, match="--val-fraction must be between 0 and 1"):
        resolve(tiny_layouts["coco"] / "train.json", tmp_path / "cache", val_fraction=1.0)


def test_conversion_is_cached_by_content_and_redone_when_a_label_changes(copy_of, tmp_path, monkeypatch):
    root = copy_of("yolo")
    calls = []
    real = yolo.read
    monkeypatch.setattr(yolo, "read", lambda *a: calls.append(1) or real(*a))
    first = resolve(root, tmp_path / "cache")
    second = resolve(root, tmp_path / "cache")
    assert len(calls) == 1 and second.train.ann_file == first.train.ann_file
    label = sorted((root / "labels" / "train").glob("*.txt"))[0]
    label.write_text(label.read_text().splitlines()[0] + "\n")
    third = resolve(root, tmp_path / "cache")
    assert len(calls) == 2 and third.cache_dir != first.cache_dir


def test_yolo_data_yaml_with_roboflow_paths_and_a_names_list(tiny_layouts, tmp_path):
    root = tmp_path / "export"
    for split, folder in (("train", "train"), ("val", "valid")):
        shutil.copytree(tiny_layouts["yolo"] / "images" / split, root / folder / "images")
        shutil.copytree(tiny_layouts["yolo"] / "labels" / split, root / folder / "labels")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 4\n"
                                    "names: ['circle', 'square', 'triangle', 'cross']\n")
    dataset = resolve(root / "data.yaml", tmp_path / "cache")
    assert (dataset.format, dataset.train.num_images, dataset.val.num_images) == ("yolo", 8, 4)
    assert dataset.name == "export" and not dataset.issues


def test_yolo_without_class_names_says_where_it_looked(copy_of, tmp_path):
    root = copy_of("yolo")
    (root / "data.yaml").unlink()
    with pytest.raises(DataError) as exc:
        resolve(root, tmp_path / "cache")
    assert "no class names (looked for data.yaml 'names:', classes.txt and obj.names" in exc.value.one_line()
    (root / "classes.txt").write_text("circle\nsquare\ntriangle\ncross\n")
    dataset = resolve(root, tmp_path / "cache")
    assert dataset.classes == ("circle", "square", "triangle", "cross") and dataset.train.num_images == 8


def test_coco_instances_layout_finds_the_images_in_the_split_folders(tiny_layouts, tmp_path):
    root = tmp_path / "cocolike"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        data = json.loads((tiny_layouts["coco"] / f"{split}.json").read_text())
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
        (root / f"{split}2017").mkdir()
        for img in data["images"]:
            shutil.copy(tiny_layouts["coco"] / "images" / img["file_name"], root / f"{split}2017")
    dataset = resolve(root, tmp_path / "cache")
    assert dataset.train.img_dir == root / "train2017" and dataset.val.img_dir == root / "val2017"
    assert check_coco(dataset.val.ann_file, dataset.val.img_dir, decode=False).ok


def test_data_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(DataError) as exc:
        resolve(tmp_path / "nowhere", tmp_path / "cache")
    assert re.fullmatch(r"data not found: .*nowhere; give a dataset folder .*", exc.value.one_line())


def test_image_sizes_come_from_headers_and_unreadable_ones_are_none(tiny_layouts, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    first = next((tiny_layouts["coco"] / "images").iterdir())
    assert common.image_sizes([first, bad]) == [(160, 160), None]


@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_data_synth_writes_the_layout_that_data_reads_back(fmt, tmp_path):
    from typer.testing import CliRunner

    from fltool.cli.main import app

    out = tmp_path / fmt
    result = CliRunner().invoke(app, ["data", "synth", str(out), "--num-train", "4", "--num-val", "2", "--size", "160",
                                      "--format", fmt])
    assert result.exit_code == 0, result.output
    assert f"{fmt} layout" in result.stdout
    expected = {"voc": ["Annotations", "ImageSets", "JPEGImages"], "yolo": ["data.yaml", "images", "labels"]}[fmt]
    assert sorted(p.name for p in out.iterdir()) == expected  # images moved in, no staging folder left
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".synth-")]
    dataset = resolve(out, tmp_path / "cache")
    assert (dataset.format, dataset.train.num_images, dataset.val.num_images, dataset.issues) == (fmt, 4, 2, [])


def test_coco_train_and_valid_subfolders_with_one_json_each_and_images_beside_them(tiny_layouts, tmp_path):
    root = tmp_path / "roboflow"
    for split, folder in (("train", "train"), ("val", "valid")):
        data = json.loads((tiny_layouts["coco"] / f"{split}.json").read_text())
        (root / folder).mkdir(parents=True)
        (root / folder / "_annotations.coco.json").write_text(json.dumps(data))
        for img in data["images"]:
            shutil.copy(tiny_layouts["coco"] / "images" / img["file_name"], root / folder)
    (root / "README.dataset.txt").write_text("exported")
    dataset = resolve(root, tmp_path / "cache")
    assert (dataset.format, dataset.train.num_images, dataset.val.num_images) == ("coco", 8, 4)
    assert dataset.val.img_dir == root / "valid" and "given by the data" in dataset.split_from
