"""Which runtime runs a model: ``pytorch`` (the MMDetection model, eagerly), ``onnxruntime`` (the file ``fltool
export`` writes, through ``fltool_plugins.models.OnnxRuntimeDetector``) or ``openvino`` (that ONNX file, or the IR of
``fltool export --format openvino``, through ``fltool_plugins.models.OpenVINODetector``; the optional extra
``fltool[openvino]``), and what an exported file says about itself (its metadata, checked against a config). Used by
``fltool eval``, ``predict`` and ``bench speed-accuracy`` with ``--backend``. A checkpoint is exported first by an
:class:`Exporter` the caller hands in."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, Union

from fltool.errors import CheckpointError, ConfigError, StackError
from fltool.progress import ProgressFn, no_progress

BACKENDS = ("pytorch", "onnxruntime", "openvino")
#: ``bench speed-accuracy`` also times "mmdet": the same weights run as stock MMDetection runs them (eager PyTorch,
#: NCHW convolutions), the baseline fltool's pytorch (channels-last) and onnxruntime rows are compared with.
BENCH_BACKENDS = ("pytorch", "mmdet", "onnxruntime", "openvino")
#: The backends that run exported files (on the CPU), and the suffixes of the files each runs as they are.
EXPORTED_BACKENDS = {"onnxruntime": (".onnx",), "openvino": (".xml", ".onnx")}
OPENVINO_EXTRA_HINT = ("install fltool's openvino extra: pip install 'fltool[openvino]' (in this checkout: "
                       "FLTOOL_EXTRAS=openvino scripts/setup.sh)")


def require_openvino(what: str = "--backend openvino", int8: bool = False) -> None:
    """One line naming the extra when OpenVINO (or, for INT8, NNCF) is not installed."""
    missing = []
    for name in ("openvino", "nncf") if int8 else ("openvino",):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"{what} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                          "installed", OPENVINO_EXTRA_HINT)
    from fltool.engine.compat import openvino_isa_cap

    cap = openvino_isa_cap()
    if cap:  # fltool.engine.compat, item 9: OpenVINO crashes the process under this cap
        raise ConfigError(f"{what}: ONEDNN_MAX_CPU_ISA={cap} is set, and OpenVINO crashes under it (its bundled oneDNN "
                          "obeys the cap, its own kernels do not, openvinotoolkit/openvino#36980)",
                          "unset ONEDNN_MAX_CPU_ISA for OpenVINO (it picks its kernels by the CPU whatever the "
                          "variable says), or use --backend pytorch or onnxruntime under the cap")


def check_backend(name: str, allowed: Sequence[str] = BACKENDS) -> str:
    if name not in allowed:
        raise ConfigError(f"unknown backend '{name}'", f"use one of: {', '.join(allowed)}")
    if name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise StackError("onnxruntime is not installed", "rerun scripts/setup.sh (pip install onnxruntime)") \
                from None
    if name == "openvino":
        require_openvino()
    return name


def parse_backends(text: Union[str, Sequence[str], None], allowed: Sequence[str] = BACKENDS) -> list:
    """``"pytorch,onnxruntime"`` (or a list) to the backends in that order, each once."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text or ["pytorch"])
    found = [check_backend(s, allowed) for s in dict.fromkeys(i for i in items if i)]
    if not found:
        raise ConfigError("no backend given", f"use one or more of: {', '.join(allowed)}")
    return found


def read_meta(onnx_file: Union[str, Path]) -> Any:
    """The fltool metadata of an ONNX file (or an OpenVINO IR's .xml), or a CheckpointError saying why it is not an
    exported fltool model."""
    import onnx
    from google.protobuf.message import DecodeError

    from fltool_plugins.models import DeployMeta, MetadataError

    path = Path(onnx_file)
    if path.suffix == ".xml":
        return _read_ir_meta(path)
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


