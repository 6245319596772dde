"""Starting weights: --pretrained (torchvision://, open-mmlab://, a file) initialises the backbone MMDetection's
way; --load-from an 80-class detector into a model with other classes loads every weight of the same shape and
keeps the classifier's prior; what loads and what not is one line; weights that fit nothing are refused.
No downloads: torch.hub's cache ($TORCH_HOME/hub/checkpoints/<file name of the URL>) holds files written here."""
from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fltool.cli.main import app
from fltool.engine import hub

TINY = str(Path(__file__).resolve().parent / "configs" / "tiny_synth.py")
LR0 = ["--cfg-options", "optim_wrapper.optimizer.lr=0.0"]  # one iteration that changes no weight
runner = CliRunner()


def tiny_backbone(base_channels: int = 8):
    from mmdet.models.backbones import ResNet

    return ResNet(depth=18, base_channels=base_channels, out_indices=(1, 2, 3))


def torchvision_style(base_channels: int = 8) -> dict:
    """A torchvision ResNet-18 state dict (its key names, random values, the classifier fc) at the tiny width."""
    torch.manual_seed(1)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in tiny_backbone(base_channels).state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 8 * base_channels), torch.randn(1000)
    return state


@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    return cache


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def test_pretrained_torchvision_name_initialises_the_backbone_from_torch_hubs_cache(tiny_layouts, torch_home,
                                                                                     tmp_path):
    url = hub.model_url("torchvision://resnet18")
    assert url.endswith("/resnet18-f37072fd.pth") and hub.cached_file(url) == torch_home / "resnet18-f37072fd.pth"
    state = torchvision_style()
    torch.save(state, torch_home / "resnet18-f37072fd.pth")
    result = runner.invoke(app, ["train", "--data", str(tiny_layouts["coco"]), TINY, "--pretrained",
                                 "torchvision://resnet18", "--max-iters", "1", "--work-dir", str(tmp_path), *LR0])
    assert result.exit_code == 0, result.output
    assert ("backbone init torchvision://resnet18: 100 of 100 backbone weights loaded; 2 weights of the file not "
            "used (fc.weight, fc.bias)") in result.stderr
    trained = weights(tmp_path / "iter_1.pth")
    params = [k for k in state if not k.startswith("fc.") and "running" not in k and "num_batches" not in k]
    assert all(torch.equal(trained[f"backbone.{k}"], state[k]) for k in params)
    written = (tmp_path / "tiny_synth_coco.py").read_text()
    assert "torchvision://resnet18" in written  # the repeatable config keeps the init


