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
    assert run.config_source == "checkpoint meta" and run.config is None  # read as data: no file written anywhere
    assert run.cfg.model.bbox_head.type == "FocalRetinaHead"
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


# --- predict replaces no file it did not write (security review) ---------------------------------------------------

def _copies(folder: Path, paths: list, names: tuple) -> Path:
    """``folder`` holding copies of val images under ``names`` (``.png``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for src, name in zip(paths, names):
        shutil.copy(src, folder / f"{name}.png")
    return folder


def _tree(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder``: what a refused run must leave as it was."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _errors(result) -> list:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("fltool: error:")]


@pytest.fixture
def no_model(monkeypatch):
    """Loading the model fails the test: a refusal must come before it (and before anything is written)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr("fltool.engine.predict.load_model", refuse)


def test_an_out_dir_that_is_an_input_folder_or_holds_an_input_is_refused_before_loading(tiny_run, val_images,
                                                                                         tmp_path, no_model):
    photos = _copies(tmp_path / "photos", val_images[1], ("a", "b"))
    (tmp_path / "link").symlink_to(photos, target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    shutil.move(str(photos / "b.png"), tmp_path / "elsewhere" / "b.png")
    (photos / "b.png").symlink_to(tmp_path / "elsewhere" / "b.png")  # a link in the folder: still an input there
    before = _tree(tmp_path)
    folder, file = "predict would write over its files", "predict would write over the inputs"
    cases = [(photos, photos, f"--out-dir {photos} is the input folder {photos}: {folder}"),
             (photos, tmp_path / "link", f"--out-dir {tmp_path / 'link'} is the input folder {photos}: {folder}"),
             (photos / "a.png", tmp_path, f"--out-dir {tmp_path} holds the input file {photos / 'a.png'}: {file}"),
             (photos / "b.png", photos, f"--out-dir {photos} holds the input file {photos / 'b.png'}: {file}")]
    for given, out, message in cases:
        result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(given), "--out-dir", str(out)])
        assert result.exit_code == 1 and _errors(result) == [
            f"fltool: error: {message}; choose another --out-dir, outside the input folders"], result.stderr
    assert _tree(tmp_path) == before


def test_an_out_dir_at_a_yolo_dataset_root_is_refused_and_its_ground_truth_kept(tiny_run, val_images, tmp_path,
                                                                                 no_model):
    root = _copies(tmp_path / "yolo" / "images", val_images[1], ("a", "b")).parent
    (root / "labels").mkdir()
    for name in ("a", "b"):
        (root / "labels" / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # ground truth, same stems as outputs
    (root / "data.yaml").write_text("path: .\ntrain: images\nval: images\nnames:\n  0: circle\n")
    elsewhere = _copies(tmp_path / "new", val_images[1], ("a", "b"))
    before = _tree(root)
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(root / "images"), "--out-dir", str(root)])
    assert result.exit_code == 1 and _errors(result) == [
        f"fltool: error: --out-dir {root} holds the input file {root / 'images' / 'a.png'}: predict would write over "
        "the inputs; choose another --out-dir, outside the input folders"], result.stderr
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(elsewhere), "--out-dir", str(root)])
    assert result.exit_code == 1 and _errors(result) == [
        f"fltool: error: --out-dir {root} holds files fltool did not write; give a new or empty --out-dir"], \
        result.stderr
    assert _tree(root) == before


def test_an_existing_out_dir_is_reused_only_when_predict_wrote_it_and_only_its_files_are_replaced(tiny_run,
                                                                                                  val_images,
                                                                                                  tmp_path):
    photos = _copies(tmp_path / "photos", val_images[1], ("a", "b"))
    out = photos / "out"  # inside the input folder: it is not read back as input on the second run
    args = ["predict", str(tiny_run.work_dir), str(photos), "--out-dir", str(out)]
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "summary.json").read_text())["images"] == 2
    manifest = json.loads((out / ".fltool-predict.json").read_text())
    assert manifest["files"] == sorted(["a.png", "b.png", "labels/a.txt", "labels/b.txt", "detections.json",
                                        "detections.csv", "summary.json"])
    shutil.copy(val_images[1][2], photos / "c.png")
    (out / "labels" / "c.txt").write_text("mine\n")  # a file of the user's where predict would write c's labels
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and _errors(result) == [
        f"fltool: error: refusing to replace {out / 'labels' / 'c.txt'}: fltool predict did not write it (it is not "
        f"listed in {out / '.fltool-predict.json'}); give a new or empty --out-dir"], result.stderr
    assert (out / "labels" / "c.txt").read_text() == "mine\n"


