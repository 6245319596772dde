"""INT8 post-training quantization of an exported detector (an OpenVINO model) with NNCF, under accuracy control on
COCO AP (``fltool export --format openvino --precision int8``).

- Calibration: ``calib_images`` images (default 100, at most 300) spread evenly over the config's *training* split,
  each through the config's test pipeline (load, resize) and the detector's data preprocessor (normalise, channel
  order; no padding: the graph pads itself): the inputs exactly as the model sees them at inference. The training
  pipeline's random augmentations (flips, crops, photometric changes) are left out: they would widen the activation
  ranges the quantizer fits to inputs the model never gets.
- Accuracy control: ``nncf.quantize_with_accuracy_control`` quantizes, then validates on the val split (the export
  check's test set, one image per item) by COCO AP in points (0-100) through the config's own evaluator
  (pycocotools, as ``fltool eval`` computes it; a subset of the images against an annotation file of only those
  images), and returns to floating point the quantized operations that cost the most AP until the model is within
  ``max_ap_drop`` points of the fp32 model (an absolute drop).
- The result's AP is then measured here on the whole val split; if it is still more than ``max_ap_drop`` below fp32's,
  no INT8 model is kept (:attr:`Int8Outcome.model` is None and :attr:`Int8Outcome.reason` says why).
"""
from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from fltool.errors import ConfigError, DataError
from fltool.progress import ProgressEvent, ProgressFn, no_progress

DEFAULT_CALIB_IMAGES = 100
MAX_CALIB_IMAGES = 300
DEFAULT_MAX_AP_DROP = 1.0


@dataclass
class Int8Outcome:
    model: Any  # the quantized ov.Model, or None when it could not keep AP within max_ap_drop
    metrics: dict  # the quantized model's COCO metrics on the val split (AP... in [0, 1])
    fp32_ap: Optional[float]  # the fp32 model's AP on the same images, in [0, 1]
    calib_images: int
    max_ap_drop: float  # points
    reason: Optional[str] = None

    @property
    def ap_drop(self) -> Optional[float]:
        """fp32's AP minus INT8's, in points."""
        ap = self.metrics.get("AP")
        return None if ap is None or self.fp32_ap is None else 100 * (self.fp32_ap - ap)

    def as_dict(self) -> dict:
        return dict(calibration_images=self.calib_images, max_ap_drop=self.max_ap_drop, ap_drop=self.ap_drop,
                    kept=self.model is not None, reason=self.reason)


def check_int8_options(calib_images: int, max_ap_drop: float) -> None:
    if not 1 <= int(calib_images) <= MAX_CALIB_IMAGES:
        raise ConfigError(f"--calib-images {calib_images} is out of range", f"use 1..{MAX_CALIB_IMAGES} (default "
                                                                            f"{DEFAULT_CALIB_IMAGES})")
    if not 0 <= float(max_ap_drop) <= 100:
        raise ConfigError(f"--max-ap-drop {max_ap_drop} is not an AP difference in points",
                          f"use 0..100 (default {DEFAULT_MAX_AP_DROP})")


def calibration_inputs(cfg: Any, data_preprocessor: Any, num_images: int, progress: ProgressFn = no_progress) -> list:
    """``num_images`` training images spread over the split, as the graph's (1, 3, H, W) float32 inputs (see the
    module docstring)."""
    import numpy as np
    import torch
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    from fltool.engine import runner as rn

    loader = cfg.get("train_dataloader")
    if not loader or not loader.get("dataset"):
        raise ConfigError("--precision int8 calibrates on the training split, and the config has no "
                          "train_dataloader", "export with a config that has its training data")
    rn.check_data_paths(cfg, ("train",))
    dataset_cfg = copy.deepcopy(rn.unwrap_dataset(loader["dataset"]))
    dataset_cfg = dataset_cfg.to_dict() if hasattr(dataset_cfg, "to_dict") else dict(dataset_cfg)
    dataset_cfg["pipeline"] = [dict(step) for step in cfg.test_dataloader.dataset.pipeline
                               if "LoadAnnotations" not in str(step.get("type"))]
    dataset_cfg.pop("indices", None)
    with rn.translate_errors():
        dataset = DATASETS.build(dataset_cfg)
        if len(dataset) == 0:
            raise DataError("--precision int8: the training split has no images to calibrate on")
        picks = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(num_images, len(dataset)))})
        inputs = []
        with torch.no_grad():
            for n, i in enumerate(picks):
                progress(ProgressEvent("stage", "INT8: reading calibration images (training split)", n, len(picks)))
                data = data_preprocessor(pseudo_collate([dataset[i]]), False)
                h, w = data["data_samples"][0].img_shape
                inputs.append(np.ascontiguousarray(data["inputs"][:, :, :h, :w].float().numpy()))
    return inputs


