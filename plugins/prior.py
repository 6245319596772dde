"""The classification prior of the paper's section 4.1 ("Initialization").

The final classification conv's bias is set so that every anchor starts with foreground probability ``pi``:
``b = -log((1 - pi) / pi)``, i.e. ``sigmoid(b) = pi``. With pi = 0.01 the huge number of background anchors does not
produce a large, destabilising loss in the first iteration.
"""
import math

__all__ = ["bias_prior"]


def bias_prior(prior_prob: float) -> float:
    """Bias b with sigmoid(b) = prior_prob: ``b = -log((1 - pi) / pi)`` (pi = 0.01 gives -log(99) ~ -4.595)."""
    pi = float(prior_prob)
    if not 0.0 < pi < 1.0:
        raise ValueError(f"prior_prob must lie strictly between 0 and 1, got {prior_prob!r}")
    return -math.log((1.0 - pi) / pi)
