"""``--data PATH``: a config for the user's own dataset, written out so that nothing is hidden.

A *recipe* config (model, schedule, pipelines; ``fltool train --list`` shows the shipped ones) plus a dataset found
by :func:`fltool.data.formats.resolve` give a full MMEngine config: the three dataloaders and the evaluators read
the dataset's COCO files, ``metainfo`` holds its classes, every ``num_classes`` of the model is set to their
number, and every ``Resize`` of the pipelines to the input size. The input size is the training images' median
size fitted within the recipe's ``fltool_max_scale`` (MMDetection's ``Resize`` scale: long and short side bounds),
never enlarged; ``--img-size`` sets it instead. The result is written as ``<work dir>/<recipe>_<data>.py``, which
``fltool train`` then runs (and which repeats the run on its own).

For commands that apply a trained model (eval, bench, analyze) :func:`inference_config` keeps the model and its
classes and points the data sections at the dataset; the dataset must have every class the model was trained on.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool.data.formats import Dataset, data_name, resolve
from fltool.engine.runner import unwrap_dataset
from fltool.errors import ConfigError, DataError
from fltool.fileio import write_text
from fltool.progress import ProgressEvent, ProgressFn, no_progress

DEFAULT_RECIPE = "retinanet_r18-gn_scratch"
#: Recipe key: the largest input, as MMDetection's Resize scale (long, short); the data's size is fitted within it.
MAX_SCALE_KEY = "fltool_max_scale"
#: Recipe key: set in configs that hold no dataset (so that running one without --data is a clear error).
RECIPE_KEY = "fltool_data_recipe"
RESIZE_TYPES = ("Resize", "mmdet.Resize")
#: Config keys that describe the recipe's own data; a generated config has its dataset in the dataloaders instead.
_DATA_KEYS = ("data_root", "fltool_synth_spec", "metainfo", "classes", "scale", RECIPE_KEY, MAX_SCALE_KEY)


@dataclass
class DataOptions:
    """``--data``, ``--format``, ``--val-fraction``, ``--img-size`` as the commands take them."""

    path: Path
    format: Optional[str] = None
    val_fraction: Optional[float] = None
    img_size: Optional[str] = None


@dataclass
class DataConfig:
    path: Path  # the written config
    work_dir: Path
    dataset: Dataset
    input_size: Optional[tuple]  # (width, height) of the median image after resizing; None: the config's own
    notes: list = field(default_factory=list)


def parse_img_size(text: Union[str, int, None]) -> Optional[tuple[int, int]]:
    """``320`` -> (320, 320); ``320x240`` or ``320,240`` -> (320, 240): MMDetection's Resize scale."""
    if text is None:
        return None
    parts = str(text).lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p.strip()]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) < 32:
        raise ConfigError(f"--img-size '{text}' is not a size", "give N (the longer side, e.g. 320) or WxH "
                                                                "(e.g. 320x240), each at least 32")
    size = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    check_input_size(size, f"--img-size {text}")
    return size


def check_input_size(size: Sequence[int], what: str) -> None:
    """A ConfigError where a model input of ``size`` would be over the pixel bound fltool decodes images to."""
    from fltool.data.image_limits import ENV, max_image_pixels

    limit = max_image_pixels()
    if int(size[0]) * int(size[1]) > limit:
        raise ConfigError(f"{what} asks for {int(size[0]) * int(size[1]) / 1e6:.0f} megapixels per image, over "
                          f"fltool's bound of {limit / 1e6:g}", f"give a smaller size (or raise {ENV})")


def fit_within(size: Sequence[int], bound: Sequence[int], enlarge: bool = False) -> tuple[int, int]:
    """``size`` (w, h) scaled so its long side fits max(bound) and its short side min(bound) (MMDetection's
    keep-ratio rule); not enlarged unless ``enlarge``."""
    w, h = int(size[0]), int(size[1])
    factor = min(max(bound) / max(w, h), min(bound) / min(w, h))
    if not enlarge:
        factor = min(factor, 1.0)
    return max(1, round(w * factor)), max(1, round(h * factor))


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated RGB colours (golden-ratio hues)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _resize_scale(pipeline: Any) -> Optional[tuple]:
    for step in pipeline or []:
        if step.get("type") in RESIZE_TYPES and step.get("scale") is not None:
            scale = step["scale"]
            return (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)
    return None


def _with_scale(pipeline: Any, scale: tuple) -> list:
    steps = [dict(step) for step in pipeline or []]
    for step in steps:
        if step.get("type") in RESIZE_TYPES:
            step["scale"] = tuple(scale)
            step.pop("scale_factor", None)
    return steps


def _set_num_classes(node: Any, n: int) -> int:
    """Set every ``num_classes`` in the model dict (RetinaNet: the head; two-stage models: every head)."""
    count = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "num_classes" and isinstance(value, int):
                node[key] = n
                count += 1
            else:
                count += _set_num_classes(value, n)
    elif isinstance(node, (list, tuple)):
        count += sum(_set_num_classes(v, n) for v in node)
    return count


