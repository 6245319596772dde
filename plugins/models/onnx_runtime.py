"""An exported detector (``fltool export``'s ONNX file) run by ONNX Runtime.

- :class:`OnnxRuntimeBackend` is the runtime on its own: ``backend(images) -> [Detections]`` for a batch of
  preprocessed images (each ``(3, H, W)`` float32, resized and normalised as the file's metadata says, not padded),
  boxes in the input's pixels. Anything that already has such images (predict, bench) can use it.
- :class:`OnnxRuntimeDetector` wraps it as an MMEngine model (:class:`~.exported.ExportedDetector`), so a config's
  own data pipeline, data preprocessor, test loop and evaluator run it unchanged: ``model =
  dict(type='OnnxRuntimeDetector', onnx_file=..., data_preprocessor=<the detector's>)``.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import torch
from mmdet.registry import MODELS

from .deploy_meta import DeployMeta
from .exported import Detections, ExportedDetector, clip_to_image, graph_input

__all__ = ["Detections", "OnnxRuntimeBackend", "OnnxRuntimeDetector", "session_options"]


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

    def __call__(self, images: Sequence[Any]) -> list:
        """Detections for each preprocessed image (one session run per image: the graph takes batch 1)."""
        out = []
        for image in images:
            array, hw = graph_input(image, self.meta)
            boxes, scores, labels = self.session.run(self.output_names, {self.input_name: array})
            out.append(clip_to_image(boxes, scores, labels, self.meta, hw))
        return out


@MODELS.register_module()
class OnnxRuntimeDetector(ExportedDetector):
    """An exported ONNX file run by ONNX Runtime, as an MMEngine model (``mode='predict'`` only).

    Args:
        onnx_file: the file ``fltool export`` wrote.
        data_preprocessor: the exported detector's data preprocessor config (normalisation and channel order must
            be the ones the file's metadata states).
        threads: ONNX Runtime intra-op threads (default: torch's current thread count).
    """

    def __init__(self, onnx_file: str, data_preprocessor: Optional[dict] = None, threads: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(OnnxRuntimeBackend(onnx_file, threads=threads), data_preprocessor, init_cfg)
