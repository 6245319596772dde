"""`fltool data check`: every kind of broken COCO record is found, counted and named; the CLI's exit codes."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fltool.data.check import check_coco, check_config_datasets, drop_bad_records
from fltool.errors import DataError

# The BCCD copy beside the project (../shared/data/bccd), read in place; FLTOOL_BCCD_ROOT points elsewhere.
BCCD = Path(os.environ.get("FLTOOL_BCCD_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"))
W, H = 64, 48


def coco_dict(n_images: int = 3) -> dict:
    """``n_images`` 64x48 images with two boxes each (ids 1..), two categories."""
    images = [{"id": i + 1, "file_name": f"img{i}.png", "width": W, "height": H} for i in range(n_images)]
    annotations = []
    for img in images:
        for k, bbox in enumerate(([4.0, 4.0, 10.0, 8.0], [20.0, 10.0, 40.0, 36.0])):
            annotations.append({"id": len(annotations) + 1, "image_id": img["id"], "category_id": k + 1,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "dot"}, {"id": 2, "name": "blob"}]}


def write_dataset(root: Path, data: dict, image_format: str = "PNG") -> Path:
    """Write ``data`` to root/ann.json and a real image for every image record into root/images/."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for img in data["images"]:
        pixels = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / img["file_name"], format=image_format)
    ann = root / "ann.json"
    ann.write_text(json.dumps(data))
    return ann


def rewrite(ann: Path, data: dict) -> None:
    ann.write_text(json.dumps(data))


@pytest.fixture
def clean(tmp_path):
    data = coco_dict()
    return write_dataset(tmp_path, data), data


def only_issue(report, kind):
    issue = report.issue(kind)
    assert issue is not None, [i.kind for i in report.issues]
    return issue


def test_clean_dataset_has_no_issues_and_the_right_figures(clean):
    ann, _ = clean
    report = check_coco(ann)
    assert report.ok and report.issues == []
    assert (report.num_images, report.num_annotations, report.num_categories) == (3, 6, 2)
    assert report.img_dir == ann.parent / "images"
    assert report.class_counts == {"dot": 3, "blob": 3}
    assert report.size_histogram == {"small": 3, "medium": 3, "large": 0}  # 10x8=80 and 40x36=1440
    assert report.image_sizes == {"64x48": 3}


def test_missing_image_is_an_error_naming_the_file(clean):
    ann, _ = clean
    (ann.parent / "images" / "img1.png").unlink()
    report = check_coco(ann)
    issue = only_issue(report, "missing_image")
    assert (issue.severity, issue.count, issue.examples) == ("error", 1, ["img1.png"])
    assert report.bad_image_ids == {2} and not report.ok


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_image_is_found_by_a_full_decode_only(tmp_path, fmt, suffix):
    data = coco_dict(2)
    for img in data["images"]:
        img["file_name"] = img["file_name"].replace(".png", suffix)
    ann = write_dataset(tmp_path, data, image_format=fmt)
    path = tmp_path / "images" / data["images"][1]["file_name"]
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])

    issue = only_issue(check_coco(ann), "unreadable_image")
    assert issue.count == 1 and issue.examples[0].startswith(f"img1{suffix}: ")
    assert check_coco(ann, decode=False).ok  # headers alone look fine: why decoding is the default


def test_garbage_image_file_is_unreadable_even_without_decoding(clean):
    ann, _ = clean
    (ann.parent / "images" / "img0.png").write_bytes(b"not an image at all")
    issue = only_issue(check_coco(ann, decode=False), "unreadable_image")
    assert issue.count == 1 and "UnidentifiedImageError" in issue.examples[0]


def test_size_mismatch_names_both_sizes(clean):
    ann, data = clean
    data["images"][2]["width"] = 80
    rewrite(ann, data)
    issue = only_issue(check_coco(ann), "image_size_mismatch")
    assert issue.count == 1 and issue.examples == ["img2.png: file is 64x48, JSON says 80x48"]


def test_zero_and_negative_size_boxes_are_counted(clean):
    ann, data = clean
    data["annotations"][0]["bbox"][2] = 0.0
    data["annotations"][3]["bbox"][3] = -2.0
    rewrite(ann, data)
    report = check_coco(ann)
    issue = only_issue(report, "zero_size_box")
    assert issue.count == 2 and issue.examples[0] == "annotation 1 on img0.png: bbox [4, 4, 0, 8]"
    assert report.bad_annotation_ids == {1, 4}


