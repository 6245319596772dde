"""Online hard example mining (OHEM) over the anchors of one image: which anchors enter the classification loss.

The paper's rival to the focal loss (section 5.1, Table 1d): "each example is scored by its loss, non-maximum
suppression (nms) is then applied, and a minibatch is constructed with the highest-loss examples"; the "1:3"
variant (SSD's) also enforces one positive to three negatives. Unlike FL, OHEM discards the easy examples outright.

:func:`ohem_select` is that procedure for one image, on plain tensors:

1. candidates: the anchors that count in the loss (label weight > 0); ignored anchors are never selected;
2. each candidate's score is its loss (the caller's: the head passes the classification loss summed over classes);
3. greedy NMS over the candidates' predicted boxes in order of decreasing loss (``nms_thr``; None: no NMS);
4. of the survivors, the ``num`` (B) with the highest loss; or, with ``pos_fraction`` f (1:3 is f = 0.25), at most
   round(B f) positives, the hardest ones, and then at most (1 - f) / f negatives per selected positive (SSD's
   "at most 3:1"), the hardest ones, never more than B in all. An image without positives then gives no sample.

NMS under a ratio runs within the positives and within the negatives, separately: a negative never suppresses a
positive, nor the reverse. The paper applies NMS "to all examples" before enforcing the ratio and does not say
whether examples of opposite labels suppress each other. They are not duplicates (their targets differ), the
variant exists "to help ensure each minibatch has enough positives", and an exact joint NMS would cost seconds per
image here (below); without a ratio the NMS is joint, as labels play no part in that selection.

NMS cost. NMS over all ~50k anchors of an image takes seconds on a CPU, so it is computed only as far as the
selection needs, exactly. A survivor's fate depends only on the candidates with a higher loss, so NMS over a prefix
(by loss) of the candidates gives exactly the survivors of that prefix: the prefix grows fourfold from 4 x the
survivors needed until it yields them. (The positives, a few dozen per image, always go through NMS whole.)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["ohem_select", "check_ohem_args"]


def check_ohem_args(num: int, pos_fraction: Optional[float], nms_thr: Optional[float]) -> None:
    """Raise ValueError naming a bad OHEM setting."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"OHEM: num (B, anchors kept per image) must be an integer >= 1, got {num!r}")
    if pos_fraction is not None and not 0 < pos_fraction < 1:
        raise ValueError(f"OHEM: pos_fraction must be None or in (0, 1) (0.25 for 1:3), got {pos_fraction!r}")
    if nms_thr is not None and not 0 < nms_thr <= 1:
        raise ValueError(f"OHEM: nms_thr must be None (no NMS) or an IoU in (0, 1], got {nms_thr!r}")


def _nms_order(boxes: Tensor, nms_thr: float) -> Tensor:
    """Indices into ``boxes`` (already in decreasing-loss order) that greedy NMS keeps, in that order."""
    from mmcv.ops import nms

    # Scores that strictly decrease along the given order: ties in loss cannot reorder the candidates.
    rank = torch.arange(boxes.shape[0], 0, -1, dtype=torch.float32, device=boxes.device)
    _, keep = nms(boxes.float(), rank, nms_thr)
    return keep.sort().values  # NMS returns them by score, i.e. already in order; sorted for certainty


def ohem_select(losses: Tensor, boxes: Tensor, positive: Tensor, valid: Tensor, *, num: int,
                pos_fraction: Optional[float] = None, nms_thr: Optional[float] = 0.5) -> Tensor:
    """The anchors OHEM keeps in one image (see the module docstring).

    Args:
        losses: (A,) the score of each anchor (higher: harder).
        boxes: (A, 4) each anchor's predicted box, x1 y1 x2 y2 (used by NMS only).
        positive: (A,) bool, anchors assigned to a ground-truth box.
        valid: (A,) bool, anchors that count in the loss (label weight > 0).
        num: B, the most anchors kept.
        pos_fraction: None (the B hardest, whatever their label) or f (at most B f positives, at most (1 - f) / f
            negatives per positive kept).
        nms_thr: IoU threshold of the NMS over the predicted boxes; None skips NMS.

    Returns:
        (A,) bool mask of the selected anchors.
    """
    check_ohem_args(num, pos_fraction, nms_thr)
    losses, positive, valid = losses.detach().reshape(-1), positive.reshape(-1).bool(), valid.reshape(-1).bool()
    boxes = boxes.detach().reshape(-1, 4).float()
    selected = torch.zeros_like(valid)
    candidates = valid.nonzero().squeeze(1)
    if candidates.numel() == 0:
        return selected
    # decreasing loss; stable, so equal losses keep the anchors' order
    order = candidates[torch.sort(losses[candidates], descending=True, stable=True).indices]
    if pos_fraction is None:
        survivors = order if nms_thr is None else _prefix_survivors(order, boxes, nms_thr, need=num)
        selected[survivors[:num]] = True
        return selected

    is_pos = positive[order]
    pos_order, neg_order = order[is_pos], order[~is_pos]
    pos = pos_order if nms_thr is None else pos_order[_nms_order(boxes[pos_order], nms_thr)]
    pos = pos[:int(round(num * pos_fraction))]
    # at most (1 - f) / f negatives per positive kept, B in all
    neg_limit = min(num - pos.numel(), int(round(pos.numel() * (1 - pos_fraction) / pos_fraction)))
    neg = neg_order if nms_thr is None else _prefix_survivors(neg_order, boxes, nms_thr, need=neg_limit)
    selected[pos] = True
    selected[neg[:neg_limit]] = True
    return selected


def _prefix_survivors(order: Tensor, boxes: Tensor, nms_thr: float, *, need: int) -> Tensor:
    """The first ``need`` (or more) survivors of greedy NMS over ``order`` (decreasing loss), in that order: NMS
    over a prefix of 4 x need candidates, growing fourfold until it yields ``need`` survivors or is whole."""
    if need <= 0 or order.numel() == 0:
        return order[:0]
    prefix = min(order.numel(), 4 * need)
    while True:
        survivors = order[:prefix][_nms_order(boxes[order[:prefix]], nms_thr)]
        if survivors.numel() >= need or prefix >= order.numel():
            return survivors
        prefix = min(order.numel(), 4 * prefix)
