"""Focal-loss speed and memory on CPU: fltool's kernel (each instruction-set build this CPU runs, side by side) and
PyTorch path against MMDetection's and torchvision's formula.

    python benchmarks/focal_loss.py [--quick] [--json OUT] [--threads T]

Every number comes from this one run on this machine (a script, not a test; timings never gate anything). The header
names the CPU, what it has (AVX-512, AMX) and the load average at the start and the end: on a busy machine a run with
two or more threads waits for cores other work holds, so compare rows of one run, not runs.

What is measured, per problem size (COCO-sized: 120,000 anchors x 80 classes; small: 2,000 x 80), fp32 logits,
class-index targets with ~0.1% positives (background = K), per-anchor weights with ~1% ignored anchors (weight 0), and
reduction "mean" with avg_factor = the number of positives (what RetinaNet's head does):

* time: forward (under no_grad), and forward + backward, median of several repeats after warm-up;
* peak extra memory: every CPU allocation and free during one forward + backward, recorded by torch.profiler
  (profile_memory=True; the raw allocator events, so allocations made inside the C++ kernel count too); the peak of
  the running total, also expressed in (N, K) fp32 buffers. The gradient handed back (one buffer) is included: the
  kernel keeps a freed output's memory for the next call, and is made to let it go before this measurement;
* the memory-traffic bound: forward reads logits (4NK bytes) + labels (8N) + weights (4N); forward + backward, as a
  forward pass and a backward pass that reads the same again and writes the gradient (4NK): 12NK + 24N bytes. Each is
  divided by the copy bandwidth (``dst.copy_(src)`` on a buffer of the logits' size, bytes read + written; the better
  of the run's thread count and one thread, since on a busy machine the threads may wait for cores), and the forward
  and forward + backward times are reported as multiples of their bound ("x bound"). fltool's kernel computes a
  reduced loss's gradient in its forward pass, so its own traffic is lower than the bound's (8NK + 12N: logits read
  once, gradient written once; then an in-place scale by the upstream gradient where that is not 1).

Implementations: fltool FL (C++ kernel), once per build the CPU runs (AVX-512, AVX2, portable), fltool FL (PyTorch
closed form, forced with backend="torch"), fltool FL* (kernel; gamma 2, beta 1), MMDetection's CPU path (``FocalLoss``
on CPU: one-hot of the labels, then ``py_sigmoid_focal_loss``), and torchvision's/fvcore's formula written inline
(torchvision is not installed) with the same one-hot conversion. All use gamma 2, alpha 0.25.
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
from fltool_plugins.losses.functional import kernel_variants, sigmoid_focal_loss, sigmoid_focal_loss_star, using_kernel

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


def on_kernel(fn: Callable, module) -> Callable:
    """fn with the losses' kernel path on one build (module) of the kernel."""
    def run(*args):
        with using_kernel(module):
            return fn(*args)
    run.kernel = module
    return run