def test_box_partly_outside_is_an_error_to_clip_and_fully_outside_one_to_drop(clean):
    ann, data = clean
    data["annotations"][1]["bbox"] = [50.0, 10.0, 20.0, 10.0]  # x + w = 70 > 64
    data["annotations"][2]["bbox"] = [70.0, 10.0, 5.0, 5.0]  # starts right of the image
    rewrite(ann, data)
    report = check_coco(ann)
    partly = only_issue(report, "box_partly_outside_image")
    assert partly.count == 1 and partly.examples == ["annotation 2: bbox [50, 10, 20, 10] in a 64x48 image"]
    assert only_issue(report, "box_outside_image").count == 1
    assert report.clip_annotation_ids == {2} and report.bad_annotation_ids == {3}


def test_unknown_category_and_unknown_image_id_are_reported(clean):
    ann, data = clean
    data["annotations"][0]["category_id"] = 9
    data["annotations"][1]["image_id"] = 77
    rewrite(ann, data)
    report = check_coco(ann)
    assert only_issue(report, "unknown_category").examples == ["annotation 1: category_id 9"]
    assert only_issue(report, "unknown_image_id").examples == ["annotation 2: image_id 77"]
    assert report.class_counts == {"dot": 2, "blob": 2}  # bad annotations are not counted


def test_duplicate_image_ids_flag_every_image_sharing_the_id_and_duplicate_annotation_ids_the_later_one(clean):
    ann, data = clean
    data["images"][2]["id"] = 1
    data["annotations"][5]["id"] = 2
    rewrite(ann, data)
    report = check_coco(ann)
    dup_images = only_issue(report, "duplicate_image_id")
    assert dup_images.count == 2 and dup_images.examples == ["id 1: img0.png, img2.png"]
    dup_anns = only_issue(report, "duplicate_annotation_id")
    assert dup_anns.count == 1 and dup_anns.examples[0].startswith("annotation 2 (annotations[5]")
    # Annotation 5 pointed to image 3, whose id is now 1: an unknown image.
    assert only_issue(report, "unknown_image_id").examples == ["annotation 5: image_id 3"]
    assert report.bad_image_ids == {1} and report.bad_annotation_ids == {2, 5}


def test_records_missing_required_fields_are_named(clean):
    ann, data = clean
    del data["annotations"][4]["bbox"]
    del data["images"][1]["width"]
    rewrite(ann, data)
    report = check_coco(ann)
    assert only_issue(report, "annotation_missing_field").examples == ["annotation 5: no 'bbox'"]
    assert only_issue(report, "image_missing_field").examples == ["img1.png: no 'width'"]
    assert report.summary() == ("ann.json: 2 errors found (1 image record missing a field, "
                                "1 annotation missing a field)")


def test_an_image_file_listed_twice_is_a_warning_naming_it(clean):
    ann, data = clean
    data["images"][2]["file_name"] = data["images"][0]["file_name"]
    rewrite(ann, data)
    report = check_coco(ann)
    issue = only_issue(report, "duplicate_file_name")
    assert (issue.severity, issue.count, issue.examples) == ("warning", 1, ["img0.png (2 records)"])
    assert report.ok  # two records of one file is legal COCO; it is only suspicious


@pytest.mark.parametrize("field,value", [("id", "7"), ("width", 0), ("height", 12.5), ("file_name", 3)])
def test_an_image_record_with_a_malformed_field_is_an_error_and_dropped_with_its_boxes(clean, tmp_path, field, value):
    ann, data = clean
    data["images"][1][field] = value
    rewrite(ann, data)
    report = check_coco(ann)
    issue = only_issue(report, "image_malformed_field")
    assert issue.severity == "error" and issue.count == 1 and repr(value) in issue.examples[0] or field == "file_name"
    assert not report.ok
    out = tmp_path / "clean.json"
    n_img, _ = drop_bad_records(ann, report, out)
    kept = json.loads(out.read_text())
    assert n_img == 1 and [img["id"] for img in kept["images"]] == [1, 3]


@pytest.mark.parametrize("field,value", [("bbox", [1, 2, 3]), ("bbox", [1, 2, "3", 4]), ("area", "big"),
                                         ("category_id", 1.5)])
