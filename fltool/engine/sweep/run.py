"""Running a sweep: train every (point, seed) not finished yet, resuming partial runs, then build the report."""
from __future__ import annotations

import copy
import time
from pathlib import Path

from fltool.engine.runner import ProgressEvent, ProgressFn, _noop
from fltool.engine.sweep.grid import build_grid
from fltool.engine.sweep.records import (METRICS, SweepOptions, _hash, _read_json, _run_settings, _run_state, _seeds,
                                         _sweep_dir, _with_recorded, _write_sweep_record, check_same_sweep,
                                         read_sweep_record, run_dir_of, sweep_command, train_command)
from fltool.engine.sweep.report import SweepResult, build_report
from fltool.errors import ConfigError, Interrupted, TrainingError
from fltool.fileio import write_json


def _is_main_process(launcher: str) -> tuple[bool, int]:
    if launcher == "none":
        return True, 1
    from fltool import compat

    compat.init_distributed(launcher)
    from mmengine.dist import get_rank, get_world_size

    return get_rank() == 0, get_world_size()


def _evaluate_last_checkpoint(opts: SweepOptions, cfg_options: dict, run_dir: Path, checkpoint: Path,
                              progress: ProgressFn) -> dict:
    """A run resumed from a checkpoint of its last iteration trains no further and so never evaluates: do it."""
    from fltool.engine.evaluate import EvalOptions, evaluate

    result = evaluate(EvalOptions(config=opts.config, checkpoint=checkpoint, work_dir=run_dir / "final_eval",
                                  cfg_options=copy.deepcopy(cfg_options), launcher=opts.launcher), progress=progress)
    return result.metrics


def run_sweep(opts: SweepOptions, progress: ProgressFn = _noop) -> SweepResult:
    """Train every (point, seed) not finished yet, then build the report (see the module docstring)."""
    opts, record_seeds = _with_recorded(opts, read_only=opts.report_only)
    grid = build_grid(opts.config, opts.axes, opts.cfg_options)
    sweep_dir = _sweep_dir(opts)
    seeds = _seeds(opts, record_seeds)
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
        _write_sweep_record(opts, grid, sweep_dir, seeds, world_size)

    points = grid.points if opts.point is None else [grid.points[opts.point]]
    plan, skipped = [], 0
    for point in points:
        if is_main:
            write_json(sweep_dir / point.id / "point.json", {"index": point.index, "id": point.id,
                                                              "settings": point.settings,
                                                              "cfg_options": point.cfg_options})
        for seed in seeds:
            run_dir = run_dir_of(sweep_dir, point, seed)
            settings = _run_settings(opts, grid, point, seed)
            state = _run_state(run_dir, settings)
            if state == "foreign":
                raise ConfigError(f"{run_dir} holds a run made with other settings than point {point.index} seed "
                                  f"{seed} of this sweep", "move it away, or use another --work-dir")
            if state == "finished":
                skipped += 1
            else:
                plan.append((point, seed, run_dir, settings, state))
    total = len(points) * len(seeds)
    if skipped:
        progress(ProgressEvent("note", f"skipped {skipped} finished run{'s' if skipped != 1 else ''} "
                                       f"(of {total}); {len(plan)} to train"))

    from fltool.engine import train as train_mod

    trained = resumed = 0
    failed = []
    same_data = not any("dataloader" in a.target or "dataset" in a.target for a in grid.axes)
    for i, (point, seed, run_dir, settings, state) in enumerate(plan, 1):
        resume = "auto" if state == "partial" else None
        label = f"point {point.index} ({point.id}) seed {seed}"
        progress(ProgressEvent("sweep_run", f"run {i}/{len(plan)}: {label}" + (" (resuming)" if resume else ""),
                               iteration=i, max_iters=len(plan),
                               values={"point": point.id, "index": point.index, "seed": seed,
                                       "resume": bool(resume)}))
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "run.json", {"settings_hash": _hash(settings), **settings,
                                               "train_command": train_command(opts, grid, point, seed, run_dir,
                                                                              world_size)})
        cfg_options = {**grid.base_cfg_options, **copy.deepcopy(point.cfg_options)}
        train_opts = train_mod.TrainOptions(
            config=opts.config, work_dir=run_dir, cfg_options=cfg_options, resume=resume, launcher=opts.launcher,
            seed=seed, deterministic=opts.deterministic, max_iters=opts.max_iters,
            data_check="check" if (i == 1 or not same_data) else "skip")  # the data is checked once
        try:
            result = train_mod.train(train_opts, progress)
        except Interrupted as exc:
            raise Interrupted(f"sweep stopped in run {i}/{len(plan)} ({label}): {exc.message}", exc.exit_code - 128,
                              f"continue with: {sweep_command(opts, grid, sweep_dir, seeds, point=opts.point)}") \
                from None
        except TrainingError as exc:  # e.g. a diverging loss: a result of this point, not a reason to stop the sweep
            failed.append(f"point {point.index} ({point.id}) seed {seed}: {exc.one_line()}")
            progress(ProgressEvent("note", f"run {i}/{len(plan)} failed: {exc.one_line()}"))
            if is_main:
                write_json(run_dir / "error.json", {"error": exc.one_line(), "time": time.time()})
            continue
        metrics = result.metrics
        if "AP" not in metrics and result.checkpoint is not None:
            metrics = _evaluate_last_checkpoint(opts, cfg_options, run_dir, result.checkpoint, progress)
            if is_main and result.metrics_file is not None:
                data = _read_json(result.metrics_file) or {}
                data["bbox"] = {k: v for k, v in metrics.items() if k != "per_class_AP"}
                data["note"] = "evaluated the resumed last checkpoint (training had nothing left to do)"
                write_json(result.metrics_file, data)
        if is_main:
            (run_dir / "error.json").unlink(missing_ok=True)
        trained += 1
        resumed += bool(resume)
        progress(ProgressEvent("sweep_run_end", f"run {i}/{len(plan)} done: {label}", iteration=i,
                               max_iters=len(plan), values={k: metrics.get(k) for k in METRICS}))

    if not is_main:
        return SweepResult(sweep_dir, grid, seeds, [], trained, resumed, skipped, failed, is_main=False)
    result = build_report(opts, grid, sweep_dir, seeds, progress, write=opts.point is None)
    result.trained, result.resumed, result.skipped, result.failed = trained, resumed, skipped, failed
    if opts.point is not None:
        result.notes.append(f"--point {opts.point}: the report files are left to "
                            f"`{result.report_command}` once every point has finished")
    return result
