"""A model's detections on its test split, through fltool's own evaluation path, with everything the error and
threshold analyses read from them.

:func:`evaluate_detections` runs :func:`fltool.engine.evaluate.evaluate` (the same config preparation, checkpoint
checks and MMDetection ``CocoMetric`` as ``fltool eval``) with ``test_evaluator.outfile_prefix`` set, so that the
metric writes its COCO-results JSON; the analyses then score those detections against the same annotation file
with pycocotools (:mod:`fltool.analysis.matching`), so their AP is ``fltool eval``'s AP.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool.errors import CheckpointError, DataError
from fltool.progress import ProgressEvent, ProgressFn, no_progress

ANALYSIS_DIR = "analysis"  # default output folder inside the run: `fltool compare` looks there


@dataclass
class DetectionsOptions:
    config: Any  # a config file or name, or an mmengine Config read as data (a run's)
    checkpoint: Path
    work_dir: Path
    cfg_options: Union[Sequence[str], dict, None] = None
    trust_checkpoint: bool = False


@dataclass
class Evaluated:
    """The detections of a checkpoint on a split, and the ground truth they are scored against."""

    gt: dict  # the split's COCO annotation dict
    detections: list  # COCO results: image_id, category_id, bbox (x, y, w, h), score
    cat_ids: list  # the model's classes as the data's category ids, in label order
    classes: list  # their names, as the data names them
    metrics: dict  # what fltool eval reports (AP, AP50, ... from MMDetection's CocoMetric)
    checkpoint: Path
    ann_file: Path
    img_dir: Optional[Path]
    work_dir: Path
    results_file: Path
    wall_s: float
    notes: list = field(default_factory=list)

    @property
    def img_ids(self) -> list:
        return [img["id"] for img in self.gt.get("images", [])]

    def source(self) -> dict:
        """Where the numbers come from, for the JSON records."""
        return {"checkpoint": str(self.checkpoint), "ann_file": str(self.ann_file), "images": len(self.img_ids),
                "results_file": str(self.results_file)}


def resolve_target(target: Union[str, Path], checkpoint: Optional[Path], trust: bool = False) -> tuple:
    """(config spec, checkpoint) of ``RUN`` (a work dir or checkpoint: its config found beside it or in it, read
    as data) or of ``CONFIG CHECKPOINT``."""
    from fltool.engine.workdir import resolve_run

    if checkpoint is None:
        run = resolve_run(Path(target), trust=trust)
        return run.config_spec, run.checkpoint
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}", "give the .pth file written by fltool train")
    return str(target), checkpoint.resolve()


def default_work_dir(checkpoint: Path) -> Path:
    """``<run folder>/analysis``: beside the run it analyses, where ``fltool compare`` finds it."""
    return Path(checkpoint).resolve().parent / ANALYSIS_DIR


def model_categories(gt: dict, classes: Optional[Sequence[str]]) -> tuple[list, list]:
    """(category ids, names) of the model's classes in the data, in label order (all of the data's categories
    where the model's names are unknown)."""
    cats = sorted(gt.get("categories", []), key=lambda c: c["id"])
    if not classes:
        return [c["id"] for c in cats], [str(c["name"]) for c in cats]
    by_name = {str(c["name"]): c["id"] for c in cats}
    found = [name for name in classes if name in by_name]
    if not found:
        raise DataError(f"the annotation file names none of the model's classes ({', '.join(classes)})",
                        "evaluate on data annotated with the classes the model was trained on")
    return [by_name[name] for name in found], list(found)


def evaluate_detections(opts: DetectionsOptions, progress: ProgressFn = no_progress) -> Evaluated:
    """Run ``fltool eval``'s path with the results file switched on; read back the detections and ground truth."""
    from fltool.engine.config import parse_cfg_options
    from fltool.engine.evaluate import EvalOptions, evaluate
    from fltool.engine.workdir import checkpoint_classes

    start = time.time()
    work_dir = Path(opts.work_dir)
    prefix = work_dir / "detections" / "results"
    given = opts.cfg_options if isinstance(opts.cfg_options, dict) else parse_cfg_options(opts.cfg_options)
    cfg_options = dict(given, **{"+test_evaluator.outfile_prefix": str(prefix.resolve())})
    result = evaluate(EvalOptions(config=opts.config, checkpoint=Path(opts.checkpoint), work_dir=work_dir,
                                  cfg_options=cfg_options, trust_checkpoint=opts.trust_checkpoint), progress)
    progress(ProgressEvent("stage", "reading the detections"))
    ann_file = Path(result.ann_file)
    gt = _read_json(ann_file, "annotation file")
    results_file = Path(f"{prefix}.bbox.json")
    detections = _read_json(results_file, "results file") if results_file.is_file() else []
    classes = checkpoint_classes(Path(opts.checkpoint), opts.trust_checkpoint)
    cat_ids, names = model_categories(gt, classes)
    return Evaluated(gt, detections, cat_ids, names, dict(result.metrics), Path(opts.checkpoint).resolve(), ann_file,
                     getattr(result, "img_dir", None), work_dir, results_file, time.time() - start,
                     list(result.notes))


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the {what} {path}: {exc}") from None
