"""``fltool analyze anchors``: a dataset's imbalance under a model's anchors, counted with its own assigner."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from fltool.analysis.anchors import AnchorStatsOptions, anchor_statistics
from fltool.cli.main import app


def expected_positives(anchors: torch.Tensor, boxes: torch.Tensor) -> int:
    """RetinaNet's rule written out: IoU >= 0.5 with some box, or a best anchor of some box (every anchor tied at
    its best IoU; exact float32 ties, as the assigner compares them)."""
    from mmdet.structures.bbox import bbox_overlaps

    overlaps = bbox_overlaps(anchors, boxes)  # (anchors, boxes), float32
    positive = overlaps.max(1).values >= 0.5
    for j in range(boxes.shape[0]):
        positive |= overlaps[:, j] == overlaps[:, j].max()
    return int(positive.sum())


@pytest.fixture(scope="module")
def tiny_stats(tiny_config, tmp_path_factory):
    return anchor_statistics(AnchorStatsOptions(tiny_config, num_images=6, work_dir=tmp_path_factory.mktemp("a")))


def test_counts_per_image_are_the_assigners_positives_of_every_anchor(tiny_stats, tiny_config):
    from mmdet.models.task_modules.prior_generators import AnchorGenerator

    from fltool.engine.config import load_config
    from fltool.engine.runner import resolve_embedded_dataset

    # the tiny config: 160 px inputs, strides 8..128, 9 anchors per location
    sizes = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2)]
    gen = AnchorGenerator(octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                          strides=[8, 16, 32, 64, 128])
    anchors = torch.cat(gen.grid_priors(sizes, device="cpu"))
    assert tiny_stats.anchors == len(anchors) == 9 * sum(h * w for h, w in sizes)
    assert tiny_stats.anchors_per_level == [9.0 * h * w for h, w in sizes]

    root = resolve_embedded_dataset(load_config(tiny_config))
    coco = json.loads((root / "train.json").read_text())
    expected = []
    for image in coco["images"][:6]:
        xywh = torch.tensor([a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"]])
        expected.append(expected_positives(anchors, torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)))
    assert tiny_stats.positive_per_image == expected
    assert tiny_stats.positive == pytest.approx(sum(expected) / 6)
    assert tiny_stats.positive + tiny_stats.negative + tiny_stats.ignored == pytest.approx(tiny_stats.anchors)
    assert tiny_stats.one_in == pytest.approx(tiny_stats.anchors / tiny_stats.positive)
    assert sum(tiny_stats.positive_per_level) == pytest.approx(tiny_stats.positive)


def test_cli_prints_the_ratio_and_writes_the_same_numbers_to_json(tiny_config, tmp_path):
    result = CliRunner().invoke(app, ["analyze", "anchors", tiny_config, "--num-images", "4", "--split", "val",
                                      "--work-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "anchors.json").read_text())
    assert data["split"] == "val" and data["num_images"] == 4
    per_image = data["per_image"]
    assert data["one_positive_in"] == pytest.approx(per_image["anchors"] / per_image["positive"])
    assert f"1 in {data['one_positive_in']:,.0f}" in result.stdout


def test_an_unknown_split_is_one_line_not_a_traceback(tiny_config, tmp_path):
    result = CliRunner().invoke(app, ["analyze", "anchors", tiny_config, "--split", "nope"])
    assert result.exit_code == 2  # a usage error: --split takes val, test or train
