"""--precision: bf16 on the CPU where it is native (AMX, AVX512_BF16), fp32 elsewhere, said and recorded; the network
under autocast, the losses in fp32; numerics of bf16 against fp32. Runs on any CPU: CPU autocast is emulated where
bf16 is not native, and the AVX2 path is the one ONEDNN_MAX_CPU_ISA=AVX2 shows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine.precision import choose_precision, native_bf16, training_precision
from fltool.errors import ConfigError

TINY = str(Path(__file__).resolve().parent / "configs" / "tiny_synth.py")


@pytest.mark.parametrize("flags,env,expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, {}, "AVX512_BF16"),
    ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, {}, "AMX"),
    ({"avx2", "fma"}, {}, None),                                               # Zen 3: AVX2 only
    ({"avx2", "avx512f", "avx512_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, None),  # capped: the AVX2 path
    ({"avx2", "avx512f", "amx_bf16"}, {"ONEDNN_MAX_CPU_ISA": "avx512_core"}, None),
    ({"avx2", "avx512f", "amx_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "AMX"),
])
def test_native_bf16_is_read_from_the_cpu_flags_and_the_onednn_cap(flags, env, expected):
    assert native_bf16(flags, env) == expected


def test_auto_takes_bf16_only_where_it_is_native_and_says_why():
    assert choose_precision("auto", "cpu", "AMX").name == "bf16"
    fallback = choose_precision("auto", "cpu", None)
    assert fallback.name == "fp32" and "no native bf16" in fallback.reason
    emulated = choose_precision("bf16", "cpu", None)
    assert emulated.name == "bf16" and "emulated" in emulated.reason  # asked for: done, with the warning
    assert choose_precision("auto", "cuda").name == "fp32" and choose_precision("fp16", "cuda").name == "fp16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", "cpu")



def test_training_precision_swaps_only_a_plain_optim_wrapper_and_auto_steps_back_for_any_other():
    from mmengine.config import Config

    def cfg(wrapper_type):
        return Config(dict(optim_wrapper=dict(type=wrapper_type, optimizer=dict(type="AdamW", lr=1e-3)),
                           val_cfg=dict(type="ValLoop"), test_cfg=dict(type="TestLoop")))

    plain = cfg("OptimWrapper")
    chosen = training_precision(plain, "auto", "cpu", native="AVX512_BF16")
    assert chosen.name == "bf16" and plain.optim_wrapper.type == "CpuAutocastOptimWrapper"
    assert plain.optim_wrapper.dtype == "bfloat16" and plain.val_cfg.fp16 is True

    own = cfg("AmpOptimWrapper")
    kept = training_precision(own, "auto", "cpu", native="AMX")
    assert kept.name == "fp32" and "optim_wrapper is a AmpOptimWrapper" in kept.reason
    assert own.optim_wrapper.type == "AmpOptimWrapper" and "fp16" not in own.val_cfg
    with pytest.raises(ConfigError, match="optim_wrapper is a AmpOptimWrapper"):
        training_precision(cfg("AmpOptimWrapper"), "bf16", "cpu", native="AMX")

    gpu = cfg("OptimWrapper")
    assert training_precision(gpu, "fp16", "cuda").name == "fp16"
    assert gpu.optim_wrapper.type == "AmpOptimWrapper" and gpu.optim_wrapper.loss_scale == "dynamic"

def test_the_cpu_autocast_wrapper_runs_the_forward_in_bf16_and_keeps_fp32_parameters_and_gradients():
    import fltool_plugins  # noqa: F401  (registration)
    from fltool_plugins.optim import CpuAutocastOptimWrapper

    conv = torch.nn.Conv2d(3, 4, 3)
    wrapper = CpuAutocastOptimWrapper(optimizer=torch.optim.SGD(conv.parameters(), lr=0.1))
    x = torch.randn(2, 3, 8, 8)
    with wrapper.optim_context(conv):
        y = conv(x)
    assert y.dtype == torch.bfloat16 and conv(x).dtype == torch.float32
    wrapper.update_params(y.float().square().mean())
    assert conv.weight.dtype == torch.float32 and conv.weight.grad is None or conv.weight.grad.dtype == torch.float32


@pytest.fixture(scope="module")
def head_and_batch():
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    import fltool_plugins  # noqa: F401

    torch.manual_seed(0)
    head = MODELS.build(dict(
        type="FocalRetinaHead", num_classes=3, in_channels=8, stacked_convs=1, feat_channels=8,
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1), sampler=dict(type="PseudoSampler"), allowed_border=-1,
                       pos_weight=-1, debug=False),
        test_cfg=ConfigDict(nms_pre=100, min_bbox_size=0, score_thr=0.0, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=20)))
    head.init_weights()
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2),
             torch.randn(2, 8, 1, 1)]
    gts = [InstanceData(bboxes=torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 70.0, 120.0, 110.0]]),
                        labels=torch.tensor([0, 2])),
           InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))]
    metas = [dict(img_shape=(128, 128), pad_shape=(128, 128), batch_input_shape=(128, 128))] * 2
    return head, feats, gts, metas


def test_losses_under_bf16_autocast_are_fp32_and_within_bf16_rounding_of_fp32(head_and_batch):
    head, feats, gts, metas = head_and_batch
    reference = head.loss_by_feat(*head(feats), gts, metas)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = head(feats)
        assert outs[0][0].dtype == torch.bfloat16  # the network ran in bf16
        mixed = head.loss_by_feat(*outs, gts, metas)
    for key in ("loss_cls", "loss_bbox"):
        for ref, got in zip(reference[key], mixed[key]):
            assert got.dtype == torch.float32
            assert float(got) == pytest.approx(float(ref), rel=0.03, abs=1e-3), key  # bf16 has an 8-bit mantissa
    assert float(mixed["num_pos"]) == float(reference["num_pos"])  # the assignment is the same


def test_predictions_under_autocast_come_out_in_fp32(head_and_batch):
    head, feats, _, metas = head_and_batch
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = head.predict_by_feat(*head(feats), batch_img_metas=[dict(m, scale_factor=(1.0, 1.0)) for m in metas],
                                       rescale=False)
    assert results[0].bboxes.dtype == torch.float32 and results[0].scores.dtype == torch.float32


def test_training_with_precision_bf16_records_it_and_auto_on_the_avx2_path_keeps_fp32(tmp_path, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(app, ["train", TINY, "--precision", "bf16", "--max-iters", "2", "--work-dir",
                                 str(tmp_path / "bf16")])
    assert result.exit_code == 0, result.output
    machine = json.loads((tmp_path / "bf16" / "metrics.json").read_text())["machine"]
    assert machine["precision"] == "bf16" and "bf16 asked for" in machine["precision_reason"]
    from mmengine.config import Config

    written = Config.fromfile(str(tmp_path / "bf16" / "tiny_synth.py"))
    assert written.optim_wrapper.type == "CpuAutocastOptimWrapper" and written.val_cfg.fp16 is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    result = runner.invoke(app, ["train", TINY, "--precision", "auto", "--max-iters", "1", "--work-dir",
                                 str(tmp_path / "auto")])
    assert result.exit_code == 0, result.output
    assert "precision: auto: fp32, this CPU has no native bf16" in " ".join(result.stderr.split())
    machine = json.loads((tmp_path / "auto" / "metrics.json").read_text())["machine"]
    assert machine["precision"] == "fp32" and machine["native_bf16"] is None


def test_eval_and_predict_in_bf16_agree_with_fp32_on_a_trained_model(learned_run, learn_config, tmp_path):
    from fltool.engine.evaluate import EvalOptions, evaluate

    fp32 = evaluate(EvalOptions(config=learn_config, checkpoint=learned_run.checkpoint, work_dir=tmp_path / "a"))
    bf16 = evaluate(EvalOptions(config=learn_config, checkpoint=learned_run.checkpoint, work_dir=tmp_path / "b",
                                precision="bf16"))
    assert fp32.metrics["AP50"] > 0.5  # a model that detects: the comparison means something
    assert bf16.metrics["AP"] == pytest.approx(fp32.metrics["AP"], abs=0.02)
    assert bf16.metrics["AP50"] == pytest.approx(fp32.metrics["AP50"], abs=0.02)
    images = Path(json.loads((learned_run.work_dir / "metrics.json").read_text())["val_ann_file"]).parent / "images"
    counts = {}
    for precision in ("fp32", "bf16"):
        result = CliRunner().invoke(app, ["predict", str(learned_run.work_dir), str(images), "--precision", precision,
                                          "--out-dir", str(tmp_path / precision)])
        assert result.exit_code == 0, result.output
        counts[precision] = json.loads((tmp_path / precision / "summary.json").read_text())["detections_per_class"]
    assert sum(counts["bf16"].values()) == pytest.approx(sum(counts["fp32"].values()), abs=2)


def test_auto_is_the_train_default_and_keeps_fp32_for_a_config_with_its_own_optim_wrapper(tmp_path, monkeypatch):
    """`fltool train` without --precision takes auto: bf16 on a CPU that computes it natively (faked here, so the
    test means the same on every CPU), fp32 where the config brings its own optimizer wrapper."""
    from fltool.engine import precision as precision_mod

    monkeypatch.delenv("FLTOOL_PRECISION", raising=False)  # the suite's conftest pins fp32 through it
    monkeypatch.setattr(precision_mod, "native_bf16", lambda *a, **k: "AVX512_BF16")
    runner = CliRunner()
    result = runner.invoke(app, ["train", TINY, "--max-iters", "1", "--work-dir", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    machine = json.loads((tmp_path / "default" / "metrics.json").read_text())["machine"]
    assert machine["precision"] == "bf16" and machine["precision_reason"].startswith("auto: bf16")
    result = runner.invoke(app, ["train", TINY, "--max-iters", "1", "--work-dir", str(tmp_path / "own"),
                                 "--cfg-options", "optim_wrapper.type=CpuAutocastOptimWrapper"])
    assert result.exit_code == 0, result.output
    machine = json.loads((tmp_path / "own" / "metrics.json").read_text())["machine"]
    assert machine["precision"] == "fp32"
    assert machine["precision_reason"] == ("auto: fp32, the config's optim_wrapper is a CpuAutocastOptimWrapper (bf16 "
                                           "takes the place of a plain OptimWrapper only)")
    result = runner.invoke(app, ["train", TINY, "--max-iters", "1", "--precision", "fp32", "--work-dir",
                                 str(tmp_path / "fp32")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "fp32" / "metrics.json").read_text())["machine"]["precision"] == "fp32"


def test_fltool_precision_sets_the_train_default_and_a_bad_value_is_one_error(tmp_path, monkeypatch):
    """$FLTOOL_PRECISION is `fltool train`'s default (and fltool.train's); --precision overrides it; a value that is
    not a precision stops before anything is written."""
    from fltool.engine.precision import default_training_precision

    assert default_training_precision({}) == "auto"
    assert default_training_precision({"FLTOOL_PRECISION": "BF16"}) == "bf16"
    runner = CliRunner()
    monkeypatch.setenv("FLTOOL_PRECISION", "bf16")
    result = runner.invoke(app, ["train", TINY, "--max-iters", "1", "--work-dir", str(tmp_path / "env")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "env" / "metrics.json").read_text())["machine"]["precision"] == "bf16"
    result = runner.invoke(app, ["train", TINY, "--max-iters", "1", "--precision", "fp32", "--work-dir",
                                 str(tmp_path / "flag")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "flag" / "metrics.json").read_text())["machine"]["precision"] == "fp32"
    monkeypatch.setenv("FLTOOL_PRECISION", "fp8")
    result = runner.invoke(app, ["train", TINY, "--max-iters", "1", "--work-dir", str(tmp_path / "bad")])
    assert result.exit_code == 1 and "FLTOOL_PRECISION=fp8 is not one of auto, fp32, bf16, fp16" in result.stderr
    assert not (tmp_path / "bad").exists()
