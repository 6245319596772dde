"""Focal Loss (FL) and FL* as pure functions and as MMDetection loss modules; OHEM's anchor selection (its rival).

``import fltool_plugins`` registers ``SigmoidFocalLoss`` and ``SigmoidFocalLossStar`` in ``mmdet.registry.MODELS``.
"""
from .focal_loss import SigmoidFocalLoss, SigmoidFocalLossStar  # noqa: F401  (registration)
from .functional import kernel_info, sigmoid_focal_loss, sigmoid_focal_loss_star
from .ohem import ohem_select

__all__ = ["SigmoidFocalLoss", "SigmoidFocalLossStar", "sigmoid_focal_loss", "sigmoid_focal_loss_star",
           "ohem_select", "kernel_info"]

