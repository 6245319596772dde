"""An exported detector (``fltool export``'s ONNX file) run by ONNX Runtime.

- :class:`OnnxRuntimeBackend` is the runtime on its own: ``backend(images) -> [Detections]`` for a batch of
  preprocessed images (each ``(3, H, W)`` float32, resized and normalised as the file's metadata says, not padded),
  boxes in the input's pixels. Anything that already has such images (predict, bench) can use it.
- :class:`OnnxRuntimeDetector` wraps it as an MMEngine model, so a config's own data pipeline, data preprocessor,
  test loop and evaluator run it unchanged: ``model = dict(type='OnnxRuntimeDetector', onnx_file=...,
  data_preprocessor=<the detector's>)``. It crops each image of a batch to its ``img_shape`` (the preprocessor pads
  a batch to its largest image), runs the backend, and scales the boxes back to the original image as
  MMDetection's ``predict(rescale=True)`` does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModel
from mmengine.structures import InstanceData

from .deploy_meta import DeployMeta


@dataclass
class Detections:
    """One image's detections: ``boxes (N, 4)`` x1 y1 x2 y2 in input pixels, ``scores (N,)``, ``labels (N,)``."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def session_options(threads: Optional[int] = None) -> Any:
    """ONNX Runtime's CPU settings used for every fltool session: all graph optimisations, ``threads`` intra-op
    threads (default: torch's current thread count, so both backends get the same cores), one inter-op thread,
    sequential execution (one image at a time: there is no parallel branch worth a second pool)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are not the user's concern
    return opts


class OnnxRuntimeBackend:
    """A session on an exported detector, with the metadata it carries (see ``deploy_meta``)."""

    def __init__(self, onnx_file: str, threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        self.onnx_file = str(onnx_file)
        if not os.path.isfile(self.onnx_file):
            raise FileNotFoundError(self.onnx_file)
        self.threads = int(threads or torch.get_num_threads())
        self.session = ort.InferenceSession(self.onnx_file, session_options(self.threads),
                                            providers=["CPUExecutionProvider"])
        self.meta = DeployMeta.from_props(self.session.get_modelmeta().custom_metadata_map, self.onnx_file)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _input(self, image: Any) -> tuple:
        """(1, 3, H, W) float32 array for the session, and the image's own (h, w)."""
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3 or array.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) image, got shape {tuple(array.shape)}")
        h, w = int(array.shape[1]), int(array.shape[2])
        fixed = self.meta.fixed_hw
        if fixed is not None and (h, w) != fixed:
            if h > fixed[0] or w > fixed[1]:
                raise ValueError(f"image {h}x{w} is larger than the model's fixed input {fixed[0]}x{fixed[1]}; "
                                 "export with --dynamic or a larger --img-size")
            padded = np.full((3, *fixed), self.meta.preprocess.get("pad_value", 0.0), dtype=np.float32)
            padded[:, :h, :w] = array
            array = padded
        return np.ascontiguousarray(array[None], dtype=np.float32), (h, w)

    def __call__(self, images: Sequence[Any]) -> list:
        """Detections for each preprocessed image (one session run per image: the graph takes batch 1)."""
        out = []
        for image in images:
            array, (h, w) = self._input(image)
            boxes, scores, labels = self.session.run(self.output_names, {self.input_name: array})
            if self.meta.fixed_hw is not None and self.meta.fixed_hw != (h, w):  # padded here: clip to the image
                boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
                boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
            out.append(Detections(boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1).astype(np.int64)))
        return out


_saved_threads: list = []


def _one_torch_thread(module: Any, args: Any) -> None:
    _saved_threads.append(torch.get_num_threads())
    torch.set_num_threads(1)


def _restore_torch_threads(module: Any, args: Any, output: Any) -> None:
    if _saved_threads:
        torch.set_num_threads(_saved_threads.pop())


@MODELS.register_module()
class OnnxRuntimeDetector(BaseModel):
    """An exported detector as an MMEngine model (``mode='predict'`` only).

    Args:
        onnx_file: the file ``fltool export`` wrote.
        data_preprocessor: the exported detector's data preprocessor config (normalisation and channel order must
            be the ones the file's metadata states).
        threads: ONNX Runtime intra-op threads (default: torch's current thread count).
    """

    def __init__(self, onnx_file: str, data_preprocessor: Optional[dict] = None, threads: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backend = OnnxRuntimeBackend(onnx_file, threads=threads)
        # ONNX Runtime owns the cores here; torch only normalises and pads. Run that on one torch thread: with more,
        # torch's OpenMP workers spin-wait after each op and contend with ONNX Runtime's own pool (2 cores, 256 px:
        # 12.1 ms per image with a 2-thread torch op before each run against 7.5 ms without, measured here).
        # always_call: a preprocessing error must not leave the caller's process on one thread.
        self.data_preprocessor.register_forward_pre_hook(_one_torch_thread)
        self.data_preprocessor.register_forward_hook(_restore_torch_threads, always_call=True)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None, mode: str = "predict") -> Any:
        if mode != "predict":
            raise NotImplementedError(f"OnnxRuntimeDetector runs an exported model: mode 'predict' only, not '{mode}'")
        if data_samples is None:
            raise ValueError("OnnxRuntimeDetector needs the data samples (img_shape, scale_factor)")
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
