"""``fltool bench speed-accuracy``: subset AP, timing discipline, result files and the CLI (tiny model, seconds)."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from fltool.bench import inputs, report, timing
from fltool.bench import speed_accuracy as sa
from fltool.cli.main import app
from fltool.engine import metrics as accuracy
from fltool.errors import CheckpointError, ConfigError, DataError

cli = CliRunner()
TINY_SCALES = [96, 128]  # 128 is the learning config's own test scale
NUM_IMAGES = 4  # of the learning config's 8 val images


# ----------------------------------------------------------------------------------------------------------------
# Pure pieces
# ----------------------------------------------------------------------------------------------------------------
def test_reference_data_holds_the_papers_table_1e():
    ref = report.load_paper_reference()
    by_name = {m["depth"]: {p["scale"]: (p["AP"], p["ms"]) for p in m["points"]} for m in ref["models"]}
    assert sorted(by_name) == [50, 101]
    assert sorted(by_name[50]) == list(inputs.PAPER_SCALES) == sorted(by_name[101])
    assert by_name[50][400] == (30.5, 64) and by_name[50][600] == (34.3, 98) and by_name[50][800] == (35.7, 153)
    assert by_name[101][500] == (34.4, 90) and by_name[101][800] == (37.8, 198)
    assert "M40" in ref["setup"] and "test-dev" in ref["setup"]


def test_scales_parse_sorted_unique_and_bad_ones_are_named():
    assert inputs.parse_scales("600, 400,400") == [400, 600]
    assert inputs.parse_scales(None) is None
    with pytest.raises(ConfigError, match="'4x0'"):
        inputs.parse_scales("400,4x0")
    with pytest.raises(ConfigError, match="scale 16 is too small"):
        inputs.parse_scales("16")


def test_a_scale_is_the_short_side_with_the_configs_long_side_ratio():
    assert inputs.resize_scale((1333, 800), 400) == (666, 400)  # mmdet's COCO configs
    assert inputs.resize_scale((1333, 800), 800) == (1333, 800)
    assert inputs.resize_scale((800, 1333), 500) == (500, 833)  # (w, h) order kept
    assert inputs.resize_scale((256, 256), 192) == (192, 192)  # square configs stay square
    assert inputs.resize_scale(512, 320) == (320, 320)


def test_pipeline_splits_at_its_resize_and_only_the_resize_changes_per_scale():
    pipeline = [dict(type="LoadImageChecked"), dict(type="Resize", scale=(1333, 800), keep_ratio=True),
                dict(type="LoadAnnotations", with_bbox=True), dict(type="PackDetInputs")]
    load, per_scale = inputs.split_pipeline(pipeline, "cfg.py")
    assert [s["type"] for s in load] == ["LoadImageChecked"]
    scaled = inputs.with_scale(per_scale, 500)
    assert scaled[0] == dict(type="Resize", scale=(833, 500), keep_ratio=True)
    assert scaled[1:] == per_scale[1:] and per_scale[0]["scale"] == (1333, 800)  # the original is untouched
    with pytest.raises(ConfigError, match="no Resize"):
        inputs.split_pipeline([dict(type="LoadImageChecked"), dict(type="PackDetInputs")], "cfg.py")


def test_configs_and_checkpoints_pair_in_order(tmp_path):
    ckpt = tmp_path / "a.pth"
    ckpt.write_bytes(b"x")
    specs = sa.pair_models(["configs/x.py", "x", "y"], [str(ckpt), "none", "-"])
    assert [(s.label, s.checkpoint) for s in specs] == [("x", ckpt), ("x:init", None), ("y", None)]
    assert [s.checkpoint for s in sa.pair_models(["x", "y"], [])] == [None, None]
    with pytest.raises(ConfigError, match="2 config.* but 1 --checkpoint"):
        sa.pair_models(["x", "y"], [str(ckpt)])
    with pytest.raises(CheckpointError, match="missing.pth"):
        sa.pair_models(["x"], [str(tmp_path / "missing.pth")])


def test_filtered_annotations_keep_only_the_images_run():
    data = {"info": {"v": 1}, "categories": [{"id": 1, "name": "a"}],
            "images": [{"id": i, "file_name": f"{i}.png"} for i in (1, 2, 3)],
            "annotations": [{"id": 10 + i, "image_id": i} for i in (1, 2, 2, 3)]}
    out = accuracy.filter_coco(data, [3, 1])
    assert [img["id"] for img in out["images"]] == [3, 1]
    assert sorted(a["image_id"] for a in out["annotations"]) == [1, 3]
    assert out["categories"] == data["categories"] and out["info"] == data["info"]
    with pytest.raises(DataError, match="image id 7"):
        accuracy.filter_coco(data, [7])


def test_pareto_front_keeps_points_nothing_beats_and_skips_points_without_ap():
    pts = [(10.0, 0.30), (20.0, 0.50), (25.0, 0.40), (5.0, None), (20.0, 0.50)]
    front = report.pareto_front(pts, ms=lambda p: p[0], ap=lambda p: p[1])
    assert front == [0, 1, 4]  # (25, .40) is slower and worse than (20, .50); ties both stay


def test_latency_stats_median_p90_and_throughput():
    stats = timing.LatencyStats.from_samples([10.0, 20.0, 30.0, 40.0, 100.0])
    assert stats.median_ms == 30.0 and stats.p90_ms == pytest.approx(76.0) and stats.mean_ms == 40.0
    assert stats.images_per_s == pytest.approx(25.0) and stats.iterations == 5


# ----------------------------------------------------------------------------------------------------------------
# Timing discipline
# ----------------------------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self, log: list) -> None:
        self.now = 0.0
        self.log = log

    def __call__(self) -> float:
        self.log.append("clock")
        return self.now


def test_timing_synchronises_cuda_before_each_clock_read(monkeypatch):
    log: list = []
    devices: list = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: (log.append("sync"), devices.append(device)))
    clock = FakeClock(log)

    def step(i):
        log.append(f"step{i}")
        clock.now += 0.004

    result = timing.time_steps(step, 2, warmup=1, min_iters=2, device="cuda:0", clock=clock)
    timed = log[log.index("step0", 1) - 2:]  # after the warm-up step
    assert log[0] == "step0"  # warm-up: not timed, no clock
    assert timed == ["sync", "clock", "step0", "sync", "clock", "sync", "clock", "step1", "sync", "clock"]
    assert all(d == torch.device("cuda:0") for d in devices)
    assert result.samples_ms == pytest.approx([4.0, 4.0])


def test_timing_on_cpu_never_touches_cuda(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("synchronize called on CPU")

    monkeypatch.setattr(torch.cuda, "synchronize", boom)
    timed = timing.time_steps(lambda i: i, 3, warmup=2, min_iters=3, device="cpu")
    assert len(timed.samples_ms) == 3 and timed.outputs == [0, 1, 2]


def test_warmup_iterations_are_run_but_not_timed():
    log: list = []
    clock = FakeClock(log)
    calls: list = []

    def step(i):
        calls.append(i)
        clock.now += 1.0 if len(calls) <= 3 else 0.002  # the first (warm-up) calls are slow

    timed = timing.time_steps(step, 2, warmup=3, min_iters=5, device="cpu", clock=clock,
                              cpu_clock=lambda: clock.now / 2)
    assert calls[:3] == [0, 1, 0]  # warm-up cycles through the items
    assert len(timed.samples_ms) == 6  # 3 passes of 2 items reach min_iters=5
    assert timed.samples_ms == pytest.approx([2.0] * 6)  # no warm-up second in any sample
    assert timed.cpu_ms == pytest.approx([1.0] * 6) and timed.cpu_util == pytest.approx(0.5)
    assert timed.warmup == 3


def test_outputs_come_from_the_first_timed_pass():
    passes = iter(range(100))
    timed = timing.time_steps(lambda i: (i, next(passes)), 2, warmup=1, min_iters=4, device="cpu")
    assert timed.outputs == [(0, 1), (1, 2)]  # call 0 was the warm-up


# ----------------------------------------------------------------------------------------------------------------
# End to end on the tiny model
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_run(learned_run, learn_config, tmp_path_factory):
    """Two models (trained weights that detect, and the same config without weights) x 2 scales x 4 images; counts
    decodes."""
    from fltool_plugins.datasets.transforms import LoadImageChecked

    decoded: list = []
    original = LoadImageChecked.transform

    def counting(self, results):
        decoded.append(results["img_path"])
        return original(self, results)

    work_dir = tmp_path_factory.mktemp("bench")
    opts = sa.BenchOptions(configs=[learn_config, learn_config], checkpoints=[learned_run.checkpoint, "none"],
                           scales=TINY_SCALES, num_images=NUM_IMAGES, warmup=1, min_iters=4, work_dir=work_dir,
                           threads=1, paper=True)
    points: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LoadImageChecked, "transform", counting)
        result = sa.run_speed_accuracy(opts, on_point=points.append)
    return result, decoded, points


def test_subset_ap_equals_evaluating_the_same_images_by_hand(bench_run, learned_run, learn_config, tmp_path):
    from fltool.data.synth import SynthSpec, default_dataset
    from fltool.engine.config import load_config
    from fltool.engine.evaluate import EvalOptions, evaluate

    result, _, _ = bench_run
    ds = default_dataset(SynthSpec(**load_config(learn_config).fltool_synth_spec))
    data = json.loads(ds.val_json.read_text())
    data["images"] = data["images"][:NUM_IMAGES]
    ids = {img["id"] for img in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(data))
    evaluated = 0
    for scale in TINY_SCALES:
        by_hand = evaluate(EvalOptions(
            config=learn_config, checkpoint=learned_run.checkpoint, ann_file=subset, img_dir=ds.img_dir,
            cfg_options={"test_dataloader.batch_size": 1, "test_dataloader.dataset.pipeline.1.scale": (scale, scale)},
            work_dir=tmp_path / f"wd{scale}"))
        assert by_hand.num_images == NUM_IMAGES
        point = next(p for p in result.points if p.scale == scale and p.checkpoint)
        assert point.num_images == NUM_IMAGES
        for key in accuracy.METRIC_KEYS:
            assert point.metrics[key] == pytest.approx(by_hand.metrics[key], abs=1e-9), (scale, key)
        evaluated += (by_hand.metrics["AP50"] or 0.0) >= 0.3
    assert evaluated == len(TINY_SCALES)  # a model that detects: the comparison is not noise against noise


def test_images_are_decoded_once_per_run_not_once_per_point(bench_run):
    result, decoded, points = bench_run
    assert len(result.points) == 4 and [p.scale for p in points] == TINY_SCALES * 2  # reported as they finished
    assert len(decoded) == NUM_IMAGES and len(set(decoded)) == NUM_IMAGES
    assert result.images_loaded == NUM_IMAGES


def test_results_csv_and_json_schema(bench_run):
    result, _, _ = bench_run
    with open(result.csv_file, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == report.CSV_COLUMNS
    assert [(r["scale"], r["checkpoint"] != "") for r in rows] == [("96", True), ("128", True),
                                                                  ("96", False), ("128", False)]
    assert all(r["AP"] == "" for r in rows[2:]) and all(0.0 <= float(r["AP50"]) <= 1.0 for r in rows[:2])
    assert all(r["device"] == "cpu" and r["batch_size"] == "1" and int(r["threads"]) >= 1 for r in rows)
    assert all(r["timed_iters"] == "4" and r["warmup_iters"] == "1" for r in rows)
    assert [r["input_hw"] for r in rows[:2]] == ["96x96", "128x128"]

    data = json.loads(result.json_file.read_text())
    assert data["schema"] == report.RESULTS_SCHEMA
    assert {"environment", "settings", "points", "notes", "files", "what", "images_loaded"} <= set(data)
    assert {"device", "device_name", "threads", "batch_size", "torch"} <= set(data["environment"])
    assert [tuple(p) for p in data["points"]] == [report.CSV_COLUMNS] * 4
    first, second = data["points"][0], data["points"][1]
    assert first["flops"] < second["flops"] and first["params"] == second["params"] > 0
    assert first["median_ms"] > 0 and first["p90_ms"] >= first["median_ms"]
    assert data["points"][2]["AP"] is None and data["points"][2]["pareto"] is False


def test_plot_is_written(bench_run):
    result, _, _ = bench_run
    png = result.plot_file.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_prints_the_table_and_writes_the_files(tiny_run, tiny_config, tmp_path):
    ckpt = str(tiny_run.work_dir / "iter_4.pth")
    res = cli.invoke(app, ["bench", "speed-accuracy", tiny_config, "--checkpoint", ckpt, "--scales", "160",
                           "--num-images", "2", "--warmup", "1", "--min-iters", "2", "--threads", "1",
                           "--work-dir", str(tmp_path), "--data-time"])
    assert res.exit_code == 0, res.output
    assert "tiny_synth (iter_4.pth" in res.stdout and "data time per image" in res.stdout
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "speed_accuracy.png").stat().st_size > 0
    assert len(json.loads((tmp_path / "results.json").read_text())["points"]) == 1


def test_cli_errors_are_one_line(tiny_config, tmp_path):
    res = cli.invoke(app, ["bench", "speed-accuracy", tiny_config, tiny_config, "--checkpoint", "none",
                           "--work-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert res.stderr.strip().count("\n") == 0 and "2 config(s) but 1 --checkpoint" in res.stderr
    res = cli.invoke(app, ["bench", "speed-accuracy", tiny_config, "--scales", "abc", "--work-dir", str(tmp_path)])
    assert res.exit_code == 1 and "scale 'abc'" in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_config, tmp_path):
    res = cli.invoke(app, ["bench", "speed-accuracy", tiny_config, "--device", "cuda", "--work-dir", str(tmp_path)])
    assert res.exit_code == 1 and "sees no CUDA GPU" in res.stderr and "--device cpu" in res.stderr


def test_a_config_states_its_own_scales_else_the_papers_are_used():
    from mmengine.config import Config

    assert inputs.config_scales(Config(dict(fltool_bench_scales=[320, 192, 256])), "m.py")[0] == [192, 256, 320]
    assert inputs.config_scales(Config(dict()), "p.py")[0] == [400, 500, 600, 700, 800]
    with pytest.raises(ConfigError, match="fltool_bench_scales in m.py"):
        inputs.config_scales(Config(dict(fltool_bench_scales=[8])), "m.py")


def _point(scale, median_ms, p90_ms, cpu_ms, cpu_util, threads=1, ap=0.5):
    stats = timing.LatencyStats(median_ms, p90_ms, median_ms, 1000 / median_ms, 10)
    return report.BenchPoint(model="m", config="m.py", checkpoint=None, scale=scale, input_hw="1x1", num_images=10,
                         metrics={"AP": ap}, latency=stats, warmup_iters=1, cpu_ms=cpu_ms, cpu_util=cpu_util,
                         load_ms=1.0, transform_ms=1.0, params=1, flops=1, device="cpu", threads=threads)


def test_shared_cpu_and_unsteady_timings_are_noted_once_each():
    calm = _point(192, 30.0, 31.0, 29.5, 0.98)
    calm_two_threads = _point(160, 20.0, 21.0, 39.0, 1.95, threads=2)
    shared = _point(256, 60.0, 62.0, 41.0, 0.68)
    jumpy = _point(320, 60.0, 120.0, 58.0, 1.9, threads=2)
    assert timing.timing_notes([calm, calm_two_threads]) == []
    notes = timing.timing_notes([calm, shared, jumpy])
    assert len(notes) == 2
    assert "1 of 3 point(s)" in notes[0] and "m @ 256: 0.68 CPU-seconds per second with threads=1" in notes[0]
    assert "at m @ 320" in notes[1] and "fewer --threads" in notes[1]
    two_threads_on_one_core = _point(256, 60.0, 62.0, 60.0, 1.0, threads=2)
    assert "--threads 1 is steadier" in timing.timing_notes([two_threads_on_one_core])[0]


@pytest.fixture(scope="module")
def all_backends(learned_run, learn_config, tmp_path_factory):
    """The learning run measured once with every backend: fltool's PyTorch path, stock MMDetection, ONNX Runtime."""
    work_dir = tmp_path_factory.mktemp("bench_backends")
    opts = sa.BenchOptions(configs=[learn_config], checkpoints=[learned_run.checkpoint], scales=[128],
                           num_images=4, warmup=1, min_iters=2, work_dir=work_dir, threads=1,
                           backends=["pytorch", "mmdet", "onnxruntime"])
    return sa.run_speed_accuracy(opts), work_dir


