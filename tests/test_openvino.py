"""OpenVINO: ``fltool export --format openvino`` (the IR, its metadata, the check, bf16 and INT8 with each one's AP),
``--backend openvino`` in eval, predict and bench, the bf16 fallback on a CPU without native bf16, and the one-line
error without the extra (the learning run, seconds per export)."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.deploy.onnx_export import ExportOptions, export_onnx
from fltool.deploy.parity import match_detections
from fltool.engine import precision as precision_mod
from fltool.engine.backends import read_meta
from fltool_plugins.models import OnnxRuntimeBackend, OpenVINOBackend

cli = CliRunner()


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("fltool: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def learned_ir(learned_run, tmp_path_factory):
    """The learning run exported by the CLI as an IR with every precision (INT8 calibrated on 8 training images):
    (the CLI's result, the report JSON, the .xml)."""
    out = tmp_path_factory.mktemp("learned_ir") / "learned.xml"
    res = cli.invoke(app, ["export", str(learned_run.work_dir), "--format", "openvino", "--precision",
                           "fp32,bf16,int8", "--calib-images", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return res, json.loads(out.with_suffix(".json").read_text()), out


@pytest.fixture(scope="module")
def learned_onnx_file(learned_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("learned_onnx_ov") / "learned.onnx"
    return export_onnx(ExportOptions(target=learned_run.work_dir, out=out, check=False)).model_file


@pytest.fixture(scope="module")
def train_inputs(learned_run, learn_config, tmp_path_factory):
    """Four training images of the learning run as the graph's inputs (resized, normalised, RGB)."""
    from mmengine.registry import init_default_scope

    import fltool_plugins  # noqa: F401  (LoadImageChecked)
    from fltool.deploy.quantize import calibration_inputs, graph_preprocessor
    from fltool.engine.evaluate import EvalOptions, prepare_eval_config

    cfg = prepare_eval_config(EvalOptions(config=learn_config, checkpoint=learned_run.checkpoint,
                                          work_dir=tmp_path_factory.mktemp("inputs")))
    init_default_scope("mmdet")
    return calibration_inputs(cfg, graph_preprocessor(cfg.model.data_preprocessor), 4)


# ----------------------------------------------------------------------------------------------------------------
# The IR and its metadata
# ----------------------------------------------------------------------------------------------------------------
def test_ir_export_writes_xml_and_bin_with_the_onnx_metadata_readable_back(learned_ir, learned_onnx_file):
    import openvino as ov

    res, report, xml = learned_ir
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert report["format"] == "openvino" and report["model_file"] == str(xml)
    assert report["check"]["ok"] is True and report["check"]["runtime"] == "OpenVINO"
    assert report["check"]["matched"] == report["check"]["detections_pytorch"] > 0
    assert "check: PyTorch vs OpenVINO" in res.stdout and "PASS" in res.stdout
    meta = read_meta(xml)  # from the IR's rt_info
    raw = ov.Core().read_model(str(xml)).get_rt_info(["fltool", "meta"]).astype(str)
    assert json.loads(raw)["fltool.classes"] == json.dumps(["circle", "square"])
    onnx_meta = read_meta(learned_onnx_file)
    assert meta.source["precision"] == "fp32" and meta.source["format"] == "openvino IR" and meta.source["openvino"]
    assert dataclasses.replace(meta, source=onnx_meta.source) == onnx_meta  # the same metadata as the ONNX export
    assert {k: meta.source[k] for k in onnx_meta.source} == onnx_meta.source
    assert OpenVINOBackend(str(xml)).meta == meta
    assert report["metadata"]["classes"] == ["circle", "square"]


def test_an_ir_fltool_did_not_write_is_refused_in_one_line(learned_onnx_file, learn_config, tmp_path):
    import openvino as ov

    from fltool.errors import CheckpointError
    from fltool_plugins.models import DeployMeta, MetadataError

    with pytest.raises(CheckpointError, match="OpenVINO IR not found"):
        read_meta(tmp_path / "absent.xml")
    (tmp_path / "bad.xml").write_text("<net truncated")
    (tmp_path / "bad.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is not an OpenVINO IR OpenVINO can read"):
        read_meta(tmp_path / "bad.xml")
    ov.save_model(ov.convert_model(str(learned_onnx_file)), str(tmp_path / "plain.xml"), compress_to_fp16=False)
    with pytest.raises(CheckpointError, match="carries no fltool metadata: it was not written by fltool export"):
        read_meta(tmp_path / "plain.xml")
    for text in ("[1]", "{not json", None):
        with pytest.raises(MetadataError):
            DeployMeta.from_json(text, "m.xml")
    res = cli.invoke(app, ["eval", learn_config, str(tmp_path / "bad.xml"), "--backend", "openvino",
                           "--work-dir", str(tmp_path / "wd")])
    assert res.exit_code == 1 and "is not an OpenVINO IR" in _one_line_error(res.stderr)
    res = cli.invoke(app, ["eval", learn_config, str(tmp_path / "plain.xml"), "--backend", "onnxruntime",
                           "--work-dir", str(tmp_path / "wd2")])
    assert res.exit_code == 1 and "is an OpenVINO IR; run it with --backend openvino" in _one_line_error(res.stderr)


def test_openvino_f32_detects_what_onnxruntime_and_pytorch_detect_on_the_same_input(learned_run, learn_config,
                                                                                     learned_ir, learned_onnx_file,
                                                                                     train_inputs, tmp_path):
    from fltool.deploy.onnx_export import exportable
    from fltool.engine import runner as rn
    from fltool.engine.checkpoint import checkpoint_state_dict
    from fltool.engine.config import load_config
    from fltool_plugins.models import Detections

    model = rn.build_runner(load_config(learn_config, None, tmp_path / "wd")).model
    rn.load_weights_strict(model, checkpoint_state_dict(learned_run.checkpoint), "learned")
    wrapper = exportable(model.eval())
    backends = {"ort": OnnxRuntimeBackend(str(learned_onnx_file), threads=1),
                "ov_ir": OpenVINOBackend(str(learned_ir[2]), "fp32", threads=1),
                "ov_onnx": OpenVINOBackend(str(learned_onnx_file), "fp32", threads=1)}
    assert backends["ov_ir"].precision == "fp32" and backends["ov_ir"].threads == 1
    found = 0
    for image in train_inputs:
        with torch.no_grad():
            boxes, scores, labels = wrapper(torch.from_numpy(image))
        ref = Detections(boxes.numpy(), scores.numpy(), labels.numpy())
        found += len(ref)
        for name, backend in backends.items():
            got = backend([image[0]])[0]
            match = match_detections(ref, got, score_thr=0.05, max_per_img=20)
            assert match["unmatched"] == 0 and match["min_iou"] >= 0.99, (name, match)
            assert match["max_score_diff"] <= 1e-3, (name, match)
    assert found >= len(train_inputs)  # a model that detects: not noise compared with noise


# ----------------------------------------------------------------------------------------------------------------
# Precisions: bf16 and its fallback, INT8
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(precision_mod.native_bf16() is None, reason="this CPU has no native bf16 (AMX, AVX512_BF16)")
def test_bf16_agrees_with_f32_within_a_loose_tolerance_where_the_cpu_has_it(learned_ir, train_inputs):
    _, report, xml = learned_ir
    bf16, fp32 = report["precisions"]["bf16"], report["precisions"]["fp32"]
    assert "native" in bf16["note"] and bf16["metrics"]["AP"] == pytest.approx(fp32["metrics"]["AP"], abs=0.02)
    low, full = OpenVINOBackend(str(xml), "bf16", threads=1), OpenVINOBackend(str(xml), "fp32", threads=1)
    assert low.precision == "bf16" and full.precision == "fp32"
    for image in train_inputs:
        ref, got = full([image[0]])[0], low([image[0]])[0]
        keep = ref.scores >= 0.3  # the confident detections: bf16 moves scores near the cut in and out
        match = match_detections(_kept(ref, keep), got, score_thr=0.3, max_per_img=20, iou_min=0.9, score_tol=0.05)
        assert match["matched"] >= int(keep.sum()) - 1, match


def _kept(found, keep):
    from fltool_plugins.models import Detections

    return Detections(found.boxes[keep], found.scores[keep], found.labels[keep])


def test_without_native_bf16_openvino_runs_f32_and_says_so(learned_ir, learn_config, tmp_path, monkeypatch):
    """On a CPU without native bf16 (simulated: the detection says none), bf16 and auto run f32 with a note."""
    import fltool

    monkeypatch.setattr(precision_mod, "native_bf16", lambda *a, **k: None)
    chosen = precision_mod.openvino_precision("bf16")
    assert chosen.name == "fp32" and "no native bf16" in chosen.reason
    assert precision_mod.openvino_precision("auto").name == "fp32"
    xml = learned_ir[2]
    result = fltool.evaluate(learn_config, xml, backend="openvino", precision="bf16", work_dir=tmp_path / "wd")
    assert any("OpenVINO runs f32, this CPU has no native bf16" in n for n in result.notes), result.notes
    assert result.metrics["AP"] == pytest.approx(learned_ir[1]["precisions"]["fp32"]["metrics"]["AP"], abs=1e-6)
    res = cli.invoke(app, ["eval", learn_config, str(xml), "--backend", "openvino", "--precision", "auto",
                           "--work-dir", str(tmp_path / "cli")])
    assert res.exit_code == 0 and "OpenVINO runs f32, this CPU has no native bf16" in " ".join(res.stderr.split())
    res = cli.invoke(app, ["eval", learn_config, str(xml), "--backend", "openvino", "--precision", "fp16",
                           "--work-dir", str(tmp_path / "fp16")])
    assert res.exit_code == 1 and "runs on the CPU in fp32 or bf16" in _one_line_error(res.stderr)


def test_int8_quantization_writes_the_quantized_ir_and_reports_each_precision_ap(learned_ir, learn_config, tmp_path):
    res, report, xml = learned_ir
    found = report["precisions"]
    assert list(found) == ["fp32", "bf16", "int8"]
    int8 = found["int8"]
    assert int8["kept"] is True and int8["calibration_images"] == 8 and int8["max_ap_drop"] == 1.0
    assert int8["file"] == str(xml.with_name("learned_int8.xml")) and xml.with_name("learned_int8.bin").is_file()
    assert found["fp32"]["metrics"]["AP"] >= 0.3  # a model that detects: the AP comparison means something
    assert int8["metrics"]["AP"] >= found["fp32"]["metrics"]["AP"] - 0.01 and int8["ap_drop"] <= 1.0
    assert read_meta(int8["file"]).source["precision"] == "int8"
    text = " ".join(res.stdout.split())
    assert "precisions: COCO AP (%) on the val split" in text and "learned_int8.xml" in text
    ap = f"{100 * int8['metrics']['AP']:.1f}"
    assert any(line.split("│")[1].strip() == "int8" and ap in line for line in res.stdout.splitlines()
               if line.count("│") > 2)
    evaluated = cli.invoke(app, ["eval", learn_config, int8["file"], "--backend", "openvino", "--out",
                                 str(tmp_path / "m.json"), "--work-dir", str(tmp_path / "wd")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "is an INT8 model" in " ".join(evaluated.stderr.split())
    assert json.loads((tmp_path / "m.json").read_text())["bbox"]["AP"] == pytest.approx(int8["metrics"]["AP"],
                                                                                       abs=0.005)


def test_int8_that_cannot_keep_the_ap_is_not_written_and_the_fp32_ir_is_kept(learned_run, tmp_path, monkeypatch):
    """Accuracy control that cannot meet --max-ap-drop (simulated: NNCF returns the model, which then scores 0):
    one error line saying so, no INT8 file, the fp32 IR and its report kept."""
    import nncf

    from fltool.deploy import quantize

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", lambda model, *a, **k: model)
    monkeypatch.setattr(quantize, "items_metrics", lambda *a, **k: dict(AP=0.0, AP50=0.0))
    out = tmp_path / "m.xml"
    res = cli.invoke(app, ["export", str(learned_run.work_dir), "--format", "openvino", "--precision", "int8",
                           "--calib-images", "4", "--no-check", "--out", str(out)])
    assert res.exit_code == 1, res.output
    line = _one_line_error(res.stderr)
    assert "could not keep AP within 1 point(s) of fp32" in line and "no INT8 model was written" in line
    assert f"the fp32 IR {out} is kept" in line
    assert out.is_file() and out.with_suffix(".bin").is_file() and not (tmp_path / "m_int8.xml").exists()
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["precisions"]["int8"]["kept"] is False and report["int8_error"]
    assert report["precisions"]["fp32"]["metrics"]["AP"] >= 0.3  # measured although --no-check: the reference


# ----------------------------------------------------------------------------------------------------------------
# --backend openvino in eval, predict and bench
# ----------------------------------------------------------------------------------------------------------------
def test_eval_with_openvino_gives_onnxruntime_s_ap(learned_run, learn_config, learned_ir, tmp_path):
    """The learning run: a .pth exported on the fly and the IR score within half a point of ONNX Runtime."""
    ckpt = learned_run.checkpoint
    found = {}
    for name, backend, path in [("ort", "onnxruntime", ckpt), ("ov_pth", "openvino", ckpt),
                                ("ov_xml", "openvino", learned_ir[2])]:
        res = cli.invoke(app, ["eval", learn_config, str(path), "--backend", backend, "--out",
                               str(tmp_path / f"{name}.json"), "--work-dir", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        found[name] = json.loads((tmp_path / f"{name}.json").read_text())["bbox"]
    assert found["ort"]["AP50"] >= 0.5
    for name in ("ov_pth", "ov_xml"):
        assert found[name]["AP"] == pytest.approx(found["ort"]["AP"], abs=0.005), name
    assert (tmp_path / "ov_pth" / f"{ckpt.stem}.onnx").is_file()


def test_predict_with_openvino_runs_the_ir_and_a_work_dir(learned_run, learned_ir, tmp_path):
    ann = json.loads((learned_run.work_dir / "metrics.json").read_text())["val_ann_file"]
    images = [str(Path(ann).parent / "images" / img["file_name"]) for img in json.loads(Path(ann).read_text())
              ["images"]][:3]
    counts = {}
    for name, target in [("ir", learned_ir[2]), ("workdir", learned_run.work_dir)]:
        res = cli.invoke(app, ["predict", str(target), *images, "--backend", "openvino", "--no-draw",
                               "--out-dir", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["backend"] == "openvino" and summary["images"] == 3
        assert "(OpenVINO)" in res.stdout
        counts[name] = summary["detections_per_class"]
    assert counts["ir"] == counts["workdir"] and sum(counts["ir"].values()) > 0
    res = cli.invoke(app, ["predict", str(learned_ir[2]), images[0], "--out-dir", str(tmp_path / "pt")])
    assert res.exit_code == 1 and "is an OpenVINO IR; run it with --backend openvino" in _one_line_error(res.stderr)


def test_bench_adds_a_row_per_precision_each_with_its_ap(learned_run, learn_config, tmp_path):
    import csv

    from fltool.bench import speed_accuracy as sa

    opts = sa.BenchOptions(configs=[learn_config], checkpoints=[learned_run.checkpoint], scales=[128], num_images=4,
                           warmup=1, min_iters=2, work_dir=tmp_path, threads=1, backends=["pytorch", "openvino"],
                           precisions=["fp32", "bf16", "int8"], calib_images=4)
    result = sa.run_speed_accuracy(opts)
    rows = [(p.backend, p.precision) for p in result.points]
    native = precision_mod.native_bf16() is not None
    assert rows == [("pytorch", "fp32"), ("pytorch", "bf16"), ("openvino", "fp32")] + \
        ([("openvino", "bf16")] if native else []) + [("openvino", "int8")]
    torch_point = result.points[0]
    assert torch_point.metrics["AP50"] >= 0.3
    for point in result.points:
        assert point.ap is not None and point.latency.median_ms > 0 and point.threads == 1
    openvino = next(p for p in result.points if (p.backend, p.precision) == ("openvino", "fp32"))
    assert openvino.series == "tiny_learn (openvino)" and openvino.ap == pytest.approx(torch_point.ap, abs=0.005)
    assert result.points[-1].series == "tiny_learn (openvino, int8)"
    assert any("no row for pytorch int8" in n for n in result.notes)
    with open(result.csv_file, newline="") as f:
        assert [(r["backend"], r["precision"]) for r in csv.DictReader(f)] == rows


def test_bench_leaves_out_openvino_bf16_on_a_cpu_without_it(monkeypatch):
    from fltool.bench.runtimes import exported_runtime, parse_precisions

    monkeypatch.setattr(precision_mod, "native_bf16", lambda *a, **k: None)
    job = SimpleNamespace(cfg=SimpleNamespace(model={"data_preprocessor": {}}), label="m")
    notes: list = []
    assert exported_runtime(job, "openvino", "bf16", None, lambda e: None, notes) is None
    assert notes == ["m: openvino bf16 left out: bf16: OpenVINO runs f32, this CPU has no native bf16 (no AMX, no "
                     "AVX512_BF16, or ONEDNN_MAX_CPU_ISA caps it)"]
    assert parse_precisions("int8, fp32") == ["fp32", "int8"]


# ----------------------------------------------------------------------------------------------------------------
# Without the extra
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["eval", "predict", "export", "export int8", "bench"])
def test_without_openvino_installed_each_command_says_which_extra_in_one_line(command, learned_run, learn_config,
                                                                              tmp_path, monkeypatch):
    missing = "nncf" if command == "export int8" else "openvino"
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    ckpt = str(learned_run.checkpoint)
    args = {"eval": ["eval", learn_config, ckpt, "--backend", "openvino", "--work-dir", str(tmp_path / "wd")],
            "predict": ["predict", ckpt, ckpt, "--backend", "openvino", "--out-dir", str(tmp_path / "out")],
            "export": ["export", ckpt, "--format", "openvino", "--out", str(tmp_path / "m.xml")],
            "export int8": ["export", ckpt, "--format", "openvino", "--precision", "int8",
                            "--out", str(tmp_path / "m.xml")],
            "bench": ["bench", "speed-accuracy", learn_config, "--backend", "openvino",
                      "--work-dir", str(tmp_path / "b")]}[command]
    res = cli.invoke(app, args)
    assert res.exit_code == 1, res.output
    line = _one_line_error(res.stderr)
    assert f"needs {missing}, which is not installed" in line and "pip install 'fltool[openvino]'" in line
    assert not (tmp_path / "m.xml").exists()


@pytest.mark.parametrize("command", ["eval", "export", "bench"])
def test_under_a_onednn_isa_cap_each_openvino_command_refuses_in_one_line(command, learned_run, learn_config,
                                                                          tmp_path, monkeypatch):
    """OpenVINO crashes the process under ONEDNN_MAX_CPU_ISA (compat item 9): one line naming the variable instead."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    ckpt = str(learned_run.checkpoint)
    args = {"eval": ["eval", learn_config, ckpt, "--backend", "openvino", "--work-dir", str(tmp_path / "wd")],
            "export": ["export", ckpt, "--format", "openvino", "--out", str(tmp_path / "m.xml")],
            "bench": ["bench", "speed-accuracy", learn_config, "--backend", "pytorch,openvino",
                      "--work-dir", str(tmp_path / "b")]}[command]
    res = cli.invoke(app, args)
    assert res.exit_code == 1, res.output
    line = _one_line_error(res.stderr)
    assert "ONEDNN_MAX_CPU_ISA=AVX2 is set, and OpenVINO crashes under it" in line
    assert "unset ONEDNN_MAX_CPU_ISA" in line
    assert not (tmp_path / "m.xml").exists()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")  # no cap: nothing to refuse
    from fltool.engine.compat import openvino_isa_cap

    assert openvino_isa_cap() == "" and openvino_isa_cap({"ONEDNN_MAX_CPU_ISA": "avx512_core"}) == "avx512_core"


_SIGNAL_SCRIPT = """
import ctypes, os, signal, sys
from fltool.engine.compat import repair_signal_stack
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
class StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]
how = sys.argv[1]
if how == "unmapped":  # what OpenVINO's plugin leaves: a stack installed, then unmapped
    size = 64 * 1024
    sp = libc.mmap(None, size, 3, 0x22, -1, 0)  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    assert libc.sigaltstack(ctypes.byref(StackT(sp, 0, size)), None) == 0
    libc.munmap(sp, size)
elif how == "openvino":  # two plugins freed in the order they were made
    import gc, openvino as ov, openvino.opset13 as ops
    param = ops.parameter([1, 4], ov.Type.f32)
    model = ov.Model([ops.relu(param)], [param])
    first, second = ov.Core(), ov.Core()
    made = [core.compile_model(model, "CPU") for core in (first, second)]  # each creates its CPU plugin
    del first, made[0]; gc.collect()
    del second, made[0]; gc.collect()
repaired = repair_signal_stack() if sys.argv[2] == "repair" else None
got = []
signal.signal(signal.SIGINT, lambda s, f: got.append(s))
os.kill(os.getpid(), signal.SIGINT)
print("handled", got, "repaired", repaired)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack repair is Linux only")
def test_a_freed_signal_stack_is_repaired_so_sigint_reaches_its_handler(tmp_path):
    """compat item 8 on any CPU: a thread left on an unmapped alternate signal stack dies of SIGSEGV at the next
    signal; repair_signal_stack puts a valid one back. And with OpenVINO's own plugins, freed out of order."""
    import subprocess

    script = tmp_path / "sig.py"
    script.write_text(_SIGNAL_SCRIPT)

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)

    broken = run("unmapped", "none")
    assert broken.returncode == -11, broken  # the hazard is real: SIGSEGV, no handler ran
    fixed = run("unmapped", "repair")
    assert fixed.returncode == 0 and "handled [2] repaired True" in fixed.stdout, fixed
    intact = run("none", "repair")
    assert intact.returncode == 0 and "repaired False" in intact.stdout, intact  # a valid stack is left alone
    openvino = run("openvino", "repair")
    assert openvino.returncode == 0 and "handled [2]" in openvino.stdout, openvino


def test_export_refuses_bf16_and_int8_for_onnx_and_a_wrong_suffix_in_one_line(learned_run, tmp_path):
    res = cli.invoke(app, ["export", str(learned_run.work_dir), "--precision", "int8", "--out",
                           str(tmp_path / "m.onnx")])
    assert res.exit_code == 1 and "--precision int8 needs --format openvino" in _one_line_error(res.stderr)
    res = cli.invoke(app, ["export", str(learned_run.work_dir), "--format", "openvino", "--out",
                           str(tmp_path / "m.onnx")])
    assert res.exit_code == 1 and "does not end in .xml" in _one_line_error(res.stderr)
    res = cli.invoke(app, ["export", str(learned_run.work_dir), "--format", "openvino", "--precision", "int4",
                           "--out", str(tmp_path / "m.xml")])
    assert res.exit_code == 1 and "--precision int4 is not one of fp32, bf16, int8" in _one_line_error(res.stderr)
    assert not list(tmp_path.iterdir())
