"""The Python API (fltool.train/evaluate/predict/export): the CLI's commands as functions, with the same results."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import fltool
from fltool.errors import ConfigError

TINY = str(Path(__file__).resolve().parent / "configs" / "tiny_synth.py")


def test_train_returns_the_metrics_it_wrote(tmp_path):
    seen = []
    run = fltool.train(TINY, work_dir=tmp_path / "run", max_iters=2, seed=3,
                       progress=lambda e: seen.append(e.kind))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run.iterations == 2 and run.metrics["AP"] == written["bbox"]["AP"]
    assert run.checkpoint == tmp_path / "run" / "iter_2.pth" and "train_iter" in seen


def test_evaluate_takes_a_work_dir_or_a_config_and_checkpoint_and_both_agree(tiny_run):
    by_run = fltool.evaluate(tiny_run.work_dir)
    by_files = fltool.evaluate(TINY, tiny_run.work_dir / "iter_4.pth", work_dir=tiny_run.work_dir.parent / "ev")
    assert by_run.metrics["AP50"] == pytest.approx(by_files.metrics["AP50"]) and by_run.num_images == 8
    assert by_run.checkpoint.endswith("iter_4.pth")


def test_predict_and_export_write_their_files(tiny_run, tmp_path):
    images = sorted(Path(json.loads((tiny_run.work_dir / "metrics.json").read_text())["val_ann_file"]).parent
                    .glob("images/val_*.png"))[:2]
    found = fltool.predict(tiny_run.work_dir, images, out_dir=tmp_path / "pred", score_thr=0.0)
    assert found.images == 2 and found.files["detections"].is_file()
    exported = fltool.export(tiny_run.work_dir, out=tmp_path / "m.onnx", check=False)
    assert exported.onnx_file == tmp_path / "m.onnx" and exported.onnx_file.stat().st_size > 0


def test_an_unknown_option_names_the_valid_ones_and_bad_input_is_an_fltool_error(tmp_path):
    with pytest.raises(TypeError, match="unknown option.*max_iter\\b.*TrainOptions takes: .*max_iters"):
        fltool.train(TINY, max_iter=2)
    with pytest.raises(ConfigError, match="config not found"):
        fltool.train("no_such_config", work_dir=tmp_path)
    assert set(fltool.__all__) >= {"train", "evaluate", "predict", "export"}
