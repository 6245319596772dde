"""FL and FL*: the paper's formulas, MMDetection/torchvision parity, closed-form gradients, numerics, the CPU kernel.

Float64 inputs run the PyTorch closed form (the C++ kernel computes in float32), so gradcheck and the float64 parity
tests exercise that path; the kernel is checked against it and against float64 references at float32 tolerances.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
from mmdet.registry import MODELS

import fltool_plugins  # noqa: F401  (registers the modules)
from fltool_plugins.losses import SigmoidFocalLoss, SigmoidFocalLossStar, functional, kernel_info
from fltool_plugins.losses.functional import (
    KERNEL_OPT_OUT,
    kernel_available,
    sigmoid_focal_loss,
    sigmoid_focal_loss_star,
)

# The kernel is part of the product on CPU: a failed build fails its tests (no skip), unless the user opted out of
# it with FLTOOL_NO_EXT=1, in which case the PyTorch fallback is what runs (tested below either way).
needs_kernel = pytest.mark.skipif(KERNEL_OPT_OUT, reason="FLTOOL_NO_EXT=1: the kernel is disabled on purpose")
BACKENDS = ["torch", pytest.param("kernel", marks=needs_kernel)]
GAMMAS = [0.0, 0.5, 1.0, 2.0, 5.0]


def make_batch(n=257, k=13, pos_fraction=0.2, scale=3.0, dtype=torch.float64, seed=0):
    """Logits (N, K), labels (N,) with background = K, the matching one-hot targets and per-anchor weights."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k, generator=g) * scale).to(dtype)
    labels = torch.randint(0, k, (n,), generator=g)
    labels[torch.rand(n, generator=g) > pos_fraction] = k  # background
    one_hot = F.one_hot(labels, k + 1)[:, :k].to(dtype)
    weight = torch.rand(n, generator=g).to(dtype)
    return logits, labels, one_hot, weight


