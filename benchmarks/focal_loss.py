"""Focal-loss speed and memory on CPU: fltool's kernel and PyTorch path against MMDetection's and torchvision's formula.

    python benchmarks/focal_loss.py [--quick] [--json OUT] [--threads T]

Every number comes from this one run on this machine (a script, not a test; timings never gate anything).

What is measured, per problem size (COCO-sized: 120,000 anchors x 80 classes; small: 2,000 x 80), fp32 logits,
class-index targets with ~0.1% positives (background = K), per-anchor weights with ~1% ignored anchors (weight 0), and
reduction "mean" with avg_factor = the number of positives (what RetinaNet's head does):

* time: forward, and forward + backward, median of several repeats after warm-up;
* peak extra memory: every CPU allocation and free during one forward + backward, recorded by torch.profiler
  (profile_memory=True; the raw allocator events, so allocations made inside the C++ kernel count too); the peak of
  the running total, also expressed in (N, K) fp32 buffers. The gradient handed back (one buffer) is included;
* the memory-traffic bound of a fused pass: forward reads logits (4NK bytes) + labels (8N) + weights (4N); backward
  reads the same and writes the gradient (4NK): 12NK + 24N bytes for forward + backward. It is divided by the copy
  bandwidth measured in the same run (``dst.copy_(src)`` on a buffer of the logits' size, bytes read + written),
  and each implementation's forward + backward time is reported as a multiple of that bound.

Implementations: fltool FL (C++ kernel), fltool FL (PyTorch closed form, forced with backend="torch"), fltool FL*
(kernel; gamma 2, beta 1), MMDetection's CPU path (``FocalLoss`` on CPU: one-hot of the labels, then
``py_sigmoid_focal_loss``), and torchvision's/fvcore's formula written inline (torchvision is not installed) with the
same one-hot conversion. All use gamma 2, alpha 0.25.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fltool.fileio import cpu_name
from fltool_plugins.losses import kernel_info
from fltool_plugins.losses.functional import sigmoid_focal_loss, sigmoid_focal_loss_star

GAMMA, ALPHA = 2.0, 0.25
SIZES = {"coco": (120_000, 80), "small": (2_000, 80)}


def mmdet_cpu_path(logits: Tensor, labels: Tensor, weight: Tensor, avg_factor: float) -> Tensor:
    """What mmdet's FocalLoss does on CPU: one-hot targets, then py_sigmoid_focal_loss."""
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    k = logits.shape[1]
    target = F.one_hot(labels, num_classes=k + 1)[:, :k]
    return py_sigmoid_focal_loss(logits, target, weight, gamma=GAMMA, alpha=ALPHA, reduction="mean",
                                 avg_factor=avg_factor)


def torchvision_formula(logits: Tensor, labels: Tensor, weight: Tensor, avg_factor: float) -> Tensor:
    """torchvision.ops.sigmoid_focal_loss (= fvcore's), inline, on one-hot targets."""
    k = logits.shape[1]
    targets = F.one_hot(labels, num_classes=k + 1)[:, :k].to(logits.dtype)
    p = torch.sigmoid(logits)
    ce_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** GAMMA)
    alpha_t = ALPHA * targets + (1 - ALPHA) * (1 - targets)
    loss = alpha_t * loss
    return (loss * weight[:, None]).sum() / avg_factor


def fltool_kernel(logits, labels, weight, avg_factor):
    return sigmoid_focal_loss(logits, labels, gamma=GAMMA, alpha=ALPHA, weight=weight, reduction="mean",
                              avg_factor=avg_factor, backend="kernel")


def fltool_torch(logits, labels, weight, avg_factor):
    return sigmoid_focal_loss(logits, labels, gamma=GAMMA, alpha=ALPHA, weight=weight, reduction="mean",
                              avg_factor=avg_factor, backend="torch")


def fltool_star(logits, labels, weight, avg_factor):
    return sigmoid_focal_loss_star(logits, labels, gamma=2.0, beta=1.0, alpha=ALPHA, weight=weight, reduction="mean",
                                   avg_factor=avg_factor, backend="kernel")


IMPLEMENTATIONS: dict[str, Callable] = {
    "fltool FL (kernel)": fltool_kernel,
    "fltool FL (torch path)": fltool_torch,
    "fltool FL* (kernel)": fltool_star,
    "mmdet py_sigmoid_focal_loss": mmdet_cpu_path,
    "torchvision formula": torchvision_formula,
}
BASELINE = "mmdet py_sigmoid_focal_loss"


