"""The benchmark's results: one :class:`BenchPoint` per (model, scale), the Pareto front, and the files
``results.csv``, ``results.json`` and ``speed_accuracy.png`` (AP against ms, the front marked, optionally the
paper's Table 1e)."""
from __future__ import annotations

import csv
import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from fltool.bench.timing import LatencyStats
from fltool.engine.metrics import METRIC_KEYS
from fltool.errors import StackError
from fltool.fileio import atomic_path, save_figure, write_json

if TYPE_CHECKING:
    from fltool.bench.speed_accuracy import BenchOptions

RESULTS_SCHEMA = "fltool.bench.speed_accuracy/3"  # /2: the backend column; /3: the precision column
#: One row of results.csv (and one entry of results.json's "points"), in this order.
CSV_COLUMNS = ("model", "backend", "precision", "config", "checkpoint", "scale", "input_hw", "num_images",
               *METRIC_KEYS, "median_ms", "p90_ms", "mean_ms", "images_per_s", "cpu_ms", "cpu_util", "timed_iters",
               "warmup_iters", "load_ms", "transform_ms", "params", "flops", "device", "threads", "batch_size",
               "fuse_conv_bn", "pareto")


@dataclass
class BenchPoint:
    model: str
    config: str
    checkpoint: Optional[str]
    scale: int
    input_hw: str  # the network's (padded) input of the first image, "HxW"
    num_images: int
    metrics: dict  # METRIC_KEYS -> float in [0, 1], or None (no checkpoint, or no ground truth of that size)
    latency: LatencyStats
    warmup_iters: int
    cpu_ms: float  # median per image: the process's CPU time (all threads) while timed
    cpu_util: float  # CPU seconds per wall second while timed (about `threads` when nothing else ran)
    load_ms: float  # median per image: read + decode (once per run)
    transform_ms: float  # median per image: the pipeline from Resize on, at this scale
    params: int
    flops: int
    device: str
    threads: int
    batch_size: int = 1
    fuse_conv_bn: bool = False
    backend: str = "pytorch"  # or "mmdet", "onnxruntime", "openvino" (fltool.bench.runtimes)
    pareto: bool = False
    precision: str = "fp32"  # or "bf16", "int8"

    @property
    def series(self) -> str:
        """The model, with the backend when it is not eager PyTorch and the precision when it is not fp32: one curve
        in the plot."""
        extra = [v for v, plain in ((self.backend, "pytorch"), (self.precision, "fp32")) if v != plain]
        return f"{self.model} ({', '.join(extra)})" if extra else self.model

    @property
    def ap(self) -> Optional[float]:
        return self.metrics.get("AP")

    def row(self) -> dict:
        """One results.csv / results.json row, keyed by CSV_COLUMNS."""
        values = dict(model=self.model, backend=self.backend, precision=self.precision, config=self.config,
                      checkpoint=self.checkpoint, scale=self.scale, input_hw=self.input_hw, num_images=self.num_images,
                      **{k: self.metrics.get(k) for k in METRIC_KEYS},
                      median_ms=self.latency.median_ms, p90_ms=self.latency.p90_ms, mean_ms=self.latency.mean_ms,
                      images_per_s=self.latency.images_per_s, cpu_ms=self.cpu_ms, cpu_util=self.cpu_util,
                      timed_iters=self.latency.iterations,
                      warmup_iters=self.warmup_iters, load_ms=self.load_ms, transform_ms=self.transform_ms,
                      params=self.params, flops=self.flops, device=self.device, threads=self.threads,
                      batch_size=self.batch_size, fuse_conv_bn=self.fuse_conv_bn, pareto=self.pareto)
        return {k: values[k] for k in CSV_COLUMNS}


@dataclass
class BenchResult:
    points: list
    work_dir: Path
    csv_file: Path
    json_file: Path
    plot_file: Path
    environment: dict
    images_loaded: int  # images read and decoded in the whole run (once each, whatever the number of points)
    wall_s: float
    notes: list = field(default_factory=list)