def test_an_annotation_with_a_malformed_field_is_an_error_naming_it(clean, field, value):
    ann, data = clean
    data["annotations"][3][field] = value
    rewrite(ann, data)
    report = check_coco(ann)
    issue = only_issue(report, "annotation_malformed_field")
    assert issue.severity == "error" and issue.count == 1 and issue.examples[0].startswith("annotation 4: ")
    assert report.bad_annotation_ids == {4}


@pytest.mark.parametrize("record", [{"id": 3}, {"name": "x"}, {"id": "3", "name": "x"}, "cat"])
def test_a_category_without_an_integer_id_and_a_name_is_a_bad_category(clean, record):
    ann, data = clean
    data["categories"].append(record)
    rewrite(ann, data)
    report = check_coco(ann)
    issue = only_issue(report, "bad_category")
    assert issue.severity == "error" and issue.examples[0].startswith("categories[2]: needs an integer 'id'")
    assert report.num_categories == 2  # the two good ones still count


def test_two_categories_with_one_name_are_a_warning(clean):
    ann, data = clean
    data["categories"][1]["name"] = "dot"
    rewrite(ann, data)
    report = check_coco(ann)
    issue = only_issue(report, "duplicate_category_name")
    assert (issue.severity, issue.examples) == ("warning", ["'dot' (2 categories)"])


def test_an_exif_rotated_jpeg_is_a_warning_with_the_size_loaders_would_see(tmp_path):
    data = coco_dict(n_images=2)
    data["images"] = [dict(img, file_name=img["file_name"].replace(".png", ".jpg")) for img in data["images"]]
    ann = write_dataset(tmp_path, data, image_format="JPEG")
    path = tmp_path / "images" / data["images"][0]["file_name"]
    with Image.open(path) as img:
        exif = img.getexif()
        exif[0x0112] = 6  # Orientation: rotate 90 CW on display
        img.save(path, exif=exif.tobytes())
    report = check_coco(ann)
    issue = only_issue(report, "exif_rotation")
    assert issue.severity == "warning" and issue.count == 1
    assert issue.examples == [f"img0.jpg: orientation 6 (loaders that apply it see {H}x{W})"]
    assert report.ok


def test_image_without_boxes_is_only_a_warning(clean):
    ann, data = clean
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 3]
    rewrite(ann, data)
    report = check_coco(ann)
    issue = only_issue(report, "image_without_boxes")
    assert (issue.severity, issue.count, issue.examples) == ("warning", 1, ["img2.png"])
    assert report.ok


@pytest.mark.parametrize("text,expected", [
    ("{not json", "is not valid JSON (line 1, column 2"),
    ("[1, 2]", "is not a COCO annotation file (its JSON is a list"),
    ('{"images": []}', "('annotations', 'categories' are missing or not a list)"),
])
def test_malformed_json_is_one_data_error_naming_the_file(tmp_path, text, expected):
    ann = tmp_path / "bad.json"
    ann.write_text(text)
    with pytest.raises(DataError) as info:
        check_coco(ann)
    assert str(ann) in info.value.message and expected in info.value.message


def test_to_dict_is_json_serialisable(clean):
    ann, data = clean
    data["annotations"][0]["bbox"][2] = 0.0
    rewrite(ann, data)
    out = json.loads(json.dumps(check_coco(ann).to_dict()))
    assert out["ok"] is False and out["bad_annotation_ids"] == [1]
    assert out["issues"][0]["kind"] == "zero_size_box" and out["categories"] == {"1": "dot", "2": "blob"}


# ---------------------------------------------------------------------------------------------- cleaning

def test_drop_bad_records_removes_exactly_the_bad_records_and_clips_partly_outside_boxes(clean, tmp_path):
    ann, data = clean
    original = copy.deepcopy(data)
    (ann.parent / "images" / "img0.png").unlink()  # image 1 and its annotations 1, 2 go
    data["annotations"][2]["bbox"][3] = 0.0  # annotation 3 goes
    data["annotations"][3]["bbox"] = [30.0, -4.0, 40.0, 20.0]  # annotation 4: clipped to [30, 0, 34, 16]
    rewrite(ann, data)
    report = check_coco(ann)
    out = tmp_path / "clean" / "ann.json"
    assert drop_bad_records(ann, report, out) == (1, 3)

    cleaned = json.loads(out.read_text())
    assert [img["id"] for img in cleaned["images"]] == [2, 3]
    assert [a["id"] for a in cleaned["annotations"]] == [4, 5, 6]
    assert cleaned["annotations"][0]["bbox"] == [30.0, 0.0, 34.0, 16.0]
    assert cleaned["annotations"][0]["area"] == 34.0 * 16.0
    assert cleaned["annotations"][1:] == original["annotations"][4:]
    assert cleaned["categories"] == original["categories"]
    assert check_coco(out, img_dir=ann.parent / "images").ok