def make_problem(n: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 1.5 - 4.6  # around the prior pi = 0.01, as early in training
    labels = torch.full((n,), k, dtype=torch.int64)
    num_pos = max(1, n // 1000)  # ~0.1% positive anchors
    labels[torch.randperm(n, generator=g)[:num_pos]] = torch.randint(0, k, (num_pos,), generator=g)
    weight = (torch.rand(n, generator=g) > 0.01).float()  # ~1% ignored anchors
    weight[labels < k] = 1.0
    return logits, labels, weight, float(num_pos)


def time_ms(fn: Callable[[], None], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


@contextlib.contextmanager
def _native_stderr_silenced():
    """Kineto (torch's profiler backend) writes a 'profiler_start/stop' line to the process's stderr from C++ on every
    profile, whatever KINETO_LOG_LEVEL says: point file descriptor 2 at /dev/null for the profile only."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_alloc_bytes(fn: Callable[[], None]) -> int:
    """Peak of the running total of CPU allocations minus frees during fn, from the profiler's allocator events."""
    from torch.profiler import ProfilerActivity, profile
    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def copy_bandwidth_gbs(nbytes: int, repeats: int) -> float:
    """Read + write bandwidth of dst.copy_(src) on buffers of nbytes each."""
    src = torch.rand(nbytes // 4)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), repeats=max(repeats, 10), warmup=3)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def bench_size(name: str, n: int, k: int, repeats: int, warmup: int) -> dict:
    logits, labels, weight, num_pos = make_problem(n, k)
    traffic_bytes = 12 * n * k + 24 * n  # see the module docstring
    bandwidth = copy_bandwidth_gbs(4 * n * k, repeats)
    bound_ms = traffic_bytes / (bandwidth * 1e9) * 1e3
    # The backward must hand autograd a new (N, K) gradient; on Linux the first touch of fresh memory costs page faults.
    fresh_ms = time_ms(lambda: torch.empty_like(logits).fill_(0.0), repeats=max(repeats, 5), warmup=1)
    results = {}
    for impl_name, impl in IMPLEMENTATIONS.items():
        x = logits.clone().requires_grad_()

        def forward(impl=impl, x=x):
            with torch.no_grad():
                impl(x, labels, weight, num_pos)

        def forward_backward(impl=impl, x=x):
            x.grad = None
            impl(x, labels, weight, num_pos).backward()

        loss = impl(x, labels, weight, num_pos).item()
        fwd = time_ms(forward, repeats, warmup)
        fwd_bwd = time_ms(forward_backward, repeats, warmup)
        x.grad = None
        peak = peak_alloc_bytes(forward_backward)
        results[impl_name] = dict(loss=loss, forward_ms=fwd, forward_backward_ms=fwd_bwd, peak_bytes=peak,
                                  peak_nk_buffers=peak / (4 * n * k), ratio_to_bound=fwd_bwd / bound_ms)
    base = results[BASELINE]["forward_backward_ms"]
    for r in results.values():
        r["speedup_vs_mmdet"] = base / r["forward_backward_ms"]
    return dict(n=n, k=k, num_pos=num_pos, copy_bandwidth_gbs=bandwidth, traffic_bytes=traffic_bytes,
                bound_ms=bound_ms, fresh_buffer_ms=fresh_ms, results=results)


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    env = report["environment"]
    kernel = env["kernel"]
    console.print(f"torch {env['torch']} | {env['threads']} threads | {env['cpu']} | load average at start "
                  f"{env['load_average']} | fltool kernel: {kernel['isa'] if kernel['available'] else 'not built'} "
                  f"({kernel['detail']}) | median of {env['repeats']} after {env['warmup']} warm-up")
    for size_name, size in report["sizes"].items():
        table = Table(title=(f"{size_name}: {size['n']:,} x {size['k']} fp32, {int(size['num_pos'])} positives, "
                             f"mean / avg_factor; copy bandwidth {size['copy_bandwidth_gbs']:.1f} GB/s -> "
                             f"fwd+bwd traffic bound {size['bound_ms']:.2f} ms; one fresh N x K buffer "
                             f"(allocate + first touch) {size['fresh_buffer_ms']:.2f} ms"))
        for col in ("implementation", "fwd ms", "fwd+bwd ms", "vs mmdet", "x bound", "peak MiB", "peak N x K bufs",
                    "loss"):
            table.add_column(col, justify="left" if col == "implementation" else "right")
        for impl_name, r in size["results"].items():
            table.add_row(impl_name, f"{r['forward_ms']:.2f}", f"{r['forward_backward_ms']:.2f}",
                          f"{r['speedup_vs_mmdet']:.1f}x", f"{r['ratio_to_bound']:.1f}",
                          f"{r['peak_bytes'] / 2**20:.1f}", f"{r['peak_nk_buffers']:.2f}", f"{r['loss']:.6g}")
        console.print(table)


def _load_average() -> Optional[list[float]]:
    """Other work on the machine distorts timings; the report records the load when the run starts."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, warmup = (3, 1) if args.quick else (9, 2)
    report = dict(
        environment=dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_name(),
                         python=sys.version.split()[0], kernel=kernel_info(), repeats=repeats, warmup=warmup,
                         load_average=_load_average(), thp_mem_alloc_enable=os.environ.get("THP_MEM_ALLOC_ENABLE")),
        sizes={name: bench_size(name, n, k, repeats, warmup) for name, (n, k) in SIZES.items()},
    )
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
