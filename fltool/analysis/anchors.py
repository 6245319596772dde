"""How imbalanced a dataset is under a model's anchors: positive, negative and ignored anchors per image.

The paper's premise is the imbalance a dense detector meets: on COCO about 100k anchors per image of which roughly
one in a thousand is positive. This measures it for any config, with the model's own anchor generator and assigner
(``AnchorHead.get_anchors`` and ``get_targets``, the code training runs): every image of a split goes through the
config's deterministic test pipeline (the training resize, no random flip), its boxes are assigned to the anchors of
the network input it becomes, and the anchors are counted as

- positive: assigned to a ground-truth box (RetinaNet: IoU >= 0.5, plus each box's best anchor when the assigner's
  ``min_pos_iou`` allows such low-quality matches, as MMDetection's RetinaNet does);
- negative: background with label weight > 0 (IoU < 0.4);
- ignored: label weight 0 (IoU in [0.4, 0.5), or outside the image).

The ratio reported is the paper's: mean positives per image over mean anchors per image (all anchors the loss
sees, ignored ones included), also written "1 in N". No weights are needed: assignment does not depend on them.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from fltool.errors import ConfigError, DataError
from fltool.progress import ProgressEvent, ProgressFn, no_progress


@dataclass
class AnchorStatsOptions:
    config: str
    cfg_options: Union[Sequence[str], dict, None] = None
    split: str = "train"
    num_images: Optional[int] = None
    work_dir: Optional[Path] = None


@dataclass
class AnchorStats:
    """Counts per image over ``num_images`` images of a split (means unless named otherwise)."""

    config: str
    split: str
    num_images: int
    anchors: float  # anchors per image, all levels
    positive: float
    negative: float
    ignored: float
    boxes: float  # ground-truth boxes per image
    positive_per_image: List[int]  # one count per image, in the split's order
    positive_per_level: List[float]  # mean positives per image on each pyramid level (P3 first)
    anchors_per_level: List[float]
    input_shapes: List[Tuple[int, int]]  # the distinct padded network-input shapes (h, w) met
    assigner: Dict[str, Any]
    wall_s: float
    work_dir: Path
    notes: List[str] = field(default_factory=list)

    @property
    def positive_fraction(self) -> float:
        """Positives over all anchors (the paper's imbalance: about 1e-3 on COCO)."""
        return self.positive / self.anchors if self.anchors else float("nan")

    @property
    def one_in(self) -> Optional[float]:
        """N in "1 positive anchor in N"; None without positives."""
        return self.anchors / self.positive if self.positive else None

    def summary(self) -> dict:
        counts = self.positive_per_image
        return {
            "config": self.config, "split": self.split, "num_images": self.num_images,
            "per_image": {"anchors": self.anchors, "positive": self.positive, "negative": self.negative,
                          "ignored": self.ignored, "gt_boxes": self.boxes},
            "positive_fraction": self.positive_fraction, "one_positive_in": self.one_in,
            "definition": "mean positive anchors per image / mean anchors per image (all anchors of all levels, "
                          "ignored ones included); anchors assigned by the model's own assigner",
            "positive_per_image_stats": {
                "min": min(counts) if counts else None, "median": statistics.median(counts) if counts else None,
                "max": max(counts) if counts else None,
                "images_without_positive": sum(1 for c in counts if c == 0)},
            "positive_per_level": self.positive_per_level, "anchors_per_level": self.anchors_per_level,
            "input_shapes": [list(s) for s in self.input_shapes], "assigner": self.assigner,
            "wall_s": round(self.wall_s, 2), "notes": self.notes,
        }


def _build_model(cfg: Any) -> Any:
    """The config's detector with random weights (assignment needs none), in eval mode."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from fltool.analysis.assignment import check_anchor_head
    from fltool.engine import runner as rn

    rn.check_types(cfg)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    with rn.translate_errors():
        model = MODELS.build(cfg.model)
    if not hasattr(model, "extract_feat") or not hasattr(model, "bbox_head"):
        raise ConfigError(f"the model is a {type(model).__name__}, not a single-stage detector",
                          "anchor statistics need a single-stage anchor detector such as RetinaNet")
    check_anchor_head(model.bbox_head)
    return model.eval()


def anchor_statistics(opts: AnchorStatsOptions, progress: ProgressFn = no_progress) -> AnchorStats:
    """Count positive, negative and ignored anchors per image of a split (see the module docstring)."""
    from mmdet.models.utils import unpack_gt_instances
    from mmengine.runner import Runner

    from fltool.analysis.assignment import split_loader_config
    from fltool.engine import runner as rn

    start = time.time()
    if opts.num_images is not None and opts.num_images < 1:
        raise ConfigError(f"--num-images must be >= 1, got {opts.num_images}")
    progress(ProgressEvent("stage", "loading config"))
    cfg, loader_cfg = split_loader_config(opts.config, opts.cfg_options, opts.work_dir, opts.split, opts.num_images,
                                          progress)
    progress(ProgressEvent("stage", "building model and data"))
    with rn.captured_stdout(rn.stdout_log(cfg)):
        model = _build_model(cfg)
        with rn.translate_errors():
            loader = Runner.build_dataloader(loader_cfg, seed=0)
    total = len(loader.dataset)
    if total == 0:
        raise DataError(f"the {opts.split} split has no images", "choose another --split")

    head = model.bbox_head
    num_classes = head.cls_out_channels
    featmap_cache: Dict[Tuple[int, int], list] = {}
    per_image: List[int] = []
    sums = {"anchors": 0, "negative": 0, "ignored": 0, "boxes": 0}
    level_pos: Optional[torch.Tensor] = None
    level_anchors: Optional[torch.Tensor] = None
    done = 0
    message = f"anchors: {opts.split} images"
    progress(ProgressEvent("stage", message, 0, total))
    with torch.no_grad(), rn.translate_errors():
        for data_batch in loader:
            data = model.data_preprocessor(data_batch, False)
            shape = tuple(int(s) for s in data["inputs"].shape[-2:])
            if shape not in featmap_cache:  # the pyramid's sizes for this input size, from one forward pass
                cls_scores, _ = head(model.extract_feat(data["inputs"][:1].new_zeros((1, 3) + shape)))
                featmap_cache[shape] = [s.shape[-2:] for s in cls_scores]
            gts, gts_ignore, metas = unpack_gt_instances(data["data_samples"])
            anchors, valid = head.get_anchors(featmap_cache[shape], metas, device=data["inputs"].device)
            labels_per_level, weights_per_level = head.get_targets(anchors, valid, gts, metas,
                                                                   batch_gt_instances_ignore=gts_ignore)[:2]
            # each (N, anchors of the level); background = num_classes, weight 0 = ignored
            pos = torch.stack([((lab < num_classes) & (w > 0)).sum(1)
                               for lab, w in zip(labels_per_level, weights_per_level)], 1)  # (N, levels)
            sizes = torch.tensor([lab.shape[1] for lab in labels_per_level], dtype=torch.float64)
            labels, weights = torch.cat(labels_per_level, 1), torch.cat(weights_per_level, 1)  # (N, anchors)
            per_image += [int(n) for n in pos.sum(1)]
            sums["negative"] += int(((labels == num_classes) & (weights > 0)).sum())
            sums["ignored"] += int((weights == 0).sum())
            sums["anchors"] += int(labels.numel())
            sums["boxes"] += sum(len(g) for g in gts)
            level_pos = pos.sum(0).double() if level_pos is None else level_pos + pos.sum(0).double()
            level_anchors = sizes * len(metas) if level_anchors is None else level_anchors + sizes * len(metas)
            done += len(metas)
            progress(ProgressEvent("stage", message, done, total))

    notes = []
    if not any(per_image):
        notes.append("no positive anchors at all: the split has no boxes the assigner could match")
    assigner = dict(head.train_cfg.get("assigner", {}))
    return AnchorStats(
        config=str(opts.config), split=opts.split, num_images=done, anchors=sums["anchors"] / done,
        positive=sum(per_image) / done, negative=sums["negative"] / done, ignored=sums["ignored"] / done,
        boxes=sums["boxes"] / done, positive_per_image=per_image,
        positive_per_level=[float(v) / done for v in level_pos], anchors_per_level=[float(v) / done
                                                                                     for v in level_anchors],
        input_shapes=sorted(featmap_cache), assigner=assigner, wall_s=time.time() - start,
        work_dir=Path(cfg.work_dir), notes=notes)
