"""``fltool export --format onnx`` and the onnxruntime backend: the graph, its metadata, the check, the errors, and
``eval``/``predict --backend`` (tiny trained models, seconds per export)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.deploy.onnx_export import ExportOptions, export_onnx
from fltool.deploy.parity import match_detections
from fltool.engine.backends import read_meta
from fltool_plugins.models import DeployMeta, Detections, OnnxRuntimeBackend

cli = CliRunner()
TINY_CLASSES = ["circle", "square", "triangle", "cross"]


@pytest.fixture(scope="module")
def exports(tiny_run, tmp_path_factory):
    """The tiny run exported twice, from its work dir: any input size, and fixed at 160 x 160; both checked."""
    out = tmp_path_factory.mktemp("export")
    dynamic = export_onnx(ExportOptions(target=tiny_run.work_dir, out=out / "dynamic.onnx"))
    fixed = export_onnx(ExportOptions(target=tiny_run.work_dir / "iter_4.pth", out=out / "fixed.onnx",
                                      img_size=(160, 160), opset=13))
    return dynamic, fixed


def _one_line_error(stderr: str) -> str:
    """The error line (progress lines may precede it on stderr; no traceback may)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("fltool: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


# ----------------------------------------------------------------------------------------------------------------
# The export and its check
# ----------------------------------------------------------------------------------------------------------------
def test_fixed_and_dynamic_exports_detect_what_pytorch_detects_on_the_val_images(exports):
    for result in exports:
        report = result.check
        assert report.num_images == 8
        assert report.detections_pytorch == report.detections_onnx > 0  # score_thr 0: 50 per image
        assert report.matched == report.detections_pytorch and report.unmatched == 0
        assert report.min_iou >= 0.99 and report.max_score_diff <= 1e-3
        assert report.metrics_pytorch["AP50"] == pytest.approx(report.metrics_onnx["AP50"], abs=0.005)
        assert report.ok
        saved = json.loads(result.report_file.read_text())
        assert saved["check"]["ok"] is True and saved["check"]["matched"] == report.matched


def test_a_dynamic_export_takes_any_size_and_a_fixed_one_exactly_its_own(exports):
    dynamic, fixed = exports
    shape = [d.dim_param or d.dim_value for d in
             onnx.load(str(dynamic.onnx_file)).graph.input[0].type.tensor_type.shape.dim]
    assert shape == [1, 3, "height", "width"]
    shape = [d.dim_value for d in onnx.load(str(fixed.onnx_file)).graph.input[0].type.tensor_type.shape.dim]
    assert shape == [1, 3, 160, 160]
    ops = {node.op_type for node in onnx.load(str(dynamic.onnx_file)).graph.node}
    assert {"NonMaxSuppression", "TopK", "Conv"} <= ops
    backend = OnnxRuntimeBackend(str(fixed.onnx_file))
    with pytest.raises(ValueError, match="larger than the model's fixed input 160x160"):
        backend([np.zeros((3, 192, 160), np.float32)])
    small = backend([np.zeros((3, 96, 128), np.float32)])[0]  # padded to 160 x 160 inside, boxes clipped to 96x128
    assert len(small) > 0 and small.boxes[:, 2].max() <= 128 and small.boxes[:, 3].max() <= 96


def test_graph_equals_mmdetection_predict_for_sizes_that_need_padding_and_clamped_top_k(tiny_run, tiny_config,
                                                                                           exports):
    """Non-square sizes that are no multiple of 32, and 64 x 96 where the coarsest level has 2 x 9 x 4 = 72 < nms_pre
    (100) candidates: TopK must ask for 72, not 100."""
    from mmdet.structures import DetDataSample

    from fltool.deploy.onnx_export import exportable
    from fltool.engine import runner as rn
    from fltool.engine.checkpoint import checkpoint_state_dict
    from fltool.engine.config import load_config

    cfg = load_config(tiny_config, None, tiny_run.work_dir / "graph_test")
    runner = rn.build_runner(cfg)
    model = runner.model
    rn.load_weights_strict(model, checkpoint_state_dict(tiny_run.work_dir / "iter_4.pth"), "iter_4.pth")
    model.eval()
    wrapper = exportable(model)
    backend = OnnxRuntimeBackend(str(exports[0].onnx_file), threads=1)
    torch.manual_seed(0)
    for h, w in [(150, 200), (64, 96)]:
        image = torch.randn(1, 3, h, w)
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), batch_input_shape=(ph, pw), ori_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        with torch.no_grad():
            ref = model.predict(torch.nn.functional.pad(image, [0, pw - w, 0, ph - h]), [sample], rescale=False)
            boxes, scores, labels = wrapper(image)
        ref = ref[0].pred_instances
        assert torch.equal(labels, ref.labels) and torch.allclose(boxes, ref.bboxes) and torch.allclose(scores,
                                                                                                        ref.scores)
        got = backend([image[0]])[0]
        assert np.array_equal(got.labels, ref.labels.numpy())
        assert np.allclose(got.boxes, ref.bboxes.numpy(), atol=1e-3) and np.allclose(got.scores, ref.scores.numpy(),
                                                                                    atol=1e-5)