def graph_preprocessor(data_preprocessor: Any) -> Any:
    """The detector's data preprocessor (normalisation, channel order) without padding: the graph pads itself."""
    from mmengine.registry import MODELS

    cfg = copy.deepcopy(dict(data_preprocessor or {}))
    cfg.setdefault("type", "mmdet.DetDataPreprocessor")
    cfg["pad_size_divisor"] = 1
    return MODELS.build(cfg).eval()


def val_items(runner: Any) -> list:
    """The test set one image per item, collated as the test loader collates a batch."""
    from mmengine.dataset import pseudo_collate

    dataset = runner.test_dataloader.dataset
    return [pseudo_collate([dataset[i]]) for i in range(len(dataset))]


def items_metrics(runner: Any, detector: Any, items: list, work_dir: Path) -> dict:
    """COCO metrics of ``detector`` on exactly the images of ``items`` (the config's evaluator, against an annotation
    file of those images only)."""
    import torch

    from fltool.engine import runner as rn
    from fltool.engine.metrics import coco_metrics, subset_evaluator_cfg

    ids = [sample.img_id for item in items for sample in item["data_samples"]]
    evaluator = runner.build_evaluator(subset_evaluator_cfg(runner.cfg, ids, work_dir, {}))
    evaluator.dataset_meta = runner.test_dataloader.dataset.metainfo
    with rn.translate_errors(), torch.no_grad():
        for item in items:
            evaluator.process(data_samples=detector.test_step(copy.copy(item)), data_batch=item)
        return coco_metrics(evaluator.evaluate(len(ids)))


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF's log lines (each validation's metric, the accuracy restorer's steps) off the user's terminal: its
    errors only, for the time of the call."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def quantize_int8(ov_model: Any, meta: Any, runner: Any, fp32_metrics: Optional[dict], *,
                  calib_images: int = DEFAULT_CALIB_IMAGES, max_ap_drop: float = DEFAULT_MAX_AP_DROP,
                  progress: ProgressFn = no_progress) -> Int8Outcome:
    """``ov_model`` (an fp32 OpenVINO model of the detector, ``meta`` its metadata) quantized to INT8 under accuracy
    control (module docstring); ``fp32_metrics``: the fp32 model's metrics on the same val split."""
    import nncf

    from fltool.deploy.parity import exported_detector
    from fltool_plugins.models import OpenVINOBackend

    check_int8_options(calib_images, max_ap_drop)
    prep = runner.cfg.model.get("data_preprocessor")
    preprocessor = graph_preprocessor(prep)
    calib = calibration_inputs(runner.cfg, preprocessor, calib_images, progress)
    items = val_items(runner)
    work_dir = Path(runner.cfg.work_dir) / "int8_validation"
    calls = [0]

    def validate(compiled: Any, data: Any) -> tuple:
        calls[0] += 1
        progress(ProgressEvent("stage", "INT8: accuracy control (NNCF validations of the val split)", calls[0]))
        detector = exported_detector(OpenVINOBackend(compiled, meta=meta), prep)
        metrics = items_metrics(runner, detector, list(data), work_dir)
        return 100 * float(metrics.get("AP") or 0.0), None

    def graph_input(item: dict) -> Any:
        data = preprocessor(copy.copy(item), False)
        h, w = data["data_samples"][0].img_shape
        return data["inputs"][:, :, :h, :w].float().numpy()

    progress(ProgressEvent("stage", f"INT8: quantizing with NNCF ({len(calib)} calibration images)"))
    with quiet_nncf():
        quantized = nncf.quantize_with_accuracy_control(
            ov_model, nncf.Dataset(calib), nncf.Dataset(items, graph_input), validate, max_drop=float(max_ap_drop),
            drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calib))
    progress(ProgressEvent("stage", "INT8: evaluating the quantized model"))
    detector = exported_detector(OpenVINOBackend(quantized, "fp32", meta=meta), prep)
    metrics = items_metrics(runner, detector, items, work_dir)
    outcome = Int8Outcome(quantized, metrics, (fp32_metrics or {}).get("AP"), len(calib), float(max_ap_drop))
    if outcome.ap_drop is not None and outcome.ap_drop > max_ap_drop + 1e-9:
        outcome.reason = (f"INT8 quantization could not keep AP within {max_ap_drop:g} point(s) of fp32 on the val "
                          f"split (fp32 {100 * outcome.fp32_ap:.1f}, best INT8 {100 * metrics['AP']:.1f}, a drop of "
                          f"{outcome.ap_drop:.1f})")
        outcome.model = None
    return outcome


def quantize_plain(ov_model: Any, calib: list) -> Any:
    """``ov_model`` quantized to INT8 by NNCF's default post-training quantization on the calibration inputs, without
    accuracy control (``bench speed-accuracy --precision int8`` measures the AP it gets)."""
    import nncf

    with quiet_nncf():
        return nncf.quantize(ov_model, nncf.Dataset(calib), subset_size=len(calib))
