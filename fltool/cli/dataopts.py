"""The ``--data`` options, declared once for every command that takes a dataset (train, eval, sweep, bench,
analyze, data check)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer
from typing_extensions import Annotated


class DataFormat(str, Enum):
    coco = "coco"
    voc = "voc"
    yolo = "yolo"


DataOpt = Annotated[Optional[Path], typer.Option(
    "--data", help="Your dataset: a folder in COCO (train.json + val.json, annotations/instances_*.json, or one "
                   ".json), Pascal VOC (Annotations/*.xml + images) or YOLO (images/ + labels/, data.yaml) layout, "
                   "or a COCO .json file. Detected from its contents; classes come from the data.",
    show_default=False)]
FormatOpt = Annotated[Optional[DataFormat], typer.Option(
    "--format", help="The layout of --data when detection should not decide.", show_default=False)]
ValFractionOpt = Annotated[Optional[float], typer.Option(
    "--val-fraction", min=0.01, max=0.9, help="--data with one annotation set: the share of images held out for "
                                              "validation (default 0.2; a fixed seed, so every command gets the "
                                              "same split).", show_default=False)]
ImgSizeOpt = Annotated[Optional[str], typer.Option(
    "--img-size", help="--data: the input size, N (longer side) or WxH (default: the images' median size fitted "
                       "within the config's fltool_max_scale, never enlarged).", show_default=False)]


def data_options(data: Optional[Path], fmt: Optional[DataFormat], val_fraction: Optional[float],
                 img_size: Optional[str]) -> Any:
    """The engine's DataOptions, or None without --data (the other options alone are a usage error)."""
    if data is None:
        given = [name for name, value in (("--format", fmt), ("--val-fraction", val_fraction),
                                          ("--img-size", img_size)) if value is not None]
        if given:
            raise typer.BadParameter(f"{', '.join(given)} only apply with --data")
        return None
    from fltool.engine.datasource import DataOptions

    return DataOptions(path=data, format=fmt.value if fmt else None, val_fraction=val_fraction, img_size=img_size)


def with_data(config: str, data_opts: Any, work_dir: Optional[Path], progress: Any) -> tuple:
    """(config, work dir) for a command that applies a model: with --data, the config written for that dataset
    (the model's classes, the data's splits) and its work dir; without, the ones given."""
    if data_opts is None:
        return config, work_dir
    from fltool.engine.datasource import inference_config
    from fltool.progress import ProgressEvent

    generated = inference_config(config, data_opts, work_dir, progress=progress)
    for note in generated.notes:
        progress(ProgressEvent("note", note))
    return str(generated.path), generated.work_dir


def sweep_data_config(config: Optional[str], data_opts: Any, work_dir: Optional[Path]) -> tuple:
    """(config, sweep folder) for ``fltool sweep``: with --data, the config written for that dataset into the sweep
    folder (default work_dirs/sweep_<recipe>_<data>); without, CONFIG (required) and --work-dir as given."""
    if data_opts is None:
        if config is None:
            raise typer.BadParameter("give a CONFIG, or --data with your dataset")
        return config, work_dir
    from fltool.cli.common import err_console
    from fltool.engine.datasource import DEFAULT_RECIPE, generated_name, training_config

    recipe = config or DEFAULT_RECIPE
    folder = work_dir or Path("work_dirs") / f"sweep_{generated_name(recipe, data_opts.path)}"
    generated = training_config(recipe, data_opts, folder)
    for note in generated.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    return str(generated.path), folder


def bench_data_configs(configs: List[str], data_opts: Any, work_dir: Path) -> List[str]:
    """``fltool bench speed-accuracy``: with --data, each config written for that dataset's val split into
    ``<work dir>/configs/<config name>.py`` (so the table keeps the models' names)."""
    if data_opts is None:
        return configs
    from fltool.cli.common import err_console
    from fltool.engine.datasource import inference_config

    out = []
    for config in configs:
        name = Path(config).name[:-3] if config.endswith(".py") else Path(config).name
        generated = inference_config(config, data_opts, work_dir, Path(work_dir) / "configs" / f"{name}.py")
        for note in generated.notes:
            err_console.print(f"note: {name}: {note}", highlight=False, soft_wrap=True, markup=False)
        out.append(str(generated.path))
    return out
