"""Running a sweep: train every (point, seed) not finished yet, resuming partial runs, then build the report."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fltool.engine.sweep.grid import build_grid
from fltool.engine.sweep.records import (
    METRICS,
    SweepOptions,
    check_same_sweep,
    read_sweep_record,
    run_dir_of,
    run_settings,
    run_state,
    seeds_to_run,
    sweep_command,
    sweep_dir_of,
    train_command,
    with_recorded,
    write_sweep_record,
)
from fltool.engine.sweep.report import SweepResult, build_report
from fltool.errors import ConfigError, Interrupted, TrainingError
from fltool.fileio import json_digest, write_json
from fltool.progress import ProgressEvent, ProgressFn, no_progress


def _is_main_process(launcher: str) -> tuple[bool, int]:
    if launcher == "none":
        return True, 1
    from fltool.engine import compat

    compat.init_distributed(launcher)
    from mmengine.dist import get_rank, get_world_size

    return get_rank() == 0, get_world_size()


@dataclass
class _Context:
    """What every run of one sweep command shares."""

    opts: SweepOptions
    grid: Any
    sweep_dir: Path
    seeds: list
    is_main: bool
    world_size: int
    group: Any = None  # fltool.engine.tracking.TrackGroup when the sweep is tracked


def run_sweep(opts: SweepOptions, progress: ProgressFn = no_progress) -> SweepResult:
    """Train every (point, seed) not finished yet, then build the report (see the module docstring)."""
    opts, record_seeds = with_recorded(opts, read_only=opts.report_only)
    grid = build_grid(opts.config, opts.axes, opts.cfg_options)
    sweep_dir = sweep_dir_of(opts)
    seeds = seeds_to_run(opts, record_seeds)
    if opts.point is not None and not 0 <= opts.point < len(grid.points):
        raise ConfigError(f"--point {opts.point} is not in the grid, which has {len(grid.points)} points "
                          f"(0-{len(grid.points) - 1})", "see them with --list-points")
    if opts.report_only:
        return build_report(opts, grid, sweep_dir, seeds, progress)

    is_main, world_size = _is_main_process(opts.launcher)
    record = read_sweep_record(sweep_dir)
    if record is not None:
        check_same_sweep(record, opts, grid, sweep_dir)
    if is_main:
        write_sweep_record(opts, grid, sweep_dir, seeds, world_size)
    ctx = _Context(opts, grid, sweep_dir, seeds, is_main, world_size)
    plan, skipped = _plan(ctx, progress)
    notes: list = []
    if opts.track and plan and is_main:
        from fltool.engine import tracking

        ctx.group = tracking.open_group(opts.track, sweep_dir.name, "sweep", sweep_dir,
                                        {"axes": " ".join(opts.axes), "seeds": seeds}, notes)
    trained = resumed = 0
    failed: list = []
    same_data = not any("dataloader" in a.target or "dataset" in a.target for a in grid.axes)
    for i, item in enumerate(plan, 1):
        done = _train_one(ctx, item, i, len(plan), i == 1 or not same_data, failed, progress)
        trained += done
        resumed += done and item[4] == "partial"
    if not is_main:
        return SweepResult(sweep_dir, grid, seeds, [], trained, resumed, skipped, failed, is_main=False)
    result = build_report(opts, grid, sweep_dir, seeds, progress, write=opts.point is None)
    result.trained, result.resumed, result.skipped, result.failed = trained, resumed, skipped, failed
    if ctx.group is not None:
        from fltool.engine import tracking

        best = max((s.mean for s in result.summaries if s.mean.get("AP") is not None), default={},
                   key=lambda mean: mean["AP"])
        tracking.close_group(ctx.group, {f"best_{k}": v for k, v in best.items()}, list(result.files.values()),
                             notes=notes)
    result.notes.extend(notes)
    if opts.point is not None:
        result.notes.append(f"--point {opts.point}: the report files are left to "
                            f"`{result.report_command}` once every point has finished")
    return result


def _plan(ctx: _Context, progress: ProgressFn) -> tuple[list, int]:
    """The (point, seed, run dir, settings, state) still to train, and how many runs are finished already."""
    points = ctx.grid.points if ctx.opts.point is None else [ctx.grid.points[ctx.opts.point]]
    plan, skipped = [], 0
    for point in points:
        if ctx.is_main:
            write_json(ctx.sweep_dir / point.id / "point.json", {"index": point.index, "id": point.id,
                                                                  "settings": point.settings,
                                                                  "cfg_options": point.cfg_options})
        for seed in ctx.seeds:
            run_dir = run_dir_of(ctx.sweep_dir, point, seed)
            settings = run_settings(ctx.opts, ctx.grid, point, seed)
            state = run_state(run_dir, settings)
            if state == "foreign":
                raise ConfigError(f"{run_dir} holds a run made with other settings than point {point.index} seed "
                                  f"{seed} of this sweep", "move it away, or use another --work-dir")
            if state == "finished":
                skipped += 1
            else:
                plan.append((point, seed, run_dir, settings, state))
    if skipped:
        total = len(points) * len(ctx.seeds)
        progress(ProgressEvent("note", f"skipped {skipped} finished run{'s' if skipped != 1 else ''} "
                                       f"(of {total}); {len(plan)} to train"))
    return plan, skipped


def _train_one(ctx: _Context, item: tuple, i: int, total: int, check_data: bool, failed: list,
               progress: ProgressFn) -> bool:
    """Train (or resume) one run of the plan; whether it finished. A TrainingError (a diverging loss) is a result of
    its point, recorded in ``error.json`` and ``failed``, not a reason to stop the sweep."""
    from fltool.engine import train as train_mod

    point, seed, run_dir, settings, state = item
    resume = "auto" if state == "partial" else None
    label = f"point {point.index} ({point.id}) seed {seed}"
    progress(ProgressEvent("sweep_run", f"run {i}/{total}: {label}" + (" (resuming)" if resume else ""),
                           iteration=i, max_iters=total,
                           values={"point": point.id, "index": point.index, "seed": seed, "resume": bool(resume)}))
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "run.json", {"settings_hash": json_digest(settings), **settings,
                                           "train_command": train_command(ctx.opts, ctx.grid, point, seed, run_dir,
                                                                          ctx.world_size)})
    cfg_options = {**ctx.grid.base_cfg_options, **copy.deepcopy(point.cfg_options)}
    train_opts = train_mod.TrainOptions(
        config=ctx.opts.config, work_dir=run_dir, cfg_options=cfg_options, resume=resume, launcher=ctx.opts.launcher,
        seed=seed, deterministic=ctx.opts.deterministic, max_iters=ctx.opts.max_iters,
        data_check="check" if check_data else "skip",  # the data is checked once
        track=ctx.opts.track, track_group=_run_group(ctx.group, point, seed))
    try:
        result = train_mod.train(train_opts, progress)
    except Interrupted as exc:
        again = sweep_command(ctx.opts, ctx.grid, ctx.sweep_dir, ctx.seeds, point=ctx.opts.point)
        raise Interrupted(f"sweep stopped in run {i}/{total} ({label}): {exc.message}", exc.exit_code - 128,
                          f"continue with: {again}") from None
    except TrainingError as exc:
        failed.append(f"point {point.index} ({point.id}) seed {seed}: {exc.one_line()}")
        progress(ProgressEvent("note", f"run {i}/{total} failed: {exc.one_line()}"))
        if ctx.is_main:
            write_json(run_dir / "error.json", {"error": exc.one_line(), "time": time.time()})
        return False
    if ctx.is_main:
        (run_dir / "error.json").unlink(missing_ok=True)
    progress(ProgressEvent("sweep_run_end", f"run {i}/{total} done: {label}", iteration=i, max_iters=total,
                           values={k: result.metrics.get(k) for k in METRICS}))
    return True


def _run_group(group: Any, point: Any, seed: int) -> Any:
    """The sweep's tracking group as one run of it sees it: its name and settings."""
    if group is None:
        return None
    from dataclasses import replace

    return replace(group, run_name=f"{point.id}/seed{seed}", params={**point.settings, "seed": seed})