def test_pretrained_local_detector_file_takes_its_backbone(tiny_layouts, tmp_path):
    state = {f"backbone.{k}": v for k, v in torchvision_style().items() if not k.startswith("fc.")}
    state["bbox_head.retina_cls.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "detector.pth")
    result = runner.invoke(app, ["train", "--data", str(tiny_layouts["coco"]), TINY, "--pretrained",
                                 str(tmp_path / "detector.pth"), "--max-iters", "1", "--work-dir",
                                 str(tmp_path / "wd"), *LR0])
    assert result.exit_code == 0, result.output
    assert "100 of 100 backbone weights loaded" in result.stderr
    assert torch.equal(weights(tmp_path / "wd" / "iter_1.pth")["backbone.conv1.weight"],
                       state["backbone.conv1.weight"])


def test_load_from_an_80_class_detector_keeps_the_prior_classifier_and_says_which_keys_it_skipped(tiny_layouts,
                                                                                                   tmp_path):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import fltool_plugins  # noqa: F401
    from fltool.engine.config import load_config

    init_default_scope("mmdet")
    cfg = load_config(TINY, {"model.bbox_head.num_classes": 80})
    torch.manual_seed(3)
    coco_model = MODELS.build(cfg.model)
    coco_classes = tuple(f"coco{i}" for i in range(80))
    torch.save({"meta": {"dataset_meta": {"classes": coco_classes}}, "state_dict": coco_model.state_dict()},
               tmp_path / "retinanet_coco.pth")
    result = runner.invoke(app, ["train", "--data", str(tiny_layouts["voc"]), TINY, "--load-from",
                                 str(tmp_path / "retinanet_coco.pth"), "--max-iters", "1", "--work-dir",
                                 str(tmp_path / "wd"), *LR0])
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stderr.splitlines() if "--load-from" in ln)
    assert "124 of 126 model weights loaded; 2 skipped for their shape, kept at initialisation " \
           "(bbox_head.retina_cls.weight, bbox_head.retina_cls.bias; e.g. bbox_head.retina_cls.weight: " \
           "(720, 16, 3, 3) in the file, (27, 16, 3, 3) here)" in line
    assert "the classification layer starts from the prior pi = 0.01" in line
    assert "the file was trained on 80 classes (coco0, coco1, coco2, ...), this model has 3" in line
    trained, source = weights(tmp_path / "wd" / "iter_1.pth"), coco_model.state_dict()
    for key in ("backbone.conv1.weight", "neck.fpn_convs.0.conv.weight", "bbox_head.retina_reg.weight",
                "bbox_head.cls_convs.0.conv.weight"):
        assert torch.equal(trained[key], source[key]), key
    bias = trained["bbox_head.retina_cls.bias"]
    assert bias.shape == (27,) and torch.allclose(bias, torch.full_like(bias, -math.log(0.99 / 0.01)))
    assert 0.005 < trained["bbox_head.retina_cls.weight"].std().item() < 0.015  # N(0, 0.01)


def test_weights_that_fit_nothing_are_refused_in_one_line(tiny_layouts, torch_home, tmp_path):
    torch.save(torchvision_style(base_channels=64), torch_home / "resnet18-f37072fd.pth")  # a real-width ResNet-18
    result = runner.invoke(app, ["train", "--data", str(tiny_layouts["coco"]), TINY, "--pretrained",
                                 "torchvision://resnet18", "--max-iters", "1", "--work-dir", str(tmp_path / "a")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "fltool: error: backbone init torchvision://resnet18 fits none of the 100 weights of the backbone (every "
        "weight it shares has another shape, e.g. conv1.weight: (64, 3, 7, 7) in the file, (8, 3, 7, 7) here); "
        "give weights of the same architecture")
    torch.save(torchvision_style(), tmp_path / "backbone.pth")
    result = runner.invoke(app, ["train", "--data", str(tiny_layouts["coco"]), TINY, "--load-from",
                                 str(tmp_path / "backbone.pth"), "--max-iters", "1", "--work-dir", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "fits none of the 126 weights of the model (no weight name in common" in result.stderr
    assert f"these look like backbone weights: use --pretrained {tmp_path / 'backbone.pth'}" in result.stderr


def test_a_zoo_file_not_in_the_cache_without_network_says_where_to_put_it(torch_home, monkeypatch):
    from fltool.engine.weights import _load
    from fltool.errors import CheckpointError

    def no_network(url, dst, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    with pytest.raises(CheckpointError) as exc:
        _load("torchvision://resnet50", trust=False)
    assert exc.value.one_line() == (
        "cannot download https://download.pytorch.org/models/resnet50-0676ba61.pth (URLError: Temporary failure in "
        f"name resolution); without network access, put the file there by hand: {torch_home}/resnet50-0676ba61.pth "
        "(torch.hub's cache; $TORCH_HOME moves it)")
    assert not list(torch_home.iterdir())  # no partial file left behind
    with pytest.raises(CheckpointError, match="unknown torchvision model 'resnet51'"):
        _load("torchvision://resnet51", trust=False)


def test_open_mmlab_names_resolve_through_mmengines_table_to_the_hub_cache(torch_home):
    url = hub.model_url("open-mmlab://resnet50_caffe")
    assert url.startswith("https://") and hub.local_path("open-mmlab://resnet50_caffe") == \
        torch_home / url.rsplit("/", 1)[1]