def test_the_default_out_dir_is_new_each_run_and_earlier_outputs_are_never_inputs(tiny_run, val_images, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    _copies(tmp_path, val_images[1], ("a",))
    base = Path("work_dirs") / f"predict_{Path(tiny_run.work_dir).resolve().name}"
    outs = [base, base.with_name(f"{base.name}_2"), base.with_name(f"{base.name}_3")]
    first = None
    for out, inputs in zip(outs, [".", ".", "**/*.png"]):
        result = runner.invoke(app, ["predict", str(tiny_run.work_dir), inputs])
        assert result.exit_code == 0, result.output
        assert f"output:     {out}\n" in result.stdout
        assert json.loads((out / "summary.json").read_text())["images"] == 1  # a.png, not an earlier drawing
        first = first or _tree(base)
    assert _tree(base) == first  # the later runs left the first one's outputs as they were


def test_a_video_frame_never_takes_the_name_of_an_image(tmp_path):
    import cv2

    from fltool.engine.predict_inputs import expand, frames

    (tmp_path / "clip_f000000.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (16, 16))
    for _ in range(2):
        writer.write(np.zeros((16, 16, 3), np.uint8))
    writer.release()
    sources, failed = expand([str(tmp_path)])
    assert not failed and {s.kind: s.name for s in sources} == {"image": "clip_f000000", "video": "clip_2"}
    names = [f.name for f in frames(sources, 1, failed)]
    assert sorted(names) == ["clip_2_f000000", "clip_2_f000001", "clip_f000000"] and len(set(names)) == 3


@pytest.mark.parametrize("victim", ["a.png", "labels/a.txt", "detections.csv", "detections.json"])
def test_a_full_disk_leaves_no_truncated_file_and_is_a_clean_error(tiny_run, val_images, tmp_path, monkeypatch,
                                                                     victim):
    import errno
    import pathlib

    photos = _copies(tmp_path / "photos", val_images[1], ("a",))
    out = tmp_path / "out"
    name = Path(victim).name

    def full_disk(original):
        def write(self, data, *args, **kwargs):
            if name not in self.name:
                return original(self, data, *args, **kwargs)
            original(self, data[:len(data) // 2], *args, **kwargs)  # half written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk(pathlib.Path.write_bytes))
    monkeypatch.setattr(pathlib.Path, "write_text", full_disk(pathlib.Path.write_text))
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(photos), "--out-dir", str(out)])
    assert result.exit_code == 1 and _errors(result) == [
        f"fltool: error: cannot write {out / victim}: No space left on device; free some disk space, or give an "
        "--out-dir on another disk"], result.stderr
    assert not (out / victim).exists() and not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    listed = json.loads((out / ".fltool-predict.json").read_text())["files"]
    assert victim not in listed and all((out / rel).is_file() for rel in listed)  # what was written is listed


def test_a_read_only_out_dir_is_a_clean_error_not_an_internal_one(tiny_run, val_images, tmp_path, monkeypatch):
    import errno
    import os
    import pathlib

    photos = _copies(tmp_path / "photos", val_images[1], ("a",))
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        (out / "probe").touch()
    except PermissionError:
        pass
    else:  # root: chmod does not stop writes, so the file system's refusal is simulated where predict writes
        (out / "probe").unlink()

        def refused(original, always: bool):
            def call(self, *args, **kwargs):
                writes = always or any(m in str(args[:1] or kwargs.get("mode", "r")) for m in "wax+")
                if writes and out in self.parents and not self.exists():
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
                return original(self, *args, **kwargs)
            return call

        monkeypatch.setattr(pathlib.Path, "mkdir", refused(pathlib.Path.mkdir, True))
        monkeypatch.setattr(pathlib.Path, "open", refused(pathlib.Path.open, False))
    try:
        result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(photos), "--out-dir", str(out)])
    finally:
        out.chmod(0o755)
    assert result.exit_code == 1 and _errors(result) == [
        f"fltool: error: cannot write {out / 'labels'}: Permission denied; give an --out-dir you can write to"], \
        result.stderr