def test_metadata_round_trips_and_says_what_a_consumer_needs(exports, tiny_run):
    dynamic, fixed = exports
    meta = read_meta(dynamic.onnx_file)
    assert meta == dynamic.meta == DeployMeta.from_props(meta.to_props())
    assert OnnxRuntimeBackend(str(dynamic.onnx_file)).meta == meta  # as ONNX Runtime reads it
    assert meta.classes == TINY_CLASSES
    assert meta.input["fixed_hw"] is None and read_meta(fixed.onnx_file).fixed_hw == (160, 160)
    assert meta.preprocess["mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert meta.preprocess["std"] == pytest.approx([58.395, 57.12, 57.375])
    assert meta.preprocess["bgr_to_rgb"] is True and meta.preprocess["size_divisor"] == 32
    assert meta.preprocess["resize"] == {"scale": [160, 160], "keep_ratio": True}
    assert meta.postprocess == dict(score_thr=0.0, nms_pre=100, iou_threshold=0.5, max_per_img=50, min_bbox_size=0.0)
    assert meta.source["checkpoint"] == "iter_4.pth" and meta.source["opset"] == 17
    assert read_meta(fixed.onnx_file).source["opset"] == 13


def test_matching_tells_moved_boxes_and_changed_scores_from_borderline_ones():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]], np.float32)
    ref = Detections(boxes, np.array([0.9, 0.5, 0.0505], np.float32), np.array([0, 1, 2]))
    same = match_detections(ref, ref, score_thr=0.05, max_per_img=100)
    assert (same["matched"], same["borderline"], same["unmatched"]) == (3, 0, 0)
    shifted = boxes.copy()
    shifted[0] += np.array([0.5, 0, 0.5, 0], np.float32)  # IoU 0.905 with where it was
    moved = Detections(shifted, ref.scores, ref.labels)
    found = match_detections(ref, moved, score_thr=0.05, max_per_img=100)
    assert found["matched"] == 2 and found["unmatched"] == 2 and found["borderline"] == 0
    relabelled = Detections(boxes, ref.scores, np.array([0, 2, 2]))
    assert match_detections(ref, relabelled, score_thr=0.05, max_per_img=100)["unmatched"] == 2
    rescored = Detections(boxes, ref.scores + np.float32(0.002), ref.labels)
    assert match_detections(ref, rescored, score_thr=0.05, max_per_img=100)["matched"] == 0
    missing_last = Detections(boxes[:2], ref.scores[:2], ref.labels[:2])  # 0.0505: within 1e-3 of score_thr
    found = match_detections(ref, missing_last, score_thr=0.05, max_per_img=100)
    assert (found["matched"], found["borderline"], found["unmatched"]) == (2, 1, 0)


# ----------------------------------------------------------------------------------------------------------------
# The command and its errors
# ----------------------------------------------------------------------------------------------------------------
def test_cli_exports_a_work_dir_and_prints_the_check(tiny_run, tmp_path):
    out = tmp_path / "tiny.onnx"
    res = cli.invoke(app, ["export", str(tiny_run.work_dir), "--format", "onnx", "--out", str(out),
                           "--check-images", "4"])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.stdout and "circle, square, triangle, cross" in res.stdout
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert json.loads(out.with_suffix(".json").read_text())["check"]["num_images"] == 4


@pytest.mark.parametrize("case", ["corrupt", "other model", "not a checkpoint", "both sizes", "bad opset"])
def test_bad_input_is_one_line(tiny_run, tiny_config, tmp_path, case):
    args = ["export"]
    if case == "corrupt":
        bad = tmp_path / "iter_9.pth"
        bad.write_bytes(b"PK\x03\x04 truncated")
        args += [str(bad), "--config", tiny_config]
        expect = "truncated or corrupt"
    elif case == "other model":
        other = tmp_path / "other.pth"
        torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}}, other)
        args += [str(other), "--config", tiny_config]
        expect = "does not fit this config"
    elif case == "not a checkpoint":
        args += [str(tmp_path / "x.txt")]
        (tmp_path / "x.txt").write_text("x")
        expect = "is not a checkpoint (.pth) or a work dir"
    elif case == "bad opset":
        args += [str(tiny_run.work_dir), "--opset", "9", "--out", str(tmp_path / "m.onnx")]
        expect = "--opset 9 is out of range"
    else:
        args += [str(tiny_run.work_dir), "--img-size", "160", "160", "--dynamic"]
        expect = "--img-size and --dynamic both given"
    res = cli.invoke(app, [*args, "--out", str(tmp_path / "m.onnx")] if "--out" not in args else args)
    assert res.exit_code == 1, res.output
    assert expect in _one_line_error(res.stderr)
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------------------------------------------
# eval --backend
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def learned_onnx(learned_run, tmp_path_factory):
    """The learning run exported (and checked) into a folder of its own: no config beside the file."""
    out = tmp_path_factory.mktemp("learned_onnx") / "learned.onnx"
    return export_onnx(ExportOptions(target=learned_run.work_dir, out=out)).onnx_file


