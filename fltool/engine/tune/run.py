"""``fltool tune``: open (or resume) the study, run its trials here (``--jobs`` processes, each sharing the
storage with every other worker and host), then write the trials table, the best config and the plots."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from fltool.engine.tune.report import TuneResult, best_row, trial_rows, write_best_config, write_plots, write_trials
from fltool.engine.tune.study import (
    Trainer,
    TuneOptions,
    finished,
    open_study,
    optimize,
    prepare,
    resume_interrupted,
    storage_url,
    tune_dir_of,
    worker_processes,
)
from fltool.errors import TrainingError
from fltool.fileio import write_json
from fltool.progress import ProgressEvent, ProgressFn, no_progress


def run_tune(opts: TuneOptions, progress: ProgressFn = no_progress) -> TuneResult:
    """Run the study's remaining trials (none with ``report_only``), then report (see the module docstring)."""
    opts, space, cfg = prepare(opts)
    tune_dir = tune_dir_of(opts)
    tune_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(opts, tune_dir)
    notes: list = []
    trainer = Trainer(opts, space, tune_dir, cfg, progress=progress)
    before = finished(study)
    if not opts.report_only:
        write_json(tune_dir / "tune.json", {"config": str(opts.config), "space": [p.spec() for p in space],
                                            "trials": opts.trials, "max_iters": opts.max_iters,
                                            "val_interval": opts.val_interval, "seed": opts.seed,
                                            "sampler": opts.sampler, "pruner": opts.pruner,
                                            "storage": storage_url(opts, tune_dir), "study": study.study_name})
        again = resume_interrupted(study)
        if again:
            progress(ProgressEvent("note", f"{again} interrupted trial(s) continue from their last checkpoint"))
        if before:
            progress(ProgressEvent("note", f"the study has {before} finished trial(s) of {opts.trials}"))
        _run_trials(trainer, study, notes)
    rows = trial_rows(study)
    result = TuneResult(tune_dir, study.study_name, storage_url(opts, tune_dir), rows, best_row(rows),
                        trained=finished(study) - before, notes=notes, space=[p.spec() for p in space])
    _report(trainer, study, result)
    return result


def _run_trials(trainer: Trainer, study: Any, notes: list) -> None:
    """This machine's workers: ``--jobs`` - 1 spawned processes and this one, under one tracking group."""
    opts = trainer.opts
    if opts.track:
        from fltool.engine import tracking

        trainer.group = tracking.open_group(opts.track, trainer.tune_dir.name, "tune", trainer.tune_dir,
                                            {"space": " ".join(p.spec() for p in trainer.space),
                                             "trials": opts.trials}, notes)
    procs = worker_processes(opts, trainer.space, trainer.cfg, trainer.tune_dir, trainer.group)
    status = "FAILED"
    try:
        optimize(trainer, study)
        status = "FINISHED"
    finally:
        for proc in procs:
            proc.join()
        failed = [p.name for p in procs if p.exitcode]
        if failed:
            notes.append(f"{len(failed)} worker process(es) stopped early; see {trainer.tune_dir / 'workers'}")
        if trainer.group is not None:
            from fltool.engine import tracking

            best = best_row(trial_rows(study))
            tracking.close_group(trainer.group, {f"best_{k}": v for k, v in (best.metrics if best else {}).items()},
                                 [trainer.tune_dir / "trials.csv"], status=status, notes=notes)


def _report(trainer: Trainer, study: Any, result: TuneResult) -> None:
    keys = [p.key for p in trainer.space]
    result.files.update(write_trials(result.rows, trainer.tune_dir, keys))
    if result.best is None:
        if not any(r.state in ("COMPLETE", "PRUNED") for r in result.rows):
            raise TrainingError(f"no trial of the study {study.study_name} has finished",
                                "see the failed trials in trials.csv and their work dirs")
        result.notes.append("no trial completed (all pruned): no best config")
        return
    result.files["best_config"] = write_best_config(trainer, result.best)
    result.files.update(write_plots(study, trainer.tune_dir, result.notes))


def tune_command(opts: TuneOptions, tune_dir: Path) -> str:
    """The command that continues this tune (the same study, more workers or hosts with --storage)."""
    args = ["fltool", "tune", str(opts.config), "--work-dir", str(tune_dir), "--trials", str(opts.trials)]
    for item in opts.space:
        args += ["--space", item]
    for name in opts.presets:
        args += ["--preset", name]
    if opts.max_iters:
        args += ["--max-iters", str(opts.max_iters)]
    if opts.storage:
        args += ["--storage", opts.storage]
    return shlex.join(args)