def torchvision_fl(x, y, gamma, alpha):
    """torchvision.ops.sigmoid_focal_loss, written out (float targets, no reduction)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def paper_fl_star(x, y, gamma, beta, alpha):
    """Appendix A, directly: x_t = s x, p*_t = sigmoid(gamma x_t + beta), FL* = -alpha_t log(p*_t) / gamma."""
    s = 2 * y - 1
    p_star = torch.sigmoid(gamma * s * x + beta)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    return -alpha_t * torch.log(p_star) / gamma


def grad_of(fn, logits, *args, **kwargs):
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, *args, **kwargs)
    loss.sum().backward() if loss.dim() else loss.backward()
    return loss.detach(), x.grad


# ---------------------------------------------------------------------------------------------------------------------
# Parity with MMDetection and torchvision
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [0.25, 0.75])
def test_fl_matches_mmdet_py_sigmoid_focal_loss_in_float64(gamma, alpha):
    x, labels, one_hot, weight = make_batch()
    num_pos = float((labels < x.shape[1]).sum())
    ref = py_sigmoid_focal_loss(x, one_hot, weight, gamma=gamma, alpha=alpha, reduction="mean", avg_factor=num_pos)
    ours = sigmoid_focal_loss(x, labels, gamma=gamma, alpha=alpha, weight=weight, reduction="mean",
                              avg_factor=num_pos)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    ref_elem = py_sigmoid_focal_loss(x, one_hot, weight, gamma=gamma, alpha=alpha, reduction="none")
    ours_elem = sigmoid_focal_loss(x, labels, gamma=gamma, alpha=alpha, weight=weight, reduction="none")
    torch.testing.assert_close(ours_elem, ref_elem, rtol=1e-6, atol=1e-12)


@needs_kernel
@pytest.mark.parametrize("gamma", [0.0, 2.0, 5.0])
def test_kernel_float32_matches_mmdet_float64_reference(gamma):
    x, labels, one_hot, weight = make_batch(n=2000, k=80, pos_fraction=0.01)
    num_pos = float((labels < 80).sum())
    ref = py_sigmoid_focal_loss(x, one_hot, weight, gamma=gamma, alpha=0.25, reduction="mean", avg_factor=num_pos)
    ours = sigmoid_focal_loss(x.float(), labels, gamma=gamma, alpha=0.25, weight=weight.float(), reduction="mean",
                              avg_factor=num_pos, backend="kernel")
    assert ours.dtype == torch.float32
    assert abs(ours.double().item() - ref.item()) <= 1e-6 * abs(ref.item())


def test_module_matches_mmdet_focal_loss_module_on_cpu():
    # mmdet's FocalLoss is registered by the import of mmdet.models above (no default scope needed).
    x, labels, _, weight = make_batch(n=300, k=20, dtype=torch.float32)
    num_pos = float((labels < 20).sum())
    cfg = dict(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.5)
    theirs = MODELS.build(dict(type="FocalLoss", **cfg))
    ours = MODELS.build(dict(type="SigmoidFocalLoss", **cfg))
    ref = theirs(x.double(), labels, weight.double(), avg_factor=num_pos)  # mmdet's CPU path, in float64
    got = ours(x, labels, weight, avg_factor=num_pos)
    assert abs(got.double().item() - ref.item()) <= 1e-6 * abs(ref.item())
    torch.testing.assert_close(ours(x, labels, weight, reduction_override="none"),
                               theirs(x, labels, weight, reduction_override="none"), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_soft_targets_match_torchvision_formula(backend, gamma, alpha):
    x, _, _, _ = make_batch(n=100, k=7, scale=2.0)
    y = torch.rand(100, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = torchvision_fl(x, y, gamma, alpha)
    xin, yin = (x, y) if backend == "torch" else (x.float(), y.float())
    got = sigmoid_focal_loss(xin, yin, gamma=gamma, alpha=alpha, reduction="none", backend=backend)
    tol = 1e-6 if backend == "torch" else 1e-5
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=1e-7)
    assert abs(sigmoid_focal_loss(xin, yin, gamma=gamma, alpha=alpha, reduction="sum", backend=backend).item()
               - ref.sum().item()) <= (1e-9 if backend == "torch" else 1e-6) * ref.sum().item()


# ---------------------------------------------------------------------------------------------------------------------
# Gradients: closed forms against autograd through the naive formula, gradcheck, appendix B
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", GAMMAS)
def test_fl_gradient_matches_autograd_through_naive_formula(backend, gamma):
    x, labels, one_hot, weight = make_batch(scale=2.0)
    alpha = torch.linspace(0.1, 0.9, x.shape[1], dtype=torch.float64)
    _, ref = grad_of(lambda t: (torchvision_fl(t, one_hot, gamma, alpha) * weight[:, None]).sum(), x)
    dtype = torch.float64 if backend == "torch" else torch.float32
    _, got = grad_of(sigmoid_focal_loss, x.to(dtype), labels, gamma=gamma, alpha=alpha, weight=weight.to(dtype),
                     reduction="sum", backend=backend)
    torch.testing.assert_close(got.double(), ref, rtol=1e-9 if backend == "torch" else 2e-5,
                               atol=1e-12 if backend == "torch" else 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_soft_target_gradient_matches_autograd_through_naive_formula(backend, gamma):
    x, _, _, _ = make_batch(n=64, k=9, scale=2.0)
    y = torch.rand(64, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y[:8] = y[:8].round()  # some hard targets in the soft format
    _, ref = grad_of(lambda t: torchvision_fl(t, y, gamma, 0.25).sum(), x)
    dtype = torch.float64 if backend == "torch" else torch.float32
    _, got = grad_of(sigmoid_focal_loss, x.to(dtype), y.to(dtype), gamma=gamma, alpha=0.25, reduction="sum",
                     backend=backend)
    torch.testing.assert_close(got.double(), ref, rtol=1e-9 if backend == "torch" else 2e-5,
                               atol=1e-12 if backend == "torch" else 1e-6)


@pytest.mark.parametrize("alpha", [None, 0.25, "per_class"])
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("star", [False, True])
def test_gradcheck_float64_torch_path(alpha, with_weight, star):
    # float64 runs the PyTorch closed form (the kernel is float32-only); the kernel is compared with it below.
    x, labels, _, weight = make_batch(n=12, k=5, scale=2.0)
    if alpha == "per_class":
        alpha = [0.1, 0.3, 0.5, 0.7, 0.9]
    kwargs = dict(alpha=alpha, weight=weight if with_weight else None, reduction="sum")
    if star:
        fn = lambda t: sigmoid_focal_loss_star(t, labels, gamma=2.0, beta=1.0, **kwargs)  # noqa: E731
    else:
        fn = lambda t: sigmoid_focal_loss(t, labels, gamma=0.5, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),))
    y = torch.rand(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    soft = (lambda t: sigmoid_focal_loss_star(t, y, gamma=2.0, beta=1.0, **kwargs)) if star else \
        (lambda t: sigmoid_focal_loss(t, y, gamma=1.5, **kwargs))
    assert torch.autograd.gradcheck(soft, (x.clone().requires_grad_(),))
    none = lambda t: sigmoid_focal_loss(t, labels, gamma=2.0, alpha=alpha, reduction="none")  # noqa: E731
    assert torch.autograd.gradcheck(none, (x.clone().requires_grad_(),))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_fl_derivative_is_appendix_b_closed_form(backend, gamma):
    x = torch.linspace(-6, 6, 49, dtype=torch.float64)[:, None].repeat(1, 2)  # column 0: y = 1, column 1: y = 0
    labels = torch.zeros(49, dtype=torch.int64)
    s = torch.tensor([1.0, -1.0], dtype=torch.float64)
    p_t = torch.sigmoid(s * x)
    alpha_t = torch.tensor([0.25, 0.75], dtype=torch.float64)
    expected = s * (1 - p_t) ** gamma * (gamma * p_t * torch.log(p_t) + p_t - 1) * alpha_t
    dtype = torch.float64 if backend == "torch" else torch.float32
    _, got = grad_of(sigmoid_focal_loss, x.to(dtype), labels, gamma=gamma, alpha=0.25, reduction="sum",
                     backend=backend)
    torch.testing.assert_close(got.double(), expected, rtol=1e-9 if backend == "torch" else 1e-5,
                               atol=1e-12 if backend == "torch" else 1e-7)
    # Figure 6's shape: the gradient is negative for positives and positive for negatives, everywhere.
    assert (got[:, 0] < 0).all() and (got[:, 1] > 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma,beta", [(2.0, 1.0), (4.0, 0.0), (1.0, -0.5)])
def test_fl_star_matches_appendix_a_and_its_derivative(backend, gamma, beta):
    x, labels, one_hot, weight = make_batch(n=50, k=6, scale=1.5)
    dtype = torch.float64 if backend == "torch" else torch.float32
    loss, grad = grad_of(sigmoid_focal_loss_star, x.to(dtype), labels, gamma=gamma, beta=beta, alpha=0.25,
                         reduction="none", backend=backend)
    expected = paper_fl_star(x, one_hot, gamma, beta, 0.25)
    rtol = 1e-9 if backend == "torch" else 1e-5
    torch.testing.assert_close(loss.double(), expected, rtol=rtol, atol=1e-7)
    s = 2 * one_hot - 1
    p_star = torch.sigmoid(gamma * s * x + beta)
    alpha_t = 0.25 * one_hot + 0.75 * (1 - one_hot)
    torch.testing.assert_close(grad.double(), s * (p_star - 1) * alpha_t, rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fl_star_soft_target_is_bernoulli_expectation(backend):
    x, _, _, _ = make_batch(n=40, k=5, scale=2.0)
    y = torch.rand(40, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ones, zeros = torch.ones_like(y), torch.zeros_like(y)
    expected = y * paper_fl_star(x, ones, 2.0, 1.0, 0.25) + (1 - y) * paper_fl_star(x, zeros, 2.0, 1.0, 0.25)
    _, expected_grad = grad_of(lambda t: (y * paper_fl_star(t, ones, 2.0, 1.0, 0.25)
                                          + (1 - y) * paper_fl_star(t, zeros, 2.0, 1.0, 0.25)).sum(), x)
    dtype = torch.float64 if backend == "torch" else torch.float32
    loss, grad = grad_of(sigmoid_focal_loss_star, x.to(dtype), y.to(dtype), gamma=2.0, beta=1.0, alpha=0.25,
                         reduction="none", backend=backend)
    rtol = 1e-9 if backend == "torch" else 1e-5
    torch.testing.assert_close(loss.double(), expected, rtol=rtol, atol=1e-7)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=rtol, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------------
# Special cases of the formula
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_gamma_zero_is_alpha_balanced_ce_and_plain_bce_without_alpha(backend):
    x, labels, one_hot, _ = make_batch(n=80, k=11)
    dtype = torch.float64 if backend == "torch" else torch.float32
    bce = F.binary_cross_entropy_with_logits(x, one_hot, reduction="none")
    alpha_t = 0.75 * one_hot + 0.25 * (1 - one_hot)
    tol = dict(rtol=1e-9, atol=1e-12) if backend == "torch" else dict(rtol=1e-5, atol=1e-6)
    got = sigmoid_focal_loss(x.to(dtype), labels, gamma=0.0, alpha=0.75, backend=backend)
    torch.testing.assert_close(got.double(), alpha_t * bce, **tol)
    got = sigmoid_focal_loss(x.to(dtype), labels, gamma=0.0, alpha=None, backend=backend)
    torch.testing.assert_close(got.double(), bce, **tol)
    _, grad = grad_of(sigmoid_focal_loss, x.to(dtype), labels, gamma=0.0, alpha=None, reduction="sum",
                      backend=backend)
    torch.testing.assert_close(grad.double(), torch.sigmoid(x) - one_hot, **tol)  # dCE/dx = s (p_t - 1)


def test_fl_is_100x_below_ce_at_pt_0_9_with_gamma_2():
    # The paper's headline example: at p_t = 0.9 the modulating factor (1 - p_t)^2 = 0.01.
    x = torch.tensor([[math.log(9.0)]], dtype=torch.float64)  # sigmoid = 0.9 for the positive class
    labels = torch.tensor([0])
    fl = sigmoid_focal_loss(x, labels, gamma=2.0, alpha=None)
    ce = sigmoid_focal_loss(x, labels, gamma=0.0, alpha=None)
    assert fl.item() == pytest.approx(ce.item() / 100, rel=1e-12)
    assert ce.item() == pytest.approx(-math.log(0.9), rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# Numerics: extreme logits, low precision, ignored anchors
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("soft", [False, True])
def test_extreme_logits_give_finite_loss_and_gradient(backend, dtype, gamma, soft):
    x = torch.tensor([[-100.0, 100.0, -30.0, 30.0, 0.0, -88.0, 88.0, -104.0]] * 3, dtype=dtype)
    labels = torch.tensor([0, 1, 8])  # positive at -100, positive at +100, background
    targets = F.one_hot(labels, 9)[:, :8].to(dtype) if soft else labels
    for fn, kw in ((sigmoid_focal_loss, dict(gamma=gamma)), (sigmoid_focal_loss_star, dict(gamma=max(gamma, 0.5)))):
        loss, grad = grad_of(fn, x, targets, reduction="sum", backend=backend, **kw)
        assert loss.dtype == torch.promote_types(dtype, torch.float32) and grad.dtype == dtype
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        elem = fn(x, targets, reduction="none", backend=backend, **kw)
        assert torch.isfinite(elem).all()
    # A confident wrong answer costs ~100 (times alpha_t and the focal factor ~1); a confident right one ~0.
    elem = sigmoid_focal_loss(x.float(), targets.float() if soft else targets, gamma=gamma, reduction="none",
                              backend=backend)
    assert elem[0, 0].item() == pytest.approx(0.25 * 100.0, rel=1e-3)  # positive at x = -100
    assert elem[1, 1].item() < 1e-30  # positive at x = +100


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("soft", [False, True])
def test_half_precision_is_computed_in_float32(backend, soft):
    x, labels, one_hot, weight = make_batch(n=64, k=8, dtype=torch.float32)
    targets = one_hot.float() if soft else labels
    ref_loss, ref_grad = grad_of(sigmoid_focal_loss, x.half().float(), targets, weight=weight, reduction="sum",
                                 backend=backend)
    loss, grad = grad_of(sigmoid_focal_loss, x.half(), targets, weight=weight, reduction="sum", backend=backend)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float16  # the reduced value stays in fp32
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-3)
    torch.testing.assert_close(grad.float(), ref_grad, rtol=1e-3, atol=1e-4)
    elem = sigmoid_focal_loss(x.half(), targets, weight=weight, reduction="none", backend=backend)
    assert elem.dtype == torch.float16  # elementwise losses keep the logits' dtype


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("star", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_loss_whose_sum_exceeds_float16_stays_finite(backend, star, dtype):
    # A loss over many anchors x 80 classes: its sum passes float16's 65,504 before "mean" divides it by the number
    # of positives (found by scripts/gpu_check_ops.py on a GPU: the float16 sum of 20,000 x 80 losses was inf).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 80, generator=g) * 4
    labels = torch.randint(0, 81, (20000,), generator=g)
    fn, kw = (sigmoid_focal_loss_star, dict(gamma=2.0, beta=1.0)) if star else (sigmoid_focal_loss, dict(gamma=2.0))
    ref = fn(x.to(dtype).float(), labels, reduction="sum", backend=backend, **kw)
    assert ref.item() > 65504  # the case: a float16 sum would be inf
    for reduction, expect in (("sum", ref), ("mean", ref / (120 + 1e-6))):
        loss, grad = grad_of(fn, x.to(dtype), labels, reduction=reduction, avg_factor=120 if reduction == "mean"
                             else None, backend=backend, **kw)
        assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(grad).all()
        assert loss.item() == pytest.approx(expect.item(), rel=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("star", [False, True])
@pytest.mark.parametrize("weight_shape", ["row", "element"])
def test_ignored_anchors_contribute_nothing_even_at_extreme_logits(backend, star, weight_shape):
    x, labels, _, _ = make_batch(n=40, k=6, dtype=torch.float32)
    ignored = torch.zeros(40, dtype=torch.bool)
    ignored[::3] = True
    x_bad = x.clone()
    x_bad[ignored] = torch.tensor([100.0, -100.0, float("inf"), -float("inf"), 1e30, -1e30])
    row_weight = (~ignored).float()
    weight = row_weight if weight_shape == "row" else row_weight[:, None].expand(40, 6).contiguous()
    fn = sigmoid_focal_loss_star if star else sigmoid_focal_loss
    kwargs = dict(gamma=0.5, reduction="sum", backend=backend)
    loss, grad = grad_of(fn, x_bad, labels, weight=weight, **kwargs)
    kept_loss, kept_grad = grad_of(fn, x[~ignored], labels[~ignored], **kwargs)
    assert loss.item() == pytest.approx(kept_loss.item(), rel=1e-6)
    assert (grad[ignored] == 0).all()
    torch.testing.assert_close(grad[~ignored], kept_grad)
    elem = fn(x_bad, labels, weight=weight, gamma=0.5, reduction="none", backend=backend)
    assert (elem[ignored] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_mean_is_normalised_by_avg_factor_number_of_positives(backend):
    x, labels, _, weight = make_batch(n=500, k=10, pos_fraction=0.05, dtype=torch.float32)
    num_pos = int((labels < 10).sum())
    total = sigmoid_focal_loss(x, labels, weight=weight, reduction="sum", backend=backend)
    mean_pos = sigmoid_focal_loss(x, labels, weight=weight, reduction="mean", avg_factor=num_pos, backend=backend)
    mean_all = sigmoid_focal_loss(x, labels, weight=weight, reduction="mean", backend=backend)
    assert mean_pos.item() == pytest.approx(total.item() / (num_pos + torch.finfo(torch.float32).eps), rel=1e-6)
    assert mean_all.item() == pytest.approx(total.item() / (500 * 10), rel=1e-6)
    _, grad = grad_of(sigmoid_focal_loss, x, labels, weight=weight, reduction="mean", avg_factor=num_pos,
                      backend=backend)
    _, grad_sum = grad_of(sigmoid_focal_loss, x, labels, weight=weight, reduction="sum", backend=backend)
    torch.testing.assert_close(grad, grad_sum / num_pos)
    with pytest.raises(ValueError, match="avg_factor"):
        sigmoid_focal_loss(x, labels, reduction="sum", avg_factor=num_pos)


# ---------------------------------------------------------------------------------------------------------------------
# Targets, weights, alpha
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("star", [False, True])
def test_class_index_targets_equal_one_hot_targets(backend, star):
    x, labels, one_hot, weight = make_batch(n=97, k=21, dtype=torch.float32)
    fn = sigmoid_focal_loss_star if star else sigmoid_focal_loss
    kwargs = dict(gamma=2.0, alpha=0.25, weight=weight, backend=backend)
    loss_idx, grad_idx = grad_of(fn, x, labels, reduction="sum", **kwargs)
    loss_hot, grad_hot = grad_of(fn, x, one_hot.float(), reduction="sum", **kwargs)
    assert loss_idx.item() == pytest.approx(loss_hot.item(), rel=1e-6)
    torch.testing.assert_close(grad_idx, grad_hot, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fn(x, labels, reduction="none", **kwargs), fn(x, one_hot, reduction="none", **kwargs),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bad", [-1, 6, 100])
def test_labels_outside_zero_to_k_raise_value_error(bad):
    x = torch.zeros(4, 5)
    labels = torch.tensor([0, 5, 2, bad])
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        sigmoid_focal_loss(x, labels)


def test_bad_shapes_and_arguments_raise_value_error():
    x = torch.zeros(4, 5)
    labels = torch.tensor([0, 5, 2, 1])
    with pytest.raises(ValueError, match="shape"):
        sigmoid_focal_loss(x, labels[:3])
    with pytest.raises(ValueError, match="shape"):
        sigmoid_focal_loss(x, torch.zeros(4, 4))
    with pytest.raises(ValueError, match="weight"):
        sigmoid_focal_loss(x, labels, weight=torch.ones(3))
    with pytest.raises(ValueError, match="per-class alpha"):
        sigmoid_focal_loss(x, labels, alpha=[0.25, 0.5])
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, labels, reduction="avg")
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss(x, labels, gamma=-1.0)
    with pytest.raises(ValueError, match="gamma > 0"):
        sigmoid_focal_loss_star(x, labels, gamma=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_class_alpha_equals_scalar_when_equal_and_weights_each_class_otherwise(backend):
    x, labels, one_hot, _ = make_batch(n=120, k=4, dtype=torch.float32)
    scalar = sigmoid_focal_loss(x, labels, alpha=0.3, backend=backend)
    torch.testing.assert_close(sigmoid_focal_loss(x, labels, alpha=[0.3] * 4, backend=backend), scalar)
    per_class = torch.tensor([0.1, 0.3, 0.6, 0.9])
    got = sigmoid_focal_loss(x, labels, alpha=per_class, backend=backend)
    assert not torch.allclose(got, scalar)
    # Column k is the unweighted FL times alpha_k (positives) or 1 - alpha_k (negatives).
    plain = sigmoid_focal_loss(x, labels, alpha=None, backend=backend)
    alpha_t = one_hot.float() * per_class + (1 - one_hot.float()) * (1 - per_class)
    torch.testing.assert_close(got, plain * alpha_t, rtol=1e-6, atol=1e-8)
    assert torch.allclose(got[:, 1], scalar[:, 1])  # the class whose alpha matches the scalar


def test_weight_shapes_n_n1_nk_and_flat_agree():
    x, labels, _, weight = make_batch(n=30, k=7, dtype=torch.float32)
    full = weight[:, None].expand(30, 7).contiguous()
    ref = sigmoid_focal_loss(x, labels, weight=full, reduction="none")
    for w in (weight, weight[:, None], full.reshape(-1)):
        torch.testing.assert_close(sigmoid_focal_loss(x, labels, weight=w, reduction="none"), ref)


def test_gradient_flows_to_logits_only():
    x, labels, one_hot, weight = make_batch(n=8, k=3, dtype=torch.float32)
    with pytest.raises(ValueError, match="detach"):
        sigmoid_focal_loss(x, one_hot.float().requires_grad_())
    with pytest.raises(ValueError, match="detach"):
        sigmoid_focal_loss(x, labels, weight=weight.requires_grad_())


# ---------------------------------------------------------------------------------------------------------------------
# The C++ kernel against the PyTorch path
# ---------------------------------------------------------------------------------------------------------------------

# FL* divides by gamma, so its grid starts above 0.
LOSS_GAMMAS = [(False, g) for g in GAMMAS] + [(True, g) for g in GAMMAS if g > 0]


@needs_kernel
@pytest.mark.parametrize("star,gamma", LOSS_GAMMAS)
@pytest.mark.parametrize("target_kind", ["labels", "soft"])
@pytest.mark.parametrize("weight_kind", [None, "row", "element"])
def test_kernel_equals_torch_path(gamma, star, target_kind, weight_kind):
    n, k = 203, 19  # rows not a multiple of the kernel's block, columns not a multiple of the vector width
    x, labels, _, weight = make_batch(n=n, k=k, dtype=torch.float32, seed=int(gamma * 10))
    g = torch.Generator().manual_seed(5)
    targets = labels if target_kind == "labels" else torch.rand(n, k, generator=g)
    weights = {None: None, "row": weight, "element": torch.rand(n, k, generator=g)}[weight_kind]
    fn = sigmoid_focal_loss_star if star else sigmoid_focal_loss
    kwargs = dict(gamma=gamma, alpha=torch.rand(k, generator=g), weight=weights)
    if star:
        kwargs["beta"] = 0.5
    loss_k, grad_k = grad_of(fn, x, targets, reduction="mean", avg_factor=17, backend="kernel", **kwargs)
    loss_t, grad_t = grad_of(fn, x, targets, reduction="mean", avg_factor=17, backend="torch", **kwargs)
    assert loss_k.item() == pytest.approx(loss_t.item(), rel=1e-6)
    torch.testing.assert_close(grad_k, grad_t, rtol=1e-5, atol=1e-7)
    # reduction="none" with a non-uniform upstream gradient
    upstream = torch.randn(n, k, generator=g)
    xk, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    elem_k = fn(xk, targets, reduction="none", backend="kernel", **kwargs)
    elem_t = fn(xt, targets, reduction="none", backend="torch", **kwargs)
    torch.testing.assert_close(elem_k, elem_t, rtol=1e-5, atol=1e-7)
    elem_k.backward(upstream)
    elem_t.backward(upstream)
    torch.testing.assert_close(xk.grad, xt.grad, rtol=1e-5, atol=1e-7)


@needs_kernel
@pytest.mark.parametrize("k", [1, 3, 8, 80])
def test_kernel_handles_any_column_count(k):
    x, labels, _, weight = make_batch(n=70, k=k, dtype=torch.float32)
    for reduction in ("sum", "none"):
        loss_k, grad_k = grad_of(sigmoid_focal_loss, x, labels, weight=weight, reduction=reduction, backend="kernel")
        loss_t, grad_t = grad_of(sigmoid_focal_loss, x, labels, weight=weight, reduction=reduction, backend="torch")
        torch.testing.assert_close(loss_k, loss_t, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grad_k, grad_t, rtol=1e-5, atol=1e-7)


@needs_kernel
def test_kernel_sum_is_deterministic_across_thread_counts():
    x, labels, _, weight = make_batch(n=3000, k=80, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sigmoid_focal_loss(x, labels, weight=weight, reduction="sum", backend="kernel")
        torch.set_num_threads(max(2, threads))
        many = sigmoid_focal_loss(x, labels, weight=weight, reduction="sum", backend="kernel")
    finally:
        torch.set_num_threads(threads)
    assert one.item() == many.item()


@needs_kernel
def test_kernel_is_built_and_kernel_info_reports_its_isa():
    assert kernel_available(), f"the C++ kernel did not import: {functional._KERNEL_ERROR}; rebuild with " \
                               "`pip install --no-build-isolation -e .` (or opt out with FLTOOL_NO_EXT=1)"
    info = kernel_info()
    assert info["available"] is True and info["isa"] in ("avx512", "avx2", "default") and info["detail"]
    with pytest.raises(ValueError, match=r"\[0, 3\]"):  # same validation on the kernel path
        sigmoid_focal_loss(torch.zeros(2, 3), torch.tensor([0, 4]), backend="kernel")


class _SpyKernel:
    """Wraps the compiled module and records which of its entry points ran."""

    def __init__(self, ext):
        self.ext, self.calls = ext, []

    def __getattr__(self, name):
        target = getattr(self.ext, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            return target(*args, **kwargs)

        return call


@needs_kernel
@pytest.mark.parametrize("star", [False, True])
def test_auto_backend_dispatches_cpu_float32_to_the_kernel_and_float64_to_torch(monkeypatch, star):
    spy = _SpyKernel(functional._focal_ext)
    monkeypatch.setattr(functional, "_focal_ext", spy)
    loss_fn = sigmoid_focal_loss_star if star else sigmoid_focal_loss
    x, labels, _, weight = make_batch(n=64, k=5, dtype=torch.float32)
    x.requires_grad_(True)
    auto = loss_fn(x, labels, weight=weight, reduction="sum", backend="auto")
    auto.backward()
    assert spy.calls == ["forward_backward"]  # a reduced loss whose gradient follows: one pass, backward only scales
    reference = loss_fn(x.detach(), labels, weight=weight, reduction="sum", backend="torch")
    torch.testing.assert_close(auto.detach(), reference, rtol=1e-5, atol=1e-6)
    spy.calls.clear()
    loss_fn(x.detach().double(), labels, weight=weight.double(), reduction="sum", backend="auto")
    assert spy.calls == []  # float64 runs the PyTorch closed form (the kernel computes in float32)


def test_fltool_no_ext_opts_out_of_the_kernel_and_the_pytorch_fallback_trains(tmp_path):
    """FLTOOL_NO_EXT=1 at run time: no kernel, the same values from the PyTorch path, gradients through a module."""
    import json
    import os
    import subprocess
    import sys

    x, labels, _, weight = make_batch(n=200, k=7, dtype=torch.float32)
    torch.save({"x": x, "labels": labels, "weight": weight}, tmp_path / "batch.pt")
    script = (
        "import json, sys, torch\n"
        "from fltool_plugins.losses import kernel_info, SigmoidFocalLoss, SigmoidFocalLossStar\n"
        "from fltool_plugins.losses.functional import sigmoid_focal_loss, sigmoid_focal_loss_star\n"
        f"b = torch.load({str(tmp_path / 'batch.pt')!r})\n"
        "x = b['x'].clone().requires_grad_(True)\n"
        "fl = SigmoidFocalLoss(gamma=2.0, alpha=0.25)(x, b['labels'], b['weight'], avg_factor=10.0)\n"
        "fl.backward()\n"
        "star = sigmoid_focal_loss_star(b['x'], b['labels'], gamma=2.0, beta=1.0, reduction='sum')\n"
        "print(json.dumps({'info': kernel_info(), 'fl': fl.item(), 'star': star.item(),\n"
        "                  'grad_finite': bool(torch.isfinite(x.grad).all()),\n"
        "                  'grad_sum': x.grad.abs().sum().item()}))\n")
    env = dict(os.environ, FLTOOL_NO_EXT="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["info"]["available"] is False and "FLTOOL_NO_EXT=1" in out["info"]["detail"]
    expected_fl = sigmoid_focal_loss(x, labels, weight=weight, reduction="mean", avg_factor=10.0, backend="torch")
    expected_star = sigmoid_focal_loss_star(x, labels, gamma=2.0, beta=1.0, reduction="sum", backend="torch")
    assert out["fl"] == pytest.approx(expected_fl.item(), rel=1e-6)
    assert out["star"] == pytest.approx(expected_star.item(), rel=1e-6)
    assert out["grad_finite"] and out["grad_sum"] > 0


# ---------------------------------------------------------------------------------------------------------------------
# The kernel's instruction-set builds: each one this CPU runs, the choice between them, the fused pass, reused outputs
# ---------------------------------------------------------------------------------------------------------------------

AVX512_CPU = {"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True, "avx2": True, "fma3": True}
AVX2_CPU = {"avx2": True, "fma3": True, "avx512_f": False}


@needs_kernel
@pytest.mark.parametrize("isa", list(functional.KERNEL_BUILDS))
def test_each_kernel_build_the_cpu_runs_matches_the_pytorch_closed_form(isa):
    variants = functional.kernel_variants()
    if isa not in variants:
        pytest.skip(f"the {isa} build is not installed here or this CPU cannot run it")
    n, k = 203, 37  # rows not a multiple of a block, columns not a multiple of 8 or 16 lanes
    x, labels, _, weight = make_batch(n=n, k=k, dtype=torch.float32, seed=3)
    g = torch.Generator().manual_seed(7)
    soft, element_weight, upstream = torch.rand(n, k, generator=g), torch.rand(n, k, generator=g), torch.randn(n, k)
    losses = [(sigmoid_focal_loss, dict(gamma=gamma)) for gamma in (0.0, 0.5, 2.0, 3.0)]
    losses.append((sigmoid_focal_loss_star, dict(gamma=2.0, beta=1.0)))

    def value_and_grad(fn, targets, reduction, backend, **kw):
        xg = x.clone().requires_grad_()
        loss = fn(xg, targets, reduction=reduction, backend=backend, **kw)
        loss.backward(upstream if reduction == "none" else None)  # "mean": the fused pass, scaled in backward
        return loss.detach(), xg.grad

    with functional.using_kernel(variants[isa]):
        for fn, kw in losses:
            for targets, w in ((labels, weight), (soft, element_weight)):
                for reduction, avg in (("mean", 17.0), ("none", None)):
                    args = dict(kw, alpha=0.25, weight=w, avg_factor=avg)
                    loss_k, grad_k = value_and_grad(fn, targets, reduction, "kernel", **args)
                    loss_t, grad_t = value_and_grad(fn, targets, reduction, "torch", **args)
                    torch.testing.assert_close(loss_k, loss_t, rtol=1e-5, atol=1e-7)
                    torch.testing.assert_close(grad_k, grad_t, rtol=1e-5, atol=1e-7)


def test_kernel_isa_choice_takes_the_best_build_the_cpu_runs_and_only_lowers_it_on_request():
    choose = functional.kernel_isa_choice
    assert choose(AVX512_CPU, "AVX512", None)[0] == ["avx512", "avx2", "default"]
    assert choose(AVX2_CPU, "AVX2", None)[0] == ["avx2", "default"]
    assert choose({"avx2": True}, "DEFAULT", None)[0] == ["default"]  # AVX2 without FMA: the portable build
    assert choose({"sve": True}, "SVE256", None)[0] == ["default"]  # not x86: the portable build
    assert choose({}, "AVX2", None)[0] == ["avx2", "default"]  # an older torch without get_capabilities: ATen's level
    forced, why = choose(AVX512_CPU, "AVX512", "avx2")
    assert forced[0] == "avx2" and "FLTOOL_KERNEL_ISA=avx2" in why
    assert choose(AVX512_CPU, "AVX2", None)[0][0] == "avx2"  # ATEN_CPU_CAPABILITY=avx2 lowers it too
    raised, why = choose(AVX2_CPU, "AVX512", "avx512")  # never above what the CPU has
    assert raised[0] == "avx2" and "ignored" in why
    assert choose(AVX512_CPU, "AVX512", "sse")[0][0] == "avx512"


@needs_kernel
def test_a_cpu_without_avx512_never_loads_the_avx512_build(monkeypatch):
    imported = []
    real_import = functional._import_kernel
    without_avx512 = dict(torch.cpu.get_capabilities(), avx512_f=False)  # this CPU, less AVX-512 (never more)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: without_avx512)
    monkeypatch.setattr(functional, "_import_kernel", lambda isa: imported.append(isa) or real_import(isa))
    monkeypatch.delenv(functional.KERNEL_ISA_ENV, raising=False)
    module, why = functional._load_kernel()
    assert "avx512" not in functional.kernel_variants()
    assert "avx512" not in imported and module is not None
    assert module.isa() in ("avx2", "default") and ("not AVX-512" in why or "neither" in why)


@needs_kernel
def test_fltool_kernel_isa_avx2_runs_the_avx2_build_and_does_not_load_the_avx512_one(tmp_path):
    """On a CPU with AVX-512 the override forces the AVX2 build (its fallback path), checked in a fresh process."""
    import json
    import os
    import subprocess
    import sys

    if "avx2" not in functional.kernel_variants():
        pytest.skip("no AVX2 build here (not x86-64, or the CPU lacks AVX2 + FMA)")
    x, labels, _, weight = make_batch(n=300, k=80, dtype=torch.float32)
    torch.save({"x": x, "labels": labels, "weight": weight}, tmp_path / "batch.pt")
    # The child imports the losses' module alone, not the package's mmdet registrations: a few seconds less.
    script = (
        "import importlib.util, json, sys, types, torch\n"
        "root = importlib.util.find_spec('fltool_plugins').submodule_search_locations[0]\n"
        "for name, path in (('fltool_plugins', root), ('fltool_plugins.losses', root + '/losses')):\n"
        "    sys.modules[name] = types.ModuleType(name)\n"
        "    sys.modules[name].__path__ = [path]\n"
        "from fltool_plugins.losses.functional import kernel_info, sigmoid_focal_loss\n"
        f"b = torch.load({str(tmp_path / 'batch.pt')!r})\n"
        "x = b['x'].clone().requires_grad_(True)\n"
        "loss = sigmoid_focal_loss(x, b['labels'], weight=b['weight'], reduction='mean', avg_factor=7.0,\n"
        "                          backend='kernel')\n"
        "loss.backward()\n"
        "torch.save(x.grad, sys.argv[1])\n"
        "print(json.dumps({'info': kernel_info(), 'loss': loss.item(),\n"
        "                  'loaded': sorted(m for m in sys.modules if '_focal_ext' in m)}))\n")
    env = dict(os.environ, FLTOOL_KERNEL_ISA="avx2")
    env.pop("ATEN_CPU_CAPABILITY", None)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "grad.pt")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["info"]["isa"] == "avx2" and "FLTOOL_KERNEL_ISA=avx2" in out["info"]["detail"]
    assert out["loaded"] == ["fltool_plugins._focal_ext_avx2"]
    loss_t, grad_t = grad_of(sigmoid_focal_loss, x, labels, weight=weight, reduction="mean", avg_factor=7.0,
                             backend="torch")
    assert out["loss"] == pytest.approx(loss_t.item(), rel=1e-5)
    torch.testing.assert_close(torch.load(tmp_path / "grad.pt"), grad_t, rtol=1e-5, atol=1e-7)


@needs_kernel
def test_fused_gradient_is_scaled_once_and_a_second_backward_recomputes_it():
    x, labels, _, weight = make_batch(n=150, k=9, dtype=torch.float32)
    expected = grad_of(sigmoid_focal_loss, x, labels, weight=weight, reduction="mean", avg_factor=11.0,
                       backend="torch")[1]
    xk = x.clone().requires_grad_()
    loss = 3.0 * sigmoid_focal_loss(xk, labels, weight=weight, reduction="mean", avg_factor=11.0, backend="kernel")
    loss.backward(retain_graph=True)
    torch.testing.assert_close(xk.grad, 3.0 * expected, rtol=1e-5, atol=1e-7)
    xk.grad = None
    loss.backward()  # the fused gradient was handed over; this one comes from the backward pass
    torch.testing.assert_close(xk.grad, 3.0 * expected, rtol=1e-5, atol=1e-7)


@needs_kernel
def test_kernel_reuses_a_freed_output_buffer_and_never_one_still_in_use():
    ext = functional._focal_ext
    ext.release_pool()
    n, k = 4096, 80  # 1.3 MB: large enough for the kernel to keep for reuse
    x, labels, _, weight = make_batch(n=n, k=k, dtype=torch.float32)
    xk = x.clone().requires_grad_()

    def gradient():
        xk.grad = None
        sigmoid_focal_loss(xk, labels, weight=weight, reduction="sum", backend="kernel").backward()
        return xk.grad

    first = gradient()
    a, kept = first.data_ptr(), first.clone()
    b = gradient().data_ptr()  # `first` still holds its buffer: this one must be another
    assert b != a
    torch.testing.assert_close(first, kept, rtol=0, atol=0)
    del first
    xk.grad = None
    held = ext.pool_free_bytes()
    assert held == 2 * n * k * 4
    # a kept buffer, and moved into .grad by autograd without a copy
    assert gradient().data_ptr() in (a, b) and ext.pool_free_bytes() == held - n * k * 4
    torch.testing.assert_close(xk.grad, kept, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# MMDetection modules
# ---------------------------------------------------------------------------------------------------------------------

def test_modules_build_from_registry_and_honour_reduction_override_and_loss_weight():
    x, labels, _, weight = make_batch(n=50, k=6, dtype=torch.float32)
    fl = MODELS.build(dict(type="SigmoidFocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0))
    assert isinstance(fl, SigmoidFocalLoss) and fl.use_sigmoid is True
    ref_sum = sigmoid_focal_loss(x, labels, weight=weight, reduction="sum")
    assert fl(x, labels, weight, avg_factor=5).item() == pytest.approx(2.0 * ref_sum.item() / 5, rel=1e-6)
    assert fl(x, labels, weight, reduction_override="sum").item() == pytest.approx(2.0 * ref_sum.item(), rel=1e-6)
    assert fl(x, labels, weight, reduction_override="none").shape == (50, 6)
    star = MODELS.build(dict(type="SigmoidFocalLossStar", gamma=4.0, beta=0.0, alpha=[0.25] * 6, reduction="sum"))
    assert isinstance(star, SigmoidFocalLossStar) and star.use_sigmoid is True
    expected = sigmoid_focal_loss_star(x, labels, gamma=4.0, beta=0.0, alpha=0.25, reduction="sum")
    assert star(x, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert star(x, labels, reduction_override="mean").item() == pytest.approx(expected.item() / 300, rel=1e-6)
    with pytest.raises(ValueError, match="use_sigmoid"):
        SigmoidFocalLoss(use_sigmoid=False)
    with pytest.raises(KeyError):  # the names are ours; registering them again is refused
        MODELS.register_module(name="SigmoidFocalLoss", module=SigmoidFocalLoss)
