"""What fltool train may write, and bad input it names before training: one run per work dir (a lock naming its
holder, taken over from a killed one), a finished run never overwritten, a training set with no usable box, class
names MMEngine's config syntax would rewrite, images that declare more pixels than fltool decodes, OS faults.
Each test fails on fltool before these rules (two runs shared a work dir, checkpoints were overwritten, ValueError
'need at least one array to concatenate', IndexError in evaluation, a 5.7 GB decode, 'internal error')."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine.runlock import LOCK_NAME, work_dir_lock
from fltool.engine.train import TrainOptions, train
from fltool.errors import ConfigError

TESTS = Path(__file__).resolve().parent
TINY = str(TESTS / "configs" / "tiny_synth.py")
runner = CliRunner()


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("fltool: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr and "internal error" not in result.stderr, \
        result.stderr[-2000:]
    return lines[0]


# -- one run per work dir ------------------------------------------------------------------------------------------
def test_a_second_run_into_a_work_dir_in_use_is_refused_naming_the_holder(tmp_path):
    wd = tmp_path / "wd"
    with work_dir_lock(wd):
        with pytest.raises(ConfigError) as refused:
            train(TrainOptions(config=TINY, work_dir=wd))
    assert f"work dir {wd} is in use by another run: process {os.getpid()}" in refused.value.message
    assert not list(wd.glob("*.pth")) and not (wd / "metrics.json").exists()  # the holder's files untouched


def test_a_lock_left_by_a_killed_run_is_taken_over_and_said(tmp_path):
    wd = tmp_path / "wd"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from fltool.engine.runlock import work_dir_lock\n"
        f"with work_dir_lock(Path({str(wd)!r})):\n    print('locked', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"in use by another run: process {holder.pid}"):
            train(TrainOptions(config=TINY, work_dir=wd))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (wd / LOCK_NAME).is_file()  # SIGKILL: no chance to clean up
    notes = []
    result = train(TrainOptions(config=TINY, work_dir=wd, max_iters=2),
                   progress=lambda e: notes.append(e.message) if e.kind == "note" else None)
    assert result.iterations == 2 and not (wd / LOCK_NAME).exists()
    assert any(f"took over the lock of {wd} left by process {holder.pid}" in n for n in notes), notes


def test_training_into_a_named_work_dir_that_holds_a_run_is_refused(tiny_run):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_run.work_dir.iterdir()}
    result = runner.invoke(app, ["train", TINY, "--work-dir", str(tiny_run.work_dir)])
    line = one_error_line(result)
    assert f"work dir {tiny_run.work_dir} already holds a run (iter_2.pth, iter_4.pth, last_checkpoint)" in line
    assert "--resume auto" in line
    assert {p.name: p.stat().st_mtime_ns for p in tiny_run.work_dir.iterdir()} == before


def test_the_default_work_dir_moves_on_to_a_free_one_and_keeps_the_earlier_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train(TrainOptions(config=TINY, max_iters=1))
    assert first.work_dir == (tmp_path / "work_dirs" / "tiny_synth").resolve()
    kept = (first.work_dir / "iter_1.pth").read_bytes()
    notes = []
    second = train(TrainOptions(config=TINY, max_iters=1),
                   progress=lambda e: notes.append(e.message) if e.kind == "note" else None)
    assert second.work_dir == (tmp_path / "work_dirs" / "tiny_synth_2").resolve()
    assert (first.work_dir / "iter_1.pth").read_bytes() == kept
    assert any("holds an earlier run, kept as it is: this run trains in work_dirs/tiny_synth_2" in n for n in notes)
    resumed = train(TrainOptions(config=TINY, max_iters=1, resume="auto"))  # --resume continues the first
    assert resumed.work_dir == first.work_dir and resumed.trained_iters == 0


def test_a_command_that_fails_before_training_leaves_no_empty_work_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(runner.invoke(app, ["train", "--data", str(tmp_path / "missing"), TINY]))
    assert line.startswith("fltool: error: data not found:")
    assert not list((tmp_path / "work_dirs").glob("*")) if (tmp_path / "work_dirs").exists() else True


# -- no usable box -------------------------------------------------------------------------------------------------
@pytest.fixture()
def coco_copy(tiny_layouts, tmp_path):
    return Path(shutil.copytree(tiny_layouts["coco"], tmp_path / "coco"))


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("case,expected", [
    ("no annotations", "it has no boxes (no annotations)"),
    ("other classes", "none of its"),
    ("too small", "smaller than filter_cfg.min_size = 500 px"),
])
def test_a_training_set_with_no_usable_box_is_one_data_error_before_training(coco_copy, tmp_path, case, expected):
    if case == "no annotations":
        _edit(coco_copy / "train.json", lambda d: d.update(annotations=[]))
    args = ["train", "--data", str(coco_copy), TINY, "--work-dir", str(tmp_path / "wd")]
    if case == "other classes":
        args = ["train", TINY, "--work-dir", str(tmp_path / "wd"), "--cfg-options",
                f"train_dataloader.dataset.data_root={coco_copy}/",
                "train_dataloader.dataset.metainfo.classes=[nothing]"]
    if case == "too small":
        args += ["--cfg-options", "train_dataloader.dataset.filter_cfg.min_size=500"]
    line = one_error_line(runner.invoke(app, args))
    assert "no training image is left in" in line and expected in line, line
    assert not list((tmp_path / "wd").glob("*.pth"))


def test_data_check_drop_that_leaves_no_box_says_so(coco_copy, tmp_path):
    def break_every_box(data):
        for ann in data["annotations"]:
            ann["bbox"] = [0, 0, -5, -5]  # an error the data check drops
    _edit(coco_copy / "train.json", break_every_box)
    line = one_error_line(runner.invoke(app, ["train", "--data", str(coco_copy), TINY, "--data-check", "drop",
                                              "--work-dir", str(tmp_path / "wd")]))
    assert "no training image is left" in line


# -- class names ---------------------------------------------------------------------------------------------------
def test_class_names_that_mmengine_rewrites_survive_training_and_evaluation(coco_copy, tmp_path):
    names = ["{{ fileDirname }}", "{{ $HOME:x }}", "it's {{ _base_.a }}"]

    def rename(data):
        for cat, name in zip(data["categories"], names):
            cat["name"] = name
    _edit(coco_copy / "train.json", rename)
    _edit(coco_copy / "val.json", rename)
    wd = tmp_path / "wd"
    result = runner.invoke(app, ["train", "--data", str(coco_copy), TINY, "--max-iters", "2", "--work-dir", str(wd)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((wd / "metrics.json").read_text())  # evaluation ran (it stopped on IndexError before)
    assert metrics["iteration"] == 2 and metrics["bbox"]["AP"] is not None
    import torch

    assert list(torch.load(wd / "iter_2.pth", weights_only=True)["meta"]["dataset_meta"]["classes"])[:3] == names
    from mmengine.config import Config

    for written in wd.glob("*.py"):  # fltool's and the Runner's dump: MMEngine reads the names back unchanged
        assert list(Config.fromfile(str(written)).train_dataloader.dataset.metainfo.classes)[:3] == names


@pytest.mark.parametrize("bad,why", [("", "has an empty name"), ("a\nb", "holds the control character"),
                                     ("circle", "is given twice")])
def test_a_class_name_that_cannot_work_is_named_before_training(coco_copy, tmp_path, bad, why):
    for split in ("train.json", "val.json"):
        _edit(coco_copy / split, lambda d: d["categories"][1].update(name=bad))
        if bad == "circle":
            _edit(coco_copy / split, lambda d: d["categories"][0].update(name="circle"))
    line = one_error_line(runner.invoke(app, ["train", "--data", str(coco_copy), TINY,
                                              "--work-dir", str(tmp_path / "wd")]))
    assert why in line and not (tmp_path / "wd" / "iter_1.pth").exists()


# -- images over the pixel bound -----------------------------------------------------------------------------------
def png_declaring(width: int, height: int) -> bytes:
    """A small PNG file whose header declares width x height (its data is one row: it is never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * (3 * width + 1)))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(30000, 30000), (12000, 12000)])
