"""An exported detector run by OpenVINO on the CPU: the IR of ``fltool export --format openvino`` (``.xml`` with its
``.bin``, also the INT8 one), or the ONNX file of ``fltool export`` read as it is.

- :class:`OpenVINOBackend`: ``backend(images) -> [Detections]``, as :class:`~.onnx_runtime.OnnxRuntimeBackend`.
- :class:`OpenVINODetector`: it as an MMEngine model (:class:`~.exported.ExportedDetector`): ``model =
  dict(type='OpenVINODetector', model_file=..., data_preprocessor=<the detector's>, precision='fp32')``.

``precision`` ``"fp32"`` or ``"bf16"`` is OpenVINO's ``INFERENCE_PRECISION_HINT`` (``f32``/``bf16``) for the ops that
are not quantized (OpenVINO's own default is bf16 on CPUs with AMX, so it is always set). Whether bf16 is worth asking
for (only where the CPU computes it natively) is the caller's choice: ``fltool.engine.precision.openvino_precision``.
Threads: ``INFERENCE_NUM_THREADS`` (default torch's current count, as ONNX Runtime gets), one stream, latency hint.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from mmdet.registry import MODELS

from .deploy_meta import RT_INFO_PATH, DeployMeta, MetadataError
from .exported import ExportedDetector, clip_to_image, graph_input

__all__ = ["OV_PRECISIONS", "OpenVINOBackend", "OpenVINODetector", "compile_properties", "ir_meta", "model_meta"]

#: fltool's precision names -> OpenVINO's INFERENCE_PRECISION_HINT values.
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def compile_properties(precision: str = "fp32", threads: Optional[int] = None) -> dict:
    """The CPU plugin's settings for every fltool model: precision hint, threads, one stream, latency."""
    if precision not in OV_PRECISIONS:
        raise ValueError(f"OpenVINO precision '{precision}' is not one of {', '.join(OV_PRECISIONS)}")
    return {"INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision],
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
            "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


def ir_meta(model: Any, source: str = "the model") -> DeployMeta:
    """The fltool metadata an OpenVINO model keeps in its rt_info, or a MetadataError."""
    path = list(RT_INFO_PATH)
    if not model.has_rt_info(path):
        raise MetadataError(f"{source} carries no fltool metadata")
    return DeployMeta.from_json(model.get_rt_info(path).astype(str), source)


def model_meta(model_file: Union[str, Path], model: Any = None) -> DeployMeta:
    """The metadata of an IR (its rt_info; ``model``: the IR already read) or of an ONNX file (its
    metadata_props)."""
    path = Path(model_file)
    if path.suffix == ".xml":
        if model is None:
            import openvino as ov

            model = ov.Core().read_model(str(path))
        return ir_meta(model, str(path))
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return DeployMeta.from_props(props, str(path))


class OpenVINOBackend:
    """A compiled exported detector with the metadata it carries. ``model``: an .xml/.onnx file, an ``ov.Model``
    (``meta`` then from its rt_info unless given) or an ``ov.CompiledModel`` (compiled already: ``precision`` and
    ``threads`` are read from it; ``meta`` must be given)."""

    def __init__(self, model: Any, precision: str = "fp32", threads: Optional[int] = None,
                 meta: Optional[DeployMeta] = None) -> None:
        import openvino as ov

        self.model_file = None
        if isinstance(model, (str, Path)):
            self.model_file = str(model)
            if not os.path.isfile(self.model_file):
                raise FileNotFoundError(self.model_file)
            model = ov.Core().read_model(self.model_file)
            meta = meta or model_meta(self.model_file, model)
        elif isinstance(model, ov.Model):
            meta = meta or ir_meta(model)
        if meta is None:
            raise ValueError("OpenVINOBackend on a compiled model needs its metadata (meta=)")
        self.meta = meta
        self.compiled = model if isinstance(model, ov.CompiledModel) else \
            ov.Core().compile_model(model, "CPU", compile_properties(precision, threads))
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision = "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"  # what OpenVINO runs
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS") or torch.get_num_threads())
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)[:3]  # boxes, scores, labels: the export's order

    def __call__(self, images: Sequence[Any]) -> list:
        """Detections for each preprocessed image (one inference per image: the graph takes batch 1)."""
        out = []
        for image in images:
            array, hw = graph_input(image, self.meta)
            found = self.request.infer({0: array})
            boxes, scores, labels = (found[port] for port in self.outputs)
            out.append(clip_to_image(boxes, scores, labels, self.meta, hw))
        return out


@MODELS.register_module()
class OpenVINODetector(ExportedDetector):
    """An exported detector run by OpenVINO, as an MMEngine model (``mode='predict'`` only).

    Args:
        model_file: the IR (.xml) of ``fltool export --format openvino``, or its ONNX file.
        data_preprocessor: the exported detector's data preprocessor config.
        precision: "fp32" or "bf16": OpenVINO's inference precision hint for the ops not quantized.
        threads: OpenVINO's inference threads (default: torch's current thread count).
    """

    def __init__(self, model_file: str, data_preprocessor: Optional[dict] = None, precision: str = "fp32",
                 threads: Optional[int] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(OpenVINOBackend(model_file, precision=precision, threads=threads), data_preprocessor,
                         init_cfg)
