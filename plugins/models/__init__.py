"""Models that run an exported detector inside MMEngine, with the data preprocessor and evaluation of the config it
was exported from: ``OnnxRuntimeDetector`` (an ONNX file run by ONNX Runtime) and ``OpenVINODetector`` (an OpenVINO IR
or ONNX file run by OpenVINO; the module imports OpenVINO only when one is built, so it stays optional)."""
from .deploy_meta import DeployMeta, MetadataError  # noqa: F401
from .exported import Detections, ExportedDetector  # noqa: F401
from .onnx_runtime import OnnxRuntimeBackend, OnnxRuntimeDetector  # noqa: F401  (registration)
from .openvino_runtime import OpenVINOBackend, OpenVINODetector  # noqa: F401  (registration)

__all__ = ["DeployMeta", "Detections", "ExportedDetector", "MetadataError", "OnnxRuntimeBackend", "OnnxRuntimeDetector",
           "OpenVINOBackend", "OpenVINODetector"]