def config_classes(cfg: Any) -> Optional[tuple]:
    """The class names a config's datasets declare (the model's classes), or None."""
    for key in ("test_dataloader", "val_dataloader", "train_dataloader"):
        loader = cfg.get(key)
        if loader and loader.get("dataset"):
            classes = (unwrap_dataset(loader["dataset"]).get("metainfo") or {}).get("classes")
            if classes:
                return tuple(classes)
    return None


def check_class_names(classes: Any, where: str) -> None:
    """A DataError naming the first class name that cannot work: not a string, empty, with a control character
    (a line break would split a label file or CSV row), or given twice. Any other character is fine: configs are
    written so that MMEngine reads every name back as it was (:func:`fltool.engine.config_data.config_text`)."""
    hint = "rename it in the dataset's class list (COCO categories, VOC names, YOLO data.yaml names)"
    seen: set = set()
    for i, name in enumerate(classes or ()):
        if not isinstance(name, str):
            raise DataError(f"{where}: class {i} is named {name!r}, a {type(name).__name__}, not a text", hint)
        if not name.strip():
            raise DataError(f"{where}: class {i} has an empty name ({name!r})", hint)
        bad = next((ch for ch in name if ord(ch) < 32 or ord(ch) == 127), None)
        if bad is not None:
            raise DataError(f"{where}: class name {name!r} holds the control character {bad!r}", hint)
        if name in seen:
            raise DataError(f"{where}: class name {name!r} is given twice", hint)
        seen.add(name)


def apply_data(cfg: Any, dataset: Dataset, classes: Sequence[str], scale: Optional[tuple],
               set_model: bool) -> None:
    """Point the config's dataloaders and evaluators at ``dataset`` (see the module docstring)."""
    check_class_names(classes, str(dataset.source))
    colours = palette(len(classes))
    metainfo = dict(classes=tuple(classes), palette=colours)
    for key, split in (("train_dataloader", dataset.train), ("val_dataloader", dataset.val),
                       ("test_dataloader", dataset.val)):
        loader = cfg.get(key)
        if not loader or not loader.get("dataset"):
            continue
        ds = unwrap_dataset(loader["dataset"])
        ds["data_root"] = ""
        ds["ann_file"] = str(split.ann_file)
        ds["data_prefix"] = dict(img=str(split.img_dir).rstrip("/") + "/")
        ds["metainfo"] = metainfo
        if scale is not None:
            ds["pipeline"] = _with_scale(ds.get("pipeline"), scale)
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        for ev in evaluator if isinstance(evaluator, list) else [evaluator] if evaluator else []:
            ev["ann_file"] = str(dataset.val.ann_file)
    for key in ("train_pipeline", "test_pipeline"):
        if cfg.get(key) is not None and scale is not None:
            cfg[key] = _with_scale(cfg[key], scale)
    if set_model and not _set_num_classes(cfg.model, len(classes)):
        raise ConfigError("the config's model has no num_classes to set", "use a detector config")
    for key in _DATA_KEYS:
        cfg._cfg_dict.pop(key, None)  # mmengine's Config has no public way to remove a key


def _resolve_dataset(data: DataOptions, cache: Path, data_check: str, progress: ProgressFn,
                     classes: Optional[Sequence[str]] = None) -> tuple:
    progress(ProgressEvent("stage", f"reading data {data.path}"))
    dataset = resolve(data.path, cache, data.format, data.val_fraction, classes)
    notes = [f"data: {dataset.describe()}"]
    if data.val_fraction is not None and "given by the data" in dataset.split_from:
        notes.append("the data has its own train/val split, so --val-fraction is not used")
    if dataset.errors:
        first = next(i for i in dataset.errors if i.examples)
        if data_check == "check":
            raise DataError(f"{data.path}: {dataset.errors_summary()}, e.g. {first.examples[0]}",
                            f"run `fltool data check --data {data.path}` for the list; fix the files, or train "
                            f"without them: fltool train --data {data.path} --data-check drop")
        notes.append(f"left out while reading {data.path}: {dataset.errors_summary()}")
    for warning in (i for i in dataset.issues if i.severity != "error"):
        from fltool.data.formats.common import issue_label

        notes.append(f"{issue_label(warning)}, e.g. {warning.examples[0]}")
    return dataset, notes


def generated_name(config: Any, data_path: Path) -> str:
    """``<config name>_<data name>``; ``config`` may be a run's config already read (named by its file)."""
    from fltool.engine.config import resolve_config

    stem = Path(config.filename or "config").stem if hasattr(config, "filename") else resolve_config(config).stem
    return f"{stem}_{data_name(Path(data_path))}"


