"""The data pipeline fltool runs: PackDetInputsFast packs exactly what MMDetection's PackDetInputs packs, every
shipped iteration-based config samples without MMEngine's epoch-boundary sleep, and harden() swaps the parts in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.datasets.transforms import PackDetInputs
from mmdet.structures.bbox import HorizontalBoxes

import fltool_plugins  # noqa: F401  (registers the transforms)
from fltool.engine.config import list_configs, load_config
from fltool.engine.runner import harden
from fltool_plugins.datasets import PackDetInputsFast


def _results(img: np.ndarray) -> dict:
    boxes = np.array([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 12.0]], dtype=np.float32)
    return {"img": img, "img_id": 3, "img_path": "x.png", "ori_shape": img.shape[:2], "img_shape": img.shape[:2],
            "scale_factor": (1.0, 1.0), "flip": False, "flip_direction": None,
            "gt_bboxes": HorizontalBoxes(boxes), "gt_bboxes_labels": np.array([0, 2]),
            "gt_ignore_flags": np.array([False, False])}


@pytest.mark.parametrize("layout", ["contiguous", "flipped view", "grey"])
def test_pack_det_inputs_fast_packs_what_pack_det_inputs_packs(layout):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    if layout == "flipped view":
        img = img[:, ::-1]  # what RandomFlip hands on: not C-contiguous
    elif layout == "grey":
        img = img[..., 0].copy()
    keys = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor", "flip", "flip_direction")
    ours = PackDetInputsFast(meta_keys=keys).transform(_results(img))
    theirs = PackDetInputs(meta_keys=keys).transform(_results(img))
    assert ours["inputs"].dtype == theirs["inputs"].dtype == torch.uint8
    assert ours["inputs"].is_contiguous() and torch.equal(ours["inputs"], theirs["inputs"])
    assert ours["inputs"].shape == ((1, 48, 64) if layout == "grey" else (3, 48, 64))
    assert ours["data_samples"].metainfo == theirs["data_samples"].metainfo
    assert torch.equal(ours["data_samples"].gt_instances.bboxes.tensor,
                       theirs["data_samples"].gt_instances.bboxes.tensor)
    assert torch.equal(ours["data_samples"].gt_instances.labels, theirs["data_samples"].gt_instances.labels)


def test_harden_swaps_in_the_checked_loader_and_the_fast_packer_and_says_so():
    cfg = load_config("retinanet_r18-gn_bccd_320")
    changes = harden(cfg)
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        types = [step["type"] for step in cfg[key]["dataset"]["pipeline"]]
        assert types[0] == "LoadImageChecked" and types[-1] == "PackDetInputsFast", (key, types)
    assert [c.split(" (")[0] for c in changes] == ["PackDetInputs -> PackDetInputsFast"]  # the rest it names itself
    assert harden(cfg) == []  # a config that has them already: nothing to say
    from mmengine.config import Config

    stock = Config(dict(train_dataloader=dict(dataset=dict(pipeline=[dict(type="LoadImageFromFile", ignore_empty=True),
                                                                    dict(type="PackDetInputs")])),
                        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1))))
    assert [c.split(" (")[0] for c in harden(stock)] == ["LoadImageFromFile -> LoadImageChecked",
                                                         "PackDetInputs -> PackDetInputsFast",
                                                         "CheckpointHook -> AtomicCheckpointHook",
                                                         "+ NonFiniteLossHook"]
    assert stock.train_dataloader.dataset.pipeline[0] == dict(type="LoadImageChecked")


def test_training_says_in_one_line_what_fltool_swapped_and_the_written_config_shows_it(tmp_path):
    from typer.testing import CliRunner

    from fltool.cli.main import app

    config = Path(__file__).resolve().parent / "configs" / "tiny_synth.py"
    result = CliRunner().invoke(app, ["train", str(config), "--max-iters", "1", "--work-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    said = [ln for ln in result.stderr.splitlines() if "fltool's equivalents in this run's config" in ln]
    assert len(said) == 1 and "PackDetInputs -> PackDetInputsFast (a faster image copy)" in said[0], result.stderr
    from mmengine.config import Config

    written = Config.fromfile(str(tmp_path / "tiny_synth.py"))
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert written[key].dataset.pipeline[-1].type == "PackDetInputsFast", key


def test_every_shipped_iteration_based_machine_config_samples_without_epoch_boundaries():
    """MMEngine's IterBasedTrainLoop sleeps 2 s whenever an epoch-based sampler runs out (loops.py)."""
    checked = 0
    for info in list_configs():
        if info.group not in ("machine", "data"):
            continue
        cfg = load_config(str(info.path))
        if cfg.train_cfg.get("type") != "IterBasedTrainLoop":
            continue
        assert cfg.train_dataloader.sampler["type"] == "InfiniteSampler", info.name
        checked += 1
    assert checked >= 3