def pareto_front(points: Sequence[Any], ms: Callable = lambda p: p.latency.median_ms,
                 ap: Callable = lambda p: p.ap) -> list:
    """Indices of the points no other point beats (as fast or faster and as accurate or more, better in one).
    Points without AP are never on the front."""
    scored = [(i, ms(p), ap(p)) for i, p in enumerate(points) if ap(p) is not None]
    front = []
    for i, t, a in scored:
        dominated = any((t2 <= t and a2 >= a) and (t2 < t or a2 > a) for j, t2, a2 in scored if j != i)
        if not dominated:
            front.append(i)
    return front


def backend_notes(points: Sequence[BenchPoint]) -> list:
    """One line per (model, scale) measured with more than one backend or precision: each one's speed-up over eager
    PyTorch in fp32 (median ms) and its AP next to PyTorch's."""
    notes = []
    base = {(p.model, p.scale): p for p in points if p.backend == "pytorch" and p.precision == "fp32"}
    for p in points:
        ref = base.get((p.model, p.scale))
        if ref is None or p is ref:
            continue
        what = p.backend + ("" if p.precision == "fp32" else f" {p.precision}")
        ap = "" if p.ap is None or ref.ap is None else f", AP {100 * p.ap:.1f} vs {100 * ref.ap:.1f}"
        notes.append(f"{p.model} @ {p.scale}: {what} {ref.latency.median_ms / p.latency.median_ms:.2f}x the "
                     f"speed of pytorch ({p.latency.median_ms:.1f} vs {ref.latency.median_ms:.1f} ms median, "
                     f"threads={p.threads}{ap})")
    return notes


