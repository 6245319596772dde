"""``fltool tune``: a thin wrapper over fltool.engine.tune (an Optuna study whose trials are fltool runs)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from fltool.cli.common import CfgOptionsOpt, TrackOpt, console, err_console, fmt, table
from fltool.cli.dataopts import DataOpt, FormatOpt, ImgSizeOpt, ValFractionOpt, data_options, sweep_data_config
from fltool.cli.sweep import SweepDisplay

TUNE_HELP = """Search training settings with Optuna: every trial is a normal fltool train run (its own work dir,
metrics.json and checkpoints), pruned on the AP of each evaluation; the study lives in a database, so a stopped
tune continues where it was (the same command) and several processes or hosts can share it.

Space: --space KEY=KIND:ARGS (repeatable) and/or --preset NAME.
  KIND    float:LOW:HIGH, log:LOW:HIGH, int:LOW:HIGH, cat:V1,V2,... (MMEngine values: 0.5, [1.0,2.0], None)
  KEY     loss.X (model.bbox_head.loss_cls.X), loss (whole-loss presets: cat:FL,FL*), optim.X
          (optim_wrapper.optimizer.X), anchor.X (the anchor generator's octave_base_scale, scales_per_octave,
          ratios), prior (prior_prob), batch (train batch size), input.size (square Resize scale), or a full key.
  presets loss, table1b, optim, prior, anchors, input, all.
  e.g. --space loss.gamma=float:0:5 --space loss.alpha=float:0.1:0.9 --space optim.lr=log:1e-4:1e-2

Folder (--work-dir, default work_dirs/tune_<config name>): study.db (the study, unless --storage), trials/NNNN/
(each trial's work dir; only the best keeps its checkpoints), trials.csv/json, <folder>_best.py (the best trial
as a config: fltool train <folder>/<folder>_best.py), plots/optimization_history.png, param_importances.png.

More workers: --jobs N processes here; other hosts: the same command with --storage URL (a database all reach,
e.g. postgresql://user@host/fltool) and the same --study-name (see docs/tracking.md).
"""


def tune(
    config: Annotated[Optional[str], typer.Argument(
        help="Config file or name (see `fltool train --list`); with --data, the model and schedule.",
        show_default=False)] = None,
    space: Annotated[Optional[List[str]], typer.Option(
        "--space", help="A dimension: KEY=KIND:ARGS (repeatable; float/log/int:LOW:HIGH or cat:V1,V2,...).",
        show_default=False)] = None,
    preset: Annotated[Optional[List[str]], typer.Option(
        "--preset", help="A named space: loss, table1b, optim, prior, anchors, input, all (repeatable).",
        show_default=False)] = None,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Finished (complete or pruned) trials the study "
                                                                "should have, counted over every worker.")] = 20,
    work_dir: Annotated[Optional[Path], typer.Option(
        "--work-dir", help="The tune folder (default: work_dirs/tune_<config name>).")] = None,
    cfg_options: CfgOptionsOpt = None,
    max_iters: Annotated[Optional[int], typer.Option(
        "--max-iters", min=1, help="Train every trial this many iterations (LR schedule scaled).")] = None,
    val_interval: Annotated[Optional[int], typer.Option(
        "--val-interval", min=1, help="Evaluate (and maybe prune) every N iterations (default: 4 evaluations "
                                      "per trial with a pruner).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Training seed of every trial.")] = 0,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe or random.")] = "tpe",
    sampler_seed: Annotated[int, typer.Option(
        "--sampler-seed", help="Seed of the sampler (worker i adds i; give each host its own).")] = 0,
    pruner: Annotated[str, typer.Option("--pruner", help="median, hyperband or none.")] = "median",
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Worker processes on this machine.")] = 1,
    storage: Annotated[Optional[str], typer.Option(
        "--storage", help="The study's database URL, shared by workers on several hosts (default: "
                          "sqlite:///<tune folder>/study.db).", show_default=False)] = None,
    study_name: Annotated[Optional[str], typer.Option(
        "--study-name", help="The study's name in the storage (default: the tune folder's name).",
        show_default=False)] = None,
    keep_checkpoints: Annotated[str, typer.Option(
        "--keep-checkpoints", help="best (delete the other trials' checkpoints) or all.")] = "best",
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="Write the table, best config and plots of the study as it is; train nothing.")] = False,
    track: TrackOpt = None,
    data: DataOpt = None,
    data_format: FormatOpt = None,
    val_fraction: ValFractionOpt = None,
    img_size: ImgSizeOpt = None,
) -> None:
    from fltool.engine.tracking import parse_track
    from fltool.engine.tune import TuneOptions, run_tune, tune_command
    from fltool.engine.tune.study import optuna_module

    optuna_module()  # one line naming the extra when optuna is missing, before any data work
    data_opts = data_options(data, data_format, val_fraction, img_size)
    if data_opts is not None and work_dir is None:
        from fltool.engine.datasource import DEFAULT_RECIPE, generated_name

        work_dir = Path("work_dirs") / f"tune_{generated_name(config or DEFAULT_RECIPE, data_opts.path)}"
    config, work_dir = sweep_data_config(config, data_opts, work_dir)
    opts = TuneOptions(config=config, space=list(space or []), presets=list(preset or []), trials=trials,
                       work_dir=work_dir, cfg_options=list(cfg_options or []) or None, max_iters=max_iters,
                       val_interval=val_interval, seed=seed, sampler=sampler, sampler_seed=sampler_seed,
                       pruner=pruner, jobs=jobs, storage=storage, study_name=study_name,
                       track=parse_track(track), keep_checkpoints=keep_checkpoints, report_only=report_only)
    with SweepDisplay(err_console) as display:
        result = run_tune(opts, progress=display)
    _print_result(result)
    console.print(f"continue or widen it: {tune_command(opts, result.tune_dir)}", highlight=False, soft_wrap=True)


def _print_result(result) -> None:
    keys = [item.split("=", 1)[0] for item in result.space]
    rows = [[r.number, r.state.lower(), *[fmt(r.params.get(k)) if not isinstance(r.params.get(k), float)
                                          else f"{r.params[k]:.4g}" for k in keys], r.ap, r.iteration]
            for r in result.rows]
    best = result.best
    caption = (f"study {result.study_name} in {result.storage}; best: trial {best.number}, AP {best.ap:.3f}"
               if best else f"study {result.study_name} in {result.storage}; no complete trial")
    t = table("fltool tune: trials", ["trial", "state", *keys, "AP", "iteration"], rows, caption=caption)
    console.print(t)
    console.print(f"trained {result.trained} trial(s) now", highlight=False)
    for name, path in result.files.items():
        console.print(f"{name + ':':22} {path}", highlight=False)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