def test_both_backends_are_measured_on_the_same_images_with_the_same_accuracy(all_backends):
    result, work_dir = all_backends
    torch_point, _, ort_point = result.points
    assert (torch_point.backend, ort_point.backend) == ("pytorch", "onnxruntime")
    assert ort_point.series == "tiny_learn (onnxruntime)" and torch_point.series == "tiny_learn"
    assert torch_point.metrics["AP50"] >= 0.3  # a model that detects, so equal AP means something
    for key, value in torch_point.metrics.items():
        assert ort_point.metrics[key] == pytest.approx(value, abs=0.005), key
    assert ort_point.num_images == torch_point.num_images == 4
    assert ort_point.threads == torch_point.threads == 1 and ort_point.latency.median_ms > 0
    assert (work_dir / "onnx" / "tiny_learn.onnx").is_file()
    assert any("onnxruntime" in n and "the speed of pytorch" in n for n in result.notes)
    with open(result.csv_file, newline="") as f:
        assert [r["backend"] for r in csv.DictReader(f)] == ["pytorch", "mmdet", "onnxruntime"]


def test_stock_mmdetection_inference_of_the_same_weights_is_a_row_of_its_own(all_backends, learn_config, tmp_path):
    """--backend mmdet: the same checkpoint as stock MMDetection runs it (NCHW); the AP must be the same model's."""
    result, _ = all_backends
    ours, stock, _ = result.points
    assert (ours.backend, stock.backend) == ("pytorch", "mmdet") and stock.series == "tiny_learn (mmdet)"
    assert ours.metrics["AP50"] >= 0.3
    for key, value in ours.metrics.items():
        assert stock.metrics[key] == pytest.approx(value, abs=0.005), key
    assert any("mmdet" in n and "the speed of pytorch" in n for n in result.notes)
    res = cli.invoke(app, ["bench", "speed-accuracy", learn_config, "--backend", "pytorch,tensorrt",
                           "--work-dir", str(tmp_path / "x")])
    assert res.exit_code == 1 and "unknown backend 'tensorrt'" in res.stderr and "mmdet" in res.stderr


def test_onnxruntime_on_a_gpu_device_is_refused(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="runs on the CPU"):
        sa.run_speed_accuracy(sa.BenchOptions(configs=[tiny_config], device="cuda", work_dir=tmp_path,
                                              backends=["onnxruntime"]))
