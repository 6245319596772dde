"""A checkpoint written as an ONNX file on demand, for the commands that run it with ONNX Runtime or OpenVINO
(``fltool eval/predict --backend onnxruntime|openvino`` given a ``.pth``): :func:`export_for_onnxruntime` is the
:class:`fltool.engine.backends.Exporter` the CLI and the Python API hand to the engine (OpenVINO reads the ONNX file
as it is)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from fltool.progress import ProgressEvent, ProgressFn, no_progress


def export_for_onnxruntime(checkpoint: Path, *, out_dir: Path, config: Optional[str], cfg_options: Any = None,
                           trust: bool = False, progress: ProgressFn = no_progress,
                           notes: Optional[list] = None) -> Path:
    """``checkpoint`` exported (any input size, no check) to ``out_dir/<checkpoint stem>.onnx``, with a note."""
    from fltool.deploy.onnx_export import ExportOptions, export_onnx

    checkpoint = Path(checkpoint)
    out = Path(out_dir) / f"{checkpoint.stem}.onnx"
    progress(ProgressEvent("stage", f"exporting {checkpoint.name} to ONNX"))
    export_onnx(ExportOptions(target=checkpoint, out=out, config=config, cfg_options=cfg_options, check=False,
                              trust_checkpoint=trust))
    if notes is not None:
        notes.append(f"{checkpoint.name} exported to {out} (ONNX) to run it")
    return out
