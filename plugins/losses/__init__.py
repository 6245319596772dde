"""Focal Loss (FL) and FL* as pure functions and as MMDetection loss modules; OHEM's anchor selection (its rival).

``import fltool_plugins`` registers ``SigmoidFocalLoss`` and ``SigmoidFocalLossStar`` in ``mmdet.registry.MODELS``.
"""
from . import functional
from .focal_loss import SigmoidFocalLoss, SigmoidFocalLossStar  # noqa: F401  (registration)
from .functional import sigmoid_focal_loss, sigmoid_focal_loss_star
from .ohem import ohem_select

__all__ = ["SigmoidFocalLoss", "SigmoidFocalLossStar", "sigmoid_focal_loss", "sigmoid_focal_loss_star",
           "ohem_select", "kernel_info"]


def kernel_info() -> dict:
    """Whether the compiled CPU kernel imported, the ISA it was built for ("avx2", "default", ...) and a detail line."""
    ext = functional._focal_ext
    if ext is None:
        return {"available": False, "isa": "none", "detail": functional._KERNEL_ERROR or "not built"}
    return {"available": True, "isa": ext.isa(), "detail": ext.build_detail()}
