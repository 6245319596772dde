"""``fltool train``: a thin wrapper over :func:`fltool.engine.train.train` (parse, call, print)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from fltool.cli.common import (
    CfgOptionsOpt,
    DataCheck,
    Launcher,
    LauncherOpt,
    LocalRankOpt,
    TrackOpt,
    TrainPrecisionOpt,
    TrustOpt,
    WorkDirOpt,
    console,
    err_console,
    metrics_table,
    per_class_table,
    table,
)
from fltool.cli.dataopts import DataOpt, FormatOpt, ImgSizeOpt, ValFractionOpt, data_options
from fltool.cli.progress import ProgressDisplay


def train_span(result: Any) -> str:
    """What this command trained and how long it took: a resumed run says how much of it ran now."""
    trained = result.trained_iters
    if trained is None or trained == result.iterations:
        return f"{result.iterations} iterations in {result.wall_s:.0f} s wall"
    if trained == 0:
        return f"{result.iterations} iterations, trained before (none now; {result.wall_s:.0f} s wall)"
    return f"{result.iterations} iterations, the last {trained} of them now in {result.wall_s:.0f} s wall"


def _print_configs(pattern: Optional[str]) -> None:
    from fltool.engine.config import list_configs
    from fltool.engine.train import DEFAULT_CONFIG

    rows = [[c.name + (" (default)" if c.name == DEFAULT_CONFIG else ""), c.group or "-", c.summary]
            for c in list_configs(pattern)]
    t = table("shipped configs", ["name", "group", "what it is"], rows,
              caption="use a name or a path: fltool train NAME")
    t.columns[0].no_wrap = True  # names are what users copy: never cut them
    t.columns[1].justify = t.columns[2].justify = "left"
    console.print(t)


def train(
    config: Annotated[Optional[str], typer.Argument(
        help="Config file or name (default: the machine-sized RetinaNet on the embedded dataset; with --data, "
             "the model and schedule: default retinanet_r18-gn_scratch).",
        show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped configs and exit.")] = False,
    data: DataOpt = None,
    data_format: FormatOpt = None,
    val_fraction: ValFractionOpt = None,
    img_size: ImgSizeOpt = None,
    work_dir: WorkDirOpt = None,
    cfg_options: CfgOptionsOpt = None,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="Resume: 'auto' (the work dir's last checkpoint; also what a bare --resume means) "
                         "or a checkpoint path.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(
        "--pretrained", help="Initialise the backbone from these weights (MMDetection's Pretrained init): "
                             "torchvision://resnet50, open-mmlab://NAME or a file.", show_default=False)] = None,
    load_from: Annotated[Optional[str], typer.Option(
        "--load-from", help="Start from a whole detector (a file or URL; e.g. a COCO RetinaNet for data with "
                            "other classes): weights of the same shape load, the others keep their "
                            "initialisation; the schedule starts afresh.", show_default=False)] = None,
    amp: Annotated[bool, typer.Option("--amp", help="Mixed precision fp16 on a CUDA GPU (= --precision fp16).")
                   ] = False,
    precision: TrainPrecisionOpt = None,
    launcher: LauncherOpt = Launcher.none,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed.")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic algorithms.")] = False,
    max_iters: Annotated[Optional[int], typer.Option("--max-iters", min=1, help="Train this many iterations "
                                                     "(the LR schedule is scaled to match).")] = None,
    max_epochs: Annotated[Optional[int], typer.Option("--max-epochs", min=1, help="Train this many epochs "
                                                      "(epoch-based configs; schedule scaled).")] = None,
    val_interval: Annotated[Optional[int], typer.Option("--val-interval", min=1,
                                                        help="Evaluate every N iterations/epochs.")] = None,
    data_check: Annotated[DataCheck, typer.Option(
        "--data-check", help="Before training: check the data and stop on errors (check), skip the check "
                             "(skip), or drop the bad records and train on the rest (drop).")] = DataCheck.check,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log scalars to TensorBoard (the same as "
                                                                    "--track tensorboard).")] = False,
    track: TrackOpt = None,
    trust_checkpoint: TrustOpt = False,
    local_rank: LocalRankOpt = None,
) -> None:
    """Train a detector (default: RetinaNet with focal loss on the embedded dataset), then evaluate it.

    With --data PATH: on your COCO, Pascal VOC or YOLO dataset, CONFIG giving the model and schedule; the full
    config is written to the work dir first (fltool train WORK_DIR/<config>_<data>.py repeats the run).

    Writes checkpoints, the resolved config, MMEngine's logs and scalars (vis_data) and metrics.json to the work
    dir. Distributed: torchrun --nproc_per_node=N -m fltool train CONFIG --launcher pytorch.
    """
    if list_:
        _print_configs(config)
        return
    from fltool.engine.precision import default_training_precision
    from fltool.engine.train import DEFAULT_CONFIG, TrainOptions
    from fltool.engine.train import train as run_train

    data_opts = data_options(data, data_format, val_fraction, img_size)
    opts = TrainOptions(config=config or (None if data_opts else DEFAULT_CONFIG), work_dir=work_dir,
                        cfg_options=cfg_options, resume=resume, load_from=load_from, pretrained=pretrained,
                        data=data_opts, amp=amp, launcher=launcher.value, seed=seed,
                        precision=precision.value if precision else default_training_precision(),
                        deterministic=deterministic, max_iters=max_iters, max_epochs=max_epochs,
                        val_interval=val_interval, data_check=data_check.value, tensorboard=tensorboard,
                        trust_checkpoint=trust_checkpoint, track=tuple(track or ()))
    with ProgressDisplay(err_console) as display:
        result = run_train(opts, progress=display)
    for note in result.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    if result.metrics_file is None:  # a non-zero rank of a distributed run: rank 0 reports
        return
    caption = f"COCO bbox, val split; {train_span(result)}"
    title = Path(result.config).stem if data_opts else opts.config
    console.print(metrics_table(result.metrics, f"fltool train: {title}", caption))
    if result.metrics.get("per_class_AP"):
        console.print(per_class_table(result.metrics["per_class_AP"], "COCO AP per class, val split"))
    console.print(f"work dir:   {result.work_dir}\ncheckpoint: {result.checkpoint}\nmetrics:    "
                  f"{result.metrics_file}", highlight=False)
