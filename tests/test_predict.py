"""fltool predict: the same boxes as fltool eval on the same images; images, folders, globs and video frames in;
drawings, label files, CSV and COCO-results JSON out; an unreadable input named and skipped (exit 1); the run's
config and classes found from a work dir or a checkpoint (fltool.engine.workdir)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine.workdir import checkpoint_classes, resolve_run
from fltool.errors import CheckpointError

runner = CliRunner()
CLASSES = ("circle", "square", "triangle", "cross")


@pytest.fixture(scope="module")
def val_images(tiny_run):
    """(val.json dict, image paths in its order) of the tiny run's val split."""
    ann = Path(json.loads((tiny_run.work_dir / "metrics.json").read_text())["val_ann_file"])
    data = json.loads(ann.read_text())
    return data, [ann.parent / "images" / img["file_name"] for img in data["images"]]


def _sorted(rows: list) -> np.ndarray:
    arr = np.array(rows, dtype=np.float64).reshape(-1, 6)  # class, score, x, y, w, h
    return arr[np.lexsort((arr[:, 2], arr[:, 1].round(5), arr[:, 0]))]


def test_predictions_on_the_val_split_equal_the_boxes_eval_scored(tiny_run, tiny_config, val_images, tmp_path):
    data, paths = val_images
    prefix = tmp_path / "eval" / "results"
    evaluated = runner.invoke(app, ["eval", tiny_config, str(tiny_run.work_dir / "iter_4.pth"), "--work-dir",
                                    str(tmp_path / "eval"), "--cfg-options",
                                    f"+test_evaluator.outfile_prefix={prefix}"])
    assert evaluated.exit_code == 0, evaluated.output
    predicted = runner.invoke(app, ["predict", str(tiny_run.work_dir), *map(str, paths), "--out-dir",
                                    str(tmp_path / "pred"), "--score-thr", "0", "--batch-size", "4"])
    assert predicted.exit_code == 0, predicted.output
    file_of = {img["id"]: img["file_name"] for img in data["images"]}
    name_of = {c["id"]: c["name"] for c in data["categories"]}
    by_eval: dict = {}
    for r in json.loads(Path(f"{prefix}.bbox.json").read_text()):
        by_eval.setdefault(file_of[r["image_id"]], []).append(
            [CLASSES.index(name_of[r["category_id"]]), r["score"], *r["bbox"]])
    by_predict: dict = {}
    for r in json.loads((tmp_path / "pred" / "detections.json").read_text()):
        by_predict.setdefault(Path(r["file_name"]).name, []).append(
            [CLASSES.index(r["category"]), r["score"], *r["bbox"]])
        assert r["category_id"] == CLASSES.index(r["category"]) + 1
    assert set(by_eval) == set(by_predict) and len(by_eval) == len(paths)
    assert sum(map(len, by_eval.values())) > 8 * 10  # score_thr 0 in the tiny config: many boxes per image
    for name in by_eval:
        assert np.allclose(_sorted(by_eval[name]), _sorted(by_predict[name]), atol=1e-3), name


def test_folders_globs_and_video_frames_in_drawings_labels_csv_json_out(tiny_run, val_images, tmp_path):
    import cv2

    _, paths = val_images
    folder = tmp_path / "in" / "folder"
    folder.mkdir(parents=True)
    for p in paths[:2]:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not an image")
    video = tmp_path / "in" / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 160))
    for p in paths[:5]:
        writer.write(cv2.imread(str(p)))
    writer.release()
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir / "iter_4.pth"), str(folder),
                                 str(tmp_path / "in" / "*.avi"), "--stride", "2", "--out-dir", str(tmp_path / "out"),
                                 "--score-thr", "0.02"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    names = sorted(p.stem for p in (out / "labels").glob("*.txt"))
    assert names == sorted([paths[0].stem, paths[1].stem, "clip_f000000", "clip_f000002", "clip_f000004"])
    assert (out / f"{paths[0].stem}.png").is_file() and (out / "clip_f000002.jpg").is_file()
    assert Image.open(out / "clip_f000002.jpg").size == (160, 160)
    records = json.loads((out / "detections.json").read_text())
    rows = (out / "detections.csv").read_text().splitlines()
    labels = [ln for p in (out / "labels").glob("*.txt") for ln in p.read_text().splitlines()]
    assert len(records) == len(rows) - 1 == len(labels) == sum(json.loads((out / "summary.json").read_text())[
        "detections_per_class"].values())
    assert all(r["score"] >= 0.02 for r in records) and {r["frame"] for r in records if r["frame"] is not None} \
        <= {0, 2, 4}
    assert rows[0] == "file,frame,image_id,class_id,class,score,x1,y1,x2,y2"
    assert "│ images" in result.stdout and "ms per image: model" in result.stdout
    assert "measured on cpu" in result.stdout


def test_an_unreadable_input_is_named_and_skipped_and_the_exit_code_is_1(tiny_run, val_images, tmp_path):
    _, paths = val_images
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(paths[0]), str(broken),
                                 str(tmp_path / "missing.png"), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("fltool: error:")]
    assert len(errors) == 1 and "2 input(s) could not be read" in errors[0]
    assert f"skipped: {tmp_path / 'missing.png'}: no such file or folder" in result.stderr
    assert f"skipped: {broken}:" in result.stderr and "corrupt image" in result.stderr
    assert (tmp_path / "out" / "labels" / f"{paths[0].stem}.txt").is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["images"] == 1


def test_classes_filter_keeps_only_those_classes_and_an_unknown_one_is_named(tiny_run, val_images, tmp_path):
    _, paths = val_images
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir), *map(str, paths[:3]), "--classes", "circle",
                                 "--score-thr", "0", "--out-dir", str(tmp_path / "out"), "--no-draw"])
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert records and {r["category"] for r in records} == {"circle"}
    assert not list((tmp_path / "out").glob("*.png"))
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(paths[0]), "--classes", "hexagon"])
    assert result.exit_code == 1 and "--classes hexagon: not a class of this model; its classes: circle, square, " \
        "triangle, cross" in result.stderr


def test_a_work_dir_resolves_to_its_last_checkpoint_and_dumped_config(tiny_run):
    run = resolve_run(tiny_run.work_dir)
    assert run.checkpoint == (tiny_run.work_dir / "iter_4.pth").resolve()
    assert run.config.name == "tiny_synth.py" and run.config.parent == tiny_run.work_dir.resolve()
    assert run.config_source == "work dir"
    assert resolve_run(tiny_run.work_dir / "iter_2.pth").checkpoint.name == "iter_2.pth"
    assert checkpoint_classes(tiny_run.work_dir / "iter_4.pth") == CLASSES


def test_a_checkpoint_alone_takes_its_config_from_its_meta(tiny_run, tmp_path):
    alone = tmp_path / "alone.pth"
    shutil.copy(tiny_run.work_dir / "iter_4.pth", alone)
    run = resolve_run(alone)
    assert run.config_source == "checkpoint meta" and "FocalRetinaHead" in run.config.read_text()
    predicted = runner.invoke(app, ["predict", str(alone), str(next(Path(tiny_run.work_dir).glob("*.py"))),
                                    "--out-dir", str(tmp_path / "out")])
    assert "could not be read" in predicted.stderr  # a .py is no image: named; the model itself loaded


def test_what_is_not_a_run_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint or work dir"):
        resolve_run(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        resolve_run(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        resolve_run(tmp_path / "notes.txt")
