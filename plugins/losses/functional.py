"""Sigmoid Focal Loss (FL) and FL* as pure functions (Lin et al., "Focal Loss for Dense Object Detection", 2017).

Per anchor and class, with x the logit, y the target, s = +1 for y = 1 and -1 for y = 0, x_t = s x, p_t = sigmoid(x_t):

    FL(p_t)  = -alpha_t (1 - p_t)^gamma log(p_t)
    dFL/dx   = s alpha_t (1 - p_t)^gamma (gamma p_t log p_t + p_t - 1)
    FL*(x_t) = -alpha_t log(p*_t) / gamma,  p*_t = sigmoid(gamma x_t + beta)
    dFL*/dx  = s alpha_t (p*_t - 1)

with alpha_t = alpha for y = 1 and 1 - alpha for y = 0 (per class when alpha is a vector, 1 when alpha is None).
Both are computed from the logit in log-space: -log p_t = softplus(-x_t), -log(1 - p_t) = softplus(x_t), and
(1 - p_t)^gamma = exp(-gamma softplus(x_t)) = sigmoid(-x_t)^gamma; nothing takes the log of a rounded probability or
forms 1 - p from a rounded p, and (1 - p_t)^(gamma - 1) is never formed, so loss and gradient are finite for any
finite logit and any gamma >= 0.

The gradient is the closed form of the paper's appendix B (an autograd Function, not autograd through temporaries).
On CPU it runs the fused C++ kernel, the build for the best instruction set the CPU has (``_focal_ext_avx512``,
``_focal_ext_avx2`` or the portable ``_focal_ext``; see :func:`kernel_info`): one pass forward, one pass backward, and
for a reduced loss whose gradient autograd will need, one pass computing both (backward then only scales it); a
reduced loss under no_grad never materialises an (N, K) tensor. Elsewhere, or without the kernel, the same closed
forms in PyTorch.

Targets are class indices (N,) with background = K (what MMDetection's heads pass) or float (N, K) one-hot/soft
targets in [0, 1]. For soft targets FL is the torchvision/MMDetection formula
``ce(x, y) * (1 - p_t)^gamma * alpha_t`` with ``p_t = p y + (1 - p)(1 - y)``,
``alpha_t = alpha y + (1 - alpha)(1 - y)``; its derivative is ``alpha_t q^gamma (gamma r (1 - 2y) ce + p - y)``
with q = 1 - p_t and ``r = p (1 - p) / q``, which is appendix B for y in {0, 1} (r = p_t there). FL* of a soft target
is the expectation over a Bernoulli(y) target, ``y FL*(s = +1) + (1 - y) FL*(s = -1)``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from typing import Any, Literal, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

#: Users who cannot build the kernel opt out with FLTOOL_NO_EXT=1 (at build and at run time): the losses then run
#: their PyTorch closed forms. Without the opt-out a missing kernel is a broken install, which the tests report.
KERNEL_OPT_OUT = os.environ.get("FLTOOL_NO_EXT") == "1"

#: The kernel's builds (setup.py), best first: instruction set -> module in fltool_plugins. The x86 ones exist on
#: x86-64 only; the portable at::vec build everywhere.
KERNEL_BUILDS = {"avx512": "_focal_ext_avx512", "avx2": "_focal_ext_avx2", "default": "_focal_ext"}
#: What each build needs of the CPU (torch.cpu.get_capabilities() names): at::vec's AVX-512 code uses F, BW, VL, DQ.
_KERNEL_NEEDS = {"avx512": ("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq", "fma3"), "avx2": ("avx2", "fma3"),
                 "default": ()}
#: FLTOOL_KERNEL_ISA=avx2 (or default) caps the build below the best the CPU runs, to compare or test them; so does
#: ATEN_CPU_CAPABILITY=avx2|default, which lowers torch's own kernels too. Neither raises it above what the CPU has.
KERNEL_ISA_ENV = "FLTOOL_KERNEL_ISA"


def kernel_isa_choice(capabilities: dict, aten_capability: str, requested: Optional[str]) -> tuple[list, str]:
    """The kernel builds this CPU may run, best first, and why the first: those whose features the CPU has
    (``capabilities``: torch.cpu.get_capabilities()), at most ATen's own level (``aten_capability``:
    torch.backends.cpu.get_cpu_capability(), which honours ATEN_CPU_CAPABILITY) and at most ``requested``
    (FLTOOL_KERNEL_ISA, or None)."""
    order = list(KERNEL_BUILDS)
    aten = aten_capability.lower() if aten_capability.lower() in order else "default"  # e.g. SVE256 -> portable
    if capabilities:
        best = next(isa for isa in order if all(capabilities.get(flag, False) for flag in _KERNEL_NEEDS[isa]))
        reason = {"avx512": "the CPU has AVX-512", "avx2": "the CPU has AVX2 + FMA, not AVX-512",
                  "default": "the CPU has neither AVX2 + FMA nor AVX-512"}[best]
    else:  # a torch without get_capabilities: ATen's own detection
        best, reason = aten, f"ATen detects {aten_capability}"
    if order.index(aten) > order.index(best):
        best = aten
        reason += f"; ATen runs {aten_capability} (ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '')})"
    if requested:
        wanted = requested.strip().lower()
        if wanted not in order:
            reason += f"; {KERNEL_ISA_ENV}={requested} ignored (not one of {', '.join(order)})"
        elif order.index(wanted) < order.index(best):
            reason += f"; {KERNEL_ISA_ENV}={requested} ignored (more than the CPU runs)"
        elif wanted != best:
            best, reason = wanted, f"{reason}; {KERNEL_ISA_ENV}={requested}"
    return order[order.index(best):], reason


def _import_kernel(isa: str) -> Any:
    return importlib.import_module(f"..{KERNEL_BUILDS[isa]}", __package__)


def _load_kernel() -> tuple[Any, str]:
    """The best kernel build this CPU runs (falling back to the next where one is not built) and a line saying why."""
    if KERNEL_OPT_OUT:
        return None, "disabled by FLTOOL_NO_EXT=1 (the losses run their PyTorch closed forms)"
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    candidates, reason = kernel_isa_choice(capabilities, torch.backends.cpu.get_cpu_capability(),
                                           os.environ.get(KERNEL_ISA_ENV))
    missing = []
    for isa in candidates:
        try:
            module = _import_kernel(isa)
        except ImportError as err:  # not built (e.g. AVX-512 by a compiler without it), or built for another torch
            missing.append(f"{isa}: {type(err).__name__}: {err}")
            continue
        if not hasattr(module, "forward_backward"):  # a build of an older source, left in place
            missing.append(f"{isa}: built from an older source, rebuild it (pip install --no-build-isolation -e .)")
            continue
        return module, reason + (f"; not importable: {'; '.join(missing)}" if missing else "")
    return None, "; ".join(missing)


_focal_ext, _KERNEL_CHOICE = _load_kernel()
_KERNEL_ERROR: Optional[str] = None if _focal_ext is not None else _KERNEL_CHOICE

__all__ = ["sigmoid_focal_loss", "sigmoid_focal_loss_star", "kernel_available", "kernel_info", "kernel_variants",
           "using_kernel", "Reduction", "Implementation", "Alpha"]

Reduction = Literal["none", "mean", "sum"]
Implementation = Literal["auto", "kernel", "torch"]  # the C++ kernel, PyTorch, or the kernel where it runs
Alpha = Union[None, float, Sequence[float], Tensor]

_EPS = torch.finfo(torch.float32).eps  # MMDetection's guard in loss.sum() / (avg_factor + eps)


def kernel_available() -> bool:
    """Whether the compiled CPU kernel imported."""
    return _focal_ext is not None


def kernel_info() -> dict:
    """Whether the compiled CPU kernel imported, the ISA of the build in use ("avx512", "avx2", "default"), a detail
    line (vector width, threads, and why this build: what the CPU has and any override), and the builds installed."""
    built = [isa for isa, module in KERNEL_BUILDS.items()
             if importlib.util.find_spec(f"..{module}", __package__) is not None]  # found, not loaded
    if _focal_ext is None:
        return {"available": False, "isa": "none", "detail": _KERNEL_ERROR or "not built", "built": built}
    return {"available": True, "isa": _focal_ext.isa(), "detail": f"{_focal_ext.build_detail()}; {_KERNEL_CHOICE}",
            "built": built}


def kernel_variants() -> dict:
    """Every installed kernel build this CPU runs, best first, loaded ({"avx512": module, "avx2": module, ...}): for
    benchmarks and tests that compare them. A build the CPU lacks is never loaded."""
    if KERNEL_OPT_OUT:
        return {}
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    candidates, _ = kernel_isa_choice(capabilities, "avx512", None)  # the hardware's limit, not the overrides
    variants = {}
    for isa in candidates:
        try:
            module = _import_kernel(isa)
        except ImportError:
            continue
        if hasattr(module, "forward_backward"):  # not a build of an older source
            variants[isa] = module
    return variants


@contextlib.contextmanager
def using_kernel(module: Any):
    """Run the losses' kernel path on ``module`` (one of :func:`kernel_variants`) inside the block."""
    global _focal_ext
    saved, _focal_ext = _focal_ext, module
    try:
        yield module
    finally:
        _focal_ext = saved


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, *, gamma: float = 2.0, alpha: Alpha = 0.25,
                       weight: Optional[Tensor] = None, reduction: Reduction = "none",
                       avg_factor: Optional[Union[float, Tensor]] = None, backend: Implementation = "auto") -> Tensor:
    """Sigmoid Focal Loss FL = -alpha_t (1 - p_t)^gamma log(p_t), computed from logits.

    Args:
        logits: (N, K) class logits, any floating dtype. fp16/bf16 are computed in fp32; "none" returns their dtype,
            "sum" and "mean" a float32 value, as PyTorch's autocast does for losses: under --amp the head's logits
            are float16, and a float16 sum over many anchors overflows at 65,504 before "mean" divides it.
        targets: (N,) int64 class indices with background = K, or (N, K) float targets in [0, 1].
        gamma: focusing parameter, >= 0 (gamma = 0 gives alpha-balanced cross entropy).
        alpha: None (no alpha weighting), a float, or K per-class values (alpha_t = alpha_k for y = 1,
            1 - alpha_k for y = 0).
        weight: None, (N,), (N, 1) or (N, K) per-element weights (an element of weight 0 contributes exactly 0).
        reduction: "none" -> (N, K); "sum"; "mean" -> sum / (avg_factor + eps) if avg_factor is given (MMDetection's
            normalisation by the number of positive anchors), else the mean over all N * K elements.
        avg_factor: the normaliser of "mean" (ignored by "none", an error with "sum", as in MMDetection).
        backend: "auto" (the C++ kernel for CPU float16/bfloat16/float32 when built, PyTorch otherwise), "kernel"
            (always the kernel, which computes in float32), or "torch" (the PyTorch closed form).
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    spec = _LossSpec(star=False, gamma=float(gamma), beta=0.0)
    return _focal(logits, targets, spec, alpha, weight, reduction, avg_factor, backend)


def sigmoid_focal_loss_star(logits: Tensor, targets: Tensor, *, gamma: float = 1.0, beta: float = 0.0,
                            alpha: Alpha = 0.25, weight: Optional[Tensor] = None, reduction: Reduction = "none",
                            avg_factor: Optional[Union[float, Tensor]] = None,
                            backend: Implementation = "auto") -> Tensor:
    """FL* of appendix A: FL* = -alpha_t log(sigmoid(gamma x_t + beta)) / gamma, with x_t = s x.

    Same arguments as :func:`sigmoid_focal_loss` plus ``beta``; ``gamma`` must be > 0. For soft targets y in [0, 1]
    the loss is the expectation over a Bernoulli(y) target: y FL*(s = +1) + (1 - y) FL*(s = -1).
    """
    if not gamma > 0:
        raise ValueError(f"FL* needs gamma > 0 (it divides by gamma), got {gamma}")
    spec = _LossSpec(star=True, gamma=float(gamma), beta=float(beta))
    return _focal(logits, targets, spec, alpha, weight, reduction, avg_factor, backend)


# ---------------------------------------------------------------------------------------------------------------------
# Argument handling
# ---------------------------------------------------------------------------------------------------------------------

class _LossSpec(NamedTuple):
    star: bool
    gamma: float
    beta: float


class _AlphaSpec(NamedTuple):
    use_alpha: bool
    scalar: float  # when per_class is None
    per_class: Optional[Tensor]  # (K,) in the compute dtype, on the logits' device


def _focal(logits: Tensor, targets: Tensor, spec: _LossSpec, alpha: Alpha, weight: Optional[Tensor],
           reduction: str, avg_factor: Optional[Union[float, Tensor]], backend: str) -> Tensor:
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f'reduction must be "none", "mean" or "sum", got {reduction!r}')
    if avg_factor is not None and reduction == "sum":
        raise ValueError('avg_factor can not be used with reduction="sum"')
    if backend not in ("auto", "kernel", "torch"):
        raise ValueError(f'backend must be "auto", "kernel" or "torch", got {backend!r}')
    if logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating (N, K) tensor, got {tuple(logits.shape)} {logits.dtype}")
    for name, tensor in (("targets", targets), ("weight", weight)):
        if tensor is not None and tensor.requires_grad:
            raise ValueError(f"the focal loss differentiates w.r.t. the logits only; detach {name}")
    n, k = logits.shape

    use_kernel = backend == "kernel" or (
        backend == "auto" and logits.device.type == "cpu" and logits.dtype != torch.float64 and _focal_ext is not None)
    if use_kernel and (_focal_ext is None or logits.device.type != "cpu"):
        raise RuntimeError(f"the focal-loss kernel runs on CPU only and must be built ({_KERNEL_ERROR or 'ok'})")
    compute_dtype = torch.float32 if use_kernel or logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype

    targets = _check_targets(targets, n, k, compute_dtype)
    weight = _check_weight(weight, n, k, compute_dtype)
    alpha_spec = _check_alpha(alpha, k, logits.device, compute_dtype)

    summed = reduction != "none"
    grad_follows = torch.is_grad_enabled() and logits.requires_grad  # (inside forward, grad mode is off)
    loss = _FocalFunction.apply(logits, targets, weight, alpha_spec, spec, summed, use_kernel, grad_follows)
    if reduction == "mean":
        denom = n * k if avg_factor is None else avg_factor + _EPS
        loss = loss / denom
    return loss


def _check_targets(targets: Tensor, n: int, k: int, dtype: torch.dtype) -> Tensor:
    if targets.is_floating_point() or targets.dtype == torch.bool:
        if targets.shape != (n, k):
            raise ValueError(f"float targets must have the logits' shape {(n, k)}, got {tuple(targets.shape)}")
        return targets.to(dtype).contiguous()
    if targets.shape != (n,):
        raise ValueError(f"class-index targets must have shape ({n},), got {tuple(targets.shape)}")
    if n > 0:
        low, high = torch.aminmax(targets)
        low, high = int(low), int(high)
        if low < 0 or high > k:
            raise ValueError(f"class-index targets must lie in [0, {k}] ({k} = background for {k} classes), "
                             f"got values in [{low}, {high}]")
    return targets.to(torch.int64).contiguous()


def _check_weight(weight: Optional[Tensor], n: int, k: int, dtype: torch.dtype) -> Optional[Tensor]:
    if weight is None:
        return None
    if weight.shape in ((n,), (n, 1)):
        return weight.reshape(n, 1).to(dtype).contiguous()  # per anchor
    if weight.shape == (n, k) or (weight.dim() == 1 and weight.numel() == n * k):
        return weight.reshape(n, k).to(dtype).contiguous()  # per element (flattened as MMDetection's FSAF passes it)
    raise ValueError(f"weight must have shape ({n},), ({n}, 1) or ({n}, {k}), got {tuple(weight.shape)}")


def _check_alpha(alpha: Alpha, k: int, device: torch.device, dtype: torch.dtype) -> _AlphaSpec:
    if alpha is None:
        return _AlphaSpec(False, 1.0, None)
    if isinstance(alpha, (int, float)) or (isinstance(alpha, Tensor) and alpha.dim() == 0):
        return _AlphaSpec(True, float(alpha), None)
    per_class = torch.as_tensor(alpha, dtype=dtype, device=device).reshape(-1)
    if per_class.numel() != k:
        raise ValueError(f"per-class alpha needs one value per class ({k}), got {per_class.numel()}")
    return _AlphaSpec(True, 0.0, per_class.contiguous())


# ---------------------------------------------------------------------------------------------------------------------
# The autograd Function: kernel or PyTorch closed forms
# ---------------------------------------------------------------------------------------------------------------------

class _FocalFunction(torch.autograd.Function):
    """Loss (per element, or its sum) in forward; the closed-form derivative in backward. On the kernel, a reduced loss
    whose gradient will be needed gets it from the forward's pass (the two share every exp and log, and the logits are
    read once); backward then only scales it by grad_output, and not at all where that is 1."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, weight: Optional[Tensor], alpha: _AlphaSpec, spec: _LossSpec,
                summed: bool, use_kernel: bool, grad_follows: bool) -> Tensor:
        ctx.alpha, ctx.spec, ctx.summed, ctx.use_kernel = alpha, spec, summed, use_kernel
        ctx.kernel, ctx.fused_grad = _focal_ext, None  # the build that ran forward runs backward
        ctx.save_for_backward(logits, targets, weight)
        if use_kernel:
            args = (logits.float().contiguous(), targets, _or_empty(weight), _or_empty(alpha.per_class), alpha.scalar,
                    alpha.use_alpha, spec.gamma, spec.beta, spec.star)
            if summed and grad_follows:
                loss, ctx.fused_grad = _focal_ext.forward_backward(*args, 1.0)
            else:
                loss = _focal_ext.forward(*args, summed)
        else:
            loss = _torch_loss(logits.to(_compute_dtype(logits)), targets, weight, alpha, spec)
            if summed:
                loss = loss.sum()
        # A reduced loss stays in the compute dtype (fp32 for fp16/bf16 logits), not cast back: a float16 sum overflows.
        return loss.to(_compute_dtype(logits) if summed else logits.dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        logits, targets, weight = ctx.saved_tensors
        alpha, spec = ctx.alpha, ctx.spec
        if ctx.fused_grad is not None:
            grad, ctx.fused_grad = ctx.fused_grad, None  # handed over once; a second backward recomputes
            scale = float(grad_output)
            if scale != 1.0:
                grad.mul_(scale)
        elif ctx.use_kernel:
            if ctx.summed:
                go, scale = None, float(grad_output)
            else:
                go, scale = grad_output.float().contiguous(), 1.0
            grad = ctx.kernel.backward(logits.float().contiguous(), targets, _or_empty(weight),
                                       _or_empty(alpha.per_class), alpha.scalar, alpha.use_alpha, spec.gamma,
                                       spec.beta, spec.star, _or_empty(go), scale)
        else:
            grad = _torch_grad(logits.to(_compute_dtype(logits)), targets, weight, alpha, spec)
            grad.mul_(grad_output.to(grad.dtype))
        return grad.to(logits.dtype), None, None, None, None, None, None, None


def _compute_dtype(logits: Tensor) -> torch.dtype:
    return torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype


def _or_empty(tensor: Optional[Tensor]) -> Tensor:
    return torch.empty(0) if tensor is None else tensor


def _alpha_pos_neg(alpha: _AlphaSpec, dtype: torch.dtype):
    """(alpha_t for y = 1, alpha_t for y = 0) as floats or (K,) tensors; (1, 1) without alpha."""
    if not alpha.use_alpha:
        return 1.0, 1.0
    if alpha.per_class is not None:
        a = alpha.per_class.to(dtype)
        return a, 1 - a
    return alpha.scalar, 1.0 - alpha.scalar


def _signed(x: Tensor, pos: Tensor) -> Tensor:
    """x_t = s x (s = +1 where pos, -1 elsewhere) in one new buffer."""
    x_t = torch.neg(x)
    return torch.where(pos, x, x_t, out=x_t)


def _tensor(value: Union[float, Tensor], like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _apply_weight(value: Tensor, weight: Optional[Tensor]) -> Tensor:
    """value * weight in place, with elements of weight 0 set to exactly 0 (also where value is inf or NaN)."""
    if weight is not None:
        value.mul_(weight).masked_fill_(weight == 0, 0.0)
    return value


def _torch_loss(x: Tensor, targets: Tensor, weight: Optional[Tensor], alpha: _AlphaSpec, spec: _LossSpec) -> Tensor:
    """Weighted element loss (N, K) in PyTorch, from the logits.

    Class-index targets peak at two (N, K) buffers (plus a bool mask): in-place ops and ``out=`` reuse them.
    (1 - p_t)^gamma is sigmoid(-x_t)^gamma: sigmoid(-x_t) keeps its relative precision down to underflow.
    """
    a_pos, a_neg = _alpha_pos_neg(alpha, x.dtype)
    gamma = spec.gamma
    if targets.dtype == torch.int64:
        pos = targets[:, None] == torch.arange(x.shape[1], device=x.device)  # (N, K) bool: y = 1
        buf = _signed(x, pos)  # x_t = s x
        if spec.star:
            loss = F.softplus(buf.mul_(-gamma).sub_(spec.beta)).div_(gamma)  # -log(p*_t) / gamma = softplus(-z) / gamma
        else:
            loss = F.softplus(buf.neg_())  # ce = -log(p_t) = softplus(-x_t)
            if gamma != 0:
                loss.mul_(buf.sigmoid_().pow_(gamma))  # (1 - p_t)^gamma, 1 - p_t = sigmoid(-x_t)
        if alpha.use_alpha:
            loss.mul_(torch.where(pos, _tensor(a_pos, x), _tensor(a_neg, x), out=buf))
    else:
        y = targets
        if spec.star:
            gx = x * gamma
            loss = F.softplus(-(gx + spec.beta)).mul_(y * a_pos)  # s = +1
            loss.add_(F.softplus(gx.sub_(spec.beta)).mul_((1 - y) * a_neg))  # s = -1
            loss.div_(gamma)
        else:
            loss = _soft_ce(x, y)
            if gamma != 0:
                loss.mul_(_soft_q(x, y).pow_(gamma))
            if alpha.use_alpha:
                loss.mul_(y * a_pos + (1 - y) * a_neg)
    return _apply_weight(loss, weight)


def _soft_ce(x: Tensor, y: Tensor) -> Tensor:
    """Cross entropy y softplus(-x) + (1 - y) softplus(x); unlike softplus(x) - x y it does not cancel at large |x|."""
    return F.softplus(-x).mul_(y).add_(F.softplus(x).mul_(1 - y))


def _soft_q(x: Tensor, y: Tensor) -> Tensor:
    """q = 1 - p_t = p (1 - y) + (1 - p) y, with 1 - p evaluated as sigmoid(-x)."""
    return torch.sigmoid(x).mul_(1 - y).add_(torch.sigmoid(-x).mul_(y))


def _torch_grad(x: Tensor, targets: Tensor, weight: Optional[Tensor], alpha: _AlphaSpec, spec: _LossSpec) -> Tensor:
    """d(weighted element loss)/dx (N, K) in PyTorch: the closed forms of appendix B.

    Class-index targets peak at three (N, K) buffers (plus a bool mask), the returned gradient included.
    """
    a_pos, a_neg = _alpha_pos_neg(alpha, x.dtype)
    gamma = spec.gamma
    if targets.dtype == torch.int64:
        pos = targets[:, None] == torch.arange(x.shape[1], device=x.device)
        x_t = _signed(x, pos)
        if spec.star:
            grad = x_t.mul_(-gamma).sub_(spec.beta).sigmoid_()  # 1 - p*_t = sigmoid(-z)
            x_t = torch.empty_like(grad)
        else:
            # (1 - p_t)^gamma (gamma p_t ce + 1 - p_t), ce = -log p_t; times -s alpha_t below
            q = torch.neg(x_t).sigmoid_()  # 1 - p_t
            if gamma == 0:
                grad = q
            else:
                grad = F.softplus(x_t.neg_())  # ce = softplus(-x_t); x_t's buffer now holds -x_t
                grad.mul_(x_t.neg_().sigmoid_()).mul_(gamma)  # gamma p_t ce; x_t's buffer now holds p_t
                grad.add_(q).mul_(q.pow_(gamma))
            del q
        # times -s alpha_t (-alpha for y = 1, 1 - alpha for y = 0), written into x_t's buffer
        grad.mul_(torch.where(pos, _tensor(-a_pos, x), _tensor(a_neg, x), out=x_t))
    else:
        y = targets
        if spec.star:
            gx = x * gamma
            grad = torch.sigmoid(gx - spec.beta).mul_((1 - y) * a_neg)           # s = -1: sigmoid(-z)
            grad.sub_(torch.sigmoid(gx.add_(spec.beta).neg_()).mul_(y * a_pos))  # s = +1: -sigmoid(-z)
        else:
            grad = torch.sigmoid(x).sub_(y)  # p - y
            if gamma != 0:
                q = _soft_q(x, y)
                ratio = torch.sigmoid(x).mul_(torch.sigmoid(-x)).div_(q.clamp(min=torch.finfo(x.dtype).tiny))  # r
                ratio.mul_(1 - 2 * y).mul_(gamma).mul_(_soft_ce(x, y))
                grad.add_(ratio)
                del ratio
                grad.mul_(q.pow_(gamma))
            if alpha.use_alpha:
                grad.mul_(y * a_pos + (1 - y) * a_neg)
    return _apply_weight(grad, weight)