def test_eval_with_both_backends_agrees_on_a_model_that_detects(learned_run, learn_config, learned_onnx, tmp_path):
    """The learning run (AP50 >= 0.5): an .onnx, and a .pth exported on the fly, score what PyTorch scores."""
    found = {}
    onnx_file = learned_onnx
    ckpt = learned_run.checkpoint
    for backend, path in [("pytorch", ckpt), ("onnxruntime", onnx_file), ("onnxruntime", ckpt)]:
        out = tmp_path / f"{backend}_{path.suffix[1:]}.json"
        res = cli.invoke(app, ["eval", learn_config, str(path), "--backend", backend, "--out", str(out),
                               "--work-dir", str(tmp_path / f"wd_{backend}_{path.suffix[1:]}")])
        assert res.exit_code == 0, res.output
        found[out.stem] = json.loads(out.read_text())["bbox"]
    assert (tmp_path / "wd_onnxruntime_pth" / f"{ckpt.stem}.onnx").is_file()
    assert found["pytorch_pth"]["AP50"] >= 0.5  # a model that detects: the comparison is not noise against noise
    for other in ("onnxruntime_onnx", "onnxruntime_pth"):
        for key, value in found["pytorch_pth"].items():
            assert found[other][key] == pytest.approx(value, abs=0.005), (other, key)


def test_eval_refuses_an_onnx_file_it_cannot_run_with_one_line(tiny_config, exports, tmp_path):
    res = cli.invoke(app, ["eval", tiny_config, str(exports[0].onnx_file), "--work-dir", str(tmp_path / "a")])
    assert res.exit_code == 1 and "is an ONNX file; run it with --backend onnxruntime" in _one_line_error(res.stderr)
    plain = tmp_path / "plain.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    vi = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in "xy"]
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", vi[:1], vi[1:])), str(plain))
    res = cli.invoke(app, ["eval", tiny_config, str(plain), "--backend", "onnxruntime",
                           "--work-dir", str(tmp_path / "b")])
    assert res.exit_code == 1 and "not written by fltool export" in _one_line_error(res.stderr)
    wrong = tmp_path / "wrong.onnx"
    model = onnx.load(str(exports[0].onnx_file))
    for prop in model.metadata_props:
        if prop.key == "fltool.classes":
            prop.value = json.dumps(["a", "b", "c", "d"])
    onnx.save(model, str(wrong))
    res = cli.invoke(app, ["eval", tiny_config, str(wrong), "--backend", "onnxruntime",
                           "--work-dir", str(tmp_path / "c")])
    assert res.exit_code == 1 and "was exported for classes" in _one_line_error(res.stderr)
    shutil.rmtree(tmp_path / "a", ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# predict --backend
# ----------------------------------------------------------------------------------------------------------------
def _per_image(detections_json) -> dict:
    """{image file: Detections} of predict's detections.json (COCO x y w h back to x1 y1 x2 y2)."""
    found: dict = {}
    for r in json.loads(detections_json.read_text()):
        found.setdefault(r["file_name"], []).append([*r["bbox"], r["score"], r["category_id"]])
    out = {}
    for name, rows in found.items():
        arr = np.array(rows, dtype=np.float64)
        boxes = np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:4]], axis=1)
        out[name] = Detections(boxes, arr[:, 4], arr[:, 5].astype(np.int64))
    return out


