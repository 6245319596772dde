"""The classification bias prior of section 4.1: b = -log((1 - pi) / pi)."""
import math

import pytest
import torch

from fltool_plugins.prior import bias_prior


def test_bias_prior_of_0_01_is_minus_log_99():
    assert bias_prior(0.01) == pytest.approx(-math.log(99.0), rel=1e-15)


@pytest.mark.parametrize("pi", [1e-6, 0.01, 0.3, 0.5, 0.9])
def test_sigmoid_of_bias_prior_is_the_prior(pi):
    assert torch.sigmoid(torch.tensor(bias_prior(pi), dtype=torch.float64)).item() == pytest.approx(pi, rel=1e-12)


@pytest.mark.parametrize("pi", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bias_prior_outside_open_unit_interval_raises(pi):
    with pytest.raises(ValueError, match="prior_prob"):
        bias_prior(pi)
