"""Which runtime runs a model: ``pytorch`` (the MMDetection model, eagerly) or ``onnxruntime`` (the file ``fltool
export`` writes, through ``fltool_plugins.models.OnnxRuntimeDetector``). Used by ``fltool eval --backend`` and
``fltool bench speed-accuracy --backend``."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fltool.engine.runner import ProgressEvent, ProgressFn, _noop
from fltool.errors import CheckpointError, ConfigError, StackError

BACKENDS = ("pytorch", "onnxruntime")


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend '{name}'", f"use one of: {', '.join(BACKENDS)}")
    if name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise StackError("onnxruntime is not installed", "rerun scripts/setup.sh (pip install onnxruntime)") \
                from None
    return name


def parse_backends(text: Union[str, Sequence[str], None]) -> list:
    """``"pytorch,onnxruntime"`` (or a list) to the backends in that order, each once."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text or ["pytorch"])
    found = [check_backend(s) for s in dict.fromkeys(i for i in items if i)]
    if not found:
        raise ConfigError("no backend given", f"use one or more of: {', '.join(BACKENDS)}")
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
    except MetadataError as exc:
        raise CheckpointError(f"{exc}: it was not written by fltool export",
                              "export the checkpoint with fltool export") from None


def onnxruntime_model(cfg: Any, checkpoint: Path, *, config: str, cfg_options: Any = None,
                      work_dir: Optional[Path] = None, trust: bool = False, threads: Optional[int] = None,
                      progress: ProgressFn = _noop, notes: Optional[list] = None) -> dict:
    """The model config that runs ``checkpoint`` with ONNX Runtime: an .onnx file as it is, a .pth exported first
    (any input size, into ``work_dir``). The file's classes must be the config's."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix != ".onnx":
        from fltool.deploy.onnx_export import ExportOptions, export_onnx

        out = Path(work_dir or cfg.work_dir) / f"{checkpoint.stem}.onnx"
        progress(ProgressEvent("stage", f"exporting {checkpoint.name} to ONNX"))
        export_onnx(ExportOptions(target=checkpoint, out=out, config=config, cfg_options=cfg_options, check=False,
                                  trust_checkpoint=trust))
        if notes is not None:
            notes.append(f"{checkpoint.name} exported to {out} for ONNX Runtime")
        checkpoint = out
    meta = read_meta(checkpoint)
    classes = list((cfg.test_dataloader.dataset.get("metainfo") or {}).get("classes") or [])
    if classes and list(meta.classes) != classes:
        raise CheckpointError(f"{checkpoint} was exported for classes {meta.classes}; the config's test set has "
                              f"{classes}", "give the ONNX file of a model trained with this config")
    prep = copy.deepcopy(dict(cfg.model.get("data_preprocessor") or {}))
    prep["pad_size_divisor"] = 1  # the file pads to its size divisor (or to its fixed size) itself
    return dict(type="OnnxRuntimeDetector", onnx_file=str(checkpoint), data_preprocessor=prep, threads=threads)


def check_checkpoint_for(backend: str, checkpoint: Path) -> None:
    """An .onnx file needs the onnxruntime backend (a one-line error, not a failed unpickling)."""
    if backend == "pytorch" and Path(checkpoint).suffix == ".onnx":
        raise CheckpointError(f"{checkpoint} is an ONNX file", "run it with --backend onnxruntime")