def _write(cfg: Any, path: Path) -> Path:
    """The config as a file MMEngine reads back unchanged (class names with ``{{`` included)."""
    from fltool.engine.config_data import config_text

    write_text(path, config_text(cfg))
    return path.resolve()


def training_config(recipe: Optional[str], data: DataOptions, work_dir: Optional[Path] = None,
                    cfg_options: Union[Sequence[str], dict, None] = None, data_check: str = "check",
                    progress: ProgressFn = no_progress, max_iters: Optional[int] = None) -> DataConfig:
    """The recipe's model and schedule on ``data``, written as ``<work dir>/<recipe>_<data>.py``."""
    from fltool.engine.config import load_config

    recipe = recipe or DEFAULT_RECIPE
    name = generated_name(recipe, data.path)
    work_dir = Path(work_dir) if work_dir is not None else Path("work_dirs") / name
    dataset, notes = _resolve_dataset(data, work_dir / "data", data_check, progress)
    cfg = load_config(recipe, cfg_options, work_dir)
    requested = parse_img_size(data.img_size)
    median = dataset.image_size
    if requested is not None:
        size = fit_within(median, requested, enlarge=True)
        how = f"the images' median {median[0]}x{median[1]} fitted within --img-size {requested[0]}x{requested[1]}"
    else:
        bound = cfg.get(MAX_SCALE_KEY) or _resize_scale(unwrap_dataset(cfg.train_dataloader.dataset).get("pipeline"))
        if bound is None:
            raise ConfigError(f"recipe {recipe} states no input size (no {MAX_SCALE_KEY}, no Resize scale)",
                              "give --img-size")
        bound = (bound, bound) if isinstance(bound, (int, float)) else tuple(bound)
        size = fit_within(median, bound)
        how = (f"the images' median {median[0]}x{median[1]} fitted within the recipe's {bound[0]}x{bound[1]}, "
               "never enlarged; --img-size sets another")
    apply_data(cfg, dataset, dataset.classes, size, set_model=True)
    short = min(size)
    cfg["fltool_bench_scales"] = sorted({max(32, round(short * 0.75 / 16) * 16), short,
                                         round(short * 1.25 / 16) * 16})
    randomness = dict(cfg.get("randomness") or {})
    if randomness.get("seed") is None:
        randomness["seed"] = 0  # so that the written config repeats the run
        cfg["randomness"] = randomness
    notes.append(f"input size {size[0]}x{size[1]} ({how})")
    iters, batch = max_iters or cfg.train_cfg.get("max_iters"), cfg.train_dataloader.get("batch_size", 1)
    if iters and dataset.train.num_images:
        epochs = iters * batch / dataset.train.num_images
        notes.append(f"schedule: {iters} iterations of {batch} images = {epochs:.1f} epochs of the "
                     f"{dataset.train.num_images} training images" + ("" if max_iters else " (--max-iters sets it)"))
    path = _write(cfg, work_dir / f"{name}.py")
    notes.append(f"config: {path} (fltool train {path} --work-dir OTHER_DIR repeats this run)")
    return DataConfig(path, work_dir, dataset, size, notes)


def inference_config(config: str, data: DataOptions, work_dir: Optional[Path] = None,
                     config_file: Optional[Path] = None, cfg_options: Union[Sequence[str], dict, None] = None,
                     progress: ProgressFn = no_progress) -> DataConfig:
    """``config``'s model (and classes) on ``data``'s splits, written to ``config_file`` (default:
    ``<work dir>/<config>_<data>.py``)."""
    from fltool.engine.config import load_config

    name = generated_name(config, data.path)
    work_dir = Path(work_dir) if work_dir is not None else Path("work_dirs") / name
    cfg = load_config(config, cfg_options, work_dir)
    classes = config_classes(cfg)
    dataset, notes = _resolve_dataset(data, work_dir / "data", "drop", progress, classes)
    if classes is None:
        classes = dataset.classes
        apply_data(cfg, dataset, classes, None, set_model=True)
    missing = [c for c in classes if c not in dataset.classes]
    if missing:
        raise DataError(f"{data.path} has no class {', '.join(repr(c) for c in missing[:5])} of the model "
                        f"(the model's classes: {', '.join(classes)}; the data's: {', '.join(dataset.classes)})",
                        "give data annotated with the classes the model was trained on")
    extra = [c for c in dataset.classes if c not in classes]
    if extra:
        notes.append(f"the data's classes {', '.join(extra[:5])} are not the model's: their boxes are not scored")
    requested = parse_img_size(data.img_size)
    size = fit_within(dataset.image_size, requested, enlarge=True) if requested else None
    apply_data(cfg, dataset, classes, size, set_model=False)
    if size is not None:
        notes.append(f"input size {size[0]}x{size[1]} (--img-size)")
    path = _write(cfg, Path(config_file) if config_file else work_dir / f"{name}.py")
    return DataConfig(path, work_dir, dataset, size, notes)
