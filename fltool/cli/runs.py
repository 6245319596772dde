"""``fltool train`` and ``fltool eval``: thin wrappers over fltool.engine.train / fltool.engine.evaluate."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from fltool.cli.common import (Backend, CfgOptionsOpt, CheckpointArg, ConfigArg, WorkDirOpt, command, console,
                               err_console, table)
from fltool.cli.dataopts import DataOpt, FormatOpt, ImgSizeOpt, ValFractionOpt, data_options, with_data
from fltool.cli.progress import ProgressDisplay
from fltool.fileio import write_json


class Launcher(str, Enum):
    none = "none"
    pytorch = "pytorch"
    slurm = "slurm"


class DataCheck(str, Enum):
    check = "check"
    skip = "skip"
    drop = "drop"


TrustOpt = Annotated[bool, typer.Option("--trust-checkpoint", help="Allow full unpickling of the checkpoint (only "
                                        "for files from a source you trust; default: tensors only).")]
LauncherOpt = Annotated[Launcher, typer.Option("--launcher", help="Job launcher: none, pytorch (torchrun) or slurm.")]
LocalRankOpt = Annotated[Optional[int], typer.Option("--local-rank", "--local_rank", hidden=True,
                                                     help="Set by torch.distributed.launch; torchrun uses $LOCAL_RANK.")]


def metrics_table(metrics: dict, title: str, caption: str) -> Any:
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    return table(title, ["metric", "value"], [[k, metrics.get(k)] for k in keys], caption=caption)


def train_span(result: Any) -> str:
    """What this command trained and how long it took: a resumed run says how much of it ran now."""
    trained = result.trained_iters
    if trained is None or trained == result.iterations:
        return f"{result.iterations} iterations in {result.wall_s:.0f} s wall"
    if trained == 0:
        return f"{result.iterations} iterations, trained before (none now; {result.wall_s:.0f} s wall)"
    return f"{result.iterations} iterations, the last {trained} of them now in {result.wall_s:.0f} s wall"


def per_class_table(per_class: dict, caption: str) -> Any:
    return table("per-class AP", ["class", "AP"], [[k, v] for k, v in per_class.items()], caption=caption)


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


def register(app: typer.Typer) -> None:
    """Add the train/eval commands to the root app."""

    @command(app, "train")
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
        amp: Annotated[bool, typer.Option("--amp", help="Mixed precision (needs a CUDA GPU).")] = False,
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
        tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log scalars to TensorBoard.")] = False,
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
        from fltool.engine.train import DEFAULT_CONFIG, TrainOptions, train as run_train

        data_opts = data_options(data, data_format, val_fraction, img_size)
        opts = TrainOptions(config=config or (None if data_opts else DEFAULT_CONFIG), work_dir=work_dir,
                            cfg_options=cfg_options, resume=resume, load_from=load_from, pretrained=pretrained,
                            data=data_opts, amp=amp, launcher=launcher.value, seed=seed,
                            deterministic=deterministic, max_iters=max_iters, max_epochs=max_epochs,
                            val_interval=val_interval, data_check=data_check.value, tensorboard=tensorboard,
                            trust_checkpoint=trust_checkpoint)
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

    @command(app, "eval")
    def evaluate(
        config: ConfigArg,
        checkpoint: CheckpointArg,
        work_dir: WorkDirOpt = None,
        cfg_options: CfgOptionsOpt = None,
        out: Annotated[Optional[Path], typer.Option("--out", help="Write the metrics as JSON here.")] = None,
        per_class: Annotated[bool, typer.Option("--per-class", help="Also report AP per class.")] = False,
        show_dir: Annotated[Optional[Path], typer.Option("--show-dir", help="Draw predictions and ground truth "
                                                         "into this folder.")] = None,
        score_thr: Annotated[float, typer.Option("--score-thr", min=0.0, max=1.0,
                                                 help="Score threshold for drawing.")] = 0.3,
        ann_file: Annotated[Optional[Path], typer.Option("--ann-file", help="Evaluate on this COCO annotation "
                                                         "file instead of the config's test set.")] = None,
        img_dir: Annotated[Optional[Path], typer.Option("--img-dir", help="Image folder for --ann-file "
                                                        "(default: its folder's images/).")] = None,
        num_images: Annotated[Optional[int], typer.Option("--num-images", min=1,
                                                          help="Evaluate the first N images only.")] = None,
        data: DataOpt = None,
        data_format: FormatOpt = None,
        val_fraction: ValFractionOpt = None,
        img_size: ImgSizeOpt = None,
        trust_checkpoint: TrustOpt = False,
        launcher: LauncherOpt = Launcher.none,
        backend: Annotated[Backend, typer.Option("--backend", help="pytorch, or onnxruntime: CHECKPOINT is then the "
                                                 ".onnx file of fltool export (a .pth is exported first).")
                           ] = Backend.pytorch,
        local_rank: LocalRankOpt = None,
    ) -> None:
        """Evaluate a checkpoint: COCO bbox AP, AP50, AP75, APs, APm, APl (and per class).

        With --data, on the val split of that dataset (the same split fltool train --data used)."""
        from fltool.engine.evaluate import EvalOptions, evaluate as run_eval

        data_opts = data_options(data, data_format, val_fraction, img_size)
        if data_opts is not None and ann_file is not None:
            raise typer.BadParameter("give the data once: --data or --ann-file")
        with ProgressDisplay(err_console) as display:
            config, work_dir = with_data(config, data_opts, work_dir, display)
            opts = EvalOptions(config=config, checkpoint=checkpoint, work_dir=work_dir, cfg_options=cfg_options,
                               ann_file=ann_file, img_dir=img_dir, per_class=per_class, show_dir=show_dir,
                               score_thr=score_thr, num_images=num_images, trust_checkpoint=trust_checkpoint,
                               launcher=launcher.value, backend=backend.value)
            result = run_eval(opts, progress=display)
        for note in result.notes:
            err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
        caption = f"COCO bbox on {result.num_images} images of {Path(result.ann_file).name}; {backend.value}; " \
                  f"{result.wall_s:.0f} s"
        console.print(metrics_table(result.metrics, f"fltool eval: {Path(checkpoint).name}", caption))
        if result.metrics.get("per_class_AP"):
            console.print(per_class_table(result.metrics["per_class_AP"], caption))
        if out is not None:
            write_json(out, {"config": config, "checkpoint": str(checkpoint), "ann_file": result.ann_file,
                             "num_images": result.num_images,
                             "bbox": {k: v for k, v in result.metrics.items() if k != "per_class_AP"},
                             "per_class_AP": result.metrics.get("per_class_AP", {}), "raw": result.raw})
            console.print(f"metrics: {out}", highlight=False)
        if result.show_dir is not None:
            console.print(f"drawings: {result.show_dir}", highlight=False)
