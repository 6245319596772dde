"""Which anchors of a split's images are positive, negative or ignored, as the model's own assigner says, and the
dataloader that feeds a split's images to it (boxes in the network input's coordinates). Shared by ``fltool analyze
loss-cdf`` (:mod:`fltool.analysis.loss_cdf`) and ``fltool analyze anchors`` (:mod:`fltool.analysis.anchors`)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from fltool.engine.runner import unwrap_dataset
from fltool.errors import ConfigError
from fltool.progress import ProgressFn, no_progress

SPLITS = ("val", "test", "train")



@dataclass
class AssignedLogits:
    """The logits of one batch split as the head's assigner says.

    ``positive`` (P,): the logit of the true class of every positive anchor; ``negative`` (M * K,): the logit of every
    class of every negative anchor; anchor counts per kind (ignored: label weight 0).
    """

    positive: Tensor
    negative: Tensor
    positive_anchors: int
    negative_anchors: int
    ignored_anchors: int


def check_anchor_head(head: Any) -> None:
    from mmdet.models.dense_heads import AnchorHead

    if not isinstance(head, AnchorHead):
        raise ConfigError(f"the model's head is a {type(head).__name__}, not an anchor head",
                          "the anchor analyses need an anchor-based dense head "
                          "(RetinaNet's FocalRetinaHead/RetinaHead)")
    if not getattr(head, "use_sigmoid_cls", False):
        raise ConfigError(f"{type(head).__name__} uses a softmax classifier",
                          "the anchor analyses read sigmoid (focal-loss) classifiers: set loss_cls.use_sigmoid=True")
    if getattr(head, "train_cfg", None) is None or not hasattr(head, "assigner"):
        raise ConfigError(f"{type(head).__name__} has no assigner (the model config has no train_cfg)",
                          "use the training config of the model: its train_cfg.assigner labels the anchors")


def assign_logits(head: Any, cls_scores: Sequence[Tensor], batch_gt_instances: list, batch_img_metas: list,
                  batch_gt_instances_ignore: Optional[list] = None) -> AssignedLogits:
    """Split a batch's class logits into positive and negative samples with the head's assigner (``get_targets``)."""
    check_anchor_head(head)
    num_classes = head.cls_out_channels
    featmap_sizes = [score.shape[-2:] for score in cls_scores]
    anchor_list, valid_flag_list = head.get_anchors(featmap_sizes, batch_img_metas, device=cls_scores[0].device)
    targets = head.get_targets(anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
                               batch_gt_instances_ignore=batch_gt_instances_ignore)
    labels_per_level, label_weights_per_level = targets[0], targets[1]  # each (N, anchors of the level)
    num_imgs = cls_scores[0].shape[0]
    # (N, A*K, H, W) -> (N, HWA, K) per level, then all levels: (N, anchors, K), in the anchors' order
    logits = torch.cat([score.permute(0, 2, 3, 1).reshape(num_imgs, -1, num_classes) for score in cls_scores], 1)
    labels = torch.cat(labels_per_level, 1)  # (N, anchors); background = K
    counted = torch.cat(label_weights_per_level, 1) > 0  # (N, anchors); weight 0 = ignored
    positive = counted & (labels < num_classes)
    negative = counted & (labels == num_classes)
    pos_logits = logits[positive].gather(1, labels[positive][:, None]).reshape(-1)  # (P, K) -> (P,)
    neg_logits = logits[negative].reshape(-1)  # (M, K) -> (M * K,)
    return AssignedLogits(pos_logits.detach(), neg_logits.detach(), int(positive.sum()), int(negative.sum()),
                          int((~counted).sum()))


def pipeline_with_boxes(pipeline: Sequence[dict]) -> List[dict]:
    """A test pipeline with the boxes loaded right after the image, so that resizing scales them with the image.

    (MMDetection's test pipelines load annotations after ``Resize``, keeping boxes in original-image coordinates
    for COCO evaluation; the assigner needs them in the network input's coordinates.)
    """
    steps = [dict(step) for step in pipeline]
    annotations = next((s for s in steps if s.get("type") == "LoadAnnotations"), None)
    steps = [s for s in steps if s.get("type") != "LoadAnnotations"]
    annotations = dict(annotations or dict(type="LoadAnnotations"), with_bbox=True)
    at = next((i + 1 for i, s in enumerate(steps) if "LoadImage" in str(s.get("type"))), 0)
    return steps[:at] + [annotations] + steps[at:]


def split_loader_config(config: str, cfg_options: Union[Sequence[str], dict, None], work_dir: Optional[Path],
                        split: str, num_images: Optional[int] = None,
                        progress: ProgressFn = no_progress) -> Tuple[Any, dict]:
    """(config, dataloader config) that reads a split's images (train images too) through the config's
    deterministic test pipeline, in order, with the boxes in the network input's coordinates."""
    from fltool.engine import compat
    from fltool.engine import runner as rn
    from fltool.engine.config import load_config

    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
    compat.apply()
    cfg = load_config(config, cfg_options, work_dir)
    if cfg.get(f"{split}_dataloader") is None:
        raise ConfigError(f"config {config} has no {split}_dataloader", "choose another --split")
    rn.resolve_embedded_dataset(cfg, progress)
    cfg.load_from = None  # fltool loads (and checks) the weights itself
    cfg.resume = False
    rn.harden(cfg)
    rn.check_data_paths(cfg, (split,))

    loader = copy.deepcopy(cfg[f"{split}_dataloader"].to_dict())
    dataset = copy.deepcopy(unwrap_dataset(loader["dataset"]))
    pipeline = dataset.get("pipeline")
    if split == "train":  # no random flips or crops: the test split's pipeline
        for key in ("test_dataloader", "val_dataloader"):
            if cfg.get(key) is not None:
                pipeline = unwrap_dataset(cfg[key].to_dict()["dataset"]).get("pipeline")
                break
        else:
            pipeline = cfg.get("test_pipeline")
    if not pipeline:
        raise ConfigError(f"config {config} has no test pipeline for the {split} split",
                          "add test_pipeline (LoadImageFromFile, Resize, LoadAnnotations, PackDetInputs)")
    dataset["pipeline"] = pipeline_with_boxes(pipeline)
    if num_images:
        dataset["indices"] = int(num_images)
    loader["dataset"] = dataset
    loader["sampler"] = dict(type="DefaultSampler", shuffle=False)
    loader.pop("batch_sampler", None)
    loader["persistent_workers"] = False
    return cfg, loader
