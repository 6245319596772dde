"""``--data``: training on COCO, Pascal VOC and YOLO folders with the classes read from the data, the written
config that repeats the run, one-line errors for bad data, --data-check drop, and the other commands that take
--data (data check, eval, sweep, bench speed-accuracy, analyze loss-cdf)."""
from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine.datasource import DataOptions, fit_within, parse_img_size, training_config
from fltool.errors import ConfigError

TINY = str(Path(__file__).resolve().parent / "configs" / "tiny_synth.py")
runner = CliRunner()


def train(*args: str):
    return runner.invoke(app, ["train", *args])


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("fltool: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def data_run(tiny_layouts, tmp_path_factory):
    """One run trained through --data on the YOLO layout (2 iterations): its work dir."""
    work_dir = tmp_path_factory.mktemp("data_run")
    result = train("--data", str(tiny_layouts["yolo"]), TINY, "--max-iters", "2", "--work-dir", str(work_dir))
    assert result.exit_code == 0, result.output
    return work_dir


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_each_layout_trains_with_the_classes_of_the_data(fmt, tiny_layouts, tmp_path):
    result = train("--data", str(tiny_layouts[fmt]), TINY, "--max-iters", "1", "--work-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    written = tmp_path / f"tiny_synth_{fmt}.py"
    cfg = Config.fromfile(str(written))
    classes = cfg.train_dataloader.dataset.metainfo.classes
    expected = json.loads((tiny_layouts["coco"] / "train.json").read_text())["categories"]
    if fmt == "voc":  # no class list in VOC: the names of the objects, sorted
        assert list(classes) == sorted({c["name"] for c in expected} & set(classes)) and len(classes) >= 3
    else:
        assert list(classes) == [c["name"] for c in expected]
    assert cfg.model.bbox_head.num_classes == len(classes)
    assert cfg.val_evaluator.ann_file == cfg.val_dataloader.dataset.ann_file
    assert "fltool_synth_spec" not in cfg and "data_root" not in cfg  # the recipe's own data is gone
    assert f"data: {dict(coco='COCO', voc='Pascal VOC', yolo='YOLO')[fmt]}" in result.stderr
    assert "input size 160x160" in result.stderr and "iter 1/1" in result.stderr
    assert (tmp_path / "iter_1.pth").is_file()
    state = torch.load(tmp_path / "iter_1.pth", weights_only=True)
    assert tuple(state["meta"]["dataset_meta"]["classes"]) == tuple(classes)


def test_the_written_config_repeats_the_run(data_run, tmp_path):
    written = data_run / "tiny_synth_yolo.py"
    again = tmp_path / "again"
    result = train(str(written), "--work-dir", str(again))
    assert result.exit_code == 0, result.output
    first = torch.load(data_run / "iter_2.pth", weights_only=True)["state_dict"]
    second = torch.load(again / "iter_2.pth", weights_only=True)["state_dict"]
    assert first.keys() == second.keys()
    assert all(torch.allclose(first[k].float(), second[k].float(), atol=1e-6) for k in first)


def test_bad_data_gives_one_line_naming_the_problem(tiny_layouts, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(train("--data", str(empty), TINY, "--work-dir", str(tmp_path / "w1")))
    assert "no dataset found in" in line and "looked for YOLO" in line and "the folder is empty" in line

    bad = Path(shutil.copytree(tiny_layouts["yolo"], tmp_path / "bad_yolo"))
    label = sorted((bad / "labels" / "train").glob("*.txt"))[0]
    label.write_text(label.read_text() + "9 0.5 0.5 0.1 0.1\n")
    line = one_error_line(train("--data", str(bad), TINY, "--work-dir", str(tmp_path / "w2")))
    assert "1 class id beyond the class names" in line and "class 9, but 4 names" in line
    assert f"fltool train --data {bad} --data-check drop" in line

    line = one_error_line(train("--data", str(tmp_path / "missing"), TINY))
    assert line.startswith("fltool: error: data not found:")
    line = one_error_line(train("retinanet_r18-gn_scratch", "--work-dir", str(tmp_path / "w3")))
    assert "recipe for your own data" in line and "--data PATH" in line


def test_data_check_drop_trains_voc_without_the_objects_of_unlisted_classes(tiny_layouts, tmp_path):
    root = Path(shutil.copytree(tiny_layouts["voc"], tmp_path / "voc"))
    (root / "classes.txt").write_text("circle\nsquare\n")
    checked = runner.invoke(app, ["data", "check", "--data", str(root), "--no-decode"])
    assert checked.exit_code == 1 and "class_not_in_class_list" in checked.stdout
    hint = re.search(r"train without them: (fltool train --data \S+ --data-check drop)", checked.stderr)
    assert hint, checked.stderr
    result = runner.invoke(app, [*shlex.split(hint.group(1))[1:], TINY, "--max-iters", "1",
                                 "--work-dir", str(tmp_path / "wd")])
    assert result.exit_code == 0, result.output
    assert "left out while reading" in result.stderr and "objects of classes missing from the class list" in \
        result.stderr
    cfg = Config.fromfile(str(tmp_path / "wd" / "tiny_synth_voc.py"))
    assert tuple(cfg.train_dataloader.dataset.metainfo.classes) == ("circle", "square")
    assert cfg.model.bbox_head.num_classes == 2


def test_the_hint_for_an_annotation_file_is_a_command_that_trains(tiny_layouts, tmp_path):
    root = Path(shutil.copytree(tiny_layouts["coco"], tmp_path / "coco"))
    data = json.loads((root / "train.json").read_text())
    (root / "images" / data["images"][0]["file_name"]).unlink()
    checked = runner.invoke(app, ["data", "check", str(root / "train.json"), "--no-decode"])
    assert checked.exit_code == 1
    hint = re.search(r"train without them: (fltool train --data \S+ --data-check drop)$", checked.stderr.strip())
    assert hint, checked.stderr
    words = shlex.split(hint.group(1))
    assert words[3] == str(root / "train.json")
    result = runner.invoke(app, [*words[1:], TINY, "--max-iters", "1", "--work-dir", str(tmp_path / "wd")])
    assert result.exit_code == 0, result.output
    assert "dropped 1 images" in result.stderr and (tmp_path / "wd" / "iter_1.pth").is_file()


def test_input_size_is_the_median_image_fitted_within_the_recipe_never_enlarged(tiny_layouts, tmp_path):
    assert fit_within((640, 480), (320, 320)) == (320, 240)
    assert fit_within((600, 800), (833, 500)) == (500, 667)
    assert fit_within((160, 160), (320, 320)) == (160, 160)
    assert fit_within((160, 160), (320, 320), enlarge=True) == (320, 320)
    assert parse_img_size("320") == (320, 320) and parse_img_size("320x240") == (320, 240)
    with pytest.raises(ConfigError, match="--img-size 'big' is not a size"):
        parse_img_size("big")
    default = training_config("retinanet_r18-gn_scratch", DataOptions(tiny_layouts["coco"]), tmp_path / "a")
    assert default.input_size == (160, 160) and "never enlarged" in " ".join(default.notes)
    sized = training_config("retinanet_r18-gn_scratch", DataOptions(tiny_layouts["coco"], img_size="224"),
                            tmp_path / "b")
    cfg = Config.fromfile(str(sized.path))
    resizes = [s for s in cfg.train_dataloader.dataset.pipeline + cfg.test_dataloader.dataset.pipeline
               if s["type"] == "Resize"]
    assert sized.input_size == (224, 224) and [tuple(r["scale"]) for r in resizes] == [(224, 224)] * 2
    assert cfg.randomness.seed == 0 and cfg.fltool_bench_scales == [160, 224, 288]


def test_fine_tune_recipe_keeps_the_papers_model_and_imagenet_backbone(tiny_layouts, tmp_path):
    generated = training_config("retinanet_r50_fpn_fl_500_finetune", DataOptions(tiny_layouts["voc"]), tmp_path)
    cfg = Config.fromfile(str(generated.path))
    assert cfg.model.backbone.depth == 50 and cfg.model.backbone.init_cfg.checkpoint == "torchvision://resnet50"
    assert cfg.model.bbox_head.type == "FocalRetinaHead" and cfg.model.bbox_head.num_classes == \
        len(generated.dataset.classes)
    assert generated.input_size == (160, 160)  # 160 px images are not enlarged to 500


def test_eval_with_data_scores_the_same_val_split_training_used(data_run, tiny_layouts, tmp_path):
    result = runner.invoke(app, ["eval", str(data_run / "tiny_synth_yolo.py"), str(data_run / "iter_2.pth"),
                                 "--data", str(tiny_layouts["yolo"]), "--work-dir", str(tmp_path),
                                 "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    trained = json.loads((data_run / "metrics.json").read_text())["bbox"]
    assert json.loads((tmp_path / "m.json").read_text())["bbox"]["AP50"] == pytest.approx(trained["AP50"])
    assert "of val.json" in result.stdout


def test_sweep_bench_and_analyze_take_data(data_run, tiny_layouts, tmp_path):
    sweep = runner.invoke(app, ["sweep", TINY, "--data", str(tiny_layouts["voc"]), "--set", "loss.gamma=2",
                                "--max-iters", "1", "--work-dir", str(tmp_path / "sweep")])
    assert sweep.exit_code == 0, sweep.output
    assert (tmp_path / "sweep" / "tiny_synth_voc.py").is_file()
    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert record["config"].endswith("tiny_synth_voc.py")

    ckpt = str(data_run / "iter_2.pth")
    bench = runner.invoke(app, ["bench", "speed-accuracy", str(data_run / "tiny_synth_yolo.py"), "--checkpoint",
                                ckpt, "--data", str(tiny_layouts["coco"]), "--scales", "160", "--num-images", "2",
                                "--warmup", "0", "--min-iters", "1", "--threads", "1",
                                "--work-dir", str(tmp_path / "bench")])
    assert bench.exit_code == 0, bench.output
    assert "tiny_synth_yolo (iter_2.pth" in bench.stdout
    assert (tmp_path / "bench" / "configs" / "tiny_synth_yolo.py").is_file()

    cdf = runner.invoke(app, ["analyze", "loss-cdf", str(data_run / "tiny_synth_yolo.py"), ckpt, "--data",
                              str(tiny_layouts["voc"]), "--num-images", "2", "--work-dir", str(tmp_path / "cdf")])
    assert cdf.exit_code == 0, cdf.output
    assert json.loads((tmp_path / "cdf" / "loss_cdf.json").read_text())["num_images"] == 2


def test_data_options_without_data_are_a_usage_error():
    result = train("--img-size", "320")
    assert result.exit_code == 2 and "only apply with --data" in result.output
