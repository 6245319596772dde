"""``fltool sweep``: a thin wrapper over fltool.engine.sweep (grid of loss settings x seeds -> Table 1-style report)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from typing_extensions import Annotated

from fltool.cli.common import (
    CfgOptionsOpt,
    Launcher,
    LauncherOpt,
    LocalRankOpt,
    TrackOpt,
    console,
    err_console,
    fmt,
    table,
)
from fltool.cli.dataopts import DataOpt, FormatOpt, ImgSizeOpt, ValFractionOpt, data_options, sweep_data_config
from fltool.cli.progress import ProgressDisplay, metrics_line
from fltool.engine.sweep import LOSS_PRESETS, TABLE_METRICS
from fltool.progress import ProgressEvent

_PRESET_LINES = "\n".join(f"          {name:4} {preset.doc}" for name, preset in LOSS_PRESETS.items())

SWEEP_HELP = f"""Train and evaluate every point of a grid of loss (or any config) settings, once per seed, and
tabulate AP/AP50/AP75 per point (mean and std over seeds) as in the paper's Table 1a/1b and Table 3.

Grid: --set KEY=V1,V2,... (repeatable); the grid is the cartesian product of the axes.
  loss.X  is short for model.bbox_head.loss_cls.X (e.g. loss.gamma=0,0.5,1,2,5 loss.alpha=0.25,0.5,0.75);
          any other key is a full config key, checked like --cfg-options (+KEY adds a key).
  values  use MMEngine's syntax element by element: 0, 0.25, None, abc, [1,2].
  loss=   takes whole-loss presets (a preset replaces loss_cls; loss.X axes then set its fields):
{_PRESET_LINES}
          e.g. --set 'loss=CE,CE-a0.75,FL,FL*,FL*-g4-b0' (quote FL* in the shell; FLstar works too).

