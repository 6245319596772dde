"""Which runtime runs a model: ``pytorch`` (the MMDetection model, eagerly) or ``onnxruntime`` (the file ``fltool
export`` writes, through ``fltool_plugins.models.OnnxRuntimeDetector``), and what an exported file says about
itself (its metadata, checked against a config). Used by ``fltool eval``, ``predict`` and ``bench speed-accuracy``
with ``--backend``. A checkpoint is exported first by an :class:`Exporter` the caller hands in."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union

from fltool.errors import CheckpointError, ConfigError, StackError
from fltool.progress import ProgressFn, no_progress

BACKENDS = ("pytorch", "onnxruntime")
#: ``bench speed-accuracy`` also times "mmdet": the same weights run as stock MMDetection runs them (eager PyTorch,
#: NCHW convolutions), the baseline fltool's pytorch (channels-last) and onnxruntime rows are compared with.
BENCH_BACKENDS = ("pytorch", "mmdet", "onnxruntime")


def check_backend(name: str, allowed: Sequence[str] = BACKENDS) -> str:
    if name not in allowed:
        raise ConfigError(f"unknown backend '{name}'", f"use one of: {', '.join(allowed)}")
    if name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise StackError("onnxruntime is not installed", "rerun scripts/setup.sh (pip install onnxruntime)") \
                from None
    return name


def parse_backends(text: Union[str, Sequence[str], None], allowed: Sequence[str] = BACKENDS) -> list:
    """``"pytorch,onnxruntime"`` (or a list) to the backends in that order, each once."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text or ["pytorch"])
    found = [check_backend(s, allowed) for s in dict.fromkeys(i for i in items if i)]
    if not found:
        raise ConfigError("no backend given", f"use one or more of: {', '.join(allowed)}")
    return found


def read_meta(onnx_file: Union[str, Path]) -> Any:
    """The fltool metadata of an ONNX file, or a CheckpointError saying why it is not an exported fltool model."""
    import onnx
    from google.protobuf.message import DecodeError

    from fltool_plugins.models import DeployMeta, MetadataError

    path = Path(onnx_file)
    if not path.is_file():
        raise CheckpointError(f"ONNX file not found: {path}", "export one with fltool export")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not an ONNX model ({type(exc).__name__})",
                              "give the .onnx file fltool export wrote") from None
    try:
        return DeployMeta.from_props({p.key: p.value for p in model.metadata_props}, str(path))
    except MetadataError as exc:  # none, another version's, or malformed (the message names the key and value)
        raise CheckpointError(f"{exc}: it was not written by fltool export (or was changed since)",
                              "export the checkpoint (again) with fltool export") from None


class Exporter(Protocol):
    """Writes ``checkpoint`` as an ONNX file in ``out_dir`` and returns its path (``fltool export``'s job:
    :func:`fltool.deploy.exporter.export_for_onnxruntime`). The engine takes one from its caller, so that running an
    exported model does not make it import the export (a layer above it)."""

    def __call__(self, checkpoint: Path, *, out_dir: Path, config: Optional[str], cfg_options: Any = None,
                 trust: bool = False, progress: ProgressFn = no_progress, notes: Optional[list] = None) -> Path: ...


def onnx_file_for(checkpoint: Path, exporter: Optional[Exporter], **export_args: Any) -> Path:
    """The ONNX file that runs ``checkpoint``: an .onnx as it is; a .pth written as one by ``exporter`` first."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".onnx":
        return checkpoint
    if exporter is None:
        raise ConfigError(f"{checkpoint.name} is a checkpoint, and the onnxruntime backend runs ONNX files",
                          f"export it first: fltool export {checkpoint}")
    return exporter(checkpoint, **export_args)


def check_meta_fits(meta: Any, onnx_file: Path, classes: Optional[Sequence[str]], data_preprocessor: dict) -> None:
    """The file's classes, normalisation and channel order must be the config's (when it names them): a
    CheckpointError naming the first difference otherwise."""
    import numpy as np

    hint = "give the ONNX file of a model trained with this config"
    if classes and list(meta.classes) != list(classes):
        raise CheckpointError(f"{onnx_file} was exported for classes {meta.classes}; the config's test set has "
                              f"{list(classes)}", hint)
    prep, want = meta.preprocess, dict(data_preprocessor or {})
    for key, default in (("mean", [0.0] * 3), ("std", [1.0] * 3)):
        given = want.get(key) if want.get(key) is not None else default
        if not np.allclose(np.asarray(prep[key], dtype=float), np.asarray(given, dtype=float).ravel(), atol=1e-4):
            raise CheckpointError(f"{onnx_file} normalises with {key} {prep[key]}; the config's data_preprocessor "
                                  f"has {list(given)}", hint)
    if bool(prep["bgr_to_rgb"]) != bool(want.get("bgr_to_rgb") or want.get("rgb_to_bgr")):
        conversion = "converts BGR to RGB" if prep["bgr_to_rgb"] else "keeps OpenCV's BGR"
        raise CheckpointError(f"{onnx_file} {conversion}; the config's data_preprocessor does not", hint)


def onnxruntime_model(cfg: Any, onnx_file: Path, threads: Optional[int] = None) -> dict:
    """The model config that runs ``onnx_file`` with ONNX Runtime in place of ``cfg.model``; the file's classes and
    normalisation must be the config's."""
    prep = copy.deepcopy(dict(cfg.model.get("data_preprocessor") or {}))
    check_meta_fits(read_meta(onnx_file), onnx_file,
                    (cfg.test_dataloader.dataset.get("metainfo") or {}).get("classes"), prep)
    prep["pad_size_divisor"] = 1  # the file pads to its size divisor (or to its fixed size) itself
    return dict(type="OnnxRuntimeDetector", onnx_file=str(onnx_file), data_preprocessor=prep, threads=threads)


def meta_inputs(meta: Any) -> tuple[list, dict]:
    """(test pipeline, data preprocessor config) that turn image files into the file's input, as its metadata says:
    fltool's checked loader, MMDetection's Resize, normalisation and channel order (padding left to the graph)."""
    prep = meta.preprocess
    pipeline = [dict(type="LoadImageChecked", check_size=False),
                dict(type="mmdet.Resize", scale=tuple(prep["resize"]["scale"]),
                     keep_ratio=prep["resize"]["keep_ratio"]),
                dict(type="mmdet.PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                            "scale_factor"))]
    data_preprocessor = dict(type="mmdet.DetDataPreprocessor", mean=prep["mean"], std=prep["std"],
                             bgr_to_rgb=prep["bgr_to_rgb"], pad_size_divisor=1, pad_value=prep.get("pad_value", 0))
    return pipeline, data_preprocessor


def check_checkpoint_for(backend: str, checkpoint: Path) -> None:
    """An .onnx file needs the onnxruntime backend (a one-line error, not a failed unpickling)."""
    if backend == "pytorch" and Path(checkpoint).suffix == ".onnx":
        raise CheckpointError(f"{checkpoint} is an ONNX file", "run it with --backend onnxruntime")