def test_predict_with_onnxruntime_writes_the_detections_pytorch_writes(learned_run, learned_onnx, tmp_path):
    """The learning run (AP50 >= 0.5) on its val images: PyTorch, the work dir exported on the fly, and an .onnx with
    no config beside it (classes and preprocessing from its metadata) write the same detections.json."""
    ann = Path(json.loads((learned_run.work_dir / "metrics.json").read_text())["val_ann_file"])
    images = [str(ann.parent / "images" / img["file_name"]) for img in json.loads(ann.read_text())["images"]]
    runs = {"pytorch": (learned_run.work_dir, "pytorch"), "ort_workdir": (learned_run.work_dir, "onnxruntime"),
            "ort_onnx": (learned_onnx, "onnxruntime")}
    for name, (target, backend) in runs.items():
        res = cli.invoke(app, ["predict", str(target), *images, "--backend", backend, "--score-thr", "0.05",
                               "--batch-size", "3", "--no-draw", "--out-dir", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["backend"] == backend and summary["images"] == len(images) == 8
        assert summary["timing"]["threads"] == torch.get_num_threads()
        assert ("threads (ONNX Runtime, intra-op)" in " ".join(res.stdout.split())) == (backend == "onnxruntime")
    assert (tmp_path / "ort_workdir" / f"{learned_run.checkpoint.stem}.onnx").is_file()
    assert json.loads((tmp_path / "ort_onnx" / "summary.json").read_text())["config"] is None
    ref = _per_image(tmp_path / "pytorch" / "detections.json")
    assert sum(map(len, ref.values())) >= len(images)  # a model that detects: not noise compared with noise
    for other in ("ort_workdir", "ort_onnx"):
        got = _per_image(tmp_path / other / "detections.json")
        assert set(got) == set(ref), other
        for image, dets in ref.items():
            found = match_detections(dets, got[image], score_thr=0.05, max_per_img=20)
            assert found["unmatched"] == 0 and found["matched"] + found["borderline"] >= len(dets), (other, image)
            assert found["min_iou"] >= 0.99 and found["max_score_diff"] <= 1e-3, (other, image, found)


@pytest.mark.parametrize("case", ["onnx on pytorch", "not fltool's", "corrupt", "other classes", "other mean",
                                  "cuda"])
def test_predict_refuses_what_its_backend_cannot_run_with_one_line(tiny_config, learn_config, exports, tmp_path,
                                                                   case):
    import cv2

    onnx_file = exports[0].onnx_file
    image = str(tmp_path / "image.png")
    cv2.imwrite(image, np.zeros((64, 64, 3), np.uint8))
    args, backend = [str(onnx_file)], "onnxruntime"
    if case == "onnx on pytorch":
        backend, expect = "pytorch", "is an ONNX file; run it with --backend onnxruntime"
    elif case == "not fltool's":
        plain = tmp_path / "plain.onnx"
        node = onnx.helper.make_node("Identity", ["x"], ["y"])
        vi = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in "xy"]
        onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", vi[:1], vi[1:])), str(plain))
        args, expect = [str(plain)], "not written by fltool export"
    elif case == "corrupt":
        (tmp_path / "bad.onnx").write_bytes(b"\x08\x07 truncated")
        args, expect = [str(tmp_path / "bad.onnx")], "is not an ONNX model"
    elif case == "other classes":
        args, expect = [str(onnx_file), "--config", learn_config], "was exported for classes"
    elif case == "other mean":
        model = onnx.load(str(onnx_file))
        for prop in model.metadata_props:
            if prop.key == "fltool.preprocess":
                prop.value = json.dumps(dict(json.loads(prop.value), mean=[0.0, 0.0, 0.0]))
        onnx.save(model, str(tmp_path / "other_mean.onnx"))
        args, expect = [str(tmp_path / "other_mean.onnx"), "--config", tiny_config], "normalises with mean"
    else:
        args, expect = [str(onnx_file), "--device", "cuda"], "the onnxruntime backend runs on the CPU"
    res = cli.invoke(app, ["predict", *args[:1], image, *args[1:], "--backend", backend,
                           "--out-dir", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    assert expect in _one_line_error(res.stderr)
    assert not (tmp_path / "out" / "detections.json").exists()


def test_onnxruntime_detector_preprocesses_on_one_torch_thread_and_restores_the_count(exports, tiny_config):
    """ONNX Runtime owns the cores: torch's normalisation runs on one thread (no spinning OpenMP workers beside
    ONNX Runtime's pool), and the caller's thread count is back afterwards."""
    import torch
    from mmengine.config import Config

    from fltool_plugins.models.onnx_runtime import OnnxRuntimeDetector

    cfg = Config.fromfile(tiny_config)
    model = OnnxRuntimeDetector(str(exports[0].onnx_file), data_preprocessor=cfg.model.data_preprocessor, threads=2)
    seen = []
    model.data_preprocessor.register_forward_hook(lambda m, a, o: seen.append(torch.get_num_threads()), prepend=True)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        from mmdet.structures import DetDataSample

        sample = DetDataSample(metainfo={"img_shape": (64, 64), "scale_factor": (1.0, 1.0), "ori_shape": (64, 64)})
        data = model.data_preprocessor({"inputs": [torch.zeros(3, 64, 64, dtype=torch.uint8)],
                                        "data_samples": [sample]}, False)
        assert seen == [1]
        assert torch.get_num_threads() == 2
        out = model(**data, mode="predict")
        assert len(out) == 1 and hasattr(out[0], "pred_instances")
        with pytest.raises(Exception):  # noqa: B017 - whatever a bad batch raises, the count is still restored
            model.data_preprocessor({"inputs": [torch.zeros(2, 2)], "data_samples": [sample]}, False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
