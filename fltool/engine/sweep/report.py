"""The report of a sweep: which seeds of each point finished, mean and std over seeds per point, and the files
``results.csv``, ``results.json`` and ``heatmap.png``, built from the runs' own ``metrics.json``."""
from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from fltool.engine.sweep.grid import Grid, Point, build_grid
from fltool.engine.sweep.records import (
    METRICS,
    SweepOptions,
    metrics_of,
    read_sweep_record,
    run_dir_of,
    run_settings,
    run_state,
    seeds_to_run,
    sweep_command,
    sweep_dir_of,
    train_command,
    with_recorded,
)
from fltool.errors import ConfigError
from fltool.fileio import atomic_path, read_json, write_json
from fltool.progress import ProgressFn, no_progress

TABLE_METRICS = ("AP", "AP50", "AP75", "APs")  # the columns of the printed table; CSV/JSON hold all of METRICS


@dataclass
class RunRecord:
    point_id: str
    seed: int
    work_dir: Path
    status: str  # "finished" | "missing" | "failed: <why>"
    metrics: dict = field(default_factory=dict)
    metrics_file: Optional[Path] = None
    train_command: str = ""


@dataclass
class PointSummary:
    point: Point
    runs: list
    n: int  # runs with metrics
    mean: dict
    std: dict


@dataclass
class SweepResult:
    work_dir: Path
    grid: Grid
    seeds: list
    summaries: list  # PointSummary per point of the grid
    trained: int = 0
    resumed: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # "point seed k: why"
    report_command: str = ""
    files: dict = field(default_factory=dict)  # "csv"/"json"/"heatmap" -> Path (empty where not written)
    is_main: bool = True  # False on the other ranks of a distributed sweep (they write and report nothing)
    notes: list = field(default_factory=list)


@dataclass
class PointListing:
    point: Point
    finished_seeds: list


def list_points(opts: SweepOptions) -> tuple[Grid, Path, list, list]:
    """(grid, sweep dir, seeds, [PointListing]): the numbered points and which seeds of each have finished."""
    opts, record_seeds = with_recorded(opts, read_only=True)
    grid = build_grid(opts.config, opts.axes, opts.cfg_options)
    sweep_dir = sweep_dir_of(opts)
    seeds = seeds_to_run(opts, record_seeds)
    rows = []
    for point in grid.points:
        done = [s for s in seeds if run_state(run_dir_of(sweep_dir, point, s),
                                               run_settings(opts, grid, point, s)) == "finished"]
        rows.append(PointListing(point, done))
    return grid, sweep_dir, seeds, rows


def summarise(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """(mean, sample std with ddof 1) over the values that exist; std is None for fewer than two."""
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else None)


def collect(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: Sequence[int], world_size: int = 1) -> list:
    """One PointSummary per point, from the runs' own metrics.json files."""
    summaries = []
    for point in grid.points:
        runs = []
        for seed in seeds:
            run_dir = run_dir_of(sweep_dir, point, seed)
            state = run_state(run_dir, run_settings(opts, grid, point, seed))
            command = train_command(opts, grid, point, seed, run_dir, world_size)
            if state == "finished":
                metrics_file = run_dir / "metrics.json"
                runs.append(RunRecord(point.id, seed, run_dir, "finished", metrics_of(metrics_file), metrics_file,
                                      command))
            else:
                error = read_json(run_dir / "error.json")
                status = f"failed: {error['error']}" if error else ("other settings" if state == "foreign"
                                                                    else "missing")
                runs.append(RunRecord(point.id, seed, run_dir, status, train_command=command))
        finished = [r for r in runs if r.status == "finished"]
        mean, std = {}, {}
        for key in METRICS:
            mean[key], std[key] = summarise([r.metrics.get(key) for r in finished])
        summaries.append(PointSummary(point, runs, len(finished), mean, std))
    return summaries


def build_report(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: list, progress: ProgressFn = no_progress,
                 write: bool = True) -> SweepResult:
    """Tabulate what has finished; write results.csv, results.json and heatmap.png into the sweep folder."""
    record = read_sweep_record(sweep_dir) or {}
    world_size = int(record.get("world_size") or 1)
    summaries = collect(opts, grid, sweep_dir, seeds, world_size)
    report_command = sweep_command(opts, grid, sweep_dir, seeds, report_only=True)
    result = SweepResult(sweep_dir, grid, seeds, summaries, report_command=report_command, notes=list(grid.notes))
    if not write:
        return result
    if not sweep_dir.is_dir():
        raise ConfigError(f"no sweep in {sweep_dir}", "run the sweep first (without --report-only), or give its "
                                                      "folder with --work-dir")
    result.files["csv"] = write_csv(sweep_dir / "results.csv", grid, summaries)
    result.files["json"] = write_json(sweep_dir / "results.json", results_json(opts, grid, sweep_dir, seeds,
                                                                                 summaries, report_command))
    from fltool.engine.sweep.plot import plot_sweep

    cells = {tuple(s.point.labels): (s.mean["AP"], s.std["AP"], s.n) for s in summaries}
    plot = plot_sweep([a.key for a in grid.axes], [list(a.labels) for a in grid.axes], cells,
                      sweep_dir / "heatmap.png", title=f"AP over the sweep of {grid.config_path.stem} "
                                                      f"(mean over seeds {','.join(map(str, seeds))})")
    result.files["heatmap"] = plot.path
    result.notes += plot.notes
    return result


def _csv_number(value: Optional[float]) -> str:
    return "n/a" if value is None else repr(float(value))


def write_csv(path: Path, grid: Grid, summaries: Sequence[PointSummary]) -> Path:
    header = ["index", "point"] + [a.key for a in grid.axes] + ["n"]
    for key in METRICS:
        header += [f"{key}_mean", f"{key}_std"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for s in summaries:
            row = [s.point.index, s.point.id] + list(s.point.labels) + [s.n]
            for key in METRICS:
                row += [_csv_number(s.mean[key]), _csv_number(s.std[key])]
            writer.writerow(row)
    return path


def results_json(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: Sequence[int],
                 summaries: Sequence[PointSummary], report_command: str) -> dict:
    return {
        "config": str(grid.config_path), "sweep_dir": str(sweep_dir),
        "axes": [{"key": a.key, "config_key": a.target, "values": list(a.labels)} for a in grid.axes],
        "seeds": list(seeds), "max_iters": opts.max_iters, "cfg_options": list(opts.cfg_options or []),
        "metrics": list(METRICS), "std": "sample standard deviation over seeds (ddof 1); null for one seed",
        "report_command": report_command, "sweep_command": sweep_command(opts, grid, sweep_dir, seeds),
        "notes": list(grid.notes),
        "points": [{
            "index": s.point.index, "id": s.point.id, "settings": s.point.settings,
            "cfg_options": s.point.cfg_options, "n": s.n, "mean": s.mean, "std": s.std,
            "runs": [{"seed": r.seed, "status": r.status, "work_dir": str(r.work_dir),
                      "metrics_file": str(r.metrics_file) if r.metrics_file else None, "metrics": r.metrics or None,
                      "train_command": r.train_command} for r in s.runs],
        } for s in summaries],
    }
