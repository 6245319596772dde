"""fltool's MMDetection plugins, importable as ``fltool_plugins``.

Importing this package registers everything into MMDetection's registries (configs do it with ``custom_imports``):
the losses ``SigmoidFocalLoss`` / ``SigmoidFocalLossStar``, the heads ``FocalRetinaHead`` / ``OHEMRetinaHead``, the
hooks ``AtomicCheckpointHook`` / ``NonFiniteLossHook`` / ``StopRequestHook``, the transform ``LoadImageChecked``,
the models ``OnnxRuntimeDetector`` and ``OpenVINODetector`` (an exported file run by ONNX Runtime or OpenVINO), the
optimizer wrapper ``CpuAutocastOptimWrapper`` (bf16 mixed precision on the CPU), and the experiment trackers
``FltoolMLflowVisBackend`` / ``FltoolWandbVisBackend`` / ``FltoolDVCLiveVisBackend`` (vis backends).
"""
from . import datasets as _datasets  # noqa: F401  (registration only)
from . import heads as _heads  # noqa: F401
from . import hooks as _hooks  # noqa: F401
from . import losses as _losses  # noqa: F401
from . import models as _models  # noqa: F401
from . import optim as _optim  # noqa: F401
from . import vis_backends as _vis_backends  # noqa: F401
