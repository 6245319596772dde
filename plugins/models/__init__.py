"""Models that run an exported detector inside MMEngine: ``OnnxRuntimeDetector`` (an ONNX file run by ONNX Runtime,
with the data preprocessor and evaluation of the config it was exported from)."""
from .deploy_meta import DeployMeta, MetadataError  # noqa: F401
from .onnx_runtime import Detections, OnnxRuntimeBackend, OnnxRuntimeDetector  # noqa: F401  (registration)

__all__ = ["DeployMeta", "Detections", "MetadataError", "OnnxRuntimeBackend", "OnnxRuntimeDetector"]
