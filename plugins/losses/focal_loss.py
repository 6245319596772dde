"""MMDetection loss modules for FL and FL*: ``SigmoidFocalLoss`` and ``SigmoidFocalLossStar``.

They keep MMDetection's loss contract (``forward(pred, target, weight=None, avg_factor=None, reduction_override=None)``
returning ``loss_weight * loss``) and its ``FocalLoss`` constructor, and run :mod:`.functional` underneath: the fused
C++ kernel on CPU (where MMDetection falls back to an unfused PyTorch formula), the same closed forms elsewhere.
"""
from typing import List, Optional, Union

from mmdet.registry import MODELS
from torch import Tensor, nn

from .functional import Reduction, sigmoid_focal_loss, sigmoid_focal_loss_star

__all__ = ["SigmoidFocalLoss", "SigmoidFocalLossStar"]

AlphaCfg = Union[None, float, List[float]]


def _check_common(use_sigmoid: bool, reduction: str) -> None:
    if use_sigmoid is not True:
        raise ValueError("only the sigmoid focal loss is supported (use_sigmoid=True)")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f'reduction must be "none", "mean" or "sum", got {reduction!r}')


@MODELS.register_module()
class SigmoidFocalLoss(nn.Module):
    """Focal Loss FL = -alpha_t (1 - p_t)^gamma log(p_t) on sigmoid logits (paper: gamma = 2, alpha = 0.25).

    Args:
        use_sigmoid: must be True (read by MMDetection's AnchorHead to size the classifier).
        gamma: focusing parameter, >= 0.
        alpha: None, a float, or a list of K per-class values.
        reduction: default reduction, "none", "mean" or "sum".
        loss_weight: factor on the returned loss.
    """

    def __init__(self, use_sigmoid: bool = True, gamma: float = 2.0, alpha: AlphaCfg = 0.25,
                 reduction: Reduction = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        _check_common(use_sigmoid, reduction)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.use_sigmoid = use_sigmoid
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[Reduction] = None) -> Tensor:
        """pred (N, K) logits; target (N,) class indices (K = background) or (N, K) one-hot/soft targets;
        weight (N,), (N, 1) or (N, K); avg_factor normalises reduction "mean" (e.g. the number of positives)."""
        reduction = reduction_override or self.reduction
        loss = sigmoid_focal_loss(pred, target, gamma=self.gamma, alpha=self.alpha, weight=weight,
                                  reduction=reduction, avg_factor=avg_factor)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}, loss_weight={self.loss_weight}"


@MODELS.register_module()
class SigmoidFocalLossStar(nn.Module):
    """FL* (appendix A): -alpha_t log(sigmoid(gamma x_t + beta)) / gamma (paper: gamma = 2, beta = 1 or gamma = 4,
    beta = 0, alpha = 0.25). Arguments as :class:`SigmoidFocalLoss` plus ``beta``; gamma must be > 0."""

    def __init__(self, use_sigmoid: bool = True, gamma: float = 1.0, beta: float = 0.0, alpha: AlphaCfg = 0.25,
                 reduction: Reduction = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        _check_common(use_sigmoid, reduction)
        if not gamma > 0:
            raise ValueError(f"FL* needs gamma > 0, got {gamma}")
        self.use_sigmoid = use_sigmoid
        self.gamma = gamma
        self.beta = beta
        self.alpha = alpha
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[Reduction] = None) -> Tensor:
        """Same contract as :meth:`SigmoidFocalLoss.forward`."""
        reduction = reduction_override or self.reduction
        loss = sigmoid_focal_loss_star(pred, target, gamma=self.gamma, beta=self.beta, alpha=self.alpha,
                                       weight=weight, reduction=reduction, avg_factor=avg_factor)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, beta={self.beta}, alpha={self.alpha}, reduction={self.reduction!r}, "
                f"loss_weight={self.loss_weight}")

