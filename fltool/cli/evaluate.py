"""``fltool eval``: a thin wrapper over :func:`fltool.engine.evaluate.evaluate` (parse, call, print)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from fltool.cli.common import (
    BackendName,
    CfgOptionsOpt,
    CheckpointArg,
    ConfigArg,
    Launcher,
    LauncherOpt,
    LocalRankOpt,
    Precision,
    PrecisionOpt,
    TrustOpt,
    WorkDirOpt,
    console,
    err_console,
    metrics_table,
    per_class_table,
)
from fltool.cli.dataopts import DataOpt, FormatOpt, ImgSizeOpt, ValFractionOpt, data_options, with_data
from fltool.cli.progress import ProgressDisplay
from fltool.fileio import write_json


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
    precision: PrecisionOpt = Precision.fp32,
    backend: Annotated[BackendName, typer.Option("--backend", help="pytorch; onnxruntime or openvino: CHECKPOINT is "
                                             "then the .onnx file of fltool export, for openvino also its IR (.xml; "
                                             "an INT8 one too; a .pth is exported first). openvino: --precision is "
                                             "its inference precision, bf16 only where the CPU has native bf16 "
                                             "(pip install 'fltool[openvino]').")
                       ] = BackendName.pytorch,
    local_rank: LocalRankOpt = None,
) -> None:
    """Evaluate a checkpoint: COCO bbox AP, AP50, AP75, APs, APm, APl (and per class).

    With --data, on the val split of that dataset (the same split fltool train --data used)."""
    from fltool.deploy.exporter import export_for_onnxruntime
    from fltool.engine.evaluate import EvalOptions
    from fltool.engine.evaluate import evaluate as run_eval

    data_opts = data_options(data, data_format, val_fraction, img_size)
    if data_opts is not None and ann_file is not None:
        raise typer.BadParameter("give the data once: --data or --ann-file")
    with ProgressDisplay(err_console) as display:
        config, work_dir = with_data(config, data_opts, work_dir, display)
        opts = EvalOptions(config=config, checkpoint=checkpoint, work_dir=work_dir, cfg_options=cfg_options,
                           ann_file=ann_file, img_dir=img_dir, per_class=per_class, show_dir=show_dir,
                           score_thr=score_thr, num_images=num_images, trust_checkpoint=trust_checkpoint,
                           launcher=launcher.value, backend=backend.value, precision=precision.value)
        result = run_eval(opts, progress=display, exporter=export_for_onnxruntime)
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