def test_drop_bad_records_refuses_a_changed_file_and_overwriting_the_input(clean, tmp_path):
    ann, data = clean
    report = check_coco(ann)
    with pytest.raises(DataError, match="will not overwrite"):
        drop_bad_records(ann, report, ann)
    data["annotations"].pop()
    rewrite(ann, data)
    with pytest.raises(DataError, match="changed since it was checked"):
        drop_bad_records(ann, report, tmp_path / "out.json")


# ---------------------------------------------------------------------------------------------- configs

def test_config_datasets_resolve_paths_like_mmdet_and_flag_classes_missing_from_the_json(clean):
    from mmengine.config import Config

    ann, _ = clean
    dataset = dict(type="CocoDataset", data_root=str(ann.parent), ann_file="ann.json", data_prefix=dict(img="images/"),
                   metainfo=dict(classes=("dot", "blob", "ghost")))
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type="RepeatDataset", times=2, dataset=dataset)),
                      val_dataloader=dict(dataset=dict(dataset, metainfo=dict(classes=("dot",)))),
                      test_dataloader=dict(dataset=dict(dataset, metainfo=dict(classes=("dot",))))))
    reports = check_config_datasets(cfg)
    assert list(reports) == ["train", "val"]  # test repeats val
    assert reports["val"].ok and reports["val"].img_dir == ann.parent / "images"
    issue = only_issue(reports["train"], "config_class_not_in_annotations")
    assert issue.count == 1 and issue.examples[0].startswith("'ghost'")


# ---------------------------------------------------------------------------------------------- the CLI

def invoke(*args):
    from fltool.cli.main import app

    return CliRunner().invoke(app, ["data", "check", *map(str, args)])


def test_cli_clean_dataset_exits_0_and_prints_the_summary(clean):
    ann, _ = clean
    result = invoke(ann)
    assert result.exit_code == 0, result.output
    assert "no issues" in result.stdout and "│ annotations " in result.stdout and result.stderr == ""


def test_cli_errors_exit_1_with_one_line_on_stderr_after_the_issue_table(clean):
    ann, data = clean
    (ann.parent / "images" / "img0.png").unlink()
    (ann.parent / "images" / "img1.png").unlink()
    data["annotations"][5]["bbox"][2] = 0.0
    rewrite(ann, data)
    result = invoke(ann)
    assert result.exit_code == 1
    assert result.stderr.startswith("fltool: error: ann.json: 3 errors found (2 missing images, 1 zero-size box); "
                                    "fix the records listed, or train without them: fltool train --data "
                                    f"{ann} --data-check drop")
    assert result.stderr.count("\n") == 1
    assert "missing_image" in result.stdout and "img0.png" in result.stdout


def test_cli_json_output_parses_and_keeps_the_exit_code(clean):
    ann, data = clean
    data["categories"].append({"id": 2, "name": "again"})
    rewrite(ann, data)
    result = invoke(ann, "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["ok"] is False and out["issues"][0]["kind"] == "duplicate_category_id"


def test_cli_malformed_json_is_one_line_and_exit_1(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text("<html>")
    result = invoke(ann)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"fltool: error: {ann} is not valid JSON") and result.stderr.count("\n") == 1


def test_cli_checks_the_datasets_of_a_config_file(clean, tmp_path):
    ann, _ = clean
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"data_root = {str(ann.parent) + '/'!r}\n"
                   "train_dataloader = dict(dataset=dict(type='CocoDataset', data_root=data_root, "
                   "ann_file='ann.json', data_prefix=dict(img='images/')))\n")
    result = invoke(cfg, "--no-decode")
    assert result.exit_code == 0, result.output
    assert "train: ann.json" in result.stdout