def _read_ir_meta(path: Path) -> Any:
    """The fltool metadata of an OpenVINO IR (its rt_info), or a CheckpointError."""
    from fltool_plugins.models import MetadataError
    from fltool_plugins.models.openvino_runtime import model_meta

    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise CheckpointError(f"OpenVINO IR not found: {path if not path.is_file() else path.with_suffix('.bin')}",
                              "export one with fltool export --format openvino (it writes the .xml and the .bin)")
    require_openvino()
    import openvino as ov

    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path} is not an OpenVINO IR OpenVINO can read ({first})",
                              "give the .xml fltool export --format openvino wrote, its .bin beside it") from None
    try:
        return model_meta(path, model)
    except MetadataError as exc:
        raise CheckpointError(f"{exc}: it was not written by fltool export (or was changed since)",
                              "export the checkpoint (again) with fltool export --format openvino") from None


class Exporter(Protocol):
    """Writes ``checkpoint`` as an ONNX file in ``out_dir`` and returns its path (``fltool export``'s job:
    :func:`fltool.deploy.exporter.export_for_onnxruntime`). The engine takes one from its caller, so that running an
    exported model does not make it import the export (a layer above it)."""

    def __call__(self, checkpoint: Path, *, out_dir: Path, config: Optional[str], cfg_options: Any = None,
                 trust: bool = False, progress: ProgressFn = no_progress, notes: Optional[list] = None) -> Path: ...


def onnx_file_for(checkpoint: Path, exporter: Optional[Exporter], backend: str = "onnxruntime",
                  **export_args: Any) -> Path:
    """The file ``backend`` runs for ``checkpoint``: an exported file it runs (.onnx; for openvino also an IR's
    .xml) as it is; a .pth written as ONNX by ``exporter`` first."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix in EXPORTED_BACKENDS.get(backend, (".onnx",)):
        return checkpoint
    if exporter is None:
        raise ConfigError(f"{checkpoint.name} is a checkpoint, and the {backend} backend runs exported files",
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
    return dict(type="OnnxRuntimeDetector", onnx_file=str(onnx_file), data_preprocessor=_fitting_prep(cfg, onnx_file),
                threads=threads)


def openvino_model(cfg: Any, model_file: Path, precision: str = "fp32", threads: Optional[int] = None) -> dict:
    """The model config that runs ``model_file`` (an IR's .xml, or an .onnx) with OpenVINO in ``precision`` ("fp32"
    or "bf16": :func:`fltool.engine.precision.openvino_precision` chooses) in place of ``cfg.model``."""
    return dict(type="OpenVINODetector", model_file=str(model_file), data_preprocessor=_fitting_prep(cfg, model_file),
                precision=precision, threads=threads)


def openvino_run_precision(requested: str, model_file: Path, notes: list) -> str:
    """The precision OpenVINO runs ``model_file`` in for ``--precision requested``; ``notes`` get which one and why
    (and that the file is an INT8 model, where it is one)."""
    from fltool.engine.precision import openvino_precision

    precision = openvino_precision(requested)
    notes.append(f"precision: {precision.reason}")
    if read_meta(model_file).source.get("precision") == "int8":
        notes.append(f"{Path(model_file).name} is an INT8 model (NNCF post-training quantization); OpenVINO runs "
                     f"the rest of its graph in {precision.name}")
    return precision.name


def _fitting_prep(cfg: Any, model_file: Path) -> dict:
    """The config's data preprocessor for an exported file, whose classes and normalisation must be the config's."""
    prep = copy.deepcopy(dict(cfg.model.get("data_preprocessor") or {}))
    check_meta_fits(read_meta(model_file), model_file,
                    (cfg.test_dataloader.dataset.get("metainfo") or {}).get("classes"), prep)
    prep["pad_size_divisor"] = 1  # the file pads to its size divisor (or to its fixed size) itself
    return prep


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
    """An .onnx file needs the onnxruntime or openvino backend, an IR's .xml the openvino one (a one-line error,
    not a failed unpickling)."""
    suffix = Path(checkpoint).suffix
    if backend == "pytorch" and suffix == ".onnx":
        raise CheckpointError(f"{checkpoint} is an ONNX file", "run it with --backend onnxruntime (or openvino)")
    if backend != "openvino" and suffix == ".xml":
        raise CheckpointError(f"{checkpoint} is an OpenVINO IR", "run it with --backend openvino")
