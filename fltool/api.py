"""fltool from Python: the commands as functions with keyword options, returning what the CLI prints as data.

    import fltool

    run = fltool.train(max_iters=200, work_dir="work_dirs/quick")     # the default RetinaNet, embedded data
    print(run.metrics["AP"], run.checkpoint)
    print(fltool.evaluate(run.work_dir).metrics["AP50"])               # a work dir, a checkpoint, or config + ckpt
    found = fltool.predict(run.work_dir, ["photos/"], score_thr=0.3)   # drawings, labels, CSV, COCO JSON
    onnx = fltool.export(run.work_dir)                                 # one ONNX graph, checked against PyTorch
    ir = fltool.export(run.work_dir, format="openvino", precision="fp32,int8")  # OpenVINO IR (+ INT8), AP of each

Each function builds the engine's options dataclass (:class:`~fltool.engine.train.TrainOptions`,
:class:`~fltool.engine.evaluate.EvalOptions`, :class:`~fltool.engine.predict.PredictOptions`,
:class:`~fltool.deploy.onnx_export.ExportOptions`) from its keywords, so every option of the CLI is there under
the field's name (``fltool.train(seed=1, data_check="drop")``); an unknown keyword is a TypeError naming the valid
ones. Errors are :mod:`fltool.errors` exceptions (``FltoolError.one_line()`` is what the CLI prints); ``progress``
takes a :data:`fltool.progress.ProgressFn` to follow long work.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool.progress import ProgressFn, no_progress

PathLike = Union[str, Path]


def _after(result: Any, backend: str) -> Any:
    """``result``, once the OpenVINO plugins a call leaves behind are freed and the signal stack they may have left
    is valid again (fltool.engine.compat, item 8): a notebook's Ctrl-C after an OpenVINO call must not kill it."""
    if backend == "openvino":
        from fltool.engine.compat import after_openvino

        after_openvino()
    return result


def _options(cls: Any, given: dict) -> Any:
    """``cls(**given)``, or a TypeError naming the keywords it takes."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; {cls.__name__} takes: {', '.join(sorted(names))}")
    return cls(**given)


def train(config: Optional[str] = None, *, data: Optional[PathLike] = None, work_dir: Optional[PathLike] = None,
          max_iters: Optional[int] = None, seed: Optional[int] = None, cfg_options: Union[Sequence[str], dict,
                                                                                          None] = None,
          progress: ProgressFn = no_progress, **options: Any) -> Any:
    """``fltool train``: train ``config`` (default: the machine-sized RetinaNet on the embedded dataset; with
    ``data``, a COCO/VOC/YOLO folder, the recipe) and evaluate it. Returns a
    :class:`~fltool.engine.train.TrainResult` (``metrics``, ``checkpoint``, ``work_dir``, ``metrics_file``)."""
    if options.get("precision") is None:  # as ``fltool train``: $FLTOOL_PRECISION, else auto
        from fltool.engine.precision import default_training_precision

        options["precision"] = default_training_precision()
    from fltool.engine.datasource import DataOptions
    from fltool.engine.train import DEFAULT_CONFIG, TrainOptions
    from fltool.engine.train import train as run_train

    data_opts = options.pop("data_options", None) or (DataOptions(Path(data)) if data is not None else None)
    opts = _options(TrainOptions, dict(config=config or (None if data_opts else DEFAULT_CONFIG), data=data_opts,
                                       work_dir=Path(work_dir) if work_dir else None, max_iters=max_iters, seed=seed,
                                       cfg_options=cfg_options, **options))
    return run_train(opts, progress)


def evaluate(target: PathLike, checkpoint: Optional[PathLike] = None, *, progress: ProgressFn = no_progress,
             **options: Any) -> Any:
    """``fltool eval``: COCO box metrics. ``target`` is a work dir or a checkpoint (its config found beside it or
    in it, read as data), or a config file with ``checkpoint``. Returns an
    :class:`~fltool.engine.evaluate.EvalResult` (``metrics``: AP, AP50, ... in [0, 1])."""
    from fltool.deploy.exporter import export_for_onnxruntime
    from fltool.engine.evaluate import EvalOptions
    from fltool.engine.evaluate import evaluate as run_eval
    from fltool.engine.workdir import resolve_run

    if checkpoint is None:
        run = resolve_run(Path(target), trust=bool(options.get("trust_checkpoint")))
        config, checkpoint = run.config_spec, run.checkpoint
    else:
        config = str(target)
    opts = _options(EvalOptions, dict(config=config, checkpoint=Path(checkpoint), **options))
    return _after(run_eval(opts, progress, exporter=export_for_onnxruntime), opts.backend)


def predict(target: PathLike, inputs: Union[PathLike, Sequence[PathLike]], *, progress: ProgressFn = no_progress,
            **options: Any) -> Any:
    """``fltool predict``: detections on images, folders, globs and videos, written to ``out_dir`` (default: a
    new ``work_dirs/predict_<run>``). ``target``: a work dir, a checkpoint or an exported ``.onnx``. Returns a
    :class:`~fltool.engine.predict.PredictResult` (``out_dir``, ``detections_per_class``, ``files``, ...)."""
    from fltool.deploy.exporter import export_for_onnxruntime
    from fltool.engine.predict import PredictOptions
    from fltool.engine.predict import predict as run_predict

    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if "out_dir" in options and options["out_dir"] is not None:
        options["out_dir"] = Path(options["out_dir"])
    opts = _options(PredictOptions, dict(target=Path(target), inputs=[str(i) for i in items], **options))
    return _after(run_predict(opts, progress, exporter=export_for_onnxruntime), opts.backend)


def export(target: PathLike, *, progress: ProgressFn = no_progress, **options: Any) -> Any:
    """``fltool export``: the trained detector (a work dir or a checkpoint) as one ONNX graph with its metadata,
    checked against PyTorch on the val split unless ``check=False``; ``format="openvino"`` writes an OpenVINO IR
    (``precision="fp32,bf16,int8"`` adds each precision's AP and the INT8 IR). Returns an
    :class:`~fltool.deploy.onnx_export.ExportResult` (``model_file``, ``check``, ``precisions``, ...)."""
    from fltool.deploy.onnx_export import ExportOptions, export_onnx

    if "out" in options and options["out"] is not None:
        options["out"] = Path(options["out"])
    return export_onnx(_options(ExportOptions, dict(target=Path(target), **options)), progress)