@pytest.mark.skipif(not (BCCD / "annotations.json").is_file(), reason="the shared BCCD copy is not here")
def test_cli_checks_a_shipped_config_by_its_name_from_any_folder(monkeypatch, tmp_path):
    """`fltool data check retinanet_r18-gn_bccd_320`: the name resolves from any folder, both splits reported."""
    monkeypatch.chdir(tmp_path)
    result = invoke("retinanet_r18-gn_bccd_320", "--no-decode")
    assert result.exit_code == 0, result.output
    assert "train: train.json" in result.stdout and "val: val.json" in result.stdout
    as_json = invoke("retinanet_r18-gn_bccd_320", "--no-decode", "--json")
    reports = json.loads(as_json.stdout)
    assert sorted(reports) == ["train", "val"]
    assert (reports["train"]["num_images"], reports["train"]["num_annotations"]) == (292, 3922)  # SOURCE.txt
    assert (reports["val"]["num_images"], reports["val"]["num_annotations"]) == (72, 964)


def test_the_printed_hint_names_a_command_that_trains_on_the_faulty_dataset(tmp_path):
    """The hint used to name a flag that does not exist (--drop-bad-data). Follow it as a user would."""
    import re
    import shlex
    import shutil

    from fltool.data.synth import SynthSpec, default_dataset

    tiny = Path(__file__).resolve().parent / "configs" / "tiny_synth.py"
    ds = default_dataset(SynthSpec(image_size=160, num_train=16, num_val=8, objects_per_image=(2, 5),
                                   size_mix=(0.5, 0.5, 0.0), noise_std=0.0))
    root = tmp_path / "data"
    shutil.copytree(ds.root, root)
    victim = json.loads((root / "train.json").read_text())["images"][0]["file_name"]
    (root / "images" / victim).unlink()
    cfg = tmp_path / "faulty.py"
    cfg.write_text(f"_base_ = [{str(tiny)!r}]\ndata_root = {str(root) + '/'!r}\n"
                   "train_dataloader = dict(dataset=dict(data_root=data_root))\n"
                   "val_dataloader = dict(dataset=dict(data_root=data_root))\n"
                   "test_dataloader = val_dataloader\n"
                   "val_evaluator = dict(ann_file=data_root + 'val.json')\ntest_evaluator = val_evaluator\n")
    checked = invoke(cfg, "--no-decode")
    assert checked.exit_code == 1
    hint = re.search(r"train without them: (fltool train \S+ --data-check drop)", checked.stderr)
    assert hint, checked.stderr
    words = shlex.split(hint.group(1))
    from fltool.cli.main import app

    trained = CliRunner().invoke(app, [*words[1:], "--max-iters", "1", "--work-dir", str(tmp_path / "wd")])
    assert trained.exit_code == 0, trained.output
    assert "dropped 1 images" in trained.stderr and "iter 1/1" in trained.stderr
    assert (tmp_path / "wd" / "iter_1.pth").is_file()


# ---------------------------------------------------------------------------------------------- BCCD

@pytest.mark.skipif(not (BCCD / "annotations.json").is_file(), reason="the shared BCCD copy is not here")
def test_bccd_annotations_have_the_published_figures_and_no_errors():
    report = check_coco(BCCD / "annotations.json")  # full decode of 364 JPEGs
    assert (report.num_images, report.num_annotations, report.num_categories) == (364, 4886, 3)
    assert report.class_counts == {"RBC": 4153, "WBC": 372, "Platelets": 361}
    assert report.size_histogram == {"small": 32, "medium": 1386, "large": 3468}
    assert report.ok and report.bad_image_ids == set()
    # SOURCE.txt: 7 same-class box pairs with IoU > 0.9 were kept.
    assert [(i.kind, i.count) for i in report.issues] == [("near_duplicate_boxes", 7)]


@pytest.mark.skipif(not (BCCD / "annotations.json").is_file(), reason="the shared BCCD copy is not here")
def test_cli_reports_bccd_figures_and_exits_0():
    result = invoke(BCCD / "annotations.json", "--no-decode")
    assert result.exit_code == 0, result.output
    for text in ("│ images           │          364 │", "│ annotations      │         4886 │",
                 "│   RBC            │         4153 │", "│   WBC            │          372 │",
                 "│   Platelets      │          361 │"):
        assert text in result.stdout
