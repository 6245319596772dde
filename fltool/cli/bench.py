"""``fltool bench``: measurements of whole models (``speed-accuracy``)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from typing_extensions import Annotated

from fltool.cli.common import CfgOptionsOpt, command, console, err_console, new_app, table
from fltool.cli.dataopts import DataOpt, FormatOpt, ImgSizeOpt, ValFractionOpt, bench_data_configs, data_options
from fltool.engine.metrics import METRIC_KEYS
from fltool.progress import ProgressEvent

app = new_app("Benchmarks of whole models: speed against accuracy across test scales.")

DEFAULT_WORK_DIR = Path("work_dirs/speed_accuracy")




def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 1000 else f"{value:.1f}"


def points_tables(points: List[Any], data_time: bool = False) -> List[Any]:
    """One results table per model (a row per scale), narrow enough for an 80-column terminal; with ``data_time``
    a last table of the data time per image."""
    columns = ["scale", "AP", "AP50", "AP75", "APs", "APm", "APl", "ms", "p90", "cpu ms", "img/s", "GFLOPs"]
    tables = []
    for series in dict.fromkeys(p.series for p in points):  # a model, or a model on another backend
        mine = [p for p in points if p.series == series]
        rows = []
        for p in mine:
            ap = [None if p.metrics.get(k) is None else f"{100 * p.metrics[k]:.1f}" for k in METRIC_KEYS]
            rows.append([f"{p.scale}{'*' if p.pareto else ''}", *ap, _ms(p.latency.median_ms),
                         _ms(p.latency.p90_ms), _ms(p.cpu_ms), f"{p.latency.images_per_s:.1f}",
                         f"{p.flops / 1e9:.2f}"])
        weights = Path(mine[0].checkpoint).name if mine[0].checkpoint else "no checkpoint"
        tables.append(table(f"{series} ({weights}, {mine[0].params / 1e6:.2f} M params)", columns, rows))
    if data_time and points:
        rows = [[p.series, p.scale, _ms(p.load_ms), _ms(p.transform_ms)] for p in points]
        tables.append(table("data time per image (not in the latency)", ["model", "scale", "load ms",
                                                                          "transform ms"], rows))
    for t in tables:
        t.show_edge, t.collapse_padding = False, True
    return tables


class BenchDisplay:
    """Progress bar and a results table that grows as points finish (a live display on a terminal, plain lines
    otherwise). Progress goes to stderr; the final table is printed to stdout by the command."""

    def __init__(self, out: Console, data_time: bool, plain: Optional[bool] = None) -> None:
        self.console = out
        self.data_time = data_time
        self.plain = (not out.is_terminal) if plain is None else plain
        self.points: List[Any] = []
        self.progress: Optional[Progress] = None
        self.live: Optional[Live] = None
        self.task: Any = None
        self._last = ""
        self._t0 = time.time()

    def __enter__(self) -> "BenchDisplay":
        if not self.plain:
            self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
            self.live = Live(self._render(), console=self.console, refresh_per_second=2, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.stop()

    def _render(self) -> Any:
        parts = points_tables(self.points, self.data_time)
        return Group(*parts, self.progress) if self.progress is not None else Group(*parts)

    def _log(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text, highlight=False)
        else:
            self.console.print(f"[{time.time() - self._t0:7.1f}s] {text}", highlight=False, soft_wrap=True)

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "note":
            self._log(event.message)
            return
        if event.kind != "stage":
            return
        if self.progress is not None:
            if self.task is None or event.message != self._last:  # one bar for the current stage
                if self.task is not None:
                    self.progress.remove_task(self.task)
                self.task = self.progress.add_task(event.message, total=event.max_iters or None)
            self.progress.update(self.task, completed=event.iteration)
        elif event.message != self._last:
            self._log(f"• {event.message}")
        self._last = event.message

    def point(self, point: Any) -> None:
        self.points.append(point)
        if self.live is not None:
            self.live.update(self._render())
        else:
            ap = "n/a" if point.ap is None else f"{100 * point.ap:.1f}"
            self._log(f"{point.series} @ {point.scale}: AP {ap}  median {point.latency.median_ms:.1f} ms  "
                      f"p90 {point.latency.p90_ms:.1f} ms  {point.flops / 1e9:.2f} GFLOPs")


PrecisionsOpt = Annotated[str, typer.Option(
    "--precision", help="Precisions to measure, comma-separated, each with the backends that run it: fp32 (all), bf16 "
                        "(pytorch/mmdet autocast; openvino only where the CPU has native bf16), int8 (openvino: NNCF "
                        "quantization calibrated on training images). A row each, with its AP.")]
CalibImagesOpt = Annotated[int, typer.Option("--calib-images", min=1, help="int8: training images to calibrate on.")]


@command(app, "speed-accuracy")
def speed_accuracy(
    configs: Annotated[List[str], typer.Argument(help="One or more configs (files or names, see `fltool train "
                                                      "--list`).", show_default=False)],
    checkpoint: Annotated[Optional[List[str]], typer.Option(
        "--checkpoint", help="Weights for each config, in the same order (repeat it; 'none' for a config measured "
                             "without weights). Without any, latency and FLOPs are measured and AP is n/a.")] = None,
    scales: Annotated[Optional[str], typer.Option(
        "--scales", help="Test scales (short side, px), comma-separated, e.g. 400,500,600. Default: the config's "
                         "fltool_bench_scales, else the paper's 400,500,600,700,800.")] = None,
    num_images: Annotated[int, typer.Option("--num-images", min=1, help="Validation images per point (the first "
                                            "N of the test set; AP is evaluated on exactly these).")] = 50,
    device: Annotated[str, typer.Option("--device", help="cpu, or cuda[:N] (timed with synchronisation).")] = "cpu",
    work_dir: Annotated[Optional[Path], typer.Option(
        "--work-dir", help=f"Output folder (default: {DEFAULT_WORK_DIR}).")] = None,
    cfg_options: CfgOptionsOpt = None,
    fuse_conv_bn: Annotated[bool, typer.Option("--fuse-conv-bn", help="Fold BatchNorm into the preceding convs "
                                               "before timing.")] = False,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed images before timing each point.")] = 5,
    min_iters: Annotated[int, typer.Option("--min-iters", min=1, help="Time at least this many images per point "
                                           "(repeating passes over them when --num-images is smaller).")] = 30,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="torch CPU threads (default: torch's "
                                                   "current setting; recorded either way). On a CPU shared with "
                                                   "other jobs, 1 gives the steadiest timings.")] = None,
    data_time: Annotated[bool, typer.Option("--data-time", help="Also show data time per image in the table: "
                                            "load (read + decode) and transform (resize + pack). Always in the "
                                            "files, never in the latency.")] = False,
    paper: Annotated[bool, typer.Option("--paper", help="Draw the paper's Table 1e points (R-50/R-101, Nvidia M40 "
                                        "GPU, COCO test-dev) in the plot for comparison.")] = False,
    trust_checkpoint: Annotated[bool, typer.Option("--trust-checkpoint", help="Allow full unpickling of the "
                                                   "checkpoints (only for files you trust).")] = False,
    backend: Annotated[str, typer.Option("--backend", help="Runtimes to measure, comma-separated: pytorch (eager, "
                                         "as fltool runs it), mmdet (the same weights as stock MMDetection runs "
                                         "them: NCHW), onnxruntime (the model exported by fltool export, same "
                                         "threads) and/or openvino (that graph run by OpenVINO; pip install "
                                         "'fltool[openvino]'); one row per backend, precision and scale.")
                       ] = "pytorch",
    precision: PrecisionsOpt = "fp32",
    calib_images: CalibImagesOpt = 100,
    data: DataOpt = None,
    data_format: FormatOpt = None,
    val_fraction: ValFractionOpt = None,
    img_size: ImgSizeOpt = None,
) -> None:
    """Speed against accuracy across test scales: COCO AP, latency per image, FLOPs and parameters per point.

    Every (config, checkpoint) pair is run at every scale on the same validation images (read once per run).
    Writes results.csv, results.json and speed_accuracy.png (AP against ms per image, one curve per model, the
    Pareto front marked) to the work dir.
    """
    from fltool.bench.inputs import parse_scales
    from fltool.bench.runtimes import parse_precisions
    from fltool.bench.speed_accuracy import BenchOptions, run_speed_accuracy
    from fltool.engine.backends import BENCH_BACKENDS, parse_backends

    configs = bench_data_configs(configs, data_options(data, data_format, val_fraction, img_size),
                                 work_dir or DEFAULT_WORK_DIR)
    opts = BenchOptions(configs=configs, checkpoints=checkpoint or [], scales=parse_scales(scales),
                        num_images=num_images, device=device, work_dir=work_dir or DEFAULT_WORK_DIR,
                        cfg_options=cfg_options, fuse_conv_bn=fuse_conv_bn, warmup=warmup, min_iters=min_iters,
                        threads=threads, paper=paper, trust_checkpoint=trust_checkpoint,
                        backends=parse_backends(backend, BENCH_BACKENDS), precisions=parse_precisions(precision),
                        calib_images=calib_images)
    with BenchDisplay(err_console, data_time) as display:
        result = run_speed_accuracy(opts, progress=display, on_point=display.point)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    env = result.environment
    caption = (f"AP in % on the first {result.points[0].num_images if result.points else 0} val images. ms: median "
               f"latency per image (p90: 90th percentile), batch 1, {env['device']} ({env['device_name']}), "
               f"threads={env['threads']}{' (torch and the runtimes)' if len(opts.backends) > 1 else ''}; "
               "cpu ms: the process's CPU time per image. * = on the Pareto front. "
               f"{result.wall_s:.0f} s")
    for t in points_tables(result.points, data_time):
        console.print(t)
    console.print(caption, highlight=False)
    console.print(f"results: {result.csv_file}\n         {result.json_file}\nplot:    {result.plot_file}",
                  highlight=False)
