"""What every runtime of an exported detector shares (ONNX Runtime: :mod:`.onnx_runtime`; OpenVINO:
:mod:`.openvino_runtime`).

- :class:`Detections`: one image's boxes, scores and labels, in the input's pixels.
- :func:`graph_input`: a preprocessed image as the graph's ``(1, 3, H, W)`` float32 input (padded to a fixed-size
  graph's input), and :func:`clip_to_image` for the boxes of an image padded here.
- :class:`ExportedDetector` wraps a runtime (``backend(images) -> [Detections]``, with ``meta`` and ``threads``) as an
  MMEngine model, so a config's own data pipeline, data preprocessor, test loop and evaluator run it unchanged. It
  crops each image of a batch to its ``img_shape`` (the preprocessor pads a batch to its largest image), runs the
  backend, and scales the boxes back to the original image as MMDetection's ``predict(rescale=True)`` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.structures import InstanceData


@dataclass
class Detections:
    """One image's detections: ``boxes (N, 4)`` x1 y1 x2 y2 in input pixels, ``scores (N,)``, ``labels (N,)``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def graph_input(image: Any, meta: Any) -> tuple:
    """(1, 3, H, W) float32 array for the graph, and the image's own (h, w): a fixed-size graph's input is padded
    bottom/right with the metadata's ``pad_value`` (an image larger than it is a ValueError)."""
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(array.shape)}")
    h, w = int(array.shape[1]), int(array.shape[2])
    fixed = meta.fixed_hw
    if fixed is not None and (h, w) != fixed:
        if h > fixed[0] or w > fixed[1]:
            raise ValueError(f"image {h}x{w} is larger than the model's fixed input {fixed[0]}x{fixed[1]}; "
                             "export with --dynamic or a larger --img-size")
        padded = np.full((3, *fixed), meta.preprocess.get("pad_value", 0.0), dtype=np.float32)
        padded[:, :h, :w] = array
        array = padded
    return np.ascontiguousarray(array[None], dtype=np.float32), (h, w)


def clip_to_image(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, meta: Any, hw: tuple) -> Detections:
    """The graph's outputs as :class:`Detections`; boxes clipped to the image where it was padded here."""
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)  # copies: a runtime may reuse its output buffers
    h, w = hw
    if meta.fixed_hw is not None and meta.fixed_hw != (h, w):
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    return Detections(boxes, np.array(scores, dtype=np.float32).reshape(-1),
                      np.array(labels).reshape(-1).astype(np.int64))


_saved_threads: list = []


def _one_torch_thread(module: Any, args: Any) -> None:
    _saved_threads.append(torch.get_num_threads())
    torch.set_num_threads(1)


def _restore_torch_threads(module: Any, args: Any, output: Any) -> None:
    if _saved_threads:
        torch.set_num_threads(_saved_threads.pop())


class ExportedDetector(BaseModel):
    """An exported detector, run by ``backend``, as an MMEngine model (``mode='predict'`` only).

    Args:
        backend: the runtime: ``backend(images) -> [Detections]`` for preprocessed, unpadded ``(3, H, W)`` images.
        data_preprocessor: the exported detector's data preprocessor config (normalisation and channel order must
            be the ones the file's metadata states).
    """

    def __init__(self, backend: Any, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backend = backend
        # The runtime owns the cores here; torch only normalises and pads. Run that on one torch thread: with more,
        # torch's OpenMP workers spin-wait after each op and contend with the runtime's own pool (2 cores, 256 px,
        # ONNX Runtime: 12.1 ms per image with a 2-thread torch op before each run against 7.5 ms without).
        # always_call: a preprocessing error must not leave the caller's process on one thread.
        self.data_preprocessor.register_forward_pre_hook(_one_torch_thread)
        self.data_preprocessor.register_forward_hook(_restore_torch_threads, always_call=True)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None, mode: str = "predict") -> Any:
        name = type(self).__name__
        if mode != "predict":
            raise NotImplementedError(f"{name} runs an exported model: mode 'predict' only, not '{mode}'")
        if data_samples is None:
            raise ValueError(f"{name} needs the data samples (img_shape, scale_factor)")
        images = [inputs[i, :, :s.img_shape[0], :s.img_shape[1]] for i, s in enumerate(data_samples)]
        for sample, found in zip(data_samples, self.backend(images)):
            boxes = torch.from_numpy(found.boxes)
            scale = sample.metainfo.get("scale_factor")
            if scale is not None:  # as BaseDenseHead._bbox_post_process(rescale=True): times 1 / scale_factor
                sx, sy = 1 / scale[0], 1 / scale[1]
                boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
            sample.pred_instances = InstanceData(bboxes=boxes, scores=torch.from_numpy(found.scores),
                                                 labels=torch.from_numpy(found.labels))
        return data_samples