Folder (--work-dir, default work_dirs/sweep_<config name>): sweep.json (command, axes, seeds, points),
<point id>/point.json, <point id>/seed<k>/ (that run's work dir with metrics.json), and the report:
results.csv, results.json (per point and seed, with the `fltool train` command of every run) and heatmap.png.

Resuming: finished runs are skipped, an unfinished run resumes from its last checkpoint; a sweep stopped by
Ctrl-C/SIGTERM exits 130/143 and the same command continues it. A folder made by another grid is refused
unless the new grid only adds points.

More machines:
  torchrun --nproc_per_node=N -m fltool sweep CONFIG --set ... --launcher pytorch   (each run uses DDP)
  slurm array: fltool sweep CONFIG --set ... --list-points  (points numbered 0..P-1), then
  #SBATCH --array=0-<P-1> with  fltool sweep CONFIG --set ... --point $SLURM_ARRAY_TASK_ID,
  and at the end  fltool sweep CONFIG --set ... --report-only  (the table from whatever finished).
"""


def _parse_seeds(value: Optional[str]) -> Optional[List[int]]:
    if value is None:
        return None
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not a comma-separated list of integers (e.g. 0,1,2)") from None
    if not seeds:
        raise typer.BadParameter("give at least one seed (e.g. 0)")
    if len(set(seeds)) != len(seeds):
        raise typer.BadParameter(f"a seed is listed twice in {value}")
    return seeds


def _check_seeds(value: Optional[str]) -> Optional[str]:
    _parse_seeds(value)  # in the option's callback, so that a bad list is Click's usage error
    return value


class SweepDisplay:
    """An outer line per run ('run i/n: point seed k') and fltool train's progress display inside each run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.inner: Optional[ProgressDisplay] = None

    def __enter__(self) -> "SweepDisplay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()

    def _close(self) -> None:
        if self.inner is not None:
            self.inner.__exit__(None, None, None)
            self.inner = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "sweep_run":
            self._close()
            self.console.print(f"[bold]── {event.message}[/bold]", highlight=False, soft_wrap=True)
            self.inner = ProgressDisplay(self.console).__enter__()
        elif event.kind == "sweep_run_end":
            self._close()
            self.console.print(f"   {event.message}: {metrics_line(event.values) or 'no metrics'}", highlight=False,
                               soft_wrap=True)
        elif self.inner is not None:
            self.inner(event)
        elif event.kind == "note":
            self.console.print(f"• {event.message}", highlight=False)


def _mean_std(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f}±{fmt(std)}"


def _results_table(result: Any) -> Any:
    axes = [a.key for a in result.grid.axes]
    rows = []
    for s in result.summaries:
        rows.append([s.point.index, *s.point.labels, f"{s.n}/{len(result.seeds)}",
                     *[_mean_std(s.mean[k], s.std[k]) for k in TABLE_METRICS]])
    caption = (f"COCO bbox, val split; mean ± std over seeds {','.join(map(str, result.seeds))} (std with ddof 1, "
               "n/a for one seed)")
    t = table(f"fltool sweep: {result.grid.config_path.stem}", ["#", *axes, "seeds", *TABLE_METRICS], rows,
              caption=caption)
    for column in t.columns[-len(TABLE_METRICS) - 1:]:
        column.no_wrap = True  # a number split over two lines reads as two numbers
    return t


def _print_points(grid: Any, sweep_dir: Path, seeds: list, listing: list) -> None:
    axes = [a.key for a in grid.axes]
    rows = [[item.point.index, item.point.id, *item.point.labels,
             ",".join(map(str, item.finished_seeds)) or "-"] for item in listing]
    n = len(listing)
    caption = (f"{n} points x {len(seeds)} seeds = {n * len(seeds)} runs in {sweep_dir}; "
               f"one point per job: --point I (I = 0..{n - 1})")
    t = table("sweep points", ["#", "point id", *axes, "finished seeds"], rows, caption=caption)
    t.columns[1].justify = "left"
    console.print(t)


def sweep(
    config: Annotated[Optional[str], typer.Argument(
        help="Config file or name (see `fltool train --list`); with --data, the model and schedule (default "
             "retinanet_r18-gn_scratch).", show_default=False)] = None,
    set_: Annotated[Optional[List[str]], typer.Option(
        "--set", "-s", help="An axis: KEY=V1,V2,... (repeatable; loss.X = model.bbox_head.loss_cls.X; "
                            "loss=PRESET,... for whole losses).", show_default=False)] = None,
    seeds: Annotated[Optional[str], typer.Option(
        "--seeds", callback=_check_seeds, help="Seeds, comma-separated: every point runs once per seed "
                                               "(default: the seeds recorded in the sweep folder, else 0).",
        show_default=False)] = None,
    work_dir: Annotated[Optional[Path], typer.Option(
        "--work-dir", help="The sweep folder (default: work_dirs/sweep_<config name>).")] = None,
    cfg_options: CfgOptionsOpt = None,
    max_iters: Annotated[Optional[int], typer.Option(
        "--max-iters", min=1, help="Train every run this many iterations (LR schedule scaled).")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic algorithms.")] = False,
    launcher: LauncherOpt = Launcher.none,
    list_points: Annotated[bool, typer.Option(
        "--list-points", help="Print the numbered points (and which seeds finished) and exit.")] = False,
    point: Annotated[Optional[int], typer.Option(
        "--point", min=0, help="Run only point I (all seeds), e.g. one slurm array task each.")] = None,
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="Build the table from the finished runs; train nothing.")] = False,
    local_rank: LocalRankOpt = None,
    data: DataOpt = None,
    data_format: FormatOpt = None,
    val_fraction: ValFractionOpt = None,
    img_size: ImgSizeOpt = None,
    track: TrackOpt = None,
) -> None:
    from fltool.engine.sweep import SweepOptions, run_sweep
    from fltool.engine.sweep import list_points as engine_list_points
    from fltool.engine.tracking import parse_track
    from fltool.errors import TrainingError

    config, work_dir = sweep_data_config(config, data_options(data, data_format, val_fraction, img_size),
                                         work_dir)

    opts = SweepOptions(config=config, axes=list(set_ or []), seeds=_parse_seeds(seeds), work_dir=work_dir,
                        cfg_options=list(cfg_options or []) or None, max_iters=max_iters,
                        deterministic=deterministic, launcher=launcher.value, point=point,
                        report_only=report_only, track=parse_track(track))
    if list_points:
        _print_points(*engine_list_points(opts))
        return
    with SweepDisplay(err_console) as display:
        result = run_sweep(opts, progress=display)
    if not result.is_main:  # another rank of a distributed sweep: rank 0 reports
        return
    console.print(_results_table(result))
    done = (f"trained {result.trained} run(s) ({result.resumed} resumed), skipped {result.skipped} finished"
            if not report_only else "report only: nothing trained")
    console.print(done, highlight=False)
    for name, path in result.files.items():
        console.print(f"{name + ':':9} {path}", highlight=False)
    console.print(f"regenerate this table: {result.report_command}", highlight=False, soft_wrap=True)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if result.failed:
        more = f" (and {len(result.failed) - 1} more)" if len(result.failed) > 1 else ""
        raise TrainingError(f"{len(result.failed)} run(s) of the sweep failed: {result.failed[0]}{more}",
                            "the table leaves them out; run the same command again to retry them")