def test_an_image_over_the_pixel_bound_is_named_and_not_decoded(size, tmp_path, monkeypatch):
    from fltool_plugins.datasets import ImageLoadError, LoadImageChecked

    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(*size))
    with pytest.raises(ImageLoadError, match=f"image {path} (is {size[0]}x{size[1]}|declares more pixels)"):
        LoadImageChecked().transform(dict(img_path=str(path)))
    monkeypatch.setenv("FLTOOL_MAX_IMAGE_PIXELS", str(size[0] * size[1]))  # raised: now it is decoded (and fails)
    with pytest.raises(ImageLoadError, match="cannot decode"):
        LoadImageChecked().transform(dict(img_path=str(path)))


def test_predict_skips_an_image_over_the_bound_and_names_it(tiny_run, tmp_path):
    bomb = tmp_path / "in" / "bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(png_declaring(30000, 30000))
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(bomb), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert f"skipped: {bomb}: image {bomb} declares more pixels than fltool decodes (100 megapixels; raise the " \
           "bound with FLTOOL_MAX_IMAGE_PIXELS=N if the image is real)" in said


def test_the_data_check_names_an_image_over_the_bound_without_decoding_it(coco_copy):
    from fltool.data.check import check_coco

    name = json.loads((coco_copy / "train.json").read_text())["images"][0]["file_name"]
    (coco_copy / "images" / name).write_bytes(png_declaring(12000, 12000))
    report = check_coco(coco_copy / "train.json", coco_copy / "images")
    unreadable = [i for i in report.issues if i.kind == "unreadable_image"]
    assert unreadable and unreadable[0].examples[0] == (
        f"{name}: ImageTooLarge: {name} is 12000x12000 = 144 megapixels, over fltool's bound of 100 megapixels; not "
        "decoded (raise the bound with FLTOOL_MAX_IMAGE_PIXELS=N if the image is real)")


