"""GPU check of the ops fltool runs on CUDA: its focal losses (the PyTorch form; the fused C++ kernel is CPU only),
MMCV's compiled CUDA ops that RetinaNet and OHEM call (nms, sigmoid_focal_loss), and OHEM's anchor selection.

Each check compares the CUDA result with the CPU one (fltool's C++ kernel, MMCV's CPU ops) on the same random
inputs and prints one line: PASS/FAIL, the largest difference and its tolerance. Exit status 1 if any check fails.
Run by scripts/gpu_check.sh on a machine with a CUDA build of torch and MMCV built with its CUDA ops.
"""
from __future__ import annotations

import os
import sys

import torch

# GPU_CHECK_DEVICE=cpu dry-runs the script on a machine without a GPU (each check then compares CPU with CPU).
DEV = os.environ.get("GPU_CHECK_DEVICE", "cuda")

failures: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float(((a - b).abs() / (b.abs() + 1e-6)).max())


def focal_losses() -> None:
    from fltool_plugins.losses.functional import kernel_available, sigmoid_focal_loss, sigmoid_focal_loss_star

    check("fltool's CPU focal-loss kernel built", kernel_available(), f"kernel_available() = {kernel_available()}")
    g = torch.Generator().manual_seed(0)
    n, k = 20000, 80
    logits = torch.randn(n, k, generator=g) * 4
    targets = torch.randint(0, k + 1, (n,), generator=g)  # k = background
    weight = (torch.rand(n, generator=g) > 0.1).float()
    for name, fn, kw in (("FL gamma 2 alpha 0.25", sigmoid_focal_loss, dict(gamma=2.0, alpha=0.25)),
                         ("FL gamma 0.5 no alpha", sigmoid_focal_loss, dict(gamma=0.5, alpha=None)),
                         ("FL* gamma 2 beta 1", sigmoid_focal_loss_star, dict(gamma=2.0, beta=1.0))):
        grads = []
        values = []
        for device in ("cpu", DEV):
            x = logits.detach().clone().to(device).requires_grad_(True)
            loss = fn(x, targets.to(device), weight=weight.to(device), reduction="sum", **kw)
            loss.backward()
            values.append(loss.detach())
            grads.append(x.grad)
        loss_diff, grad_diff = max_rel(values[1], values[0]), float((grads[1].cpu() - grads[0]).abs().max())
        check(f"{name}: CUDA (PyTorch form) = CPU (kernel), loss and gradient", loss_diff < 1e-5 and grad_diff < 1e-5,
              f"loss rel diff {loss_diff:.2e}, grad max abs diff {grad_diff:.2e} (tol 1e-5)")

    # Mixed precision: half-precision logits are computed in fp32; a reduced loss comes back in fp32 (a float16
    # sum of these 1.6M elements would overflow), the gradient in the logits' dtype.
    for dtype in (torch.float16, torch.bfloat16):
        xh = logits.to(DEV).to(dtype).requires_grad_(True)
        loss = sigmoid_focal_loss(xh, targets.to(DEV), gamma=2.0, alpha=0.25, reduction="sum")
        loss.backward()
        ref = sigmoid_focal_loss(xh.detach().float(), targets.to(DEV), gamma=2.0, alpha=0.25, reduction="sum")
        ok = (loss.dtype == torch.float32 and xh.grad.dtype == dtype and bool(torch.isfinite(xh.grad).all())
              and max_rel(loss, ref) < 1e-4)
        check(f"FL with {dtype} logits on CUDA: fp32 sum = fp32 computation, finite {dtype} gradient", ok,
              f"loss dtype {loss.dtype}, grad dtype {xh.grad.dtype}, rel diff {max_rel(loss, ref):.2e}")

    # Against MMCV's own CUDA kernel (the one MMDetection's FocalLoss calls on GPUs; it has no CPU version).
    if DEV != "cuda":
        return
    from mmcv.ops import sigmoid_focal_loss as mmcv_sigmoid_focal_loss

    # MMCV's kernel takes log(max(p, FLT_MIN)) and log(max(1 - p, FLT_MIN)): where sigmoid(x) rounds to 1 in fp32
    # (|x| > ~16.6) a confident wrong answer costs -log(FLT_MIN) = 87.3 instead of |x|. Compare where it is exact,
    # and say how many elements lie beyond.
    x = logits.to(DEV)
    ours = sigmoid_focal_loss(x, targets.to(DEV), gamma=2.0, alpha=0.25, reduction="none")
    theirs = mmcv_sigmoid_focal_loss(x, targets.to(DEV), 2.0, 0.25, None, "none")
    exact = x.abs() < 15
    diff = float((ours - theirs)[exact].abs().max())
    check("FL on CUDA = MMCV's CUDA sigmoid_focal_loss where fp32 sigmoid is not saturated (|x| < 15)", diff < 1e-4,
          f"max abs diff {diff:.2e} (tol 1e-4); beyond |x| 15 ({int((~exact).sum())} elements) the largest "
          f"difference is {float((ours - theirs)[~exact].abs().max()):.1f} (MMCV's FLT_MIN clamp)")


def nms_and_ohem() -> None:
    from mmcv.ops import nms

    from fltool_plugins.losses.ohem import ohem_select

    g = torch.Generator().manual_seed(1)
    a = 30000
    xy = torch.rand(a, 2, generator=g) * 380
    wh = torch.rand(a, 2, generator=g) * 40 + 4
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(a, generator=g)
    keep_cpu = nms(boxes, scores, 0.5)[1]
    keep_gpu = nms(boxes.to(DEV), scores.to(DEV), 0.5)[1].cpu()
    same = torch.equal(keep_cpu.sort().values, keep_gpu.long().sort().values)
    check("MMCV nms: CUDA keeps the same boxes as CPU", same, f"{keep_cpu.numel()} vs {keep_gpu.numel()} kept")

    losses = torch.rand(a, generator=g)
    positive = torch.rand(a, generator=g) < 0.002
    valid = torch.rand(a, generator=g) > 0.01
    for kw in (dict(num=128, nms_thr=0.5), dict(num=512, nms_thr=0.7), dict(num=128, pos_fraction=0.25, nms_thr=0.5),
               dict(num=256, nms_thr=None)):
        cpu = ohem_select(losses, boxes, positive, valid, **kw)
        gpu = ohem_select(losses.to(DEV), boxes.to(DEV), positive.to(DEV), valid.to(DEV), **kw).cpu()
        check(f"OHEM selection {kw}: CUDA = CPU", torch.equal(cpu, gpu),
              f"{int(cpu.sum())} vs {int(gpu.sum())} anchors kept, {int((cpu != gpu).sum())} differ")


def main() -> int:
    if DEV == "cuda" and not torch.cuda.is_available():
        print("FAIL  no CUDA device visible to torch")
        return 1
    device = torch.cuda.get_device_name(0) if DEV == "cuda" else DEV
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {device}", flush=True)
    for section in (focal_losses, nms_and_ohem):
        try:
            section()
        except Exception as exc:  # one broken section must not hide the others' results
            check(section.__name__, False, f"{type(exc).__name__}: {exc}")
    print(f"{len(failures)} check(s) failed" + (f": {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