def load_paper_reference() -> dict:
    """The paper's Table 1e (fltool/reference/paper_table1e.json): R-50 and R-101, AP (%) and ms at 400..800."""
    path = Path(__file__).resolve().parents[1] / "reference" / "paper_table1e.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StackError(f"cannot read fltool's reference data {path}: {exc}", "reinstall fltool") from None


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(points: Sequence[BenchPoint], path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for point in points:
            writer.writerow({k: _csv_value(v) for k, v in point.row().items()})
    return path


def write_results_json(result: BenchResult, opts: BenchOptions) -> Path:
    data = {
        "schema": RESULTS_SCHEMA,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "what": {"latency": "ms per image, batch size 1, image tensor to final detections (data_preprocessor + "
                            "predict: network, box decoding, NMS), after warm-up; median/p90/mean over timed_iters",
                 "backend": "pytorch: the MMDetection model, eager; mmdet: the same weights as stock MMDetection "
                            "runs them (NCHW); onnxruntime: the same weights exported by fltool export (one ONNX graph "
                            "to the final detections) run by ONNX Runtime with `threads` intra-op threads, after the "
                            "same data_preprocessor; openvino: that graph run by OpenVINO with `threads` threads",
                 "precision": "fp32; bf16: torch autocast (pytorch, mmdet) or OpenVINO's bf16 inference precision "
                              "(only where the CPU has native bf16); int8: the OpenVINO graph quantized by NNCF "
                              "(post-training, calibrated on training images, no accuracy control)",
                 "images_per_s": "batch_size * 1000 / mean_ms",
                 "cpu_ms": "median CPU time of the process (all threads) per timed image",
                 "cpu_util": "CPU seconds per wall second while timed: about `threads` when the process had its "
                             "cores to itself; lower means other jobs shared them and median_ms is inflated",
                 "load_ms": "median ms per image to read and decode it (once per run; not in the latency)",
                 "transform_ms": "median ms per image for the pipeline from Resize on at that scale (not in the "
                                 "latency)",
                 "AP": "COCO bbox AP in [0, 1] on num_images images, against an annotation file holding only those "
                       "images; null without a checkpoint",
                 "flops": "MMEngine FlopAnalyzer on the tensor forward (backbone+FPN+head, no NMS) at input_hw; "
                          "one multiply-add = 1",
                 "scale": "short side set in the test pipeline's Resize (long side capped by the config's ratio)"},
        "environment": result.environment,
        "settings": {"num_images": opts.num_images, "warmup": opts.warmup, "min_iters": opts.min_iters,
                     "fuse_conv_bn": opts.fuse_conv_bn, "backends": list(opts.backends),
                     "precisions": list(opts.precisions), "calib_images": opts.calib_images,
                     "scales": list(opts.scales) if opts.scales else None,
                     "cfg_options": opts.cfg_options, "paper": opts.paper},
        "images_loaded": result.images_loaded,
        "wall_s": round(result.wall_s, 1),
        "points": [p.row() for p in result.points],
        "notes": result.notes,
        "files": {"csv": str(result.csv_file), "json": str(result.json_file), "plot": str(result.plot_file)},
    }
    return write_json(result.json_file, data)


def plot_speed_accuracy(points: Sequence[BenchPoint], path: Path, environment: Optional[dict] = None,
                        paper: Optional[dict] = None) -> Path:
    """AP (%) against ms per image: one line per model, points labelled by scale, the Pareto front marked, and
    optionally the paper's Table 1e. Without any AP (no checkpoints) it plots ms per image against scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    env = environment or {}
    where = f"{env.get('device', '?')}, threads={env.get('threads', '?')}, batch 1"
    fig = Figure(figsize=(8.5, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    models = list(dict.fromkeys(p.series for p in points))
    with_ap = [p for p in points if p.ap is not None]
    without_ap = [m for m in models if not any(p.ap is not None for p in points if p.series == m)]
    all_ms = [p.latency.median_ms for p in points]

    if with_ap or paper:
        for model in models:
            pts = sorted((p for p in points if p.series == model and p.ap is not None), key=lambda p: p.scale)
            if not pts:
                continue
            xs, ys = [p.latency.median_ms for p in pts], [100 * p.ap for p in pts]
            ax.plot(xs, ys, marker="o", label=model)
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(str(p.scale), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = sorted((p for p in points if p.pareto), key=lambda p: p.latency.median_ms)
        if front:
            fx, fy = [p.latency.median_ms for p in front], [100 * p.ap for p in front]
            ax.step(fx, fy, where="post", linestyle="--", color="0.4", linewidth=1)
            ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="black", linewidths=1.2, zorder=3,
                       label="Pareto front (measured)")
        if paper:
            for k, model in enumerate(paper.get("models", [])):
                pts = sorted(model["points"], key=lambda q: q["scale"])
                xs, ys = [q["ms"] for q in pts], [q["AP"] for q in pts]
                all_ms += xs
                ax.plot(xs, ys, marker="s", linestyle=":", color=("0.35", "0.6")[k % 2],
                        label=f"{model['name']}: M40 GPU, COCO test-dev")
                for q, x, y in zip(pts, xs, ys):
                    ax.annotate(str(q["scale"]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7,
                                color="0.4")
        ax.set_xlabel(f"ms per image (median; {where})")
        ax.set_ylabel("COCO AP (%)")
        ax.set_title("Speed vs accuracy (labels: test scale, short side px)")
        if without_ap:
            fig.text(0.01, 0.01, "AP n/a (no checkpoint), not plotted: " + ", ".join(without_ap), fontsize=8)
    else:
        for model in models:
            pts = sorted((p for p in points if p.series == model), key=lambda p: p.scale)
            ax.plot([p.scale for p in pts], [p.latency.median_ms for p in pts], marker="o", label=model)
        ax.set_xlabel("test scale (short side, px)")
        ax.set_ylabel(f"ms per image (median; {where})")
        ax.set_title("Latency vs scale (no checkpoint given: AP n/a)")
    if ax.get_xlabel().startswith("ms") and all_ms and min(all_ms) > 0 and max(all_ms) / min(all_ms) > 8:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)