def test_a_video_whose_frames_are_over_the_bound_is_skipped_before_a_frame_is_decoded(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from fltool.engine.predict_inputs import expand, frames

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    sources, failed = expand([str(video)])
    assert len(list(frames(sources, 1, failed))) == 1 and not failed
    monkeypatch.setenv("FLTOOL_MAX_IMAGE_PIXELS", str(64 * 48 - 1))
    assert list(frames(sources, 1, failed)) == []
    assert failed == [(str(video.resolve()), f"video {video.resolve()} is 64x48 = 0.00307 megapixels, over "
                       "fltool's bound of 0.00307 megapixels; not decoded (raise the bound with "
                       "FLTOOL_MAX_IMAGE_PIXELS=N if the image is real)")]


def test_img_size_over_the_bound_is_a_usage_error_not_an_opencv_crash(tiny_layouts, tmp_path):
    line = one_error_line(runner.invoke(app, ["train", "--data", str(tiny_layouts["coco"]), TINY, "--img-size",
                                              "100000", "--work-dir", str(tmp_path / "wd")]))
    assert "--img-size 100000 asks for 10000 megapixels per image, over fltool's bound of 100" in line


# -- OS faults -----------------------------------------------------------------------------------------------------
def test_a_work_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == tmp_path / "ro" / "wd":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)
    monkeypatch.setattr(Path, "mkdir", read_only)
    line = one_error_line(runner.invoke(app, ["train", TINY, "--work-dir", str(tmp_path / "ro" / "wd")]))
    assert line == (f"fltool: error: cannot use {tmp_path / 'ro' / 'wd'}: Read-only file system; choose a folder you "
                    "can write to (--work-dir, --out-dir) or fix the permissions")


def test_disk_full_while_saving_a_checkpoint_names_the_file(tmp_path, monkeypatch):
    """f.write() on a full disk raises ENOSPC without a file name."""
    from mmengine.fileio.backends import LocalBackend

    def full(self, obj, filepath):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(LocalBackend, "put", full)
    line = one_error_line(runner.invoke(app, ["train", TINY, "--work-dir", str(tmp_path / "wd")]))
    assert f"cannot write {tmp_path / 'wd' / 'iter_2.pth'}: No space left on device" in line


def test_a_full_disk_while_converting_data_names_the_file_and_leaves_no_partial_one(tiny_layouts, tmp_path,
                                                                                    monkeypatch):
    real_write = Path.write_text

    def full(self, text, *args, **kwargs):
        if self.name.endswith(".partial") and "data" in self.parts:
            real_write(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, text, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full)
    wd = tmp_path / "wd"
    line = one_error_line(runner.invoke(app, ["train", "--data", str(tiny_layouts["voc"]), TINY, "--work-dir",
                                              str(wd)]))
    assert line.startswith(f"fltool: error: cannot use {wd / 'data'}") and "No space left on device; free disk " \
        "space (or write to another disk), then run the command again" in line
    assert not [p for p in wd.rglob("*") if p.name.endswith(".partial")]