def implementations() -> dict[str, Callable]:
    """The kernel once per build this CPU runs (best first; the one kernel_info() says is in use also runs FL*), then
    the PyTorch path and the two formulas it is compared with."""
    impls: dict[str, Callable] = {}
    variants = kernel_variants()
    for isa, module in variants.items():
        impls[f"fltool FL (kernel {isa})"] = on_kernel(fltool_kernel, module)
    impls["fltool FL (torch path)"] = fltool_torch
    chosen = kernel_info()["isa"]
    if chosen in variants:
        impls[f"fltool FL* (kernel {chosen})"] = on_kernel(fltool_star, variants[chosen])
    impls["mmdet py_sigmoid_focal_loss"] = mmdet_cpu_path
    impls["torchvision formula"] = torchvision_formula
    return impls


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
    """Read + write bandwidth of dst.copy_(src) on buffers of nbytes each: the better of torch's thread count and one
    thread (on a busy machine a parallel copy waits for the cores other work holds; a bound takes the best rate)."""
    src = torch.rand(nbytes // 4)
    dst = torch.empty_like(src)
    threads = torch.get_num_threads()
    best = 0.0
    for count in sorted({threads, 1}):
        torch.set_num_threads(count)
        try:
            ms = time_ms(lambda: dst.copy_(src), repeats=max(repeats, 10), warmup=3)
        finally:
            torch.set_num_threads(threads)
        best = max(best, 2 * nbytes / (ms * 1e-3) / 1e9)
    return best


def bench_size(name: str, n: int, k: int, repeats: int, warmup: int, impls: dict[str, Callable]) -> dict:
    logits, labels, weight, num_pos = make_problem(n, k)
    traffic_fwd = 4 * n * k + 12 * n  # see the module docstring
    traffic_bytes = 12 * n * k + 24 * n
    bandwidth = copy_bandwidth_gbs(4 * n * k, repeats)
    bound_fwd_ms = traffic_fwd / (bandwidth * 1e9) * 1e3
    bound_ms = traffic_bytes / (bandwidth * 1e9) * 1e3
    # The backward must hand autograd a new (N, K) gradient; on Linux the first touch of fresh memory costs page faults.
    fresh_ms = time_ms(lambda: torch.empty_like(logits).fill_(0.0), repeats=max(repeats, 5), warmup=1)
    results = {}
    for impl_name, impl in impls.items():
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
        if hasattr(impl, "kernel"):
            impl.kernel.release_pool()  # so that the gradient's allocation is seen, not a reused block
        peak = peak_alloc_bytes(forward_backward)
        results[impl_name] = dict(loss=loss, forward_ms=fwd, forward_backward_ms=fwd_bwd, peak_bytes=peak,
                                  peak_nk_buffers=peak / (4 * n * k), forward_ratio_to_bound=fwd / bound_fwd_ms,
                                  ratio_to_bound=fwd_bwd / bound_ms)
    base = results[BASELINE]["forward_backward_ms"]
    for r in results.values():
        r["speedup_vs_mmdet"] = base / r["forward_backward_ms"]
    return dict(n=n, k=k, num_pos=num_pos, copy_bandwidth_gbs=bandwidth, traffic_forward_bytes=traffic_fwd,
                traffic_bytes=traffic_bytes, bound_forward_ms=bound_fwd_ms, bound_ms=bound_ms,
                fresh_buffer_ms=fresh_ms, results=results)


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    env = report["environment"]
    kernel = env["kernel"]
    console.print(f"torch {env['torch']} | {env['threads']} threads | CPU: {env['cpu']} ({env['cpu_features']}) | "
                  f"load average at start {env['load_average']}, at end {env['load_average_end']} | fltool kernel in "
                  f"use: {kernel['isa'] if kernel['available'] else 'not built'} ({kernel['detail']}) | median of "
                  f"{env['repeats']} after {env['warmup']} warm-up")
    for size_name, size in report["sizes"].items():
        table = Table(title=(f"{size_name}: {size['n']:,} x {size['k']} fp32, {int(size['num_pos'])} positives, "
                             f"mean / avg_factor; copy bandwidth {size['copy_bandwidth_gbs']:.1f} GB/s -> traffic "
                             f"bound: forward {size['bound_forward_ms']:.2f} ms, fwd+bwd {size['bound_ms']:.2f} ms; "
                             f"one fresh N x K buffer (allocate + first touch) {size['fresh_buffer_ms']:.2f} ms"))
        for col in ("implementation", "fwd ms", "x bound", "fwd+bwd ms", "x bound ", "vs mmdet", "peak MiB",
                    "peak N x K bufs", "loss"):
            table.add_column(col, justify="left" if col == "implementation" else "right")
        for impl_name, r in size["results"].items():
            table.add_row(impl_name, f"{r['forward_ms']:.2f}", f"{r['forward_ratio_to_bound']:.1f}",
                          f"{r['forward_backward_ms']:.2f}", f"{r['ratio_to_bound']:.1f}",
                          f"{r['speedup_vs_mmdet']:.1f}x", f"{r['peak_bytes'] / 2**20:.1f}",
                          f"{r['peak_nk_buffers']:.2f}", f"{r['loss']:.6g}")
        console.print(table)
        kernels = {name: r for name, r in size["results"].items() if name.startswith("fltool FL (kernel ")}
        if len(kernels) > 1:
            (best_name, best), *others = kernels.items()
            console.print("  ISAs side by side: " + "; ".join(
                f"{best_name[18:-1]} is {r['forward_ms'] / best['forward_ms']:.2f}x faster forward and "
                f"{r['forward_backward_ms'] / best['forward_backward_ms']:.2f}x faster fwd+bwd than {name[18:-1]}"
                for name, r in others))


def _cpu_features() -> str:
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    has = [name for name, flag in (("AVX-512", "avx512_f"), ("AVX2", "avx2"), ("AMX", "amx_tile")) if caps.get(flag)]
    return ", ".join(has) if has else "no AVX2"


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
    environment = dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_name(),
                       cpu_features=_cpu_features(), python=sys.version.split()[0], kernel=kernel_info(),
                       repeats=repeats, warmup=warmup, load_average=_load_average(),
                       thp_mem_alloc_enable=os.environ.get("THP_MEM_ALLOC_ENABLE"))
    impls = implementations()
    sizes = {name: bench_size(name, n, k, repeats, warmup, impls) for name, (n, k) in SIZES.items()}
    environment["load_average_end"] = _load_average()
    report = dict(environment=environment, sizes=sizes)
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
