"""How ``fltool bench`` measures latency: timed passes, statistics, the device, and how far to trust the numbers.

Latency per image is timed at batch size 1 by :func:`time_steps`: the first ``warmup`` items run untimed; then every
item is timed, repeating passes over the items until at least ``min_iters`` were timed. On CUDA the device is
synchronised before the clock is read at both ends. Reported (:class:`LatencyStats`): median and p90 ms, mean ms,
images/s (= 1000 / mean ms); alongside, the process's CPU time per item and ``cpu_util`` (CPU seconds per wall second
while timed): on a shared CPU, a ``cpu_util`` well under the thread count says other jobs took turns on the cores and
the wall-clock latency is inflated (:func:`timing_notes` says so), while the CPU time stays close to the work.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from fltool.errors import ConfigError, StackError
from fltool.fileio import cpu_name

if TYPE_CHECKING:
    from fltool.bench.report import BenchPoint

#: A point whose p90 latency exceeds this multiple of its median gets a note (the device was shared or throttled).
UNSTEADY_RATIO = 1.5
#: A CPU point whose process used fewer CPU-seconds per wall second than this times its thread count, while timed,
#: had its cores shared with other jobs (idle OpenMP threads spin, so an unshared run stays close to the count).
SHARED_CPU_UTIL = 0.8


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p90_ms: float
    mean_ms: float
    images_per_s: float  # batch_size * 1000 / mean_ms
    iterations: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch_size: int = 1) -> "LatencyStats":
        if not samples_ms:
            raise ValueError("no timed iterations")
        mean = statistics.fmean(samples_ms)
        return cls(median_ms=statistics.median(samples_ms), p90_ms=percentile(samples_ms, 90.0), mean_ms=mean,
                   images_per_s=batch_size * 1000.0 / mean if mean > 0 else float("inf"),
                   iterations=len(samples_ms))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without needing numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def synchronizer(device: str) -> Callable[[], None]:
    """What waits for queued device work before the clock is read: ``torch.cuda.synchronize`` on CUDA, else nothing."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


@dataclass
class Timing:
    samples_ms: list  # wall-clock ms of each timed iteration (warm-up excluded)
    warmup: int
    outputs: list  # what ``step`` returned for each item in the first timed pass
    cpu_ms: list = field(default_factory=list)  # the process's CPU time (all threads) in each timed iteration

    @property
    def cpu_util(self) -> float:
        """CPU seconds the process used per wall second while timed: about the thread count when it had the CPU
        to itself, less when other jobs took turns on its cores."""
        wall = sum(self.samples_ms)
        return sum(self.cpu_ms) / wall if wall > 0 and self.cpu_ms else float("nan")


def time_steps(step: Callable[[int], Any], num_items: int, *, warmup: int, min_iters: int, device: str,
               clock: Callable[[], float] = time.perf_counter, cpu_clock: Callable[[], float] = time.process_time,
               on_iter: Optional[Callable[[int, int], None]] = None) -> Timing:
    """Run ``step(i)`` ``warmup`` times untimed, then time passes over all items until ``min_iters`` were timed.

    Each timed iteration is bracketed by device synchronisation (CUDA), so the time covers the work it queued.
    The process's CPU time is read alongside: on a shared CPU it shows how much of the wall time was the model's.
    """
    if num_items < 1:
        raise ValueError("nothing to time")
    sync = synchronizer(device)
    passes = max(1, math.ceil(min_iters / num_items))
    total = warmup + passes * num_items
    done = 0
    for i in range(warmup):
        step(i % num_items)
        done += 1
        if on_iter:
            on_iter(done, total)
    samples: list = []
    cpu: list = []
    outputs: list = [None] * num_items
    for p in range(passes):
        for i in range(num_items):
            sync()
            t0, c0 = clock(), cpu_clock()
            out = step(i)
            sync()
            c1, t1 = cpu_clock(), clock()
            samples.append((t1 - t0) * 1e3)
            cpu.append((c1 - c0) * 1e3)
            if p == 0:
                outputs[i] = out
            done += 1
            if on_iter:
                on_iter(done, total)
    return Timing(samples, warmup, outputs, cpu)


def check_device(device: str) -> str:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device '{device}'", "use --device cpu or --device cuda[:N]") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device '{device}' is not supported", "use --device cpu or --device cuda[:N]")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StackError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU",
                             "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} GPU(s)", "pick another index")
    return str(dev)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def timing_notes(points: Sequence[BenchPoint]) -> list:
    """What the user should know about how far the latencies can be trusted (one note per kind of problem)."""
    notes = []
    shared = [p for p in points if p.device == "cpu" and p.cpu_util < SHARED_CPU_UTIL * p.threads]
    if shared:
        worst = min(shared, key=lambda p: p.cpu_util / p.threads)
        notes.append(f"{len(shared)} of {len(points)} point(s) were timed while other jobs shared the CPU (e.g. "
                     f"{worst.series} @ {worst.scale}: {worst.cpu_util:.2f} CPU-seconds per second with threads="
                     f"{worst.threads}, {worst.latency.median_ms:.1f} ms wall, {worst.cpu_ms:.1f} ms CPU per image): "
                     "their ms is inflated" + ("; with one thread 'cpu ms' shows the work itself" if worst.threads == 1
                                               else "; --threads 1 is steadier on a shared CPU"))
    unsteady = [p for p in points if p.latency.p90_ms > UNSTEADY_RATIO * p.latency.median_ms]
    if unsteady:
        where = ", ".join(f"{p.series} @ {p.scale}" for p in unsteady)
        many = any(p.threads > 1 for p in unsteady)
        notes.append(f"unsteady timings (p90 above {UNSTEADY_RATIO} x the median) at {where}: something else used "
                     "the device" + ("; fewer --threads are steadier on a shared CPU" if many else ""))
    return notes
